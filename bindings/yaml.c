/*
** yaml.c: YAML reader over libyaml (yaml-0.1), preloaded as geneva.yaml.core.
**
** Thin: it turns libyaml's event stream into Lua values, typing plain
** scalars by the YAML 1.2 core schema, resolving anchors/aliases, rejecting
** duplicate keys, and (on request) recording where every table, key and item
** starts. Merge keys (`<<`) are only validated and recorded here; the Lua face
** (stdlib/geneva/yaml.lua) applies them, and also owns dumping.
**
** Caveats:
** - The value tree is built iteratively (an explicit frame stack), so deep
**   input cannot overflow the C stack; depth is capped by max_depth.
** - libyaml is never on the C stack while we call into Lua: each event is
**   parsed, then handled. The parser, the current event and the frame stack
**   live in a to-be-closed box, so a Lua error (out of memory) frees them.
** - Aliases share the anchored Lua value (tables are not copied). The number
**   of nodes that aliases stand for is capped by max_alias_nodes, so
**   "billion laughs" input fails fast instead of exploding in consumers.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <math.h>

#include <yaml.h>

#include <lua.h>
#include <lauxlib.h>

#include "geneva_internal.h"
#include "handle.h"

#define CORE_TAG  "tag:yaml.org,2002:"

/* Node kinds, as far as the tree builder cares. */
enum { K_SCALAR, K_NULL, K_MAP, K_SEQ, K_SEQMAPS /* seq of maps only */ };

/* {====== Parser box: C-owned state, freed by __close/__gc */

typedef struct frame {
  int kind;               /* K_MAP or K_SEQ */
  int have_key;           /* map: a key waits in the frame's key slot */
  int key_is_merge;       /* map: that key is the merge key `<<` */
  int merge_seen;         /* map: a `<<` was already seen */
  int all_maps;           /* seq: every item so far is a mapping */
  lua_Integer n;          /* seq: items so far */
  size_t start_nodes;     /* ctx nodes count when the node started */
  size_t height;          /* 1 + tallest child so far */
  yaml_mark_t mark;       /* where the node starts */
  yaml_mark_t key_mark;   /* map: where the waiting key starts */
} frame;

typedef struct parser_box {
  geneva_handle h;
  int parser_live;
  int event_live;
  yaml_parser_t parser;
  yaml_event_t event;
  frame *frames;
  size_t nframes, cap;
} parser_box;

/* The release, shared by __close and __gc (handle.h: a box). Copes with a
** partly set up box. Never raises. */
static int box_release(void *p) {
  parser_box *b = (parser_box *)p;
  if (b->event_live) {
    b->event_live = 0;
    yaml_event_delete(&b->event);
  }
  if (b->parser_live) {
    b->parser_live = 0;
    yaml_parser_delete(&b->parser);
  }
  free(b->frames);
  b->frames = NULL;
  b->nframes = b->cap = 0;
  return 0;
}

static const geneva_class parser_class = {
  "geneva.yaml.Parser", NULL, NULL, box_release, NULL, NULL, NULL
};

/* }====== */

/* {====== Core schema (YAML 1.2.2 §10.3) */

enum { C_STR, C_NULL, C_TRUE, C_FALSE, C_DEC, C_OCT, C_HEX, C_FLOAT,
       C_INF, C_NINF, C_NAN };

static int all_in(const char *s, size_t n, const char *set) {
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++)
    if (s[i] == '\0' || !strchr(set, s[i])) return 0;
  return 1;
}

#define DIGITS "0123456789"

/* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
static int is_float(const char *s, size_t n) {
  size_t i = 0, d = 0;
  if (i < n && (s[i] == '-' || s[i] == '+')) i++;
  while (i < n && s[i] >= '0' && s[i] <= '9') i++, d++;
  if (i < n && s[i] == '.') {
    i++;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++, d++;
  }
  if (d == 0) return 0;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    size_t e = 0;
    i++;
    if (i < n && (s[i] == '-' || s[i] == '+')) i++;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++, e++;
    if (e == 0) return 0;
  }
  return i == n;
}

static int classify(const char *s, size_t n) {
  const char *t = s;
  size_t m = n;
  if (n == 0) return C_NULL;
  switch (s[0]) {
    case '~': return n == 1 ? C_NULL : C_STR;
    case 'n': case 'N':
      return (n == 4 && (!strncmp(s, "null", 4) || !strncmp(s, "Null", 4) ||
                         !strncmp(s, "NULL", 4))) ? C_NULL : C_STR;
    case 't': case 'T':
      return (n == 4 && (!strncmp(s, "true", 4) || !strncmp(s, "True", 4) ||
                         !strncmp(s, "TRUE", 4))) ? C_TRUE : C_STR;
    case 'f': case 'F':
      return (n == 5 && (!strncmp(s, "false", 5) || !strncmp(s, "False", 5) ||
                         !strncmp(s, "FALSE", 5))) ? C_FALSE : C_STR;
    default: break;
  }
  if (n > 2 && s[0] == '0' && s[1] == 'o' && all_in(s + 2, n - 2, "01234567"))
    return C_OCT;
  if (n > 2 && s[0] == '0' && s[1] == 'x' &&
      all_in(s + 2, n - 2, DIGITS "abcdefABCDEF"))
    return C_HEX;
  if (s[0] == '-' || s[0] == '+') t++, m--;
  if (all_in(t, m, DIGITS)) return C_DEC;
  if (m == 4 && (!strncmp(t, ".inf", 4) || !strncmp(t, ".Inf", 4) ||
                 !strncmp(t, ".INF", 4)))
    return s[0] == '-' ? C_NINF : C_INF;
  if (n == 4 && (!strncmp(s, ".nan", 4) || !strncmp(s, ".NaN", 4) ||
                 !strncmp(s, ".NAN", 4)))
    return C_NAN;
  if (is_float(s, n)) return C_FLOAT;
  return C_STR;
}

/* Pushes the number an integer of `base` spells; beyond lua_Integer it
** becomes a float, as in Lua's own decimal literals. */
static void push_based(lua_State *L, const char *s, size_t n, int base) {
  uint64_t u = 0;
  double d = 0;
  int big = 0;
  size_t i;
  for (i = 0; i < n; i++) {
    int v = (s[i] >= '0' && s[i] <= '9') ? s[i] - '0'
          : (s[i] | 0x20) - 'a' + 10;
    if (!big && u > (UINT64_C(0x7fffffffffffffff) - (uint64_t)v) / (uint64_t)base) {
      big = 1;
      d = (double)u;
    }
    if (big) d = d * base + v;
    else u = u * (uint64_t)base + (uint64_t)v;
  }
  if (big) lua_pushnumber(L, (lua_Number)d);
  else lua_pushinteger(L, (lua_Integer)u);
}

/*
** Pushes the value of class `cls` for s (NUL-terminated, length n) and
** returns its node kind. Nulls push the value at index i_null.
** Raises only on memory errors.
*/
static int push_class(lua_State *L, int cls, const char *s, size_t n, int i_null) {
  switch (cls) {
    case C_NULL: lua_pushvalue(L, i_null); return K_NULL;
    case C_TRUE: lua_pushboolean(L, 1); return K_SCALAR;
    case C_FALSE: lua_pushboolean(L, 0); return K_SCALAR;
    case C_OCT: push_based(L, s + 2, n - 2, 8); return K_SCALAR;
    case C_HEX: push_based(L, s + 2, n - 2, 16); return K_SCALAR;
    case C_INF: lua_pushnumber(L, (lua_Number)HUGE_VAL); return K_SCALAR;
    case C_NINF: lua_pushnumber(L, -(lua_Number)HUGE_VAL); return K_SCALAR;
    case C_NAN: lua_pushnumber(L, (lua_Number)NAN); return K_SCALAR;
    case C_DEC: case C_FLOAT:
      /* validated above; lua_stringtonumber is locale-proof and turns an
      ** out-of-range decimal into a float */
      if (lua_stringtonumber(L, s) == n + 1) return K_SCALAR;
      break;
    default: break;
  }
  lua_pushlstring(L, s, n);
  return K_SCALAR;
}

/* }====== */

/* {====== Tree builder */

typedef struct load_ctx {
  lua_State *L;
  parser_box *box;
  const char *filename;
  const char *src;
  size_t len;
  int positions, single;
  lua_Integer max_depth, max_alias_nodes;
  size_t nodes;           /* nodes so far, aliases counted as what they expand to */
  size_t alias_nodes;     /* nodes that aliases stand for */
  lua_Integer ndocs, nmerges;
} load_ctx;

