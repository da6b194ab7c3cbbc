/*
** proc.c: child processes (geneva.proc.core). Local worker pools, job
** entrypoints and `geneva worker` children are built on it.
**
** Guarantees: a Process is ledger-tracked from the moment it exists, so the
** host kills its whole process group (TERM, grace, KILL) and reaps it on
** scope close, signal or host free; a child asks the kernel for SIGKILL when
** its parent thread dies (PR_SET_PDEATHSIG), so even a SIGKILLed driver
** leaves no local workers behind.
**
** Caveats:
** - fork/exec: every descriptor we open is O_CLOEXEC (and the child marks
**   all fds >= 3 close-on-exec); between fork and exec the child makes only
**   async-signal-safe calls; argv, envp and the PATH candidates are built in
**   the parent. Exec failure travels to the parent over a CLOEXEC pipe.
** - pdeathsig fires when the forking *thread* exits (prctl(2)): an embedder
**   that starts workers from a thread that then ends loses them.
** - After the leader is reaped its group id stays valid while any member
**   lives; once the group is seen empty it is never signalled again, so a
**   recycled pid is not hit.
** - A pipe's read side is non-blocking and buffered here (read_line), so
**   poll() reports a pipe ready when buffered data is waiting.
*/
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <lua.h>
#include <lauxlib.h>

#include "geneva_internal.h"
#include "handle.h"


#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)   /* linux/close_range.h, Linux 5.11 */
#endif

extern char **environ;

enum { IO_STDIN, IO_STDOUT, IO_STDERR };
static const char *const io_names[] = {"stdin", "stdout", "stderr", NULL};

#define READ_CHUNK 65536
#define SLICE_MS 250   /* longest single sleep: bounds the signal race */

typedef struct proc_pipe {
  int fd;              /* our end, -1 when absent or closed */
  char *buf;           /* read-ahead: data is buf[off, off+len) */
  size_t off, len, cap;
  int eof;
} proc_pipe;

typedef struct proc_t {
  geneva_handle h;     /* born closed (handle.h) */
  pid_t pid;           /* 0 once closed */
  pid_t pgid;          /* the child's own group, or 0 */
  int pidfd;           /* -1 without pidfd_open */
  int reaped;          /* 1: status valid; 2: reaped by someone else */
  int wstatus;
  int group_gone;      /* the group was seen empty: never signal it again */
  double grace;        /* seconds between TERM and KILL */
  proc_pipe io[3];
} proc_t;

/* {====== Small helpers */

static double now_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Milliseconds left until deadline (<0: forever), capped at SLICE_MS. */
static int slice_ms(double deadline) {
  double left;
  if (deadline < 0) return SLICE_MS;
  left = (deadline - now_mono()) * 1000.0;
  if (left <= 0) return 0;
  if (left > SLICE_MS) return SLICE_MS;
  return (int)left + 1;
}

static int expired(double deadline) {
  return deadline >= 0 && now_mono() >= deadline;
}

static void nap(double s) {
  struct timespec ts;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  nanosleep(&ts, NULL);   /* EINTR: the caller loops anyway */
}

/* Optional timeout argument -> absolute deadline, or -1 for none. Raises on
** a negative or non-number value. */
static double opt_deadline(lua_State *L, int arg) {
  lua_Number t;
  if (lua_isnoneornil(L, arg)) return -1;
  t = luaL_checknumber(L, arg);
  luaL_argcheck(L, t >= 0, arg, "timeout must be >= 0");
  return now_mono() + t;
}

static int fail_timeout(lua_State *L) {
  return geneva_fail(L, "ETIMEDOUT", "timeout");
}

