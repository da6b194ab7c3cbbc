/*
** fs.c: geneva.fs.core, the file system under table storage, packages,
** leases and temp dirs.
**
** Conventions: misuse raises (luaL_check*); expected failures return
** nil, "<what> '<path>': <strerror>", "<ENAME>". Blocking loops retry EINTR
** and poll geneva_interrupted(), then return nil, "interrupted", "EINTR".
** Nothing C-owned is live across a call that can raise: syscalls finish (and
** fds close) before results are pushed, or the fd/DIR/glob_t sits in a
** to-be-closed Box on the stack (lauxlib's newbox pattern).
**
** Handles: TempDir (mkdtemp'd tree, removed on close/ledger teardown), Lock
** (flock on an open fd) and Sha256 (an incremental EVP context).
*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <limits.h>
#include <math.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <lua.h>
#include <lauxlib.h>

#include "geneva_internal.h"
#include "handle.h"

/* {====== libcrypto.so.3, loaded on the first hash (lazy.h)
** libcrypto is built with BIND_NOW and has ~4000 symbol relocations: linking
** it would cost every `geneva` start about as much as Lua itself
** (host/lazy.h). Only the SHA-256 calls below need it. */
#include "lazy.h"
#define CRYPTO_FUNCS(X) \
  X(EVP_sha256) \
  X(EVP_MD_CTX_new) \
  X(EVP_MD_CTX_free) \
  X(EVP_MD_CTX_copy_ex) \
  X(EVP_DigestInit_ex) \
  X(EVP_DigestUpdate) \
  X(EVP_DigestFinal_ex) \
  X(EVP_Digest)
GENEVA_LAZY_LIB(crypto_lib, "libcrypto.so.3", NULL, "install libssl3", NULL, CRYPTO_FUNCS)
#define EVP_sha256 (crypto_lib_api.EVP_sha256)
#define EVP_MD_CTX_new (crypto_lib_api.EVP_MD_CTX_new)
#define EVP_MD_CTX_free (crypto_lib_api.EVP_MD_CTX_free)
#define EVP_MD_CTX_copy_ex (crypto_lib_api.EVP_MD_CTX_copy_ex)
#define EVP_DigestInit_ex (crypto_lib_api.EVP_DigestInit_ex)
#define EVP_DigestUpdate (crypto_lib_api.EVP_DigestUpdate)
#define EVP_DigestFinal_ex (crypto_lib_api.EVP_DigestFinal_ex)
#define EVP_Digest (crypto_lib_api.EVP_Digest)

/* }====== */


int luaopen_geneva_fs_core(lua_State *L);  /* called by the host's preload table */

#define CHUNK (1024 * 1024)   /* streaming unit for hashing and copying */

/* {====== Errors and EINTR */

/* Retries `call` on EINTR unless the host was interrupted. */
#define RETRY(res, call) \
  do { (res) = (call); } while ((res) == -1 && errno == EINTR && !geneva_interrupted())

/* Pushes nil, msg, code for errno err about path; EINTR after an interrupt
** becomes nil, "interrupted", "EINTR". Returns 3. */
static int fail_path(lua_State *L, int err, const char *what, const char *path) {
  if (err == EINTR && geneva_interrupted())
    return geneva_fail(L, "EINTR", "interrupted");
  return geneva_fail(L, geneva_errno_name(err), "%s '%s': %s", what, path,
                     strerror(err));
}

static int fail_interrupted(lua_State *L) {
  return geneva_fail(L, "EINTR", "interrupted");
}

/* close(2) without retry: on Linux the fd is gone even after EINTR. */
static int close_fd(int fd) {
  if (close(fd) == 0 || errno == EINTR) return 0;
  return errno;
}

/* Writes all of data; 0 or errno (EINTR: interrupted). */
static int write_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR && !geneva_interrupted()) continue;
      return errno;
    }
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

/* fsync of a directory; file systems that cannot (EINVAL) count as done. */
static int fsync_dir_path(const char *dir) {
  int fd, r, err = 0;
  RETRY(fd, open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd < 0) return errno;
  RETRY(r, fsync(fd));
  if (r < 0 && errno != EINVAL) err = errno;
  close(fd);
  return err;
}

/* }====== */

/* {====== Box: a to-be-closed holder for an fd, DIR* or glob_t */

typedef struct {
  geneva_handle h;
  int fd;
  DIR *dir;
  int has_glob;
  glob_t g;
} fs_box;

static int box_release(void *p) {
  fs_box *b = (fs_box *)p;
  if (b->fd >= 0) { close(b->fd); b->fd = -1; }
  if (b->dir) { closedir(b->dir); b->dir = NULL; }
  if (b->has_glob) { globfree(&b->g); b->has_glob = 0; }
  return 0;
}

static const geneva_class box_class = {
  "geneva.fs.Box", NULL, NULL, box_release, NULL, NULL, NULL
};

/* Pushes an empty box marked to-be-closed: whatever it holds is released
** when the C function returns or raises. */
static fs_box *box_new(lua_State *L) {
  fs_box *b = (fs_box *)geneva_handle_new(L, &box_class, sizeof *b, 0);
  b->fd = -1;
  geneva_handle_open(L, b);
  lua_toclose(L, -1);
  return b;
}

/* }====== */

/* {====== Paths */

/* Pushes the directory part of path ("." when there is none). */
static const char *push_dirname(lua_State *L, const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return lua_pushliteral(L, ".");
  while (slash > path && slash[-1] == '/') slash--;
  if (slash == path) return lua_pushliteral(L, "/");
  return lua_pushlstring(L, path, (size_t)(slash - path));
}

