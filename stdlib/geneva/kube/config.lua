-- geneva.kube.config: where the Kubernetes API is and how to prove who we
-- are, found the way kubectl finds it (client-go tools/clientcmd/loader.go and
-- plugin/pkg/client/auth/exec):
--
--   * an explicit kubeconfig (the cluster spec's `kubeconfig`): that file
--     only, and it must exist;
--   * else $KUBECONFIG, a ':'-separated list (duplicates and empty entries
--     dropped, missing files skipped) merged as client-go merges it: for the
--     named clusters, users and contexts the first file that defines a name
--     wins (the whole entry: a later file's fields for that name are
--     ignored), and current-context comes from the first file that sets it;
--   * else ~/.kube/config;
--   * and when that finds no context at all, the pod's service account
--     (KUBERNETES_SERVICE_HOST/PORT and the files in SA_DIR).
--
-- Relative paths in a kubeconfig (certificate-authority, client-certificate,
-- client-key, tokenFile, an exec command with a '/') are resolved against the
-- directory of the file that holds them. Files and *-data fields are read
-- into memory at load time, so a bad one fails here, naming the file and the
-- field, and TLS material reaches libcurl as PEM blobs, never a temp file.
--
-- Every kubeconfig is untrusted input: every field is type-checked, and
-- every problem is an invalid_argument error "<file>: <field path>: what".
-- Secrets (tokens, keys, exec output) live in cfg.secret only; messages,
-- describe() and tostring(cfg) never show them.
local yaml = require "geneva.yaml"
local json = require "geneva.json"
local errors = require "geneva.errors"
local suggest = require "geneva.suggest"

local M = {}

-- The service account's files in a pod; GENEVA_KUBE_SA_DIR (tests) or
-- opts.sa_dir override it.
M.SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
M.EXEC_TIMEOUT = 60          -- seconds an exec credential plugin may take
M.MAX_FILE = 16 * 1024 * 1024  -- a kubeconfig or PEM file larger than this is refused

local EXEC_VERSIONS = {
  ["client.authentication.k8s.io/v1"] = true,
  ["client.authentication.k8s.io/v1beta1"] = true,
}

-- {====== small helpers

local function fail(msg) errors.throw("invalid_argument", msg) end

local function quote(s) return '"' .. tostring(s):gsub("[%c\"\\]", "?") .. '"' end

local function clean(s, max) return errors.clean(s, max or 200) end

local B64 = {}
do
  local alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  for i = 1, 64 do B64[alpha:byte(i)] = i - 1 end
end

-- Standard base64 with padding, as Go's encoding/base64 reads []byte fields
-- (it skips CR and LF; YAML folding may leave spaces, skipped too).
-- -> bytes | nil
local function b64decode(s)
  s = s:gsub("[%s]", "")
  if #s % 4 ~= 0 then return nil end
  local out = {}
  for i = 1, #s, 4 do
    local a, b, c, d = s:byte(i, i + 3)
    local va, vb = B64[a], B64[b]
    local vc = c ~= 61 and B64[c] or nil     -- 61 is '='
    local vd = d ~= 61 and B64[d] or nil
    if not va or not vb or (c ~= 61 and not vc) or (d ~= 61 and not vd)
        or (c == 61 and d ~= 61) or ((c == 61 or d == 61) and i + 3 < #s) then
      return nil
    end
    local x = (va << 18) | (vb << 12) | ((vc or 0) << 6) | (vd or 0)
    out[#out + 1] = string.char(x >> 16)
    if vc then out[#out + 1] = string.char((x >> 8) & 255) end
    if vd then out[#out + 1] = string.char(x & 255) end
  end
  return table.concat(out)
end
M._b64decode = b64decode

local function b64encode(s)
  local alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local x = (a << 16) | ((b or 0) << 8) | (c or 0)
    local function ch(n) return alpha:sub(n + 1, n + 1) end
    out[#out + 1] = ch(x >> 18) .. ch((x >> 12) & 63) .. (b and ch((x >> 6) & 63) or "=") .. (c and ch(x & 63) or "=")
  end
  return table.concat(out)
end

local function dirname(p)
  local d = p:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  return d == "" and "/" or d
end

local function resolve_path(base_file, p)
  if p:sub(1, 1) == "/" then return p end
  return dirname(base_file) .. "/" .. p
end

-- Reads a whole file; raises invalid_argument naming what it is for.
local function read_file(path, what)
  local f, msg = io.open(path, "rb")
  if not f then
    msg = tostring(msg)
    if msg:sub(1, #path + 2) == path .. ": " then msg = msg:sub(#path + 3) end   -- io.open names it too
    fail(("%s: cannot read %s: %s"):format(what, path, clean(msg)))
  end
  -- in chunks: f:read(n) allocates n bytes up front, 16 MiB for every file
  local parts, size = {}, 0
  while size <= M.MAX_FILE do
    local chunk, rmsg = f:read(65536)
    if chunk == nil then
      if rmsg then f:close() fail(("%s: cannot read %s: %s"):format(what, path, clean(rmsg))) end
      break
    end
    parts[#parts + 1] = chunk
    size = size + #chunk
  end
  f:close()
  local data = table.concat(parts)
  if #data > M.MAX_FILE then fail(("%s: %s is larger than %d bytes"):format(what, path, M.MAX_FILE)) end
  return data
end

local function is_null(v) return v == nil or v == yaml.null end

-- }======

-- {====== one kubeconfig file

-- A checked view of one file: field getters that raise "<file>: <path>: ..."
local function checker(file)
  local C = {}
  function C.fail(path, msg) fail(("kubeconfig %s: %s: %s"):format(file, path, msg)) end
  function C.str(t, key, path)
    local v = t[key]
    if is_null(v) or v == "" then return nil end
    -- YAML may type an unquoted scalar (a numeric token, a name like 123)
    if math.type(v) == "integer" then return tostring(v) end
    if type(v) ~= "string" then C.fail(path .. "." .. key, "expected a string, got " .. type(v)) end
    return v
  end
  function C.bool(t, key, path)
    local v = t[key]
    if is_null(v) then return nil end
    if type(v) ~= "boolean" then C.fail(path .. "." .. key, "expected true or false, got " .. type(v)) end
    return v
  end
  function C.map(t, key, path)
    local v = t[key]
    if is_null(v) then return nil end
    if type(v) ~= "table" or (#v > 0 and next(v) ~= nil and v[1] ~= nil) then
      C.fail(path .. "." .. key, "expected a mapping")
    end
    return v
  end
  function C.list(t, key, path)
    local v = t[key]
    if is_null(v) then return {} end
    if type(v) ~= "table" then C.fail(path .. "." .. key, "expected a list") end
    for k in pairs(v) do
      if math.type(k) ~= "integer" then C.fail(path .. "." .. key, "expected a list") end
    end
    return v
  end
  return C
end

-- Parses one kubeconfig file -> {file=, current=, clusters=, users=,
-- contexts=} (maps name -> {entry, file, path}) | raises
local function parse_file(file, text)
  local doc, msg = yaml.load(text, { filename = file })
  if doc == nil then fail("kubeconfig " .. clean(msg, 400)) end
  local out = { file = file, clusters = {}, users = {}, contexts = {}, names = { clusters = {}, users = {}, contexts = {} } }
  if doc == yaml.null then return out end         -- an empty file is an empty config
  local C = checker(file)
  if type(doc) ~= "table" then C.fail("(top level)", "expected a mapping") end
  out.current = C.str(doc, "current-context", "")
  if out.current then out.current_file = file end
  for _, kind in ipairs { { "clusters", "cluster" }, { "users", "user" }, { "contexts", "context" } } do
    local list_key, item_key = kind[1], kind[2]
    for i, item in ipairs(C.list(doc, list_key, "")) do
      local path = ("%s[%d]"):format(list_key, i)
      if type(item) ~= "table" then C.fail(path, "expected a mapping {name, " .. item_key .. "}") end
      local name = C.str(item, "name", path)
      if not name then C.fail(path .. ".name", "missing") end
      local body = C.map(item, item_key, path) or {}
      -- within a file, as across files, the first definition of a name wins
      if not out[list_key][name] then
        out[list_key][name] = { body = body, file = file, path = ("%s[name=%s].%s"):format(list_key, quote(name), item_key) }
        out.names[list_key][#out.names[list_key] + 1] = name
      end
    end
  end
  return out
end

-- }======

-- {====== merged loading

local function kubeconfig_files(opts, getenv)
  if opts.kubeconfig then return { opts.kubeconfig }, true end
  local env = getenv("KUBECONFIG")
  if env and env ~= "" then
    local files, seen = {}, {}
    for p in (env .. ":"):gmatch("([^:]*):") do
      if p ~= "" and not seen[p] then
        seen[p] = true
        files[#files + 1] = p
      end
    end
    return files, false, "KUBECONFIG"
  end
  local home = opts.home or getenv("HOME") or require("geneva.fs").home()
  return { (home or "") .. "/.kube/config" }, false, "~/.kube/config"
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  -- a file that exists and cannot be read is an error later, not "missing"
  return require("geneva.fs").exists(path) and true or false
end

--[[
M.load_kubeconfig(opts) -> merged | nil (no file found)
opts: kubeconfig (explicit path), getenv, home. merged = {files = {...},
current = name, current_file =, clusters/users/contexts = name -> entry,
names = {clusters = {...}, ...}}. Raises invalid_argument for an explicit
file that is missing and for any file that cannot be read or parsed.
]]
function M.load_kubeconfig(opts)
  opts = opts or {}
  local getenv = opts.getenv or os.getenv
  local files, explicit = kubeconfig_files(opts, getenv)
  local merged = { files = {}, clusters = {}, users = {}, contexts = {},
                   names = { clusters = {}, users = {}, contexts = {} } }
  for _, file in ipairs(files) do
    if explicit or exists(file) then
      local one = parse_file(file, read_file(file, "kubeconfig"))
      merged.files[#merged.files + 1] = file
      if not merged.current and one.current then merged.current, merged.current_file = one.current, file end
      for _, kind in ipairs { "clusters", "users", "contexts" } do
        for _, name in ipairs(one.names[kind]) do
          if not merged[kind][name] then
            merged[kind][name] = one[kind][name]
            merged.names[kind][#merged.names[kind] + 1] = name
          end
        end
      end
    end
  end
  if #merged.files == 0 then return nil, files end
  return merged
end

local function files_text(merged) return table.concat(merged.files, ":") end

-- The cluster entry -> cfg fields (server, tls)
local function cluster_fields(entry, cfg)
  local C, b, p = checker(entry.file), entry.body, entry.path
  local server = C.str(b, "server", p)
  if not server then C.fail(p .. ".server", "missing") end
  if not server:match("^https?://[^/]") then C.fail(p .. ".server", ("expected an http(s) URL, got %s"):format(quote(clean(server, 100)))) end
  if server:find("@", 1, true) and server:match("^https?://[^/]*@") then
    C.fail(p .. ".server", "credentials in the server URL are not supported")
  end
  cfg.server = server:gsub("/+$", "")
  for _, k in ipairs { "tls-server-name", "proxy-url" } do
    if C.str(b, k, p) then C.fail(p .. "." .. k, "not supported by geneva") end
  end
  local tls = cfg.tls
  local data, file = C.str(b, "certificate-authority-data", p), C.str(b, "certificate-authority", p)
  if data and file then
    C.fail(p, "certificate-authority and certificate-authority-data are both given: give one")
  end
  if data then
    tls.ca_pem = b64decode(data)
    if not tls.ca_pem then C.fail(p .. ".certificate-authority-data", "bad base64") end
  elseif file then
    local path = resolve_path(entry.file, file)
    tls.ca_pem = read_file(path, ("kubeconfig %s: %s.certificate-authority"):format(entry.file, p))
    cfg.ca_source = path
  end
  if C.bool(b, "insecure-skip-tls-verify", p) then
    if tls.ca_pem then
      C.fail(p, "insecure-skip-tls-verify cannot be combined with a certificate authority")
    end
    tls.verify = false
  end
end

-- The user entry -> cfg.auth, cfg.secret, cfg.tls client cert
local function user_fields(entry, cfg)
  local C, b, p = checker(entry.file), entry.body, entry.path
  for _, k in ipairs { "auth-provider", "as", "as-uid", "as-groups", "as-user-extra", "username", "password" } do
    if not is_null(b[k]) then C.fail(p .. "." .. k, "not supported by geneva (use a token, a client certificate or an exec plugin)") end
  end
  local secret = cfg.secret
  -- client certificate and key: data or file, both or neither
  local pem = {}
  for _, what in ipairs { { "client-certificate", "cert" }, { "client-key", "key" } } do
    local key, short = what[1], what[2]
    local data, file = C.str(b, key .. "-data", p), C.str(b, key, p)
    if data and file then C.fail(p, ("%s and %s-data are both given: give one"):format(key, key)) end
    if data then
      pem[short] = b64decode(data)
      if not pem[short] then C.fail(p .. "." .. key .. "-data", "bad base64") end
    elseif file then
      pem[short] = read_file(resolve_path(entry.file, file), ("kubeconfig %s: %s.%s"):format(entry.file, p, key))
    end
  end
  if (pem.cert == nil) ~= (pem.key == nil) then
    C.fail(p, pem.cert and "client-certificate needs a client-key" or "client-key needs a client-certificate")
  end
  if pem.cert then
    cfg.tls.client_cert_pem = pem.cert
    secret.client_key_pem = pem.key
    cfg.client_cert = true
  end
  -- bearer credentials: tokenFile over token (client-go), and a static one
  -- over exec (client-go's exec round tripper leaves a set Authorization alone)
  local token, token_file = C.str(b, "token", p), C.str(b, "tokenFile", p)
  local exec = C.map(b, "exec", p)
  if token_file then
    cfg.auth = { kind = "token_file", path = resolve_path(entry.file, token_file) }
    secret.token = M.read_token(cfg.auth.path, ("kubeconfig %s: %s.tokenFile"):format(entry.file, p))
  elseif token then
    cfg.auth = { kind = "token" }
    secret.token = token
  elseif exec then
    local ep = p .. ".exec"
    local e = { api_version = C.str(exec, "apiVersion", ep), command = C.str(exec, "command", ep),
                install_hint = C.str(exec, "installHint", ep), interactive_mode = C.str(exec, "interactiveMode", ep),
                provide_cluster_info = C.bool(exec, "provideClusterInfo", ep) or false,
                args = {}, env = {}, file = entry.file, path = ep }
    if not e.command then C.fail(ep .. ".command", "missing") end
    if not e.api_version then C.fail(ep .. ".apiVersion", "missing") end
    if not EXEC_VERSIONS[e.api_version] then
      C.fail(ep .. ".apiVersion", ("%s is not supported (client.authentication.k8s.io/v1 or v1beta1)"):format(quote(clean(e.api_version, 80))))
    end
    if e.api_version:match("/v1$") and not e.interactive_mode then
      C.fail(ep .. ".interactiveMode", "missing (required with client.authentication.k8s.io/v1; use Never)")
    end
    local mode = e.interactive_mode or "IfAvailable"
    if mode ~= "Never" and mode ~= "IfAvailable" and mode ~= "Always" then
      C.fail(ep .. ".interactiveMode", ("expected Never, IfAvailable or Always, got %s"):format(quote(clean(mode, 40))))
    end
    if mode == "Always" then
      C.fail(ep .. ".interactiveMode", "Always needs a terminal, and geneva runs plugins non-interactively")
    end
    if e.command:find("/", 1, true) then e.command = resolve_path(entry.file, e.command) end
    for i, a in ipairs(C.list(exec, "args", ep)) do
      if type(a) ~= "string" and math.type(a) ~= "integer" then C.fail(("%s.args[%d]"):format(ep, i), "expected a string") end
      e.args[i] = tostring(a)
    end
    for i, kv in ipairs(C.list(exec, "env", ep)) do
      local ip = ("%s.env[%d]"):format(ep, i)
      if type(kv) ~= "table" then C.fail(ip, "expected {name, value}") end
      local n = C.str(kv, "name", ip)
      if not n then C.fail(ip .. ".name", "missing") end
      local v = kv.value
      if math.type(v) == "integer" or type(v) == "boolean" then v = tostring(v) end
      if not is_null(v) and type(v) ~= "string" then C.fail(ip .. ".value", "expected a string") end
      e.env[#e.env + 1] = { n, is_null(v) and "" or v }
    end
    cfg.auth = { kind = "exec", exec = e }
  end
end

-- The in-cluster config, or nil when not in a pod (either variable empty)
local function in_cluster(opts, getenv)
  local host, port = getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
  if not host or host == "" or not port or port == "" then return nil end
  local dir = opts.sa_dir or getenv("GENEVA_KUBE_SA_DIR") or M.SA_DIR
  if host:find(":", 1, true) then host = "[" .. host .. "]" end   -- IPv6
  local cfg = { source = "in-cluster", context = "in-cluster", user = "serviceaccount",
                server = ("https://%s:%s"):format(host, port), tls = {}, secret = {},
                files = {}, sa_dir = dir }
  local what = "in-cluster config"
  cfg.auth = { kind = "token_file", path = dir .. "/token" }
  cfg.secret.token = M.read_token(cfg.auth.path, what)
  cfg.tls.ca_pem = read_file(dir .. "/ca.crt", what)
  cfg.ca_source = dir .. "/ca.crt"
  local f = io.open(dir .. "/namespace", "rb")
  if f then
    local ns = (f:read(256) or ""):match("^%s*(.-)%s*$")
    f:close()
    if ns ~= "" then cfg.context_namespace = ns end
  end
  return cfg
end

local Config = {}
Config.__index = Config
Config.__name = "geneva.kube.Config"
Config.__tostring = function(c)
  return ("kube config: context %s, user %s, server %s, namespace %s"):format(
    quote(c.context), quote(c.user or ""), c.server, c.namespace)
end

--[[
M.load([opts]) -> cfg | raises invalid_argument
opts:
  kubeconfig  explicit kubeconfig path (the cluster spec's `kubeconfig`)
  context     a context name (default: current-context)
  namespace   overrides the context's namespace (the cluster spec's)
  in_cluster  true: the service account only; false: never
  sa_dir      the service account's directory (default GENEVA_KUBE_SA_DIR, else M.SA_DIR)
  getenv      function(name) -> value (default os.getenv), home: for ~/.kube/config
cfg (a Config; tostring and describe() are safe to show):
  source      "kubeconfig" | "in-cluster";  files: the kubeconfigs read
  context, cluster, user: names (user may be nil: anonymous)
  namespace   spec's > context's > "default"
  server      base URL without a trailing '/'
  tls         {ca_pem=, verify=false?, client_cert_pem=}: http options
  auth        {kind = "none"|"token"|"token_file"(path=)|"exec"(exec=)}
  secret      {token=, client_key_pem=}: never show these
]]
function M.load(opts)
  opts = opts or {}
  local getenv = opts.getenv or os.getenv
  local cfg
  if opts.in_cluster == true then
    cfg = in_cluster(opts, getenv)
    if not cfg then fail("in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not in a pod)") end
  else
    local merged, tried = M.load_kubeconfig(opts)
    local name = opts.context or (merged and merged.current)
    if not name and not opts.kubeconfig and opts.in_cluster ~= false then
      cfg = in_cluster(opts, getenv)      -- client-go's fallback for an empty config
    end
    if not cfg then
      if not merged then
        fail(("no Kubernetes configuration: %s not found%s"):format(table.concat(tried, ", "),
          opts.in_cluster == false and "" or ", and not in a pod (KUBERNETES_SERVICE_HOST is not set)"))
      end
      if not name then
        fail(("kubeconfig %s: no current-context is set and no context was given"):format(files_text(merged)))
      end
      local ctx = merged.contexts[name]
      if not ctx then
        local where = opts.context and "context" or ("current-context (from %s)"):format(merged.current_file)
        fail(("kubeconfig %s: %s %s is not defined%s"):format(files_text(merged), where, quote(name),
          suggest.hint(name, merged.names.contexts)))
      end
      local C = checker(ctx.file)
      cfg = { source = "kubeconfig", files = merged.files, context = name, tls = {}, secret = {},
              auth = { kind = "none" } }
      cfg.cluster = C.str(ctx.body, "cluster", ctx.path)
      if not cfg.cluster then C.fail(ctx.path .. ".cluster", "missing") end
      cfg.user = C.str(ctx.body, "user", ctx.path)
      cfg.context_namespace = C.str(ctx.body, "namespace", ctx.path)
      local centry = merged.clusters[cfg.cluster]
      if not centry then
        C.fail(ctx.path .. ".cluster", ("cluster %s is not defined in %s%s"):format(quote(cfg.cluster),
          files_text(merged), suggest.hint(cfg.cluster, merged.names.clusters)))
      end
      cluster_fields(centry, cfg)
      if cfg.user then
        local uentry = merged.users[cfg.user]
        if not uentry then
          C.fail(ctx.path .. ".user", ("user %s is not defined in %s%s"):format(quote(cfg.user),
            files_text(merged), suggest.hint(cfg.user, merged.names.users)))
        end
        user_fields(uentry, cfg)
      end
    end
  end
  cfg.auth = cfg.auth or { kind = "none" }
  cfg.namespace = opts.namespace or cfg.context_namespace or "default"
  return setmetatable(cfg, Config)
end

-- M.read_token(path, what) -> token | raises: a token file's content, trimmed
function M.read_token(path, what)
  local v = read_file(path, what):match("^%s*(.-)%s*$")
  if v == "" then fail(("%s: the token file %s is empty"):format(what, path)) end
  if v:find("[%c]") then fail(("%s: the token file %s holds more than one line"):format(what, path)) end
  return v
end

-- cfg:describe() -> a plain table safe to print or store (no secret)
function Config:describe()
  local auth = self.auth.kind
  if auth == "token_file" then auth = "token file " .. self.auth.path
  elseif auth == "exec" then auth = "exec " .. self.auth.exec.command end
  if self.client_cert then auth = auth == "none" and "client certificate" or (auth .. " + client certificate") end
  return { source = self.source, files = json.array(self.files and { table.unpack(self.files) } or {}),
           context = self.context, cluster = self.cluster, user = self.user, server = self.server,
           namespace = self.namespace, auth = auth, ca = self.ca_source or (self.tls.ca_pem and "inline data") or nil,
           verify = self.tls.verify ~= false }
end

-- }======

-- {====== exec credential plugins

-- RFC 3339 -> epoch seconds | nil
local function parse_time(s)
  if type(s) ~= "string" then return nil end
  return (require("geneva.time").parse_iso8601(s))
end

--[[
M.run_exec(cfg [, opts]) -> cred | raises invalid_argument / unavailable
Runs cfg.auth.exec as client-go does: the parent environment plus the
plugin's env plus KUBERNETES_EXEC_INFO, stdin closed (interactive false),
stdout parsed as an ExecCredential of the requested apiVersion. cred =
{token=, client_cert_pem=, client_key_pem=, expires = epoch seconds | nil}.
opts.timeout overrides M.EXEC_TIMEOUT. Nothing the plugin prints on stdout
reaches a message; a bounded line of its stderr does.
]]
function M.run_exec(cfg, opts)
  local e = cfg.auth.exec
  local what = ("kubeconfig %s: %s"):format(e.file, e.path)
  local info = { apiVersion = e.api_version, kind = "ExecCredential",
                 spec = { interactive = false } }
  if e.provide_cluster_info then
    info.spec.cluster = { server = cfg.server, ["insecure-skip-tls-verify"] = cfg.tls.verify == false or nil,
                          ["certificate-authority-data"] = cfg.tls.ca_pem and b64encode(cfg.tls.ca_pem) or nil }
  end
  local env_add = { KUBERNETES_EXEC_INFO = json.encode(info) }
  for _, kv in ipairs(e.env) do env_add[kv[1]] = kv[2] end
  local argv = { e.command, table.unpack(e.args) }
  local r, msg, code = require("geneva.proc").run { argv = argv, env_add = env_add, stdin = "null",
                                                  timeout = (opts and opts.timeout) or M.EXEC_TIMEOUT }
  if not r then
    if code == "EINTR" then errors.throw("interrupted", "interrupted") end
    local hint = (code == "ENOENT" and e.install_hint) and ("\n" .. clean(e.install_hint, 500)) or ""
    fail(("%s: cannot run the exec plugin %s: %s%s"):format(what, quote(e.command), clean(msg), hint))
  end
  if not r.ok then
    local last = clean((r.stderr or ""):match("([^\n]*)\n?$") or "", 300)
    fail(("%s: the exec plugin %s %s %d%s"):format(what, quote(e.command),
      r.status == "exited" and "exited with status" or "was killed by signal", r.code,
      last ~= "" and (": " .. last) or ""))
  end
  local doc = json.decode(r.stdout)
  if type(doc) ~= "table" then fail(what .. ": the exec plugin's output is not an ExecCredential (not JSON)") end
  if doc.apiVersion ~= e.api_version then
    fail(("%s: the exec plugin answered apiVersion %s, not %s"):format(what, quote(clean(doc.apiVersion, 80)), e.api_version))
  end
  if doc.kind ~= "ExecCredential" then fail(what .. ": the exec plugin's output is not an ExecCredential") end
  local st = doc.status
  if type(st) ~= "table" then fail(what .. ": the exec plugin returned no status") end
  local function s(k) local v = st[k] return type(v) == "string" and v ~= "" and v or nil end
  local cred = { token = s("token"), client_cert_pem = s("clientCertificateData"), client_key_pem = s("clientKeyData") }
  if not cred.token and not cred.client_cert_pem and not cred.client_key_pem then
    fail(what .. ": the exec plugin returned no token and no client certificate")
  end
  if (cred.client_cert_pem == nil) ~= (cred.client_key_pem == nil) then
    fail(what .. ": the exec plugin returned a client certificate without its key, or a key without its certificate")
  end
  if cred.token and cred.token:find("[%c]") then fail(what .. ": the exec plugin returned a token with control characters") end
  if st.expirationTimestamp ~= nil and st.expirationTimestamp ~= json.null then
    cred.expires = parse_time(st.expirationTimestamp)
    if not cred.expires then
      fail(("%s: the exec plugin returned a bad expirationTimestamp %s"):format(what, quote(clean(st.expirationTimestamp, 60))))
    end
  end
  return cred
end

-- }======

return M