static int fail_interrupted(lua_State *L) {
  return geneva_fail(L, "EINTR", "interrupted");
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* Moves fd above the standard descriptors (keeps O_CLOEXEC): a parent with
** 0, 1 or 2 closed must not have dup2 in the child clobber a source. */
static int fd_high(int fd) {
  int nfd;
  if (fd < 0 || fd > 2) return fd;
  nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  close(fd);
  return nfd;
}

static int pidfd_open_(pid_t pid) {
#ifdef SYS_pidfd_open
  return (int)syscall(SYS_pidfd_open, pid, 0);
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

/* }====== */

/* {====== Signals by name */

static const struct { const char *name; int sig; } signames[] = {
  {"HUP", SIGHUP}, {"INT", SIGINT}, {"QUIT", SIGQUIT}, {"ILL", SIGILL},
  {"TRAP", SIGTRAP}, {"ABRT", SIGABRT}, {"BUS", SIGBUS}, {"FPE", SIGFPE},
  {"KILL", SIGKILL}, {"USR1", SIGUSR1}, {"SEGV", SIGSEGV}, {"USR2", SIGUSR2},
  {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM}, {"CHLD", SIGCHLD},
  {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},
  {"TTOU", SIGTTOU}, {"URG", SIGURG}, {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ},
  {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
  {"SYS", SIGSYS}, {NULL, 0}
};

/* Signal argument: a number (0 allowed: existence check) or a name with or
** without "SIG". Raises on anything else. */
static int check_signal(lua_State *L, int arg, const char *def) {
  const char *s;
  int i;
  if (lua_type(L, arg) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, arg);
    luaL_argcheck(L, n >= 0 && n < NSIG, arg, "signal number out of range");
    return (int)n;
  }
  s = def ? luaL_optstring(L, arg, def) : luaL_checkstring(L, arg);
  if (strncmp(s, "SIG", 3) == 0) s += 3;
  for (i = 0; signames[i].name; i++)
    if (strcmp(s, signames[i].name) == 0) return signames[i].sig;
  return luaL_argerror(L, arg, lua_pushfstring(L, "unknown signal '%s'", s));
}

/* }====== */

/* {====== Process lifetime (no Lua calls: runs inside ledger teardown) */

/* Non-blocking reap of the leader; notes whether its group is now empty. */
static void reap_nohang(proc_t *p) {
  int st;
  pid_t r;
  if (p->reaped) return;
  do r = waitpid(p->pid, &st, WNOHANG); while (r == -1 && errno == EINTR);
  if (r == p->pid) {
    p->reaped = 1;
    p->wstatus = st;
  } else if (r == -1 && errno == ECHILD) {
    p->reaped = 2;                      /* SIGCHLD ignored, or waited elsewhere */
  } else {
    return;
  }
  close_fd(&p->pidfd);
  if (p->pgid <= 0 || (killpg(p->pgid, 0) == -1 && errno == ESRCH))
    p->group_gone = 1;
}

/* Sends sig to the group (or to the lone process). 0 or an errno. */
static int signal_target(proc_t *p, int sig) {
  if (p->pgid > 0) {
    if (p->group_gone) return ESRCH;
    if (killpg(p->pgid, sig) == 0) return 0;
    if (errno == ESRCH && p->reaped) p->group_gone = 1;
    return errno;
  }
  if (p->reaped) return ESRCH;
  return kill(p->pid, sig) == 0 ? 0 : errno;
}

/* Waits for the leader until deadline (<0: forever). 1 reaped, 0 timed out,
** -1 interrupted (only if interruptible). */
static int wait_leader(proc_t *p, double deadline, int interruptible) {
  double backoff = 0.001;
  for (;;) {
    reap_nohang(p);
    if (p->reaped) return 1;
    if (interruptible && geneva_interrupted()) return -1;
    if (expired(deadline)) return 0;
    if (p->pidfd >= 0) {
      struct pollfd pfd;
      pfd.fd = p->pidfd;
      pfd.events = POLLIN;
      poll(&pfd, 1, slice_ms(deadline));   /* EINTR: loop and check */
    } else {
      nap(backoff);
      if (backoff < 0.05) backoff *= 2;
    }
  }
}

/* TERM the group, wait up to grace for the leader to be reaped and the
** group to empty, then KILL the group and reap. Never interruptible. */
static void terminate_c(proc_t *p, double grace) {
  double deadline = now_mono() + grace;
  reap_nohang(p);
  if (signal_target(p, SIGTERM) == 0) signal_target(p, SIGCONT);  /* wake stopped */
  wait_leader(p, deadline, 0);
  while (p->pgid > 0 && !p->group_gone && !expired(deadline)) {
    if (killpg(p->pgid, 0) == -1 && errno == ESRCH) { p->group_gone = 1; break; }
    nap(0.01);
  }
  signal_target(p, SIGKILL);
  if (!p->reaped) wait_leader(p, now_mono() + 5.0, 0);   /* D state: give up */
}

/* The release (close(), __close, __gc and the ledger teardown): closes the
** pipes, terminates the group and reaps. */
static int proc_release(void *ud) {
  proc_t *p = (proc_t *)ud;
  int i;
  for (i = 0; i < 3; i++) {                /* EOF/EPIPE first: quicker exits */
    close_fd(&p->io[i].fd);
    free(p->io[i].buf);
    p->io[i].buf = NULL;
    p->io[i].off = p->io[i].len = p->io[i].cap = 0;
  }
  terminate_c(p, p->grace);
  close_fd(&p->pidfd);
  p->pid = 0;
  return 0;
}

static void proc_describe(lua_State *L, void *ud, int idx) {
  (void)idx;
  lua_pushfstring(L, "(pid %d)", (int)((proc_t *)ud)->pid);
}

static const geneva_class proc_class = {
  "geneva.proc.Process", NULL, "proc", proc_release, proc_describe, NULL, NULL
};

/* }====== */

/* {====== Handle access */

/* Every method goes through here: raises on a closed Process. */
static proc_t *check_open(lua_State *L, int i) {
  return (proc_t *)geneva_handle_check(L, i, &proc_class);
}

/* A "stdout"/"stderr" (or "stdin" when allow_in) argument naming a pipe. */
static int check_which(lua_State *L, proc_t *p, int arg, int allow_in, const char *def) {
  int w = luaL_checkoption(L, arg, def, io_names);
  if (w == IO_STDIN && !allow_in)
    luaL_argerror(L, arg, "stdin cannot be read");
  if (p->io[w].fd < 0 && p->io[w].len == 0 && !p->io[w].eof)
    luaL_argerror(L, arg, lua_pushfstring(L, "%s is not a pipe (or was closed)", io_names[w]));
  return w;
}

/* Pushes the exit status of a reaped process: "exited", code |
** "signaled", signo | "unknown" (reaped elsewhere). Returns the count. */
static int push_status(lua_State *L, proc_t *p) {
  if (p->reaped == 2) { lua_pushliteral(L, "unknown"); return 1; }
  if (WIFSIGNALED(p->wstatus)) {
    lua_pushliteral(L, "signaled");
    lua_pushinteger(L, WTERMSIG(p->wstatus));
  } else {
    lua_pushliteral(L, "exited");
    lua_pushinteger(L, WEXITSTATUS(p->wstatus));
  }
  return 2;
}

/* }====== */

/* {====== Pipe I/O */

/* Reads what is available into pp's buffer, waiting until deadline.
** 1 data, 0 EOF, -1 timeout, -2 interrupted, -3 error (errno set). */
static int pipe_fill(proc_pipe *pp, double deadline) {
  for (;;) {
    ssize_t n;
    if (pp->eof || pp->fd < 0) { pp->eof = 1; return 0; }
    if (pp->cap - pp->off - pp->len < READ_CHUNK) {
      if (pp->off > 0) {                   /* compact first */
        memmove(pp->buf, pp->buf + pp->off, pp->len);
        pp->off = 0;
      }
      if (pp->cap - pp->len < READ_CHUNK) {
        size_t ncap = pp->len + READ_CHUNK;
        char *nb = (char *)realloc(pp->buf, ncap);
        if (!nb) { errno = ENOMEM; return -3; }
        pp->buf = nb;
        pp->cap = ncap;
      }
    }
    n = read(pp->fd, pp->buf + pp->off + pp->len, pp->cap - pp->off - pp->len);
    if (n > 0) { pp->len += (size_t)n; return 1; }
    if (n == 0) { pp->eof = 1; close_fd(&pp->fd); return 0; }
    if (errno == EINTR) {
      if (geneva_interrupted()) return -2;
      continue;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -3;
    for (;;) {                             /* wait for readability */
      struct pollfd pfd;
      int r;
      if (geneva_interrupted()) return -2;
      if (expired(deadline)) return -1;
      pfd.fd = pp->fd;
      pfd.events = POLLIN;
      r = poll(&pfd, 1, slice_ms(deadline));
      if (r > 0) break;
      if (r < 0 && errno != EINTR) return -3;
    }
  }
}

static void pipe_consume(proc_pipe *pp, size_t n) {
  pp->off += n;
  pp->len -= n;
  if (pp->len == 0) pp->off = 0;
}

/* Pushes the failure for a pipe_fill result other than 1. */
static int fill_fail(lua_State *L, int r) {
  switch (r) {
    case 0: return geneva_fail(L, "EOF", "eof");
    case -1: return fail_timeout(L);
    case -2: return fail_interrupted(L);
    default: return geneva_fail_errno(L, errno, "read");
  }
}

/* write(2) without dying of SIGPIPE in an embedder that did not ignore it:
** SIGPIPE is blocked meanwhile and a SIGPIPE we caused is drained. */
static ssize_t write_nosigpipe(int fd, const char *b, size_t n) {
  sigset_t set, old, pend;
  ssize_t r;
  int e, was_pending;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  sigpending(&pend);
  was_pending = sigismember(&pend, SIGPIPE);
  sigprocmask(SIG_BLOCK, &set, &old);
  r = write(fd, b, n);
  e = errno;
  if (r < 0 && e == EPIPE && !was_pending) {
    struct timespec zero = {0, 0};
    sigtimedwait(&set, NULL, &zero);
  }
  sigprocmask(SIG_SETMASK, &old, NULL);
  errno = e;
  return r;
}

/* }====== */

/* {====== Methods */

/* p:pid() -> integer */
static int proc_m_pid(lua_State *L) {
  lua_pushinteger(L, check_open(L, 1)->pid);
  return 1;
}

/* p:pgid() -> integer | nil (the process shares our group) */
static int proc_m_pgid(lua_State *L) {
  proc_t *p = check_open(L, 1);
  if (p->pgid > 0) lua_pushinteger(L, p->pgid); else lua_pushnil(L);
  return 1;
}

/* p:write(data [, timeout_s]) -> bytes written | nil, msg, code.
** Without a timeout it writes everything; with one it returns what it wrote
** by then (0 is possible: timeout 0 is a non-blocking write). Failures:
** "EPIPE" (the child closed stdin), "EINTR" (interrupted), errno codes.
** Raises if stdin is not a pipe or was closed. */
static int proc_m_write(lua_State *L) {
  proc_t *p = check_open(L, 1);
  size_t len, off = 0;
  const char *data = luaL_checklstring(L, 2, &len);
  double deadline = opt_deadline(L, 3);
  int fd = p->io[IO_STDIN].fd;
  if (fd < 0) return luaL_error(L, "stdin is not a pipe (or was closed)");
  while (off < len) {
    ssize_t n = write_nosigpipe(fd, data + off, len - off);
    if (n >= 0) { off += (size_t)n; continue; }
    if (errno == EINTR) {
      if (geneva_interrupted()) return fail_interrupted(L);
      continue;
    }
    if (errno == EPIPE)
      return geneva_fail(L, "EPIPE", "broken pipe: the process closed its stdin");
    if (errno != EAGAIN && errno != EWOULDBLOCK) return geneva_fail_errno(L, errno, "write");
    for (;;) {                             /* wait for room */
      struct pollfd pfd;
      int r;
      if (geneva_interrupted()) return fail_interrupted(L);
      if (expired(deadline)) { lua_pushinteger(L, (lua_Integer)off); return 1; }
      pfd.fd = fd;
      pfd.events = POLLOUT;
      r = poll(&pfd, 1, slice_ms(deadline));
      if (r > 0) break;
      if (r < 0 && errno != EINTR) return geneva_fail_errno(L, errno, "poll");
    }
  }
  lua_pushinteger(L, (lua_Integer)off);
  return 1;
}

/* p:close_stdin() -> true. Idempotent: the child sees EOF. */
static int proc_m_close_stdin(lua_State *L) {
  proc_t *p = check_open(L, 1);
  close_fd(&p->io[IO_STDIN].fd);
  lua_pushboolean(L, 1);
  return 1;
}

/* p:read(which [, max_bytes [, timeout_s]]) -> data | nil, msg, code.
** Returns as soon as some data is there (at most max_bytes, default 64 KiB).
** At EOF: nil, "eof", "EOF"; on timeout nil, "timeout", "ETIMEDOUT";
** interrupted: nil, "interrupted", "EINTR". Raises on misuse. */
static int proc_m_read(lua_State *L) {
  proc_t *p = check_open(L, 1);
  int w = check_which(L, p, 2, 0, NULL);
  lua_Integer max = luaL_optinteger(L, 3, READ_CHUNK);
  double deadline;
  proc_pipe *pp = &p->io[w];
  size_t n;
  luaL_argcheck(L, max > 0, 3, "max_bytes must be positive");
  deadline = opt_deadline(L, 4);
  if (pp->len == 0) {
    int r = pipe_fill(pp, deadline);
    if (r != 1) return fill_fail(L, r);
  }
  n = pp->len < (size_t)max ? pp->len : (size_t)max;
  lua_pushlstring(L, pp->buf + pp->off, n);
  pipe_consume(pp, n);
  return 1;
}

/* p:read_line(which [, timeout_s]) -> line (without "\n") | nil, msg, code.
** A last line without "\n" is returned at EOF; then nil, "eof", "EOF".
** On timeout the partial line stays buffered. */
static int proc_m_read_line(lua_State *L) {
  proc_t *p = check_open(L, 1);
  int w = check_which(L, p, 2, 0, NULL);
  double deadline = opt_deadline(L, 3);
  proc_pipe *pp = &p->io[w];
  size_t scanned = 0;
  for (;;) {
    const char *nl = pp->len > scanned
        ? (const char *)memchr(pp->buf + pp->off + scanned, '\n', pp->len - scanned) : NULL;
    int r;
    if (nl) {
      size_t n = (size_t)(nl - (pp->buf + pp->off));
      lua_pushlstring(L, pp->buf + pp->off, n);
      pipe_consume(pp, n + 1);
      return 1;
    }
    scanned = pp->len;
    r = pipe_fill(pp, deadline);
    if (r == 0 && pp->len > 0) {
      lua_pushlstring(L, pp->buf + pp->off, pp->len);
      pipe_consume(pp, pp->len);
      return 1;
    }
    if (r != 1) return fill_fail(L, r);
  }
}

/* Is w readable (or writable, for stdin) without waiting? */
static int ready_now(proc_t *p, int w) {
  return w != IO_STDIN && (p->io[w].len > 0 || p->io[w].eof);
}

/* Polls n entries (procs[i], whichs[i]); marks ready[i]. 1 done (possibly
** none ready), -2 interrupted, -3 error (errno). */
static int poll_many(proc_t **procs, const int *whichs, int *ready,
                     struct pollfd *pfds, int n, double deadline) {
  int i, any = 0, wait = 1;
  if (n == 0) return 1;
  for (i = 0; i < n; i++) {
    ready[i] = ready_now(procs[i], whichs[i]);
    any |= ready[i];
    pfds[i].fd = ready[i] ? -1 : procs[i]->io[whichs[i]].fd;
    pfds[i].events = whichs[i] == IO_STDIN ? POLLOUT : POLLIN;
    pfds[i].revents = 0;
  }
  if (any) wait = 0;                       /* just look at the others */
  for (;;) {
    int r;
    if (wait && geneva_interrupted()) return -2;
    r = poll(pfds, (nfds_t)n, wait ? slice_ms(deadline) : 0);
    if (r > 0) break;
    if (r < 0 && errno != EINTR) return -3;
    if (r == 0 && (!wait || expired(deadline))) break;
  }
  for (i = 0; i < n; i++)
    if (pfds[i].revents) ready[i] = 1;     /* POLLHUP/POLLERR too: read tells */
  return 1;
}

/* p:poll([timeout_s]) -> array of ready pipe names ("stdout", "stderr")
** (empty on timeout) | nil, "interrupted", "EINTR". EOF counts as ready. */
static int proc_m_poll(lua_State *L) {
  proc_t *p = check_open(L, 1);
  double deadline = opt_deadline(L, 2);
  proc_t *procs[2];
  int whichs[2], ready[2], n = 0, i, k = 0, r;
  struct pollfd pfds[2];
  for (i = IO_STDOUT; i <= IO_STDERR; i++) {
    if (p->io[i].fd < 0 && !ready_now(p, i)) continue;
    procs[n] = p;
    whichs[n++] = i;
  }
  r = poll_many(procs, whichs, ready, pfds, n, deadline);
  if (r == -2) return fail_interrupted(L);
  if (r == -3) return geneva_fail_errno(L, errno, "poll");
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++)
    if (ready[i]) {
      lua_pushstring(L, io_names[whichs[i]]);
      lua_rawseti(L, -2, ++k);
    }
  return 1;
}

/* p:fds() -> {stdin=fd, stdout=fd, stderr=fd} (open pipes only) */
static int proc_m_fds(lua_State *L) {
  proc_t *p = check_open(L, 1);
  int i;
  lua_createtable(L, 0, 3);
  for (i = 0; i < 3; i++)
    if (p->io[i].fd >= 0) {
      lua_pushinteger(L, p->io[i].fd);
      lua_setfield(L, -2, io_names[i]);
    }
  return 1;
}

/* p:wait([timeout_s]) -> "exited", code | "signaled", signo |
** nil, "timeout", "ETIMEDOUT" | nil, "interrupted", "EINTR".
** Pipes stay open: read what is left after the exit. */
static int proc_m_wait(lua_State *L) {
  proc_t *p = check_open(L, 1);
  double deadline = opt_deadline(L, 2);
  int r = wait_leader(p, deadline, 1);
  if (r == 0) return fail_timeout(L);
  if (r < 0) return fail_interrupted(L);
  return push_status(L, p);
}

/* p:status() -> "running" | "exited", code | "signaled", signo. Never blocks. */
static int proc_m_status(lua_State *L) {
  proc_t *p = check_open(L, 1);
  reap_nohang(p);
  if (!p->reaped) { lua_pushliteral(L, "running"); return 1; }
  return push_status(L, p);
}

/* p:kill([sig = "TERM"]) -> true | nil, msg, code ("ESRCH": nothing left).
** Signals the whole process group (the process alone with new_group=false). */
static int proc_m_kill(lua_State *L) {
  proc_t *p = check_open(L, 1);
  int sig = check_signal(L, 2, "TERM");
  int err;
  reap_nohang(p);
  err = signal_target(p, sig);
  if (err) return geneva_fail_errno(L, err, "kill");
  lua_pushboolean(L, 1);
  return 1;
}

/* p:terminate([grace_s]) -> like wait(). TERM to the group, up to grace_s
** (default: the spawn's grace, 2 s) for it to end, then KILL; reaps. Also
** kills what is left of the group after the leader exited. */
static int proc_m_terminate(lua_State *L) {
  proc_t *p = check_open(L, 1);
  lua_Number grace = luaL_optnumber(L, 2, p->grace);
  luaL_argcheck(L, grace >= 0, 2, "grace must be >= 0");
  terminate_c(p, grace);
  if (!p->reaped) return geneva_fail(L, "ETIMEDOUT", "process %d did not die", (int)p->pid);
  return push_status(L, p);
}

/* p:close() -> true: idempotent; closes the pipes, terminates the group
** (see terminate) and reaps, as __close, __gc and the ledger do.
** p:is_closed(), __tostring "geneva.proc.Process (pid N)": handle.h */

/* }====== */

/* {====== spawn */

enum { S_INHERIT, S_PIPE, S_NULL, S_PATH, S_STDOUT, S_STDERR };

typedef struct spawn_plan {
  const char *const *argv;
  const char *const *envp;     /* NULL: environ */
  const char *const *cands;    /* execve candidates (PATH search done here) */
  const char *cwd;
  int src[3];                  /* the child's 0, 1, 2 come from; -1 inherit */
  int errfd;
  int new_group, pdeathsig;
  pid_t parent;
} spawn_plan;

enum { STAGE_SETPGID = 1, STAGE_PDEATHSIG, STAGE_DUP, STAGE_CHDIR, STAGE_EXEC };
typedef struct { int stage, err; } child_error;

static void child_fail(const spawn_plan *c, int stage, int err) {
  child_error ce;
  ssize_t r;
  ce.stage = stage;
  ce.err = err;
  do r = write(c->errfd, &ce, sizeof ce); while (r == -1 && errno == EINTR);
  _exit(127);
}

/* Between fork and exec: async-signal-safe calls only. */
static void child_exec(const spawn_plan *c) {
  struct sigaction sa;
  sigset_t none;
  int i, err = ENOENT, seen_eacces = 0;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigemptyset(&sa.sa_mask);
  for (i = 1; i < NSIG; i++)
    if (i != SIGKILL && i != SIGSTOP) sigaction(i, &sa, NULL);  /* EINVAL for glibc's own: fine */
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (c->new_group && setpgid(0, 0) == -1) child_fail(c, STAGE_SETPGID, errno);
  if (c->pdeathsig) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1) child_fail(c, STAGE_PDEATHSIG, errno);
    if (getppid() != c->parent) _exit(127);  /* the parent is already gone */
  }
  for (i = 0; i < 3; i++)
    if (c->src[i] >= 0 && dup2(c->src[i], i) == -1) child_fail(c, STAGE_DUP, errno);
#ifdef SYS_close_range
  syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);   /* fds leaked by others */
