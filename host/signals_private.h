/*
** signals_private.h: interrupt state shared by signals.c, ledger.c, repl.c.
*/
#ifndef GENEVA_SIGNALS_PRIVATE_H
#define GENEVA_SIGNALS_PRIVATE_H

#include <lua.h>

void geneva_teardown_begin(void);   /* interrupts are held while > 0 */
void geneva_teardown_end(void);
int geneva_teardown_depth(void);
void geneva_signals_rearm(lua_State *L);
void geneva_signals_clear(void);    /* the REPL forgets a handled Ctrl-C */

#endif
