/*
** time.c: geneva.time.core, clocks, an interruptible sleep and ISO 8601
** (UTC) formatting and parsing. Calendar arithmetic is done here (proleptic
** Gregorian, days from civil) rather than through gmtime/timegm, so no time
** zone or locale state is read and years 0000..9999 work everywhere.
*/
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <lua.h>
#include <lauxlib.h>

#include "geneva_internal.h"

int luaopen_geneva_time_core(lua_State *L);  /* called by the host's preload table */

#define SLEEP_SLICE_NS 50000000L   /* poll geneva_interrupted() at least this often */
#define MIN_SECS (-62167219200.0)  /* 0000-01-01T00:00:00Z */
#define MAX_SECS 253402300800.0    /* 10000-01-01T00:00:00Z (exclusive) */

static double ts_seconds(const struct timespec *ts) {
  return (double)ts->tv_sec + (double)ts->tv_nsec / 1e9;
}

/* monotonic() -> float seconds from an arbitrary origin (CLOCK_MONOTONIC). */
static int time_monotonic(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts_seconds(&ts));
  return 1;
}

/* now() -> float seconds since the Unix epoch (CLOCK_REALTIME). */
static int time_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts_seconds(&ts));
  return 1;
}

/*
** sleep(seconds) -> true | nil, "interrupted", "EINTR". Sleeps against a
** monotonic deadline in slices of at most 50 ms, so a signal that lands just
** before a slice starts delays the return by one slice at most. Raises if
** seconds is negative or not finite.
*/
static int time_sleep(lua_State *L) {
  double secs = (double)luaL_checknumber(L, 1);
  struct timespec now, deadline;
  luaL_argcheck(L, secs >= 0 && isfinite(secs), 1, "expected a finite number >= 0");
  if (secs > 1e9) secs = 1e9;    /* ~31 years: keeps time_t arithmetic defined */
  clock_gettime(CLOCK_MONOTONIC, &now);
  deadline.tv_sec = now.tv_sec + (time_t)secs;
  deadline.tv_nsec = now.tv_nsec + (long)((secs - floor(secs)) * 1e9);
  if (deadline.tv_nsec >= 1000000000L) { deadline.tv_sec++; deadline.tv_nsec -= 1000000000L; }
  for (;;) {
    struct timespec next;
    int rc;
    if (geneva_interrupted()) return geneva_fail(L, "EINTR", "interrupted");
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > deadline.tv_sec ||
        (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec))
      break;
    next = now;
    next.tv_nsec += SLEEP_SLICE_NS;
    if (next.tv_nsec >= 1000000000L) { next.tv_sec++; next.tv_nsec -= 1000000000L; }
    if (next.tv_sec > deadline.tv_sec ||
        (next.tv_sec == deadline.tv_sec && next.tv_nsec > deadline.tv_nsec))
      next = deadline;
    rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    if (rc != 0 && rc != EINTR) return geneva_fail_errno(L, rc, "clock_nanosleep");
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* {====== Calendar (H. Hinnant's days_from_civil / civil_from_days) */

static int64_t days_from_civil(int64_t y, int m, int d) {
  int64_t era, yoe, doy, doe;
  y -= m <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = y - era * 400;
  doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
  int64_t era, doe, yoe, doy, mp;
  z += 719468;
  era = (z >= 0 ? z : z - 146096) / 146097;
  doe = z - era * 146097;
  yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  mp = (5 * doy + 2) / 153;
  *d = (int)(doy - (153 * mp + 2) / 5 + 1);
  *m = (int)(mp < 10 ? mp + 3 : mp - 9);
  *y = yoe + era * 400 + (*m <= 2);
}

static int days_in_month(int64_t y, int m) {
  static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
  return dm[m - 1];
}

/* }====== */

/*
** iso8601([t [, digits]]) -> "2026-11-24T12:00:00.123Z". t: seconds since
** the epoch (default now()); digits: fraction digits 0..9 (default 3),
** rounded to nearest. Raises if t is not finite or outside years 0000..9999.
*/
static int time_iso8601(lua_State *L) {
  double t, secs, frac;
  lua_Integer digits = luaL_optinteger(L, 2, 3);
  int64_t isecs, days, sod, units, scale = 1, y;
  int m, d, i;
  char out[64];
  if (lua_isnoneornil(L, 1)) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    t = ts_seconds(&ts);
  } else {
    t = (double)luaL_checknumber(L, 1);
  }
  luaL_argcheck(L, digits >= 0 && digits <= 9, 2, "expected 0..9 digits");
  luaL_argcheck(L, isfinite(t) && t >= MIN_SECS && t < MAX_SECS, 1,
                "time outside years 0000..9999");
  for (i = 0; i < digits; i++) scale *= 10;
  secs = floor(t);
  frac = t - secs;
  isecs = (int64_t)secs;
  units = (int64_t)llround(frac * (double)scale);
  if (units >= scale) { units -= scale; isecs++; }
  days = isecs >= 0 ? isecs / 86400 : -((-isecs + 86399) / 86400);
  sod = isecs - days * 86400;
  civil_from_days(days, &y, &m, &d);
  luaL_argcheck(L, y <= 9999, 1, "time outside years 0000..9999");
  if (digits == 0)
    snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02dZ", (int)y, m, d,
             (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60));
  else
    snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02d.%0*lldZ", (int)y, m, d,
             (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60),
             (int)digits, (long long)units);
  lua_pushstring(L, out);
  return 1;
}

