/*
** http.c: geneva.http.core, HTTP(S) over libcurl.
**
** libcurl is not linked: dynamic loading of it costs ~2.5 ms per process
** start (host/lazy.h), so the first require loads libcurl.so.4 (lazy.h) and takes
** the few functions we use into a table; <curl/curl.h> is only for types and
** constants. A request runs in three phases:
**   1. validate the options (may raise) and box the per-request state in a
**      GC-owned userdata, so nothing C-owned is ever lost to a raise;
**   2. set up and perform the transfer (never raises; callbacks only copy
**      bytes into malloc'd buffers or files and never touch Lua);
**   3. release the easy handle, header list and files, then push results
**      (may raise on memory errors: the box's __gc frees its buffers).
** Secrets: the bearer token never appears in a message, and URLs in
** messages have their userinfo and secret-looking query values masked.
*/
#define CURL_DISABLE_TYPECHECK   /* we call through pointers, not the macros */
#include <curl/curl.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stddef.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#include "geneva_internal.h"
#include "handle.h"
#include "lazy.h"

int luaopen_geneva_http_core(lua_State *L);


#ifndef GENEVA_VERSION
#define GENEVA_VERSION "0"
#endif

/* {====== libcurl.so.4, loaded when the module is first required (lazy.h) */

static int curl_init(char *err, size_t errlen);

#define CURL_FUNCS(X) \
  X(curl_global_init) \
  X(curl_easy_init) \
  X(curl_easy_setopt) \
  X(curl_easy_perform) \
  X(curl_easy_getinfo) \
  X(curl_easy_cleanup) \
  X(curl_easy_reset) \
  X(curl_easy_strerror) \
  X(curl_slist_append) \
  X(curl_slist_free_all) \
  X(curl_version_info)
/* GENEVA_LIBCURL names another libcurl (tests and odd systems) */
GENEVA_LAZY_LIB(curl_lib, "libcurl.so.4", "GENEVA_LIBCURL", "install libcurl4", curl_init,
                CURL_FUNCS)
#define curl_global_init (curl_lib_api.curl_global_init)
#define curl_easy_init (curl_lib_api.curl_easy_init)
#undef curl_easy_setopt    /* curl.h's argument-count checks: calls go through the table */
#undef curl_easy_getinfo
#define curl_easy_setopt (curl_lib_api.curl_easy_setopt)
#define curl_easy_perform (curl_lib_api.curl_easy_perform)
#define curl_easy_getinfo (curl_lib_api.curl_easy_getinfo)
#define curl_easy_cleanup (curl_lib_api.curl_easy_cleanup)
#define curl_easy_reset (curl_lib_api.curl_easy_reset)
#define curl_easy_strerror (curl_lib_api.curl_easy_strerror)
#define curl_slist_append (curl_lib_api.curl_slist_append)
#define curl_slist_free_all (curl_lib_api.curl_slist_free_all)
#define curl_version_info (curl_lib_api.curl_version_info)

/* Once per process, after loading: libcurl's global state (and its TLS
** library's) must outlive every handle, so it is never cleaned up. */
static int curl_init(char *err, size_t errlen) {
  CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (rc == CURLE_OK) return 0;
  snprintf(err, errlen, "cannot initialise libcurl: %s", curl_easy_strerror(rc));
  return -1;
}

/* }====== */

/* {====== Error codes and URL redaction */

static const char *curle_name(CURLcode c) {
  static __thread char buf[24];
  switch (c) {
#define E(x) case x: return #x;
    E(CURLE_OK) E(CURLE_UNSUPPORTED_PROTOCOL) E(CURLE_FAILED_INIT)
    E(CURLE_URL_MALFORMAT) E(CURLE_NOT_BUILT_IN) E(CURLE_COULDNT_RESOLVE_PROXY)
    E(CURLE_COULDNT_RESOLVE_HOST) E(CURLE_COULDNT_CONNECT)
    E(CURLE_WEIRD_SERVER_REPLY) E(CURLE_REMOTE_ACCESS_DENIED) E(CURLE_HTTP2)
    E(CURLE_PARTIAL_FILE) E(CURLE_QUOTE_ERROR) E(CURLE_HTTP_RETURNED_ERROR)
    E(CURLE_WRITE_ERROR) E(CURLE_UPLOAD_FAILED) E(CURLE_READ_ERROR)
    E(CURLE_OUT_OF_MEMORY) E(CURLE_OPERATION_TIMEDOUT) E(CURLE_RANGE_ERROR)
    E(CURLE_HTTP_POST_ERROR) E(CURLE_SSL_CONNECT_ERROR)
    E(CURLE_BAD_DOWNLOAD_RESUME) E(CURLE_FILE_COULDNT_READ_FILE)
    E(CURLE_FUNCTION_NOT_FOUND) E(CURLE_ABORTED_BY_CALLBACK)
    E(CURLE_BAD_FUNCTION_ARGUMENT) E(CURLE_INTERFACE_FAILED)
    E(CURLE_TOO_MANY_REDIRECTS) E(CURLE_UNKNOWN_OPTION)
    E(CURLE_SETOPT_OPTION_SYNTAX) E(CURLE_GOT_NOTHING)
    E(CURLE_SSL_ENGINE_NOTFOUND) E(CURLE_SSL_ENGINE_SETFAILED)
    E(CURLE_SEND_ERROR) E(CURLE_RECV_ERROR) E(CURLE_SSL_CERTPROBLEM)
    E(CURLE_SSL_CIPHER) E(CURLE_PEER_FAILED_VERIFICATION)
    E(CURLE_BAD_CONTENT_ENCODING) E(CURLE_FILESIZE_EXCEEDED)
    E(CURLE_USE_SSL_FAILED) E(CURLE_SEND_FAIL_REWIND)
    E(CURLE_SSL_ENGINE_INITFAILED) E(CURLE_LOGIN_DENIED)
    E(CURLE_REMOTE_FILE_NOT_FOUND) E(CURLE_SSL_SHUTDOWN_FAILED) E(CURLE_AGAIN)
    E(CURLE_SSL_CACERT_BADFILE) E(CURLE_SSL_CRL_BADFILE)
    E(CURLE_SSL_ISSUER_ERROR) E(CURLE_CHUNK_FAILED)
    E(CURLE_NO_CONNECTION_AVAILABLE) E(CURLE_SSL_PINNEDPUBKEYNOTMATCH)
    E(CURLE_SSL_INVALIDCERTSTATUS) E(CURLE_HTTP2_STREAM)
    E(CURLE_RECURSIVE_API_CALL) E(CURLE_AUTH_ERROR) E(CURLE_HTTP3)
    E(CURLE_QUIC_CONNECT_ERROR) E(CURLE_PROXY) E(CURLE_SSL_CLIENTCERT)
    E(CURLE_UNRECOVERABLE_POLL)
#undef E
    default:
      snprintf(buf, sizeof buf, "CURLE_%d", (int)c);
      return buf;
  }
}

