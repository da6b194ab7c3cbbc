/*
** zip.c: geneva.zip.core, deterministic zip archives over libzip 1.7.3.
**
** create() writes content-addressable archives: entries sorted by name, a
** fixed DOS time (1980-01-01 00:00), fixed Unix modes (0644/0755), no extra
** fields, so the same inputs give the same bytes on any machine and in any
** time zone (libzip 1.7.3 would take the mtime through localtime, and the
** modes from the files). File sources are streamed by libzip
** (zip_source_file), never read into Lua. open() gives an Archive handle
** whose extract() refuses zip-slip: absolute names, ".." components, symlink
** entries, and writes through symlinks that already exist in the target.
** extract() and read() also refuse zip bombs ("ZIP_LIMIT", see zlimits): a
** total size and a compression ratio, checked on the sizes the archive
** declares before anything is written, and again on the bytes actually
** inflated, since declared sizes can lie.
**
** Lua-callable functions are prefixed lzip_ (not zip_, as the other
** bindings' <name>_ would have it) because libzip owns the zip_ namespace
** (zip_open, ...).
*/
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <zip.h>

#include "geneva_internal.h"
#include "handle.h"

/* {====== libzip.so.4, loaded when the module is first required (lazy.h) */
#include "lazy.h"
#define ZIP_FUNCS(X) \
  X(zip_close) \
  X(zip_discard) \
  X(zip_error_code_zip) \
  X(zip_error_fini) \
  X(zip_error_init_with_code) \
  X(zip_error_strerror) \
  X(zip_fclose) \
  X(zip_file_add) \
  X(zip_file_get_error) \
  X(zip_file_get_external_attributes) \
  X(zip_file_set_dostime) \
  X(zip_file_set_external_attributes) \
  X(zip_fopen_index) \
  X(zip_fread) \
  X(zip_get_error) \
  X(zip_get_name) \
  X(zip_get_num_entries) \
  X(zip_name_locate) \
  X(zip_open) \
  X(zip_register_cancel_callback_with_state) \
  X(zip_set_file_compression) \
  X(zip_source_buffer) \
  X(zip_source_file) \
  X(zip_source_free) \
  X(zip_stat_index) \
  X(zip_strerror)
GENEVA_LAZY_LIB(zip_lib, "libzip.so.4", NULL, "install libzip4", NULL, ZIP_FUNCS)
#define zip_close (zip_lib_api.zip_close)
#define zip_discard (zip_lib_api.zip_discard)
#define zip_error_code_zip (zip_lib_api.zip_error_code_zip)
#define zip_error_fini (zip_lib_api.zip_error_fini)
#define zip_error_init_with_code (zip_lib_api.zip_error_init_with_code)
#define zip_error_strerror (zip_lib_api.zip_error_strerror)
#define zip_fclose (zip_lib_api.zip_fclose)
#define zip_file_add (zip_lib_api.zip_file_add)
#define zip_file_get_error (zip_lib_api.zip_file_get_error)
#define zip_file_get_external_attributes (zip_lib_api.zip_file_get_external_attributes)
#define zip_file_set_dostime (zip_lib_api.zip_file_set_dostime)
#define zip_file_set_external_attributes (zip_lib_api.zip_file_set_external_attributes)
#define zip_fopen_index (zip_lib_api.zip_fopen_index)
#define zip_fread (zip_lib_api.zip_fread)
#define zip_get_error (zip_lib_api.zip_get_error)
#define zip_get_name (zip_lib_api.zip_get_name)
#define zip_get_num_entries (zip_lib_api.zip_get_num_entries)
#define zip_name_locate (zip_lib_api.zip_name_locate)
#define zip_open (zip_lib_api.zip_open)
#define zip_register_cancel_callback_with_state (zip_lib_api.zip_register_cancel_callback_with_state)
#define zip_set_file_compression (zip_lib_api.zip_set_file_compression)
#define zip_source_buffer (zip_lib_api.zip_source_buffer)
#define zip_source_file (zip_lib_api.zip_source_file)
#define zip_source_free (zip_lib_api.zip_source_free)
#define zip_stat_index (zip_lib_api.zip_stat_index)
#define zip_strerror (zip_lib_api.zip_strerror)
/* }====== */


#define DOS_DATE_1980 0x21          /* 1980-01-01 */
#define MODE_FILE 0100644u
#define MODE_EXEC 0100755u
#define COPY_CHUNK (256 * 1024)

/* {====== Error helpers */

