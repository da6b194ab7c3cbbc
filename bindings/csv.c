/*
** csv.c: geneva.csv.core, a streaming CSV reader (RFC 4180) for ingest.
**
** Why C: a 1.5M-row file parsed and converted in Lua took ~20 s. Here the
** file is read in blocks and each chunk of records is parsed once and
** converted cell by cell into packed rows (host/rowpack.h), which
** stmt:insert_packed binds: no cell becomes a Lua value. Policy stays in
** Lua (geneva.store.ingest): which kind a column is read as, what an error
** says.
**
** Records: fields separated by ',', records by "\n", "\r\n" or a lone
** "\r"; a quoted field ("a ""b"", c") may hold separators and newlines. A
** leading UTF-8 BOM is skipped, and blank lines (one empty, unquoted field)
** too. Lines count from 1, '\n' inside quoted fields included; a record is
** known by the line it starts on.
**
** Cells: an empty unquoted field is NULL; a quoted "" is the empty string.
** The kinds a column is read as:
**   "string"  TEXT; NULL as above
**   "blob"    the same bytes as a BLOB
**   "int64"   ^[+-]?[0-9]+$ within int64           \
**   "float64" what Lua's tonumber takes, hex aside  | "" is NULL here:
**   "bool"    true | false                          | no such value is empty
**   "none"    nothing but NULL (a type CSV cannot hold)  /
** With `inferred` (the kind was guessed from earlier rows, so text it would
** not have guessed must not be coerced) an int64 or float64 cell with a
** leading zero ("007"), and a float64 cell of digits beyond int64, do not
** fit either.
**
** Failures are nil, err: err = {line=, message= [, field=, value=] [,
** code=]}; field and value name a cell that does not fit its kind (Lua
** words that message), code is set for I/O errors ("EINTR" once
** interrupted).
*/
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#include "geneva_internal.h"
#include "handle.h"
#include "rowpack.h"

int luaopen_geneva_csv_core(lua_State *L);  /* called by the host's preload table */

#define BLOCK (1024 * 1024)                    /* first buffer; reads fill what is free */
#define MAX_RECORD ((size_t)256 * 1024 * 1024) /* one record must fit the buffer */
#define MAX_HEADER_FIELDS 65536   /* far past SQLite's 2000 columns, which ingest reports */

enum { K_STRING, K_BLOB, K_INT, K_FLOAT, K_BOOL, K_NONE };
static const char *const kind_names[] = { "string", "blob", "int64", "float64", "bool", "none", NULL };

typedef struct field { size_t off, len; int quoted; } field;

/* A growable byte buffer */
typedef struct bytes { char *p; size_t len, cap; } bytes;

typedef struct reader {
  geneva_handle h;
  int fd;
  char *buf;                 /* [start, len) holds bytes not parsed yet */
  size_t cap, start, len;
  long long buf_pos;         /* file offset of buf[0] */
  int eof, bom_checked;
  long long line;            /* line the next record starts on */
  char *text;                /* the current record's field contents */
  size_t text_cap;
  field *fields;
  int nf, max_fields;        /* a record with more fields is an error at once */
  size_t fields_cap;
  long long *lines;          /* line of each record of the last read */
  size_t lines_cap, nread;
  bytes out;                 /* the packed rows being built */
} reader;

static int reader_release(void *p) {
  reader *r = (reader *)p;
  if (r->fd >= 0) close(r->fd);
  r->fd = -1;
  free(r->buf); free(r->text); free(r->fields); free(r->lines); free(r->out.p);
  r->buf = r->text = r->out.p = NULL;
  r->fields = NULL;
  r->lines = NULL;
  return 0;
}

static const geneva_class reader_class = {
  "geneva.csv.Reader", NULL, "csv", reader_release, NULL, NULL, NULL
};

/* {====== Parsing */

enum { REC_OK, REC_EOF, REC_MORE, REC_ERROR, REC_NOMEM };