/* Whether a query parameter name looks like it carries a secret. */
static int secret_param(const char *name, size_t len) {
  static const char *const words[] = {"token", "key", "secret", "pass", "sig",
                                      "auth", "cred", "session", "code", NULL};
  char low[64];
  size_t i;
  if (len >= sizeof low) return 1;   /* odd, long name: mask it */
  for (i = 0; i < len; i++) low[i] = (char)tolower((unsigned char)name[i]);
  low[len] = '\0';
  for (i = 0; words[i]; i++)
    if (strstr(low, words[i])) return 1;
  return 0;
}

/* Adds url to b with the userinfo masked ("***@"), secret-looking query
** values masked ("token=***") and the fragment dropped. May raise (memory). */
static void add_redacted_url(luaL_Buffer *b, const char *url) {
  const char *p = strstr(url, "://"), *auth, *end, *at = NULL, *q;
  if (p && strcspn(url, "/?#") > (size_t)(p - url)) {
    auth = p + 3;
    end = auth + strcspn(auth, "/?#");
    for (q = auth; q < end; q++)
      if (*q == '@') at = q;
    luaL_addlstring(b, url, (size_t)(auth - url));
    if (at) { luaL_addstring(b, "***"); p = at; } else p = auth;
  } else {
    p = url;
  }
  q = p + strcspn(p, "?#");
  luaL_addlstring(b, p, (size_t)(q - p));
  if (*q != '?') return;
  luaL_addchar(b, '?');
  for (p = q + 1; *p && *p != '#';) {
    size_t n = strcspn(p, "&#"), eq = strcspn(p, "=&#");
    if (eq < n && secret_param(p, eq)) {
      luaL_addlstring(b, p, eq + 1);
      luaL_addstring(b, "***");
    } else {
      luaL_addlstring(b, p, n);
    }
    p += n;
    if (*p == '&') { luaL_addchar(b, '&'); p++; }
  }
}

/* }====== */

/* {====== Request state (GC-owned box) */

typedef struct {
  char *p;
  size_t len, cap;
} gbuf;

typedef struct request {
  geneva_handle h;
  CURL *easy;
  int owns_easy;               /* 0: the easy handle belongs to a session */
  struct curl_slist *headers;
  FILE *in, *out;
  curl_off_t in_left;          /* bytes of body_file still to send; -1: to EOF */
  curl_off_t in_start, in_len; /* body_file's range: offset, length (-1: to EOF) */
  gbuf body, hdr;              /* response body; header block of the last response */
  char *effective_url;
  long max_bytes;              /* -1: no cap */
  size_t received;
  int oom, too_big, interrupted, read_errno, write_errno;
  int out_created;             /* output_file was opened by us */
  char errbuf[CURL_ERROR_SIZE];
} request;

static int gbuf_add(gbuf *g, const char *s, size_t n) {
  if (n > g->cap - g->len) {
    size_t cap = g->cap ? g->cap : 4096;
    char *p;
    while (cap - g->len < n) {
      if (cap > ((size_t)-1) / 2) return 0;
      cap *= 2;
    }
    p = (char *)realloc(g->p, cap);
    if (!p) return 0;
    g->p = p;
    g->cap = cap;
  }
  memcpy(g->p + g->len, s, n);
  g->len += n;
  return 1;
}

/* Releases the C library objects of a request (not its buffers). Never
** raises; idempotent. */
static void request_release_transfer(request *r) {
  if (r->easy) {
    if (r->owns_easy) curl_easy_cleanup(r->easy);
    else curl_easy_reset(r->easy);   /* drop pointers into this request */
    r->easy = NULL;
  }
  if (r->headers) { curl_slist_free_all(r->headers); r->headers = NULL; }
  if (r->in) { fclose(r->in); r->in = NULL; }
  if (r->out) {
    if (fclose(r->out) != 0 && !r->write_errno) r->write_errno = errno;
    r->out = NULL;
  }
}

