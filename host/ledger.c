/*
** ledger.c: the host's resource ledger.
**
** Every external resource is an entry with a teardown, owned by a scope.
** Scopes nest; closing one tears down its resources and those of its
** descendants, newest first, with the interrupt hook off and a deadline per
** step. Teardown errors are collected, never raised mid-way. Entries come
** from C (bindings: geneva_ledger_track) or from Lua (geneva.ledger.core:
** scope:reserve + res:bind), which is what contexts and runners build on.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lua.h>
#include <lauxlib.h>

#include "geneva_internal.h"
#include "host.h"
#include "signals_private.h"

#define SCOPE_MT "geneva.ledger.Scope"
#define RES_MT "geneva.ledger.Resource"

typedef struct scope {
  struct scope *parent;   /* NULL for the root */
  struct scope *next_all; /* every scope of the ledger, freed with it */
  char *name;
  unsigned long id;
  int closed;
} scope;

struct geneva_resource {
  geneva_resource *prev, *next;  /* creation order */
  geneva_ledger *g;
  scope *s;
  char *kind, *name;
  geneva_teardown_fn fn;         /* C teardown, or */
  void *ud;
  int ref;                       /* Lua teardown (registry ref) */
  unsigned long id;
  int linked;                    /* still in the ledger */
  int in_teardown;
  int has_handle;                /* a Lua Resource userdata points here */
};

struct geneva_ledger {
  geneva_resource *head, *tail;
  scope *root, *current, *scopes;
  unsigned long next_id;
  double step_deadline;          /* seconds per Lua teardown step */
};

static const char ledger_key = 'l';

static double now_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static geneva_ledger *get_ledger(lua_State *L) {
  geneva_ledger *g;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ledger_key);
  g = (geneva_ledger *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return g;
}

/* {====== Entries */

static scope *scope_new(geneva_ledger *g, scope *parent, const char *name) {
  scope *s = (scope *)calloc(1, sizeof *s);
  if (!s) return NULL;
  s->name = strdup(name ? name : "scope");
  if (!s->name) { free(s); return NULL; }
  s->parent = parent;
  s->id = ++g->next_id;
  s->next_all = g->scopes;
  g->scopes = s;
  return s;
}

static int within(const scope *x, const scope *s) {
  for (; x; x = x->parent)
    if (x == s) return 1;
  return 0;
}

static geneva_resource *entry_new(geneva_ledger *g, scope *s, const char *kind,
                                  const char *name) {
  geneva_resource *r = (geneva_resource *)calloc(1, sizeof *r);
  if (!r) return NULL;
  r->kind = strdup(kind);
  r->name = strdup(name ? name : "");
  if (!r->kind || !r->name) { free(r->kind); free(r->name); free(r); return NULL; }
  r->g = g;
  r->s = s;
  r->ref = LUA_NOREF;
  r->id = ++g->next_id;
  r->linked = 1;
  r->prev = g->tail;
  if (g->tail) g->tail->next = r; else g->head = r;
  g->tail = r;
  return r;
}

static void entry_free(geneva_resource *r) {
  free(r->kind);
  free(r->name);
  free(r);
}

/* Takes r out of the list; frees it unless a Lua handle still points at it. */
static void entry_unlink(geneva_resource *r) {
  geneva_ledger *g = r->g;
  if (!r->linked) return;
  if (r->prev) r->prev->next = r->next; else g->head = r->next;
  if (r->next) r->next->prev = r->prev; else g->tail = r->prev;
  r->prev = r->next = NULL;
  r->linked = 0;
  if (!r->has_handle) entry_free(r);
}

geneva_resource *geneva_ledger_track(lua_State *L, const char *kind,
                                     geneva_teardown_fn fn, void *ud) {
  geneva_ledger *g = get_ledger(L);
  geneva_resource *r;
  if (!g) return NULL;
  r = entry_new(g, g->current, kind, NULL);
  if (!r) return NULL;
  r->fn = fn;
  r->ud = ud;
  return r;
}

