/*
** json.c: geneva.json.core, our own JSON encoder and decoder.
**
** Why not lua-cjson 2.1.0 (Debian 12's): it decodes `1` as the float 1.0,
** prints numbers with %.14g and cannot tell `[]` from `{}`. Fixing those up
** around it would cost a second pass over every value, so this file does the
** whole job in one pass and keeps Lua 5.4's integer/float distinction:
**   - a number without '.', 'e' or 'E' decodes to an integer (exactly, in
**     int64 range; beyond it to a float); any other number to a float;
**   - integers encode with %d; floats with the shortest of %.15g/%.16g/%.17g
**     that reads back to the same double, plus ".0" when that text would
**     look like an integer, so floats stay floats across a round trip;
**   - arrays decode to tables whose metatable is `array_mt`, and tables with
**     that metatable encode as arrays (empty -> `[]`); `object_mt` forces an
**     object (empty -> `{}`); an unmarked empty table encodes as `{}`;
**   - `null` decodes to the `null` sentinel: the NULL light userdata, shared
**     with cjson.null, geneva.sqlite and geneva.yaml;
**   - text is UTF-8 both ways (RFC 8259 §8.1), so what we write is JSON any
**     reader accepts and what we read means one thing. Decode rejects
**     invalid UTF-8 (overlong forms, surrogates, beyond U+10FFFF, stray
**     bytes) and lone surrogate \u escapes, with the byte offset. Encode
**     raises on a string that is not valid UTF-8, naming its path, as it
**     does for NaN: a lossy write of data (a where, a name) would be a
**     silent coercion. Output meant for people or carrying messages passes
**     invalid_utf8 = "replace": each bad byte becomes U+FFFD (as Go's
**     encoding/json does). Bytes never need to travel through JSON: column
**     values don't (BLOBs and the NaN BLOB stay in SQLite files), bytecode
**     travels as base64, and errors.plain (job records, worker messages)
**     replaces bad bytes in error fields.
**
** Memory: the output/scratch buffer lives in a to-be-closed userdata ("box")
** on the Lua stack, so raising at any point frees it; nothing else is
** malloc'd. Nesting is capped (JSON_MAX_DEPTH) in both directions, so hostile
** input cannot overflow the C stack.
*/
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "geneva_internal.h"
#include "handle.h"

int luaopen_geneva_json_core(lua_State *L);  /* called by the host's preload table */

#define JSON_MAX_DEPTH 1000
#define INLINE_SIZE 512

/* Upvalues shared by encode, decode and canonical. */
#define UV_NULL lua_upvalueindex(1)
#define UV_ARRAY_MT lua_upvalueindex(2)
#define UV_OBJECT_MT lua_upvalueindex(3)

/* {====== Buffer box */

typedef struct jbuf {
  geneva_handle h;
  char *p;                 /* == inl until the first growth */
  size_t len, cap;
  char inl[INLINE_SIZE];
} jbuf;

/* The release (__gc and __close; handle.h: a box): frees the heap part. */
static int jbuf_release(void *p) {
  jbuf *b = (jbuf *)p;
  if (b->p && b->p != b->inl) free(b->p);
  b->p = b->inl;
  b->len = 0;
  b->cap = INLINE_SIZE;
  return 0;
}

static const geneva_class jbuf_class = {
  "geneva.json.Buffer", NULL, NULL, jbuf_release, NULL, NULL, NULL
};

/* Pushes a new empty buffer marked to-be-closed; raises only on memory. */
static jbuf *jbuf_new(lua_State *L) {
  jbuf *b = (jbuf *)geneva_handle_new(L, &jbuf_class, sizeof *b, 0);
  b->p = b->inl;
  b->len = 0;
  b->cap = INLINE_SIZE;
  geneva_handle_open(L, b);
  lua_toclose(L, -1);
  return b;
}

/* Makes room for n more bytes; raises on memory (the box still owns p). */
static void jbuf_grow(lua_State *L, jbuf *b, size_t n) {
  size_t cap = b->cap;
  char *np;
  if (n > SIZE_MAX / 2 - b->len) luaL_error(L, "json: buffer too large");
  while (cap < b->len + n) cap *= 2;
  if (b->p == b->inl) {
    np = (char *)malloc(cap);
    if (np) memcpy(np, b->inl, b->len);
  } else {
    np = (char *)realloc(b->p, cap);
  }
  if (!np) luaL_error(L, "json: not enough memory");
  b->p = np;
  b->cap = cap;
}

#define jbuf_reserve(L, b, n) \
  ((void)((b)->cap - (b)->len >= (size_t)(n) ? 0 : (jbuf_grow((L), (b), (n)), 0)))