/* Fixed stack slots of core.load. */
enum { I_STR = 1, I_OPTS, I_BOX, I_DOCS, I_POS, I_MERGES, I_ANCHORS, I_NULL,
       I_FRAMES };
#define FRAME_SLOTS 4   /* [table, pos info|nil, waiting key|nil, anchor|nil] */

static int frame_base(size_t i) { return I_FRAMES + (int)i * FRAME_SLOTS; }

/* Pushes nil, "<file>:<line>:<col>: <msg>", code; marks are 0-based. */
static int fail_at(load_ctx *c, const char *code, yaml_mark_t m,
                   const char *fmt, ...) {
  lua_State *L = c->L;
  va_list ap;
  lua_pushfstring(L, "%s:%I:%I: ", c->filename, (lua_Integer)m.line + 1,
                  (lua_Integer)m.column + 1);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  luaL_pushfail(L);
  lua_insert(L, -2);
  lua_pushstring(L, code);
  return 3;
}

/* Pushes a short printable form of the value at idx, for messages. */
static const char *key_repr(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TSTRING)
    return lua_pushfstring(L, "'%s'", lua_tostring(L, idx));
  return luaL_tolstring(L, idx, NULL);
}

/* Pushes {line=, col=[, plain=true]} for mark m (1-based). */
static void push_where(lua_State *L, yaml_mark_t m, int plain) {
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)m.line + 1);
  lua_setfield(L, -2, "line");
  lua_pushinteger(L, (lua_Integer)m.column + 1);
  lua_setfield(L, -2, "col");
  if (plain) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "plain");
  }
}

/* info[field][key at kidx] = where(m) */
static void set_where(lua_State *L, int info, const char *field, int kidx,
                      yaml_mark_t m, int plain) {
  lua_getfield(L, info, field);
  lua_pushvalue(L, kidx);
  push_where(L, m, plain);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/*
** With a node's value on top (anchors[name] = {value, size, plain, kind,
** height}); leaves the stack as it was.
*/
static void register_anchor(load_ctx *c, const char *name, int kind,
                            size_t size, int plain, size_t height) {
  lua_State *L = c->L;
  lua_createtable(L, 5, 0);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, 1);
  lua_pushinteger(L, (lua_Integer)size);
  lua_rawseti(L, -2, 2);
  lua_pushboolean(L, plain);
  lua_rawseti(L, -2, 3);
  lua_pushinteger(L, kind);
  lua_rawseti(L, -2, 4);
  lua_pushinteger(L, (lua_Integer)height);
  lua_rawseti(L, -2, 5);
  lua_setfield(L, I_ANCHORS, name);
}

