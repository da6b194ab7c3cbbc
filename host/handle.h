/*
** handle.h: the one way to define a userdata handle over a C resource
** (not installed). Modelled on liolib.c's LStream/newprefile/aux_close/
** tofile and LuaSocket's auxiliar_newclass.
**
** A handle struct starts with a geneva_handle; its class says how to
** release it:
**
**   typedef struct { geneva_handle h; zip_t *za; } archive;
**   static int archive_release(void *p) { zip_discard(((archive *)p)->za); return 0; }
**   static const geneva_class archive_class = {
**     "geneva.zip.Archive", NULL, "zip", archive_release, NULL, NULL, NULL };
**
**   luaopen:  geneva_class_register(L, &archive_class, meth);
**   open:     a = geneva_handle_new(L, &archive_class, sizeof *a, 1);  (born closed)
**             ...acquire; on failure return nil, msg, code: nothing to undo
**             a->za = za; geneva_handle_open(L, a);   (open, ledger-tracked)
**   methods:  archive *a = geneva_handle_check(L, 1, &archive_class);
**
** and the class gets, in one metatable named after it (so luaL_checkudata
** and luaL_typeerror speak of "geneva.zip.Archive"):
**   close()      idempotent: true (or nil, msg, code when release fails)
**   is_closed()  boolean
**   __close, __gc  the same release (never raise)
**   __tostring   "<name> <describe>" while open ("<name> (0x...)" by
**                default), "<name> (closed)" after
** Use after close raises "attempt to use a closed <name>" (never a crash);
** the ledger tears an open handle down at scope close, signal or host free
** even if Lua never collects it.
**
** A class without methods is a box: scratch state of one C call (a parser,
** a buffer, an fd) marked to-be-closed with lua_toclose, so a raise frees it.
*/
#ifndef GENEVA_HANDLE_H
#define GENEVA_HANDLE_H

#include <stddef.h>
#include <lua.h>
#include <lauxlib.h>

#include "geneva_internal.h"

typedef struct geneva_class {
  const char *name;     /* "geneva.sqlite.Db": metatable, __name, messages */
  const char *what;     /* "attempt to use a closed <what>"; NULL: name */
  const char *kind;     /* ledger kind ("sqlite") while open; NULL: untracked */
  /*
  ** Frees what an open handle holds. Called exactly once per opened handle,
  ** already marked closed, from close(), __close, __gc or the ledger's
  ** teardown: it must not raise nor call Lua. 0, or an errno for close().
  */
  int (*release)(void *h);
  /* Pushes the text after "<name> " in __tostring of an open handle (idx:
  ** the handle's stack index). NULL: "(0x...)". */
  void (*describe)(lua_State *L, void *h, int idx);
  /* A note for the use-after-close error ("(its geneva.sqlite.Db was
  ** closed)"), or NULL. */
  const char *(*closed_why)(const void *h);
  /* __index as a function, called with the method table as upvalue 1 (for
  ** fields such as TempDir.path); NULL: __index is the method table. */
  lua_CFunction index;
} geneva_class;

/* The header of every handle struct. Fields are the helper's. */
typedef struct geneva_handle {
  const geneva_class *cls;
  geneva_resource *res;  /* ledger entry while open, or NULL */
  int open;
} geneva_handle;

/*
** Creates the class's metatable (once per state; complete before any handle
** exists, so __gc is armed) with meth (NULL for a box) plus close and
** is_closed unless meth has them. Pushes nothing.
*/
void geneva_class_register(lua_State *L, const geneva_class *c, const luaL_Reg *meth);

/*
** Pushes a new handle of class c: size bytes (>= sizeof(geneva_handle)),
** zeroed, closed, with nuv user values. Raises only on memory errors.
*/
void *geneva_handle_new(lua_State *L, const geneva_class *c, size_t size, int nuv);

/* Marks h open once its resource is acquired, and registers it in the
** current ledger scope when the class has a kind. Never raises. */
void geneva_handle_open(lua_State *L, void *h);

/* The one release: idempotent, never raises. 0 or the release's errno. */
int geneva_handle_release(void *h);

/* Whether h is open. */
int geneva_handle_is_open(const void *h);

/* The handle at idx, open or closed; raises on another type. */
void *geneva_handle_to(lua_State *L, int idx, const geneva_class *c);

/* The handle at idx; raises on another type or when it is closed. */
void *geneva_handle_check(lua_State *L, int idx, const geneva_class *c);

/* Body of a close method (for aliases such as Lock:unlock): releases the
** handle at idx; pushes true, or nil, msg, code when release failed. */
int geneva_handle_close(lua_State *L, int idx, const geneva_class *c);

#endif