static void jbuf_add(lua_State *L, jbuf *b, const char *s, size_t n) {
  jbuf_reserve(L, b, n);
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void jbuf_addc(lua_State *L, jbuf *b, char c) {
  jbuf_reserve(L, b, 1);
  b->p[b->len++] = c;
}

/* }====== */

/* {====== UTF-8 */

/* The length (1..4) of the well-formed UTF-8 sequence at p (Unicode's
** table 3-7: no overlong forms, no surrogates, nothing past U+10FFFF),
** or 0 when p does not start one. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end) {
  unsigned char c = p[0], lo = 0x80, hi = 0xBF;
  size_t n, i;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;                   /* overlong */
    if (c == 0xED) hi = 0x9F;                   /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;                   /* overlong */
    if (c == 0xF4) hi = 0x8F;                   /* past U+10FFFF */
  } else {
    return 0;                                   /* continuation, C0, C1, F5.. */
  }
  if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi) return 0;
  for (i = 2; i < n; i++)
    if (p[i] < 0x80 || p[i] > 0xBF) return 0;
  return n;
}

/* }====== */

/* {====== Encoder */

typedef struct enc {
  lua_State *L;
  jbuf *b;
  int indent;              /* spaces per level; 0 = compact */
  int sort;                /* sort object keys (canonical) */
  int replace;             /* invalid UTF-8 -> U+FFFD (else raise) */
  int depth;
  char decpoint;           /* the locale's decimal point, for snprintf/strtod */
  const void *anc[JSON_MAX_DEPTH + 1];   /* tables being encoded (cycles) */
  struct {                 /* the key at each level, for error paths */
    lua_Integer idx;       /* array index, or 0: the key is at stack slot */
    int slot;
  } path[JSON_MAX_DEPTH + 1];
} enc;

/* Raises "json.encode: <what> at <path>"; never returns. */
static int enc_error(enc *e, const char *what) {
  lua_State *L = e->L;
  luaL_Buffer pb;
  int d;
  luaL_buffinit(L, &pb);
  luaL_addstring(&pb, "json: ");
  luaL_addstring(&pb, what);
  if (e->depth == 0) {
    luaL_addstring(&pb, " at top level");
  } else {
    luaL_addstring(&pb, " at ");
    for (d = 0; d < e->depth; d++) {
      char num[32];
      if (e->depth > 20 && d == 8) {            /* keep deep paths readable */
        snprintf(num, sizeof num, "...(%d levels)...", e->depth - 16);
        luaL_addstring(&pb, num);
        d = e->depth - 8;
      }
      if (e->path[d].idx) {
        snprintf(num, sizeof num, "[" LUA_INTEGER_FMT "]", (LUAI_UACINT)e->path[d].idx);
        luaL_addstring(&pb, num);
      } else if (lua_type(L, e->path[d].slot) == LUA_TSTRING) {
        size_t n, i;
        const char *k = lua_tolstring(L, e->path[d].slot, &n);
        int plain = n > 0 && !(k[0] >= '0' && k[0] <= '9');
        for (i = 0; i < n && plain; i++)
          plain = (k[i] == '_' || (k[i] >= 'a' && k[i] <= 'z') ||
                   (k[i] >= 'A' && k[i] <= 'Z') || (k[i] >= '0' && k[i] <= '9'));
        if (plain) {
          luaL_addchar(&pb, '.');
          luaL_addlstring(&pb, k, n);
        } else {
          luaL_addstring(&pb, "[\"");
          luaL_addlstring(&pb, k, n > 40 ? 40 : n);
          luaL_addstring(&pb, n > 40 ? "...\"]" : "\"]");
        }
      } else {
        snprintf(num, sizeof num, "[" LUA_INTEGER_FMT "]",
                 (LUAI_UACINT)lua_tointeger(L, e->path[d].slot));
        luaL_addstring(&pb, num);
      }
    }
  }
  luaL_pushresult(&pb);
  return lua_error(L);
}

static void enc_newline(enc *e, int depth) {
  if (!e->indent) return;
  jbuf_reserve(e->L, e->b, 1 + (size_t)e->indent * (size_t)depth);
  e->b->p[e->b->len++] = '\n';
  memset(e->b->p + e->b->len, ' ', (size_t)e->indent * (size_t)depth);
  e->b->len += (size_t)e->indent * (size_t)depth;
}

static void enc_string(enc *e, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  jbuf *b = e->b;
  size_t i, run = 0;
  jbuf_reserve(e->L, b, n + 2);
  b->p[b->len++] = '"';
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    const char *esc;
    char u[6];
    size_t elen = 2;
    if (c >= 0x80) {
      size_t k = utf8_seq((const unsigned char *)s + i, (const unsigned char *)s + n);
      if (k) { i += k - 1; continue; }
      if (!e->replace) {
        char what[64];
        snprintf(what, sizeof what, "invalid UTF-8 in string (byte %zu)", i + 1);
        enc_error(e, what);
      }
      esc = "\xEF\xBF\xBD";                      /* U+FFFD for this byte */
      elen = 3;
    } else if (c >= 0x20 && c != '"' && c != '\\') {
      continue;
    } else switch (c) {
      case '"': esc = "\\\""; break;
      case '\\': esc = "\\\\"; break;
      case '\n': esc = "\\n"; break;
      case '\r': esc = "\\r"; break;
      case '\t': esc = "\\t"; break;
      case '\b': esc = "\\b"; break;
      case '\f': esc = "\\f"; break;
      default:
        u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
        u[4] = hex[c >> 4]; u[5] = hex[c & 15];
        esc = u;
        elen = 6;
    }
    jbuf_add(e->L, b, s + run, i - run);
    jbuf_add(e->L, b, esc, elen);
    run = i + 1;
  }
  jbuf_add(e->L, b, s + run, n - run);
  jbuf_addc(e->L, b, '"');
}