typedef struct perr { const char *msg; long long line; } perr;

/* Grows the array *p of *cap elements of size bytes to hold need: 1 | 0 */
static int grow(void **p, size_t *cap, size_t need, size_t size) {
  size_t n = *cap ? *cap : 64;
  void *q;
  if (need <= *cap) return 1;
  while (n < need) n *= 2;
  q = realloc(*p, n * size);
  if (!q) return 0;
  *p = q;
  *cap = n;
  return 1;
}

/* Appends n bytes of s to the record's text at *used. */
static int put_text(reader *r, size_t *used, const char *s, size_t n) {
  if (!grow((void **)&r->text, &r->text_cap, *used + n + 1, 1)) return 0;
  memcpy(r->text + *used, s, n);
  *used += n;
  return 1;
}

/* Ends the field whose text began at off: a NUL after it (cells convert in
** place, and the next field starts past it), one more entry in fields.
** 1, 0 out of memory, -1 past max_fields (a line of a million commas must
** not take gigabytes before the field count is checked). */
static int end_field(reader *r, size_t *used, size_t off, int quoted) {
  if (r->nf >= r->max_fields) return -1;
  if ((size_t)r->nf == r->fields_cap &&
      !grow((void **)&r->fields, &r->fields_cap, r->fields_cap + 1, sizeof *r->fields))
    return 0;
  if (!grow((void **)&r->text, &r->text_cap, *used + 1, 1)) return 0;
  r->text[*used] = '\0';
  r->fields[r->nf].off = off;
  r->fields[r->nf].len = *used - off;
  r->fields[r->nf].quoted = quoted;
  r->nf++;
  (*used)++;
  return 1;
}

/* Bytes that end an unquoted field, or are a stray quote in it. */
static const unsigned char stop[256] = { [','] = 1, ['\n'] = 1, ['\r'] = 1, ['"'] = 1 };

/*
** Parses the record at buf[start..len). REC_OK: fields set, start and line
** advanced. REC_MORE: the record runs past the bytes read so far (nothing
** consumed: the caller reads more and parses it again). REC_EOF: nothing
** left. REC_ERROR: e says what and where. Blank lines come back as records
** of one empty unquoted field.
*/
static int too_many_fields(reader *r, perr *e, long long nl) {
  e->msg = "too many fields on one line";
  e->line = r->line + nl;
  return REC_ERROR;
}

static int parse_record(reader *r, perr *e) {
  const char *base = r->buf, *p = base + r->start, *end = base + r->len;
  int k;
  size_t used = 0;                  /* bytes of r->text in use */
  long long nl = 0;                 /* newlines in the record so far */
  r->nf = 0;
  if (p == end) return r->eof ? REC_EOF : REC_MORE;
  for (;;) {                        /* one field; p < end */
    size_t off = used;
    int quoted = *p == '"';
    if (quoted) {
      long long at = r->line + nl;
      p++;
      for (;;) {
        const char *q = (const char *)memchr(p, '"', (size_t)(end - p)), *c;
        if (!q) {
          if (!r->eof) return REC_MORE;
          e->msg = "unterminated quoted field";
          e->line = at;
          return REC_ERROR;
        }
        if (q + 1 == end && !r->eof) return REC_MORE;   /* "" split across reads? */
        for (c = p; (c = (const char *)memchr(c, '\n', (size_t)(q - c))) != NULL; c++) nl++;
        if (!put_text(r, &used, p, (size_t)(q - p))) return REC_NOMEM;
        if (q + 1 < end && q[1] == '"') {
          if (!put_text(r, &used, "\"", 1)) return REC_NOMEM;
          p = q + 2;
          continue;
        }
        p = q + 1;
        break;
      }
    } else {
      const char *q = p;
      while (q < end && !stop[(unsigned char)*q]) q++;
      if (q == end && !r->eof) return REC_MORE;
      if (q < end && *q == '"') {
        e->msg = "quote inside an unquoted field";
        e->line = r->line + nl;
        return REC_ERROR;
      }
      if (!put_text(r, &used, p, (size_t)(q - p))) return REC_NOMEM;
      p = q;
    }
    if ((k = end_field(r, &used, off, quoted)) <= 0) return k < 0 ? too_many_fields(r, e, nl) : REC_NOMEM;
    if (p == end) break;                        /* the last record, unterminated */
    if (*p == ',') {
      p++;
      if (p == end) {
        if (!r->eof) return REC_MORE;
        if ((k = end_field(r, &used, used, 0)) <= 0)        /* "a," ends the file */
          return k < 0 ? too_many_fields(r, e, nl) : REC_NOMEM;
        break;
      }
      continue;
    }
    if (*p == '\n') { p++; nl++; break; }
    if (*p == '\r') {
      if (p + 1 == end && !r->eof) return REC_MORE;
      p += (p + 1 < end && p[1] == '\n') ? 2 : 1;
      nl++;
      break;
    }
    e->msg = "unexpected character after a closing quote";
    e->line = r->line + nl;
    return REC_ERROR;
  }
  r->start = (size_t)(p - base);
  r->line += nl;
  return REC_OK;
}