#endif
  if (c->cwd && chdir(c->cwd) == -1) child_fail(c, STAGE_CHDIR, errno);
  for (i = 0; c->cands[i]; i++) {
    execve(c->cands[i], (char *const *)c->argv,
           (char *const *)(c->envp ? c->envp : (const char *const *)environ));
    if (errno == EACCES) seen_eacces = 1;
    else if (errno != ENOENT && errno != ENOTDIR && errno != ESTALE) { err = errno; break; }
  }
  if (err == ENOENT && seen_eacces) err = EACCES;
  child_fail(c, STAGE_EXEC, err);
}

/* Reads a stream option: kind and, for S_PATH, the path (kept on the stack
** by the options table). Raises on a bad value. */
static int stream_opt(lua_State *L, int opts, int w, const char **path) {
  const char *s;
  int kind;
  *path = NULL;
  lua_getfield(L, opts, io_names[w]);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return S_INHERIT; }
  if (lua_type(L, -1) != LUA_TSTRING)
    return luaL_error(L, "bad option '%s' to 'spawn' (string expected, got %s)",
                      io_names[w], luaL_typename(L, -1));
  s = lua_tostring(L, -1);
  if (strcmp(s, "pipe") == 0) kind = S_PIPE;
  else if (strcmp(s, "null") == 0) kind = S_NULL;
  else if (strcmp(s, "inherit") == 0) kind = S_INHERIT;
  else if (w == IO_STDERR && strcmp(s, "stdout") == 0) kind = S_STDOUT;
  else if (w == IO_STDOUT && strcmp(s, "stderr") == 0) kind = S_STDERR;
  else if (*s == '\0')
    return luaL_error(L, "bad option '%s' to 'spawn' (empty path)", io_names[w]);
  else { kind = S_PATH; *path = s; }
  lua_pop(L, 1);   /* the options table keeps the string alive */
  return kind;
}