/*
** Pops the finished node on top of the stack into its parent (or the
** document list). `height` is its nesting height (0 for scalars).
** Returns 0, or 3 after pushing nil, msg, code.
*/
static int add_node(load_ctx *c, int kind, yaml_mark_t m, int plain,
                    size_t height) {
  lua_State *L = c->L;
  parser_box *b = c->box;
  frame *f;
  int base;
  if ((lua_Integer)(b->nframes + height) > c->max_depth) {
    lua_pop(L, 1);
    return fail_at(c, "YAML_LIMIT", m, "nesting deeper than %I levels",
                   c->max_depth);
  }
  if (b->nframes == 0) {            /* a document's root */
    lua_rawseti(L, I_DOCS, ++c->ndocs);
    return 0;
  }
  f = &b->frames[b->nframes - 1];
  base = frame_base(b->nframes - 1);
  if (f->height < height + 1) f->height = height + 1;
  if (f->kind == K_SEQ) {           /* [.., value] */
    lua_rawseti(L, base, ++f->n);
    if (kind != K_MAP) f->all_maps = 0;
    if (c->positions) {
      lua_pushinteger(L, f->n);
      set_where(L, base + 1, "items", lua_gettop(L), m, plain);
      lua_pop(L, 1);
    }
    return 0;
  }
  if (!f->have_key) {               /* a mapping key: [.., key] */
    if (kind == K_MAP || kind == K_SEQ || kind == K_SEQMAPS) {
      lua_pop(L, 1);
      return fail_at(c, "YAML_KEY", m,
                     "mapping keys must be scalars, not a %s",
                     kind == K_MAP ? "mapping" : "sequence");
    }
    if (kind == K_NULL) {
      lua_pop(L, 1);
      return fail_at(c, "YAML_KEY", m, "mapping keys must not be null");
    }
    if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1)) {
      lua_pop(L, 1);
      return fail_at(c, "YAML_KEY", m, "mapping keys must not be NaN");
    }
    f->key_mark = m;
    f->have_key = 1;
    if (plain && lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "<<") == 0) {
      lua_pop(L, 1);
      if (f->merge_seen)
        return fail_at(c, "YAML_DUPLICATE_KEY", m, "duplicate merge key '<<'");
      f->merge_seen = f->key_is_merge = 1;
      return 0;
    }
    lua_pushvalue(L, -1);
    if (lua_rawget(L, base) != LUA_TNIL) {
      lua_pop(L, 1);
      return fail_at(c, "YAML_DUPLICATE_KEY", m, "duplicate mapping key %s",
                     key_repr(L, lua_gettop(L)));
    }
    lua_pop(L, 1);
    lua_replace(L, base + 2);
    return 0;
  }
  f->have_key = 0;                  /* a mapping value: [.., value] */
  if (f->key_is_merge) {
    f->key_is_merge = 0;
    if (kind == K_MAP) {            /* one source: wrap it in a list */
      lua_createtable(L, 1, 0);
      lua_insert(L, -2);
      lua_rawseti(L, -2, 1);
    } else if (kind != K_SEQMAPS) {
      lua_pop(L, 1);
      return fail_at(c, "YAML_PARSE", f->key_mark,
                     "merge key '<<' needs a mapping or a sequence of mappings");
    }
    /* merges[#+1] = {t = target, src = {maps}, at = #order, line, col} */
    lua_createtable(L, 0, 5);
    lua_insert(L, -2);
    lua_setfield(L, -2, "src");
    lua_pushvalue(L, base);
    lua_setfield(L, -2, "t");
    if (c->positions) {
      lua_getfield(L, base + 1, "order");
      lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
      lua_setfield(L, -3, "at");
      lua_pop(L, 1);
    }
    lua_pushinteger(L, (lua_Integer)f->key_mark.line + 1);
    lua_setfield(L, -2, "line");
    lua_pushinteger(L, (lua_Integer)f->key_mark.column + 1);
    lua_setfield(L, -2, "col");
    lua_rawseti(L, I_MERGES, ++c->nmerges);
    return 0;
  }
  lua_pushvalue(L, base + 2);       /* [.., value, key] */
  lua_insert(L, -2);                /* [.., key, value] */
  lua_rawset(L, base);
  if (c->positions) {
    set_where(L, base + 1, "keys", base + 2, f->key_mark, 0);
    set_where(L, base + 1, "values", base + 2, m, plain);
    lua_getfield(L, base + 1, "order");
    lua_pushvalue(L, base + 2);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  lua_replace(L, base + 2);
  return 0;
}

/* Opens a collection node: pushes its frame slots. Returns 0 or 3. */
static int open_node(load_ctx *c, int kind, yaml_mark_t m,
                     const yaml_char_t *anchor) {
  lua_State *L = c->L;
  parser_box *b = c->box;
  frame *f;
  if ((lua_Integer)b->nframes >= c->max_depth)
    return fail_at(c, "YAML_LIMIT", m, "nesting deeper than %I levels",
                   c->max_depth);
  if (b->nframes == b->cap) {
    size_t ncap = b->cap ? b->cap * 2 : 16;
    frame *nf = (frame *)realloc(b->frames, ncap * sizeof *nf);
    if (nf == NULL) return geneva_fail(L, "ENOMEM", "not enough memory");
    b->frames = nf;
    b->cap = ncap;
  }
  luaL_checkstack(L, FRAME_SLOTS + 8, "YAML nesting");
  lua_newtable(L);
  if (c->positions) {
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, (lua_Integer)m.line + 1);
    lua_setfield(L, -2, "line");
    lua_pushinteger(L, (lua_Integer)m.column + 1);
    lua_setfield(L, -2, "col");
    lua_pushstring(L, kind == K_MAP ? "map" : "seq");
    lua_setfield(L, -2, "kind");
    if (kind == K_MAP) {
      lua_newtable(L);
      lua_setfield(L, -2, "keys");
      lua_newtable(L);
      lua_setfield(L, -2, "values");
      lua_newtable(L);
      lua_setfield(L, -2, "order");
    } else {
      lua_newtable(L);
      lua_setfield(L, -2, "items");
    }
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2);
    lua_rawset(L, I_POS);             /* pos[table] = info */
  } else {
    lua_pushnil(L);
  }
  lua_pushnil(L);                     /* key slot */
  if (anchor) {
    lua_pushstring(L, (const char *)anchor);
    lua_pushboolean(L, 0);            /* in progress: aliasing it is a cycle */
    lua_setfield(L, I_ANCHORS, (const char *)anchor);
  } else {
    lua_pushnil(L);
  }
  f = &b->frames[b->nframes++];
  memset(f, 0, sizeof *f);
  f->kind = kind;
  f->all_maps = 1;
  f->mark = m;
  f->height = 1;
  f->start_nodes = c->nodes++;
  return 0;
}

