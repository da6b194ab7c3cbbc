/*
** repl.c: the interactive loop, shaped like lua.c's doREPL: libedit line
** editing and a history file, multi-line statements, `=expr`, and results
** pretty-printed by geneva.pretty, Tab completion of names (geneva.repl).
** Ctrl-C interrupts the running statement and returns to the prompt; at the
** prompt it clears the line, and at a `>>` prompt it drops the statement.
*/
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>
#include <lua.h>
#include <lauxlib.h>

#include "geneva_internal.h"
#include "host_private.h"
#include "signals_private.h"
#include "lazy.h"

/* libedit is loaded when the REPL starts, not with every script (lazy.h) */
#define EDIT_FUNCS(X) X(readline) X(add_history) X(read_history) \
  X(write_history) X(using_history) X(stifle_history) \
  X(rl_getc_function) X(rl_catch_signals) X(rl_completion_matches) \
  X(rl_attempted_completion_function) X(rl_attempted_completion_over) \
  X(rl_basic_word_break_characters) X(rl_completion_append_character)
GENEVA_LAZY_LIB(edit_lib, "libedit.so.2", NULL, "install libedit2", NULL, EDIT_FUNCS)
#define readline (edit_lib_api.readline)
#define add_history (edit_lib_api.add_history)
#define read_history (edit_lib_api.read_history)
#define write_history (edit_lib_api.write_history)
#define using_history (edit_lib_api.using_history)
#define stifle_history (edit_lib_api.stifle_history)
#define rl_getc_function (*edit_lib_api.rl_getc_function)    /* variables */
#define rl_catch_signals (*edit_lib_api.rl_catch_signals)
#define rl_completion_matches (edit_lib_api.rl_completion_matches)
#define rl_attempted_completion_function (*edit_lib_api.rl_attempted_completion_function)
#define rl_attempted_completion_over (*edit_lib_api.rl_attempted_completion_over)
#define rl_basic_word_break_characters (*edit_lib_api.rl_basic_word_break_characters)
#define rl_completion_append_character (*edit_lib_api.rl_completion_append_character)

/* Reads a key for libedit. A Ctrl-C at the prompt ends the line read (the
** caller clears it) instead of leaving the interrupt pending for the next
** statement. The wait is a ppoll with our signals blocked until it starts:
** a Ctrl-C that lands while libedit is busy (redrawing, completing) is seen
** by the check, one that lands later wakes the ppoll; a plain read() would
** sleep through the first kind until the next key. */
static int repl_getc(FILE *f) {
  unsigned char c;
  sigset_t ours, old;
  struct pollfd pfd;
  sigemptyset(&ours);
  sigaddset(&ours, SIGINT);
  sigaddset(&ours, SIGTERM);
  sigaddset(&ours, SIGHUP);
  pfd.fd = fileno(f);
  pfd.events = POLLIN;
  for (;;) {
    int r;
    ssize_t n;
    sigprocmask(SIG_BLOCK, &ours, &old);
    if (geneva_interrupted()) {
      sigprocmask(SIG_SETMASK, &old, NULL);
      return EOF;
    }
    r = ppoll(&pfd, 1, NULL, &old);
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (r < 0 && errno == EINTR) continue;    /* ours: the check above ends it */
    if (r < 0) return EOF;
    n = read(pfd.fd, &c, 1);
    if (n == 1) return c;
    if (n < 0 && errno == EINTR) continue;
    return EOF;
  }
}

static int load_libedit(lua_State *L) {
  geneva_lazy_require(L, &edit_lib);
  return 0;
}

#define PROMPT1 "> "
#define PROMPT2 ">> "
#define EOFMARK "<eof>"

static char history_path[4096];

static void history_open(void) {
  const char *p = getenv("GENEVA_HISTORY");
  const char *home = getenv("HOME");
  if (p && *p) snprintf(history_path, sizeof history_path, "%s", p);
  else if (home && *home) snprintf(history_path, sizeof history_path, "%s/.geneva_history", home);
  else history_path[0] = '\0';
  using_history();
  stifle_history(1000);
  if (history_path[0]) read_history(history_path);
}