static const char *const zip_error_names[] = {
  "ZIP_ER_OK", "ZIP_ER_MULTIDISK", "ZIP_ER_RENAME", "ZIP_ER_CLOSE",
  "ZIP_ER_SEEK", "ZIP_ER_READ", "ZIP_ER_WRITE", "ZIP_ER_CRC",
  "ZIP_ER_ZIPCLOSED", "ZIP_ER_NOENT", "ZIP_ER_EXISTS", "ZIP_ER_OPEN",
  "ZIP_ER_TMPOPEN", "ZIP_ER_ZLIB", "ZIP_ER_MEMORY", "ZIP_ER_CHANGED",
  "ZIP_ER_COMPNOTSUPP", "ZIP_ER_EOF", "ZIP_ER_INVAL", "ZIP_ER_NOZIP",
  "ZIP_ER_INTERNAL", "ZIP_ER_INCONS", "ZIP_ER_REMOVE", "ZIP_ER_DELETED",
  "ZIP_ER_ENCRNOTSUPP", "ZIP_ER_RDONLY", "ZIP_ER_NOPASSWD",
  "ZIP_ER_WRONGPASSWD", "ZIP_ER_OPNOTSUPP", "ZIP_ER_INUSE", "ZIP_ER_TELL",
  "ZIP_ER_COMPRESSED_DATA", "ZIP_ER_CANCELLED"
};

static const char *zip_code_name(int ze) {
  if (ze >= 0 && ze < (int)(sizeof zip_error_names / sizeof *zip_error_names))
    return zip_error_names[ze];
  return "ZIP_ER_UNKNOWN";
}

/* A failure found while C resources are live: filled in, resources freed,
** and only then pushed (nothing may raise while libzip objects are open). */
typedef struct {
  char msg[1024];
  const char *code;   /* static string; NULL: no failure */
} failure;

