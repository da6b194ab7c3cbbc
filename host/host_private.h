/*
** host_private.h: the host struct, shared by host.c, main.c and repl.c.
*/
#ifndef GENEVA_HOST_PRIVATE_H
#define GENEVA_HOST_PRIVATE_H

#include "geneva.h"
#include "host.h"

struct geneva_host {
  lua_State *L;
  geneva_host_opts opts;   /* opts.worker_exe points to worker_exe below */
  geneva_ledger *ledger;
  char *err;        /* last error with traceback, or NULL */
  char *worker_exe; /* the host's copy of opts.worker_exe, or NULL */
  int exiting;      /* os.exit was called: the host is finished */
  int interrupted;  /* the last interactive call ended by Ctrl-C */
  int exit_code;
  int is_geneva;    /* the process is the geneva command: its workers are
                       itself (set by main.c) */
  int trace;        /* full tracebacks for every error (geneva --trace) */
  geneva_memory mem;  /* L's allocator's counter (memory.c); lives as long as L */
};

geneva_host *geneva_host_from(lua_State *L);
/* Calls the function under nargs arguments with a traceback handler:
** 0, the os.exit code, 128+n after signal n (everything torn down unless
** interactive), or 1 with the message in h->err. */
int geneva_host_pcall(geneva_host *h, int nargs, int nres, int interactive);
int geneva_repl(geneva_host *h);

#endif