void geneva_ledger_untrack(geneva_resource *r) {
  if (!r || r->in_teardown) return;
  entry_unlink(r);
}

/* }====== */

/* {====== Teardown */

static void deadline_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_Number *limit;
  lua_getfield(L, LUA_REGISTRYINDEX, "geneva.ledger.deadline");
  limit = (lua_Number *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (limit && now_mono() > *limit) luaL_error(L, "teardown step timed out");
}

/* Runs r's teardown; on failure pushes nothing and appends a message to the
** table at errtab (0: print it as a warning). r is unlinked afterwards. */
static void teardown_one(lua_State *L, geneva_resource *r, int errtab) {
  r->in_teardown = 1;
  if (r->fn) {
    r->fn(r->ud);
  } else if (r->ref != LUA_NOREF) {
    lua_Number *limit = (lua_Number *)lua_newuserdatauv(L, sizeof *limit, 0);
    *limit = now_mono() + r->g->step_deadline;
    lua_setfield(L, LUA_REGISTRYINDEX, "geneva.ledger.deadline");
    lua_sethook(L, deadline_hook, LUA_MASKCOUNT, 1000);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
      const char *msg = lua_tostring(L, -1);
      lua_pushfstring(L, "teardown of %s '%s' failed: %s", r->kind, r->name,
                      msg ? msg : "(error object)");
      if (errtab) {
        lua_rawseti(L, errtab, (lua_Integer)luaL_len(L, errtab) + 1);
      } else {
        fprintf(stderr, "geneva: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
    lua_sethook(L, NULL, 0, 0);
    luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
    r->ref = LUA_NOREF;
  }
  r->in_teardown = 0;
  entry_unlink(r);
}

/* The newest linked entry inside s that is not already being torn down. */
static geneva_resource *newest_within(geneva_ledger *g, scope *s) {
  geneva_resource *r;
  for (r = g->tail; r; r = r->prev)
    if (!r->in_teardown && within(r->s, s)) return r;
  return NULL;
}

/* Closes s (and its descendants): every resource, newest first. The root
** scope stays open. Signals are held off from the Lua hook meanwhile. */
static void scope_close(lua_State *L, geneva_ledger *g, scope *s, int errtab) {
  lua_Hook hook = lua_gethook(L);
  int mask = lua_gethookmask(L), count = lua_gethookcount(L);
  geneva_resource *r;
  scope *x;
  geneva_teardown_begin();
  lua_sethook(L, NULL, 0, 0);
  while ((r = newest_within(g, s)) != NULL) teardown_one(L, r, errtab);
  for (x = g->scopes; x; x = x->next_all)
    if (x != g->root && within(x, s)) x->closed = 1;
  if (g->current->closed) {
    scope *p = g->current;
    while (p->closed) p = p->parent;
    g->current = p;
  }
  geneva_teardown_end();
  if (geneva_interrupted() && geneva_teardown_depth() == 0)
    geneva_signals_rearm(L);   /* an interrupt that came meanwhile */
  else
    lua_sethook(L, hook, mask, count);
}

void geneva_ledger_teardown_all(lua_State *L) {
  geneva_ledger *g = get_ledger(L);
  if (!g) return;
  scope_close(L, g, g->root, 0);
  lua_sethook(L, NULL, 0, 0);
}

geneva_ledger *geneva_ledger_new(void) {
  geneva_ledger *g = (geneva_ledger *)calloc(1, sizeof *g);
  if (!g) return NULL;
  g->step_deadline = 30.0;
  g->root = scope_new(g, NULL, "root");
  if (!g->root) { free(g); return NULL; }
  g->current = g->root;
  return g;
}

void geneva_ledger_attach(lua_State *L, geneva_ledger *g) {
  lua_pushlightuserdata(L, g);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ledger_key);
}

void geneva_ledger_free(geneva_ledger *g) {
  scope *s, *next;
  geneva_resource *r, *rn;
  if (!g) return;
  for (r = g->head; r; r = rn) { rn = r->next; entry_free(r); }
  for (s = g->scopes; s; s = next) { next = s->next_all; free(s->name); free(s); }
  free(g);
}

/* }====== */

/* {====== Lua API: geneva.ledger.core */

typedef struct { scope *s; } scope_ud;
typedef struct { geneva_resource *r; } res_ud;

static void push_scope(lua_State *L, scope *s) {
  /* one userdata per scope, cached by address in a weak table */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, "geneva.ledger.scopes");
  if (lua_rawgetp(L, -1, s) == LUA_TNIL) {
    scope_ud *u;
    lua_pop(L, 1);
    u = (scope_ud *)lua_newuserdatauv(L, sizeof *u, 0);
    u->s = s;
    luaL_setmetatable(L, SCOPE_MT);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, -3, s);
  }
  lua_remove(L, -2);
}