static int opt_bool(lua_State *L, int opts, const char *name, int def) {
  int v = def;
  lua_getfield(L, opts, name);
  if (!lua_isnil(L, -1)) {
    if (!lua_isboolean(L, -1))
      luaL_error(L, "bad option '%s' to 'spawn' (boolean expected, got %s)", name,
                 luaL_typename(L, -1));
    v = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* A NULL-terminated pointer array in a userdata (GC-owned) on the stack. */
static const char **new_ptr_array(lua_State *L, size_t n) {
  return (const char **)lua_newuserdatauv(L, (n + 1) * sizeof(char *), 0);
}

/* Builds the child's environment as a table on the stack (name -> value),
** from env (or environ) with env_add merged over (false removes). Returns
** 1 with the table pushed, or 0 (nothing pushed: inherit as is). */
static int build_env(lua_State *L, int opts) {
  int has_env, has_add, tab, src;
  lua_getfield(L, opts, "env");
  lua_getfield(L, opts, "env_add");
  has_env = !lua_isnil(L, -2);
  has_add = !lua_isnil(L, -1);
  if (has_env) luaL_argcheck(L, lua_istable(L, -2), 1, "option 'env' must be a table");
  if (has_add) luaL_argcheck(L, lua_istable(L, -1), 1, "option 'env_add' must be a table");
  if (!has_env && !has_add) { lua_pop(L, 2); return 0; }
  lua_newtable(L);
  tab = lua_gettop(L);
  if (!has_env) {
    char **e;
    for (e = environ; e && *e; e++) {
      const char *eq = strchr(*e, '=');
      if (!eq || eq == *e) continue;
      lua_pushlstring(L, *e, (size_t)(eq - *e));
      lua_pushstring(L, eq + 1);
      lua_rawset(L, tab);
    }
  }
  for (src = tab - 2; src <= tab - 1; src++) {
    if (lua_isnil(L, src)) continue;
    lua_pushnil(L);
    while (lua_next(L, src)) {
      const char *k;
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "bad option '%s' to 'spawn' (keys must be strings)",
                   src == tab - 2 ? "env" : "env_add");
      k = lua_tostring(L, -2);
      if (*k == '\0' || strchr(k, '='))
        luaL_error(L, "bad environment variable name '%s'", k);
      if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, tab);
        continue;
      }
      if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "bad value for environment variable '%s' (string expected, got %s)",
                   k, luaL_typename(L, -1));
      lua_pushvalue(L, -2);
      lua_pushvalue(L, -2);
      lua_tostring(L, -1);                 /* numbers become strings */
      lua_rawset(L, tab);
      lua_pop(L, 1);
    }
  }
  lua_replace(L, tab - 2);                 /* [merged, env_add] */
  lua_pop(L, 1);
  return 1;
}