/* __gc / __close of the box: releases everything. Never raises. */
static int request_release(void *p) {
  request *r = (request *)p;
  request_release_transfer(r);
  free(r->body.p); r->body.p = NULL;
  free(r->hdr.p); r->hdr.p = NULL;
  free(r->effective_url); r->effective_url = NULL;
  return 0;
}

/* internal state box of one request (handle.h: a class without methods) */
static const geneva_class request_class = {
  "geneva.http.request", NULL, NULL, request_release, NULL, NULL, NULL
};

/* }====== */

/* {====== libcurl callbacks: C only, never call into Lua */

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud) {
  request *r = (request *)ud;
  size_t n = size * nmemb;
  r->received += n;
  if (r->max_bytes >= 0 && r->received > (size_t)r->max_bytes) {
    r->too_big = 1;
    return 0;
  }
  if (r->out) {
    if (fwrite(ptr, 1, n, r->out) != n) {
      r->write_errno = errno ? errno : EIO;
      return 0;
    }
    return n;
  }
  if (!gbuf_add(&r->body, ptr, n)) { r->oom = 1; return 0; }
  return n;
}

/* One header line at a time, status lines included: a new status line
** (after a redirect or a 100 Continue) starts the block afresh. */
static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud) {
  request *r = (request *)ud;
  size_t n = size * nmemb;
  if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0) r->hdr.len = 0;
  if (!gbuf_add(&r->hdr, ptr, n)) { r->oom = 1; return 0; }
  return n;
}

static size_t on_read(char *ptr, size_t size, size_t nmemb, void *ud) {
  request *r = (request *)ud;
  size_t want = size * nmemb, n;
  if (r->in_left >= 0 && (curl_off_t)want > r->in_left) want = (size_t)r->in_left;
  if (want == 0) return 0;
  n = fread(ptr, 1, want, r->in);
  if (r->in_left >= 0) r->in_left -= (curl_off_t)n;
  if (n == 0 && ferror(r->in)) {
    r->read_errno = errno ? errno : EIO;
    return CURL_READFUNC_ABORT;
  }
  return n;
}

/* libcurl rewinds an upload to send it again: a reused connection that
** turned out dead, a redirect. Without this it fails with "rewinding of
** the data stream failed" (CURLE_SEND_FAIL_REWIND). offset counts from the
** start of the body, i.e. of the range. */
static int on_seek(void *ud, curl_off_t offset, int origin) {
  request *r = (request *)ud;
  if (origin != SEEK_SET || offset < 0) return CURL_SEEKFUNC_CANTSEEK;
  if (r->in_len >= 0 && offset > r->in_len) return CURL_SEEKFUNC_FAIL;
  if (fseeko(r->in, (off_t)(r->in_start + offset), SEEK_SET) != 0) return CURL_SEEKFUNC_CANTSEEK;
  if (r->in_len >= 0) r->in_left = r->in_len - offset;
  return CURL_SEEKFUNC_OK;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow) {
  request *r = (request *)ud;
  (void)dltotal; (void)dlnow; (void)ultotal; (void)ulnow;
  if (geneva_interrupted()) { r->interrupted = 1; return 1; }
  return 0;
}

/* }====== */

/* {====== Options (phase 1: validation, may raise) */

typedef struct {
  const char *url, *method, *body, *body_file, *output_file;
  size_t body_len;
  const char *ca_file, *ca_pem, *client_cert, *client_key;
  const char *client_cert_pem, *client_key_pem, *bearer_token;
  size_t ca_pem_len, cert_pem_len, key_pem_len;
  double connect_timeout, timeout, stall_timeout;
  int verify, follow, has_content_type, has_user_agent, path_as_is;
  lua_Integer max_bytes;
  lua_Integer body_offset, body_length;   /* body_file range; length -1: to the end */
  int lines;                   /* stack index of the header-line array */
} req_opts;

static const char *const known_opts[] = {
  "url", "method", "headers", "body", "body_file", "output_file",
  "connect_timeout", "timeout", "stall_timeout", "verify", "ca_file", "ca_pem", "client_cert",
  "client_key", "client_cert_pem", "client_key_pem", "bearer_token",
  "follow_redirects", "max_response_bytes", "body_file_offset",
  "body_file_length", "path_as_is", NULL
};

static int opt_error(lua_State *L, const char *name, const char *what) {
  return luaL_error(L, "bad option '%s' to 'request' (%s)", name, what);
}

/* Pushes opts[name] (raw) and returns its string, or NULL when absent.
** Strings must not contain NUL (libcurl takes C strings) unless blob. */
static const char *opt_string(lua_State *L, int o, const char *name,
                              size_t *len, int blob) {
  size_t l;
  const char *s;
  lua_pushstring(L, name);
  lua_rawget(L, o);
  if (lua_isnil(L, -1)) return NULL;
  if (lua_type(L, -1) != LUA_TSTRING) opt_error(L, name, "string expected");
  s = lua_tolstring(L, -1, &l);
  if (!blob && strlen(s) != l) opt_error(L, name, "contains a zero byte");
  if (len) *len = l;
  return s;
}

static double opt_seconds(lua_State *L, int o, const char *name) {
  double v = 0;
  lua_pushstring(L, name);
  lua_rawget(L, o);
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER) opt_error(L, name, "number expected");
    v = lua_tonumber(L, -1);
    if (!(v >= 0 && v < 1e7)) opt_error(L, name, "must be between 0 and 1e7 seconds");
  }
  lua_pop(L, 1);
  return v;
}