static scope *check_scope(lua_State *L, int i) {
  return ((scope_ud *)luaL_checkudata(L, i, SCOPE_MT))->s;
}

static scope *check_open_scope(lua_State *L, int i) {
  scope *s = check_scope(L, i);
  if (s->closed) luaL_error(L, "attempt to use a closed scope ('%s')", s->name);
  return s;
}

static geneva_resource *check_res(lua_State *L, int i) {
  res_ud *u = (res_ud *)luaL_checkudata(L, i, RES_MT);
  if (!u->r->linked)
    luaL_error(L, "attempt to use a released resource ('%s')", u->r->name);
  return u->r;
}

/* core.root() -> scope; core.current() -> scope */
static int ledger_root(lua_State *L) { push_scope(L, get_ledger(L)->root); return 1; }
static int ledger_current(lua_State *L) { push_scope(L, get_ledger(L)->current); return 1; }

/* core.scope(name [, parent]) -> scope (parent: the current scope). Raises on
** a closed parent. */
static int ledger_scope(lua_State *L) {
  geneva_ledger *g = get_ledger(L);
  const char *name = luaL_checkstring(L, 1);
  scope *parent = lua_isnoneornil(L, 2) ? g->current : check_open_scope(L, 2);
  scope *s = scope_new(g, parent, name);
  if (!s) return luaL_error(L, "not enough memory");
  push_scope(L, s);
  return 1;
}

/* core.set_step_deadline(seconds) */
static int ledger_set_step_deadline(lua_State *L) {
  lua_Number n = luaL_checknumber(L, 1);
  luaL_argcheck(L, n > 0, 1, "deadline must be positive");
  get_ledger(L)->step_deadline = n;
  return 0;
}

/* Runs body (a listing) on the arguments with the collector stopped: the
** listing holds entry pointers across allocations, and an allocation may run
** a finalizer whose release untracks (frees) the very entry being read. The
** collector restarts even when body raises. */
static int call_without_gc(lua_State *L, lua_CFunction body) {
  int running = lua_gc(L, LUA_GCISRUNNING) == 1, status;
  lua_pushcfunction(L, body);
  lua_insert(L, 1);
  if (running) lua_gc(L, LUA_GCSTOP);
  status = lua_pcall(L, lua_gettop(L) - 1, 1, 0);
  if (running) lua_gc(L, LUA_GCRESTART);
  if (status != LUA_OK) return lua_error(L);
  return 1;
}

/* core.list() -> array of {id, kind, name, scope} for every live entry */
static int ledger_list_body(lua_State *L) {
  geneva_ledger *g = get_ledger(L);
  geneva_resource *r;
  int i = 0;
  lua_newtable(L);
  for (r = g->head; r; r = r->next) {
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)r->id); lua_setfield(L, -2, "id");
    lua_pushstring(L, r->kind); lua_setfield(L, -2, "kind");
    lua_pushstring(L, r->name); lua_setfield(L, -2, "name");
    lua_pushstring(L, r->s->name); lua_setfield(L, -2, "scope");
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

static int ledger_list(lua_State *L) { return call_without_gc(L, ledger_list_body); }