/* Writes the shortest %.{15,16,17}g text that reads back as d, with '.'
** as the decimal point and ".0" appended when it would read as an integer. */
static size_t format_float(char *out, size_t size, double d, char decpoint) {
  int prec, n = 0;
  size_t i;
  for (prec = 15; prec <= 17; prec++) {
    n = snprintf(out, size, "%.*g", prec, d);
    if (strtod(out, NULL) == d) break;   /* same locale on both sides */
  }
  for (i = 0; i < (size_t)n; i++)
    if (out[i] == decpoint) out[i] = '.';
  if (!strpbrk(out, ".eE")) {
    out[n++] = '.';
    out[n++] = '0';
    out[n] = '\0';
  }
  return (size_t)n;
}

static void enc_value(enc *e, int idx);

/* Pushes the JSON string form of an object key at slot `k` (a string, or
** an integer in an object-marked table). */
static const char *key_text(lua_State *L, int k, size_t *n) {
  if (lua_type(L, k) == LUA_TSTRING) return lua_tolstring(L, k, n);
  lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, k));
  return lua_tolstring(L, -1, n);   /* caller pops */
}

typedef struct keyent {
  const char *s;
  size_t n;
  int i;                   /* index of the original key in the keys table */
} keyent;

static int keycmp(const void *a, const void *b) {
  const keyent *x = (const keyent *)a, *y = (const keyent *)b;
  size_t n = x->n < y->n ? x->n : y->n;
  int c = memcmp(x->s, y->s, n);
  if (c) return c;
  return x->n < y->n ? -1 : x->n > y->n;
}

/* Encodes the object at idx with its keys sorted bytewise. */
static void enc_object_sorted(enc *e, int idx, lua_Integer count) {
  lua_State *L = e->L;
  int keys, i, n = 0, first = 1;
  keyent *ents;
  if (count > INT_MAX / 2 - 1) enc_error(e, "object too large");
  lua_createtable(L, (int)count * 2, 0);        /* [keys] */
  keys = lua_gettop(L);
  ents = (keyent *)lua_newuserdatauv(L, sizeof(keyent) * (size_t)(count ? count : 1), 0);
  lua_pushnil(L);
  while (lua_next(L, idx)) {                    /* [keys, ents, k, v] */
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, keys, 2 * n + 2);            /* original key */
    if (lua_type(L, -1) == LUA_TSTRING) {
      lua_pushvalue(L, -1);
    } else {
      lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, -1));
    }
    lua_rawseti(L, keys, 2 * n + 1);            /* its text (anchored) */
    n++;
  }
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, keys, 2 * i + 1);
    ents[i].s = lua_tolstring(L, -1, &ents[i].n);   /* anchored in keys */
    ents[i].i = 2 * i + 2;
    lua_pop(L, 1);
  }
  qsort(ents, (size_t)n, sizeof(keyent), keycmp);
  jbuf_addc(L, e->b, '{');
  for (i = 0; i < n; i++) {
    int kslot;
    if (i > 0 && keycmp(&ents[i - 1], &ents[i]) == 0) {
      lua_rawgeti(L, keys, ents[i].i);
      e->path[e->depth].idx = 0;
      e->path[e->depth].slot = lua_gettop(L);
      e->depth++;
      enc_error(e, "duplicate key (integer and string forms)");
    }
    if (!first) jbuf_addc(L, e->b, ',');
    first = 0;
    enc_newline(e, e->depth + 1);
    enc_string(e, ents[i].s, ents[i].n);
    jbuf_addc(L, e->b, ':');
    if (e->indent) jbuf_addc(L, e->b, ' ');
    lua_rawgeti(L, keys, ents[i].i);            /* [keys, ents, k] */
    kslot = lua_gettop(L);
    lua_pushvalue(L, kslot);
    lua_rawget(L, idx);                         /* [keys, ents, k, v] */
    e->path[e->depth].idx = 0;
    e->path[e->depth].slot = kslot;
    e->depth++;
    enc_value(e, lua_gettop(L));
    e->depth--;
    lua_pop(L, 2);
  }
  if (n) enc_newline(e, e->depth);
  jbuf_addc(L, e->b, '}');
  lua_pop(L, 2);
}