/* Reads more bytes after those not parsed yet, until the buffer is full or
** the input ends: 0, or an errno (EINTR once interrupted; EFBIG for a record
** beyond MAX_RECORD). Filling the buffer matters for pipes, which give 64
** KiB a read: a record the parser must start over on after each read would
** cost time quadratic in its length. */
static int refill(reader *r) {
  ssize_t got;
  if (r->start > 0) {
    memmove(r->buf, r->buf + r->start, r->len - r->start);
    r->buf_pos += (long long)r->start;
    r->len -= r->start;
    r->start = 0;
  }
  if (r->len == r->cap) {
    char *b;
    if (r->cap >= MAX_RECORD) return EFBIG;
    b = (char *)realloc(r->buf, r->cap * 2);
    if (!b) return ENOMEM;
    r->buf = b;
    r->cap *= 2;
  }
  while (r->len < r->cap) {
    if (geneva_interrupted()) return EINTR;
    got = read(r->fd, r->buf + r->len, r->cap - r->len);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return errno;
    if (got == 0) {
      r->eof = 1;
      break;
    }
    r->len += (size_t)got;
  }
  if (!r->bom_checked && (r->len >= 3 || r->eof)) {
    r->bom_checked = 1;
    if (r->len >= 3 && memcmp(r->buf, "\xEF\xBB\xBF", 3) == 0) r->start = 3;
  }
  return 0;
}

/* Pushes nil, {line=, message= [, code=]}; returns 2. */
static int push_error(lua_State *L, long long line, const char *msg, const char *code) {
  lua_pushnil(L);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)line);
  lua_setfield(L, -2, "line");
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  if (code) {
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
  }
  return 2;
}

/* The next non-blank record into r->fields, *line the line it starts on:
** REC_OK, REC_EOF, or REC_ERROR with nil, err pushed. */
static int next_record(lua_State *L, reader *r, long long *line) {
  perr e = { NULL, 0 };
  for (;;) {
    int rc = REC_MORE, err;
    *line = r->line;
    if (r->bom_checked) rc = parse_record(r, &e);
    switch (rc) {
      case REC_OK:
        if (r->nf == 1 && r->fields[0].len == 0 && !r->fields[0].quoted) continue;   /* blank */
        return REC_OK;
      case REC_EOF:
        return REC_EOF;
      case REC_ERROR:
        push_error(L, e.line, e.msg, NULL);
        return REC_ERROR;
      case REC_NOMEM:
        return luaL_error(L, "not enough memory");
      default:
        err = refill(r);
        if (err == EINTR) push_error(L, r->line, "interrupted", "EINTR");
        else if (err == EFBIG) push_error(L, r->line, "a record longer than 256 MiB", "EFBIG");
        else if (err) push_error(L, r->line, strerror(err), geneva_errno_name(err));
        if (err) return REC_ERROR;
    }
  }
}