/* scope:activate() -> previous current scope */
static int scope_m_activate(lua_State *L) {
  geneva_ledger *g = get_ledger(L);
  scope *s = check_open_scope(L, 1);
  push_scope(L, g->current);
  g->current = s;
  return 1;
}

/* scope:reserve(kind, name) -> resource, owned by the scope, with no
** teardown yet: the caller journals its lease, creates it, then binds. */
static int scope_m_reserve(lua_State *L) {
  geneva_ledger *g = get_ledger(L);
  scope *s = check_open_scope(L, 1);
  const char *kind = luaL_checkstring(L, 2);
  const char *name = luaL_optstring(L, 3, "");
  res_ud *u = (res_ud *)lua_newuserdatauv(L, sizeof *u, 0);
  u->r = NULL;
  luaL_setmetatable(L, RES_MT);
  u->r = entry_new(g, s, kind, name);
  if (!u->r) return luaL_error(L, "not enough memory");
  u->r->has_handle = 1;
  return 1;
}

/* scope:close() -> true | false, {messages}. Idempotent. */
static int scope_m_close(lua_State *L) {
  geneva_ledger *g = get_ledger(L);
  scope *s = check_scope(L, 1);
  int errtab;
  if (s->closed) { lua_pushboolean(L, 1); return 1; }
  lua_newtable(L);
  errtab = lua_gettop(L);
  scope_close(L, g, s, errtab);
  if (s == g->root) g->current = g->root;
  if (luaL_len(L, errtab) == 0) { lua_pushboolean(L, 1); return 1; }
  lua_pushboolean(L, 0);
  lua_insert(L, errtab);
  return 2;
}

static int scope_m_is_closed(lua_State *L) {
  lua_pushboolean(L, check_scope(L, 1)->closed);
  return 1;
}

/* scope:resources() -> array of {id, kind, name} inside the scope */
static int scope_m_resources_body(lua_State *L) {
  geneva_ledger *g = get_ledger(L);
  scope *s = check_scope(L, 1);
  geneva_resource *r;
  int i = 0;
  lua_newtable(L);
  for (r = g->head; r; r = r->next) {
    if (!within(r->s, s)) continue;
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)r->id); lua_setfield(L, -2, "id");
    lua_pushstring(L, r->kind); lua_setfield(L, -2, "kind");
    lua_pushstring(L, r->name); lua_setfield(L, -2, "name");
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

static int scope_m_resources(lua_State *L) {
  return call_without_gc(L, scope_m_resources_body);
}

static int scope_m_parent(lua_State *L) {
  scope *s = check_scope(L, 1);
  if (!s->parent) return 0;
  push_scope(L, s->parent);
  return 1;
}

static int scope_tostring(lua_State *L) {
  scope *s = check_scope(L, 1);
  lua_pushfstring(L, "geneva.ledger.Scope '%s'%s", s->name, s->closed ? " (closed)" : "");
  return 1;
}

/* res:bind(fn) -> res: fn() tears the resource down (replaces any earlier) */
static int res_m_bind(lua_State *L) {
  geneva_resource *r = check_res(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (r->in_teardown) return luaL_error(L, "resource '%s' is being torn down", r->name);
  lua_pushvalue(L, 2);
  luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
  r->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 1);
  return 1;
}

/* res:adopt(scope) -> res: moves the resource into another open scope */
static int res_m_adopt(lua_State *L) {
  geneva_resource *r = check_res(L, 1);
  r->s = check_open_scope(L, 2);
  lua_settop(L, 1);
  return 1;
}