static void fail_set(failure *f, const char *code, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
static void fail_set(failure *f, const char *code, const char *fmt, ...) {
  va_list ap;
  if (f->code) return;    /* keep the first failure */
  f->code = code;
  va_start(ap, fmt);
  vsnprintf(f->msg, sizeof f->msg, fmt, ap);
  va_end(ap);
}

static void fail_errno(failure *f, int err, const char *what, const char *name) {
  fail_set(f, geneva_errno_name(err), "%s '%s': %s", what, name, strerror(err));
}

/* From a libzip error: ZIP_ER_CANCELLED means our cancel callback saw an
** interrupt, which the host reports as EINTR. */
static void fail_zip(failure *f, zip_error_t *ze, const char *what) {
  int code = zip_error_code_zip(ze);
  if (code == ZIP_ER_CANCELLED && geneva_interrupted())
    fail_set(f, "EINTR", "interrupted");
  else
    fail_set(f, zip_code_name(code), "%s: %s", what, zip_error_strerror(ze));
}

static int push_failure(lua_State *L, const failure *f) {
  return geneva_fail(L, f->code, "%s", f->msg);
}

/* libzip polls this while writing: nonzero cancels zip_close */
static int cancel_cb(zip_t *za, void *ud) {
  (void)za; (void)ud;
  return geneva_interrupted() != 0;
}

/* }====== */

/* {====== Bomb limits
** Defaults, overridable per call (opts.max_size, opts.max_ratio):
** - 1 GiB unpacked in all: a package of code and assets is MBs, and a
**   bomb (2 MB unpacking to 2 GiB) must not fill the disk or memory;
** - a ratio of 100:1 for an entry past 1 MiB, Apache POI's ZipSecureFile
**   default (MIN_INFLATE_RATIO 0.01): real files deflate ~3-10:1, even
**   logs and sparse data stay under 100:1, while deflate's own maximum
**   (~1032:1) is what bombs use. Small entries may exceed it: the grace
**   keeps a tiny file of zeros from being refused. */
#define ZIP_MAX_SIZE ((lua_Integer)1 << 30)
#define ZIP_MAX_RATIO 100.0
#define ZIP_RATIO_GRACE ((zip_uint64_t)1 << 20)

typedef struct {
  zip_uint64_t max_size;   /* bytes unpacked, all entries together */
  double max_ratio;        /* size / compressed size of an entry */
} zlimits;

/* Reads opts.max_size and opts.max_ratio from the table at i (or none);
** raises on bad values, so call it before any C resource is held. */
static void get_limits(lua_State *L, int i, zlimits *lim) {
  lua_Integer size = ZIP_MAX_SIZE;
  double ratio = ZIP_MAX_RATIO;
  if (!lua_isnoneornil(L, i)) {
    luaL_checktype(L, i, LUA_TTABLE);
    if (lua_getfield(L, i, "max_size") != LUA_TNIL) {
      size = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
      luaL_argcheck(L, size > 0, i, "max_size must be a positive integer (bytes)");
    }
    if (lua_getfield(L, i, "max_ratio") != LUA_TNIL) {
      ratio = lua_isnumber(L, -1) ? (double)lua_tonumber(L, -1) : 0;
      luaL_argcheck(L, ratio >= 1, i, "max_ratio must be a number >= 1");
    }
    lua_pop(L, 2);
  }
  lim->max_size = (zip_uint64_t)size;
  lim->max_ratio = ratio;
}

/* Whether `size` bytes inflated from `comp` compressed ones break the ratio. */
static int over_ratio(const zlimits *lim, zip_uint64_t size, zip_uint64_t comp) {
  return size > ZIP_RATIO_GRACE && (double)size > (double)comp * lim->max_ratio;
}

static void fail_total(failure *f, const char *apath, const zlimits *lim, const char *how) {
  fail_set(f, "ZIP_LIMIT", "%s %s more than %llu bytes (max_size): refusing a possible zip bomb",
           apath, how, (unsigned long long)lim->max_size);
}

static void fail_ratio(failure *f, const char *apath, const char *name, const zlimits *lim,
                       zip_uint64_t size, zip_uint64_t comp) {
  fail_set(f, "ZIP_LIMIT", "entry '%s' in %s inflates %llu bytes from %llu, more than "
           "%g:1 (max_ratio): refusing a possible zip bomb", name, apath,
           (unsigned long long)size, (unsigned long long)comp, lim->max_ratio);
}

/* Checks the declared sizes of entries [from, to) against lim; 0 or -1
** with f set. */
static int check_declared(zip_t *za, zip_uint64_t from, zip_uint64_t to, const char *apath,
                          const zlimits *lim, failure *f) {
  zip_uint64_t i, total = 0;
  for (i = from; i < to; i++) {
    zip_stat_t st;
    if (zip_stat_index(za, i, 0, &st) < 0 || !(st.valid & ZIP_STAT_SIZE)
        || !(st.valid & ZIP_STAT_COMP_SIZE)) {
      fail_set(f, "ZIP_ER_INCONS", "cannot stat entry #%llu in %s", (unsigned long long)i + 1, apath);
      return -1;
    }
    if (st.size > lim->max_size - total) {
      fail_total(f, apath, lim, "declares");
      return -1;
    }
    total += st.size;
    if (over_ratio(lim, st.size, st.comp_size)) {
      fail_ratio(f, apath, st.name ? st.name : "?", lim, st.size, st.comp_size);
      return -1;
    }
  }
  return 0;
}

/* }====== */

/* {====== Names */

/*
** NULL if name is a canonical relative entry name: '/'-separated, no empty,
** "." or ".." component, no leading '/', no NUL or backslash. Otherwise the
** reason. Used for names we write, so one file has exactly one name.
*/
static const char *create_name_problem(const char *s, size_t len) {
  size_t i, start = 0;
  if (len == 0) return "empty name";
  if (len > 65535) return "name too long";
  if (s[0] == '/') return "absolute name";
  if (memchr(s, '\0', len)) return "name contains a NUL byte";
  if (memchr(s, '\\', len)) return "name contains a backslash";
  for (i = 0; i <= len; i++) {
    if (i == len || s[i] == '/') {
      size_t n = i - start;
      if (n == 0) return i == len ? "name ends with '/'" : "empty path component";
      if (n == 1 && s[start] == '.') return "'.' path component";
      if (n == 2 && s[start] == '.' && s[start + 1] == '.') return "'..' path component";
      start = i + 1;
    }
  }
  return NULL;
}

/* NULL if an archive entry name may be extracted below the target directory
** (empty and "." components are skipped, so "./" is a no-op directory
** entry); otherwise the reason. */
static const char *extract_name_problem(const char *s) {
  size_t i, start = 0, len = strlen(s), parts = 0;
  if (len == 0) return "empty name";
  if (s[0] == '/') return "absolute path";
  for (i = 0; i <= len; i++) {
    if (i == len || s[i] == '/') {
      size_t n = i - start;
      if (n == 2 && s[start] == '.' && s[start + 1] == '.')
        return "path escapes the target directory";
      if (n > 0 && !(n == 1 && s[start] == '.')) parts++;
      if (n > 255) return "path component too long";
      start = i + 1;
    }
  }
  return parts || s[len - 1] == '/' ? NULL : "empty path";
}

/* }====== */

/* {====== create */

typedef struct {
  const char *name;
  size_t namelen;
  const char *path;     /* file source, or NULL for data */
  const char *data;
  size_t datalen;
  int exec;
  lua_Integer pos;      /* index in the caller's array, for messages */
} zentry;

static int zentry_cmp(const void *a, const void *b) {
  const zentry *x = (const zentry *)a, *y = (const zentry *)b;
  size_t n = x->namelen < y->namelen ? x->namelen : y->namelen;
  int c = memcmp(x->name, y->name, n);
  if (c) return c;
  return (x->namelen > y->namelen) - (x->namelen < y->namelen);
}

/* Reads field k of the table on top into an anchor table at `anchor` (so the
** string outlives any __index trickery); returns its type. [t] -> [t] */
static int get_anchored(lua_State *L, const char *k, int anchor) {
  int t = lua_getfield(L, -1, k);
  if (t != LUA_TNIL) {
    lua_pushvalue(L, -1);
    lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);
  }
  return t;
}

/* Writes the 22-byte end-of-central-directory record of an empty archive:
** libzip removes the file instead when an archive has no entries. */
static int write_empty_zip(int fd) {
  static const unsigned char eocd[22] = { 'P', 'K', 5, 6 };
  size_t off = 0;
  while (off < sizeof eocd) {
    ssize_t w = write(fd, eocd + off, sizeof eocd - off);
    if (w < 0) { if (errno == EINTR) continue; return -1; }
    off += (size_t)w;
  }
  return 0;
}