static void enc_table(enc *e, int idx) {
  lua_State *L = e->L;
  const void *self = lua_topointer(L, idx);
  lua_Integer count = 0, maxi = 0;
  int kind = 0;            /* 0 auto, 1 array, 2 object */
  int nstr = 0, i;
  if (e->depth >= JSON_MAX_DEPTH) enc_error(e, "nesting deeper than 1000 levels");
  for (i = 0; i < e->depth; i++)
    if (e->anc[i] == self) enc_error(e, "cycle (table contains itself)");
  e->anc[e->depth] = self;
  luaL_checkstack(L, 8, "json: nesting too deep");
  if (lua_getmetatable(L, idx)) {
    if (lua_rawequal(L, -1, UV_ARRAY_MT)) kind = 1;
    else if (lua_rawequal(L, -1, UV_OBJECT_MT)) kind = 2;
    lua_pop(L, 1);
  }
  /* one pass over the keys decides the shape and rejects bad keys */
  lua_pushnil(L);
  while (lua_next(L, idx)) {                    /* [k, v] */
    int kt = lua_type(L, -2);
    lua_pop(L, 1);
    count++;
    if (kt == LUA_TSTRING) {
      nstr++;
      if (kind == 1) {
        e->path[e->depth].idx = 0;
        e->path[e->depth].slot = lua_gettop(L);
        e->depth++;
        enc_error(e, "string key in a table marked as array");
      }
    } else if (kt == LUA_TNUMBER && lua_isinteger(L, -1)) {
      lua_Integer k = lua_tointeger(L, -1);
      if (k > maxi) maxi = k;
      if (k < 1 && kind != 2) {
        e->path[e->depth].idx = 0;
        e->path[e->depth].slot = lua_gettop(L);
        e->depth++;
        enc_error(e, "array index below 1");
      }
    } else {
      char what[80];
      snprintf(what, sizeof what, "cannot encode a key of type %s%s",
               luaL_typename(L, -1),
               kt == LUA_TNUMBER ? " (not an integer)" : "");
      enc_error(e, what);
    }
  }
  if (kind == 0) {
    if (count == 0) kind = 2;
    else if (nstr == count) kind = 2;
    else if (nstr == 0) kind = 1;
    else enc_error(e, "mixed integer and string keys");
  }
  if (kind == 2) {
    int first = 1;
    if (e->sort) {
      enc_object_sorted(e, idx, count);
      return;
    }
    jbuf_addc(L, e->b, '{');
    lua_pushnil(L);
    while (lua_next(L, idx)) {                  /* [k, v] */
      size_t n;
      int kslot = lua_gettop(L) - 1;
      const char *k;
      if (!first) jbuf_addc(L, e->b, ',');
      first = 0;
      enc_newline(e, e->depth + 1);
      k = key_text(L, kslot, &n);
      enc_string(e, k, n);
      if (lua_gettop(L) > kslot + 1) lua_pop(L, 1);   /* integer key text */
      jbuf_addc(L, e->b, ':');
      if (e->indent) jbuf_addc(L, e->b, ' ');
      e->path[e->depth].idx = 0;
      e->path[e->depth].slot = kslot;
      e->depth++;
      enc_value(e, kslot + 1);
      e->depth--;
      lua_pop(L, 1);
    }
    if (!first) enc_newline(e, e->depth);
    jbuf_addc(L, e->b, '}');
    return;
  }
  if (maxi != count) {
    char what[96];
    snprintf(what, sizeof what, "sparse array (%lld elements, highest index %lld)",
             (long long)count, (long long)maxi);
    enc_error(e, what);
  }
  jbuf_addc(L, e->b, '[');
  for (i = 1; i <= count; i++) {
    if (i > 1) jbuf_addc(L, e->b, ',');
    enc_newline(e, e->depth + 1);
    lua_rawgeti(L, idx, i);
    e->path[e->depth].idx = i;
    e->depth++;
    enc_value(e, lua_gettop(L));
    e->depth--;
    lua_pop(L, 1);
  }
  if (count) enc_newline(e, e->depth);
  jbuf_addc(L, e->b, ']');
}

static void enc_value(enc *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      jbuf_add(L, e->b, "null", 4);
      break;
    case LUA_TBOOLEAN:
      if (lua_toboolean(L, idx)) jbuf_add(L, e->b, "true", 4);
      else jbuf_add(L, e->b, "false", 5);
      break;
    case LUA_TNUMBER: {
      char num[64];
      size_t n;
      if (lua_isinteger(L, idx)) {
        n = (size_t)snprintf(num, sizeof num, LUA_INTEGER_FMT,
                             (LUAI_UACINT)lua_tointeger(L, idx));
      } else {
        double d = (double)lua_tonumber(L, idx);
        if (!isfinite(d)) enc_error(e, isnan(d) ? "cannot encode NaN" : "cannot encode infinity");
        n = format_float(num, sizeof num, d, e->decpoint);
      }
      jbuf_add(L, e->b, num, n);
      break;
    }
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      enc_string(e, s, n);
      break;
    }
    case LUA_TTABLE:
      enc_table(e, idx);
      break;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) {      /* cjson.null */
        jbuf_add(L, e->b, "null", 4);
        break;
      }
      enc_error(e, "cannot encode a light userdata");
      break;
    case LUA_TUSERDATA:
      if (lua_rawequal(L, idx, UV_NULL)) {
        jbuf_add(L, e->b, "null", 4);
        break;
      }
      /* fall through */
    default: {
      char what[64];
      snprintf(what, sizeof what, "cannot encode a %s", luaL_typename(L, idx));
      enc_error(e, what);
    }
  }
}

