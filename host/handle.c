/*
** handle.c: userdata handles over C resources (see handle.h).
**
** The generic methods and metamethods are C closures whose upvalue 1 is the
** class (a light userdata), so one function serves every class and still
** checks the userdata's type by the class's metatable name.
*/
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "geneva_internal.h"
#include "handle.h"

#define UV_CLASS lua_upvalueindex(1)

static const geneva_class *upclass(lua_State *L) {
  return (const geneva_class *)lua_touserdata(L, UV_CLASS);
}

/* {====== Lifetime */

void *geneva_handle_new(lua_State *L, const geneva_class *c, size_t size, int nuv) {
  geneva_handle *h;
  if (size < sizeof *h) size = sizeof *h;
  h = (geneva_handle *)lua_newuserdatauv(L, size, nuv);
  memset(h, 0, size);                  /* born closed (liolib.c newprefile) */
  h->cls = c;
  luaL_setmetatable(L, c->name);
  return h;
}

static void handle_teardown(void *h) { geneva_handle_release(h); }

void geneva_handle_open(lua_State *L, void *p) {
  geneva_handle *h = (geneva_handle *)p;
  h->open = 1;
  if (h->cls->kind) h->res = geneva_ledger_track(L, h->cls->kind, handle_teardown, h);
}

int geneva_handle_release(void *p) {
  geneva_handle *h = (geneva_handle *)p;
  geneva_resource *r;
  int err;
  if (!h->open) return 0;
  h->open = 0;                         /* closed first: a nested release is a no-op */
  r = h->res;
  h->res = NULL;
  err = h->cls->release ? h->cls->release(h) : 0;
  geneva_ledger_untrack(r);            /* ignored inside its own teardown */
  return err;
}

int geneva_handle_is_open(const void *p) { return ((const geneva_handle *)p)->open; }

/* }====== */

/* {====== Checks */

void *geneva_handle_to(lua_State *L, int idx, const geneva_class *c) {
  return luaL_checkudata(L, idx, c->name);
}

void *geneva_handle_check(lua_State *L, int idx, const geneva_class *c) {
  geneva_handle *h = (geneva_handle *)luaL_checkudata(L, idx, c->name);
  if (!h->open) {
    const char *why = c->closed_why ? c->closed_why(h) : NULL;
    luaL_error(L, "attempt to use a closed %s%s%s", c->what ? c->what : c->name,
               why ? " " : "", why ? why : "");
  }
  return h;
}

/* }====== */

/* {====== Generic methods and metamethods (upvalue 1: the class) */

int geneva_handle_close(lua_State *L, int idx, const geneva_class *c) {
  int err = geneva_handle_release(geneva_handle_to(L, idx, c));
  if (err) return geneva_fail(L, geneva_errno_name(err), "cannot close %s: %s", c->name,
                              strerror(err));
  lua_pushboolean(L, 1);
  return 1;
}

/* h:close() -> true | nil, msg, code. Idempotent. */
static int m_close(lua_State *L) { return geneva_handle_close(L, 1, upclass(L)); }

/* h:is_closed() -> boolean */
static int m_is_closed(lua_State *L) {
  geneva_handle *h = (geneva_handle *)geneva_handle_to(L, 1, upclass(L));
  lua_pushboolean(L, !h->open);
  return 1;
}

/* __gc and __close: the same release, errors dropped (a finalizer never
** raises: an error there would hide the one being unwound). */
static int mm_gc(lua_State *L) {
  void *h = luaL_testudata(L, 1, upclass(L)->name);
  if (h) geneva_handle_release(h);
  return 0;
}

static int mm_tostring(lua_State *L) {
  const geneva_class *c = upclass(L);
  geneva_handle *h = (geneva_handle *)geneva_handle_to(L, 1, c);
  if (!h->open) {
    lua_pushfstring(L, "%s (closed)", c->name);
  } else if (c->describe) {
    lua_pushstring(L, c->name);
    lua_pushliteral(L, " ");
    c->describe(L, h, 1);
    lua_concat(L, 3);
  } else {
    lua_pushfstring(L, "%s (%p)", c->name, (void *)h);
  }
  return 1;
}

static void set_closure(lua_State *L, const geneva_class *c, lua_CFunction f,
                        const char *field) {
  lua_pushlightuserdata(L, (void *)c);
  lua_pushcclosure(L, f, 1);
  lua_setfield(L, -2, field);
}

void geneva_class_register(lua_State *L, const geneva_class *c, const luaL_Reg *meth) {
  if (!luaL_newmetatable(L, c->name)) {  /* [mt]: this state has it already */
    lua_pop(L, 1);
    return;
  }
  set_closure(L, c, mm_gc, "__gc");
  set_closure(L, c, mm_gc, "__close");
  set_closure(L, c, mm_tostring, "__tostring");
  if (meth) {
    lua_newtable(L);                     /* [mt, methods] */
    luaL_setfuncs(L, meth, 0);
    if (lua_getfield(L, -1, "close") == LUA_TNIL) {
      lua_pop(L, 1);
      set_closure(L, c, m_close, "close");
    } else {
      lua_pop(L, 1);
    }
    if (lua_getfield(L, -1, "is_closed") == LUA_TNIL) {
      lua_pop(L, 1);
      set_closure(L, c, m_is_closed, "is_closed");
    } else {
      lua_pop(L, 1);
    }
    if (c->index) lua_pushcclosure(L, c->index, 1);
    lua_setfield(L, -2, "__index");      /* [mt] */
  }
  lua_pop(L, 1);
}

/* }====== */