static void fsync_dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  char dir[4096];
  int fd;
  if (!slash) { strcpy(dir, "."); }
  else if (slash == path) { strcpy(dir, "/"); }
  else {
    size_t n = (size_t)(slash - path);
    if (n >= sizeof dir) return;
    memcpy(dir, path, n);
    dir[n] = '\0';
  }
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)fsync(fd);   /* best effort: some file systems refuse directories */
  close(fd);
}

/* Adds es[0..n) to a new archive at tmp and closes it. Fills f on failure. */
static void write_archive(const char *tmp, const char *path, zentry *es, size_t n,
                          int level, int store, failure *f) {
  int zerr = 0;
  size_t i;
  zip_t *za = zip_open(tmp, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
  if (!za) {
    zip_error_t ze;
    zip_error_init_with_code(&ze, zerr);
    fail_zip(f, &ze, path);
    zip_error_fini(&ze);
    return;
  }
  zip_register_cancel_callback_with_state(za, cancel_cb, NULL, NULL);
  for (i = 0; i < n; i++) {
    zentry *e = &es[i];
    zip_source_t *src = e->path
      ? zip_source_file(za, e->path, 0, -1)
      : zip_source_buffer(za, e->data, e->datalen, 0);
    zip_int64_t idx;
    if (!src) { fail_zip(f, zip_get_error(za), e->path ? e->path : e->name); break; }
    idx = zip_file_add(za, e->name, src, ZIP_FL_ENC_GUESS);
    if (idx < 0) {
      zip_source_free(src);
      fail_zip(f, zip_get_error(za), e->name);
      break;
    }
    if (zip_set_file_compression(za, (zip_uint64_t)idx,
                                 store ? ZIP_CM_STORE : ZIP_CM_DEFLATE,
                                 store ? 0 : (zip_uint32_t)level) < 0
        || zip_file_set_dostime(za, (zip_uint64_t)idx, 0, DOS_DATE_1980, 0) < 0
        || zip_file_set_external_attributes(za, (zip_uint64_t)idx, 0, ZIP_OPSYS_UNIX,
                                            (e->exec ? MODE_EXEC : MODE_FILE) << 16) < 0) {
      fail_zip(f, zip_get_error(za), e->name);
      break;
    }
  }
  if (f->code) { zip_discard(za); return; }
  if (zip_close(za) < 0) {
    fail_zip(f, zip_get_error(za), path);
    zip_discard(za);
  }
}

/*
** core.create(path, entries [, level [, method]]) -> true | nil, msg, code
** entries: array of {name = string, path = string | data = string,
** exec = boolean}; level 1..9 (default 1); method "deflate" | "store".
** Raises on misuse (types, both or neither of path/data, bad level).
** Returns nil, msg, code for bad names ("ZIP_BAD_NAME"), duplicate names
** ("ZIP_DUPLICATE"), unreadable sources (errno name), libzip failures
** ("ZIP_ER_*") and interrupts ("EINTR"). The archive is written to a temp
** file next to path, fsynced and renamed over path; on failure it is removed.
** Nothing C-owned outlives the call; entries' strings stay owned by Lua.
*/
static int lzip_create(lua_State *L) {
  static const char *const methods[] = { "deflate", "store", NULL };
  const char *path = luaL_checkstring(L, 1);
  lua_Integer level = luaL_optinteger(L, 3, 1);
  int store = luaL_checkoption(L, 4, "deflate", methods);
  size_t n, i;
  zentry *es;
  char *tmp;
  int anchor, fd;
  failure f = { "", NULL };
  struct stat st;

  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_argcheck(L, level >= 1 && level <= 9, 3, "level must be 1..9");
  n = (size_t)lua_rawlen(L, 2);
  lua_settop(L, 4);
  es = (zentry *)lua_newuserdatauv(L, (n ? n : 1) * sizeof *es, 0);   /* GC-owned */
  lua_createtable(L, (int)(n < 1000000 ? n * 2 : 0), 0);
  anchor = lua_gettop(L);

  /* 1. read and check the entries (may raise: nothing C-owned yet) */
  for (i = 0; i < n; i++) {
    zentry *e = &es[i];
    int tp, td;
    e->pos = (lua_Integer)i + 1;
    if (lua_rawgeti(L, 2, e->pos) != LUA_TTABLE)
      return luaL_argerror(L, 2, lua_pushfstring(L, "entry #%I is not a table", e->pos));
    if (get_anchored(L, "name", anchor) != LUA_TSTRING)
      return luaL_argerror(L, 2, lua_pushfstring(L, "entry #%I: 'name' must be a string", e->pos));
    e->name = lua_tolstring(L, -1, &e->namelen);
    lua_pop(L, 1);
    tp = get_anchored(L, "path", anchor);
    e->path = tp == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    td = get_anchored(L, "data", anchor);
    e->data = td == LUA_TSTRING ? lua_tolstring(L, -1, &e->datalen) : NULL;
    lua_pop(L, 1);
    if ((tp != LUA_TNIL && tp != LUA_TSTRING) || (td != LUA_TNIL && td != LUA_TSTRING)
        || (e->path != NULL) == (e->data != NULL))
      return luaL_argerror(L, 2, lua_pushfstring(L,
        "entry #%I ('%s'): exactly one of 'path' or 'data' (strings) expected",
        e->pos, e->name));
    lua_getfield(L, -1, "exec");
    e->exec = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }

  /* 2. names: canonical, then unique once sorted */
  for (i = 0; i < n; i++) {
    const char *why = create_name_problem(es[i].name, es[i].namelen);
    if (why)
      return geneva_fail(L, "ZIP_BAD_NAME", "bad entry name '%s' (entry #%I): %s",
                         es[i].name, es[i].pos, why);
  }
  if (n > 1) qsort(es, n, sizeof *es, zentry_cmp);
  for (i = 1; i < n; i++)
    if (zentry_cmp(&es[i - 1], &es[i]) == 0)
      return geneva_fail(L, "ZIP_DUPLICATE", "duplicate entry name '%s' (entries #%I and #%I)",
                         es[i].name, es[i - 1].pos < es[i].pos ? es[i - 1].pos : es[i].pos,
                         es[i - 1].pos < es[i].pos ? es[i].pos : es[i - 1].pos);

  /* 3. sources: regular files that exist now */
  for (i = 0; i < n; i++) {
    if (!es[i].path) continue;
    if (stat(es[i].path, &st) != 0) return geneva_fail_errno(L, errno, es[i].path);
    if (!S_ISREG(st.st_mode))
      return geneva_fail(L, S_ISDIR(st.st_mode) ? "EISDIR" : "EINVAL",
                         "%s: not a regular file (entry '%s')", es[i].path, es[i].name);
  }

  /* 4. write: a GC-owned temp name, then no raising until cleanup */
  lua_pushfstring(L, "%s.tmp-XXXXXX", path);
  {
    size_t tl;
    const char *t = lua_tolstring(L, -1, &tl);
    tmp = (char *)lua_newuserdatauv(L, tl + 1, 0);
    memcpy(tmp, t, tl + 1);
  }
  fd = mkstemp(tmp);
  if (fd < 0) return geneva_fail_errno(L, errno, path);
  if (n == 0) {
    if (write_empty_zip(fd) != 0) fail_errno(&f, errno, "writing", tmp);
    close(fd);
  } else {
    close(fd);   /* libzip replaces tmp by its own temp file on zip_close */
    write_archive(tmp, path, es, n, (int)level, store, &f);
  }
  if (!f.code) {
    fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fchmod(fd, 0644) != 0 || fsync(fd) != 0)
      fail_errno(&f, errno, "syncing", tmp);
    if (fd >= 0) close(fd);
  }
  if (!f.code && rename(tmp, path) != 0) fail_errno(&f, errno, "renaming to", path);
  if (f.code) {
    unlink(tmp);
    return push_failure(L, &f);
  }
  fsync_dir_of(path);
  lua_pushboolean(L, 1);
  return 1;
}

