/*
** sqlite.c: geneva.sqlite.core, a thin binding over the SQLite C API.
**
** Two handle types:
**   geneva.sqlite.Db    one sqlite3 connection, tracked in the host's ledger.
**   geneva.sqlite.Stmt  one prepared statement. It holds its Db in user value
**                       1 (so the Db outlives it), and the Db keeps a weak,
**                       intrusive C list of its live statements, which its
**                       release finalizes first (sqlite3_close needs it). The list
**                       is C, not a Lua table, because the ledger teardown
**                       runs without Lua.
**
** Values: integer <-> INTEGER (64-bit exact), float <-> REAL, string <-> TEXT,
** sqlite.blob(s) -> BLOB (BLOB columns come back as strings), nil,
** sqlite.null or geneva.json's null -> NULL, booleans bind as 0/1. Row arrays
** carry sqlite.null for NULL so they have no holes; named rows and stmt:get()
** give nil. SQLite stores NaN as NULL.
**
** Errors: misuse raises; SQLite failures return nil, msg, code, extcode where
** code is the primary result name ("SQLITE_BUSY") and extcode the extended
** one ("SQLITE_CONSTRAINT_UNIQUE"). An interrupt (geneva_interrupted(), seen
** by the progress and busy handlers) gives nil, "interrupted", "EINTR".
*/
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lua.h>
#include <lauxlib.h>
#include <sqlite3.h>

#include "geneva_internal.h"
#include "handle.h"
#include "rowpack.h"

/* {====== libsqlite3.so.0, loaded when the module is first required (lazy.h) */
#include "lazy.h"
#define SQLITE_FUNCS(X) \
  X(sqlite3_bind_blob64) \
  X(sqlite3_bind_double) \
  X(sqlite3_bind_int) \
  X(sqlite3_bind_int64) \
  X(sqlite3_bind_null) \
  X(sqlite3_bind_parameter_count) \
  X(sqlite3_bind_parameter_index) \
  X(sqlite3_bind_parameter_name) \
  X(sqlite3_bind_text64) \
  X(sqlite3_busy_handler) \
  X(sqlite3_changes64) \
  X(sqlite3_clear_bindings) \
  X(sqlite3_close_v2) \
  X(sqlite3_column_blob) \
  X(sqlite3_column_bytes) \
  X(sqlite3_column_count) \
  X(sqlite3_column_double) \
  X(sqlite3_column_int64) \
  X(sqlite3_column_name) \
  X(sqlite3_column_text) \
  X(sqlite3_column_type) \
  X(sqlite3_db_filename) \
  X(sqlite3_db_handle) \
  X(sqlite3_db_readonly) \
  X(sqlite3_errmsg) \
  X(sqlite3_errstr) \
  X(sqlite3_extended_errcode) \
  X(sqlite3_extended_result_codes) \
  X(sqlite3_finalize) \
  X(sqlite3_get_autocommit) \
  X(sqlite3_last_insert_rowid) \
  X(sqlite3_libversion) \
  X(sqlite3_open_v2) \
  X(sqlite3_prepare_v2) \
  X(sqlite3_progress_handler) \
  X(sqlite3_reset) \
  X(sqlite3_sql) \
  X(sqlite3_step) \
  X(sqlite3_stmt_busy) \
  X(sqlite3_system_errno) \
  X(sqlite3_file_control) \
  X(sqlite3_db_name) \
  X(sqlite3_total_changes64)
GENEVA_LAZY_LIB(sqlite_lib, "libsqlite3.so.0", NULL, "install libsqlite3-0", NULL,
                SQLITE_FUNCS)
#define sqlite3_bind_blob64 (sqlite_lib_api.sqlite3_bind_blob64)
#define sqlite3_bind_double (sqlite_lib_api.sqlite3_bind_double)
#define sqlite3_bind_int (sqlite_lib_api.sqlite3_bind_int)
#define sqlite3_bind_int64 (sqlite_lib_api.sqlite3_bind_int64)
#define sqlite3_bind_null (sqlite_lib_api.sqlite3_bind_null)
#define sqlite3_bind_parameter_count (sqlite_lib_api.sqlite3_bind_parameter_count)
#define sqlite3_bind_parameter_index (sqlite_lib_api.sqlite3_bind_parameter_index)
#define sqlite3_bind_parameter_name (sqlite_lib_api.sqlite3_bind_parameter_name)
#define sqlite3_bind_text64 (sqlite_lib_api.sqlite3_bind_text64)
#define sqlite3_busy_handler (sqlite_lib_api.sqlite3_busy_handler)
#define sqlite3_changes64 (sqlite_lib_api.sqlite3_changes64)
#define sqlite3_clear_bindings (sqlite_lib_api.sqlite3_clear_bindings)
#define sqlite3_close_v2 (sqlite_lib_api.sqlite3_close_v2)
#define sqlite3_column_blob (sqlite_lib_api.sqlite3_column_blob)
#define sqlite3_column_bytes (sqlite_lib_api.sqlite3_column_bytes)
#define sqlite3_column_count (sqlite_lib_api.sqlite3_column_count)
#define sqlite3_column_double (sqlite_lib_api.sqlite3_column_double)
#define sqlite3_column_int64 (sqlite_lib_api.sqlite3_column_int64)
#define sqlite3_column_name (sqlite_lib_api.sqlite3_column_name)
#define sqlite3_column_text (sqlite_lib_api.sqlite3_column_text)
#define sqlite3_column_type (sqlite_lib_api.sqlite3_column_type)
#define sqlite3_db_filename (sqlite_lib_api.sqlite3_db_filename)
#define sqlite3_db_handle (sqlite_lib_api.sqlite3_db_handle)
#define sqlite3_db_readonly (sqlite_lib_api.sqlite3_db_readonly)
#define sqlite3_errmsg (sqlite_lib_api.sqlite3_errmsg)
#define sqlite3_errstr (sqlite_lib_api.sqlite3_errstr)
#define sqlite3_extended_errcode (sqlite_lib_api.sqlite3_extended_errcode)
#define sqlite3_extended_result_codes (sqlite_lib_api.sqlite3_extended_result_codes)
#define sqlite3_finalize (sqlite_lib_api.sqlite3_finalize)
#define sqlite3_get_autocommit (sqlite_lib_api.sqlite3_get_autocommit)
#define sqlite3_last_insert_rowid (sqlite_lib_api.sqlite3_last_insert_rowid)
#define sqlite3_libversion (sqlite_lib_api.sqlite3_libversion)
#define sqlite3_open_v2 (sqlite_lib_api.sqlite3_open_v2)
#define sqlite3_prepare_v2 (sqlite_lib_api.sqlite3_prepare_v2)
#define sqlite3_progress_handler (sqlite_lib_api.sqlite3_progress_handler)
#define sqlite3_reset (sqlite_lib_api.sqlite3_reset)
#define sqlite3_sql (sqlite_lib_api.sqlite3_sql)
#define sqlite3_step (sqlite_lib_api.sqlite3_step)
#define sqlite3_stmt_busy (sqlite_lib_api.sqlite3_stmt_busy)
#define sqlite3_system_errno (sqlite_lib_api.sqlite3_system_errno)
#define sqlite3_file_control (sqlite_lib_api.sqlite3_file_control)
#define sqlite3_db_name (sqlite_lib_api.sqlite3_db_name)
#define sqlite3_total_changes64 (sqlite_lib_api.sqlite3_total_changes64)
/* }====== */