/* Runs the encoder over the value at slot 1; pushes the text. */
static int encode_common(lua_State *L, int indent, int sort, int replace) {
  enc state;               /* ~24 KB of C stack; holds no owned memory */
  enc *e = &state;
  int top;
  e->L = L;
  e->indent = indent;
  e->sort = sort;
  e->replace = replace;
  e->depth = 0;
  e->decpoint = localeconv()->decimal_point[0];
  e->b = jbuf_new(L);
  top = lua_gettop(L);
  enc_value(e, 1);
  lua_settop(L, top);
  lua_pushlstring(L, e->b->p, e->b->len);
  return 1;
}

/*
** encode(v [, opts]) -> string. opts: indent (0..16 spaces; pretty output),
** sort_keys (boolean), invalid_utf8 ("error", the default, or "replace":
** each byte of a string that is not UTF-8 becomes U+FFFD). Raises on
** values JSON cannot hold, naming the path: functions/userdata/threads,
** cycles, NaN/inf, strings that are not UTF-8, mixed or sparse keys,
** nesting deeper than 1000. The result string is owned by Lua.
*/
static int json_encode(lua_State *L) {
  int indent = 0, sort = 0, replace = 0;
  luaL_checkany(L, 1);
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
      if (strcmp(k, "indent") == 0) {
        lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
        luaL_argcheck(L, n >= 0 && n <= 16, 2, "indent must be an integer 0..16");
        indent = (int)n;
      } else if (strcmp(k, "sort_keys") == 0) {
        sort = lua_toboolean(L, -1);
      } else if (strcmp(k, "invalid_utf8") == 0) {
        static const char *const modes[] = {"error", "replace", NULL};
        replace = luaL_checkoption(L, -1, NULL, modes);
      } else {
        return luaL_argerror(L, 2, lua_pushfstring(L, "unknown option '%s'", k));
      }
      lua_pop(L, 1);
    }
  }
  lua_settop(L, 1);
  return encode_common(L, indent, sort, replace);
}

/*
** canonical(v) -> string: compact, keys sorted bytewise, same number rules
** as encode; identical for equal values in any process (pairs order is
** seeded per process). Raises like encode.
*/
static int json_canonical(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  return encode_common(L, 0, 1, 0);
}

/* }====== */

/* {====== Decoder */

typedef struct dec {
  lua_State *L;
  const char *s, *p, *end;
  jbuf *b;
  int depth;
  int null_as_nil;
  int exact_integers;      /* an integer beyond int64 fails (else a float) */
  int unique_keys;         /* a key twice in one object fails (else last wins) */
  int keys_idx;            /* key_order: stack index of the keys array, or 0 */
  lua_Integer nkeys;
  const char *err;         /* static message or msgbuf, or NULL */
  const char *errpos;
  char msgbuf[128];        /* a message naming what failed */
} dec;

/* Records the first failure; returns -1 for `return dec_failat(...)`. */
static int dec_failat(dec *d, const char *msg, const char *at) {
  d->err = msg;
  d->errpos = at;
  return -1;
}

static void skip_ws(dec *d) {
  const char *p = d->p;
  while (p < d->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  d->p = p;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int read_hex4(dec *d, const char *p, unsigned *out) {
  int i;
  unsigned v = 0;
  if (d->end - p < 4) return dec_failat(d, "truncated \\u escape", p - 2);
  for (i = 0; i < 4; i++) {
    int h = hexval((unsigned char)p[i]);
    if (h < 0) return dec_failat(d, "invalid \\u escape", p - 2);
    v = v * 16 + (unsigned)h;
  }
  *out = v;
  return 0;
}

static void add_utf8(dec *d, unsigned cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) { u[0] = (char)cp; n = 1; }
  else if (cp < 0x800) {
    u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2;
  } else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
  } else {
    u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
  }
  jbuf_add(d->L, d->b, u, n);
}