static void history_save(void) {
  if (history_path[0] && write_history(history_path) != 0)
    fprintf(stderr, "geneva: cannot write history file '%s'\n", history_path);
}

/* Reads a line; NULL at end of input. An interrupted read gives "" and
** sets *interrupted. */
static char *read_line(const char *prompt, int *eof, int *interrupted) {
  char *line = readline(prompt);
  *eof = *interrupted = 0;
  if (line == NULL) {
    if (geneva_interrupted()) {
      geneva_signals_clear();
      fputc('\n', stdout);
      *interrupted = 1;
      return strdup("");
    }
    *eof = 1;
  }
  return line;
}

static int incomplete(lua_State *L, int status) {
  if (status == LUA_ERRSYNTAX) {
    size_t lmsg;
    const char *msg = lua_tolstring(L, -1, &lmsg);
    size_t lmark = sizeof(EOFMARK) - 1;
    if (lmsg >= lmark && strcmp(msg + lmsg - lmark, EOFMARK) == 0) return 1;
  }
  return 0;
}

/* Compiles `return <line>` first so expressions print their values. */
static int load_expression(lua_State *L, const char *line) {
  const char *code = lua_pushfstring(L, "return %s", line);
  int status = luaL_loadbuffer(L, code, strlen(code), "=stdin");
  lua_remove(L, -2);
  if (status != LUA_OK) lua_pop(L, 1);
  return status;
}

#define DROPPED (-2)    /* load_chunk: Ctrl-C at `>>` dropped the statement */

/* Leaves a compiled chunk on the stack, or an error message; *source holds
** the source (for the history). Returns -1 at end of input, DROPPED (with
** nothing on the stack) when Ctrl-C dropped a statement being continued. */
static int load_chunk(lua_State *L, char **source) {
  int eof, interrupted, status;
  char *line = read_line(PROMPT1, &eof, &interrupted);
  size_t len;
  if (eof) return -1;
  len = strlen(line);
  if (line[0] == '=') {           /* `=expr`, as in Lua 5.1 */
    memmove(line, line + 1, len);
  }
  if (load_expression(L, line) == LUA_OK) {
    *source = line;
    return LUA_OK;
  }
  for (;;) {
    status = luaL_loadbuffer(L, line, strlen(line), "=stdin");
    if (!incomplete(L, status)) break;
    lua_pop(L, 1);
    {
      char *more = read_line(PROMPT2, &eof, &interrupted), *joined;
      if (eof) { free(line); return -1; }
      if (interrupted) {          /* as lua and python do: start afresh */
        free(more);
        free(line);
        return DROPPED;
      }
      joined = (char *)malloc(strlen(line) + strlen(more) + 2);
      if (!joined) { free(more); free(line); return -1; }
      sprintf(joined, "%s\n%s", line, more);
      free(more);
      free(line);
      line = joined;
    }
  }
  *source = line;
  return status;
}

/* {====== Tab completion: geneva.repl.complete(word) gives the words */

static geneva_host *completing;      /* the host whose REPL is running */
static char **candidates;
static size_t ncandidates, next_candidate;

static void candidates_free(void) {
  size_t i;
  for (i = 0; i < ncandidates; i++) free(candidates[i]);
  free(candidates);
  candidates = NULL;
  ncandidates = next_candidate = 0;
}

/* [word] -> [array of words]; under lua_pcall (libedit's frames are below
** us: no error may longjmp through them) */
static int complete_in_lua(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "geneva.repl");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "complete");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  luaL_checktype(L, -1, LUA_TTABLE);
  return 1;
}

static void candidates_load(const char *word) {
  lua_State *L = geneva_host_lua(completing);
  int base = lua_gettop(L);
  candidates_free();
  lua_pushcfunction(L, complete_in_lua);
  lua_pushstring(L, word);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
    size_t n = lua_rawlen(L, -1), i;
    candidates = n ? (char **)calloc(n, sizeof *candidates) : NULL;
    for (i = 0; candidates && i < n; i++) {
      const char *c;
      lua_rawgeti(L, -1, (lua_Integer)i + 1);
      c = lua_tostring(L, -1);
      if (c && (candidates[ncandidates] = strdup(c)) != NULL) ncandidates++;
      lua_pop(L, 1);
    }
  }
  lua_settop(L, base);
}