#define DB_MT "geneva.sqlite.Db"
#define STMT_MT "geneva.sqlite.Stmt"
#define BLOB_MT "geneva.sqlite.Blob"

#define PROGRESS_OPS 1000          /* VM steps between interrupt polls */
#define SQL_SNIPPET 80             /* bytes of SQL quoted in messages */

static const char blob_key = 'b';  /* registry: the blob wrapper metatable */

typedef struct sq_stmt sq_stmt;

typedef struct sq_db {
  geneva_handle h;                 /* born closed (handle.h) */
  sqlite3 *db;                     /* while open */
  sq_stmt *stmts;                  /* live statements (weak: not anchored) */
  int busy_ms;                     /* busy handler gives up after this */
  double busy_start;               /* monotonic ms when the wait began */
} sq_db;

struct sq_stmt {
  geneva_handle h;                 /* born closed (handle.h) */
  sqlite3_stmt *st;                /* while open */
  sq_db *owner;                    /* while linked in owner->stmts */
  sq_stmt *prev, *next;
  int has_row;                     /* last step gave SQLITE_ROW */
  int orphaned;                    /* finalized because its Db closed */
};

/* {====== Result codes and errors */

#define E(x) {x, #x}
static const struct { int rc; const char *name; } ext_names[] = {
  E(SQLITE_ERROR_MISSING_COLLSEQ), E(SQLITE_ERROR_RETRY), E(SQLITE_ERROR_SNAPSHOT), E(SQLITE_IOERR_READ),
  E(SQLITE_IOERR_SHORT_READ), E(SQLITE_IOERR_WRITE), E(SQLITE_IOERR_FSYNC), E(SQLITE_IOERR_DIR_FSYNC),
  E(SQLITE_IOERR_TRUNCATE), E(SQLITE_IOERR_FSTAT), E(SQLITE_IOERR_UNLOCK), E(SQLITE_IOERR_RDLOCK),
  E(SQLITE_IOERR_DELETE), E(SQLITE_IOERR_BLOCKED), E(SQLITE_IOERR_NOMEM), E(SQLITE_IOERR_ACCESS),
  E(SQLITE_IOERR_CHECKRESERVEDLOCK), E(SQLITE_IOERR_LOCK), E(SQLITE_IOERR_CLOSE), E(SQLITE_IOERR_DIR_CLOSE),
  E(SQLITE_IOERR_SHMOPEN), E(SQLITE_IOERR_SHMSIZE), E(SQLITE_IOERR_SHMLOCK), E(SQLITE_IOERR_SHMMAP),
  E(SQLITE_IOERR_SEEK), E(SQLITE_IOERR_DELETE_NOENT), E(SQLITE_IOERR_MMAP), E(SQLITE_IOERR_GETTEMPPATH),
  E(SQLITE_IOERR_CONVPATH), E(SQLITE_IOERR_VNODE), E(SQLITE_IOERR_AUTH), E(SQLITE_IOERR_BEGIN_ATOMIC),
  E(SQLITE_IOERR_COMMIT_ATOMIC), E(SQLITE_IOERR_ROLLBACK_ATOMIC), E(SQLITE_IOERR_DATA),
  E(SQLITE_IOERR_CORRUPTFS), E(SQLITE_LOCKED_SHAREDCACHE), E(SQLITE_LOCKED_VTAB),
  E(SQLITE_BUSY_RECOVERY), E(SQLITE_BUSY_SNAPSHOT), E(SQLITE_BUSY_TIMEOUT),
  E(SQLITE_CANTOPEN_NOTEMPDIR), E(SQLITE_CANTOPEN_ISDIR), E(SQLITE_CANTOPEN_FULLPATH),
  E(SQLITE_CANTOPEN_CONVPATH), E(SQLITE_CANTOPEN_DIRTYWAL), E(SQLITE_CANTOPEN_SYMLINK),
  E(SQLITE_CORRUPT_VTAB), E(SQLITE_CORRUPT_SEQUENCE), E(SQLITE_CORRUPT_INDEX),
  E(SQLITE_READONLY_RECOVERY), E(SQLITE_READONLY_CANTLOCK), E(SQLITE_READONLY_ROLLBACK),
  E(SQLITE_READONLY_DBMOVED), E(SQLITE_READONLY_CANTINIT), E(SQLITE_READONLY_DIRECTORY),
  E(SQLITE_ABORT_ROLLBACK), E(SQLITE_CONSTRAINT_CHECK), E(SQLITE_CONSTRAINT_COMMITHOOK),
  E(SQLITE_CONSTRAINT_FOREIGNKEY), E(SQLITE_CONSTRAINT_FUNCTION), E(SQLITE_CONSTRAINT_NOTNULL),
  E(SQLITE_CONSTRAINT_PRIMARYKEY), E(SQLITE_CONSTRAINT_TRIGGER), E(SQLITE_CONSTRAINT_UNIQUE),
  E(SQLITE_CONSTRAINT_VTAB), E(SQLITE_CONSTRAINT_ROWID), E(SQLITE_CONSTRAINT_PINNED),
  E(SQLITE_CONSTRAINT_DATATYPE), E(SQLITE_NOTICE_RECOVER_WAL), E(SQLITE_NOTICE_RECOVER_ROLLBACK),
  E(SQLITE_WARNING_AUTOINDEX), E(SQLITE_AUTH_USER),
};
static const char *const primary_names[] = {
  "SQLITE_OK", "SQLITE_ERROR", "SQLITE_INTERNAL", "SQLITE_PERM", "SQLITE_ABORT",
  "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_NOMEM", "SQLITE_READONLY",
  "SQLITE_INTERRUPT", "SQLITE_IOERR", "SQLITE_CORRUPT", "SQLITE_NOTFOUND",
  "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_PROTOCOL", "SQLITE_EMPTY",
  "SQLITE_SCHEMA", "SQLITE_TOOBIG", "SQLITE_CONSTRAINT", "SQLITE_MISMATCH",
  "SQLITE_MISUSE", "SQLITE_NOLFS", "SQLITE_AUTH", "SQLITE_FORMAT",
  "SQLITE_RANGE", "SQLITE_NOTADB", "SQLITE_NOTICE", "SQLITE_WARNING",
};
#undef E

static const char *primary_name(int rc) {
  int p = rc & 0xff;
  if (p >= 0 && p < (int)(sizeof primary_names / sizeof *primary_names))
    return primary_names[p];
  return "SQLITE_ERROR";
}