/*
** Creates a fresh file next to path (".<base>.tmp.<random>", O_EXCL, so the
** umask applies to mode). Pushes its name; *fd gets the open descriptor.
** Returns 0 or errno (the name is pushed either way).
*/
static int make_temp(lua_State *L, const char *path, mode_t mode, int *fd) {
  const char *slash = strrchr(path, '/');
  int dirlen = slash ? (int)(slash - path + 1) : 0;
  const char *base = slash ? slash + 1 : path;
  int attempt;
  for (attempt = 0; attempt < 100; attempt++) {
    unsigned char rnd[6];
    char hex[13];
    const char *tmp;
    int i;
    if (getrandom(rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) {
      unsigned long x = (unsigned long)getpid() * 2654435761u ^
                        (unsigned long)clock() ^ (unsigned long)attempt * 40503u;
      for (i = 0; i < 6; i++) rnd[i] = (unsigned char)(x >> (8 * i));
    }
    for (i = 0; i < 6; i++) snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    if (attempt > 0) lua_pop(L, 1);
    lua_pushlstring(L, path, (size_t)dirlen);
    lua_pushfstring(L, ".%s.tmp.%s", base, hex);
    lua_concat(L, 2);
    tmp = lua_tostring(L, -1);
    RETRY(*fd, open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
    if (*fd >= 0) return 0;
    if (errno != EEXIST) return errno;
  }
  return EEXIST;
}

/*
** Writes data to a new temp file next to path, optionally fsyncs, closes.
** Pushes the temp name. Returns 0, or errno after removing the temp file.
*/
static int write_temp(lua_State *L, const char *path, const char *data,
                      size_t len, mode_t mode, int do_fsync) {
  int fd, err, r;
  err = make_temp(L, path, mode, &fd);
  if (err) return err;
  err = write_all(fd, data, len);
  if (!err && do_fsync) {
    RETRY(r, fsync(fd));
    if (r < 0) err = errno;
  }
  if (!err) err = close_fd(fd); else close(fd);
  if (err) unlink(lua_tostring(L, -1));
  return err;
}

/* }====== */

/* {====== Directories */

/* core.mkdir_p(path [, mode=0777]) -> true | nil, msg, code. Raises on bad
** arguments. Existing directories (or symlinks to them) are fine. */
static int fs_mkdir_p(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  mode_t mode = (mode_t)luaL_optinteger(L, 2, 0777);
  char *buf = (char *)lua_newuserdatauv(L, len + 1, 0);   /* GC-owned */
  size_t i;
  memcpy(buf, path, len + 1);
  for (i = 1; i <= len; i++) {
    if (buf[i] == '/' || buf[i] == '\0') {
      char saved = buf[i];
      struct stat st;
      if (buf[i - 1] == '/') continue;                     /* "a//b" */
      buf[i] = '\0';
      if (mkdir(buf, mode) != 0) {
        int err = errno;
        if (err != EEXIST) return fail_path(L, err, "mkdir", buf);
        if (stat(buf, &st) != 0) return fail_path(L, errno, "mkdir", buf);
        if (!S_ISDIR(st.st_mode)) return fail_path(L, ENOTDIR, "mkdir", buf);
      }
      buf[i] = saved;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

static const char *type_name(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "dir";
  if (S_ISLNK(m)) return "link";
  if (S_ISFIFO(m)) return "fifo";
  if (S_ISSOCK(m)) return "socket";
  if (S_ISCHR(m)) return "char";
  if (S_ISBLK(m)) return "block";
  return "unknown";
}

static const char *dtype_name(unsigned char t) {
  switch (t) {
    case DT_REG: return "file";
    case DT_DIR: return "dir";
    case DT_LNK: return "link";
    case DT_FIFO: return "fifo";
    case DT_SOCK: return "socket";
    case DT_CHR: return "char";
    case DT_BLK: return "block";
    default: return NULL;
  }
}

/*
** core.readdir(dir) -> names, types | nil, msg, code. Two parallel arrays in
** directory order, without "." and ".."; types as in stat ("link" for a
** symlink: never followed). The DIR* lives in a to-be-closed box.
*/
static int fs_readdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  fs_box *b = box_new(L);
  struct dirent *e;
  int n = 0;
  b->dir = opendir(path);
  if (!b->dir) return fail_path(L, errno, "readdir", path);
  lua_newtable(L);   /* [box, names] */
  lua_newtable(L);   /* [box, names, types] */
  for (;;) {
    const char *t;
    errno = 0;
    if (geneva_interrupted()) return fail_interrupted(L);
    e = readdir(b->dir);
    if (!e) {
      if (errno) return fail_path(L, errno, "readdir", path);
      break;
    }
    if (e->d_name[0] == '.' && (e->d_name[1] == '\0' ||
        (e->d_name[1] == '.' && e->d_name[2] == '\0')))
      continue;
    t = dtype_name(e->d_type);
    if (!t) {
      struct stat st;
      if (fstatat(dirfd(b->dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;   /* vanished meanwhile */
        t = "unknown";
      } else {
        t = type_name(st.st_mode);
      }
    }
    n++;
    lua_pushstring(L, e->d_name);
    lua_rawseti(L, -3, n);
    lua_pushstring(L, t);
    lua_rawseti(L, -2, n);
  }
  return 2;
}

typedef struct { const char *s; size_t len; lua_Integer i; } str_ref;

static int str_ref_cmp(const void *a, const void *b) {
  const str_ref *x = (const str_ref *)a, *y = (const str_ref *)b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->s, y->s, n);
  if (c) return c;
  return x->len < y->len ? -1 : x->len > y->len;
}

/*
** core.sort(t) -> t: sorts an array of strings in place by bytes (not by
** locale, unlike table.sort). Raises if an element is not a string.
*/
static int fs_sort(lua_State *L) {
  lua_Integer n, i;
  str_ref *refs;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = luaL_len(L, 1);
  if (n < 2) { lua_settop(L, 1); return 1; }
  /* __len may lie: bound n before n * sizeof *refs can wrap */
  luaL_argcheck(L, n <= INT_MAX, 1, "too many elements");
  refs = (str_ref *)lua_newuserdatauv(L, (size_t)n * sizeof *refs, 0);  /* [t, refs] */
  for (i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 1, i) != LUA_TSTRING)
      return luaL_error(L, "bad element #%d to 'sort' (string expected)", (int)i);
    refs[i - 1].s = lua_tolstring(L, -1, &refs[i - 1].len);  /* kept alive by t */
    refs[i - 1].i = i;
    lua_pop(L, 1);
  }
  qsort(refs, (size_t)n, sizeof *refs, str_ref_cmp);
  lua_createtable(L, (int)n, 0);   /* [t, refs, sorted] */
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, refs[i - 1].i);
    lua_rawseti(L, -2, i);
  }
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, 1, i);
  }
  lua_settop(L, 1);
  return 1;
}