/* }====== */

/* {====== Archive handle */

typedef struct {
  geneva_handle h;        /* born closed (handle.h) */
  zip_t *za;              /* while open */
} archive;

/* The release: close(), __close, __gc and the ledger teardown. */
static int archive_release(void *p) {
  archive *a = (archive *)p;
  zip_discard(a->za);     /* read-only: nothing to write back */
  a->za = NULL;
  return 0;
}

/* The path the archive was opened with, for messages. [] -> [] */
static const char *archive_path(lua_State *L, int i) {
  const char *p;
  lua_getiuservalue(L, i, 1);
  p = lua_tostring(L, -1);   /* anchored by the userdata */
  lua_pop(L, 1);
  return p ? p : "?";
}

static void archive_describe(lua_State *L, void *p, int idx) {
  (void)p;
  lua_pushfstring(L, "(%s)", archive_path(L, idx));
}

static const geneva_class archive_class = {
  "geneva.zip.Archive", NULL, "zip", archive_release, archive_describe, NULL, NULL
};

static archive *check_open(lua_State *L, int i) {
  return (archive *)geneva_handle_check(L, i, &archive_class);
}

/*
** core.open(path) -> Archive | nil, msg, code
** Opens read-only. Codes: "ENOENT" (no such file), "ZIP_ER_NOZIP" (not a
** zip), other "ZIP_ER_*". The handle owns the zip_t; it is registered in
** the ledger. Raises only on a non-string path.
*/
static int lzip_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  archive *a;
  zip_t *za;
  int zerr = 0;
  a = (archive *)geneva_handle_new(L, &archive_class, sizeof *a, 1);   /* born closed */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  za = zip_open(path, ZIP_RDONLY, &zerr);
  if (!za) {
    failure f = { "", NULL };
    if (zerr == ZIP_ER_NOENT) {
      fail_set(&f, "ENOENT", "%s: %s", path, strerror(ENOENT));
    } else {
      zip_error_t ze;
      zip_error_init_with_code(&ze, zerr);
      fail_zip(&f, &ze, path);
      zip_error_fini(&ze);
    }
    return push_failure(L, &f);
  }
  a->za = za;
  geneva_handle_open(L, a);
  return 1;
}