/* Closes every fd in fds[0..n) that is >= 0. */
static void close_all(int *fds, int n) {
  int i;
  for (i = 0; i < n; i++) close_fd(&fds[i]);
}

/*
** core.spawn(opts) -> Process | nil, msg, code
** opts: argv (array of strings, required), env (table: replaces the
** environment), env_add (table merged over env or the inherited one; false
** removes), cwd, stdin/stdout/stderr ("pipe" | "null" | "inherit" | path |
** "stderr" for stdout | "stdout" for stderr; default "inherit"), new_group
** (true), pdeathsig (true), grace (2 s: TERM-to-KILL delay for close).
** Raises on bad options; failures to start (ENOENT, EACCES, a bad cwd or
** path) return nil, msg, code. The Process owns the pipes and the child;
** the ledger owns the Process until it is closed.
*/
static int proc_spawn(lua_State *L) {
  spawn_plan plan;
  proc_t *p;
  int kinds[3], opened[8], nopened = 0, ours[3] = {-1, -1, -1}, errpipe[2];
  const char *paths[3], *prog, *what = NULL;
  const char **argvp, **envp = NULL, **cands;
  size_t argc, i, ncand;
  lua_Number grace;
  int opts = 1, env_idx = 0, ud, w, e = 0, saved;
  pid_t pid;
  sigset_t all, oldmask;
  child_error ce;
  ssize_t n;

  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  memset(&plan, 0, sizeof plan);
  /* -- validate and build everything that can raise, before any fd -- */
  lua_getfield(L, opts, "argv");
  luaL_argcheck(L, lua_istable(L, -1), 1, "option 'argv' must be a table");
  argc = (size_t)luaL_len(L, -1);
  luaL_argcheck(L, argc > 0, 1, "option 'argv' is empty");
  /* __len may lie (or be negative): bound argc before (argc + 1) * size wraps */
  luaL_argcheck(L, argc < INT_MAX, 1, "option 'argv' is too long");
  argvp = new_ptr_array(L, argc);          /* [argv, argvp, keep] */
  lua_createtable(L, (int)argc, 0);        /* keeps the (converted) strings */
  for (i = 0; i < argc; i++) {
    lua_geti(L, -3, (lua_Integer)i + 1);
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      return luaL_error(L, "bad option 'argv' to 'spawn' (item %d is a %s)",
                        (int)i + 1, luaL_typename(L, -1));
    argvp[i] = lua_tostring(L, -1);        /* a copy: the caller's table is untouched */
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  argvp[argc] = NULL;
  prog = argvp[0];
  luaL_argcheck(L, *prog != '\0', 1, "option 'argv' has an empty program name");
  for (w = 0; w < 3; w++) kinds[w] = stream_opt(L, opts, w, &paths[w]);
  if (kinds[IO_STDOUT] == S_STDERR && kinds[IO_STDERR] == S_STDOUT)
    return luaL_error(L, "bad options to 'spawn' (stdout and stderr refer to each other)");
  plan.new_group = opt_bool(L, opts, "new_group", 1);
  plan.pdeathsig = opt_bool(L, opts, "pdeathsig", 1);
  lua_getfield(L, opts, "grace");
  grace = lua_isnil(L, -1) ? 2.0 : luaL_checknumber(L, -1);
  luaL_argcheck(L, grace >= 0, 1, "option 'grace' must be >= 0");
  lua_pop(L, 1);
  lua_getfield(L, opts, "cwd");
  if (!lua_isnil(L, -1)) {
    luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 1, "option 'cwd' must be a string");
    plan.cwd = lua_tostring(L, -1);
  }
  /* cwd string stays on the stack */
  if (build_env(L, opts)) {
    size_t m = 0;
    env_idx = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, env_idx)) { m++; lua_pop(L, 1); }
    envp = new_ptr_array(L, m);            /* env_idx + 1 */
    lua_createtable(L, (int)m, 0);         /* env_idx + 2: keeps "K=V" */
    m = 0;
    lua_pushnil(L);
    while (lua_next(L, env_idx)) {
      lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
      envp[m] = lua_tostring(L, -1);
      lua_rawseti(L, env_idx + 2, (lua_Integer)++m);
      lua_pop(L, 1);
    }
    envp[m] = NULL;
  }
  /* PATH search candidates (like execvp, with the child's PATH) */
  if (strchr(prog, '/')) {
    cands = new_ptr_array(L, 1);
    cands[0] = prog;
    cands[1] = NULL;
  } else {
    const char *path = NULL, *s;
    size_t k = 0;
    int list;
    if (env_idx) {
      lua_getfield(L, env_idx, "PATH");
      path = lua_tostring(L, -1);          /* kept by the env table */
      lua_pop(L, 1);
    } else {
      path = getenv("PATH");
    }
    if (!path) path = "/bin:/usr/bin";
    for (ncand = 1, s = path; *s; s++) ncand += (*s == ':');
    cands = new_ptr_array(L, ncand);
    lua_createtable(L, (int)ncand, 0);
    list = lua_gettop(L);
    for (s = path;; ) {
      const char *end = strchr(s, ':');
      size_t dl = end ? (size_t)(end - s) : strlen(s);
      if (dl == 0) lua_pushfstring(L, "./%s", prog);
      else {
        lua_pushlstring(L, s, dl);
        lua_pushfstring(L, "%s/%s", lua_tostring(L, -1), prog);
        lua_remove(L, -2);
      }
      cands[k] = lua_tostring(L, -1);
      lua_rawseti(L, list, (lua_Integer)++k);
      if (!end) break;
      s = end + 1;
    }
    cands[k] = NULL;
  }
  plan.argv = argvp;
  plan.envp = envp;
  plan.cands = cands;
  /* the handle, born closed: from here on nothing raises */
  p = (proc_t *)geneva_handle_new(L, &proc_class, sizeof *p, 0);
  p->pidfd = -1;
  for (w = 0; w < 3; w++) p->io[w].fd = -1;
  ud = lua_gettop(L);
  luaL_checkstack(L, 8, NULL);

  /* -- acquire descriptors -- */
  for (w = 0; w < 3; w++) plan.src[w] = -1;
  for (w = 0; w < 3; w++) {
    int fd = -1;
    if (kinds[w] == S_PIPE) {
      int pp[2];
      if (pipe2(pp, O_CLOEXEC) == -1) { e = errno; what = "pipe"; goto fail; }
      pp[0] = fd_high(pp[0]);
      pp[1] = fd_high(pp[1]);
      if (pp[0] < 0 || pp[1] < 0) {
        e = errno; close_fd(&pp[0]); close_fd(&pp[1]); what = "pipe"; goto fail;
      }
      ours[w] = w == IO_STDIN ? pp[1] : pp[0];
      fd = w == IO_STDIN ? pp[0] : pp[1];
      fcntl(ours[w], F_SETFL, fcntl(ours[w], F_GETFL) | O_NONBLOCK);
    } else if (kinds[w] == S_NULL || kinds[w] == S_PATH) {
      const char *f = kinds[w] == S_NULL ? "/dev/null" : paths[w];
      int flags = w == IO_STDIN ? O_RDONLY : (O_WRONLY | O_CREAT | O_TRUNC);
      if (kinds[w] == S_NULL) flags = O_RDWR;
      fd = fd_high(open(f, flags | O_CLOEXEC, 0666));
      if (fd < 0) { e = errno; what = f; goto fail; }
    }
    if (fd >= 0) { opened[nopened++] = fd; plan.src[w] = fd; }
  }
  if (kinds[IO_STDOUT] == S_STDERR)
    plan.src[IO_STDOUT] = plan.src[IO_STDERR] >= 0 ? plan.src[IO_STDERR] : STDERR_FILENO;
  if (kinds[IO_STDERR] == S_STDOUT)
    plan.src[IO_STDERR] = plan.src[IO_STDOUT] >= 0 ? plan.src[IO_STDOUT] : STDOUT_FILENO;
  if (pipe2(errpipe, O_CLOEXEC) == -1) { e = errno; what = "pipe"; goto fail; }
  opened[nopened++] = errpipe[0];
  opened[nopened++] = errpipe[1];
  plan.errfd = errpipe[1];
  plan.parent = getpid();

  /* -- fork: signals blocked so no handler runs in the child before reset -- */
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, &oldmask);
  pid = fork();
  if (pid == 0) child_exec(&plan);         /* never returns */
  saved = errno;
  sigprocmask(SIG_SETMASK, &oldmask, NULL);
  if (pid < 0) { e = saved; what = "fork"; goto fail; }
  if (plan.new_group) setpgid(pid, pid);   /* both sides: no race with killpg */

  /* close the child's ends; learn whether exec worked */
  for (i = 0; i < (size_t)nopened; i++)
    if (opened[i] != errpipe[0]) close(opened[i]);
  nopened = 0;
  do n = read(errpipe[0], &ce, sizeof ce); while (n == -1 && errno == EINTR);
  close(errpipe[0]);
  if (n == (ssize_t)sizeof ce) {
    int st;
    while (waitpid(pid, &st, 0) == -1 && errno == EINTR) {}
    close_all(ours, 3);
    switch (ce.stage) {
      case STAGE_EXEC:
        return geneva_fail(L, geneva_errno_name(ce.err), "cannot run '%s': %s",
                           prog, strerror(ce.err));
      case STAGE_CHDIR:
        return geneva_fail(L, geneva_errno_name(ce.err), "cannot change directory to '%s': %s",
                           plan.cwd, strerror(ce.err));
      default:
        return geneva_fail(L, geneva_errno_name(ce.err), "cannot start '%s': %s: %s", prog,
                           ce.stage == STAGE_SETPGID ? "setpgid" :
                           ce.stage == STAGE_PDEATHSIG ? "prctl" : "dup2",
                           strerror(ce.err));
    }
  }
  /* n == 0: exec succeeded (n < 0 cannot really happen: assume it did) */
  p->pid = pid;
  p->pgid = plan.new_group ? pid : 0;
  p->pidfd = pidfd_open_(pid);
  p->grace = grace;
  for (w = 0; w < 3; w++) p->io[w].fd = ours[w];
  geneva_handle_open(L, p);
  lua_settop(L, ud);
  return 1;