/* Reads exactly n digits at *p; -1 if they are not there. */
static int read_digits(const char **p, const char *end, int n) {
  int v = 0, i;
  for (i = 0; i < n; i++) {
    if (*p >= end || **p < '0' || **p > '9') return -1;
    v = v * 10 + (**p - '0');
    (*p)++;
  }
  return v;
}

/* Consumes c at *p if it is there. */
static int accept_char(const char **p, const char *end, char c) {
  if (*p >= end || **p != c) return 0;
  (*p)++;
  return 1;
}

/*
** parse_iso8601(s) -> float seconds since the epoch | nil, msg, "TIME_PARSE".
** Accepts "YYYY-MM-DD" (midnight UTC) or "YYYY-MM-DD(T|t| )HH:MM[:SS[.frac]]"
** followed by a zone: Z, z, +HH:MM, +HHMM or +HH (or '-'). A time without a
** zone is refused (ambiguous). Raises only if s is not a string.
*/
static int time_parse_iso8601(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  const char *p = s, *end = s + len;
  int year, mon, day, hh = 0, mi = 0, ss = 0, sign, oh, om = 0;
  double frac = 0, scale = 1, t;
  int64_t fv = 0;
  const char *what = "expected YYYY-MM-DD";
  year = read_digits(&p, end, 4);
  if (year < 0 || !accept_char(&p, end, '-')) goto bad;
  mon = read_digits(&p, end, 2);
  if (mon < 0 || !accept_char(&p, end, '-')) goto bad;
  day = read_digits(&p, end, 2);
  if (day < 0) goto bad;
  what = "month or day out of range";
  if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon)) goto bad;
  if (p == end) goto done;
  what = "expected 'T' between date and time";
  if (*p != 'T' && *p != 't' && *p != ' ') goto bad;
  p++;
  what = "expected HH:MM";
  hh = read_digits(&p, end, 2);
  if (hh < 0 || !accept_char(&p, end, ':')) goto bad;
  mi = read_digits(&p, end, 2);
  if (mi < 0) goto bad;
  if (accept_char(&p, end, ':')) {
    what = "expected seconds";
    ss = read_digits(&p, end, 2);
    if (ss < 0) goto bad;
    if (p < end && (*p == '.' || *p == ',')) {
      p++;
      what = "expected digits after the decimal point";
      if (p >= end || *p < '0' || *p > '9') goto bad;
      for (; p < end && *p >= '0' && *p <= '9'; p++)
        if (scale < 1e9) { fv = fv * 10 + (*p - '0'); scale *= 10; }  /* ns at most */
      frac = (double)fv / scale;
    }
  }
  what = "hour, minute or second out of range";
  if (hh > 23 || mi > 59 || ss > 60) goto bad;   /* 60: a leap second */
  what = "missing time zone (Z or +HH:MM)";
  if (p >= end) goto bad;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    sign = *p++ == '-' ? -1 : 1;
    what = "bad time zone offset";
    oh = read_digits(&p, end, 2);
    if (oh < 0) goto bad;
    accept_char(&p, end, ':');
    if (p < end) {
      om = read_digits(&p, end, 2);
      if (om < 0) goto bad;
    }
    if (oh > 23 || om > 59) goto bad;
    hh -= sign * oh;
    mi -= sign * om;
  } else {
    goto bad;
  }
  what = "trailing characters";
  if (p != end) goto bad;
done:
  t = (double)(days_from_civil(year, mon, day) * 86400 + (int64_t)hh * 3600 +
               (int64_t)mi * 60 + ss) + frac;
  lua_pushnumber(L, (lua_Number)t);
  return 1;
bad:
  /* p is at the first byte that did not fit (byte numbers count from 1) */
  return geneva_fail(L, "TIME_PARSE", "time: %s at byte %d of '%s'", what,
                     (int)(p - s + 1), len > 64 ? "(long string)" : s);
}

static const luaL_Reg funcs[] = {
  {"monotonic", time_monotonic},
  {"now", time_now},
  {"sleep", time_sleep},
  {"iso8601", time_iso8601},
  {"parse_iso8601", time_parse_iso8601},
  {NULL, NULL}
};

/* Pushes the module table; creates nothing else. */
int luaopen_geneva_time_core(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