static const char *extended_name(int rc) {
  size_t i;
  for (i = 0; i < sizeof ext_names / sizeof *ext_names; i++)
    if (ext_names[i].rc == rc) return ext_names[i].name;
  return primary_name(rc);
}

/* An error captured into C memory, so the SQLite object it came from can be
** released before anything that may raise (pushing strings) runs. */
typedef struct {
  int rc;                          /* extended result code */
  char msg[512];
} sq_err;

/* Appends ' (in "<first SQL_SNIPPET bytes of sql, blanks squeezed>")'. */
static void err_append_sql(sq_err *e, const char *sql) {
  char snip[SQL_SNIPPET + 4];
  size_t n = 0, used;
  int blank = 0;
  if (!sql) return;
  while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r') sql++;
  for (; *sql && n < SQL_SNIPPET; sql++) {
    char c = *sql;
    if (c == '\n' || c == '\t' || c == '\r' || c == ' ') {
      if (!blank) snip[n++] = ' ';
      blank = 1;
    } else {
      snip[n++] = c;
      blank = 0;
    }
  }
  if (*sql) {   /* truncated: do not cut a UTF-8 sequence in two */
    while (n > 0 && ((unsigned char)snip[n - 1] & 0xC0) == 0x80) n--;
    if (n > 0 && ((unsigned char)snip[n - 1] & 0xC0) == 0xC0) n--;
    memcpy(snip + n, "...", 3);
    n += 3;
  } else {
    while (n > 0 && snip[n - 1] == ' ') n--;
  }
  snip[n] = '\0';
  used = strlen(e->msg);
  snprintf(e->msg + used, sizeof e->msg - used, " (in \"%s\")", snip);
}

/* Appends ": <strerror>" for an I/O failure ("disk I/O error" alone does
** not say "File too large" or "No space left on device"). The connection's
** system errno is often 0 by then; the unix VFS keeps the failed file's
** errno, so each attached database's is asked for next. */
static void err_append_errno(sq_err *e, sqlite3 *db) {
  int prim = e->rc & 0xff, sys, i;
  const char *name;
  size_t used;
  if (!db || (prim != SQLITE_IOERR && prim != SQLITE_FULL && prim != SQLITE_CANTOPEN)) return;
  sys = sqlite3_system_errno(db);
  for (i = 0; sys <= 0 && (name = sqlite3_db_name(db, i)) != NULL; i++) {
    int last = 0;
    if (sqlite3_file_control(db, name, SQLITE_FCNTL_LAST_ERRNO, &last) == SQLITE_OK) sys = last;
  }
  if (sys <= 0) return;
  used = strlen(e->msg);
  snprintf(e->msg + used, sizeof e->msg - used, ": %s", strerror(sys));
}

/* Captures rc and the connection's message (or sqlite3_errstr). */
static void err_capture(sq_err *e, sqlite3 *db, int rc, const char *sql) {
  const char *m = NULL;
  if (db && (sqlite3_extended_errcode(db) & 0xff) == (rc & 0xff)) {
    rc = sqlite3_extended_errcode(db);
    m = sqlite3_errmsg(db);
  }
  e->rc = rc;
  snprintf(e->msg, sizeof e->msg, "%s", m ? m : sqlite3_errstr(rc));
  err_append_errno(e, db);
  err_append_sql(e, sql);
}

static int is_interrupt(int rc) {
  return (rc & 0xff) == SQLITE_INTERRUPT ||
         ((rc & 0xff) == SQLITE_BUSY && geneva_interrupted());
}

/* Pushes nil, msg, code, extcode (4) or nil, "interrupted", "EINTR" (3). */
static int err_push(lua_State *L, const sq_err *e) {
  if (is_interrupt(e->rc)) return geneva_fail(L, "EINTR", "interrupted");
  lua_pushnil(L);
  lua_pushstring(L, e->msg);
  lua_pushstring(L, primary_name(e->rc));
  lua_pushstring(L, extended_name(e->rc));
  return 4;
}

/* }====== */

/* {====== Handles: release, checks */

static void stmt_unlink(sq_stmt *s) {
  sq_db *d = s->owner;
  if (!d) return;
  if (s->prev) s->prev->next = s->next; else d->stmts = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = NULL;
  s->owner = NULL;
}

/* The release of a statement (close, __close, __gc, its Db's release). */
static int stmt_release(void *p) {
  sq_stmt *s = (sq_stmt *)p;
  sqlite3_stmt *st = s->st;
  stmt_unlink(s);
  s->st = NULL;
  s->has_row = 0;
  sqlite3_finalize(st);            /* its result repeats the last step's */
  return 0;
}

static const char *stmt_closed_why(const void *p) {
  return ((const sq_stmt *)p)->orphaned ? "(its " DB_MT " was closed)" : NULL;
}

static const geneva_class stmt_class = {
  STMT_MT, NULL, NULL, stmt_release, NULL, stmt_closed_why, NULL
};

/* The release of a connection (close, __close, __gc, ledger teardown):
** finalizes its statements, then closes. Never raises nor calls Lua. */
static int db_release(void *p) {
  sq_db *d = (sq_db *)p;
  sqlite3 *db = d->db;
  d->db = NULL;
  while (d->stmts) {
    sq_stmt *s = d->stmts;
    s->orphaned = 1;
    if (geneva_handle_is_open(s)) geneva_handle_release(s);   /* unlinks it */
    else stmt_unlink(s);
  }
  sqlite3_close_v2(db);
  return 0;
}

static void db_describe(lua_State *L, void *p, int idx) {
  const char *f = sqlite3_db_filename(((sq_db *)p)->db, "main");
  (void)idx;
  lua_pushfstring(L, "'%s' (%p)", f && *f ? f : ":memory:", p);
}

static const geneva_class db_class = {
  DB_MT, NULL, "sqlite", db_release, db_describe, NULL, NULL
};

static sq_db *check_db(lua_State *L, int i) {
  return (sq_db *)geneva_handle_check(L, i, &db_class);
}

static sq_stmt *check_stmt(lua_State *L, int i) {
  return (sq_stmt *)geneva_handle_check(L, i, &stmt_class);
}

static void stmt_reset(sq_stmt *s) {
  sqlite3_reset(s->st);            /* result repeats the last step's error */
  s->has_row = 0;
}

/* }====== */

/* {====== Connection callbacks */

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Nonzero aborts the running statement with SQLITE_INTERRUPT. */
static int progress_cb(void *ud) {
  (void)ud;
  return geneva_interrupted() != 0;
}

/* Waits in short sleeps (so an interrupt is seen within ~25 ms) until
** busy_ms have passed since this lock wait began. */
static int busy_cb(void *ud, int count) {
  sq_db *d = (sq_db *)ud;
  double left, now = now_ms();
  struct timespec ts;
  long ms;
  if (geneva_interrupted()) return 0;
  if (count == 0) d->busy_start = now;
  left = (double)d->busy_ms - (now - d->busy_start);
  if (left <= 0) return 0;
  ms = count < 4 ? 1L << count : 25;
  if ((double)ms > left) ms = (long)left + 1;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);            /* EINTR is fine: we poll again */
  return 1;
}