/* }====== */

/* {====== Cells */

static int kind_of(lua_State *L, int idx) {
  const char *s = lua_tostring(L, idx);
  int k;
  for (k = 0; s && kind_names[k]; k++)
    if (strcmp(s, kind_names[k]) == 0) return k;
  return luaL_error(L, "unknown CSV column kind '%s'", s ? s : luaL_typename(L, idx));
}

/* Reads kinds[1..nk] (and inferred[1..nk] when iidx is not 0) from the
** Lua arrays at kidx and iidx into a scratch userdata it pushes. */
static unsigned char *read_kinds(lua_State *L, int kidx, int iidx, int nk) {
  unsigned char *k = (unsigned char *)lua_newuserdatauv(L, 2 * (size_t)nk, 0);
  int j;
  for (j = 1; j <= nk; j++) {
    lua_rawgeti(L, kidx, j);
    k[j - 1] = (unsigned char)kind_of(L, -1);
    lua_pop(L, 1);
    k[nk + j - 1] = 0;
    if (iidx) {
      lua_rawgeti(L, iidx, j);
      k[nk + j - 1] = (unsigned char)lua_toboolean(L, -1);
      lua_pop(L, 1);
    }
  }
  return k;
}

static int leading_zero(const char *s, size_t n) {
  size_t i = (n > 0 && (s[0] == '+' || s[0] == '-')) ? 1 : 0;
  return i + 1 < n && s[i] == '0' && s[i + 1] >= '0' && s[i + 1] <= '9';
}

/* ^[+-]?[0-9]+$: 1 with *v; 2 when beyond int64; 0 for other text */
static int parse_int(const char *s, size_t n, int64_t *v) {
  size_t i = 0;
  int neg = 0;
  uint64_t acc = 0, lim;
  if (n > 0 && (s[0] == '+' || s[0] == '-')) { neg = s[0] == '-'; i = 1; }
  if (i == n) return 0;
  lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (; i < n; i++) {
    unsigned d = (unsigned)((unsigned char)s[i] - '0');
    if (d > 9) return 0;
    if (acc > (lim - d) / 10) {           /* too big: digits to the end still? */
      for (i++; i < n; i++)
        if ((unsigned)((unsigned char)s[i] - '0') > 9) return 0;
      return 2;
    }
    acc = acc * 10 + d;
  }
  *v = neg ? (int64_t)(0 - acc) : (int64_t)acc;
  return 1;
}

/* [+-]ddd.ddd with at most 15 digits, exactly: the mantissa and 10^k are
** exact doubles, so one division rounds as strtod does (Clinger's fast
** path). Most data is such; 1, 0 to ask strtod. Without a '.', the cell
** is an integer to tonumber ("-0" is 0, not -0.0): not here. */
static int fast_decimal(const char *s, size_t n, double *v) {
  static const double p10[] = { 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
                                1e11, 1e12, 1e13, 1e14, 1e15 };
  size_t i = 0;
  int neg = 0, digits = 0, frac = -1;
  uint64_t m = 0;
  if (n > 0 && (s[0] == '+' || s[0] == '-')) { neg = s[0] == '-'; i = 1; }
  for (; i < n; i++) {
    if (s[i] >= '0' && s[i] <= '9') {
      if (++digits > 15) return 0;
      m = m * 10 + (uint64_t)(s[i] - '0');
      if (frac >= 0) frac++;
    } else if (s[i] == '.' && frac < 0) {
      frac = 0;
    } else {
      return 0;
    }
  }
  if (digits == 0 || frac < 0) return 0;
  *v = (double)m / p10[frac];
  if (neg) *v = -*v;
  return 1;
}