/* opts[name] as a non-negative integer, or def when absent. */
static lua_Integer opt_count(lua_State *L, int o, const char *name, lua_Integer def) {
  lua_Integer v = def;
  lua_pushstring(L, name);
  lua_rawget(L, o);
  if (!lua_isnil(L, -1)) {
    int isint;
    v = lua_tointegerx(L, -1, &isint);
    if (!isint || v < 0) opt_error(L, name, "non-negative integer expected");
  }
  lua_pop(L, 1);
  return v;
}

static int opt_bool(lua_State *L, int o, const char *name, int def) {
  int v = def;
  lua_pushstring(L, name);
  lua_rawget(L, o);
  if (!lua_isnil(L, -1)) {
    if (!lua_isboolean(L, -1)) opt_error(L, name, "boolean expected");
    v = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

static int has_crlf(const char *s, size_t n) {
  return memchr(s, '\r', n) || memchr(s, '\n', n) || memchr(s, '\0', n);
}

static int valid_token(const char *s, size_t n) {
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++)
    if (!isgraph((unsigned char)s[i]) || strchr("()<>@,;:\\\"/[]?={}", s[i]))
      return 0;
  return 1;
}

/* Appends "Name: value" (the string on top, popped) to the array at lines,
** noting which default headers it overrides. */
static void add_line(lua_State *L, req_opts *o, size_t namelen) {
  const char *s = lua_tostring(L, -1);
  if (namelen == 12 && strncasecmp(s, "content-type", 12) == 0) o->has_content_type = 1;
  if (namelen == 10 && strncasecmp(s, "user-agent", 10) == 0) o->has_user_agent = 1;
  lua_rawseti(L, o->lines, (lua_Integer)lua_rawlen(L, o->lines) + 1);
}

/* headers: {Name = value} or {"Name: value", ...} -> the array at o->lines.
** Name = false removes a header libcurl would send (e.g. Accept). */
static void check_headers(lua_State *L, int o_idx, req_opts *o) {
  int h;
  lua_newtable(L);
  o->lines = lua_gettop(L);
  lua_pushliteral(L, "headers");
  lua_rawget(L, o_idx);
  h = lua_gettop(L);
  if (lua_isnil(L, h)) { lua_pop(L, 1); return; }
  if (!lua_istable(L, h)) opt_error(L, "headers", "table expected");
  lua_pushnil(L);
  while (lua_next(L, h)) {   /* [.., headers, key, value] */
    size_t kl, vl;
    const char *k, *v;
    if (lua_type(L, -2) == LUA_TNUMBER) {
      const char *colon;
      if (lua_type(L, -1) != LUA_TSTRING) opt_error(L, "headers", "array entries must be strings");
      v = lua_tolstring(L, -1, &vl);
      colon = memchr(v, ':', vl);
      if (!colon || !valid_token(v, (size_t)(colon - v)) || has_crlf(v, vl)) {
        opt_error(L, "headers", "array entries must look like 'Name: value'");
        return;   /* not reached (it raises): for readers and analysers */
      }
      lua_pushvalue(L, -1);
      add_line(L, o, (size_t)(colon - v));
    } else if (lua_type(L, -2) == LUA_TSTRING) {
      k = lua_tolstring(L, -2, &kl);
      if (!valid_token(k, kl)) opt_error(L, "headers", "invalid header name");
      if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        lua_pushfstring(L, "%s:", k);   /* false: drop libcurl's own header */
        add_line(L, o, kl);
        lua_pop(L, 1);
        continue;
      }
      if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        opt_error(L, "headers", "header values must be strings, numbers or false");
      lua_pushvalue(L, -1);   /* convert a copy: lua_next needs the original */
      v = lua_tolstring(L, -1, &vl);
      if (has_crlf(v, vl)) opt_error(L, "headers", "header value contains CR, LF or NUL");
      /* "Name:" with an empty value would remove the header: "Name;" sends it empty */
      lua_pushfstring(L, vl ? "%s: %s" : "%s;", k, v);
      lua_remove(L, -2);
      add_line(L, o, kl);
    } else {
      opt_error(L, "headers", "keys must be names or array indices");
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Validates the table at index o_idx into o, leaving every string it points
** to referenced from the stack. Raises on misuse. */
static void check_opts(lua_State *L, int o_idx, req_opts *o) {
  size_t n;
  memset(o, 0, sizeof *o);
  luaL_checktype(L, o_idx, LUA_TTABLE);
  luaL_checkstack(L, 40, "too many options");
  lua_pushnil(L);
  while (lua_next(L, o_idx)) {
    int i;
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    for (i = 0; k && known_opts[i]; i++)
      if (strcmp(k, known_opts[i]) == 0) break;
    if (!k || !known_opts[i])
      luaL_error(L, "bad argument to 'request' (unknown option '%s')",
                 k ? k : luaL_typename(L, -2));
    lua_pop(L, 1);
  }
  o->url = opt_string(L, o_idx, "url", NULL, 0);
  if (!o->url) opt_error(L, "url", "string expected");
  o->method = opt_string(L, o_idx, "method", &n, 0);
  if (!o->method) o->method = "GET";
  else if (!valid_token(o->method, n)) opt_error(L, "method", "not a valid HTTP method");
  o->body = opt_string(L, o_idx, "body", &o->body_len, 1);
  o->body_file = opt_string(L, o_idx, "body_file", NULL, 0);
  if (o->body && o->body_file) opt_error(L, "body_file", "cannot be combined with 'body'");
  o->body_offset = opt_count(L, o_idx, "body_file_offset", 0);
  o->body_length = opt_count(L, o_idx, "body_file_length", -1);
  if (!o->body_file && (o->body_offset != 0 || o->body_length != -1))
    opt_error(L, o->body_offset ? "body_file_offset" : "body_file_length",
              "needs 'body_file'");
  o->output_file = opt_string(L, o_idx, "output_file", NULL, 0);
  o->ca_file = opt_string(L, o_idx, "ca_file", NULL, 0);
  o->ca_pem = opt_string(L, o_idx, "ca_pem", &o->ca_pem_len, 1);
  o->client_cert = opt_string(L, o_idx, "client_cert", NULL, 0);
  o->client_key = opt_string(L, o_idx, "client_key", NULL, 0);
  o->client_cert_pem = opt_string(L, o_idx, "client_cert_pem", &o->cert_pem_len, 1);
  o->client_key_pem = opt_string(L, o_idx, "client_key_pem", &o->key_pem_len, 1);
  o->bearer_token = opt_string(L, o_idx, "bearer_token", &n, 1);
  /* the token itself must never be echoed, not even in this message */
  if (o->bearer_token && (n == 0 || has_crlf(o->bearer_token, n)))
    opt_error(L, "bearer_token", "empty, or contains CR, LF or NUL");
  o->connect_timeout = opt_seconds(L, o_idx, "connect_timeout");
  o->timeout = opt_seconds(L, o_idx, "timeout");
  o->stall_timeout = opt_seconds(L, o_idx, "stall_timeout");
  o->verify = opt_bool(L, o_idx, "verify", 1);
  o->follow = opt_bool(L, o_idx, "follow_redirects", 0);
  o->path_as_is = opt_bool(L, o_idx, "path_as_is", 0);
  o->max_bytes = -1;
  lua_pushliteral(L, "max_response_bytes");
  lua_rawget(L, o_idx);
  if (!lua_isnil(L, -1)) {
    int isint;
    o->max_bytes = lua_tointegerx(L, -1, &isint);
    if (!isint || o->max_bytes < 0 || o->max_bytes > (lua_Integer)(((unsigned long)-1) >> 1))
      opt_error(L, "max_response_bytes", "non-negative integer expected");
  }
  lua_pop(L, 1);
  check_headers(L, o_idx, o);
  if (o->bearer_token) {
    lua_pushfstring(L, "Authorization: Bearer %s", o->bearer_token);
    lua_rawseti(L, o->lines, (lua_Integer)lua_rawlen(L, o->lines) + 1);
  }
}

/* }====== */

/* {====== Transfer (phase 2: never raises) */

/* Why a transfer did not complete (besides its CURLcode). */
typedef struct {
  CURLcode rc;
  const char *setopt_failed;   /* name of the option libcurl refused */
  int open_errno;              /* opening body_file/output_file failed */
  const char *open_path;
  curl_off_t file_size;        /* body_file's size when its range is past the end, else -1 */
} outcome;

static long to_ms(double s) {
  long ms = (long)(s * 1000.0 + 0.5);
  return (s > 0 && ms == 0) ? 1 : ms;
}

static void perform(request *r, const req_opts *o, lua_State *L, outcome *out) {
  CURL *e = r->easy;
  curl_off_t upload_size = -1;
  int has_body = o->body || o->body_file;
  int head = strcmp(o->method, "HEAD") == 0 && !has_body;
  int posting = !head && (has_body || strcmp(o->method, "POST") == 0 ||
                          strcmp(o->method, "PUT") == 0 ||
                          strcmp(o->method, "PATCH") == 0);
  lua_Integer i, n;
#define SET(opt, val) do { \
    if ((out->rc = curl_easy_setopt(e, opt, val)) != CURLE_OK) { \
      out->setopt_failed = #opt; return; } } while (0)

  memset(out, 0, sizeof *out);
  out->file_size = -1;
  r->in_left = r->in_len = -1;
  r->in_start = 0;
  if (o->body_file) {
    struct stat st;
    r->in = fopen(o->body_file, "rb");
    if (!r->in) { out->open_errno = errno; out->open_path = o->body_file; return; }
    if (fstat(fileno(r->in), &st) == 0 && S_ISREG(st.st_mode))
      upload_size = (curl_off_t)st.st_size;   /* else chunked */
    if (o->body_offset || o->body_length >= 0) {
      /* a range of a regular file (one part of a multipart upload) */
      curl_off_t size = upload_size, end;
      if (size < 0) { out->open_errno = ESPIPE; out->open_path = o->body_file; return; }
      end = o->body_length >= 0 ? (curl_off_t)o->body_offset + (curl_off_t)o->body_length : size;
      if ((curl_off_t)o->body_offset > size || end > size) { out->file_size = size; return; }
      if (fseeko(r->in, (off_t)o->body_offset, SEEK_SET) != 0) {
        out->open_errno = errno; out->open_path = o->body_file; return;
      }
      upload_size = end - (curl_off_t)o->body_offset;
      r->in_left = r->in_len = upload_size;
      r->in_start = (curl_off_t)o->body_offset;
    }
  }
  if (o->output_file) {
    r->out = fopen(o->output_file, "wb");
    if (!r->out) { out->open_errno = errno; out->open_path = o->output_file; return; }
    r->out_created = 1;
  }
  /* header list: only C calls, the strings stay referenced from the stack */
  n = (lua_Integer)lua_rawlen(L, o->lines);
  for (i = 1; i <= n + 2; i++) {
    const char *line;
    struct curl_slist *l;
    if (i <= n) {
      lua_rawgeti(L, o->lines, i);
      line = lua_tostring(L, -1);
      lua_pop(L, 1);            /* still anchored in the array */
    } else if (i == n + 1) {
      if (!posting || o->has_content_type) continue;
      line = "Content-Type:";   /* no form-urlencoded default for raw bodies */
    } else {
      if (o->has_user_agent) continue;
      line = "User-Agent: geneva/" GENEVA_VERSION;
    }
    l = curl_slist_append(r->headers, line);
    if (!l) { out->rc = CURLE_OUT_OF_MEMORY; return; }
    r->headers = l;
  }

  SET(CURLOPT_URL, o->url);
  SET(CURLOPT_ERRORBUFFER, r->errbuf);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_FOLLOWLOCATION, (long)o->follow);
  SET(CURLOPT_MAXREDIRS, 10L);
  /* signed URLs (S3) must go out as given: no squashing of /./ or /../ */
  SET(CURLOPT_PATH_AS_IS, (long)o->path_as_is);
  SET(CURLOPT_HTTPHEADER, r->headers);
  SET(CURLOPT_WRITEFUNCTION, on_write);
  SET(CURLOPT_WRITEDATA, r);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, r);
  SET(CURLOPT_XFERINFOFUNCTION, on_progress);
  SET(CURLOPT_XFERINFODATA, r);
  SET(CURLOPT_NOPROGRESS, 0L);
  SET(CURLOPT_CONNECTTIMEOUT_MS, to_ms(o->connect_timeout));
  SET(CURLOPT_TIMEOUT_MS, to_ms(o->timeout));
  /* a server that stops sending (or never answers) is given up after
  ** stall_timeout s below 1 byte/s; libcurl counts whole seconds */
  if (o->stall_timeout > 0) {
    SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
    SET(CURLOPT_LOW_SPEED_TIME, (long)(o->stall_timeout < 1 ? 1 : o->stall_timeout + 0.5));
  }
  SET(CURLOPT_SSL_VERIFYPEER, (long)o->verify);
  SET(CURLOPT_SSL_VERIFYHOST, o->verify ? 2L : 0L);
  if (o->ca_file) SET(CURLOPT_CAINFO, o->ca_file);
  if (o->ca_pem) {
    struct curl_blob b = {(void *)o->ca_pem, o->ca_pem_len, CURL_BLOB_COPY};
    SET(CURLOPT_CAINFO_BLOB, &b);
  }
  if (o->client_cert) SET(CURLOPT_SSLCERT, o->client_cert);
  if (o->client_key) SET(CURLOPT_SSLKEY, o->client_key);
  if (o->client_cert_pem) {
    struct curl_blob b = {(void *)o->client_cert_pem, o->cert_pem_len, CURL_BLOB_COPY};
    SET(CURLOPT_SSLCERT_BLOB, &b);
    SET(CURLOPT_SSLCERTTYPE, "PEM");
  }
  if (o->client_key_pem) {
    struct curl_blob b = {(void *)o->client_key_pem, o->key_pem_len, CURL_BLOB_COPY};
    SET(CURLOPT_SSLKEY_BLOB, &b);
    SET(CURLOPT_SSLKEYTYPE, "PEM");
  }
  if (r->max_bytes >= 0) SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max_bytes);

  if (head) {
    SET(CURLOPT_NOBODY, 1L);
  } else if (posting) {
    SET(CURLOPT_POST, 1L);
    if (o->body_file) {
      SET(CURLOPT_READFUNCTION, on_read);
      SET(CURLOPT_READDATA, r);
      SET(CURLOPT_SEEKFUNCTION, on_seek);
      SET(CURLOPT_SEEKDATA, r);
      SET(CURLOPT_POSTFIELDSIZE_LARGE, upload_size);
    } else {   /* the body string stays on the stack during the transfer */
      SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
      SET(CURLOPT_POSTFIELDS, o->body ? o->body : "");
    }
    if (strcmp(o->method, "POST") != 0) SET(CURLOPT_CUSTOMREQUEST, o->method);
  } else if (strcmp(o->method, "GET") != 0) {
    SET(CURLOPT_CUSTOMREQUEST, o->method);
  }
#undef SET

  if (geneva_interrupted()) { r->interrupted = 1; return; }
  out->rc = curl_easy_perform(e);
  if (out->rc == CURLE_OK) {
    char *u = NULL;
    if (curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &u) == CURLE_OK && u)
      r->effective_url = strdup(u);   /* NULL on ENOMEM: info.url is omitted */
  }
}

