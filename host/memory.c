/*
** memory.c: the host's Lua allocator. It counts the bytes a host's Lua
** state holds and can refuse growth past a limit, which is how a UDF's
** `memory = bytes` is enforced (stdlib/geneva/udf.lua arms it around the
** UDF's calls): the refused allocation is an ordinary Lua memory error
** ("not enough memory", after an emergency collection), which the UDF's
** caller turns into its udf_error; the state stays sound.
*/
#include <stdint.h>
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

/* core.limited_xpcall(limit, f, msgh, ...) -> true, f's results... |
** false, err, over: xpcall(f, msgh, ...) with the heap held to its size
** now + limit (a lower limit already set, a UDF called by a UDF, stays; a
** limit that would overflow means none). The limit is armed only inside
** the protected call and disarmed before anything else runs, here in C: an
** allocation outside the call (a stack to grow, a CallInfo) can never meet
** it, nor can a refused one leave it armed. over: the error is an
** allocation this limit refused. Without our allocator: a plain xpcall. */
static int l_limited_xpcall(lua_State *L) {
  geneva_memory *m = memory_of(L);
  lua_Integer limit = luaL_checkinteger(L, 1);
  size_t prev = 0, refused0 = 0;
  int status, over;
  luaL_argcheck(L, limit > 0, 1, "a limit in bytes > 0 expected");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checkany(L, 3);
  lua_remove(L, 1);               /* [f, msgh, args...] */
  lua_pushvalue(L, 2);
  lua_remove(L, 2);               /* [f, args..., msgh] */
  lua_insert(L, 1);               /* [msgh, f, args...] */
  if (m) {
    size_t cap = (size_t)limit <= SIZE_MAX - m->used ? m->used + (size_t)limit : 0;
    prev = m->limit;
    refused0 = m->refused;
    if (prev && (cap == 0 || prev < cap)) cap = prev;
    m->limit = cap;
  }
  status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 1);
  over = m && m->refused > refused0 && status == LUA_ERRMEM;
  if (m) m->limit = prev;
  lua_pushboolean(L, status == LUA_OK);
  lua_replace(L, 1);              /* the msgh's slot */
  if (status == LUA_OK) return lua_gettop(L);
  lua_pushboolean(L, over);
  return 3;
}

void geneva_memory_register(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"memory", l_memory},
    {"set_memory_limit", l_set_memory_limit},
    {"limited_xpcall", l_limited_xpcall},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
}