/* d->p is at the opening quote; pushes the string. */
static int dec_string(dec *d) {
  const char *p = d->p + 1, *run;
  jbuf *b = d->b;
  /* fast path: no escapes */
  for (run = p; p < d->end; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') {
      lua_pushlstring(d->L, run, (size_t)(p - run));
      d->p = p + 1;
      return 0;
    }
    if (c >= 0x80) {
      size_t k = utf8_seq((const unsigned char *)p, (const unsigned char *)d->end);
      if (!k) return dec_failat(d, "invalid UTF-8 in string", p);
      p += k - 1;
    }
    if (c == '\\' || c < 0x20) break;
  }
  b->len = 0;
  for (;;) {
    unsigned char c;
    if (p >= d->end) return dec_failat(d, "unterminated string", d->p);
    c = (unsigned char)*p;
    if (c == '"') break;
    if (c < 0x20) return dec_failat(d, "control character in string", p);
    if (c >= 0x80) {
      size_t k = utf8_seq((const unsigned char *)p, (const unsigned char *)d->end);
      if (!k) return dec_failat(d, "invalid UTF-8 in string", p);
      p += k;
      continue;
    }
    if (c != '\\') { p++; continue; }
    jbuf_add(d->L, b, run, (size_t)(p - run));
    if (p + 1 >= d->end) return dec_failat(d, "unterminated string", d->p);
    switch (p[1]) {
      case '"': jbuf_addc(d->L, b, '"'); break;
      case '\\': jbuf_addc(d->L, b, '\\'); break;
      case '/': jbuf_addc(d->L, b, '/'); break;
      case 'b': jbuf_addc(d->L, b, '\b'); break;
      case 'f': jbuf_addc(d->L, b, '\f'); break;
      case 'n': jbuf_addc(d->L, b, '\n'); break;
      case 'r': jbuf_addc(d->L, b, '\r'); break;
      case 't': jbuf_addc(d->L, b, '\t'); break;
      case 'u': {
        unsigned cp, lo;
        if (read_hex4(d, p + 2, &cp)) return -1;
        if (cp >= 0xDC00 && cp <= 0xDFFF)
          return dec_failat(d, "lone low surrogate in \\u escape", p);
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (d->end - p < 12 || p[6] != '\\' || p[7] != 'u')
            return dec_failat(d, "high surrogate not followed by a low one", p);
          if (read_hex4(d, p + 8, &lo)) return -1;
          if (lo < 0xDC00 || lo > 0xDFFF)
            return dec_failat(d, "high surrogate not followed by a low one", p);
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          p += 6;
        }
        add_utf8(d, cp);
        p += 4;
        break;
      }
      default:
        return dec_failat(d, "invalid escape in string", p);
    }
    p += 2;
    run = p;
  }
  jbuf_add(d->L, b, run, (size_t)(p - run));
  lua_pushlstring(d->L, b->p, b->len);
  d->p = p + 1;
  return 0;
}

static int isdig(const char *p, const char *end) {
  return p < end && *p >= '0' && *p <= '9';
}

/* Pushes an integer when the text has no fraction or exponent and fits in
** int64, a float otherwise. */
static int dec_number(dec *d) {
  const char *start = d->p, *p = d->p;
  int neg = 0, isfloat = 0;
  if (*p == '-') { neg = 1; p++; }
  if (!isdig(p, d->end)) return dec_failat(d, "invalid number", start);
  if (*p == '0') {
    p++;
    if (isdig(p, d->end)) return dec_failat(d, "invalid number (leading zero)", start);
  } else {
    while (isdig(p, d->end)) p++;
  }
  if (p < d->end && *p == '.') {
    isfloat = 1;
    p++;
    if (!isdig(p, d->end)) return dec_failat(d, "invalid number (digit expected after '.')", start);
    while (isdig(p, d->end)) p++;
  }
  if (p < d->end && (*p == 'e' || *p == 'E')) {
    isfloat = 1;
    p++;
    if (p < d->end && (*p == '+' || *p == '-')) p++;
    if (!isdig(p, d->end)) return dec_failat(d, "invalid number (digit expected in exponent)", start);
    while (isdig(p, d->end)) p++;
  }
  d->p = p;
  if (!isfloat && p - start - neg <= 18) {      /* fits: no overflow check */
    const char *q = start + neg;
    lua_Integer v = 0;
    for (; q < p; q++) v = v * 10 + (*q - '0');
    lua_pushinteger(d->L, neg ? -v : v);
    return 0;
  }
  /* lua_stringtonumber: exact int64 (incl. the minimum) or else a float,
  ** with Lua's own handling of the locale's decimal point */
  d->b->len = 0;
  jbuf_add(d->L, d->b, start, (size_t)(p - start));
  jbuf_addc(d->L, d->b, '\0');
  if (lua_stringtonumber(d->L, d->b->p) == 0)
    return dec_failat(d, "invalid number", start);
  if (!isfloat && d->exact_integers && !lua_isinteger(d->L, -1)) {
    lua_pop(d->L, 1);
    snprintf(d->msgbuf, sizeof d->msgbuf, "integer %.*s%s is beyond the int64 range",
             (int)(p - start > 40 ? 40 : p - start), start, p - start > 40 ? "..." : "");
    return dec_failat(d, d->msgbuf, start);
  }
  if (!lua_isinteger(d->L, -1) && !isfinite((double)lua_tonumber(d->L, -1))) {
    lua_pop(d->L, 1);
    return dec_failat(d, "number out of range", start);
  }
  return 0;
}

static int dec_value(dec *d);

