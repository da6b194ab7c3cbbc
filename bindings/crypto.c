/*
** crypto.c: geneva.crypto.core, the digests a request signer needs
** (SHA-256 and HMAC-SHA256, for AWS Signature V4) and hex encoding.
**
** libcrypto is loaded on the first call, as fs.c does for its hashes
** (lazy.h: linking it would cost every start). Every function works on
** strings already in memory: nothing C-owned outlives a call, and the only
** raises are misuse and a libcrypto failure, both before anything is
** pushed. Keys are never copied nor echoed in a message.
*/
#include <stddef.h>
#include <string.h>
#include <limits.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <lua.h>
#include <lauxlib.h>

#include "lazy.h"

int luaopen_geneva_crypto_core(lua_State *L);  /* called by the host's preload table */

/* {====== libcrypto.so.3, loaded on the first digest (lazy.h) */
#define CRYPTO_FUNCS(X) \
  X(EVP_sha256) \
  X(EVP_Digest) \
  X(HMAC)
GENEVA_LAZY_LIB(crypto_lib, "libcrypto.so.3", NULL, "install libssl3", NULL, CRYPTO_FUNCS)
#define EVP_sha256 (crypto_lib_api.EVP_sha256)
#define EVP_Digest (crypto_lib_api.EVP_Digest)
#define HMAC (crypto_lib_api.HMAC)
/* }====== */

static void push_hex(lua_State *L, const unsigned char *p, size_t len) {
  static const char digits[] = "0123456789abcdef";
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, 2 * len);
  size_t i;
  for (i = 0; i < len; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  luaL_pushresultsize(&b, 2 * len);
}

/* The optional output form at arg: "raw" (default) or "hex". Raises otherwise. */
static int want_hex(lua_State *L, int arg) {
  static const char *const forms[] = {"raw", "hex", NULL};
  return luaL_checkoption(L, arg, "raw", forms) == 1;
}

/* core.sha256(s [, "raw"|"hex"]) -> the 32-byte digest, or its 64 hex digits.
** Raises on misuse or when libcrypto fails (or is missing). */
static int crypto_sha256(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int hex = want_hex(L, 2);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  geneva_lazy_require(L, &crypto_lib);
  if (EVP_Digest(s, len, md, &mdlen, EVP_sha256(), NULL) != 1)
    return luaL_error(L, "sha256: EVP_Digest failed");
  if (hex) push_hex(L, md, mdlen);
  else lua_pushlstring(L, (const char *)md, mdlen);
  return 1;
}

/* core.hmac_sha256(key, msg [, "raw"|"hex"]) -> the 32-byte MAC, or its hex.
** Raises on misuse (a key over INT_MAX bytes) or a libcrypto failure; the
** message never contains the key. */
static int crypto_hmac_sha256(lua_State *L) {
  size_t klen, mlen;
  const char *key = luaL_checklstring(L, 1, &klen);
  const char *msg = luaL_checklstring(L, 2, &mlen);
  int hex = want_hex(L, 3);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  luaL_argcheck(L, klen <= INT_MAX, 1, "key too long");
  geneva_lazy_require(L, &crypto_lib);
  /* HMAC() with an empty key needs a non-NULL pointer: Lua strings are */
  if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, mlen, md, &mdlen))
    return luaL_error(L, "hmac_sha256: HMAC failed");
  if (hex) push_hex(L, md, mdlen);
  else lua_pushlstring(L, (const char *)md, mdlen);
  return 1;
}

/* core.hex(s) -> s as lowercase hex digits (two per byte). Raises on misuse. */
static int crypto_hex(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  push_hex(L, (const unsigned char *)s, len);
  return 1;
}

static const luaL_Reg funcs[] = {
  {"sha256", crypto_sha256}, {"hmac_sha256", crypto_hmac_sha256},
  {"hex", crypto_hex}, {NULL, NULL}
};

/* The module table. libcrypto is loaded by the first digest, not here:
** requiring the module (as geneva.s3 does) costs nothing. */
int luaopen_geneva_crypto_core(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
