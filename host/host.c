/*
** host.c: the embedding API (geneva.h). A host is one Lua state with the
** bindings preloaded, the stdlib reachable through a searcher, os.exit made
** safe, and a ledger that owns every external resource.
*/
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <lua-cjson.h>

#include "geneva.h"
#include "geneva_internal.h"
#include "host.h"
#include "host_private.h"
#include "signals_private.h"

int luaopen_cjson_safe(lua_State *L);  /* lua-cjson.h declares only cjson */

static const char host_key = 'h';      /* registry: light userdata -> host */
static const char exit_sentinel = 'x'; /* error value raised by os.exit */

geneva_host *geneva_host_from(lua_State *L) {
  geneva_host *h;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &host_key);
  h = (geneva_host *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return h;
}

static void set_error(geneva_host *h, const char *msg) {
  free(h->err);
  h->err = msg ? strdup(msg) : NULL;
}

/* {====== Module loading */

/* Finds an embedded stdlib module; GENEVA_STDLIB=<dir> overrides it with the
** source files, for development without rebuilding. */
static int searcher_stdlib(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const char *dev = getenv("GENEVA_STDLIB");
  const geneva_embedded *m;
  if (dev && *dev) {
    const char *rel = luaL_gsub(L, name, ".", "/");
    const char *cands[2];
    int i;
    cands[0] = lua_pushfstring(L, "%s/%s.lua", dev, rel);
    cands[1] = lua_pushfstring(L, "%s/%s/init.lua", dev, rel);
    for (i = 0; i < 2; i++) {
      FILE *f = fopen(cands[i], "r");
      if (!f) continue;
      fclose(f);
      if (luaL_loadfile(L, cands[i]) != LUA_OK)
        return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s",
                          name, cands[i], lua_tostring(L, -1));
      lua_pushstring(L, cands[i]);
      return 2;
    }
    lua_pop(L, 3);
  }
  for (m = geneva_stdlib; m->name; m++) {
    if (strcmp(m->name, name) != 0) continue;
    if (luaL_loadbufferx(L, (const char *)m->src, m->len,
                         lua_pushfstring(L, "@%s", m->file), "t") != LUA_OK)
      return luaL_error(L, "error loading embedded module '%s':\n\t%s", name,
                        lua_tostring(L, -1));
    lua_pushstring(L, m->file);
    return 2;
  }
  lua_pushfstring(L, "no embedded module '%s'", name);
  return 1;
}

static void open_modules(lua_State *L) {
  const geneva_binding *b;
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (b = geneva_bindings; b->name; b++) {
    lua_pushcfunction(L, b->open);
    lua_setfield(L, -2, b->name);
  }
  lua_pushcfunction(L, luaopen_geneva_ledger_core);
  lua_setfield(L, -2, "geneva.ledger.core");
  lua_pushcfunction(L, luaopen_geneva_host_core);
  lua_setfield(L, -2, "geneva.host.core");
  lua_pushcfunction(L, luaopen_cjson);
  lua_setfield(L, -2, "cjson");
  lua_pushcfunction(L, luaopen_cjson_safe);
  lua_setfield(L, -2, "cjson.safe");
  lua_pop(L, 1);
  /* package.searchers: preload, stdlib, then Lua's file searchers */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchers");
  {
    lua_Integer i, n = (lua_Integer)luaL_len(L, -1);
    for (i = n; i >= 2; i--) {
      lua_rawgeti(L, -1, i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, searcher_stdlib);
    lua_rawseti(L, -2, 2);
  }
  lua_pop(L, 2);
}

/* }====== */

/* {====== os.exit: unwind to the host, which tears down, then exits */

static void exit_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_pushlightuserdata(L, (void *)&exit_sentinel);
  lua_error(L);   /* re-raised until the host's top level: pcall cannot keep it */
}

