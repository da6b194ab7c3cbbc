/*
** memory.c: the host's Lua allocator. It counts the bytes a host's Lua
** state holds and can refuse growth past a limit, which is how a UDF's
** `memory = bytes` is enforced (stdlib/geneva/udf.lua arms it around the
** UDF's calls): the refused allocation is an ordinary Lua memory error
** ("not enough memory", after an emergency collection), which the UDF's
** caller turns into its udf_error; the state stays sound.
*/
#include <stdlib.h>

#include <lua.h>
#include <lauxlib.h>

#include "host.h"

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  geneva_memory *m = (geneva_memory *)ud;
  size_t old = ptr ? osize : 0;   /* without ptr, osize is a type tag */
  void *p;
  if (nsize == 0) {
    free(ptr);
    m->used -= old;
    return NULL;
  }
  /* only growth is refused: Lua counts on a shrink never failing */
  if (m->limit && nsize > old && m->used - old + nsize > m->limit) {
    m->refused++;
    return NULL;
  }
  p = realloc(ptr, nsize);
  if (!p) return NULL;
  m->used = m->used - old + nsize;
  return p;
}

void geneva_memory_install(lua_State *L, geneva_memory *m) {
  /* what L holds already, as Lua counts it (exactly what went through
  ** the allocator luaL_newstate gave it: malloc, as ours) */
  m->used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
  m->limit = 0;
  m->refused = 0;
  lua_setallocf(L, counting_alloc, m);
}

/* L's counter, or NULL when L does not use our allocator (a state an
** embedder made itself) */
static geneva_memory *memory_of(lua_State *L) {
  void *ud = NULL;
  return lua_getallocf(L, &ud) == counting_alloc ? (geneva_memory *)ud : NULL;
}

/* core.memory() -> used, limit (0: none), refused | nil: the bytes the
** state holds, its limit, how many allocations the limit has refused */
static int l_memory(lua_State *L) {
  geneva_memory *m = memory_of(L);
  if (!m) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)m->used);
  lua_pushinteger(L, (lua_Integer)m->limit);
  lua_pushinteger(L, (lua_Integer)m->refused);
  return 3;
}

/* core.set_memory_limit(bytes) -> previous limit | nil: growth past bytes
** fails (0: no limit). nil when the state does not use our allocator. */
static int l_set_memory_limit(lua_State *L) {
  geneva_memory *m = memory_of(L);
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0, 1, "a limit in bytes (0: none) expected");
  if (!m) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)m->limit);
  m->limit = (size_t)n;
  return 1;
}

void geneva_memory_register(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"memory", l_memory},
    {"set_memory_limit", l_set_memory_limit},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
}