/* Closes the innermost collection and adds it to its parent. */
static int close_node(load_ctx *c) {
  lua_State *L = c->L;
  parser_box *b = c->box;
  frame f = b->frames[--b->nframes];
  int base = frame_base(b->nframes);
  int kind = f.kind == K_SEQ ? (f.all_maps ? K_SEQMAPS : K_SEQ) : K_MAP;
  lua_settop(L, base + 3);            /* [table, info, key, anchor] */
  if (!lua_isnil(L, base + 3)) {
    lua_pushvalue(L, base);
    register_anchor(c, lua_tostring(L, base + 3), kind,
                    c->nodes - f.start_nodes, 0, f.height);
    lua_pop(L, 1);
  }
  lua_settop(L, base);                /* [table] */
  return add_node(c, kind, f.mark, 0, f.height);
}

/* Handles a scalar event: types it and adds it. */
static int scalar_node(load_ctx *c, const yaml_event_t *ev) {
  lua_State *L = c->L;
  const char *s = (const char *)ev->data.scalar.value;
  size_t n = ev->data.scalar.length;
  const char *tag = (const char *)ev->data.scalar.tag;
  int plain = tag == NULL && ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
  int kind = K_SCALAR;
  if (plain) {
    kind = push_class(L, classify(s, n), s, n, I_NULL);
  } else if (tag && strncmp(tag, CORE_TAG, sizeof CORE_TAG - 1) == 0 &&
             strcmp(tag + sizeof CORE_TAG - 1, "str") != 0) {
    const char *t = tag + sizeof CORE_TAG - 1;
    int cls = classify(s, n), ok;
    if (strcmp(t, "int") == 0) ok = cls == C_DEC || cls == C_OCT || cls == C_HEX;
    else if (strcmp(t, "float") == 0) ok = cls >= C_DEC && cls <= C_NAN;
    else if (strcmp(t, "bool") == 0) ok = cls == C_TRUE || cls == C_FALSE;
    else if (strcmp(t, "null") == 0) ok = cls == C_NULL;
    else ok = -1;                     /* another schema's tag: a string */
    if (ok == 0)
      return fail_at(c, "YAML_TAG", ev->start_mark, "invalid !!%s value '%s'", t, s);
    if (ok < 0) {
      lua_pushlstring(L, s, n);
    } else {
      kind = push_class(L, cls, s, n, I_NULL);
      if (strcmp(t, "int") == 0 && !lua_isinteger(L, -1)) {
        /* a plain one becomes a float, as Lua's literals do; an explicit
        ** !!int asks for an integer, and a rounded float is not one */
        lua_pop(L, 1);
        return fail_at(c, "YAML_TAG", ev->start_mark,
                       "!!int value '%s' is beyond the int64 range", s);
      }
      if (strcmp(t, "float") == 0 && lua_isinteger(L, -1))
        lua_pushnumber(L, (lua_Number)lua_tointeger(L, -1)), lua_remove(L, -2);
    }
  } else {                            /* quoted, !!str, '!' or a local tag */
    lua_pushlstring(L, s, n);
  }
  c->nodes++;
  if (ev->data.scalar.anchor)
    register_anchor(c, (const char *)ev->data.scalar.anchor, kind, 1, plain, 0);
  return add_node(c, kind, ev->start_mark, plain, 0);
}