static int os_exit_safe(lua_State *L) {
  geneva_host *h = geneva_host_from(L);
  int code;
  if (lua_isboolean(L, 1)) code = lua_toboolean(L, 1) ? EXIT_SUCCESS : EXIT_FAILURE;
  else code = (int)luaL_optinteger(L, 1, EXIT_SUCCESS);
  if (h) {
    h->exiting = 1;
    h->exit_code = code;
  }
  lua_sethook(L, exit_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  {  /* from a coroutine, resume would return the error and the main thread
     ** (the host's pcall; geneva_host_pcall clears its hook) would go on */
    lua_State *main;
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    main = lua_tothread(L, -1);
    lua_pop(L, 1);
    if (main && main != L)
      lua_sethook(main, exit_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  }
  lua_pushlightuserdata(L, (void *)&exit_sentinel);
  return lua_error(L);
}

/* }====== */

/* {====== Protected calls with a traceback */

/* Is src (a chunk's source, "@file") one of the stdlib's modules: embedded,
** or a file under GENEVA_STDLIB? */
static int is_stdlib_source(const char *src) {
  const char *dev = getenv("GENEVA_STDLIB");
  const geneva_embedded *m;
  if (src[0] != '@') return 0;
  src++;
  if (dev && *dev) {
    size_t n = strlen(dev);
    if (strncmp(src, dev, n) == 0 && src[n] == '/') return 1;
  }
  for (m = geneva_stdlib; m->name; m++)
    if (strcmp(src, m->file) == 0) return 1;
  return 0;
}

/* Full tracebacks for every error: GENEVA_TRACE=1 or geneva --trace. */
static int tracing(lua_State *L) {
  geneva_host *h = geneva_host_from(L);
  const char *env = getenv("GENEVA_TRACE");
  return (h && h->trace) || (env && *env && strcmp(env, "0") != 0);
}

/* An ordinary geneva.Error (not_found, invalid_argument, udf_error, ...:
** any code but internal) is about the user's code, not ours: its text and
** the innermost line of user code that led to it, "<code>: <message>\n  at
** job.lua:12", instead of a traceback into stdlib files that are not on
** disk. Pushes that text and returns 1, or returns 0 (a traceback then).
** [err] -> [err, text?] */
static int ordinary_error(lua_State *L) {
  lua_Debug ar;
  int level, type, is_error, ordinary;
  if (tracing(L)) return 0;
  type = luaL_getmetafield(L, 1, "__name");
  if (type == LUA_TNIL) return 0;           /* pushed nothing */
  is_error = type == LUA_TSTRING && strcmp(lua_tostring(L, -1), "geneva.Error") == 0;
  lua_pop(L, 1);
  if (!is_error) return 0;
  lua_getfield(L, 1, "code");
  ordinary = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "internal") != 0;
  lua_pop(L, 1);
  if (!ordinary || !luaL_callmeta(L, 1, "__tostring") || lua_type(L, -1) != LUA_TSTRING)
    return 0;
  for (level = 1; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Sl", &ar);
    if (ar.currentline > 0 && !is_stdlib_source(ar.source)) {
      lua_pushfstring(L, "%s\n  at %s:%d", lua_tostring(L, -1), ar.short_src, ar.currentline);
      lua_remove(L, -2);
      break;
    }
  }
  return 1;
}

static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (lua_touserdata(L, 1) == &exit_sentinel) return 1;   /* keep as is */
  if (ordinary_error(L)) return 1;
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/*
** Calls the function below nargs arguments with a traceback handler. Returns
** 0, or an exit code: the os.exit code, 128+n after signal n (teardown done),
** or 1 with the message saved in h->err.
*/
int geneva_host_pcall(geneva_host *h, int nargs, int nres, int interactive) {
  lua_State *L = h->L;
  int base = lua_gettop(L) - nargs;
  int status;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  h->interrupted = 0;
  status = lua_pcall(L, nargs, nres, base);
  lua_remove(L, base);
  if (h->exiting) {                /* os.exit: the session ends here */
    lua_sethook(L, NULL, 0, 0);
    lua_settop(L, base - 1);       /* the error, or results (os.exit in a finalizer) */
    set_error(h, NULL);
    geneva_ledger_teardown_all(L);
    return h->exit_code;
  }
  if (geneva_interrupted() && h->opts.handle_signals) {
    int code = geneva_signals_exit_code();
    if (status != LUA_OK) lua_pop(L, 1);
    geneva_signals_disarm(L);
    set_error(h, "interrupted");
    if (interactive) {           /* the REPL goes back to its prompt */
      geneva_signals_clear();
      h->interrupted = 1;
      return 1;
    }
    geneva_ledger_teardown_all(L);
    return code;
  }
  if (status != LUA_OK) {
    set_error(h, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}

/* }====== */

/* {====== geneva.h */

/* Everything geneva_host_new does with the Lua state, under lua_pcall (as
** lua.c's pmain): a memory error is a NULL host, not a panic. [h] -> [] */
static int host_setup(lua_State *L) {
  geneva_host *h = (geneva_host *)lua_touserdata(L, 1);
  lua_pushlightuserdata(L, h);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &host_key);
  geneva_ledger_attach(L, h->ledger);
  open_modules(L);
  lua_getglobal(L, "os");
  lua_pushcfunction(L, os_exit_safe);
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
  return 0;
}

static void host_discard(geneva_host *h) {
  if (h->L) lua_close(h->L);
  geneva_ledger_free(h->ledger);
  free(h->worker_exe);
  free(h->err);
  free(h);
}

geneva_host *geneva_host_new(const geneva_host_opts *opts) {
  geneva_host *h = (geneva_host *)calloc(1, sizeof *h);
  if (!h) return NULL;
  if (opts) h->opts = *opts;
  if (h->opts.worker_exe) {
    h->worker_exe = strdup(h->opts.worker_exe);
    if (!h->worker_exe) { host_discard(h); return NULL; }
    h->opts.worker_exe = h->worker_exe;
  }
  h->ledger = geneva_ledger_new();
  if (!h->ledger) { host_discard(h); return NULL; }
  h->L = luaL_newstate();
  if (!h->L) { host_discard(h); return NULL; }
  geneva_memory_install(h->L, &h->mem);
  /* GENEVA_GC_STRESS (in the driver and every worker it starts), so that
  ** an object kept alive only by luck (a handle without a reference, a __gc
  ** order assumption) is collected soon and fails fast:
  **   1 (CI's GC-stress pass over the whole suite): a cycle starts as soon
  **     as one ends (pause 100), at half the default pace (stepmul 50, which
  **     measured cheaper than 100 here): 2-6x slower;
  **   2: no pause and ten times the default work per step (stepmul 1000):
  **     a full cycle every few allocations, 20-40x slower, for targeted runs */
  {
    const char *gc = getenv("GENEVA_GC_STRESS");
    if (gc && strcmp(gc, "1") == 0) lua_gc(h->L, LUA_GCINC, 100, 50, 0);
    else if (gc && strcmp(gc, "2") == 0) lua_gc(h->L, LUA_GCINC, 1, 1000, 0);   /* 0 would mean "unchanged" */
  }
  lua_pushcfunction(h->L, host_setup);   /* a light C function: no allocation */
  lua_pushlightuserdata(h->L, h);
  if (lua_pcall(h->L, 1, 0, 0) != LUA_OK) { host_discard(h); return NULL; }
  if (h->opts.handle_signals) geneva_signals_install(h->L);
  return h;
}

lua_State *geneva_host_lua(geneva_host *h) { return h ? h->L : NULL; }

const char *geneva_host_error(const geneva_host *h) { return h ? h->err : NULL; }

/* 1 with the message saved, for calls the host refuses. */
static int refuse(geneva_host *h, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));
static int refuse(geneva_host *h, const char *fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  set_error(h, buf);
  return 1;
}

/* Checks what every run needs; 0, or 1 with the reason saved. */
static int check_run(geneva_host *h, const char *fn) {
  set_error(h, NULL);
  if (h->exiting)
    return refuse(h, "%s: this host is finished: a script called os.exit(%d); "
                  "free it and create a new host to run more", fn, h->exit_code);
  return 0;
}

static void push_args(lua_State *L, const char *progname, const char *script,
                      int argc, const char *const *argv) {
  int i;
  lua_createtable(L, argc, 2);
  lua_pushstring(L, progname ? progname : "geneva");
  lua_rawseti(L, -2, -1);
  lua_pushstring(L, script ? script : "-");
  lua_rawseti(L, -2, 0);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setglobal(L, "arg");
}

typedef struct {
  const char *progname, *path;   /* path NULL: stdin */
  int argc;
  const char *const *argv;
} file_job;

/* Sets `arg`, loads the file and pushes it with its arguments, under
** lua_pcall (memory errors included). [job] -> [chunk, argv...] */
static int prepare_file(lua_State *L) {
  const file_job *j = (const file_job *)lua_touserdata(L, 1);
  int i;
  lua_settop(L, 0);
  push_args(L, j->progname, j->path, j->argc, j->argv);
  if (luaL_loadfile(L, j->path) != LUA_OK) return lua_error(L);
  luaL_checkstack(L, j->argc + 2, "too many arguments to script");
  for (i = 0; i < j->argc; i++) lua_pushstring(L, j->argv[i]);
  return 1 + j->argc;
}

int geneva_host_dofile(geneva_host *h, const char *path, int argc,
                       const char *const *argv) {
  lua_State *L;
  file_job job;
  int i;
  if (!h) return 1;
  if (check_run(h, "geneva_host_dofile")) return 1;
  if (!path) return refuse(h, "geneva_host_dofile: path is NULL (\"-\" reads stdin)");
  if (argc < 0) return refuse(h, "geneva_host_dofile: argc is negative (%d)", argc);
  if (argc > 0 && !argv) return refuse(h, "geneva_host_dofile: argv is NULL but argc is %d", argc);
  for (i = 0; i < argc; i++)
    if (!argv[i]) return refuse(h, "geneva_host_dofile: argv[%d] is NULL", i);
  L = h->L;
  job.progname = h->opts.progname;
  job.path = strcmp(path, "-") == 0 ? NULL : path;
  job.argc = argc;
  job.argv = argv;
  lua_pushcfunction(L, prepare_file);
  lua_pushlightuserdata(L, &job);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) {
    set_error(h, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  return geneva_host_pcall(h, argc, 0, 0);
}

int geneva_host_dostring(geneva_host *h, const char *code) {
  lua_State *L;
  if (!h) return 1;
  if (check_run(h, "geneva_host_dostring")) return 1;
  if (!code) return refuse(h, "geneva_host_dostring: code is NULL");
  L = h->L;
  /* lua_load is protected: a memory error comes back as a status */
  if (luaL_loadbuffer(L, code, strlen(code), "=(command line)") != LUA_OK) {
    set_error(h, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  return geneva_host_pcall(h, 0, 0, 0);
}

void geneva_host_free(geneva_host *h) {
  if (!h) return;
  if (h->opts.handle_signals) geneva_signals_block();
  lua_sethook(h->L, NULL, 0, 0);
  geneva_ledger_teardown_all(h->L);
  lua_close(h->L);
  geneva_ledger_free(h->ledger);
  if (h->opts.handle_signals) geneva_signals_uninstall();
  free(h->worker_exe);
  free(h->err);
  free(h);
}

/* }====== */
