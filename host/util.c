/*
** util.c: small helpers shared by the bindings (geneva_internal.h).
*/
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "geneva_internal.h"

int geneva_fail(lua_State *L, const char *code, const char *fmt, ...) {
  va_list ap;
  luaL_pushfail(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_pushstring(L, code);
  return 3;
}

const char *geneva_errno_name(int err) {
  static __thread char buf[16];
  switch (err) {
#define E(x) case x: return #x;
    E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(ENOEXEC)
    E(EBADF) E(ECHILD) E(EAGAIN) E(ENOMEM) E(EACCES) E(EFAULT) E(EBUSY)
    E(EEXIST) E(EXDEV) E(ENODEV) E(ENOTDIR) E(EISDIR) E(EINVAL) E(ENFILE)
    E(EMFILE) E(ENOTTY) E(EFBIG) E(ENOSPC) E(ESPIPE) E(EROFS) E(EMLINK)
    E(EPIPE) E(ERANGE) E(ENAMETOOLONG) E(ENOTEMPTY) E(ELOOP) E(ETIMEDOUT)
    E(ECONNREFUSED) E(ECONNRESET) E(EADDRINUSE) E(ENOSYS) E(EDQUOT)
#undef E
    default:
      snprintf(buf, sizeof buf, "E%d", err);
      return buf;
  }
}

int geneva_fail_errno(lua_State *L, int err, const char *what) {
  return geneva_fail(L, geneva_errno_name(err), "%s: %s", what, strerror(err));
}