/* core.glob(pattern) -> array (glob order) | nil, msg, code. GLOB_BRACE;
** no match is an empty array. The glob_t lives in a to-be-closed box. */
static int fs_glob(lua_State *L) {
  const char *pat = luaL_checkstring(L, 1);
  fs_box *b = box_new(L);
  size_t i;
  int r = glob(pat, GLOB_BRACE, NULL, &b->g);
  b->has_glob = 1;
  if (r == GLOB_NOMATCH) { lua_newtable(L); return 1; }
  if (r == GLOB_NOSPACE) { geneva_handle_release(b); return luaL_error(L, "not enough memory"); }
  if (r != 0) return geneva_fail(L, "EIO", "glob '%s': read error", pat);
  lua_createtable(L, (int)b->g.gl_pathc, 0);
  for (i = 0; i < b->g.gl_pathc; i++) {
    lua_pushstring(L, b->g.gl_pathv[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* core.fnmatch(pattern, name) -> boolean: one path segment, a leading dot
** must be matched explicitly (as glob does). */
static int fs_fnmatch(lua_State *L) {
  const char *pat = luaL_checkstring(L, 1);
  const char *name = luaL_checkstring(L, 2);
  lua_pushboolean(L, fnmatch(pat, name, FNM_PERIOD) == 0);
  return 1;
}

/* }====== */

/* {====== remove_tree: openat/unlinkat, never follows a symlink */

typedef struct {
  int poll;          /* give up on geneva_interrupted() */
  int err;           /* first error */
  char where[1024];  /* path (relative to the root) of the first error */
  char cur[1024];    /* path being visited, for messages */
  size_t curlen;
} rm_ctx;

static void rm_note(rm_ctx *c, int err) {
  if (c->err) return;
  c->err = err;
  memcpy(c->where, c->cur, c->curlen + 1);
}

/* Removes name (relative to dfd) and everything below it. dtype is a
** readdir hint (DT_UNKNOWN: look). Errors are noted and the walk goes on. */
static void rm_at(rm_ctx *c, int dfd, const char *name, unsigned char dtype,
                  int top) {
  struct stat st;
  int fd;
  size_t saved = c->curlen;
  DIR *d;
  struct dirent *e;
  if (!top) {   /* extend the path shown in messages (truncated if long) */
    size_t n = strlen(name);
    if (c->curlen + n + 2 < sizeof c->cur) {
      c->cur[c->curlen++] = '/';
      memcpy(c->cur + c->curlen, name, n + 1);
      c->curlen += n;
    }
  }
  if (dtype == DT_UNKNOWN) {
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT || top) rm_note(c, errno);
      goto done;
    }
    dtype = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
  }
  if (dtype != DT_DIR) {
    if (unlinkat(dfd, name, 0) != 0 && (errno != ENOENT || top)) rm_note(c, errno);
    goto done;
  }
  RETRY(fd, openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd < 0 && errno == EACCES) {   /* unreadable dir: we remove it anyway */
    fchmodat(dfd, name, 0700, 0);
    RETRY(fd, openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  }
  if (fd < 0) {
    if (errno == ELOOP || errno == ENOTDIR) {   /* replaced by a link or file */
      if (unlinkat(dfd, name, 0) != 0 && errno != ENOENT) rm_note(c, errno);
    } else if (errno != ENOENT || top) {
      rm_note(c, errno);
    }
    goto done;
  }
  if (fstat(fd, &st) == 0 && (st.st_mode & 0700) != 0700)
    fchmod(fd, (st.st_mode & 07777) | 0700);   /* so its entries can go */
  d = fdopendir(fd);
  if (!d) { rm_note(c, errno); close(fd); goto done; }
  for (;;) {
    if (c->poll && geneva_interrupted()) { rm_note(c, EINTR); break; }
    errno = 0;
    e = readdir(d);
    if (!e) { if (errno) rm_note(c, errno); break; }
    if (e->d_name[0] == '.' && (e->d_name[1] == '\0' ||
        (e->d_name[1] == '.' && e->d_name[2] == '\0')))
      continue;
    rm_at(c, dirfd(d), e->d_name, e->d_type, 0);
    if (c->err == EINTR) break;
  }
  closedir(d);
  if (c->err != EINTR) {
    if (unlinkat(dfd, name, AT_REMOVEDIR) != 0 && (errno != ENOENT || top))
      rm_note(c, errno);
  }
done:
  c->curlen = saved;
  c->cur[saved] = '\0';
}

/* Removes the tree at path; 0 or errno (c->where says where). */
static int remove_tree_path(rm_ctx *c, const char *path, int poll) {
  memset(c, 0, sizeof *c);
  c->poll = poll;
  rm_at(c, AT_FDCWD, path, DT_UNKNOWN, 1);
  return c->err;
}

/*
** core.remove_tree(path) -> true | nil, msg, code. A symlink is removed, not
** followed, at any depth. Refuses "/" , "." and "..". Best effort: keeps
** removing after an error and reports the first one.
*/
static int fs_remove_tree(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  rm_ctx *c;
  while (len > 1 && path[len - 1] == '/') len--;   /* "link/" must not follow */
  path = lua_pushlstring(L, path, len);
  if (strcmp(path, "/") == 0 || strcmp(path, ".") == 0 || strcmp(path, "..") == 0 ||
      len == 0)
    return geneva_fail(L, "EINVAL", "remove_tree '%s': refusing to remove", path);
  c = (rm_ctx *)lua_newuserdatauv(L, sizeof *c, 0);   /* GC-owned scratch */
  if (remove_tree_path(c, path, 1) == 0) { lua_pushboolean(L, 1); return 1; }
  if (c->err == EINTR) return fail_interrupted(L);
  return geneva_fail(L, geneva_errno_name(c->err), "remove_tree '%s%s': %s", path,
                     c->where, strerror(c->err));
}

/* }====== */

/* {====== Files */

/* core.read(path) -> bytes | nil, msg, code */
static int fs_read(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  fs_box *b = box_new(L);
  struct stat st;
  luaL_Buffer buf;
  RETRY(b->fd, open(path, O_RDONLY | O_CLOEXEC));
  if (b->fd < 0) return fail_path(L, errno, "read", path);
  if (fstat(b->fd, &st) != 0) return fail_path(L, errno, "read", path);
  if (S_ISDIR(st.st_mode)) return fail_path(L, EISDIR, "read", path);
  luaL_buffinitsize(L, &buf, S_ISREG(st.st_mode) && st.st_size > 0
                                 ? (size_t)st.st_size + 1 : 4096);
  for (;;) {
    char *p = luaL_prepbuffsize(&buf, 65536);
    ssize_t n = read(b->fd, p, 65536);
    if (n < 0) {
      if (errno == EINTR && !geneva_interrupted()) continue;
      return fail_path(L, errno, "read", path);
    }
    if (n == 0) break;
    luaL_addsize(&buf, (size_t)n);
  }
  luaL_pushresult(&buf);
  return 1;
}

/*
** core.write(path, data [, mode=0666 [, fsync=false [, append=false]]])
** -> true | nil, msg, code. Truncates (or appends to) path.
*/
static int fs_write(lua_State *L) {
  size_t len;
  const char *path = luaL_checkstring(L, 1);
  const char *data = luaL_checklstring(L, 2, &len);
  mode_t mode = (mode_t)luaL_optinteger(L, 3, 0666);
  int do_fsync = lua_toboolean(L, 4);
  int append = lua_toboolean(L, 5);
  int fd, err, r;
  RETRY(fd, open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), mode));
  if (fd < 0) return fail_path(L, errno, append ? "append" : "write", path);
  err = write_all(fd, data, len);
  if (!err && do_fsync) {
    RETRY(r, fsync(fd));
    if (r < 0) err = errno;
  }
  if (!err) err = close_fd(fd); else close(fd);
  if (err) return fail_path(L, err, append ? "append" : "write", path);
  lua_pushboolean(L, 1);
  return 1;
}

/*
** core.write_atomic(path, data [, mode=0666 [, fsync=true]]) -> true |
** nil, msg, code. Temp file in the same dir, fsync, rename over path, fsync
** the dir: readers see the old or the new content, never a mix.
*/
static int fs_write_atomic(lua_State *L) {
  size_t len;
  const char *path = luaL_checkstring(L, 1);
  const char *data = luaL_checklstring(L, 2, &len);
  mode_t mode = (mode_t)luaL_optinteger(L, 3, 0666);
  int do_fsync = lua_isnoneornil(L, 4) ? 1 : lua_toboolean(L, 4);
  const char *dir, *tmp;
  int err;
  lua_settop(L, 4);
  dir = push_dirname(L, path);                               /* 5 */
  err = write_temp(L, path, data, len, mode, do_fsync);      /* 6: temp name */
  if (err) return fail_path(L, err, "write_atomic", path);
  tmp = lua_tostring(L, 6);
  if (rename(tmp, path) != 0) {
    err = errno;
    unlink(tmp);
    return fail_path(L, err, "write_atomic", path);
  }
  if (do_fsync && (err = fsync_dir_path(dir)) != 0)
    return fail_path(L, err, "write_atomic (fsync of the directory)", path);
  lua_pushboolean(L, 1);
  return 1;
}

/*
** core.create_exclusive(path, data [, mode=0666 [, fsync=true]]) -> true |
** nil, msg, code ("EEXIST" when path exists: a lost race). The data is
** complete (and synced, unless fsync is false) in a temp file before link()
** publishes it, so no reader ever sees a half file (as creating path with
** O_EXCL, then writing it, would); then the temp name goes and the dir is
** fsynced. Without fsync the create is as exclusive, only not durable
** across a machine crash (leases of local resources, which die with it).
*/
static int fs_create_exclusive(lua_State *L) {
  size_t len;
  const char *path = luaL_checkstring(L, 1);
  const char *data = luaL_checklstring(L, 2, &len);
  mode_t mode = (mode_t)luaL_optinteger(L, 3, 0666);
  int do_fsync = lua_isnoneornil(L, 4) ? 1 : lua_toboolean(L, 4);
  const char *dir, *tmp;
  int err = 0;
  lua_settop(L, 4);
  dir = push_dirname(L, path);                          /* 5 */
  err = write_temp(L, path, data, len, mode, do_fsync); /* 6: temp name */
  if (err) return fail_path(L, err, "create_exclusive", path);
  tmp = lua_tostring(L, 6);
  if (link(tmp, path) != 0) {
    err = errno;
    if (err == EPERM || err == EOPNOTSUPP || err == ENOSYS) {
      /* no hard links here (vfat, some FUSE): same guarantee by rename */
      err = renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0 ? 0 : errno;
      if (err == EINVAL || err == ENOSYS) err = EPERM;
    }
  }
  unlink(tmp);   /* gone already after a successful rename */
  if (err) return fail_path(L, err, "create_exclusive", path);
  if (do_fsync && (err = fsync_dir_path(dir)) != 0)
    return fail_path(L, err, "create_exclusive (fsync of the directory)", path);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.link(src, dst) -> true | nil, msg, code ("EEXIST" if dst exists) */
static int fs_link(lua_State *L) {
  const char *src = luaL_checkstring(L, 1);
  const char *dst = luaL_checkstring(L, 2);
  if (link(src, dst) != 0) return fail_path(L, errno, "link", dst);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.symlink(target, linkpath) -> true | nil, msg, code */
static int fs_symlink(lua_State *L) {
  const char *target = luaL_checkstring(L, 1);
  const char *lpath = luaL_checkstring(L, 2);
  if (symlink(target, lpath) != 0) return fail_path(L, errno, "symlink", lpath);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.rename(a, b) -> true | nil, msg, code */
static int fs_rename(lua_State *L) {
  const char *a = luaL_checkstring(L, 1);
  const char *b = luaL_checkstring(L, 2);
  if (rename(a, b) != 0) {
    int err = errno;
    return geneva_fail(L, geneva_errno_name(err), "rename '%s' to '%s': %s", a, b,
                       strerror(err));
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.remove(path) -> true | nil, msg, code: a file, link or empty dir */
static int fs_remove(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  if (unlink(path) != 0) {
    int err = errno;
    struct stat st;
    if ((err == EISDIR || err == EPERM) && lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
      if (rmdir(path) == 0) { lua_pushboolean(L, 1); return 1; }
      err = errno;
    }
    return fail_path(L, err, "remove", path);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/*
** core.copy(src, dst) -> bytes copied | nil, msg, code. Streams in 1 MiB
** chunks, keeps src's permission bits, polls for interrupts; a failed copy
** leaves no dst behind.
*/
static int fs_copy(lua_State *L) {
  const char *src = luaL_checkstring(L, 1);
  const char *dst = luaL_checkstring(L, 2);
  int in, out, err = 0;
  const char *what = src;
  struct stat st;
  char *buf;
  lua_Integer total = 0;
  RETRY(in, open(src, O_RDONLY | O_CLOEXEC));
  if (in < 0) return fail_path(L, errno, "copy", src);
  if (fstat(in, &st) != 0) err = errno;
  else if (S_ISDIR(st.st_mode)) err = EISDIR;
  if (err) {
    close(in);
    return fail_path(L, err, "copy", src);
  }
  buf = (char *)malloc(CHUNK);
  if (!buf) { close(in); return luaL_error(L, "not enough memory"); }
  RETRY(out, open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, st.st_mode & 07777));
  if (out < 0) { err = errno; what = dst; goto cleanup; }
  for (;;) {
    ssize_t n;
    if (geneva_interrupted()) { err = EINTR; break; }
    n = read(in, buf, CHUNK);
    if (n < 0) {
      if (errno == EINTR && !geneva_interrupted()) continue;
      err = errno;
      break;
    }
    if (n == 0) break;
    if ((err = write_all(out, buf, (size_t)n)) != 0) { what = dst; break; }
    total += n;
  }
  if (!err) { err = close_fd(out); what = dst; } else close(out);
  if (err) unlink(dst);
cleanup:
  free(buf);
  close(in);
  if (err) return fail_path(L, err, "copy", what);
  lua_pushinteger(L, total);
  return 1;
}

/* core.realpath(path) -> absolute path | nil, msg, code */
static int fs_realpath(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char buf[PATH_MAX];
  if (!realpath(path, buf)) return fail_path(L, errno, "realpath", path);
  lua_pushstring(L, buf);
  return 1;
}

/* core.fsync_dir(dir) -> true | nil, msg, code */
static int fs_fsync_dir(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  int err = fsync_dir_path(dir);
  if (err) return fail_path(L, err, "fsync_dir", dir);
  lua_pushboolean(L, 1);
  return 1;
}

static struct timespec to_timespec(lua_State *L, int i) {
  struct timespec ts;
  if (lua_isnoneornil(L, i)) {
    ts.tv_sec = 0;
    ts.tv_nsec = UTIME_NOW;
  } else {
    lua_Number t = luaL_checknumber(L, i);
    lua_Number s = floor(t);
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)llround((t - s) * 1e9);
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
  }
  return ts;
}

/* core.utime(path [, atime [, mtime]]) -> true | nil, msg, code. Times are
** float seconds; nil means now. Follows symlinks. */
static int fs_utime(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct timespec ts[2];
  ts[0] = to_timespec(L, 2);
  ts[1] = to_timespec(L, 3);
  if (utimensat(AT_FDCWD, path, ts, 0) != 0) return fail_path(L, errno, "utime", path);
  lua_pushboolean(L, 1);
  return 1;
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

/*
** core.stat(path [, follow=true]) -> {type, size, mode, mtime, mtime_ns,
** ctime_ns, atime, ino, dev, nlink, uid, gid} | nil, msg, code. mode holds
** the permission bits; mtime is float seconds, *_ns integer nanoseconds.
*/
static int fs_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int follow = lua_isnoneornil(L, 2) ? 1 : lua_toboolean(L, 2);
  struct stat st;
  if ((follow ? stat(path, &st) : lstat(path, &st)) != 0)
    return fail_path(L, errno, "stat", path);
  lua_createtable(L, 0, 12);
  lua_pushstring(L, type_name(st.st_mode));
  lua_setfield(L, -2, "type");
  set_int(L, "size", (lua_Integer)st.st_size);
  set_int(L, "mode", (lua_Integer)(st.st_mode & 07777));
  lua_pushnumber(L, (lua_Number)st.st_mtim.tv_sec + (lua_Number)st.st_mtim.tv_nsec / 1e9);
  lua_setfield(L, -2, "mtime");
  lua_pushnumber(L, (lua_Number)st.st_atim.tv_sec + (lua_Number)st.st_atim.tv_nsec / 1e9);
  lua_setfield(L, -2, "atime");
  set_int(L, "mtime_ns", (lua_Integer)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
  set_int(L, "ctime_ns", (lua_Integer)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec);
  set_int(L, "ino", (lua_Integer)st.st_ino);
  set_int(L, "dev", (lua_Integer)st.st_dev);
  set_int(L, "nlink", (lua_Integer)st.st_nlink);
  set_int(L, "uid", (lua_Integer)st.st_uid);
  set_int(L, "gid", (lua_Integer)st.st_gid);
  return 1;
}

/* }====== */

/* {====== Process helpers */

/* core.getcwd() -> path | nil, msg, code */
static int fs_getcwd(lua_State *L) {
  char buf[PATH_MAX];
  if (!getcwd(buf, sizeof buf)) return fail_path(L, errno, "getcwd", ".");
  lua_pushstring(L, buf);
  return 1;
}

/* core.home() -> $HOME, else the passwd entry | nil, msg, code */
/* fs.isatty([fd = 2]) -> boolean: for progress bars on a terminal only */
static int fs_isatty(lua_State *L) {
  lua_Integer fd = luaL_optinteger(L, 1, 2);
  luaL_argcheck(L, fd >= 0 && fd <= 1 << 20, 1, "bad file descriptor");
  lua_pushboolean(L, isatty((int)fd));
  return 1;
}

static int fs_home(lua_State *L) {
  const char *h = getenv("HOME");
  struct passwd pw, *res = NULL;
  char buf[16384];
  int r;
  if (h && *h) { lua_pushstring(L, h); return 1; }
  r = getpwuid_r(getuid(), &pw, buf, sizeof buf, &res);
  if (r != 0 || !res || !pw.pw_dir)
    return geneva_fail(L, "ENOENT", "home: no $HOME and no passwd entry");
  lua_pushstring(L, pw.pw_dir);
  return 1;
}

/* core.interrupted() -> boolean */
static int fs_interrupted(lua_State *L) {
  lua_pushboolean(L, geneva_interrupted() != 0);
  return 1;
}

/* }====== */

/* {====== SHA-256 */

static void push_hex(lua_State *L, const unsigned char *md, unsigned len) {
  static const char digits[] = "0123456789abcdef";
  char hex[2 * EVP_MAX_MD_SIZE];
  unsigned i;
  for (i = 0; i < len; i++) {
    hex[2 * i] = digits[md[i] >> 4];
    hex[2 * i + 1] = digits[md[i] & 15];
  }
  lua_pushlstring(L, hex, 2 * (size_t)len);
}

/* Streams path into ctx; 0 or errno (EINTR: interrupted; ENOMEM). No Lua
** calls: everything is released before returning. */
static int hash_file(EVP_MD_CTX *ctx, const char *path, lua_Integer *size) {
  int fd, err = 0;
  struct stat st;
  char *buf;
  *size = 0;
  RETRY(fd, open(path, O_RDONLY | O_CLOEXEC));
  if (fd < 0) return errno;
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) { close(fd); return EISDIR; }
  buf = (char *)malloc(CHUNK);
  if (!buf) { close(fd); return ENOMEM; }
  for (;;) {
    ssize_t n;
    if (geneva_interrupted()) { err = EINTR; break; }
    n = read(fd, buf, CHUNK);
    if (n < 0) {
      if (errno == EINTR && !geneva_interrupted()) continue;
      err = errno;
      break;
    }
    if (n == 0) break;
    if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1) { err = EIO; break; }
    *size += n;
  }
  free(buf);
  close(fd);
  return err;
}

/* core.sha256(s) -> hex digest */
static int fs_sha256(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  geneva_lazy_require(L, &crypto_lib);
  if (EVP_Digest(s, len, md, &mdlen, EVP_sha256(), NULL) != 1)
    return luaL_error(L, "sha256: EVP_Digest failed");
  push_hex(L, md, mdlen);
  return 1;
}

/* core.sha256_file(path) -> hex, size | nil, msg, code */
static int fs_sha256_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  lua_Integer size;
  int err;
  EVP_MD_CTX *ctx;
  geneva_lazy_require(L, &crypto_lib);
  ctx = EVP_MD_CTX_new();
  if (!ctx) return luaL_error(L, "not enough memory");
  if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) err = EIO;
  else err = hash_file(ctx, path, &size);
  if (!err && EVP_DigestFinal_ex(ctx, md, &mdlen) != 1) err = EIO;
  EVP_MD_CTX_free(ctx);
  if (err == ENOMEM) return luaL_error(L, "not enough memory");
  if (err) return fail_path(L, err, "sha256_file", path);
  push_hex(L, md, mdlen);
  lua_pushinteger(L, size);
  return 2;
}

typedef struct {
  geneva_handle h;
  EVP_MD_CTX *ctx;
} sha_ud;

static int sha_release(void *p) {
  sha_ud *u = (sha_ud *)p;
  EVP_MD_CTX_free(u->ctx);
  u->ctx = NULL;
  return 0;
}

static const geneva_class sha_class = {
  "geneva.fs.Sha256", NULL, NULL, sha_release, NULL, NULL, NULL
};

/* core.sha256_new() -> Sha256 hasher. Raises when out of memory. */
static int fs_sha256_new(lua_State *L) {
  sha_ud *u;
  EVP_MD_CTX *ctx;
  geneva_lazy_require(L, &crypto_lib);
  u = (sha_ud *)geneva_handle_new(L, &sha_class, sizeof *u, 0);
  ctx = EVP_MD_CTX_new();
  if (!ctx) return luaL_error(L, "not enough memory");
  if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
    EVP_MD_CTX_free(ctx);
    return luaL_error(L, "sha256: EVP_DigestInit_ex failed");
  }
  u->ctx = ctx;
  geneva_handle_open(L, u);
  return 1;
}

/* h:update(s) -> h. Raises on a closed hasher. */
static int sha_m_update(lua_State *L) {
  sha_ud *u = (sha_ud *)geneva_handle_check(L, 1, &sha_class);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  if (EVP_DigestUpdate(u->ctx, s, len) != 1) return luaL_error(L, "sha256: update failed");
  lua_settop(L, 1);
  return 1;
}

/* h:update_file(path) -> h, size | nil, msg, code (the hasher then holds a
** partial file: start over). Streams in 1 MiB chunks. */
static int sha_m_update_file(lua_State *L) {
  sha_ud *u = (sha_ud *)geneva_handle_check(L, 1, &sha_class);
  const char *path = luaL_checkstring(L, 2);
  lua_Integer size;
  int err = hash_file(u->ctx, path, &size);
  if (err == ENOMEM) return luaL_error(L, "not enough memory");
  if (err) return fail_path(L, err, "sha256 update_file", path);
  lua_settop(L, 1);
  lua_pushinteger(L, size);
  return 2;
}

/* h:hex() -> hex digest of everything so far; the hasher stays usable. */
static int sha_m_hex(lua_State *L) {
  sha_ud *u = (sha_ud *)geneva_handle_check(L, 1, &sha_class);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  int ok;
  EVP_MD_CTX *copy = EVP_MD_CTX_new();
  if (!copy) return luaL_error(L, "not enough memory");
  ok = EVP_MD_CTX_copy_ex(copy, u->ctx) == 1 && EVP_DigestFinal_ex(copy, md, &mdlen) == 1;
  EVP_MD_CTX_free(copy);
  if (!ok) return luaL_error(L, "sha256: finalization failed");
  push_hex(L, md, mdlen);
  return 1;
}

/* h:close() -> true, h:is_closed(), __close, __gc: handle.h */

/* }====== */

/* {====== TempDir */

typedef struct {
  geneva_handle h;
  char *path;              /* malloc'd while open */
} tmpdir_ud;

/* The release (close, __close, __gc, ledger teardown): removes the tree.
** Returns 0 or errno; never raises nor calls Lua. */
static int tmpdir_release(void *p) {
  tmpdir_ud *u = (tmpdir_ud *)p;
  char *path = u->path;
  rm_ctx *c;
  int err = 0;
  u->path = NULL;
  if (!path) return 0;
  c = (rm_ctx *)malloc(sizeof *c);
  if (c) {
    err = remove_tree_path(c, path, 0);
    if (err == ENOENT) err = 0;   /* removed behind our back: fine */
    free(c);
  } else {
    err = ENOMEM;
  }
  free(path);
  return err;
}

static void tmpdir_describe(lua_State *L, void *p, int idx) {
  (void)idx;
  lua_pushfstring(L, "'%s'", ((tmpdir_ud *)p)->path);
}

static int tmpdir_index(lua_State *L);

static const geneva_class tmpdir_class = {
  "geneva.fs.TempDir", NULL, "tmpdir", tmpdir_release, tmpdir_describe, NULL, tmpdir_index
};

/*
** core.tmpdir([prefix="geneva-"]) -> TempDir | nil, msg, code. mkdtemp under
** $TMPDIR or /tmp; the dir is ledger-tracked, so the host removes it at scope
** close, signal or exit even if the handle is never closed. Raises when the
** prefix holds a '/'.
*/
static int fs_tmpdir(lua_State *L) {
  const char *prefix = luaL_optstring(L, 1, "geneva-");
  const char *base = getenv("TMPDIR");
  const char *tmpl;
  char *path;
  tmpdir_ud *u;
  luaL_argcheck(L, strchr(prefix, '/') == NULL, 1, "prefix must not contain '/'");
  if (!base || !*base) base = "/tmp";
  tmpl = lua_pushfstring(L, "%s%s%sXXXXXX", base,
                         base[strlen(base) - 1] == '/' ? "" : "/", prefix);
  u = (tmpdir_ud *)geneva_handle_new(L, &tmpdir_class, sizeof *u, 0);
  path = strdup(tmpl);
  if (!path) return luaL_error(L, "not enough memory");
  if (!mkdtemp(path)) {
    int err = errno;
    free(path);
    return fail_path(L, err, "tmpdir", tmpl);
  }
  u->path = path;
  geneva_handle_open(L, u);
  return 1;
}

/* t.path -> the directory. Raises once closed. */
static int tmpdir_path(lua_State *L) {
  lua_pushstring(L, ((tmpdir_ud *)geneva_handle_check(L, 1, &tmpdir_class))->path);
  return 1;
}

/* t:close() -> true | nil, msg, code (the tree could not all be removed).
** Idempotent. */
static int tmpdir_m_close(lua_State *L) {
  tmpdir_ud *u = (tmpdir_ud *)geneva_handle_to(L, 1, &tmpdir_class);
  int err;
  if (!geneva_handle_is_open(u)) { lua_pushboolean(L, 1); return 1; }
  lua_pushstring(L, u->path);   /* for the message: release frees it */
  err = geneva_handle_release(u);
  if (err) return fail_path(L, err, "tmpdir close", lua_tostring(L, -1));
  lua_pushboolean(L, 1);
  return 1;
}

/* __index: "path" is a field, anything else a method */
static int tmpdir_index(lua_State *L) {
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "path") == 0) return tmpdir_path(L);
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

/* }====== */

/* {====== Lock */

typedef struct {
  geneva_handle h;
  int fd;                  /* the flock'd descriptor while open */
} lock_ud;

static int lock_release(void *p) {
  lock_ud *u = (lock_ud *)p;
  int fd = u->fd;
  u->fd = -1;
  if (fd >= 0) close(fd);   /* drops the flock */
  return 0;
}

static void lock_describe(lua_State *L, void *p, int idx) {
  (void)p;
  lua_getiuservalue(L, idx, 1);
  lua_pushfstring(L, "'%s'", lua_tostring(L, -1));
  lua_remove(L, -2);
}

static const geneva_class lock_class = {
  "geneva.fs.Lock", NULL, "lock", lock_release, lock_describe, NULL, NULL
};

/*
** core.lock(path [, exclusive=true [, wait=true [, timeout]]]) -> Lock |
** nil, msg, code ("EWOULDBLOCK" when held elsewhere and not waiting or the
** timeout passed; "EINTR" when interrupted). flock(2) on path (created if
** missing), so it is per open file: two locks in one process conflict too.
** Waiting polls, so interrupts are seen promptly.
*/
static int fs_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int excl = lua_isnoneornil(L, 2) ? 1 : lua_toboolean(L, 2);
  int wait = lua_isnoneornil(L, 3) ? 1 : lua_toboolean(L, 3);
  lua_Number timeout = luaL_optnumber(L, 4, -1);
  struct timespec start, now, nap = {0, 1000000};
  lock_ud *u;
  int fd, err = 0;
  lua_settop(L, 4);
  u = (lock_ud *)geneva_handle_new(L, &lock_class, sizeof *u, 1);   /* 5; uservalue: path */
  u->fd = -1;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 5, 1);
  RETRY(fd, open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666));
  if (fd < 0 && (errno == EACCES || errno == EROFS || errno == EISDIR))
    RETRY(fd, open(path, O_RDONLY | O_CLOEXEC));
  if (fd < 0) return fail_path(L, errno, "lock", path);
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    if (flock(fd, (excl ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) break;
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) { err = errno; break; }
    if (!wait) { err = EWOULDBLOCK; break; }
    if (timeout >= 0) {
      clock_gettime(CLOCK_MONOTONIC, &now);
      if ((double)(now.tv_sec - start.tv_sec) +
          (double)(now.tv_nsec - start.tv_nsec) / 1e9 >= timeout) {
        err = EWOULDBLOCK;
        break;
      }
    }
    if (geneva_interrupted()) { err = EINTR; break; }
    nanosleep(&nap, NULL);
    if (nap.tv_nsec < 50000000) nap.tv_nsec *= 2;
  }
  if (err) {
    close(fd);
    if (err == EINTR) return fail_interrupted(L);
    if (err == EWOULDBLOCK)
      return geneva_fail(L, "EWOULDBLOCK", "lock '%s': already locked", path);
    return fail_path(L, err, "lock", path);
  }
  u->fd = fd;
  geneva_handle_open(L, u);
  return 1;
}