static int dec_array(dec *d) {
  lua_State *L = d->L;
  lua_Integer n = 0;
  d->p++;                                       /* '[' */
  lua_newtable(L);
  lua_pushvalue(L, UV_ARRAY_MT);
  lua_setmetatable(L, -2);
  skip_ws(d);
  if (d->p < d->end && *d->p == ']') { d->p++; return 0; }
  for (;;) {
    if (dec_value(d)) return -1;
    if (lua_isnil(L, -1)) {                     /* null in an array stays */
      lua_pop(L, 1);
      lua_pushvalue(L, UV_NULL);
    }
    lua_rawseti(L, -2, ++n);
    skip_ws(d);
    if (d->p >= d->end) return dec_failat(d, "unexpected end of input in array", d->p);
    if (*d->p == ',') { d->p++; continue; }
    if (*d->p == ']') { d->p++; return 0; }
    return dec_failat(d, "expected ',' or ']'", d->p);
  }
}

/* Removes the members of the object on top whose value is null (the
** null_as_nil members kept until the object was whole, for unique_keys). */
static void drop_nulls(lua_State *L) {
  lua_pushnil(L);                               /* [obj, k] */
  while (lua_next(L, -2)) {                     /* [obj, k, v] */
    int isnull = lua_rawequal(L, -1, UV_NULL);
    lua_pop(L, 1);
    if (isnull) {
      lua_pushvalue(L, -1);
      lua_pushnil(L);
      lua_rawset(L, -4);                        /* clearing during next is allowed */
    }
  }
}

static int dec_object(dec *d) {
  lua_State *L = d->L;
  int held_nulls = 0;                           /* null members kept for unique_keys */
  d->p++;                                       /* '{' */
  lua_newtable(L);
  skip_ws(d);
  if (d->p < d->end && *d->p == '}') { d->p++; return 0; }
  for (;;) {
    const char *key_at;
    skip_ws(d);
    if (d->p >= d->end) return dec_failat(d, "unexpected end of input in object", d->p);
    if (*d->p != '"') return dec_failat(d, "expected a string key", d->p);
    key_at = d->p;
    if (dec_string(d)) return -1;
    if (d->keys_idx && d->depth == 1) {         /* key_order: a top-level key */
      lua_pushvalue(L, -1);
      lua_rawseti(L, d->keys_idx, ++d->nkeys);
    }
    if (d->unique_keys) {                       /* [obj, k] */
      lua_pushvalue(L, -1);
      if (lua_rawget(L, -3) != LUA_TNIL) {
        size_t n;
        const char *k = lua_tolstring(L, -2, &n);
        snprintf(d->msgbuf, sizeof d->msgbuf, "duplicate key '%.*s%s'",
                 (int)(n > 40 ? 40 : n), k, n > 40 ? "..." : "");
        return dec_failat(d, d->msgbuf, key_at);
      }
      lua_pop(L, 1);
    }
    skip_ws(d);
    if (d->p >= d->end || *d->p != ':') return dec_failat(d, "expected ':'", d->p);
    d->p++;
    if (dec_value(d)) return -1;
    if (d->unique_keys && lua_isnil(L, -1)) {   /* null_as_nil: drop it at '}' */
      lua_pop(L, 1);
      lua_pushvalue(L, UV_NULL);
      held_nulls = 1;
    }
    lua_rawset(L, -3);                          /* null_as_nil: removes key */
    skip_ws(d);
    if (d->p >= d->end) return dec_failat(d, "unexpected end of input in object", d->p);
    if (*d->p == ',') { d->p++; continue; }
    if (*d->p == '}') {
      d->p++;
      if (held_nulls) drop_nulls(L);
      return 0;
    }
    return dec_failat(d, "expected ',' or '}'", d->p);
  }
}

static int match_word(dec *d, const char *w, size_t n) {
  if ((size_t)(d->end - d->p) < n || memcmp(d->p, w, n) != 0) return 0;
  d->p += n;
  return 1;
}

/* Pushes one value (nil for null when null_as_nil), or fails pushing
** nothing further; the caller resets the stack on failure. */
static int dec_value(dec *d) {
  lua_State *L = d->L;
  int r;
  skip_ws(d);
  if (d->p >= d->end) return dec_failat(d, "unexpected end of input", d->p);
  switch (*d->p) {
    case '{':
    case '[':
      if (d->depth >= JSON_MAX_DEPTH)
        return dec_failat(d, "nesting deeper than 1000 levels", d->p);
      luaL_checkstack(L, 6, "json: nesting too deep");   /* obj, key and 4 more */
      d->depth++;
      r = *d->p == '{' ? dec_object(d) : dec_array(d);
      d->depth--;
      return r;
    case '"':
      return dec_string(d);
    case 't':
      if (match_word(d, "true", 4)) { lua_pushboolean(L, 1); return 0; }
      break;
    case 'f':
      if (match_word(d, "false", 5)) { lua_pushboolean(L, 0); return 0; }
      break;
    case 'n':
      if (match_word(d, "null", 4)) {
        if (d->null_as_nil) lua_pushnil(L);
        else lua_pushvalue(L, UV_NULL);
        return 0;
      }
      break;
    default:
      if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9')) return dec_number(d);
  }
  return dec_failat(d, "unexpected character", d->p);
}

