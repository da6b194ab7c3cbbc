/*
** rowpack.h: packed rows, the format in which one binding hands a chunk of
** rows to another through a Lua string (not installed).
**
** Why: geneva.csv.core parses a chunk of CSV and geneva.sqlite.core's
** stmt:insert_packed binds it, and no cell becomes a Lua value on the way.
** Lua 5.4.4 interns every short string, and its string hash spreads
** digit-heavy text ("u794781", "00608") so poorly that creating millions
** of them costs up to ~0.8 us each; a 1.5M-row file is 7.5M cells.
**
** A chunk is its rows one after another, each row its cells in column
** order, each cell a tag byte and its payload:
**   ROWPACK_NULL    nothing
**   ROWPACK_INT     8 bytes: an int64
**   ROWPACK_FLOAT   8 bytes: a double
**   ROWPACK_TEXT    4 bytes of length n, then n bytes of UTF-8 text
**   ROWPACK_BLOB    4 bytes of length n, then n bytes
** Numbers and lengths are in the host's byte order: a chunk never leaves
** the process. Readers check every length against the chunk's end.
*/
#ifndef GENEVA_ROWPACK_H
#define GENEVA_ROWPACK_H

#include <stdint.h>
#include <string.h>

enum {
  ROWPACK_NULL = 0, ROWPACK_INT = 1, ROWPACK_FLOAT = 2, ROWPACK_TEXT = 3, ROWPACK_BLOB = 4
};

/* One cell read back: its tag, and its payload by tag. */
typedef struct rowpack_cell {
  int tag;
  int64_t i;
  double d;
  const char *s;           /* TEXT, BLOB: the bytes (inside the chunk) */
  uint32_t n;
} rowpack_cell;

/*
** Reads the cell at *pos of chunk p (len bytes) into c and moves *pos past
** it: 1, or 0 when the chunk is malformed there (an unknown tag, a payload
** past the end).
*/
static inline int rowpack_next(const char *p, size_t len, size_t *pos, rowpack_cell *c) {
  size_t at = *pos;
  if (at >= len) return 0;
  c->tag = (unsigned char)p[at++];
  switch (c->tag) {
    case ROWPACK_NULL:
      break;
    case ROWPACK_INT:
      if (len - at < 8) return 0;
      memcpy(&c->i, p + at, 8);
      at += 8;
      break;
    case ROWPACK_FLOAT:
      if (len - at < 8) return 0;
      memcpy(&c->d, p + at, 8);
      at += 8;
      break;
    case ROWPACK_TEXT:
    case ROWPACK_BLOB:
      if (len - at < 4) return 0;
      memcpy(&c->n, p + at, 4);
      at += 4;
      if (len - at < c->n) return 0;
      c->s = p + at;
      at += c->n;
      break;
    default:
      return 0;
  }
  *pos = at;
  return 1;
}

#endif
