/*
** signals.c: SIGINT/SIGTERM/SIGHUP. The handler only records the signal and
** sets a Lua hook (as lua.c does); the hook raises "interrupted" and keeps
** re-raising, so a pcall cannot swallow it. Teardown runs later, outside the
** handler, with the hook off: while it runs (depth > 0) interrupts are held,
** so a second Ctrl-C cannot cut it short, and blocking calls made by the
** teardown itself are not told to give up.
*/
#include <signal.h>
#include <string.h>

#include <lua.h>

#include "geneva_internal.h"
#include "host.h"
#include "signals_private.h"

static volatile sig_atomic_t received;        /* first signal number, or 0 */
static volatile sig_atomic_t teardown_depth;
static lua_State *volatile hook_state;        /* the main state of the CLI */
static struct sigaction saved[3];
static const int handled[3] = {SIGINT, SIGTERM, SIGHUP};
static int installed;

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  if (!received) {              /* cleared meanwhile (the REPL's prompt) */
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  lua_pushliteral(L, "interrupted");
  lua_error(L);
}

static void on_signal(int sig) {
  if (!received) received = sig;
  if (!teardown_depth && hook_state)
    lua_sethook(hook_state, interrupt_hook,
                LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

int geneva_interrupted(void) { return teardown_depth ? 0 : (int)received; }

void geneva_teardown_begin(void) { teardown_depth++; }
void geneva_teardown_end(void) { if (teardown_depth > 0) teardown_depth--; }
int geneva_teardown_depth(void) { return (int)teardown_depth; }

void geneva_signals_rearm(lua_State *L) {
  if (received) lua_sethook(L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

void geneva_signals_disarm(lua_State *L) { lua_sethook(L, NULL, 0, 0); }

void geneva_signals_clear(void) { received = 0; }

int geneva_signals_exit_code(void) { return received ? 128 + (int)received : 0; }

void geneva_signals_install(lua_State *L) {
  struct sigaction sa;
  int i;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;     /* no SA_RESTART: blocking calls see EINTR */
  sigemptyset(&sa.sa_mask);
  hook_state = L;
  received = 0;
  for (i = 0; i < 3; i++) sigaction(handled[i], &sa, &saved[i]);
  signal(SIGPIPE, SIG_IGN);      /* a dead peer is an error, not a death */
  signal(SIGXFSZ, SIG_IGN);      /* so is ulimit -f: writes fail with EFBIG */
  installed = 1;
}

void geneva_signals_block(void) { teardown_depth++; }

void geneva_signals_uninstall(void) {
  int i;
  if (!installed) return;
  for (i = 0; i < 3; i++) sigaction(handled[i], &saved[i], NULL);
  hook_state = NULL;
  installed = 0;
  teardown_depth = 0;
}