/* Unix mode bits of entry i, or -1 when the archive did not record any. */
static long entry_unix_mode(zip_t *za, zip_uint64_t i) {
  zip_uint8_t opsys;
  zip_uint32_t attr;
  if (zip_file_get_external_attributes(za, i, 0, &opsys, &attr) < 0) return -1;
  if (opsys != ZIP_OPSYS_UNIX || (attr >> 16) == 0) return -1;
  return (long)(attr >> 16);
}

/*
** archive:list() -> array of {name, size, compressed_size, crc, mode,
** is_dir, is_symlink}, in archive order. mode: permission bits (e.g. 0644)
** or nil when the archive has no Unix modes. Raises when closed.
*/
static int lzip_m_list(lua_State *L) {
  archive *a = check_open(L, 1);
  zip_int64_t n = zip_get_num_entries(a->za, 0), i;
  lua_createtable(L, n > 0 && n < 1000000 ? (int)n : 0, 0);
  for (i = 0; i < n; i++) {
    zip_stat_t st;
    long mode;
    size_t len;
    if (zip_stat_index(a->za, (zip_uint64_t)i, 0, &st) < 0 || !(st.valid & ZIP_STAT_NAME))
      continue;
    len = strlen(st.name);
    mode = entry_unix_mode(a->za, (zip_uint64_t)i);
    lua_createtable(L, 0, 7);
    lua_pushstring(L, st.name);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, (lua_Integer)st.size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)st.comp_size);
    lua_setfield(L, -2, "compressed_size");
    lua_pushinteger(L, (lua_Integer)st.crc);
    lua_setfield(L, -2, "crc");
    if (mode >= 0) {
      lua_pushinteger(L, mode & 07777);
      lua_setfield(L, -2, "mode");
    }
    lua_pushboolean(L, (len > 0 && st.name[len - 1] == '/') || (mode >= 0 && S_ISDIR(mode)));
    lua_setfield(L, -2, "is_dir");
    lua_pushboolean(L, mode >= 0 && S_ISLNK(mode));
    lua_setfield(L, -2, "is_symlink");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/*
** archive:read(name [, opts]) -> bytes | nil, msg, code
** "ZIP_ER_NOENT" when there is no such entry; "ZIP_ER_CRC" etc. on damage;
** "ZIP_LIMIT" when its declared size breaks opts.max_size or max_ratio (as
** extract; reading stops at the declared size, so it cannot grow past it);
** "EINTR" when interrupted. The result buffer is Lua-owned and allocated
** before the entry is opened. Raises when closed or on bad opts.
*/
static int lzip_m_read(lua_State *L) {
  archive *a = check_open(L, 1);
  size_t nlen;
  const char *name = luaL_checklstring(L, 2, &nlen);
  const char *apath = archive_path(L, 1);
  zip_int64_t idx;
  zip_stat_t st;
  zip_file_t *zf;
  luaL_Buffer b;
  char *p;
  size_t got = 0;
  failure f = { "", NULL };
  zlimits lim;

  get_limits(L, 3, &lim);
  idx = strlen(name) == nlen ? zip_name_locate(a->za, name, 0) : -1;
  if (idx < 0)
    return geneva_fail(L, "ZIP_ER_NOENT", "no entry '%s' in %s", name, apath);
  if (zip_stat_index(a->za, (zip_uint64_t)idx, 0, &st) < 0 || !(st.valid & ZIP_STAT_SIZE))
    return geneva_fail(L, "ZIP_ER_INCONS", "cannot stat entry '%s' in %s", name, apath);
  if (check_declared(a->za, (zip_uint64_t)idx, (zip_uint64_t)idx + 1, apath, &lim, &f) != 0)
    return push_failure(L, &f);
  if (st.size > (zip_uint64_t)(SIZE_MAX / 2))
    return geneva_fail(L, "ZIP_ER_MEMORY", "entry '%s' in %s is too large", name, apath);
  p = luaL_buffinitsize(L, &b, (size_t)st.size);   /* may raise: nothing open yet */
  zf = zip_fopen_index(a->za, (zip_uint64_t)idx, 0);
  if (!zf) return geneva_fail(L, zip_code_name(zip_error_code_zip(zip_get_error(a->za))),
                              "entry '%s' in %s: %s", name, apath, zip_strerror(a->za));
  for (;;) {
    zip_int64_t r;
    char extra;
    if (geneva_interrupted()) { fail_set(&f, "EINTR", "interrupted"); break; }
    if (got < st.size) {
      size_t want = (size_t)st.size - got;
      r = zip_fread(zf, p + got, want < COPY_CHUNK ? want : COPY_CHUNK);
    } else {
      r = zip_fread(zf, &extra, 1);    /* reach EOF so the CRC is checked */
      if (r > 0) { fail_set(&f, "ZIP_ER_INCONS", "entry '%s' in %s is longer than recorded",
                            name, apath); break; }
    }
    if (r < 0) {
      fail_zip(&f, zip_file_get_error(zf), name);
      break;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  zip_fclose(zf);
  if (!f.code && got != st.size)
    fail_set(&f, "ZIP_ER_EOF", "entry '%s' in %s is truncated", name, apath);
  if (f.code) return push_failure(L, &f);
  luaL_pushresultsize(&b, got);
  return 1;
}

/* {------ extract */

typedef struct {
  int root;          /* fd of the target directory */
  const char *apath; /* archive path, for messages */
  char *buf;         /* COPY_CHUNK bytes */
  unsigned long seq; /* temp file names */
  failure *f;
  zlimits lim;
  zip_uint64_t total;  /* bytes inflated so far, all entries */
} xctx;

static void fail_unsafe(xctx *x, const char *name, const char *why) {
  fail_set(x->f, "ZIP_UNSAFE", "unsafe entry '%s' in %s: %s", name, x->apath, why);
}

/*
** Opens directory `comp` below dfd without following a symlink, creating
** it if missing. Returns the new fd, or -1 with x->f set.
*/
static int open_subdir(xctx *x, int dfd, const char *comp, const char *name) {
  int tries;
  for (tries = 0; tries < 3; tries++) {
    struct stat st;
    int fd = openat(dfd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) return fd;
    if (errno == ENOENT) {
      if (mkdirat(dfd, comp, 0777) != 0 && errno != EEXIST) {
        fail_errno(x->f, errno, "creating directory for", name);
        return -1;
      }
      continue;
    }
    if ((errno == ELOOP || errno == ENOTDIR)
        && fstatat(dfd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
      fail_unsafe(x, name, "path goes through a symbolic link in the target directory");
      return -1;
    }
    fail_errno(x->f, errno, "opening directory for", name);
    return -1;
  }
  fail_errno(x->f, EAGAIN, "creating directory for", name);
  return -1;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) { if (errno == EINTR) continue; return -1; }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Copies entry idx into a new temp file in dfd, then renames it to base:
** a rename replaces a directory entry and never writes through a link. */
static void extract_file(xctx *x, zip_t *za, zip_uint64_t idx, int dfd,
                         const char *base, const char *name, int exec) {
  char tmp[64];
  struct stat st;
  zip_stat_t zst;
  zip_file_t *zf;
  int fd = -1;
  if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISLNK(st.st_mode)) {
      fail_unsafe(x, name, "target is a symbolic link in the target directory");
      return;
    }
    if (S_ISDIR(st.st_mode)) { fail_errno(x->f, EISDIR, "extracting", name); return; }
  }
  while (fd < 0) {
    snprintf(tmp, sizeof tmp, ".geneva-unzip-%ld-%lu", (long)getpid(), ++x->seq);
    fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST) { fail_errno(x->f, errno, "extracting", name); return; }
  }
  zf = zip_stat_index(za, idx, 0, &zst) == 0 ? zip_fopen_index(za, idx, 0) : NULL;
  if (!zf) {
    fail_zip(x->f, zip_get_error(za), name);
  } else {
    zip_uint64_t got = 0;
    for (;;) {
      zip_int64_t r;
      if (geneva_interrupted()) { fail_set(x->f, "EINTR", "interrupted"); break; }
      r = zip_fread(zf, x->buf, COPY_CHUNK);
      if (r < 0) { fail_zip(x->f, zip_file_get_error(zf), name); break; }
      if (r == 0) break;
      /* count what really inflates: the declared sizes checked up front
      ** may lie, and libzip notices only at the end of the entry */
      got += (zip_uint64_t)r;
      if ((zip_uint64_t)r > x->lim.max_size - x->total) {
        fail_total(x->f, x->apath, &x->lim, "unpacks to");
        break;
      }
      x->total += (zip_uint64_t)r;
      if (over_ratio(&x->lim, got, zst.comp_size)) {
        fail_ratio(x->f, x->apath, name, &x->lim, got, zst.comp_size);
        break;
      }
      if (write_all(fd, x->buf, (size_t)r) != 0) {
        fail_errno(x->f, errno, "extracting", name);
        break;
      }
    }
    zip_fclose(zf);
  }
  if (!x->f->code && fchmod(fd, exec ? 0755 : 0644) != 0)
    fail_errno(x->f, errno, "extracting", name);
  if (close(fd) != 0 && !x->f->code) fail_errno(x->f, errno, "extracting", name);
  if (!x->f->code && renameat(dfd, tmp, dfd, base) != 0)
    fail_errno(x->f, errno, "extracting", name);
  if (x->f->code) unlinkat(dfd, tmp, 0);
}