/* }====== */

/* {====== Results (phase 3: may raise, C objects already released) */

/* Pushes nil, msg, code for a failed transfer. */
static int push_failure(lua_State *L, request *r, const req_opts *o,
                        const outcome *out) {
  luaL_Buffer b;
  const char *code;
  if (r->interrupted) return geneva_fail(L, "EINTR", "interrupted");
  if (out->open_errno) {
    lua_pushfstring(L, "cannot open '%s'", out->open_path);
    return geneva_fail_errno(L, out->open_errno, lua_tostring(L, -1));
  }
  if (out->file_size >= 0)
    return geneva_fail(L, "EINVAL", "body_file '%s': range %I+%I is past its end (%I bytes)",
                       o->body_file, (lua_Integer)o->body_offset,
                       (lua_Integer)o->body_length, (lua_Integer)out->file_size);
  luaL_buffinit(L, &b);
  if (r->oom) {
    code = "ENOMEM";
    luaL_addstring(&b, "not enough memory for the response");
  } else if (r->too_big || out->rc == CURLE_FILESIZE_EXCEEDED) {
    code = curle_name(CURLE_FILESIZE_EXCEEDED);
    lua_pushfstring(L, "response larger than %I bytes%s", (lua_Integer)r->max_bytes,
                    o->output_file ? "" : " (max_response_bytes; output_file streams any size to a file)");
    luaL_addvalue(&b);
  } else if (r->write_errno) {
    code = curle_name(CURLE_WRITE_ERROR);
    lua_pushfstring(L, "cannot write '%s': %s", o->output_file, strerror(r->write_errno));
    luaL_addvalue(&b);
  } else if (r->read_errno) {
    code = curle_name(CURLE_READ_ERROR);
    lua_pushfstring(L, "cannot read '%s': %s", o->body_file, strerror(r->read_errno));
    luaL_addvalue(&b);
  } else {
    code = curle_name(out->rc);
    luaL_addstring(&b, curl_easy_strerror(out->rc));
    if (out->setopt_failed) {
      luaL_addstring(&b, " (setting ");
      luaL_addstring(&b, out->setopt_failed);
      luaL_addchar(&b, ')');
    } else if (r->errbuf[0]) {
      size_t l = strlen(r->errbuf);
      while (l > 0 && (r->errbuf[l - 1] == '\n' || r->errbuf[l - 1] == '\r')) l--;
      luaL_addstring(&b, ": ");
      luaL_addlstring(&b, r->errbuf, l);
    }
  }
  luaL_addstring(&b, " (");
  luaL_addstring(&b, o->method);
  luaL_addchar(&b, ' ');
  add_redacted_url(&b, o->url);
  luaL_addchar(&b, ')');
  luaL_pushresult(&b);
  /* belt and braces: libcurl never echoes request headers, but make sure */
  if (o->bearer_token && strstr(lua_tostring(L, -1), o->bearer_token)) {
    luaL_gsub(L, lua_tostring(L, -1), o->bearer_token, "***");
    lua_remove(L, -2);
  }
  luaL_pushfail(L);
  lua_insert(L, -2);
  lua_pushstring(L, code);
  return 3;
}