/* What Lua's tonumber takes (so both read a cell alike), as a double; hex
** aside, which tonumber reads but a data file means as text. */
static int parse_float(lua_State *L, const char *s, size_t n, double *v) {
  char tmp[64];
  const char *p = s, *e = s + n, *z;
  int ok;
  if (fast_decimal(s, n, v)) return 1;
  while (p < e && (*p == ' ' || (*p >= '\t' && *p <= '\r'))) p++;
  if (p < e && (*p == '+' || *p == '-')) p++;
  if (e - p >= 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) return 0;
  if (memchr(s, '\0', n)) return 0;
  if (n < sizeof tmp) {
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    z = tmp;
  } else {
    z = lua_pushlstring(L, s, n);
  }
  ok = lua_stringtonumber(L, z) != 0;
  if (ok) {
    *v = (double)lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  if (z != tmp) lua_pop(L, 1);
  return ok;
}

static int reserve(bytes *b, size_t more) {
  return grow((void **)&b->p, &b->cap, b->len + more, 1);
}

/*
** Appends cell s (n bytes; null: a NULL cell) read as kind k to b: 1, 0
** when it does not fit k (nothing appended), -1 out of memory.
*/
static int pack_cell(lua_State *L, bytes *b, const char *s, size_t n, int null, int k, int inferred) {
  char *o;
  int64_t i;
  double d;
  uint32_t n32 = (uint32_t)n;
  if (!reserve(b, 9 + n)) return -1;
  o = b->p + b->len;
  if (null || (n == 0 && k != K_STRING && k != K_BLOB)) {
    o[0] = ROWPACK_NULL;
    b->len += 1;
    return 1;
  }
  switch (k) {
    case K_STRING: case K_BLOB:
      o[0] = k == K_STRING ? ROWPACK_TEXT : ROWPACK_BLOB;
      memcpy(o + 1, &n32, 4);
      memcpy(o + 5, s, n);
      b->len += 5 + n;
      return 1;
    case K_INT:
      if (parse_int(s, n, &i) != 1 || (inferred && leading_zero(s, n))) return 0;
      break;
    case K_FLOAT: {
      int pi = parse_int(s, n, &i);
      if (inferred && (leading_zero(s, n) || pi == 2)) return 0;
      if (pi == 1) d = (double)i;               /* as tonumber: the integer, then a float */
      else if (!parse_float(L, s, n, &d)) return 0;
      o[0] = ROWPACK_FLOAT;
      memcpy(o + 1, &d, 8);
      b->len += 9;
      return 1;
    }
    case K_BOOL:                           /* stored 0/1 */
      if (n == 4 && memcmp(s, "true", 4) == 0) i = 1;
      else if (n == 5 && memcmp(s, "false", 5) == 0) i = 0;
      else return 0;
      break;
    default:                               /* K_NONE */
      return 0;
  }
  o[0] = ROWPACK_INT;
  memcpy(o + 1, &i, 8);
  b->len += 9;
  return 1;
}

/* Pushes nil, {line=, message = "bad cell", field=, value=}; returns 2. */
static int push_cell_error(lua_State *L, long long line, int col, const char *s, size_t n) {
  push_error(L, line, "bad cell", NULL);
  lua_pushinteger(L, col);
  lua_setfield(L, -2, "field");
  lua_pushlstring(L, s, n);
  lua_setfield(L, -2, "value");
  return 2;
}

/* }====== */

/* {====== Reader */

/* core.open(path) -> Reader | nil, msg, code */
static int csv_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  reader *r = (reader *)geneva_handle_new(L, &reader_class, sizeof *r, 0);
  int fd;
  r->fd = -1;
  do fd = open(path, O_RDONLY | O_CLOEXEC); while (fd < 0 && errno == EINTR && !geneva_interrupted());
  if (fd < 0) {
    int err = errno;
    if (err == EINTR) return geneva_fail(L, "EINTR", "interrupted");
    return geneva_fail(L, geneva_errno_name(err), "cannot open '%s': %s", path, strerror(err));
  }
  r->buf = (char *)malloc(BLOCK);
  if (!r->buf) {
    close(fd);
    return luaL_error(L, "not enough memory");
  }
  r->fd = fd;
  r->cap = BLOCK;
  r->line = 1;
  geneva_handle_open(L, r);
  return 1;
}