/* Handles an alias event: pushes the anchored value and adds it. */
static int alias_node(load_ctx *c, const yaml_event_t *ev) {
  lua_State *L = c->L;
  const char *name = (const char *)ev->data.alias.anchor;
  size_t size, height;
  int plain, kind, t = lua_getfield(L, I_ANCHORS, name);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return fail_at(c, "YAML_ALIAS", ev->start_mark, "unknown alias '*%s'", name);
  }
  if (t != LUA_TTABLE) {
    lua_pop(L, 1);
    return fail_at(c, "YAML_ALIAS", ev->start_mark,
                   "alias '*%s' refers to a node that contains it", name);
  }
  lua_rawgeti(L, -1, 2);
  size = (size_t)lua_tointeger(L, -1);
  lua_rawgeti(L, -2, 3);
  plain = lua_toboolean(L, -1);
  lua_rawgeti(L, -3, 4);
  kind = (int)lua_tointeger(L, -1);
  lua_rawgeti(L, -4, 5);
  height = (size_t)lua_tointeger(L, -1);
  lua_pop(L, 4);
  if (size > (size_t)c->max_alias_nodes - c->alias_nodes) {
    lua_pop(L, 1);
    return fail_at(c, "YAML_LIMIT", ev->start_mark,
                   "aliases expand to more than %I nodes", c->max_alias_nodes);
  }
  c->alias_nodes += size;
  c->nodes += size;
  lua_rawgeti(L, -1, 1);
  lua_remove(L, -2);
  return add_node(c, kind, ev->start_mark, plain, height);
}

/* Pushes nil, msg, code for the parser's own error. */
static int parser_error(load_ctx *c) {
  yaml_parser_t *p = &c->box->parser;
  yaml_mark_t m = p->problem_mark;
  const char *problem = p->problem ? p->problem : "unknown error";
  if (p->error == YAML_MEMORY_ERROR)
    return geneva_fail(c->L, "ENOMEM", "not enough memory");
  if (p->error == YAML_READER_ERROR) {
    /* the reader reports a byte offset, not a mark: count to it */
    size_t i, end = p->problem_offset < c->len ? p->problem_offset : c->len;
    memset(&m, 0, sizeof m);
    for (i = 0; i < end; i++) {
      unsigned char ch = (unsigned char)c->src[i];
      if (ch == '\n' || (ch == '\r' && (i + 1 >= c->len || c->src[i + 1] != '\n')))
        m.line++, m.column = 0;
      else if ((ch & 0xC0) != 0x80 && ch != '\r')
        m.column++;
    }
    if (p->problem_value != -1) {
      char hex[8];
      snprintf(hex, sizeof hex, "%02X", (unsigned)p->problem_value & 0xFFFFu);
      return fail_at(c, "YAML_PARSE", m, "%s (0x%s)", problem, hex);
    }
    return fail_at(c, "YAML_PARSE", m, "%s", problem);
  }
  if (p->context)
    return fail_at(c, "YAML_PARSE", m, "%s (%s at %I:%I)", problem, p->context,
                   (lua_Integer)p->context_mark.line + 1,
                   (lua_Integer)p->context_mark.column + 1);
  return fail_at(c, "YAML_PARSE", m, "%s", problem);
}

/* Runs the parser over the whole input. Returns 0, or 3 after a failure. */
static int build(load_ctx *c) {
  parser_box *b = c->box;
  unsigned long count = 0;
  for (;;) {
    yaml_event_t *ev = &b->event;
    int r = 0, done = 0;
    if (!yaml_parser_parse(&b->parser, ev)) return parser_error(c);
    b->event_live = 1;
    if ((++count & 0xFFF) == 0 && geneva_interrupted())
      return geneva_fail(c->L, "EINTR", "interrupted");
    switch (ev->type) {
      case YAML_STREAM_END_EVENT:
        done = 1;
        break;
      case YAML_DOCUMENT_START_EVENT:
        if (c->single && c->ndocs > 0)
          return fail_at(c, "YAML_PARSE", ev->start_mark,
                         "expected a single document, found another");
        lua_newtable(c->L);           /* anchors are per document */
        lua_replace(c->L, I_ANCHORS);
        break;
      case YAML_SCALAR_EVENT:
        r = scalar_node(c, ev);
        break;
      case YAML_ALIAS_EVENT:
        r = alias_node(c, ev);
        break;
      case YAML_SEQUENCE_START_EVENT:
        r = open_node(c, K_SEQ, ev->start_mark, ev->data.sequence_start.anchor);
        break;
      case YAML_MAPPING_START_EVENT:
        r = open_node(c, K_MAP, ev->start_mark, ev->data.mapping_start.anchor);
        break;
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT:
        r = close_node(c);
        break;
      default:
        break;
    }
    if (r) return r;
    b->event_live = 0;
    yaml_event_delete(ev);
    if (done) return 0;
  }
}