/* Pushes nil, "<what> at line L, column C (byte B)", "JSON_PARSE"; B and C
** count bytes from 1. */
static int dec_fail(lua_State *L, dec *d) {
  const char *p, *bol = d->s;
  long line = 1;
  for (p = d->s; p < d->errpos; p++)
    if (*p == '\n') { line++; bol = p + 1; }
  if (d->errpos < d->end && strcmp(d->err, "unexpected character") == 0) {
    unsigned char c = (unsigned char)*d->errpos;
    char shown[8];
    if (c >= 0x20 && c < 0x7f) snprintf(shown, sizeof shown, "'%c'", c);
    else snprintf(shown, sizeof shown, "0x%02X", c);
    return geneva_fail(L, "JSON_PARSE",
                       "json: unexpected character %s at line %d, column %d (byte %d)",
                       shown, (int)line, (int)(d->errpos - bol + 1),
                       (int)(d->errpos - d->s + 1));
  }
  return geneva_fail(L, "JSON_PARSE", "json: %s at line %d, column %d (byte %d)",
                     d->err, (int)line, (int)(d->errpos - bol + 1),
                     (int)(d->errpos - d->s + 1));
}

/*
** decode(str [, opts]) -> value | nil, msg, "JSON_PARSE". opts.null_as_nil:
** object members whose value is null are left out (array elements and a
** top-level null stay json.null, so arrays keep their length and nil always
** means failure). opts.exact_integers: an integer beyond int64 fails instead
** of becoming a float. opts.unique_keys: a key repeated in one object fails
** (naming it) instead of the last one winning. opts.key_order: a second
** result lists the keys of a top-level object in the order of the text
** (null members too), for callers that keep that order (JSONL columns).
** Arrays come back with json.array_mt. Raises only on misuse (str not a
** string, unknown option) or memory.
*/
static int json_decode(lua_State *L) {
  dec d;
  size_t len;
  int base, key_order = 0;
  luaL_argexpected(L, lua_type(L, 1) == LUA_TSTRING, 1, "string");
  d.s = lua_tolstring(L, 1, &len);
  d.null_as_nil = d.exact_integers = d.unique_keys = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
      if (strcmp(k, "null_as_nil") == 0) d.null_as_nil = lua_toboolean(L, -1);
      else if (strcmp(k, "exact_integers") == 0) d.exact_integers = lua_toboolean(L, -1);
      else if (strcmp(k, "unique_keys") == 0) d.unique_keys = lua_toboolean(L, -1);
      else if (strcmp(k, "key_order") == 0) key_order = lua_toboolean(L, -1);
      else return luaL_argerror(L, 2, lua_pushfstring(L, "unknown option '%s'", k));
      lua_pop(L, 1);
    }
  }
  lua_settop(L, 1);
  d.L = L;
  d.p = d.s;
  d.end = d.s + len;
  d.depth = 0;
  d.err = NULL;
  d.errpos = d.s;
  d.b = jbuf_new(L);
  d.keys_idx = 0;
  d.nkeys = 0;
  if (key_order) {
    lua_newtable(L);
    d.keys_idx = lua_gettop(L);
  }
  base = lua_gettop(L);
  skip_ws(&d);
  if (d.p >= d.end) {
    dec_failat(&d, "empty input", d.p);
    return dec_fail(L, &d);
  }
  if (dec_value(&d)) {
    lua_settop(L, base);
    return dec_fail(L, &d);
  }
  if (lua_isnil(L, -1)) {                        /* top-level null */
    lua_pop(L, 1);
    lua_pushvalue(L, UV_NULL);
  }
  skip_ws(&d);
  if (d.p < d.end) {
    lua_settop(L, base);
    dec_failat(&d, "trailing characters after the value", d.p);
    return dec_fail(L, &d);
  }
  if (key_order) {
    lua_pushvalue(L, d.keys_idx);
    return 2;
  }
  return 1;
}

/* }====== */


static const luaL_Reg funcs[] = {
  {"encode", json_encode},
  {"decode", json_decode},
  {"canonical", json_canonical},
  {NULL, NULL}
};

/*
** Pushes the module table: encode, decode, canonical, null, array_mt,
** object_mt. The sentinel and both metatables are created once per state.
*/
int luaopen_geneva_json_core(lua_State *L) {
  geneva_class_register(L, &jbuf_class, NULL);

  lua_newtable(L);                              /* [M] */
  /* null is the NULL light userdata, the one sentinel shared with cjson,
  ** geneva.sqlite and geneva.yaml, so a NULL read from any of them is
  ** geneva.null everywhere. */
  lua_pushlightuserdata(L, NULL);               /* [M, null] */
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "null");
  luaL_newmetatable(L, "geneva.json.array");    /* [M, null, amt] */
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "array_mt");
  luaL_newmetatable(L, "geneva.json.object");   /* [M, null, amt, omt] */
  lua_pushvalue(L, -1);
  lua_setfield(L, -5, "object_mt");
  luaL_setfuncs(L, funcs, 3);                   /* [M] */
  return 1;
}