/* reader:record() -> fields, line | nil (no records left) | nil, err: the
** next non-blank record as an array of strings (a header). */
static int reader_m_record(lua_State *L) {
  reader *r = (reader *)geneva_handle_check(L, 1, &reader_class);
  long long line;
  int j, rc;
  r->max_fields = MAX_HEADER_FIELDS;
  rc = next_record(L, r, &line);
  if (rc == REC_ERROR) return 2;
  if (rc == REC_EOF) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, r->nf, 0);
  for (j = 0; j < r->nf; j++) {
    lua_pushlstring(L, r->text + r->fields[j].off, r->fields[j].len);
    lua_rawseti(L, -2, j + 1);
  }
  lua_pushinteger(L, (lua_Integer)line);
  return 2;
}

/*
** reader:read(kinds, inferred | nil, max_rows [, max_bytes]) -> rows, n | nil, err
** Reads up to max_rows records (fewer once max_bytes of the file are read;
** at least one), field j as kinds[j] says (inferred[j]: see the header),
** into packed rows (host/rowpack.h). Each record must have #kinds fields.
** n = 0 at the end. reader:line(i) is the line record i began on.
*/
static int reader_m_read(lua_State *L) {
  reader *r = (reader *)geneva_handle_check(L, 1, &reader_class);
  lua_Integer max_rows, max_bytes, i;
  long long start_pos;
  unsigned char *kinds, *inf;
  int nk, j;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  max_rows = luaL_checkinteger(L, 4);
  max_bytes = luaL_optinteger(L, 5, LUA_MAXINTEGER);
  luaL_argcheck(L, max_rows >= 1, 4, "must be >= 1");
  nk = (int)lua_rawlen(L, 2);
  luaL_argcheck(L, nk >= 1 && nk < MAX_HEADER_FIELDS, 2, "no kinds, or too many");
  kinds = read_kinds(L, 2, lua_istable(L, 3) ? 3 : 0, nk);
  inf = kinds + nk;
  r->max_fields = nk + 1;   /* one more is parsed, for "expected nk fields, got nk + 1" */
  r->out.len = 0;
  r->nread = 0;
  start_pos = r->buf_pos + (long long)r->start;
  for (i = 1; i <= max_rows; i++) {
    long long line;
    int rc;
    if ((i & 1023) == 0 && geneva_interrupted()) return push_error(L, r->line, "interrupted", "EINTR");
    if (i > 1 && r->buf_pos + (long long)r->start - start_pos >= max_bytes) break;
    rc = next_record(L, r, &line);
    if (rc == REC_ERROR) return 2;
    if (rc == REC_EOF) break;
    if (r->nf != nk) {
      char msg[64];
      snprintf(msg, sizeof msg, "expected %d fields, got %d", nk, r->nf);
      return push_error(L, line, msg, NULL);
    }
    if (!grow((void **)&r->lines, &r->lines_cap, (size_t)i, sizeof *r->lines))
      return luaL_error(L, "not enough memory");
    r->lines[i - 1] = line;
    r->nread = (size_t)i;
    for (j = 0; j < nk; j++) {
      const field *f = &r->fields[j];
      const char *s = r->text + f->off;
      int rc2 = pack_cell(L, &r->out, s, f->len, f->len == 0 && !f->quoted, kinds[j], inf[j]);
      if (rc2 < 0) return luaL_error(L, "not enough memory");
      if (rc2 == 0) return push_cell_error(L, line, j + 1, s, f->len);
    }
  }
  lua_pushlstring(L, r->out.p ? r->out.p : "", r->out.len);
  lua_pushinteger(L, i - 1);
  return 2;
}