/* }====== */

/* {====== Values */

static int is_blob(lua_State *L, int idx) {
  int eq;
  if (!lua_getmetatable(L, idx)) return 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &blob_key);
  eq = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return eq;
}

/*
** Binds the value at idx to parameter i. Strings are copied unless keep is
** set (the caller then guarantees they stay anchored until the bindings are
** cleared). Returns an SQLite code, or -1 for a type that cannot be bound.
** Never raises (but for memory errors).
*/
static int bind_value(lua_State *L, sqlite3_stmt *st, int i, int idx, int keep) {
  size_t len;
  const char *p;
  int rc;
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return sqlite3_bind_null(st, i);
    case LUA_TLIGHTUSERDATA:       /* sqlite.null (= cjson.null) */
      if (lua_touserdata(L, idx) != NULL) return -1;
      return sqlite3_bind_null(st, i);
    case LUA_TUSERDATA:            /* geneva.json's null, if it is loaded */
      if (!lua_getmetatable(L, idx)) return -1;
      luaL_getmetatable(L, "geneva.json.null");
      rc = lua_rawequal(L, -1, -2);
      lua_pop(L, 2);
      return rc ? sqlite3_bind_null(st, i) : -1;
    case LUA_TBOOLEAN:
      return sqlite3_bind_int(st, i, lua_toboolean(L, idx));
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx))
        return sqlite3_bind_int64(st, i, (sqlite3_int64)lua_tointeger(L, idx));
      return sqlite3_bind_double(st, i, (double)lua_tonumber(L, idx));
    case LUA_TSTRING:
      p = lua_tolstring(L, idx, &len);
      return sqlite3_bind_text64(st, i, p, (sqlite3_uint64)len,
                                 keep ? SQLITE_STATIC : SQLITE_TRANSIENT, SQLITE_UTF8);
    case LUA_TTABLE:
      if (!is_blob(L, idx)) return -1;
      if (lua_rawgeti(L, idx, 1) != LUA_TSTRING) { lua_pop(L, 1); return -1; }
      p = lua_tolstring(L, -1, &len);   /* anchored by the wrapper table */
      rc = sqlite3_bind_blob64(st, i, p, (sqlite3_uint64)len,
                               keep ? SQLITE_STATIC : SQLITE_TRANSIENT);
      lua_pop(L, 1);
      return rc;
    default:
      return -1;
  }
}

/* Pushes the message for a failed bind_value of the value at idx. */
static const char *push_bind_error(lua_State *L, sqlite3_stmt *st, int rc, int i, int idx) {
  const char *name = sqlite3_bind_parameter_name(st, i);
  if (rc == -1)
    return lua_pushfstring(L, "cannot bind a %s value to parameter %d%s%s%s",
                           luaL_typename(L, idx), i, name ? " ('" : "",
                           name ? name : "", name ? "')" : "");
  return lua_pushfstring(L, "cannot bind parameter %d: %s", i, sqlite3_errstr(rc));
}

/* Raises for a failed bind_value; the caller has already cleaned up. */
static int bind_raise(lua_State *L, sqlite3_stmt *st, int rc, int i, int idx) {
  idx = lua_absindex(L, idx);
  push_bind_error(L, st, rc, i, idx);
  return lua_error(L);
}

/* Like bind_raise, naming the batch row. */
static int bind_raise_row(lua_State *L, sqlite3_stmt *st, int rc, int i, int idx,
                          lua_Integer row) {
  idx = lua_absindex(L, idx);
  lua_pushfstring(L, "row %I: %s", row, push_bind_error(L, st, rc, i, idx));
  return lua_error(L);
}

/* Pushes column c of the current row; NULL as nil or as sqlite.null. */
static void push_column(lua_State *L, sqlite3_stmt *st, int c, int null_sentinel) {
  const void *p;
  switch (sqlite3_column_type(st, c)) {
    case SQLITE_INTEGER:
      lua_pushinteger(L, (lua_Integer)sqlite3_column_int64(st, c));
      break;
    case SQLITE_FLOAT:
      lua_pushnumber(L, (lua_Number)sqlite3_column_double(st, c));
      break;
    case SQLITE_TEXT:
      p = sqlite3_column_text(st, c);
      lua_pushlstring(L, p ? (const char *)p : "", (size_t)sqlite3_column_bytes(st, c));
      break;
    case SQLITE_BLOB:
      p = sqlite3_column_blob(st, c);
      lua_pushlstring(L, p ? (const char *)p : "", (size_t)sqlite3_column_bytes(st, c));
      break;
    default:
      if (null_sentinel) lua_pushlightuserdata(L, NULL);
      else lua_pushnil(L);
      break;
  }
}

/* Pushes the current row as an array (sqlite.null for NULL), filling the
** table at reuse when reuse != 0. */
static void push_row(lua_State *L, sqlite3_stmt *st, int reuse) {
  int c, n = sqlite3_column_count(st);
  if (reuse) lua_pushvalue(L, reuse);
  else lua_createtable(L, n, 0);
  for (c = 0; c < n; c++) {
    push_column(L, st, c, 1);
    lua_rawseti(L, -2, c + 1);
  }
}

/* Pushes the current row as {name = value}; NULL columns are absent. */
static void push_named_row(lua_State *L, sqlite3_stmt *st) {
  int c, n = sqlite3_column_count(st);
  lua_createtable(L, 0, n);
  for (c = 0; c < n; c++) {
    if (sqlite3_column_type(st, c) == SQLITE_NULL) continue;
    push_column(L, st, c, 0);
    lua_setfield(L, -2, sqlite3_column_name(st, c));
  }
}

/* }====== */

/* {====== Module functions */

/*
** core.open(path, readonly, create, busy_ms) -> Db | nil, msg, code, extcode
** path may be a file: URI. Raises on bad arguments only. The Db owns the
** connection and is registered in the ledger.
*/
static int sqlite_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int readonly = lua_toboolean(L, 2);
  int create = lua_toboolean(L, 3);
  lua_Integer busy = luaL_optinteger(L, 4, 5000);
  int flags = SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX;
  sqlite3 *db = NULL;
  sq_db *d;
  int rc;
  luaL_argcheck(L, busy >= 0 && busy <= INT_MAX, 4, "busy timeout out of range");
  flags |= readonly ? SQLITE_OPEN_READONLY
                    : SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
  d = (sq_db *)geneva_handle_new(L, &db_class, sizeof *d, 0);   /* born closed */
  rc = sqlite3_open_v2(path, &db, flags, NULL);
  if (rc != SQLITE_OK) {
    sq_err e;
    err_capture(&e, db, rc, NULL);
    sqlite3_close_v2(db);          /* a handle comes back even on failure */
    snprintf(e.msg + strlen(e.msg), sizeof e.msg - strlen(e.msg), ": %s", path);
    return err_push(L, &e);
  }
  d->db = db;
  d->busy_ms = (int)busy;
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_handler(db, busy_cb, d);
  sqlite3_progress_handler(db, PROGRESS_OPS, progress_cb, NULL);
  geneva_handle_open(L, d);
  return 1;
}