/*
** core.load(str, opts) -> docs, pos|nil, merges | nil, msg, code
** opts: filename (string), positions, single (booleans), max_depth,
** max_alias_nodes (integers), null (the value nulls become).
** docs is the array of documents; merges lists the `<<` merges for the Lua
** face to apply, innermost first. Raises only on misuse and memory errors;
** all C state is freed on every path (the parser box is to-be-closed).
*/
static int yaml_load(lua_State *L) {
  load_ctx c;
  parser_box *b;
  int r;
  memset(&c, 0, sizeof c);
  c.L = L;
  c.src = luaL_checklstring(L, I_STR, &c.len);
  luaL_checktype(L, I_OPTS, LUA_TTABLE);
  lua_settop(L, I_OPTS);
  /* validate everything before acquiring anything */
  if (lua_getfield(L, I_OPTS, "filename") == LUA_TSTRING)
    c.filename = lua_tostring(L, -1);   /* kept alive by opts */
  else if (lua_isnil(L, -1))
    c.filename = "<string>";
  else
    return luaL_argerror(L, I_OPTS, "'filename' must be a string");
  lua_getfield(L, I_OPTS, "positions");
  c.positions = lua_toboolean(L, -1);
  lua_getfield(L, I_OPTS, "single");
  c.single = lua_toboolean(L, -1);
  lua_getfield(L, I_OPTS, "max_depth");
  c.max_depth = luaL_optinteger(L, -1, 1000);
  lua_getfield(L, I_OPTS, "max_alias_nodes");
  c.max_alias_nodes = luaL_optinteger(L, -1, 1000000);
  luaL_argcheck(L, c.max_depth > 0 && c.max_alias_nodes >= 0, I_OPTS,
                "limits must be positive");
  lua_settop(L, I_OPTS);
  b = (parser_box *)geneva_handle_new(L, &parser_class, sizeof *b, 0);
  geneva_handle_open(L, b);           /* empty: release copes */
  lua_toclose(L, I_BOX);
  lua_newtable(L);                    /* I_DOCS */
  if (c.positions) lua_newtable(L); else lua_pushnil(L);   /* I_POS */
  lua_newtable(L);                    /* I_MERGES */
  lua_newtable(L);                    /* I_ANCHORS */
  if (lua_getfield(L, I_OPTS, "null") == LUA_TNIL) {       /* I_NULL */
    lua_pop(L, 1);
    lua_pushlightuserdata(L, NULL);
  }
  c.box = b;
  if (!yaml_parser_initialize(&b->parser))
    return geneva_fail(L, "ENOMEM", "not enough memory");
  b->parser_live = 1;
  yaml_parser_set_input_string(&b->parser, (const unsigned char *)c.src, c.len);
  /* UTF-8 only: no guessing UTF-16 from garbage (a UTF-8 BOM is skipped) */
  yaml_parser_set_encoding(&b->parser, YAML_UTF8_ENCODING);
  r = build(&c);
  geneva_handle_release(b);
  if (r) return r;
  lua_pushvalue(L, I_DOCS);
  lua_pushvalue(L, I_POS);
  lua_pushvalue(L, I_MERGES);
  return 3;
}

/* core.resolve(str) -> value: the core-schema value of a plain scalar
** (nulls give core.null). Raises on a non-string argument. */
static int yaml_resolve(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_settop(L, 1);
  lua_pushlightuserdata(L, NULL);
  if (strlen(s) != n) lua_pushvalue(L, 1);   /* embedded NUL: a string */
  else push_class(L, classify(s, n), s, n, 2);
  return 1;
}

/* }====== */

static const luaL_Reg funcs[] = {
  {"load", yaml_load},
  {"resolve", yaml_resolve},
  {NULL, NULL}
};

/* luaopen_geneva_yaml_core: pushes the module table; builds the parser box
** metatable first, so every box is finalizable. */
int luaopen_geneva_yaml_core(lua_State *L);
int luaopen_geneva_yaml_core(lua_State *L) {
  geneva_class_register(L, &parser_class, NULL);
  luaL_newlib(L, funcs);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  return 1;
}