/* l:unlock() -> true: close() under the name that says what it does. */
static int lock_m_unlock(lua_State *L) {
  return geneva_handle_close(L, 1, &lock_class);
}

/* l:path() -> the lock file. Raises once unlocked. */
static int lock_m_path(lua_State *L) {
  geneva_handle_check(L, 1, &lock_class);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

/* l:is_locked() -> boolean (false once unlocked): not is_closed() */
static int lock_m_is_locked(lua_State *L) {
  lua_pushboolean(L, geneva_handle_is_open(geneva_handle_to(L, 1, &lock_class)));
  return 1;
}

/* }====== */

/* {====== read_regular: reading files an untrusted party may have planted */

#define READ_REGULAR_MAX (16 * 1024 * 1024)

/*
** core.read_regular(path, max) -> bytes | nil, msg, code. Reads path only if
** it is a regular file of at most max bytes: never follows a final symlink
** (ELOOP), never blocks on a FIFO or device (opened O_NONBLOCK, then fstat:
** anything but a regular file is EINVAL), and a bigger file is EFBIG. For
** lease files in a shared directory (geneva.reap), where fs.read could be
** made to hang or to read without end.
*/
static int fs_read_regular(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer max = luaL_checkinteger(L, 2);
  struct stat st;
  char *buf;
  size_t total = 0;
  int fd, err = 0;
  luaL_argcheck(L, max >= 0 && max <= READ_REGULAR_MAX, 2, "max out of range");
  /* the buffer first: nothing below may raise while fd is open */
  buf = (char *)lua_newuserdatauv(L, (size_t)max + 1, 0);
  RETRY(fd, open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (fd < 0) return fail_path(L, errno, "read", path);
  if (fstat(fd, &st) != 0) err = errno;
  else if (!S_ISREG(st.st_mode)) err = EINVAL;
  else if (st.st_size > (off_t)max) err = EFBIG;
  while (!err && total <= (size_t)max) {
    ssize_t n = read(fd, buf + total, (size_t)max + 1 - total);
    if (n < 0) {
      if (errno == EINTR && !geneva_interrupted()) continue;
      err = errno;
    } else if (n == 0) {
      break;
    } else {
      total += (size_t)n;
    }
  }
  close_fd(fd);
  if (!err && total > (size_t)max) err = EFBIG;   /* grew while we read */
  if (err == EINVAL) return geneva_fail(L, "EINVAL", "read '%s': not a regular file", path);
  if (err) return fail_path(L, err, "read", path);
  lua_pushlstring(L, buf, total);
  return 1;
}

/* }====== */

/* {====== Module */

static const luaL_Reg funcs[] = {
  {"mkdir_p", fs_mkdir_p}, {"readdir", fs_readdir}, {"sort", fs_sort},
  {"glob", fs_glob}, {"fnmatch", fs_fnmatch}, {"stat", fs_stat},
  {"read", fs_read}, {"write", fs_write}, {"write_atomic", fs_write_atomic},
  {"create_exclusive", fs_create_exclusive}, {"link", fs_link},
  {"symlink", fs_symlink}, {"rename", fs_rename}, {"remove", fs_remove},
  {"remove_tree", fs_remove_tree}, {"copy", fs_copy}, {"realpath", fs_realpath},
  {"fsync_dir", fs_fsync_dir}, {"utime", fs_utime}, {"getcwd", fs_getcwd},
  {"home", fs_home}, {"isatty", fs_isatty}, {"interrupted", fs_interrupted},
  {"sha256", fs_sha256}, {"sha256_file", fs_sha256_file},
  {"sha256_new", fs_sha256_new}, {"tmpdir", fs_tmpdir}, {"lock", fs_lock},
  {"read_regular", fs_read_regular},
  {NULL, NULL}
};

static const luaL_Reg sha_meth[] = {
  {"update", sha_m_update}, {"update_file", sha_m_update_file},
  {"hex", sha_m_hex}, {NULL, NULL}
};

static const luaL_Reg tmpdir_meth[] = {
  {"close", tmpdir_m_close}, {NULL, NULL}
};

static const luaL_Reg lock_meth[] = {
  {"unlock", lock_m_unlock}, {"path", lock_m_path},
  {"is_locked", lock_m_is_locked}, {NULL, NULL}
};

int luaopen_geneva_fs_core(lua_State *L) {
  geneva_class_register(L, &box_class, NULL);
  geneva_class_register(L, &sha_class, sha_meth);
  geneva_class_register(L, &tmpdir_class, tmpdir_meth);
  geneva_class_register(L, &lock_class, lock_meth);
  luaL_newlib(L, funcs);
  return 1;
}

/* }====== */