static char *candidate_entry(const char *word, int state) {
  (void)word;
  if (state == 0) next_candidate = 0;
  return next_candidate < ncandidates ? strdup(candidates[next_candidate++]) : NULL;
}

static char **complete(const char *word, int start, int end) {
  (void)start; (void)end;
  rl_attempted_completion_over = 1;    /* never fall back to file names */
  rl_completion_append_character = '\0';
  candidates_load(word);
  return ncandidates ? rl_completion_matches(word, candidate_entry) : NULL;
}

/* `.` and `:` belong to the word: `tbl:ba` completes as one */
static const char word_breaks[] = " \t\n\"\\'`@$><=;|&{(}[],+-*/%^~#";

/* }====== */

static void print_results(geneva_host *h, int n) {
  lua_State *L = geneva_host_lua(h);
  int base = lua_gettop(L) - n;
  if (n == 0) return;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "geneva.pretty");
  if (geneva_host_pcall(h, 1, 1, 1) != 0) {
    fprintf(stderr, "geneva: %s\n", geneva_host_error(h));
    lua_settop(L, base);
    return;
  }
  lua_getfield(L, -1, "print");
  lua_remove(L, -2);
  lua_insert(L, base + 1);
  if (geneva_host_pcall(h, n, 0, 1) != 0)
    fprintf(stderr, "geneva: %s\n", geneva_host_error(h));
  lua_settop(L, base);
}

/* Calls geneva.repl.<name>() (statement scopes); its errors are reported,
** never fatal: the REPL keeps going. */
static void repl_step(geneva_host *h, const char *name) {
  lua_State *L = geneva_host_lua(h);
  int base = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "geneva.repl");
  if (geneva_host_pcall(h, 1, 1, 1) == 0) {
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
    if (geneva_host_pcall(h, 0, 0, 1) != 0 && geneva_host_error(h))
      fprintf(stderr, "geneva: %s\n", geneva_host_error(h));
  }
  lua_settop(L, base);
}

int geneva_repl(geneva_host *h) {
  lua_State *L = geneva_host_lua(h);
  char *source = NULL;
  int status;
  lua_pushcfunction(L, load_libedit);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    fprintf(stderr, "geneva: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  rl_catch_signals = 0;          /* our handlers, not libedit's */
  rl_getc_function = repl_getc;
  rl_attempted_completion_function = complete;
  rl_basic_word_break_characters = word_breaks;
  completing = h;
  history_open();
  printf("geneva %s (%s)  Ctrl-D to quit\n", GENEVA_VERSION, LUA_RELEASE);
  while ((status = load_chunk(L, &source)) != -1) {
    if (status == DROPPED) continue;
    if (source && source[0]) {
      add_history(source);
      history_save();
    }
    free(source);
    source = NULL;
    if (geneva_interrupted()) {   /* Ctrl-C while typing: drop the line */
      geneva_signals_clear();
      geneva_signals_disarm(L);
      lua_settop(L, 0);
      fputc('\n', stdout);
      continue;
    }
    if (status == LUA_OK) {
      int base = lua_gettop(L) - 1, code;
      repl_step(h, "before");       /* the statement gets a scope of its own */
      code = geneva_host_pcall(h, 0, LUA_MULTRET, 1);
      if (code == 0) {
        print_results(h, lua_gettop(L) - base);
        repl_step(h, "after");
      } else {
        int interrupted = h->interrupted;
        lua_settop(L, base);
        if (h->exiting) break;
        fprintf(stderr, "%s\n", geneva_host_error(h));
        repl_step(h, interrupted ? "interrupted" : "after");
      }
    } else {
      fprintf(stderr, "%s\n", lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  if (!h->exiting) fputc('\n', stdout);
  history_save();
  rl_attempted_completion_function = NULL;
  completing = NULL;
  candidates_free();
  return h->exiting ? h->exit_code : 0;
}
