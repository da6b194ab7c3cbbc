/*
** lazy.h: the one way to load a C library on first use instead of at
** program start (not installed).
**
** Why: Debian builds libcrypto and libsqlite3 with BIND_NOW, and merely
** linking libcurl, libsqlite3, libzip (with the libcrypto it pulls in) and
** libedit cost `geneva -e ''` about 4x the instructions of `lua5.4 -e ''`
** (README, Performance). So none of them is linked: a binding declares the
** library and the functions it calls, gets a table of pointers typed from
** the library's own header, and #defines each name to its pointer, so the
** code that calls them reads as usual:
**
**   #define ZIP_FUNCS(X) X(zip_open) X(zip_close) ...
**   GENEVA_LAZY_LIB(zip_lib, "libzip.so.4", NULL, "install libzip4", NULL, ZIP_FUNCS)
**   #define zip_open (zip_lib_api.zip_open)       (one per function)
**   ...
**   luaopen_...: geneva_lazy_require(L, &zip_lib);   (raises when missing)
**
** Variables work too (X(rl_catch_signals) gives an `int *`).
**
** A library is opened once per process with RTLD_NOW | RTLD_LOCAL and never
** closed (libcurl and its TLS library keep global state). Loading is
** thread-safe: two hosts on two threads may require the same module at once.
** A failed load is not remembered: the next require tries again.
*/
#ifndef GENEVA_LAZY_H
#define GENEVA_LAZY_H

#include <stddef.h>
#include <lua.h>

typedef struct geneva_lazy_lib {
  const char *soname;          /* "libzip.so.4" */
  const char *env;             /* environment variable naming another file
                                  to load instead (tests, odd systems), or NULL */
  const char *hint;            /* how to get it, for errors: "install libzip4" */
  /* called once, under the loader's lock, after every symbol was found;
  ** 0, or nonzero with a message in err (the library then counts as not
  ** loaded). NULL: nothing to do. */
  int (*init)(char *err, size_t errlen);
  const char *const *names;    /* the symbols, in table order */
  size_t n;
  void *table;                 /* n pointers, filled in order */
  int loaded;                  /* read and written atomically */
} geneva_lazy_lib;

#define GENEVA_LAZY_FIELD(name) __typeof__(name) *name;
#define GENEVA_LAZY_NAME(name) #name,

/*
** Declares `static geneva_lazy_lib var` and its pointer table `var##_api`
** with one field per name in FUNCS (an X-macro list). env, hint and init as
** in geneva_lazy_lib (env and init may be NULL).
*/
#define GENEVA_LAZY_LIB(var, soname, env, hint, init, FUNCS)                \
  static struct { FUNCS(GENEVA_LAZY_FIELD) } var##_api;                     \
  static const char *const var##_names[] = { FUNCS(GENEVA_LAZY_NAME) };     \
  static geneva_lazy_lib var = { soname, env, hint, init, var##_names,      \
    sizeof var##_names / sizeof *var##_names, &var##_api, 0 };

/*
** Loads lib (once per process) without touching Lua: 0, or -1 with
** "cannot load <file>: <why> (<hint>)" in err.
*/
int geneva_lazy_load(geneva_lazy_lib *lib, char *err, size_t errlen);

/*
** Loads lib or raises the error of geneva_lazy_load. Call it before
** acquiring anything (in luaopen_*, or first thing in a function). Cheap once
** loaded: one atomic read.
*/
void geneva_lazy_require(lua_State *L, geneva_lazy_lib *lib);

#endif
