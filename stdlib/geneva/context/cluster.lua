--- Cluster specs: what @{geneva.db.Db:define_cluster} and a context's
-- inline `cluster` accept. Specs are checked when defined; a mistake is an
-- `invalid_argument` naming the field's path (`worker_groups[1].memory`),
-- with "did you mean" for a mistyped name.
--
-- **`type = "local"`**: worker processes on this machine.
--
-- - `workers`: how many, 1 to `MAX_LOCAL_WORKERS` (1024; default: the number of cores)
-- - `env`: environment of the workers, `{NAME = value | {from_env = "NAME"}}`
--
-- **`type = "ray"`**: an existing Ray cluster, through its dashboard's Job
-- Submission REST API (no Python, no Ray client on the driver).
--
-- - `address` (required): the dashboard's URL, `http://head:8265`
-- - `ship_host`: upload this `geneva` and the libraries it needs beyond
--   glibc once as a package (else the nodes need `geneva` at this path)
-- - `env`: as for local
-- - `token_env` / `token_file`: where the Ray token is (else
--   `RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH`, `~/.ray/auth_token`)
-- - `ca_file`, `client_cert`, `client_key`, `verify` (default true): TLS
--
-- **`type = "kuberay"`**: a RayCluster created through the Kubernetes API
-- for each context and deleted at its exit.
--
-- - `namespace`: default the kubeconfig context's
-- - `kubeconfig`: a file (else `KUBECONFIG`, `~/.kube/config`, the
--   in-cluster service account)
-- - `ttl_seconds`: the expiry written on the RayCluster, for `geneva reap`
--   (default 24 hours; the live context pushes it forward as it runs)
-- - `ship_host`: as for ray, but true unless set to false (the pods never
--   see this host's `geneva`; false when the image has it at this path)
-- - `token_env` / `token_file`: as for ray
-- - `head_group`: a group (below)
-- - `worker_groups`: a list of groups, each also with `name` (required,
--   unique), `replicas`, `min_replicas`, `max_replicas`
--
-- A group's fields follow KubeRay: `image`, `num_cpus`, `num_gpus`,
-- `memory` (a Kubernetes quantity such as `4Gi`, or bytes; `100m` is
-- refused as the typo it always is), `node_selector`, `tolerations`,
-- `labels`, `service_account`, `env` (also `{from_secret = "name", key =
-- "KEY"}`, a Kubernetes Secret's key the pod reads itself).
--
-- **Secrets are references, never values**: `token_env`, `token_file`,
-- `{from_env = "NAME"}` in `env`, read when a worker starts. A field whose
-- name looks like a secret holding a literal, or a URL with a password, is
-- refused; records, logs and `--json` show references only.
-- @module geneva.context.cluster
-- @usage db:define_cluster("k8s", { type = "kuberay", namespace = "ml",
--   head_group = { image = "rayproject/ray:2.52.0", num_cpus = 0 },
--   worker_groups = { { name = "gpu", image = "rayproject/ray:2.52.0", num_gpus = 1,
--     memory = "16Gi", replicas = 2, env = { HF_TOKEN = { from_secret = "hf", key = "token" } } } } })

-- Internals: validation, secret references and the registry behind
-- db:define_cluster & co; the generic pieces (messages with field paths,
-- Kubernetes syntax, field checkers) are geneva.context.spec. resolve_env
-- reads references at use time, for a child process; nothing here stores
-- or logs their values. Records with literal env values are stored 0600.
local json = require "geneva.json"
local errors = require "geneva.errors"
local registry = require "geneva.context.registry"
local sv = require "geneva.context.spec"   -- spec validation

local M = {}

local show, sub, fail, expected = sv.show, sv.sub, sv.fail, sv.expected
local check_fields = sv.check_fields

-- {===== secrets

local function check_env_name(path, k)
  if type(k) ~= "string" or not k:match("^[%a_][%w_.%-]*$") then
    fail(path, ("bad environment variable name %s"):format(show(k)))
  end
end

-- M.is_ref(v) -> boolean: v is a secret reference {from_env = "NAME"}
function M.is_ref(v)
  return type(v) == "table" and type(v.from_env) == "string" and next(v, next(v)) == nil
end

-- M.is_secret_ref(v) -> boolean: v names a key of a Kubernetes Secret
-- {from_secret = "secret-name", key = "KEY"} (kuberay groups only: the pod
-- reads it through valueFrom.secretKeyRef, geneva never sees the value)
function M.is_secret_ref(v)
  if type(v) ~= "table" or type(v.from_secret) ~= "string" or type(v.key) ~= "string" then return false end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  return n == 2
end

-- M.check_env(env, path [, k8s]) -> normalized copy (a json object) | raises.
-- Values: strings, numbers and booleans (kept as strings) or {from_env=NAME};
-- with k8s (kuberay groups) also {from_secret=, key=}.
function M.check_env(env, path, k8s)
  if type(env) ~= "table" then expected(path, "a table of NAME = value", env) end
  local out = json.object()
  for k, v in pairs(env) do
    local p = sub(path, type(k) == "string" and k or tostring(k))
    check_env_name(p, k)
    local t = type(v)
    if t == "table" and k8s and v.from_secret ~= nil then
      if not M.is_secret_ref(v) then
        fail(p, 'expected a Kubernetes secret reference {from_secret = "name", key = "KEY"}, got ' .. show(v))
      end
      sv.dns_subdomain(sub(p, "from_secret"), v.from_secret)
      if not v.key:match("^[%w%-%._]+$") or #v.key > 253 then
        expected(sub(p, "key"), "a Secret data key (letters, digits, '-', '_', '.')", v.key)
      end
      out[k] = { from_secret = v.from_secret, key = v.key }
    elseif t == "table" then
      if v.from_env == nil or not M.is_ref(v) then
        fail(p, 'expected a value or a secret reference {from_env = "NAME"}, got ' .. show(v))
      end
      check_env_name(sub(p, "from_env"), v.from_env)
      out[k] = { from_env = v.from_env }
    elseif t == "string" or t == "number" or t == "boolean" then
      -- a number is a secret too under such a name (a PIN); a boolean never
      if t ~= "boolean" and sv.is_secret_key(k) then fail(p, sv.SECRET_HINT) end
      if sv.has_url_password(v) then fail(p, sv.SECRET_HINT .. " (no credentials in the URL)") end
      if t == "number" and math.type(v) == "float" and v == math.floor(v) and math.abs(v) < 2^53 then
        v = math.tointeger(v)
      end
      out[k] = tostring(v)
    else
      expected(p, "a string or {from_env = \"NAME\"}", v)
    end
  end
  return out
end

--[[
M.resolve_env(env [, getenv]) -> plain table NAME -> string | raises
For a child process: plain values as they are, {from_env = X} read from
getenv (default os.getenv) now. An unset variable raises invalid_argument
naming the variable (never a value). The result is the caller's; do not
store or log it.
]]
function M.resolve_env(env, getenv)
  getenv = getenv or os.getenv
  local out = {}
  for k, v in pairs(env or {}) do
    if type(v) == "table" then
      local val = getenv(v.from_env)
      if val == nil then
        errors.throw("invalid_argument", ("env.%s: environment variable %s is not set"):format(k, v.from_env))
      end
      out[k] = val
    else
      out[k] = tostring(v)
    end
  end
  return out
end

--[[
M.resolve_token(spec [, getenv]) -> token | nil (no token configured) | raises
Reads spec.token_env or spec.token_file at use time; an unset variable or an
unreadable or empty file raises invalid_argument naming the reference.
]]
function M.resolve_token(spec, getenv)
  if spec.token_env then
    local v = (getenv or os.getenv)(spec.token_env)
    if v == nil or v == "" then
      errors.throw("invalid_argument", ("token_env: environment variable %s is not set"):format(spec.token_env))
    end
    return v
  elseif spec.token_file then
    local f, msg = io.open(spec.token_file, "rb")
    if not f then errors.throw("invalid_argument", "token_file: " .. tostring(msg)) end
    local v = f:read("a") or ""
    f:close()
    v = v:gsub("%s+$", "")
    if v == "" then errors.throw("invalid_argument", ("token_file: %s is empty"):format(spec.token_file)) end
    return v
  end
  return nil
end

-- }=====

-- {===== cluster fields: (path, value) -> normalized value | raises

local function url(path, v)
  if type(v) ~= "string" then expected(path, "the http(s) URL of a Ray dashboard", v) end
  local scheme, auth = v:match("^(%a[%w+.-]*)://([^/]*)")
  if scheme == "ray" then
    fail(path, ("'%s': expected the http(s) URL of the Ray dashboard, e.g. http://head:8265 (ray:// client addresses are not used)"):format(v))
  end
  if not (scheme == "http" or scheme == "https") or not auth or auth == "" then
    fail(path, ("'%s': expected the http(s) URL of a Ray dashboard, e.g. http://head:8265"):format(v))
  end
  if auth:find("@", 1, true) then fail(path, sv.SECRET_HINT .. " (no credentials in the URL)") end
  local host, port = auth:match("^(.-):(%d*)$")
  host = host or auth
  if host == "" or (port and (port == "" or tonumber(port) > 65535)) or not host:match("^[%w.%-%[%]:]+$") then
    fail(path, ("'%s': bad host or port"):format(v))
  end
  return v
end

local function env(path, v) return M.check_env(v, path) end

local TOL_OPS = { Exists = true, Equal = true }
local TOL_EFFECTS = { NoSchedule = true, PreferNoSchedule = true, NoExecute = true, [""] = true }

local TOLERATION = {
  key = function(path, v)
    if type(v) ~= "string" then expected(path, "a string", v) end
    if v ~= "" then sv.label_key(path, v) end
    return v
  end,
  operator = function(path, v)
    if not TOL_OPS[v] then expected(path, "'Equal' or 'Exists'", v) end
    return v
  end,
  value = sv.label_value,
  effect = function(path, v)
    if not TOL_EFFECTS[v] then expected(path, "'NoSchedule', 'PreferNoSchedule' or 'NoExecute'", v) end
    return v
  end,
  toleration_seconds = sv.nonneg_int,
}

local function tolerations(path, v)
  local n = sv.array_of(path, v, "a list of tolerations")
  local out = json.array()
  for i = 1, n do
    local p = sub(path, i)
    local t = check_fields(p, v[i], TOLERATION, "a toleration {key, operator, value, effect, toleration_seconds}")
    local op = t.operator or "Equal"
    if op == "Exists" and t.value and t.value ~= "" then fail(p, "operator 'Exists' takes no value") end
    if (t.key or "") == "" and op ~= "Exists" then fail(p, "an empty key needs operator 'Exists'") end
    if t.toleration_seconds and t.effect ~= "NoExecute" then
      fail(p, "toleration_seconds applies only to effect 'NoExecute'")
    end
    out[i] = t
  end
  return out
end

local GROUP = {
  image = sv.image, num_cpus = sv.nonneg_number, num_gpus = sv.nonneg_int, memory = sv.memory,
  node_selector = sv.labels, tolerations = tolerations, labels = sv.labels,
  service_account = sv.dns_subdomain, env = function(path, v) return M.check_env(v, path, true) end,
}
local WORKER_GROUP = { name = sv.dns_label, replicas = sv.nonneg_int, min_replicas = sv.nonneg_int,
                       max_replicas = sv.nonneg_int }
for k, f in pairs(GROUP) do WORKER_GROUP[k] = f end

local function head_group(path, v) return check_fields(path, v, GROUP, "a group table") end

local function worker_groups(path, v)
  local n = sv.array_of(path, v, "a list of worker groups")
  if n == 0 then fail(path, "expected at least one worker group") end
  local out, seen = json.array(), {}
  for i = 1, n do
    local p = sub(path, i)
    local g = check_fields(p, v[i], WORKER_GROUP, "a worker group table")
    if not g.name then fail(sub(p, "name"), "missing (every worker group needs a name)") end
    if seen[g.name] then
      fail(sub(p, "name"), ("duplicate worker group name '%s' (also worker_groups[%d])"):format(g.name, seen[g.name]))
    end
    seen[g.name] = i
    local lo, hi = g.min_replicas or 0, g.max_replicas or math.maxinteger
    if lo > hi then fail(p, ("min_replicas (%d) > max_replicas (%d)"):format(lo, hi)) end
    if g.replicas and (g.replicas < lo or g.replicas > hi) then
      fail(sub(p, "replicas"), ("%d is outside min_replicas..max_replicas (%d..%s)")
        :format(g.replicas, lo, g.max_replicas and tostring(hi) or "unbounded"))
    end
    out[i] = g
  end
  return out
end

-- The most worker processes a local cluster may have: a fixed cap, so a
-- definition valid on one machine is valid on every other; far above what
-- one host runs usefully (each worker is a process with its own Lua state),
-- far below what would exhaust pids and file descriptors (a typo such as
-- workers = 1000000).
M.MAX_LOCAL_WORKERS = 1024

-- M.default_local_workers() -> the size of a local cluster that gives none:
-- the cores, within the cap
function M.default_local_workers()
  return math.min(require("geneva.proc").cpu_count(), M.MAX_LOCAL_WORKERS)
end

local function local_workers(path, v)
  v = sv.pos_int(path, v)
  if v > M.MAX_LOCAL_WORKERS then
    fail(path, ("%d is more than the %d worker processes a local cluster may have")
      :format(v, M.MAX_LOCAL_WORKERS))
  end
  return v
end

local TYPES = {
  ["local"] = { workers = local_workers, env = env },
  ray = { address = url, ship_host = sv.bool, env = env, token_env = sv.env_name, token_file = sv.str,
          ca_file = sv.str, client_cert = sv.str, client_key = sv.str, verify = sv.bool },
  kuberay = {
    namespace = sv.dns_label, head_group = head_group, worker_groups = worker_groups,
    kubeconfig = sv.str, ttl_seconds = sv.pos_int, token_env = sv.env_name, token_file = sv.str,
    ship_host = sv.bool,
  },
}
local REQUIRED = { ray = { "address" } }

-- }=====

--[[
M.validate(spec [, where]) -> normalized copy | raises invalid_argument
The message starts with the field path (prefixed by `where`, e.g.
"clusters.gpu") and says what is wrong; err.field holds the path. The copy
has only known fields, arrays and maps marked for JSON, env values as
strings or {from_env=}. Defaults are left to the runners.
]]
function M.validate(spec, where)
  where = where or ""
  if type(spec) ~= "table" then expected(where, "a cluster spec table", spec) end
  local ty = spec.type
  if ty == nil then fail(sub(where, "type"), "missing (one of 'local', 'ray', 'kuberay')") end
  if not TYPES[ty] then expected(sub(where, "type"), "'local', 'ray' or 'kuberay'", ty) end
  local fields = { type = function(_, v) return v end }
  for k, f in pairs(TYPES[ty]) do fields[k] = f end
  local out = check_fields(where, spec, fields, "a cluster spec table")
  for _, k in ipairs(REQUIRED[ty] or {}) do
    if out[k] == nil then fail(sub(where, k), ("missing (required for type '%s')"):format(ty)) end
  end
  if out.token_env and out.token_file then
    fail(where, "token_env and token_file are exclusive: give one")
  end
  return out
end

-- {===== registry (db methods; see geneva.db)

local KIND = "clusters"

-- M.define(db, name, spec) -> normalized spec | raises. Replaces an
-- existing definition; writes only when the stored record would change.
function M.define(db, name, spec)
  registry.check_name("cluster", name)
  local norm = M.validate(spec)
  local old, old_bytes = registry.read(db, KIND, name)
  local now = require("geneva.time").iso8601()
  local rec = { name = name, type = norm.type, spec = norm,
                created_at = old and old.created_at or now, updated_at = now }
  if old and json.canonical(old.spec) == json.canonical(norm) then rec.updated_at = old.updated_at end
  registry.write(db, KIND, name, rec, old_bytes)
  return norm
end

-- M.get(db, name) -> spec | nil, Error(not_found). A probe: never raises
-- for an unknown (or invalid) name; raises for unreadable records.
function M.get(db, name)
  local rec, err = registry.find(db, KIND, name)
  if not rec then return nil, err end
  return rec.spec
end

-- M.record(db, name) -> the stored record {name, type, spec, created_at,
-- updated_at} | nil
function M.record(db, name)
  if not pcall(registry.check_name, "cluster", name) then return nil end
  return (registry.read(db, KIND, name))
end

-- M.list(db) -> array of {name=, type=, spec=, created_at=, updated_at=}, by name
function M.list(db)
  local recs, names = registry.list(db, KIND)
  local out = {}
  for i, rec in ipairs(recs) do
    out[i] = { name = names[i], type = rec.type, spec = rec.spec,
               created_at = rec.created_at, updated_at = rec.updated_at }
  end
  return out
end

-- M.delete(db, name) -> true | raises not_found
function M.delete(db, name) return registry.delete(db, KIND, name) end

-- }=====

return M
