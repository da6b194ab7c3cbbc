/*
** lazy.c: loading libraries on first use (see lazy.h).
*/
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "lazy.h"

/* One lock for every library: loads are rare, and it keeps the struct a
** plain constant initializer. Never held across a Lua call. */
static pthread_mutex_t lazy_lock = PTHREAD_MUTEX_INITIALIZER;

/* Opens the library and fills the table; caller holds lazy_lock. */
static int load_locked(geneva_lazy_lib *lib, char *err, size_t errlen) {
  const char *file = lib->env ? getenv(lib->env) : NULL;
  void *h, *sym;
  size_t i;
  if (!file || !*file) file = lib->soname;
  h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(err, errlen, "cannot load %s: %s (%s)", file, dlerror(), lib->hint);
    return -1;
  }
  for (i = 0; i < lib->n; i++) {
    sym = dlsym(h, lib->names[i]);
    if (!sym) {
      snprintf(err, errlen, "cannot load %s: it has no symbol '%s' (%s)", file,
               lib->names[i], lib->hint);
      return -1;   /* the table is read only once loaded is set */
    }
    /* POSIX: function pointers and void * share a representation (dlsym) */
    memcpy((char *)lib->table + i * sizeof sym, &sym, sizeof sym);
  }
  if (lib->init && lib->init(err, errlen) != 0) return -1;
  return 0;
}

int geneva_lazy_load(geneva_lazy_lib *lib, char *err, size_t errlen) {
  int r = 0;
  if (__atomic_load_n(&lib->loaded, __ATOMIC_ACQUIRE)) return 0;
  pthread_mutex_lock(&lazy_lock);
  if (!__atomic_load_n(&lib->loaded, __ATOMIC_RELAXED)) {
    r = load_locked(lib, err, errlen);
    if (r == 0) __atomic_store_n(&lib->loaded, 1, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&lazy_lock);
  return r;
}

void geneva_lazy_require(lua_State *L, geneva_lazy_lib *lib) {
  char err[512];
  if (__atomic_load_n(&lib->loaded, __ATOMIC_ACQUIRE)) return;
  if (geneva_lazy_load(lib, err, sizeof err) != 0) luaL_error(L, "%s", err);
}