/* res:release() -> true | false, msg: tears down now. Idempotent. */
static int res_m_release(lua_State *L) {
  res_ud *u = (res_ud *)luaL_checkudata(L, 1, RES_MT);
  lua_Hook hook = lua_gethook(L);
  int mask = lua_gethookmask(L), count = lua_gethookcount(L);
  int errtab;
  if (!u->r->linked || u->r->in_teardown) { lua_pushboolean(L, 1); return 1; }
  lua_newtable(L);
  errtab = lua_gettop(L);
  geneva_teardown_begin();
  teardown_one(L, u->r, errtab);
  geneva_teardown_end();
  /* teardown_one left no hook: as in scope_close, restore the caller's, or
  ** arm the interrupt hook for a signal held off during the teardown */
  if (geneva_interrupted() && geneva_teardown_depth() == 0)
    geneva_signals_rearm(L);
  else
    lua_sethook(L, hook, mask, count);
  if (luaL_len(L, errtab) == 0) { lua_pushboolean(L, 1); return 1; }
  lua_pushboolean(L, 0);
  lua_rawgeti(L, errtab, 1);
  return 2;
}

/* res:forget() -> true: drops the entry without teardown (the resource ended
** by itself, or is retained on purpose). Idempotent. */
static int res_m_forget(lua_State *L) {
  res_ud *u = (res_ud *)luaL_checkudata(L, 1, RES_MT);
  if (u->r->linked && !u->r->in_teardown) {
    luaL_unref(L, LUA_REGISTRYINDEX, u->r->ref);
    u->r->ref = LUA_NOREF;
    entry_unlink(u->r);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int res_m_is_live(lua_State *L) {
  res_ud *u = (res_ud *)luaL_checkudata(L, 1, RES_MT);
  lua_pushboolean(L, u->r->linked);
  return 1;
}

static int res_index_info(lua_State *L) {
  res_ud *u = (res_ud *)luaL_checkudata(L, 1, RES_MT);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)u->r->id); lua_setfield(L, -2, "id");
  lua_pushstring(L, u->r->kind); lua_setfield(L, -2, "kind");
  lua_pushstring(L, u->r->name); lua_setfield(L, -2, "name");
  lua_pushstring(L, u->r->s->name); lua_setfield(L, -2, "scope");
  return 1;
}

/* __gc of a handle: the ledger, not the collector, owns the resource, so a
** linked entry stays (the scope tears it down); an unlinked one is freed. */
static int res_gc(lua_State *L) {
  res_ud *u = (res_ud *)luaL_checkudata(L, 1, RES_MT);
  if (!u->r) return 0;
  u->r->has_handle = 0;
  if (!u->r->linked) entry_free(u->r);
  u->r = NULL;
  return 0;
}

static int res_tostring(lua_State *L) {
  res_ud *u = (res_ud *)luaL_checkudata(L, 1, RES_MT);
  lua_pushfstring(L, "geneva.ledger.Resource %s '%s'%s", u->r->kind, u->r->name,
                  u->r->linked ? "" : " (released)");
  return 1;
}

static const luaL_Reg scope_meth[] = {
  {"activate", scope_m_activate}, {"reserve", scope_m_reserve},
  {"close", scope_m_close}, {"is_closed", scope_m_is_closed},
  {"resources", scope_m_resources}, {"parent", scope_m_parent},
  {NULL, NULL}
};
static const luaL_Reg res_meth[] = {
  {"bind", res_m_bind}, {"adopt", res_m_adopt}, {"release", res_m_release},
  {"forget", res_m_forget}, {"is_live", res_m_is_live}, {"info", res_index_info},
  {NULL, NULL}
};
static const luaL_Reg funcs[] = {
  {"root", ledger_root}, {"current", ledger_current}, {"scope", ledger_scope},
  {"list", ledger_list}, {"set_step_deadline", ledger_set_step_deadline},
  {NULL, NULL}
};

int luaopen_geneva_ledger_core(lua_State *L) {
  if (!get_ledger(L)) return luaL_error(L, "geneva.ledger.core needs a geneva host");
  if (luaL_newmetatable(L, SCOPE_MT)) {
    luaL_newlib(L, scope_meth);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, scope_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, RES_MT)) {
    luaL_newlib(L, res_meth);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, res_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, res_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  /* the scope cache is weak-valued: an unreferenced scope handle may go */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, "geneva.ledger.scopes");
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}

/* }====== */