/* core.blob(s) -> wrapper that binds s as a BLOB. Raises unless s is a string. */
static int sqlite_blob(lua_State *L) {
  luaL_checktype(L, 1, LUA_TSTRING);
  lua_createtable(L, 1, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &blob_key);
  lua_setmetatable(L, -2);
  return 1;
}

/* core.is_blob(v) -> boolean */
static int sqlite_is_blob(lua_State *L) {
  lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && is_blob(L, 1));
  return 1;
}

/* core.version() -> "3.40.1" */
static int sqlite_version(lua_State *L) {
  lua_pushstring(L, sqlite3_libversion());
  return 1;
}

/* }====== */

/* {====== Db methods */

/* db:close() -> true (finalizes the Db's statements first), db:is_closed(),
** __close, __gc, __tostring "geneva.sqlite.Db '<file>' (0x...)": handle.h */

/*
** db:exec(sql) -> true | nil, msg, code, extcode
** Runs every statement in sql in order, discarding rows; stops at the first
** failure (earlier statements stay done). Raises on misuse only.
*/
static int db_m_exec(lua_State *L) {
  sq_db *d = check_db(L, 1);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  const char *p = sql, *end = sql + len;
  luaL_argcheck(L, len < INT_MAX, 2, "SQL too long");
  while (p < end) {
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v2(d->db, p, (int)(end - p) + 1, &st, &tail);
    if (rc != SQLITE_OK) {
      sq_err e;
      err_capture(&e, d->db, rc, p);
      return err_push(L, &e);
    }
    if (!st) break;                /* only blanks or comments were left */
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {}
    if (rc != SQLITE_DONE) {
      sq_err e;
      err_capture(&e, d->db, rc, sqlite3_sql(st));
      sqlite3_finalize(st);
      return err_push(L, &e);
    }
    sqlite3_finalize(st);
    p = tail;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* Nonzero when tail holds another statement (not just blanks/comments). */
static int has_more_sql(sqlite3 *db, const char *tail) {
  sqlite3_stmt *st = NULL;
  int rc;
  while (*tail == ' ' || *tail == '\t' || *tail == '\n' || *tail == '\r' || *tail == ';')
    tail++;
  if (!*tail) return 0;
  rc = sqlite3_prepare_v2(db, tail, -1, &st, NULL);
  sqlite3_finalize(st);
  return rc != SQLITE_OK || st != NULL;
}

/*
** db:prepare(sql) -> Stmt | nil, msg, code, extcode
** sql must hold exactly one statement (raises otherwise). The Stmt holds a
** strong reference to the Db; the Db finalizes it when it closes first.
*/
static int db_m_prepare(lua_State *L) {
  sq_db *d = check_db(L, 1);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  sqlite3_stmt *st = NULL;
  const char *tail = NULL;
  sq_stmt *s;
  int rc;
  luaL_argcheck(L, len < INT_MAX, 2, "SQL too long");
  s = (sq_stmt *)geneva_handle_new(L, &stmt_class, sizeof *s, 1);   /* born closed */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);     /* [db, sql, stmt]: stmt keeps db alive */
  rc = sqlite3_prepare_v2(d->db, sql, (int)len + 1, &st, &tail);
  if (rc != SQLITE_OK) {
    sq_err e;
    err_capture(&e, d->db, rc, sql);
    return err_push(L, &e);
  }
  if (!st) return luaL_argerror(L, 2, "no SQL statement");
  if (has_more_sql(d->db, tail)) {
    sqlite3_finalize(st);
    return luaL_argerror(L, 2, "more than one SQL statement (use exec)");
  }
  s->st = st;
  s->owner = d;
  s->next = d->stmts;
  if (d->stmts) d->stmts->prev = s;
  d->stmts = s;
  geneva_handle_open(L, s);
  return 1;
}

/* db:changes() -> rows changed by the last INSERT/UPDATE/DELETE */
static int db_m_changes(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)sqlite3_changes64(check_db(L, 1)->db));
  return 1;
}

/* db:total_changes() -> rows changed since the Db was opened */
static int db_m_total_changes(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)sqlite3_total_changes64(check_db(L, 1)->db));
  return 1;
}

/* db:last_insert_rowid() -> integer */
static int db_m_last_insert_rowid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)sqlite3_last_insert_rowid(check_db(L, 1)->db));
  return 1;
}

/* db:busy_timeout([ms]) -> previous ms. How long a locked Db is retried. */
static int db_m_busy_timeout(lua_State *L) {
  sq_db *d = check_db(L, 1);
  int old = d->busy_ms;
  if (!lua_isnoneornil(L, 2)) {
    lua_Integer ms = luaL_checkinteger(L, 2);
    luaL_argcheck(L, ms >= 0 && ms <= INT_MAX, 2, "busy timeout out of range");
    d->busy_ms = (int)ms;
  }
  lua_pushinteger(L, old);
  return 1;
}

/* db:in_transaction() -> boolean (false in autocommit mode) */
static int db_m_in_transaction(lua_State *L) {
  lua_pushboolean(L, !sqlite3_get_autocommit(check_db(L, 1)->db));
  return 1;
}

/* db:filename([schema "main"]) -> path, or nil for :memory:/temp/unknown */
static int db_m_filename(lua_State *L) {
  sq_db *d = check_db(L, 1);
  const char *f = sqlite3_db_filename(d->db, luaL_optstring(L, 2, "main"));
  if (f && *f) lua_pushstring(L, f); else lua_pushnil(L);
  return 1;
}

/* db:readonly([schema "main"]) -> boolean; raises for an unknown schema */
static int db_m_readonly(lua_State *L) {
  sq_db *d = check_db(L, 1);
  const char *schema = luaL_optstring(L, 2, "main");
  int r = sqlite3_db_readonly(d->db, schema);
  if (r < 0) return luaL_argerror(L, 2, "no such database");
  lua_pushboolean(L, r);
  return 1;
}

/* }====== */

/* {====== Stmt methods */

/* stmt:close() / stmt:finalize() -> true: finalizes now, idempotent.
** stmt:is_closed(), __close, __gc, __tostring: handle.h */
static int stmt_m_finalize(lua_State *L) {
  return geneva_handle_close(L, 1, &stmt_class);
}

/* stmt:sql() -> the SQL text it was prepared from */
static int stmt_m_sql(lua_State *L) {
  lua_pushstring(L, sqlite3_sql(check_stmt(L, 1)->st));
  return 1;
}