/* Parses the header block into a table at the top: lower-cased names,
** repeated headers joined with ", ". Leaves [headers, status line]. */
static void push_headers(lua_State *L, const gbuf *h) {
  const char *p = h->p, *end = h->p + h->len;
  int t, have_last = 0;
  lua_newtable(L);
  t = lua_gettop(L);
  lua_pushliteral(L, "");      /* [t, status_line] */
  lua_pushnil(L);              /* [t, status_line, last name] */
  while (p && p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p)), *colon, *v, *ve;
    const char *le = eol ? eol : end;
    const char *next = eol ? eol + 1 : end;
    while (le > p && (le[-1] == '\r' || le[-1] == '\n')) le--;
    if (le == p) { p = next; continue; }
    if ((size_t)(le - p) >= 5 && memcmp(p, "HTTP/", 5) == 0) {
      lua_pushlstring(L, p, (size_t)(le - p));
      lua_replace(L, t + 1);
    } else if ((*p == ' ' || *p == '\t') && have_last) {
      /* obsolete line folding: continue the previous header's value */
      for (v = p; v < le && (*v == ' ' || *v == '\t'); v++) {}
      lua_pushvalue(L, t + 2);
      lua_pushvalue(L, -1);
      lua_rawget(L, t);        /* [.., name, old] */
      lua_pushliteral(L, " ");
      lua_pushlstring(L, v, (size_t)(le - v));
      lua_concat(L, 3);
      lua_rawset(L, t);
    } else if ((colon = memchr(p, ':', (size_t)(le - p))) != NULL) {
      luaL_Buffer b;
      size_t i, nl = (size_t)(colon - p);
      char *s = luaL_buffinitsize(L, &b, nl);
      for (i = 0; i < nl; i++) s[i] = (char)tolower((unsigned char)p[i]);
      luaL_pushresultsize(&b, nl);   /* [.., name] */
      for (v = colon + 1; v < le && (*v == ' ' || *v == '\t'); v++) {}
      for (ve = le; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--) {}
      lua_pushvalue(L, -1);
      lua_replace(L, t + 2);
      have_last = 1;
      lua_pushvalue(L, -1);
      if (lua_rawget(L, t) == LUA_TSTRING) {   /* [.., name, old] */
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));
      }
      lua_rawset(L, t);
    }
    p = next;
  }
  lua_pop(L, 1);               /* [t, status_line] */
}

