/*
** embed.c: a C application embedding Geneva for Lua through libgeneva.
**
** Build against an installed geneva:
**   cc embed.c $(pkg-config --cflags --libs geneva) -o embed
** Run:  ./embed script.lua [args...]   or   ./embed   (runs a built-in chunk)
**
** The embedder keeps its own signal handlers (handle_signals = 0), gets the
** Lua state to register its own functions, and frees the host, which tears
** down every resource the scripts created.
*/
#include <stdio.h>

#include <geneva.h>
#include <lauxlib.h>

/* A function of the application, callable from Lua as app.greet(name). */
static int app_greet(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_pushfstring(L, "hello, %s, from the embedding application", name);
  return 1;
}

int main(int argc, char **argv) {
  geneva_host_opts opts = {0};
  geneva_host *h = geneva_host_new(&opts);
  lua_State *L;
  int code;
  if (!h) {
    fprintf(stderr, "embed: cannot create a geneva host\n");
    return 1;
  }
  L = geneva_host_lua(h);
  lua_newtable(L);
  lua_pushcfunction(L, app_greet);
  lua_setfield(L, -2, "greet");
  lua_setglobal(L, "app");

  if (argc > 1)
    code = geneva_host_dofile(h, argv[1], argc - 2, (const char *const *)argv + 2);
  else
    code = geneva_host_dostring(h,
      "local geneva = require 'geneva'\n"
      "print(app.greet('geneva'))\n"
      "print(geneva._VERSION)\n");
  if (code != 0 && geneva_host_error(h))
    fprintf(stderr, "embed: %s\n", geneva_host_error(h));
  geneva_host_free(h);
  return code;
}