/* The parameter index named by the value at arg (integer, "name", ":name",
** "@name", "$name"). Raises when there is none. */
static int param_index(lua_State *L, sqlite3_stmt *st, int arg) {
  int n = sqlite3_bind_parameter_count(st), i = 0;
  if (lua_type(L, arg) == LUA_TNUMBER) {
    lua_Integer k = luaL_checkinteger(L, arg);
    if (k < 1 || k > n)
      return luaL_argerror(L, arg, lua_pushfstring(L, "parameter index %I out of range (statement has %d)", k, n));
    return (int)k;
  } else {
    const char *name = luaL_checkstring(L, arg);
    if (name[0] && strchr(":@$?", name[0])) {
      i = sqlite3_bind_parameter_index(st, name);
    } else {
      static const char prefixes[] = ":@$";
      int k;
      for (k = 0; k < 3 && !i; k++) {
        i = sqlite3_bind_parameter_index(st, lua_pushfstring(L, "%c%s", prefixes[k], name));
        lua_pop(L, 1);
      }
    }
    if (!i) return luaL_argerror(L, arg, lua_pushfstring(L, "no parameter named '%s'", name));
    return i;
  }
}

/* stmt:bind(i_or_name, value) -> stmt. Resets a running statement first.
** Raises for an unknown parameter or a value that cannot be bound. */
static int stmt_m_bind(lua_State *L) {
  sq_stmt *s = check_stmt(L, 1);
  int i = param_index(L, s->st, 2), rc;
  luaL_checkany(L, 3);
  if (sqlite3_stmt_busy(s->st)) stmt_reset(s);
  rc = bind_value(L, s->st, i, 3, 0);
  if (rc != SQLITE_OK) return bind_raise(L, s->st, rc, i, 3);
  lua_settop(L, 1);
  return 1;
}

/*
** stmt:bind_all(values) / stmt:bind_all(v1, v2, ...) -> stmt
** Resets the statement, then binds every parameter: from an array (missing
** entries bind NULL), from a {name = value} table (a missing name raises:
** use sqlite.null for NULL), or from the arguments. Raises on misuse.
*/
static int stmt_m_bind_all(lua_State *L) {
  sq_stmt *s = check_stmt(L, 1);
  sqlite3_stmt *st = s->st;
  int nargs = lua_gettop(L) - 1, np = sqlite3_bind_parameter_count(st), i, rc;
  stmt_reset(s);
  if (nargs == 1 && lua_type(L, 2) == LUA_TTABLE && !is_blob(L, 2)) {
    int positional = lua_rawgeti(L, 2, 1) != LUA_TNIL ||
                     (np > 0 && sqlite3_bind_parameter_name(st, 1) == NULL);
    lua_pop(L, 1);
    if (positional) {
      lua_Unsigned len = lua_rawlen(L, 2);
      if (len > (lua_Unsigned)np)
        return luaL_error(L, "%d values for %d parameters", (int)len, np);
      for (i = 1; i <= np; i++) {
        lua_rawgeti(L, 2, i);
        if ((rc = bind_value(L, st, i, -1, 0)) != SQLITE_OK) return bind_raise(L, st, rc, i, -1);
        lua_pop(L, 1);
      }
    } else {
      for (i = 1; i <= np; i++) {
        const char *pname = sqlite3_bind_parameter_name(st, i);
        if (!pname)
          return luaL_error(L, "parameter %d has no name (bind an array)", i);
        if (pname[0] == '?') lua_geti(L, 2, (lua_Integer)strtoll(pname + 1, NULL, 10));
        else lua_getfield(L, 2, pname + 1);
        if (lua_isnil(L, -1))
          return luaL_error(L, "missing value for parameter '%s' (use sqlite.null for NULL)", pname);
        if ((rc = bind_value(L, st, i, -1, 0)) != SQLITE_OK) return bind_raise(L, st, rc, i, -1);
        lua_pop(L, 1);
      }
    }
  } else {
    if (nargs > np) return luaL_error(L, "%d values for %d parameters", nargs, np);
    for (i = 1; i <= np; i++) {
      rc = i <= nargs ? bind_value(L, st, i, i + 1, 0) : sqlite3_bind_null(st, i);
      if (rc != SQLITE_OK) return bind_raise(L, st, rc, i, i + 1);
    }
  }
  lua_settop(L, 1);
  return 1;
}

/* stmt:clear() -> stmt: every parameter back to NULL */
static int stmt_m_clear(lua_State *L) {
  sq_stmt *s = check_stmt(L, 1);
  stmt_reset(s);
  sqlite3_clear_bindings(s->st);
  lua_settop(L, 1);
  return 1;
}

/* stmt:reset() -> stmt: ready to step again from the start, bindings kept */
static int stmt_m_reset(lua_State *L) {
  stmt_reset(check_stmt(L, 1));
  lua_settop(L, 1);
  return 1;
}

/*
** stmt:step() -> "row" | "done" | nil, msg, code, extcode
** After an error the statement is reset (ready to run again).
*/
static int stmt_m_step(lua_State *L) {
  sq_stmt *s = check_stmt(L, 1);
  int rc = sqlite3_step(s->st);
  if (rc == SQLITE_ROW) { s->has_row = 1; lua_pushliteral(L, "row"); return 1; }
  s->has_row = 0;
  if (rc == SQLITE_DONE) { lua_pushliteral(L, "done"); return 1; }
  {
    sq_err e;
    err_capture(&e, sqlite3_db_handle(s->st), rc, sqlite3_sql(s->st));
    sqlite3_reset(s->st);
    return err_push(L, &e);
  }
}

static sq_stmt *check_row(lua_State *L) {
  sq_stmt *s = check_stmt(L, 1);
  if (!s->has_row) luaL_error(L, "statement has no current row (step first)");
  return s;
}

/* stmt:row([t]) -> array of the current row's values, sqlite.null for NULL;
** fills and returns t when given. Raises when there is no current row. */
static int stmt_m_row(lua_State *L) {
  sq_stmt *s = check_row(L);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  push_row(L, s->st, lua_istable(L, 2) ? 2 : 0);
  return 1;
}

/* stmt:named_row() -> {column = value}, NULL columns absent */
static int stmt_m_named_row(lua_State *L) {
  push_named_row(L, check_row(L)->st);
  return 1;
}

/* stmt:values() -> v1, v2, ... of the current row (nil for NULL) */
static int stmt_m_values(lua_State *L) {
  sq_stmt *s = check_row(L);
  int c, n = sqlite3_column_count(s->st);
  luaL_checkstack(L, n, "too many columns");
  for (c = 0; c < n; c++) push_column(L, s->st, c, 0);
  return n;
}

/* stmt:get(i) -> value of column i (1-based) of the current row, nil for NULL */
static int stmt_m_get(lua_State *L) {
  sq_stmt *s = check_row(L);
  lua_Integer i = luaL_checkinteger(L, 2);
  int n = sqlite3_column_count(s->st);
  luaL_argcheck(L, i >= 1 && i <= n, 2, "column index out of range");
  push_column(L, s->st, (int)i - 1, 0);
  return 1;
}