fail:
  close_all(opened, nopened);
  close_all(ours, 3);
  if (what && strcmp(what, "pipe") != 0 && strcmp(what, "fork") != 0)
    return geneva_fail(L, geneva_errno_name(e), "cannot open '%s': %s", what, strerror(e));
  return geneva_fail_errno(L, e, what);
}

/* }====== */

/* {====== Module functions */

/*
** core.poll(entries [, timeout_s]) -> array of ready entries | nil, msg, code
** entries: array of {process, which} (which: "stdout", "stderr", or "stdin"
** for writability). Returns the entry tables that are ready, in order (empty
** on timeout); EOF counts as ready. nil, "interrupted", "EINTR" on a signal.
** Raises on a bad entry or a closed Process.
*/
static int proc_poll(lua_State *L) {
  size_t n, i;
  double deadline;
  proc_t **procs;
  int *whichs, *ready, r, k = 0;
  struct pollfd *pfds;
  luaL_checktype(L, 1, LUA_TTABLE);
  deadline = opt_deadline(L, 2);
  n = (size_t)luaL_len(L, 1);
  luaL_argcheck(L, n < 100000, 1, "too many entries");
  /* scratch memory is a userdata: GC-owned, so raising below leaks nothing */
  procs = (proc_t **)lua_newuserdatauv(L, n * (sizeof(proc_t *) + 3 * sizeof(int)
                                               + sizeof(struct pollfd)) + 1, 0);
  pfds = (struct pollfd *)(void *)(procs + n);
  whichs = (int *)(void *)(pfds + n);
  ready = whichs + n;
  for (i = 0; i < n; i++) {
    int top, w;
    const char *ws;
    lua_geti(L, 1, (lua_Integer)i + 1);
    if (!lua_istable(L, -1))
      return luaL_argerror(L, 1, lua_pushfstring(L, "entry %d is not a table", (int)i + 1));
    lua_geti(L, -1, 1);
    lua_geti(L, -2, 2);
    top = lua_gettop(L);
    procs[i] = check_open(L, top - 1);
    ws = lua_tostring(L, top);
    for (w = 0; ws && io_names[w] && strcmp(ws, io_names[w]) != 0; w++) {}
    if (!ws || !io_names[w])
      return luaL_argerror(L, 1, lua_pushfstring(L,
          "entry %d: 'stdout', 'stderr' or 'stdin' expected", (int)i + 1));
    if (procs[i]->io[w].fd < 0 && !ready_now(procs[i], w))
      return luaL_argerror(L, 1, lua_pushfstring(L,
          "entry %d: %s is not a pipe (or was closed)", (int)i + 1, io_names[w]));
    whichs[i] = w;
    lua_pop(L, 3);
  }
  r = poll_many(procs, whichs, ready, pfds, (int)n, deadline);
  if (r == -2) return fail_interrupted(L);
  if (r == -3) return geneva_fail_errno(L, errno, "poll");
  lua_newtable(L);
  for (i = 0; i < n; i++)
    if (ready[i]) {
      lua_geti(L, 1, (lua_Integer)i + 1);
      lua_rawseti(L, -2, ++k);
    }
  return 1;
}