/* Extracts one entry whose name passed extract_name_problem: directories
** are walked one component at a time (skipping empty and "." ones), never
** following a symlink. */
static void extract_entry(xctx *x, zip_t *za, zip_uint64_t idx, const char *name,
                          long mode) {
  char path[4096];
  char *comps[2048];
  size_t len = strlen(name), k = 0, j;
  int is_dir = name[len - 1] == '/' || (mode >= 0 && S_ISDIR(mode));
  int dfd = x->root;
  char *p, *save = NULL;
  if (len >= sizeof path) { fail_errno(x->f, ENAMETOOLONG, "extracting", name); return; }
  memcpy(path, name, len + 1);
  for (p = strtok_r(path, "/", &save); p; p = strtok_r(NULL, "/", &save))
    if (strcmp(p, ".") != 0) comps[k++] = p;   /* k <= len / 2 + 1 < 2048 */
  for (j = 0; j < k && !x->f->code; j++) {
    int fd;
    if (j == k - 1 && !is_dir) {
      extract_file(x, za, idx, dfd, comps[j], name, mode >= 0 && (mode & 0111));
      break;
    }
    fd = open_subdir(x, dfd, comps[j], name);
    if (dfd != x->root) close(dfd);
    dfd = fd;
    if (fd < 0) return;
  }
  if (dfd != x->root) close(dfd);
}