/* Pushes status, headers, body|nil, info for a completed transfer. */
static int push_success(lua_State *L, request *r, const req_opts *o, long status,
                        double total, long redirects, long conns) {
  const char *sl;
  lua_pushinteger(L, status);
  push_headers(L, &r->hdr);                       /* [status, headers, sl] */
  if (o->output_file) lua_pushnil(L);
  else lua_pushlstring(L, r->body.p ? r->body.p : "", r->body.len);
  lua_createtable(L, 0, 7);                       /* [.., sl, body, info] */
  sl = lua_tostring(L, -3);
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "status_line");
  if (strncmp(sl, "HTTP/", 5) == 0) {
    lua_pushlstring(L, sl + 5, strcspn(sl + 5, " "));
    lua_setfield(L, -2, "http_version");
  }
  if (r->effective_url) {
    lua_pushstring(L, r->effective_url);
    lua_setfield(L, -2, "url");
  }
  lua_pushinteger(L, (lua_Integer)r->received);
  lua_setfield(L, -2, "bytes");
  lua_pushnumber(L, total);
  lua_setfield(L, -2, "time");
  lua_pushinteger(L, redirects);
  lua_setfield(L, -2, "redirects");
  lua_pushinteger(L, conns);
  lua_setfield(L, -2, "new_connections");
  lua_remove(L, -3);                              /* the status line */
  return 4;
}