/* Checks that packed rows at idx hold n rows of ncols text or NULL cells
** (what read gives for "string" columns); raises otherwise. */
static const char *check_text_rows(lua_State *L, int idx, lua_Integer n, int ncols, size_t *len) {
  const char *p = luaL_checklstring(L, idx, len);
  size_t pos = 0;
  lua_Integer i;
  rowpack_cell c;
  luaL_argcheck(L, ncols >= 1 && n >= 0 && n <= LUA_MAXINTEGER / ncols, idx, "bad row or column count");
  for (i = 0; i < n * ncols; i++)
    if (!rowpack_next(p, *len, &pos, &c) || (c.tag != ROWPACK_TEXT && c.tag != ROWPACK_NULL))
      luaL_argerror(L, idx, "not packed rows of text");
  return p;
}

/*
** reader:convert(rows, n, kinds, inferred | nil) -> rows2 | nil, err
** Converts packed rows that read gave for kinds all "string" (n rows of
** #kinds cells) as read would have read them for kinds: after inference
** from them. err as read's, with err.row (1..n) beside err.line (the line,
** when they are the last read's rows).
*/
static int reader_m_convert(lua_State *L) {
  reader *r = (reader *)geneva_handle_check(L, 1, &reader_class);
  lua_Integer n = luaL_checkinteger(L, 3), i;
  size_t len, pos = 0;
  const char *p;
  unsigned char *kinds, *inf;
  int nk, j;
  luaL_checktype(L, 4, LUA_TTABLE);
  if (!lua_isnoneornil(L, 5)) luaL_checktype(L, 5, LUA_TTABLE);
  nk = (int)lua_rawlen(L, 4);
  luaL_argcheck(L, nk >= 1, 4, "no kinds");
  p = check_text_rows(L, 2, n, nk, &len);
  kinds = read_kinds(L, 4, lua_istable(L, 5) ? 5 : 0, nk);
  inf = kinds + nk;
  r->out.len = 0;
  for (i = 1; i <= n; i++) {
    for (j = 0; j < nk; j++) {
      rowpack_cell c = { ROWPACK_NULL, 0, 0, NULL, 0 };
      int rc;
      rowpack_next(p, len, &pos, &c);           /* checked above */
      rc = pack_cell(L, &r->out, c.s, c.tag == ROWPACK_NULL ? 0 : c.n, c.tag == ROWPACK_NULL,
                     kinds[j], inf[j]);
      if (rc < 0) return luaL_error(L, "not enough memory");
      if (rc == 0) {
        push_cell_error(L, (size_t)i <= r->nread ? r->lines[i - 1] : 0, j + 1, c.s, c.n);
        lua_pushinteger(L, i);
        lua_setfield(L, -2, "row");
        return 2;
      }
    }
  }
  lua_pushlstring(L, r->out.p ? r->out.p : "", r->out.len);
  return 1;
}

/* reader:line(i) -> the line record i of the last read began on */
static int reader_m_line(lua_State *L) {
  reader *r = (reader *)geneva_handle_check(L, 1, &reader_class);
  lua_Integer i = luaL_checkinteger(L, 2);
  luaL_argcheck(L, i >= 1 && (size_t)i <= r->nread, 2, "no such record in the last read");
  lua_pushinteger(L, (lua_Integer)r->lines[i - 1]);
  return 1;
}

/* reader:offset() -> bytes of the file parsed so far (for progress) */
static int reader_m_offset(lua_State *L) {
  reader *r = (reader *)geneva_handle_check(L, 1, &reader_class);
  lua_pushinteger(L, (lua_Integer)(r->buf_pos + (long long)r->start));
  return 1;
}

/* }====== */

/* {====== Inference facts */

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

