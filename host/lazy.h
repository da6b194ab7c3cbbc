/*
** lazy.h: load a C library on first use instead of at program start.
**
** Debian builds libsqlite3 and libcrypto (pulled in by libzip) with
** BIND_NOW: merely linking them cost `geneva -e ''` about 4x the instructions
** of `lua5.4 -e ''` (pitfalls.md, startup). A binding lists the functions it
** calls in an X-macro, gets a table of pointers typed from the library's own
** header, and #defines each name to its pointer, so its code is unchanged:
**
**   #define ZIP_FUNCS(X) X(zip_open) X(zip_close) ...
**   GENEVA_LAZY_TABLE(zip_api, ZIP_FUNCS)
**   #define zip_open (zip_api.zip_open)           (one per function)
**   ... luaopen: geneva_lazy_load(L, "libzip.so.4", &zip_api, zip_api_names, n)
*/
#ifndef GENEVA_LAZY_H
#define GENEVA_LAZY_H

#include <stddef.h>
#include <lua.h>

#define GENEVA_LAZY_FIELD(name) __typeof__(name) *name;
#define GENEVA_LAZY_NAME(name) #name,
#define GENEVA_LAZY_TABLE(api, FUNCS)                                    \
  static struct { FUNCS(GENEVA_LAZY_FIELD) } api;                        \
  static const char *const api##_names[] = { FUNCS(GENEVA_LAZY_NAME) };  \
  static int api##_loaded;

/*
** Opens soname (RTLD_NOW | RTLD_LOCAL, kept open for the process) and fills
** the n pointers of table from names. Raises a Lua error naming the library
** and the missing symbol; call it before acquiring anything.
*/
void geneva_lazy_load(lua_State *L, const char *soname, void *table,
                      const char *const *names, size_t n, int *loaded);

#define GENEVA_LAZY_LOAD(L, soname, api) \
  geneva_lazy_load(L, soname, &api, api##_names, \
                   sizeof api##_names / sizeof *api##_names, &api##_loaded)

#endif
