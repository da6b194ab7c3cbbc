/*
** main.c: the geneva command. Like lua.c it does little itself: it parses
** the command line, runs the script, REPL or subcommand in a host, reports
** errors with their traceback, and frees the host (tearing everything down)
** before exiting.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#include "geneva.h"
#include "host_private.h"

static const char *progname = "geneva";

static const char usage_text[] =
  "usage: geneva [options] [FILE [args...]]\n"
  "       geneva run FILE [args...]\n"
  "       geneva COMMAND [args...]   (geneva COMMAND --help for details)\n"
  "\n"
  "With no FILE, geneva opens a REPL when stdin is a terminal and runs stdin\n"
  "as a script otherwise. FILE '-' is stdin. The REPL keeps its history in\n"
  "GENEVA_HISTORY (default ~/.geneva_history).\n"
  "\n"
  "options:\n"
  "  -e CODE        run CODE (may repeat; runs before FILE)\n"
  "  --trace        full tracebacks for every error (also GENEVA_TRACE=1);\n"
  "                 otherwise an error such as not_found names its line\n"
  "                 in your script and internal errors show a traceback\n"
  "  --no-progress  no progress bar on stderr (also GENEVA_PROGRESS=0;\n"
  "                 GENEVA_PROGRESS=1 draws it even when not a terminal)\n"
  "  -v, --version  print the version and exit\n"
  "  -h, --help     print this help and exit\n"
  "\n"
  "commands: run, %s\n"
  "exit codes: 0 ok, 1 script or job failure, 2 usage error,\n"
  "            129/130/143 after SIGHUP/SIGINT/SIGTERM (teardown done)\n";

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "%s: ", progname);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n(see '%s --help')\n", progname);
  return 2;
}

static int report(geneva_host *h, int code) {
  const char *msg = geneva_host_error(h);
  if (code != 0 && msg) fprintf(stderr, "%s: %s\n", progname, msg);
  return code;
}

/* Subcommands are Lua modules geneva.cli.<name>, run by
** geneva.cli.main(name, args...) -> exit code. The one list of them: */
static const char *const commands[] = {"cluster", "manifest", "jobs", "tables",
                                       "recipe", "reap", "worker", NULL};

static int is_command(const char *s) {
  int i;
  for (i = 0; commands[i]; i++)
    if (strcmp(s, commands[i]) == 0) return 1;
  return 0;
}

static void print_usage(void) {
  char list[256] = "";
  int i;
  for (i = 0; commands[i]; i++) {
    if (i > 0) strncat(list, ", ", sizeof list - strlen(list) - 1);
    strncat(list, commands[i], sizeof list - strlen(list) - 1);
  }
  printf(usage_text, list);
}

/* A word that is neither a command nor a file but is near a command is a
** mistyped command (`geneva job list`): 1 with the command in out. The
** stdlib's one "did you mean" helper (geneva.suggest) decides. */
static int near_command(geneva_host *h, const char *word, char *out, size_t n) {
  lua_State *L = geneva_host_lua(h);
  int i, found = 0;
  for (i = 0; word[i]; i++)
    if (word[i] < 'a' || word[i] > 'z') return 0;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "geneva.suggest");
  if (geneva_host_pcall(h, 1, 1, 0) != 0) return 0;
  lua_getfield(L, -1, "nearest");         /* [suggest, nearest] */
  lua_pushstring(L, word);
  lua_createtable(L, 8, 0);
  for (i = 0; commands[i]; i++) {
    lua_pushstring(L, commands[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushliteral(L, "run");
  lua_rawseti(L, -2, i + 1);               /* [suggest, nearest, word, names] */
  if (geneva_host_pcall(h, 2, 1, 0) == 0) {
    if (lua_type(L, -1) == LUA_TSTRING) {
      snprintf(out, n, "%s", lua_tostring(L, -1));
      found = 1;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return found;
}

static int run_command(geneva_host *h, int argc, char **argv) {
  lua_State *L = geneva_host_lua(h);
  int i, code;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "geneva.cli");
  if ((code = geneva_host_pcall(h, 1, 1, 0)) != 0) return report(h, code);
  lua_getfield(L, -1, "main");
  lua_remove(L, -2);
  luaL_checkstack(L, argc, "too many arguments");
  for (i = 0; i < argc; i++) lua_pushstring(L, argv[i]);
  if ((code = geneva_host_pcall(h, argc, 1, 0)) != 0) return report(h, code);
  code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
  lua_pop(L, 1);
  return code;
}

static int run(geneva_host *h, int argc, char **argv) {
  int i, code, ran_code = 0;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      print_usage();
      return 0;
    } else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
      printf("geneva %s (%s)\n", GENEVA_VERSION, LUA_RELEASE);
      return 0;
    } else if (strcmp(a, "--trace") == 0) {
      h->trace = 1;
    } else if (strcmp(a, "--no-progress") == 0) {
      setenv("GENEVA_PROGRESS", "0", 1);   /* for this process and what it starts */
    } else if (strcmp(a, "-e") == 0) {
      if (++i >= argc) return usage_error("'-e' needs an argument%s", "");
      code = geneva_host_dostring(h, argv[i]);
      if (code != 0 || h->exiting) return report(h, code);   /* os.exit ends the run */
      ran_code = 1;
    } else if (strcmp(a, "--") == 0) {
      i++;
      break;
    } else if (a[0] == '-' && a[1] != '\0') {
      return usage_error("unrecognized option '%s'", a);
    } else {
      break;
    }
  }
  if (i < argc && strcmp(argv[i], "run") == 0) {
    if (++i >= argc) return usage_error("'run' needs a FILE%s", "");
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      puts("usage: geneva run FILE [args...]\n\nRuns a Lua job script; `arg` and `...` hold args.");
      return 0;
    }
  } else if (i < argc && is_command(argv[i])) {
    return run_command(h, argc - i, argv + i);
  } else if (i < argc && access(argv[i], F_OK) != 0) {
    char near[32];
    if (near_command(h, argv[i], near, sizeof near)) {
      fprintf(stderr, "%s: unknown command '%s' (did you mean '%s'?)\n(see '%s --help')\n",
              progname, argv[i], near, progname);
      return 2;
    }
  }
  if (i < argc) {
    code = geneva_host_dofile(h, argv[i], argc - i - 1, (const char *const *)argv + i + 1);
    return report(h, code);
  }
  if (ran_code) return 0;
  if (isatty(STDIN_FILENO)) return geneva_repl(h);
  return report(h, geneva_host_dofile(h, "-", 0, NULL));
}

int main(int argc, char **argv) {
  geneva_host_opts opts;
  geneva_host *h;
  int code;
  memset(&opts, 0, sizeof opts);
  opts.handle_signals = 1;
  opts.progname = argv[0] ? argv[0] : progname;
  h = geneva_host_new(&opts);
  if (!h) {
    fprintf(stderr, "%s: cannot create the Lua state: not enough memory\n", progname);
    return 1;
  }
  h->is_geneva = 1;      /* workers are this very program (worker_exe.c) */
  code = run(h, argc, argv);
  fflush(stdout);
  geneva_host_free(h);   /* tears down everything the script left */
  return code;
}
