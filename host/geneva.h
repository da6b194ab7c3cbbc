/*
** geneva.h: embedding API of Geneva for Lua (libgeneva).
**
** A host owns one Lua 5.4 state with the `geneva` module and its bindings
** preloaded, and a ledger of every external resource created through it
** (processes, temp dirs, handles, leases). geneva_host_free tears the ledger
** down in reverse order before closing the state.
*/
#ifndef GENEVA_H
#define GENEVA_H

#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GENEVA_VERSION_STRING "0.1.0"

typedef struct geneva_host geneva_host;

typedef struct geneva_host_opts {
  int handle_signals;   /* install SIGINT/SIGTERM/SIGHUP handlers (the CLI does) */
  const char *progname; /* arg[-1] for scripts; NULL means "geneva" */
  /* The program started as a worker (backfill workers, the host binary a
  ** manifest ships): a geneva executable, never the embedding application.
  ** A path, or a name looked up on PATH; copied by geneva_host_new. NULL:
  ** $GENEVA_WORKER_EXE if set, else the geneva installed beside libgeneva
  ** (<prefix>/bin/geneva for <prefix>/lib/libgeneva.so), else geneva on
  ** PATH. When none is found, whatever needs a worker fails with an error
  ** saying so (require("geneva.host.core").worker_exe() tells in advance). */
  const char *worker_exe;
  /* fields are only ever added at the end: zero-initialise the struct */
} geneva_host_opts;

/* A new host, or NULL when it cannot set up (memory is short); it never
** aborts. opts may be NULL (all zero). */
geneva_host *geneva_host_new(const geneva_host_opts *opts);

/* The host's Lua state: valid until geneva_host_free. NULL for a NULL h. */
lua_State *geneva_host_lua(geneva_host *h);

/*
** Runs a script file with `arg` set as the `lua` program does (arg[0] = path,
** arg[1..argc] = argv) and `...` = argv. path "-" reads stdin.
** Returns 0, or the exit code: 1 for an error (message in geneva_host_error),
** the code given to os.exit, or 128+n after signal n (teardown done).
** A NULL path, a negative argc, or argc > 0 with a NULL argv or NULL entry
** is an error (1), never a crash; so is a NULL h (with no message).
*/
int geneva_host_dofile(geneva_host *h, const char *path,
                       int argc, const char *const *argv);

/* Runs a chunk of Lua code; same return values as geneva_host_dofile. A
** NULL code is an error (1), never a crash. */
int geneva_host_dostring(geneva_host *h, const char *code);

/*
** os.exit(n) in a script ends the host's session: the running script
** unwinds (pcall cannot stop it), the host tears down everything it owns,
** as the geneva command does before exiting, and the call returns n with
** geneva_host_error NULL. The host is then finished: every later
** geneva_host_dofile or geneva_host_dostring returns 1 and
** geneva_host_error says that a script called os.exit. The application
** itself goes on; free the host (and make a new one to run more).
*/

/* The last error message with its traceback, or NULL. Host-owned, valid
** until the next call on h. */
const char *geneva_host_error(const geneva_host *h);

/* Tears down everything the host owns, then closes the state. NULL is ok. */
void geneva_host_free(geneva_host *h);

#ifdef __cplusplus
}
#endif

#endif