/* stmt:columns() -> array of column names (available before any step) */
static int stmt_m_columns(lua_State *L) {
  sq_stmt *s = check_stmt(L, 1);
  int c, n = sqlite3_column_count(s->st);
  lua_createtable(L, n, 0);
  for (c = 0; c < n; c++) {
    lua_pushstring(L, sqlite3_column_name(s->st, c));
    lua_rawseti(L, -2, c + 1);
  }
  return 1;
}

/* stmt:param_count() -> number of parameters */
static int stmt_m_param_count(lua_State *L) {
  lua_pushinteger(L, sqlite3_bind_parameter_count(check_stmt(L, 1)->st));
  return 1;
}

/* Ends a batch: drops borrowed (SQLITE_STATIC) strings, resets. */
static void batch_end(sq_stmt *s) {
  stmt_reset(s);
  sqlite3_clear_bindings(s->st);
}

/* Steps once for a batch row; on failure fills e and ends the batch. */
static int batch_step(sq_stmt *s, lua_Integer row, sq_err *e) {
  int rc = sqlite3_step(s->st);
  if (rc == SQLITE_DONE || rc == SQLITE_ROW) {
    sqlite3_reset(s->st);
    return 1;
  }
  err_capture(e, sqlite3_db_handle(s->st), rc, sqlite3_sql(s->st));
  snprintf(e->msg + strlen(e->msg), sizeof e->msg - strlen(e->msg),
           " at row %lld", (long long)row);
  batch_end(s);
  return 0;
}

/*
** stmt:insert_many(rows [, n]) -> n | nil, msg, code, extcode
** For i = 1..n (default #rows): binds the array rows[i] to the parameters
** (missing entries bind NULL) and steps once. Runs in the caller's
** transaction: on failure the rows before i stay done. Strings are bound
** without copying (rows keeps them alive). Raises on a row that is not a
** table, has too many values, or holds a value that cannot be bound.
*/
static int stmt_m_insert_many(lua_State *L) {
  sq_stmt *s = check_stmt(L, 1);
  sqlite3_stmt *st = s->st;
  int np = sqlite3_bind_parameter_count(st), j, rc;
  lua_Integer i, n;
  sq_err e;
  luaL_checktype(L, 2, LUA_TTABLE);
  n = luaL_optinteger(L, 3, (lua_Integer)lua_rawlen(L, 2));
  lua_settop(L, 2);
  stmt_reset(s);
  for (i = 1; i <= n; i++) {
    if ((i & 1023) == 0 && geneva_interrupted()) {
      batch_end(s);
      return geneva_fail(L, "EINTR", "interrupted");
    }
    if (lua_rawgeti(L, 2, i) != LUA_TTABLE) {   /* [stmt, rows, row] */
      batch_end(s);
      return luaL_error(L, "row %I is not a table (got %s)", i, luaL_typename(L, 3));
    }
    if (lua_rawlen(L, 3) > (lua_Unsigned)np) {
      batch_end(s);
      return luaL_error(L, "row %I has %d values for %d parameters", i,
                        (int)lua_rawlen(L, 3), np);
    }
    for (j = 1; j <= np; j++) {
      lua_rawgeti(L, 3, j);
      rc = bind_value(L, st, j, 4, 1);
      if (rc != SQLITE_OK) {
        batch_end(s);
        return bind_raise_row(L, st, rc, j, 4, i);
      }
      lua_pop(L, 1);
    }
    if (!batch_step(s, i, &e)) return err_push(L, &e);
    lua_pop(L, 1);
  }
  batch_end(s);
  lua_pushinteger(L, n);
  return 1;
}

/*
** stmt:insert_columns(cols [, n]) -> n | nil, msg, code, extcode
** Column-wise insert_many: cols holds one array per parameter; row i binds
** cols[1][i], cols[2][i], ... (nil binds NULL, so columns may have holes).
** n defaults to #cols[1]. Same transaction and raise rules as insert_many.
*/
static int stmt_m_insert_columns(lua_State *L) {
  sq_stmt *s = check_stmt(L, 1);
  sqlite3_stmt *st = s->st;
  int np = sqlite3_bind_parameter_count(st), j, rc;
  lua_Integer i, n;
  sq_err e;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (lua_rawlen(L, 2) != (lua_Unsigned)np)
    return luaL_argerror(L, 2, lua_pushfstring(L, "%d columns for %d parameters",
                                               (int)lua_rawlen(L, 2), np));
  lua_settop(L, 3);
  luaL_checkstack(L, np + 2, "too many parameters");
  for (j = 1; j <= np; j++)        /* [stmt, cols, n, col1 .. colnp] */
    if (lua_rawgeti(L, 2, j) != LUA_TTABLE)
      return luaL_argerror(L, 2, lua_pushfstring(L, "column %d is not a table", j));
  n = np == 0 ? luaL_checkinteger(L, 3)
              : luaL_optinteger(L, 3, (lua_Integer)lua_rawlen(L, 4));
  stmt_reset(s);
  for (i = 1; i <= n; i++) {
    if ((i & 1023) == 0 && geneva_interrupted()) {
      batch_end(s);
      return geneva_fail(L, "EINTR", "interrupted");
    }
    for (j = 1; j <= np; j++) {
      lua_rawgeti(L, 3 + j, i);
      rc = bind_value(L, st, j, -1, 1);
      if (rc != SQLITE_OK) {
        batch_end(s);
        return bind_raise_row(L, st, rc, j, -1, i);
      }
      lua_pop(L, 1);
    }
    if (!batch_step(s, i, &e)) return err_push(L, &e);
  }
  batch_end(s);
  lua_pushinteger(L, n);
  return 1;
}

