/*
** geneva_internal.h: what the host offers the bindings (not installed).
**
** Bindings are thin: they own one C library each and register every live
** resource (process group, temp dir, curl/zip/sqlite handle) in the host's
** ledger, so the host can tear it down on scope exit, error, signal or
** geneva_host_free even if Lua never collects the handle.
*/
#ifndef GENEVA_INTERNAL_H
#define GENEVA_INTERNAL_H

#include <lua.h>
#include <lauxlib.h>

/* {====== Ledger: C-owned resources */

typedef struct geneva_resource geneva_resource;

/* Tears the resource down. Must not raise nor call back into Lua: it may run
** during a signal-triggered teardown or inside lua_close. */
typedef void (*geneva_teardown_fn)(void *ud);

/*
** Registers a resource in the current scope of L's ledger; `kind` is a static
** string ("proc", "tmpdir", ...). Never raises; returns NULL when there is no
** ledger (a state not made by geneva_host_new) or memory is short, in which
** case the caller still owns the resource and __gc remains the backstop.
*/
geneva_resource *geneva_ledger_track(lua_State *L, const char *kind,
                                     geneva_teardown_fn fn, void *ud);

/*
** Forgets r without calling its teardown: the owner released the resource
** itself. NULL is ignored, and so is a call made from inside r's own teardown.
*/
void geneva_ledger_untrack(geneva_resource *r);

/* }====== */

/* {====== Interrupts */

/*
** 0, or the number of the first SIGINT/SIGTERM/SIGHUP the host received.
** Blocking calls poll it (EINTR loops, curl's progress callback, SQLite's
** progress handler) and then return nil, "interrupted", "EINTR".
*/
int geneva_interrupted(void);

/* }====== */

/* {====== Helpers shared by the bindings */

/*
** Pushes nil, msg, code and returns 3: the "expected failure" convention.
** msg is formatted like lua_pushfstring.
*/
int geneva_fail(lua_State *L, const char *code, const char *fmt, ...);

/* Like geneva_fail for errno: nil, "<what>: <strerror>", "<ENAME>". */
int geneva_fail_errno(lua_State *L, int err, const char *what);

/* The symbolic name of an errno value ("ENOENT"), or "E<number>". */
const char *geneva_errno_name(int err);

/* }====== */

#endif
