/*
** lazy.c: geneva_lazy_load (see lazy.h).
*/
#include <dlfcn.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "lazy.h"

void geneva_lazy_load(lua_State *L, const char *soname, void *table,
                      const char *const *names, size_t n, int *loaded) {
  void *h, *slots[256];
  size_t i;
  if (*loaded) return;
  if (n > sizeof slots / sizeof *slots) luaL_error(L, "lazy.c: too many symbols for %s", soname);
  h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (!h) luaL_error(L, "cannot load %s: %s", soname, dlerror());
  for (i = 0; i < n; i++) {
    slots[i] = dlsym(h, names[i]);
    if (!slots[i]) luaL_error(L, "%s has no symbol '%s'", soname, names[i]);
  }
  /* POSIX: function pointers and void * share a representation (dlsym) */
  memcpy(table, slots, n * sizeof(void *));
  *loaded = 1;
}