/* Reads a small file into buf (NUL-terminated). Length, or -1 with errno. */
static ssize_t read_small(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  ssize_t n, total = 0;
  if (fd < 0) return -1;
  while ((size_t)total < cap - 1) {
    n = read(fd, buf + total, cap - 1 - (size_t)total);
    if (n < 0) { if (errno == EINTR) continue; total = -1; break; }
    if (n == 0) break;
    total += n;
  }
  if (total >= 0) buf[total] = '\0';
  n = total;
  { int e = errno; close(fd); errno = e; }
  return n;
}

typedef struct proc_info {
  long long pid, ppid, pgid, start_time;
  char state;
  char name[64];
  char exe[PATH_MAX];          /* "" when unreadable */
  long long uid;               /* -1 when unknown */
} proc_info;

/* Fills pi from /proc/<pid>; 0, or an errno (ESRCH when gone). */
static int read_info(pid_t pid, proc_info *pi) {
  char path[64], buf[1024];
  const char *open_p, *close_p;
  struct stat st;
  ssize_t n;
  int field;
  char *s, *tok, *save = NULL;
  memset(pi, 0, sizeof *pi);
  pi->pid = pid;
  pi->uid = -1;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  if (read_small(path, buf, sizeof buf) < 0)
    return errno == ENOENT ? ESRCH : errno;
  /* "pid (comm) state ppid pgrp ...": comm may hold spaces and parens */
  open_p = strchr(buf, '(');
  close_p = strrchr(buf, ')');
  if (!open_p || !close_p || close_p < open_p) return EINVAL;
  n = close_p - open_p - 1;
  if (n >= (ssize_t)sizeof pi->name) n = sizeof pi->name - 1;
  memcpy(pi->name, open_p + 1, (size_t)n);
  pi->name[n] = '\0';
  s = (char *)close_p + 1;
  for (field = 3, tok = strtok_r(s, " ", &save); tok; tok = strtok_r(NULL, " ", &save), field++) {
    if (field == 3) pi->state = tok[0];
    else if (field == 4) pi->ppid = strtoll(tok, NULL, 10);
    else if (field == 5) pi->pgid = strtoll(tok, NULL, 10);
    else if (field == 22) { pi->start_time = strtoll(tok, NULL, 10); break; }
  }
  if (field != 22) return EINVAL;
  snprintf(path, sizeof path, "/proc/%d", (int)pid);
  if (stat(path, &st) == 0) pi->uid = (long long)st.st_uid;
  snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
  n = readlink(path, pi->exe, sizeof pi->exe - 1);
  pi->exe[n > 0 ? n : 0] = '\0';
  return 0;
}

static void push_info(lua_State *L, const proc_info *pi) {
  char host[256], boot[128];
  lua_createtable(L, 0, 11);
  lua_pushinteger(L, pi->pid); lua_setfield(L, -2, "pid");
  lua_pushinteger(L, pi->ppid); lua_setfield(L, -2, "ppid");
  lua_pushinteger(L, pi->pgid); lua_setfield(L, -2, "pgid");
  lua_pushinteger(L, pi->start_time); lua_setfield(L, -2, "start_time");
  lua_pushlstring(L, &pi->state, 1); lua_setfield(L, -2, "state");
  lua_pushstring(L, pi->name); lua_setfield(L, -2, "name");
  if (pi->exe[0]) { lua_pushstring(L, pi->exe); lua_setfield(L, -2, "exe"); }
  if (pi->uid >= 0) { lua_pushinteger(L, pi->uid); lua_setfield(L, -2, "uid"); }
  if (gethostname(host, sizeof host) == 0) {
    host[sizeof host - 1] = '\0';
    lua_pushstring(L, host); lua_setfield(L, -2, "hostname");
  }
  if (read_small("/proc/sys/kernel/random/boot_id", boot, sizeof boot) > 0) {
    boot[strcspn(boot, "\n")] = '\0';
    lua_pushstring(L, boot); lua_setfield(L, -2, "boot_id");
  }
}