/* Sets result[j + 1][k] (the result table is at 5) to the cell's text;
** returns row i. */
static lua_Integer note(lua_State *L, int j, const char *k, const rowpack_cell *c, lua_Integer i) {
  lua_rawgeti(L, 5, j + 1);
  lua_pushlstring(L, c->s, c->n);
  lua_setfield(L, -2, k);
  lua_pop(L, 1);
  return i;
}

/*
** core.classify(rows, n, ncols) -> {facts, ...}: for each column of packed
** rows of text (read's "string" kind), facts about its cells for Lua to
** infer a type from (geneva.store.types.infer_csv). Empty cells (NULL or
** "") are not counted.
**   values  cells counted
**   ints    those of digits (^[+-]?[0-9]+$), int64 or beyond
**   floats  those tonumber reads, hex aside
**   bools   those that are true or false
**   big, big_value      the first row of digits beyond int64, its text
**   zero, zero_value    the first row with a leading zero ("007"), its text
*/
static int csv_classify(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 2), i;
  int ncols = (int)luaL_checkinteger(L, 3), j;
  size_t len, pos = 0;
  const char *p;
  lua_Integer *f;
  enum { VALUES, INTS, FLOATS, BOOLS, BIG, ZERO, NF };
  lua_settop(L, 3);          /* slots 4 and 5 are ours below */
  luaL_argcheck(L, ncols >= 1, 3, "must be >= 1");
  p = check_text_rows(L, 1, n, ncols, &len);
  f = (lua_Integer *)lua_newuserdatauv(L, sizeof *f * NF * (size_t)ncols, 0);   /* 4 */
  memset(f, 0, sizeof *f * NF * (size_t)ncols);
  lua_createtable(L, ncols, 0);                                               /* 5: result */
  for (j = 0; j < ncols; j++) {
    lua_createtable(L, 0, 8);
    lua_rawseti(L, 5, j + 1);
  }
  for (i = 1; i <= n; i++) {
    for (j = 0; j < ncols; j++) {
      lua_Integer *c = f + (size_t)j * NF;
      rowpack_cell cell = { ROWPACK_NULL, 0, 0, NULL, 0 };
      int64_t v;
      double d;
      int pi;
      rowpack_next(p, len, &pos, &cell);
      if (cell.tag == ROWPACK_NULL || cell.n == 0) continue;
      c[VALUES]++;
      pi = parse_int(cell.s, cell.n, &v);
      if (pi) c[INTS]++;
      if (pi || parse_float(L, cell.s, cell.n, &d)) c[FLOATS]++;
      if ((cell.n == 4 && memcmp(cell.s, "true", 4) == 0) || (cell.n == 5 && memcmp(cell.s, "false", 5) == 0))
        c[BOOLS]++;
      if (pi == 2 && !c[BIG]) c[BIG] = note(L, j, "big_value", &cell, i);
      if (!c[ZERO] && leading_zero(cell.s, cell.n)) c[ZERO] = note(L, j, "zero_value", &cell, i);
    }
  }
  for (j = 0; j < ncols; j++) {
    const lua_Integer *c = f + (size_t)j * NF;
    lua_rawgeti(L, 5, j + 1);
    set_int(L, "values", c[VALUES]);
    set_int(L, "ints", c[INTS]);
    set_int(L, "floats", c[FLOATS]);
    set_int(L, "bools", c[BOOLS]);
    if (c[BIG]) set_int(L, "big", c[BIG]);
    if (c[ZERO]) set_int(L, "zero", c[ZERO]);
    lua_pop(L, 1);
  }
  return 1;
}

/* }====== */

static const luaL_Reg reader_meth[] = {
  {"record", reader_m_record}, {"read", reader_m_read}, {"convert", reader_m_convert},
  {"line", reader_m_line}, {"offset", reader_m_offset},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"open", csv_open}, {"classify", csv_classify},
  {NULL, NULL}
};

int luaopen_geneva_csv_core(lua_State *L) {
  geneva_class_register(L, &reader_class, reader_meth);
  luaL_newlib(L, funcs);
  return 1;
}