/* }====== */

/* The whole request on easy (NULL: a temporary handle). The options are at
** index o_idx. Returns the number of results. */
static int do_request(lua_State *L, CURL *easy, int o_idx) {
  req_opts o;
  request *r;
  outcome out;
  long status = 0, redirects = 0, conns = 0;
  double total = 0;
  /* phase 1 */
  check_opts(L, o_idx, &o);
  r = (request *)geneva_handle_new(L, &request_class, sizeof *r, 0);
  geneva_handle_open(L, r);   /* a box: release copes with what is set */
  r->max_bytes = (long)o.max_bytes;
  /* phase 2 */
  if (easy) {
    curl_easy_reset(easy);
    r->easy = easy;
  } else {
    r->easy = curl_easy_init();
    r->owns_easy = 1;
  }
  if (!r->easy) {
    memset(&out, 0, sizeof out);
    out.rc = CURLE_FAILED_INIT;
  } else {
    perform(r, &o, L, &out);
    if (out.rc == CURLE_OK && !r->interrupted && !out.open_errno && out.file_size < 0) {
      curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
      curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &total);
      curl_easy_getinfo(r->easy, CURLINFO_REDIRECT_COUNT, &redirects);
      curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &conns);
    }
  }
  request_release_transfer(r);
  if (r->write_errno && out.rc == CURLE_OK) out.rc = CURLE_WRITE_ERROR;  /* fclose */
  /* phase 3 */
  if (out.rc != CURLE_OK || r->interrupted || out.open_errno || out.file_size >= 0) {
    /* a partial download is not left behind as if it were the file */
    if (r->out_created) remove(o.output_file);
    return push_failure(L, r, &o, &out);
  }
  return push_success(L, r, &o, status, total, redirects, conns);
}

/* {====== Module functions */

/*
** core.request(opts) -> status, headers, body, info
**                     | nil, msg, code
** Performs one request on a temporary easy handle. body is nil when
** opts.output_file took it. Raises on bad options; transport failures
** (and interrupts: nil, "interrupted", "EINTR") return nil, msg, code.
*/
static int http_request(lua_State *L) {
  return do_request(L, NULL, 1);
}

typedef struct {
  geneva_handle h;
  CURL *easy;                  /* while open */
} session;

/* The release: close(), __close, __gc and the ledger teardown. */
static int session_release(void *p) {
  session *s = (session *)p;
  curl_easy_cleanup(s->easy);
  s->easy = NULL;
  return 0;
}

static const geneva_class session_class = {
  "geneva.http.Session", "http session", "http_session", session_release, NULL, NULL, NULL
};

/* core.session() -> Session: an easy handle reused across requests, so
** connections (and TLS sessions) are kept alive. Tracked in the ledger.
** Raises only on memory errors. */
static int http_session(lua_State *L) {
  session *s = (session *)geneva_handle_new(L, &session_class, sizeof *s, 0);
  s->easy = curl_easy_init();
  if (!s->easy) return geneva_fail(L, "CURLE_FAILED_INIT", "cannot create a curl handle");
  geneva_handle_open(L, s);
  return 1;
}

/* core.version() -> libcurl's version string (e.g. "7.88.1") and TLS backend */
static int http_version(lua_State *L) {
  curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  lua_pushstring(L, v->version);
  lua_pushstring(L, v->ssl_version ? v->ssl_version : "");
  return 2;
}

/* session:request(opts) -> as core.request. Raises when closed. */
static int http_m_request(lua_State *L) {
  session *s = (session *)geneva_handle_check(L, 1, &session_class);
  return do_request(L, s->easy, 2);
}

/* session:close(), :is_closed(), __close, __gc, __tostring: handle.h */

static const luaL_Reg session_meth[] = {
  {"request", http_m_request}, {NULL, NULL}
};
static const luaL_Reg funcs[] = {
  {"request", http_request}, {"session", http_session},
  {"version", http_version}, {NULL, NULL}
};

/*
** Loads libcurl (once per process) and returns the module table. Raises
** "cannot load libcurl.so.4: ... (install libcurl4)" when it is missing.
*/
int luaopen_geneva_http_core(lua_State *L) {
  geneva_lazy_require(L, &curl_lib);
  geneva_class_register(L, &session_class, session_meth);
  geneva_class_register(L, &request_class, NULL);
  luaL_newlib(L, funcs);
  return 1;
}
