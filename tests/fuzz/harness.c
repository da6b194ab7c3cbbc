/*
** harness.c: one libFuzzer driver for every fuzz target (README: "Fuzzing and
** static checks"; cmake/fuzz.cmake builds it, scripts/fuzz runs it).
**
** Built once per target with FUZZ_TARGET="<name>" and FUZZ_LUA = the path of
** targets.lua. At start it makes a geneva host (our bindings and the embedded
** stdlib, as libgeneva gives an application), a private temp directory, and
** loads targets.lua, which returns {name = function(data, dir) ... end}.
** Each input is passed to the target's function under lua_pcall:
**   - the function returns, or raises a geneva.Error: fine (the loaders
**     refuse bad input by raising invalid_argument, by design);
**   - it raises anything else (a Lua runtime error such as "attempt to
**     index a nil value" inside a loader, a broken invariant checked by
**     targets.lua): a bug, reported and abort()ed so libFuzzer saves the
**     input;
**   - C crashes, sanitizer reports, leaks, timeouts and memory blow-ups are
**     libFuzzer's and the sanitizers' to catch.
** libFuzzer sees the coverage of C code only; for the targets whose logic
** is Lua (targets.lua lists them in lua_lines), a line hook feeds the Lua
** lines run, as (previous, current) pairs, into libFuzzer's extra counters.
** After each input a full garbage collection runs, so every __gc runs under
** the sanitizers and memory held by the input is freed before the next one.
*/
#define _GNU_SOURCE
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <geneva.h>
#include <lauxlib.h>
#include <lua.h>

#ifndef FUZZ_TARGET
#error "FUZZ_TARGET must name the target"
#endif
#ifndef FUZZ_LUA
#error "FUZZ_LUA must be the path of targets.lua"
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static geneva_host *host;
static lua_State *L;
static int fn_ref = LUA_NOREF;
static char tmp_root[4096];

/* {====== Lua line coverage */
static uint8_t lua_counters[1 << 16] __attribute__((used, section("__libfuzzer_extra_counters")));
static uintptr_t prev_line;

static void line_hook(lua_State *l, lua_Debug *ar) {
  uintptr_t cur;
  if (!lua_getinfo(l, "S", ar)) return;
  cur = ((uintptr_t)ar->source * 31u) ^ ((uintptr_t)ar->currentline * 2654435761u);
  lua_counters[(cur ^ (prev_line >> 1)) & 0xffffu]++;
  prev_line = cur;
}
/* }====== */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) {
  (void)st; (void)flag; (void)f;
  remove(p);
  return 0;
}

static void cleanup(void) {
  if (host) geneva_host_free(host);
  host = NULL;
  if (tmp_root[0]) nftw(tmp_root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void die(const char *what, const char *msg) {
  fprintf(stderr, "fuzz %s: %s: %s\n", FUZZ_TARGET, what, msg ? msg : "(no message)");
  abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  geneva_host_opts opts;
  const char *t = getenv("TMPDIR");
  (void)argc; (void)argv;
  memset(&opts, 0, sizeof opts);
  opts.progname = "fuzz_" FUZZ_TARGET;
  snprintf(tmp_root, sizeof tmp_root, "%s/geneva-fuzz-%s-XXXXXX", t && *t ? t : "/tmp", FUZZ_TARGET);
  if (!mkdtemp(tmp_root)) die("mkdtemp", tmp_root);
  host = geneva_host_new(&opts);
  if (!host) die("geneva_host_new", "NULL");
  atexit(cleanup);
  L = geneva_host_lua(host);
  if (luaL_dofile(L, FUZZ_LUA) != LUA_OK) die("loading " FUZZ_LUA, lua_tostring(L, -1));
  lua_getfield(L, -1, FUZZ_TARGET);
  if (!lua_isfunction(L, -1)) die("targets.lua", "no function for this target");
  fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, -1, "lua_lines");
  if (lua_istable(L, -1) && lua_getfield(L, -1, FUZZ_TARGET) == LUA_TBOOLEAN && lua_toboolean(L, -1))
    lua_sethook(L, line_hook, LUA_MASKLINE, 0);
  lua_settop(L, 0);
  return 0;
}

/* The message handler: geneva.Errors pass as they are; anything else
** becomes its text with a traceback, behind BUG_MARK. */
#define BUG_MARK "\001fuzz-bug\001"
static int msgh(lua_State *l) {
  if (luaL_getmetafield(l, 1, "__name") == LUA_TSTRING
      && strcmp(lua_tostring(l, -1), "geneva.Error") == 0) {
    lua_settop(l, 1);
    return 1;
  }
  lua_settop(l, 1);
  lua_pushstring(l, BUG_MARK);
  luaL_traceback(l, l, luaL_tolstring(l, 1, NULL), 1);
  lua_remove(l, -2);
  lua_concat(l, 2);
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int top = lua_gettop(L), st;
  lua_pushcfunction(L, msgh);
  lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
  lua_pushlstring(L, (const char *)data, size);
  lua_pushstring(L, tmp_root);
  prev_line = 0;
  st = lua_pcall(L, 2, 0, top + 1);
  if (st == LUA_ERRRUN && lua_type(L, -1) == LUA_TSTRING) {
    const char *m = lua_tostring(L, -1);
    if (strncmp(m, BUG_MARK, strlen(BUG_MARK)) == 0) die("bug", m + strlen(BUG_MARK));
  } else if (st != LUA_OK && st != LUA_ERRRUN) {
    die("error", lua_tostring(L, -1));
  }
  lua_settop(L, top);
  lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