/*
** stmt:insert_packed(rows, n [, pos = 1]) -> next pos | nil, msg, code, extcode
** insert_many for packed rows (host/rowpack.h; geneva.csv.core makes them):
** binds the n rows that start at byte pos of the string rows, one cell per
** parameter, and steps once per row; returns the position after them.
** TEXT and BLOB cells are bound without copying (rows is alive meanwhile).
** Same transaction and raise rules as insert_many; a malformed chunk raises.
*/
static int stmt_m_insert_packed(lua_State *L) {
  sq_stmt *s = check_stmt(L, 1);
  sqlite3_stmt *st = s->st;
  int np = sqlite3_bind_parameter_count(st), j, rc = SQLITE_OK;
  size_t len, pos;
  const char *p = luaL_checklstring(L, 2, &len);
  lua_Integer i, n = luaL_checkinteger(L, 3), at = luaL_optinteger(L, 4, 1);
  sq_err e;
  luaL_argcheck(L, n >= 0, 3, "must be >= 0");
  luaL_argcheck(L, at >= 1 && (lua_Unsigned)at <= (lua_Unsigned)len + 1, 4, "out of range");
  pos = (size_t)at - 1;
  stmt_reset(s);
  for (i = 1; i <= n; i++) {
    if ((i & 1023) == 0 && geneva_interrupted()) {
      batch_end(s);
      return geneva_fail(L, "EINTR", "interrupted");
    }
    for (j = 1; j <= np; j++) {
      rowpack_cell c;
      if (!rowpack_next(p, len, &pos, &c)) {
        batch_end(s);
        return luaL_error(L, "insert_packed: malformed rows at byte %I (row %I, cell %d)",
                          (lua_Integer)pos + 1, (lua_Integer)i, j);
      }
      switch (c.tag) {
        case ROWPACK_NULL: rc = sqlite3_bind_null(st, j); break;
        case ROWPACK_INT: rc = sqlite3_bind_int64(st, j, (sqlite3_int64)c.i); break;
        case ROWPACK_FLOAT: rc = sqlite3_bind_double(st, j, c.d); break;
        case ROWPACK_TEXT:
          rc = sqlite3_bind_text64(st, j, c.s, c.n, SQLITE_STATIC, SQLITE_UTF8);
          break;
        default:
          rc = sqlite3_bind_blob64(st, j, c.s, c.n, SQLITE_STATIC);
      }
      if (rc != SQLITE_OK) {
        batch_end(s);
        return luaL_error(L, "insert_packed: cannot bind parameter %d of row %d: %s", j, (int)i,
                          sqlite3_errstr(rc));
      }
    }
    if (!batch_step(s, i, &e)) return err_push(L, &e);
  }
  batch_end(s);
  lua_pushinteger(L, (lua_Integer)pos + 1);
  return 1;
}

/*
** stmt:fetch_columns(cols, max) -> n | nil, msg, code, extcode
** The read side of insert_columns: steps up to max rows and stores column j
** of the k-th of them at cols[j][k] (sqlite.null for NULL, so the arrays
** have no holes); cols holds one table per result column. n < max means the
** statement is done (a further call starts it over, as step() does).
** Entries after n are left as they were. One call per
** chunk instead of step() + row() per row: no row tables, no per-row method
** dispatch. Raises when cols does not hold a table per column or max < 0.
*/
static int stmt_m_fetch_columns(lua_State *L) {
  sq_stmt *s = check_stmt(L, 1);
  sqlite3_stmt *st = s->st;
  int nc = sqlite3_column_count(st), j, rc;
  lua_Integer k, max;
  luaL_checktype(L, 2, LUA_TTABLE);
  max = luaL_checkinteger(L, 3);
  luaL_argcheck(L, max >= 0, 3, "must be >= 0");
  lua_settop(L, 2);
  luaL_checkstack(L, nc + 2, "too many columns");
  for (j = 1; j <= nc; j++)        /* [stmt, cols, col1 .. colnc] */
    if (lua_rawgeti(L, 2, j) != LUA_TTABLE)
      return luaL_argerror(L, 2, lua_pushfstring(L, "column %d is not a table", j));
  for (k = 1; k <= max; k++) {
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
      s->has_row = 0;
      if (rc == SQLITE_DONE) break;
      {
        sq_err e;
        err_capture(&e, sqlite3_db_handle(st), rc, sqlite3_sql(st));
        sqlite3_reset(st);
        return err_push(L, &e);
      }
    }
    s->has_row = 1;
    for (j = 0; j < nc; j++) {
      push_column(L, st, j, 1);
      lua_rawseti(L, 3 + j, k);
    }
  }
  lua_pushinteger(L, k - 1);
  return 1;
}

/* Iterator body of stmt:rows()/named_rows(): the next row, or nil at the end
** (the statement is then reset). Raises on error: a for loop cannot carry
** nil, msg. */
static int iter_step(lua_State *L, int named) {
  sq_stmt *s = check_stmt(L, 1);
  int rc = sqlite3_step(s->st);
  if (rc == SQLITE_ROW) {
    s->has_row = 1;
    if (named) push_named_row(L, s->st); else push_row(L, s->st, 0);
    return 1;
  }
  s->has_row = 0;
  if (rc == SQLITE_DONE) {
    sqlite3_reset(s->st);
    lua_pushnil(L);
    return 1;
  }
  {
    sq_err e;
    err_capture(&e, sqlite3_db_handle(s->st), rc, sqlite3_sql(s->st));
    sqlite3_reset(s->st);
    if (is_interrupt(e.rc)) lua_pushliteral(L, "interrupted");
    else lua_pushstring(L, e.msg);
    return lua_error(L);
  }
}

/* core.iter_rows(stmt) / core.iter_named(stmt): see iter_step */
static int sqlite_iter_rows(lua_State *L) { return iter_step(L, 0); }
static int sqlite_iter_named(lua_State *L) { return iter_step(L, 1); }

/* }====== */

static const luaL_Reg db_meth[] = {
  {"exec", db_m_exec},
  {"prepare", db_m_prepare}, {"changes", db_m_changes},
  {"total_changes", db_m_total_changes},
  {"last_insert_rowid", db_m_last_insert_rowid},
  {"busy_timeout", db_m_busy_timeout}, {"in_transaction", db_m_in_transaction},
  {"filename", db_m_filename}, {"readonly", db_m_readonly},
  {NULL, NULL}
};
static const luaL_Reg stmt_meth[] = {
  {"finalize", stmt_m_finalize}, {"sql", stmt_m_sql},
  {"bind", stmt_m_bind}, {"bind_all", stmt_m_bind_all}, {"clear", stmt_m_clear},
  {"reset", stmt_m_reset}, {"step", stmt_m_step}, {"row", stmt_m_row},
  {"named_row", stmt_m_named_row}, {"values", stmt_m_values}, {"get", stmt_m_get},
  {"columns", stmt_m_columns}, {"param_count", stmt_m_param_count},
  {"insert_many", stmt_m_insert_many}, {"insert_columns", stmt_m_insert_columns},
  {"insert_packed", stmt_m_insert_packed},
  {"fetch_columns", stmt_m_fetch_columns},
  {NULL, NULL}
};
static const luaL_Reg funcs[] = {
  {"open", sqlite_open}, {"blob", sqlite_blob}, {"is_blob", sqlite_is_blob},
  {"version", sqlite_version}, {"iter_rows", sqlite_iter_rows},
  {"iter_named", sqlite_iter_named},
  {NULL, NULL}
};

int luaopen_geneva_sqlite_core(lua_State *L);  /* called by the host's preload table */
int luaopen_geneva_sqlite_core(lua_State *L) {
  geneva_lazy_require(L, &sqlite_lib);
  geneva_class_register(L, &db_class, db_meth);
  geneva_class_register(L, &stmt_class, stmt_meth);
  if (luaL_newmetatable(L, BLOB_MT)) {
    lua_pushliteral(L, "blob");
    lua_setfield(L, -2, "__name");
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, &blob_key);
  luaL_newlib(L, funcs);            /* [core] */
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  luaL_getmetatable(L, DB_MT);      /* [core, mt]: methods for the Lua face */
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "Db");
  lua_pop(L, 1);
  luaL_getmetatable(L, STMT_MT);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "Stmt");
  lua_pop(L, 1);
  return 1;
}
