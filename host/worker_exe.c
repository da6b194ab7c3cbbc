/*
** worker_exe.c: which program runs as a worker (README, Embedding), and
** the host's Lua module geneva.host.core.
**
** Workers are `geneva` processes, never copies of an embedding application:
** the local runner starts `<worker_exe> worker --stdio`, and a manifest with
** ship_host bundles <worker_exe> as bin/geneva. In order:
**   1. geneva_host_opts.worker_exe (the embedder said so);
**   2. $GENEVA_WORKER_EXE (an operator or a test overrides the search);
**   3. the running executable, when it is the geneva command (main.c);
**   4. the geneva installed beside libgeneva: dladdr on a libgeneva function
**      gives the library's file, and <libdir>/<libdir to bindir>/geneva is
**      where `cmake --install` put the command (also in the build tree,
**      which is laid out like an install);
**   5. geneva on PATH.
** 1 and 2 may be a path or a name looked up on PATH; a value that names no
** executable file is an error, not a reason to look elsewhere.
*/
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#include "geneva.h"
#include "host.h"
#include "host_private.h"

#ifndef GENEVA_LIBDIR_TO_BINDIR
#define GENEVA_LIBDIR_TO_BINDIR "../bin"
#endif

#define ADVICE "set geneva_host_opts.worker_exe, or the GENEVA_WORKER_EXE environment " \
  "variable, to the geneva executable"

static void msg(char *err, size_t errlen, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
static void msg(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* 0 when path is an executable regular file; else an errno. */
static int executable(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) return errno;
  if (!S_ISREG(st.st_mode)) return S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
  if (access(path, X_OK) != 0) return errno;
  return 0;
}

/* Canonical absolute path of an executable file into buf: 0 or an errno. */
static int take(const char *path, char *buf, size_t len) {
  char real[PATH_MAX];
  int e = executable(path);
  if (e) return e;
  if (!realpath(path, real)) return errno;
  if (strlen(real) >= len) return ENAMETOOLONG;
  strcpy(buf, real);
  return 0;
}

/* Looks name up on $PATH (empty entries are skipped: no implicit "."):
** 0 with the path in buf, or ENOENT. */
static int search_path(const char *name, char *buf, size_t len) {
  const char *path = getenv("PATH"), *s;
  char cand[PATH_MAX];
  if (!path) path = "/usr/local/bin:/usr/bin:/bin";
  for (s = path; *s; ) {
    const char *end = strchr(s, ':');
    size_t dl = end ? (size_t)(end - s) : strlen(s);
    if (dl > 0 && (size_t)snprintf(cand, sizeof cand, "%.*s/%s", (int)dl, s, name) < sizeof cand &&
        take(cand, buf, len) == 0)
      return 0;
    if (!end) break;
    s = end + 1;
  }
  return ENOENT;
}

/* A configured value (opts or environment): a path, or a name on PATH. */
static int given(const char *what, const char *value, char *buf, size_t len,
                 char *err, size_t errlen) {
  int e;
  if (strchr(value, '/')) {
    e = take(value, buf, len);
    if (e == 0) return 0;
    msg(err, errlen, "%s '%s' is not an executable file (%s); " ADVICE, what, value,
        e == EISDIR || e == EINVAL ? "not a regular file" : strerror(e));
    return -1;
  }
  if (search_path(value, buf, len) == 0) return 0;
  msg(err, errlen, "%s '%s' is not on PATH; " ADVICE, what, value);
  return -1;
}

/* The directory of libgeneva when it is a shared library, into dir; 0 when
** libgeneva is linked into the executable (no library to be beside). */
static int libgeneva_dir(char *dir, size_t len) {
  Dl_info self, exe;
  char real[PATH_MAX], *slash;
  void *phdr = (void *)getauxval(AT_PHDR);   /* inside the executable */
  if (!dladdr((void *)geneva_host_new, &self) || !self.dli_fname || !self.dli_fname[0])
    return 0;
  if (phdr && dladdr(phdr, &exe) && exe.dli_fbase == self.dli_fbase) return 0;
  if (!realpath(self.dli_fname, real)) return 0;
  slash = strrchr(real, '/');
  if (!slash || (size_t)(slash - real) >= len) return 0;
  memcpy(dir, real, (size_t)(slash - real));
  dir[slash - real] = '\0';
  return 1;
}

int geneva_worker_exe(const geneva_host *h, char *buf, size_t len, char *err,
                      size_t errlen) {
  const char *env = getenv("GENEVA_WORKER_EXE");
  char libdir[PATH_MAX], cand[PATH_MAX], tried[2 * PATH_MAX + 64];
  if (h && h->opts.worker_exe && h->opts.worker_exe[0])
    return given("geneva_host_opts.worker_exe", h->opts.worker_exe, buf, len, err, errlen);
  if (env && *env) return given("GENEVA_WORKER_EXE", env, buf, len, err, errlen);
  if (h && h->is_geneva) {
    ssize_t n = readlink("/proc/self/exe", cand, sizeof cand - 1);
    if (n > 0) {
      cand[n] = '\0';
      if (take(cand, buf, len) == 0) return 0;
    }
  }
  tried[0] = '\0';
  if (libgeneva_dir(libdir, sizeof libdir)) {
    static const char *const rels[] = {GENEVA_LIBDIR_TO_BINDIR, "../bin"};
    size_t i;
    for (i = 0; i < sizeof rels / sizeof *rels; i++) {
      if (i > 0 && strcmp(rels[i], rels[0]) == 0) continue;
      if ((size_t)snprintf(cand, sizeof cand, "%s/%s/geneva", libdir, rels[i]) >= sizeof cand)
        continue;
      if (take(cand, buf, len) == 0) return 0;
      if (i == 0) snprintf(tried, sizeof tried, "not beside libgeneva (%s), ", cand);
    }
  } else {
    snprintf(tried, sizeof tried, "libgeneva is linked into this program, ");
  }
  if (search_path("geneva", buf, len) == 0) return 0;
  msg(err, errlen, "cannot find the geneva program to run as a worker (%snot on PATH); "
      ADVICE, tried);
  return -1;
}

/* {====== geneva.host.core: what the host tells its scripts */

/* core.worker_exe() -> absolute path | nil, message (what was tried and how
** to set it). Never raises but for memory errors. */
static int host_worker_exe(lua_State *L) {
  char path[PATH_MAX], err[3 * PATH_MAX];
  if (geneva_worker_exe(geneva_host_from(L), path, sizeof path, err, sizeof err) != 0) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushstring(L, path);
  return 1;
}

int luaopen_geneva_host_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"worker_exe", host_worker_exe},
    {NULL, NULL}
  };
  luaL_newlib(L, funcs);
  geneva_memory_register(L);
  return 1;
}

/* }====== */
