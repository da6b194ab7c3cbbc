/*
** host.h: declarations shared inside host/ (not installed).
*/
#ifndef GENEVA_HOST_H
#define GENEVA_HOST_H

#include <stddef.h>
#include <lua.h>

typedef struct geneva_binding {
  const char *name;          /* "geneva.json.core" */
  lua_CFunction open;        /* luaopen_geneva_json_core */
} geneva_binding;

typedef struct geneva_embedded {
  const char *name;          /* "geneva.http" */
  const char *file;          /* "stdlib/geneva/http.lua" (chunk name) */
  const unsigned char *src;
  size_t len;
} geneva_embedded;

extern const geneva_binding geneva_bindings[];   /* gen/bindings_table.c */
extern const geneva_embedded geneva_stdlib[];    /* gen/stdlib_blob.c */

/* ledger.c */
typedef struct geneva_ledger geneva_ledger;
geneva_ledger *geneva_ledger_new(void);          /* NULL when memory is short */
/* Makes g the ledger of L (a registry entry: may raise a memory error). */
void geneva_ledger_attach(lua_State *L, geneva_ledger *g);
/* Tears down every scope and resource, newest first, with hooks off; teardown
** errors are written as warnings. Leaves the ledger usable (empty). */
void geneva_ledger_teardown_all(lua_State *L);
void geneva_ledger_free(geneva_ledger *g);
int luaopen_geneva_ledger_core(lua_State *L);

/* worker_exe.c */
/*
** The program to start as a worker, as an absolute path in buf (README,
** Embedding):
** h's opts.worker_exe, else $GENEVA_WORKER_EXE, else the running executable
** when it is geneva, else the geneva installed beside libgeneva, else geneva
** on PATH. 0, or -1 with a message in err saying what was tried and how to
** set it. h may be NULL (a state not made by geneva_host_new).
*/
struct geneva_host;
int geneva_worker_exe(const struct geneva_host *h, char *buf, size_t len,
                      char *err, size_t errlen);
int luaopen_geneva_host_core(lua_State *L);

/* memory.c: counting allocator with an optional limit (a UDF's memory=) */
typedef struct geneva_memory {
  size_t used;            /* bytes the state holds */
  size_t limit;           /* 0: none */
  size_t refused;         /* allocations the limit refused, ever */
} geneva_memory;
/* Makes L allocate through m (counting from what L holds now). */
void geneva_memory_install(lua_State *L, geneva_memory *m);
/* Adds memory() and set_memory_limit() to the table on top (geneva.host.core). */
void geneva_memory_register(lua_State *L);

/* signals.c */
void geneva_signals_install(lua_State *L);       /* handlers + hook target */
void geneva_signals_uninstall(void);
void geneva_signals_disarm(lua_State *L);        /* removes the interrupt hook */
void geneva_signals_block(void);                 /* during teardown */
int geneva_signals_exit_code(void);              /* 128+n, or 0 */

#endif