/*
** archive:extract(dir [, opts]) -> true | nil, msg, code
** Creates dir if missing (not its parents). Checks every entry first and
** extracts nothing if one is unsafe: absolute, with a ".." component, a
** symlink or special file ("ZIP_UNSAFE"), or if the declared sizes break
** the bomb limits ("ZIP_LIMIT"; opts.max_size: bytes in all, default 1 GiB;
** opts.max_ratio: size / compressed size of an entry past 1 MiB, default
** 100). While extracting, refuses to go through a symlink found in dir
** ("ZIP_UNSAFE") and stops when the bytes actually inflated break the
** limits ("ZIP_LIMIT"); entries already extracted stay, the one being
** written is removed. Files get mode 0644 or 0755 (exec bit kept). "EINTR"
** when interrupted. Raises when closed or on bad opts.
*/
static int lzip_m_extract(lua_State *L) {
  archive *a = check_open(L, 1);
  const char *dir = luaL_checkstring(L, 2);
  zip_int64_t n = zip_get_num_entries(a->za, 0), i;
  failure f = { "", NULL };
  xctx x;
  get_limits(L, 3, &x.lim);
  x.apath = archive_path(L, 1);
  x.f = &f;
  x.seq = 0;
  x.total = 0;

  /* 1. check everything before writing anything */
  for (i = 0; i < n && !f.code; i++) {
    const char *name = zip_get_name(a->za, (zip_uint64_t)i, 0);
    long mode = entry_unix_mode(a->za, (zip_uint64_t)i);
    const char *why;
    if (!name) return geneva_fail(L, "ZIP_ER_INCONS", "entry #%d in %s has no name",
                                  (int)i + 1, x.apath);
    why = extract_name_problem(name);
    if (!why && mode >= 0 && S_ISLNK(mode)) why = "symbolic links are not extracted";
    if (!why && mode >= 0 && (mode & S_IFMT) && !S_ISREG(mode) && !S_ISDIR(mode))
      why = "special files are not extracted";
    if (why) return geneva_fail(L, "ZIP_UNSAFE", "unsafe entry '%s' in %s: %s",
                                name, x.apath, why);
  }
  if (n > 0 && check_declared(a->za, 0, (zip_uint64_t)n, x.apath, &x.lim, &f) != 0)
    return push_failure(L, &f);

  /* 2. extract: C resources from here on, no raising until cleanup */
  x.root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (x.root < 0 && errno == ENOENT && mkdir(dir, 0777) == 0)
    x.root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (x.root < 0) return geneva_fail_errno(L, errno, dir);
  x.buf = (char *)malloc(COPY_CHUNK);
  if (!x.buf) fail_errno(&f, ENOMEM, "extracting to", dir);
  for (i = 0; i < n && !f.code; i++) {
    const char *name = zip_get_name(a->za, (zip_uint64_t)i, 0);
    if (!name) { fail_set(&f, "ZIP_ER_INCONS", "entry #%d has no name", (int)i + 1); break; }
    extract_entry(&x, a->za, (zip_uint64_t)i, name, entry_unix_mode(a->za, (zip_uint64_t)i));
  }
  free(x.buf);
  close(x.root);
  if (f.code) return push_failure(L, &f);
  lua_pushboolean(L, 1);
  return 1;
}

/* }------ */

/* archive:close() -> true (idempotent), archive:is_closed(), __close,
** __gc, __tostring "geneva.zip.Archive (<path>)": handle.h */

/* }====== */

static const luaL_Reg meth[] = {
  {"list", lzip_m_list},
  {"read", lzip_m_read},
  {"extract", lzip_m_extract},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"create", lzip_create},
  {"open", lzip_open},
  {NULL, NULL}
};

int luaopen_geneva_zip_core(lua_State *L);

int luaopen_geneva_zip_core(lua_State *L) {
  geneva_lazy_require(L, &zip_lib);
  geneva_class_register(L, &archive_class, meth);
  luaL_newlib(L, funcs);
  return 1;
}