/* core.self() -> {pid, ppid, pgid, start_time (clock ticks since boot),
** state, name, exe, uid, hostname, boot_id} | nil, msg, code */
static int proc_self(lua_State *L) {
  proc_info pi;
  int e = read_info(getpid(), &pi);
  if (e) return geneva_fail_errno(L, e, "/proc/self/stat");
  push_info(L, &pi);
  return 1;
}

/* core.info(pid) -> table as self() | nil, msg, "ESRCH" when gone (a zombie
** is still there: state "Z"). exe/uid may be missing for other users. */
static int proc_info_(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  proc_info pi;
  int e;
  luaL_argcheck(L, pid > 0 && pid <= INT_MAX, 1, "pid out of range");
  e = read_info((pid_t)pid, &pi);
  if (e == ESRCH) return geneva_fail(L, "ESRCH", "no such process: %d", (int)pid);
  if (e) return geneva_fail_errno(L, e, "/proc/<pid>/stat");
  push_info(L, &pi);
  return 1;
}

/* core.alive(pid [, start_time]) -> boolean. A zombie is dead; with
** start_time, a recycled pid is dead too. When /proc cannot be read (but
** the pid exists) it answers true: a lease is never taken from a live owner.
** Never raises on a gone pid. */
static int proc_alive(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  int has_start = !lua_isnoneornil(L, 2);
  lua_Integer start = has_start ? luaL_checkinteger(L, 2) : 0;
  proc_info pi;
  int alive = 0;
  int e;
  luaL_argcheck(L, pid > 0 && pid <= INT_MAX, 1, "pid out of range");
  e = read_info((pid_t)pid, &pi);
  if (e == 0)
    alive = pi.state != 'Z' && pi.state != 'X' && (!has_start || pi.start_time == start);
  else if (e != ESRCH)   /* /proc hidden (hidepid): err on the side of alive */
    alive = kill((pid_t)pid, 0) == 0 || errno == EPERM;
  lua_pushboolean(L, alive);
  return 1;
}

/* core.exe() -> path of the running executable | nil, msg, code */
static int proc_exe(lua_State *L) {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) return geneva_fail_errno(L, errno, "/proc/self/exe");
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

/* core.kill(pid, sig) / core.killpg(pgid, sig) -> true | nil, msg, code.
** sig: name ("TERM", "SIGKILL") or number; default "TERM". */
static int do_kill(lua_State *L, int group) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  int sig = check_signal(L, 2, "TERM");
  int r;
  luaL_argcheck(L, pid > 0 && pid <= INT_MAX, 1, "pid must be positive");
  r = group ? killpg((pid_t)pid, sig) : kill((pid_t)pid, sig);
  if (r == -1) return geneva_fail_errno(L, errno, group ? "killpg" : "kill");
  lua_pushboolean(L, 1);
  return 1;
}
static int proc_kill(lua_State *L) { return do_kill(L, 0); }
static int proc_killpg(lua_State *L) { return do_kill(L, 1); }

/* core.clock() -> monotonic seconds (for deadlines in the Lua face) */
static int proc_clock(lua_State *L) {
  lua_pushnumber(L, now_mono());
  return 1;
}

/* core.signum(name) -> number (raises on an unknown name) */
static int proc_signum(lua_State *L) {
  lua_pushinteger(L, check_signal(L, 1, NULL));
  return 1;
}

/* }====== */

/* {====== kill_if: signalling a process named by untrusted input */

/*
** core.kill_if(pid, start_time, sig [, group=false]) -> true | nil, msg,
** code. Signals pid only while it is still the process that started at
** start_time (clock ticks since boot, as info() gives): a pidfd pins the
** process before /proc is read, and the signal goes through that pidfd, so a
** pid recycled meanwhile is never hit. With group, the signal goes to the
** process group pid leads, and only if pid leads it (EPERM otherwise).
** "ESRCH" when the process is gone (or a zombie, or another one by now).
** The caller checks who the process is (geneva.reap); this checks it is
** still that one.
*/
static int proc_kill_if(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  lua_Integer start = luaL_checkinteger(L, 2);
  int sig = check_signal(L, 3, NULL);
  int group = lua_toboolean(L, 4);
  proc_info pi;
  int fd, e, r = 0;
  luaL_argcheck(L, pid > 1 && pid <= INT_MAX, 1, "pid out of range");
  fd = pidfd_open_((pid_t)pid);
  if (fd < 0 && errno == ESRCH) return geneva_fail(L, "ESRCH", "no such process: %d", (int)pid);
  if (fd < 0 && errno != ENOSYS) return geneva_fail_errno(L, errno, "pidfd_open");
  e = read_info((pid_t)pid, &pi);
  if (e == 0 && (pi.start_time != start || pi.state == 'Z' || pi.state == 'X')) e = ESRCH;
  if (e == 0 && group && pi.pgid != pid) e = EPERM;
  if (e == 0) {
    if (group) {
      r = killpg((pid_t)pid, sig);
    } else {
#ifdef SYS_pidfd_send_signal
      r = fd >= 0 ? (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0) : kill((pid_t)pid, sig);
#else
      r = kill((pid_t)pid, sig);
#endif
    }
    if (r == -1) e = errno;
  }
  if (fd >= 0) close(fd);
  if (e == ESRCH) return geneva_fail(L, "ESRCH", "no such process: %d", (int)pid);
  if (e == EPERM && group && r == 0)
    return geneva_fail(L, "EPERM", "process %d does not lead its process group", (int)pid);
  if (e) return geneva_fail_errno(L, e, group ? "killpg" : "kill");
  lua_pushboolean(L, 1);
  return 1;
}

/* }====== */

static const luaL_Reg meth[] = {
  {"pid", proc_m_pid}, {"pgid", proc_m_pgid}, {"write", proc_m_write},
  {"close_stdin", proc_m_close_stdin}, {"read", proc_m_read},
  {"read_line", proc_m_read_line}, {"poll", proc_m_poll}, {"fds", proc_m_fds},
  {"wait", proc_m_wait}, {"status", proc_m_status}, {"kill", proc_m_kill},
  {"terminate", proc_m_terminate},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"spawn", proc_spawn}, {"poll", proc_poll}, {"self", proc_self},
  {"info", proc_info_}, {"alive", proc_alive}, {"exe", proc_exe},
  {"kill", proc_kill}, {"killpg", proc_killpg}, {"signum", proc_signum},
  {"clock", proc_clock}, {"kill_if", proc_kill_if},
  {NULL, NULL}
};

int luaopen_geneva_proc_core(lua_State *L);   /* called by the host's preload table */

int luaopen_geneva_proc_core(lua_State *L) {
  geneva_class_register(L, &proc_class, meth);
  luaL_newlib(L, funcs);
  luaL_getmetatable(L, proc_class.name);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "Process");          /* the method table: the Lua face extends it */
  lua_pop(L, 1);
  return 1;
}
