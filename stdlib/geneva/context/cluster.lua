-- geneva.context.cluster: cluster specs (design §3, contract) — validation, secret
-- references and the registry behind db:define_cluster & co.
--
-- Types:  local   {workers, env}
--         ray     {address, ship_host, env, token_env | token_file, ca_file,
--                  client_cert, client_key, verify}
--         kuberay {namespace, head_group, worker_groups, kubeconfig,
--                  ttl_seconds, token_env | token_file}
-- Group fields follow KubeRay: image, num_cpus, num_gpus, memory,
-- node_selector, tolerations, labels, service_account, env; worker groups add
-- name, replicas, min_replicas, max_replicas.
--
-- memory is a Kubernetes quantity (512Mi, 4Gi, 1.5G, 1e9) or an integer
-- number of bytes. The sub-unit suffixes m, u and n are refused for memory:
-- Kubernetes reads "100m" as 0.1 byte, which is always a typo for 100Mi.
--
-- Secrets are references, never values: token_env / token_file, and
-- {from_env = "NAME"} for any env value. A field that looks like a secret and
-- holds a plain string is refused. resolve_env reads the references at use
-- time, for a child process; nothing here stores or logs their values.
local json = require "geneva.json"
local errors = require "geneva.errors"
local registry = require "geneva.context.registry"

local M = {}

M.SECRET_HINT = "secrets are references: use token_env/token_file or {from_env=...}"

-- {===== messages

local function show(v)
  local t = type(v)
  if t == "string" then return ("%q"):format(v):gsub("\\\n", "\\n") end
  if t == "table" then return (next(v) == nil) and "an empty table" or "a table" end
  if t == "nil" then return "nothing" end
  return tostring(v)
end
M.show = show

-- A path is built as "a", "a.b", "a[1].b"; `where` prefixes everything.
local function sub(path, key)
  if type(key) == "number" then return path .. "[" .. key .. "]" end
  if path == "" then return key end
  return path .. "." .. key
end
M.sub = sub

local function fail(path, msg)
  errors.throw("invalid_argument", path ~= "" and (path .. ": " .. msg) or msg, { field = path ~= "" and path or nil })
end
M.fail = fail

local function expected(path, what, v)
  fail(path, ("expected %s, got %s"):format(what, show(v)))
end
M.expected = expected

-- Edit distance with transpositions (optimal string alignment), for
-- "did you mean" hints.
local function distance(a, b)
  if math.abs(#a - #b) > 2 then return 3 end
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[#a][#b]
end

-- }=====

-- {===== secrets

-- Does a key name a secret? Whole words token/key after api, and the
-- substrings secret/password/passwd/credential (TOKENIZERS_PARALLELISM is not).
function M.is_secret_key(k)
  if type(k) ~= "string" then return false end
  local l = k:lower()
  if l:find("secret", 1, true) or l:find("passw", 1, true) or l:find("credential", 1, true)
     or l:find("apikey", 1, true) or l:find("api_key", 1, true) then
    return true
  end
  for w in l:gmatch("[%a%d]+") do
    if w == "token" or w == "tokens" then return true end
  end
  return false
end

local function check_env_name(path, k)
  if type(k) ~= "string" or not k:match("^[%a_][%w_.%-]*$") then
    fail(path, ("bad environment variable name %s"):format(show(k)))
  end
end

-- M.is_ref(v) -> boolean: v is a secret reference {from_env = "NAME"}
function M.is_ref(v)
  return type(v) == "table" and type(v.from_env) == "string" and next(v, next(v)) == nil
end

-- M.check_env(env, path) -> normalized copy (a json object) | raises.
-- Values: strings, numbers and booleans (kept as strings) or {from_env=NAME}.
function M.check_env(env, path)
  if type(env) ~= "table" then expected(path, "a table of NAME = value", env) end
  local out = json.object()
  for k, v in pairs(env) do
    local p = sub(path, type(k) == "string" and k or tostring(k))
    check_env_name(p, k)
    local t = type(v)
    if t == "table" then
      if v.from_env == nil or not M.is_ref(v) then
        fail(p, 'expected a value or a secret reference {from_env = "NAME"}, got ' .. show(v))
      end
      check_env_name(sub(p, "from_env"), v.from_env)
      out[k] = { from_env = v.from_env }
    elseif t == "string" or t == "number" or t == "boolean" then
      if t == "string" and M.is_secret_key(k) then fail(p, M.SECRET_HINT) end
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

-- {===== Kubernetes syntax

local SUFFIX = {
  [""] = 1, k = 1e3, M = 1e6, G = 1e9, T = 1e12, P = 1e15, E = 1e18,
  Ki = 2^10, Mi = 2^20, Gi = 2^30, Ti = 2^40, Pi = 2^50, Ei = 2^60,
  m = 1e-3, u = 1e-6, n = 1e-9,
}

--[[
M.parse_quantity(s) -> value (number), suffix | nil, why
Kubernetes resource.Quantity syntax: an optional sign, digits with an
optional fraction, then a binary suffix (Ki Mi Gi Ti Pi Ei), a decimal one
(n u m "" k M G T P E) or a decimal exponent (e3, E-2).
]]
function M.parse_quantity(s)
  if type(s) ~= "string" then return nil, "not a string" end
  local sign, num, rest = s:match("^([+-]?)(%d*%.?%d*)(.*)$")
  if not num or num == "" or num == "." or not num:match("%d") then return nil, "no number" end
  local mult
  if SUFFIX[rest] then
    mult = SUFFIX[rest]
  else
    local e = rest:match("^[eE]([+-]?%d+)$")
    if not e then return nil, "unknown suffix '" .. rest .. "'" end
    mult = 10.0 ^ tonumber(e)
  end
  local v = tonumber(num) * mult
  if sign == "-" then v = -v end
  return v, rest
end

local function check_memory(path, v)
  if math.type(v) == "integer" then
    if v <= 0 then expected(path, "a positive number of bytes", v) end
    return v
  end
  local hint = "(expected a Kubernetes quantity such as 4Gi or 500M)"
  if type(v) ~= "string" then fail(path, ("expected a Kubernetes quantity such as 4Gi or 500M, got %s"):format(show(v))) end
  local n, suffix = M.parse_quantity(v)
  if not n then fail(path, ("bad quantity '%s' %s"):format(v, hint)) end
  if suffix == "m" or suffix == "u" or suffix == "n" then
    fail(path, ("bad quantity '%s': '%s' means %g byte (did you mean %sMi?)"):format(v, suffix, n, v:sub(1, -2)))
  end
  if n < 1 then fail(path, ("bad quantity '%s': memory must be at least 1 byte"):format(v)) end
  return v
end

local function is_dns_label(s)
  return type(s) == "string" and #s <= 63 and s:match("^[a-z0-9]$") ~= nil
      or (type(s) == "string" and #s <= 63 and s:match("^[a-z0-9][a-z0-9%-]*[a-z0-9]$") ~= nil)
end

local function is_dns_subdomain(s)
  if type(s) ~= "string" or #s == 0 or #s > 253 then return false end
  for part in (s .. "."):gmatch("([^.]*)%.") do
    if not is_dns_label(part) then return false end
  end
  return true
end

local function is_label_name(s)   -- name part of a key, and label values
  return #s <= 63 and (s:match("^[%w]$") ~= nil or s:match("^[%w][%w_.%-]*[%w]$") ~= nil)
end

local function check_label_key(path, k)
  if type(k) ~= "string" then fail(path, "label keys must be strings, got " .. show(k)) end
  local prefix, name = k:match("^(.*)/(.*)$")
  if not prefix then name = k end
  if prefix and not is_dns_subdomain(prefix) then
    fail(path, ("bad label key '%s': prefix '%s' is not a DNS subdomain"):format(k, prefix))
  end
  if name == "" or not is_label_name(name) then
    fail(path, ("bad label key '%s' (at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit, optionally prefixed by 'dns.domain/')"):format(k))
  end
end

local function check_label_value(path, v)
  if type(v) ~= "string" then expected(path, "a string", v) end
  if v ~= "" and not is_label_name(v) then
    fail(path, ("bad label value '%s' (at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit)"):format(v))
  end
  return v
end

local function check_labels(path, t)
  if type(t) ~= "table" then expected(path, "a table of key = value", t) end
  local out = json.object()
  for k, v in pairs(t) do
    local p = sub(path, tostring(k))
    check_label_key(p, k)
    out[k] = check_label_value(p, v)
  end
  return out
end

-- }=====

-- {===== field checkers: (path, value) -> normalized value | raises

local function str(path, v)
  if type(v) ~= "string" or v == "" then expected(path, "a non-empty string", v) end
  return v
end

local function bool(path, v)
  if type(v) ~= "boolean" then expected(path, "true or false", v) end
  return v
end

local function int(min, what)
  return function(path, v)
    if math.type(v) == "float" and v == math.floor(v) then v = math.tointeger(v) or v end
    if math.type(v) ~= "integer" or v < min then expected(path, what, v) end
    return v
  end
end
local pos_int, nonneg_int = int(1, "a positive integer"), int(0, "a non-negative integer")

local function nonneg_number(path, v)
  if type(v) ~= "number" or v ~= v or v < 0 or v == math.huge then expected(path, "a non-negative number", v) end
  return v
end

local function env_name(path, v)
  if type(v) ~= "string" or not v:match("^[%a_][%w_]*$") then
    expected(path, "the name of an environment variable", v)
  end
  return v
end

local function dns_label(path, v)
  if not is_dns_label(v) then
    expected(path, "a DNS-1123 label (lowercase letters, digits and '-', at most 63)", v)
  end
  return v
end

local function dns_subdomain(path, v)
  if not is_dns_subdomain(v) then
    expected(path, "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')", v)
  end
  return v
end

local function image(path, v)
  if type(v) ~= "string" or v == "" or v:find("%s") then expected(path, "a container image reference", v) end
  return v
end

local function url(path, v)
  if type(v) ~= "string" then expected(path, "the http(s) URL of a Ray dashboard", v) end
  local scheme, auth = v:match("^(%a[%w+.-]*)://([^/]*)")
  if scheme == "ray" then
    fail(path, ("'%s': expected the http(s) URL of the Ray dashboard, e.g. http://head:8265 (ray:// client addresses are not used)"):format(v))
  end
  if not (scheme == "http" or scheme == "https") or not auth or auth == "" then
    fail(path, ("'%s': expected the http(s) URL of a Ray dashboard, e.g. http://head:8265"):format(v))
  end
  if auth:find("@", 1, true) then fail(path, M.SECRET_HINT .. " (no credentials in the URL)") end
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

local check_fields   -- forward

local TOLERATION = {
  key = function(path, v)
    if type(v) ~= "string" then expected(path, "a string", v) end
    if v ~= "" then check_label_key(path, v) end
    return v
  end,
  operator = function(path, v)
    if not TOL_OPS[v] then expected(path, "'Equal' or 'Exists'", v) end
    return v
  end,
  value = check_label_value,
  effect = function(path, v)
    if not TOL_EFFECTS[v] then expected(path, "'NoSchedule', 'PreferNoSchedule' or 'NoExecute'", v) end
    return v
  end,
  toleration_seconds = int(0, "a non-negative integer"),
}

local function array_of(path, v, what)
  if type(v) ~= "table" then expected(path, what, v) end
  local n = #v
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      expected(path, what .. " (a list)", v)
    end
  end
  return n
end

local function tolerations(path, v)
  local n = array_of(path, v, "a list of tolerations")
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
  image = image, num_cpus = nonneg_number, num_gpus = nonneg_int, memory = check_memory,
  node_selector = check_labels, tolerations = tolerations, labels = check_labels,
  service_account = dns_subdomain, env = env,
}
local WORKER_GROUP = { name = dns_label, replicas = nonneg_int, min_replicas = nonneg_int, max_replicas = nonneg_int }
for k, f in pairs(GROUP) do WORKER_GROUP[k] = f end

local function head_group(path, v) return check_fields(path, v, GROUP, "a group table") end

local function worker_groups(path, v)
  local n = array_of(path, v, "a list of worker groups")
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

local TYPES = {
  ["local"] = { workers = pos_int, env = env },
  ray = { address = url, ship_host = bool, env = env, token_env = env_name, token_file = str,
          ca_file = str, client_cert = str, client_key = str, verify = bool },
  kuberay = {
    namespace = dns_label, head_group = head_group, worker_groups = worker_groups,
    kubeconfig = str, ttl_seconds = pos_int, token_env = env_name, token_file = str,
  },
}
local REQUIRED = { ray = { "address" } }

local function nearest(k, fields)
  local best, bd
  for name in pairs(fields) do
    local d = distance(k, name)
    if d <= 2 and (not bd or d < bd or (d == bd and name < best)) then best, bd = name, d end
  end
  return best
end

-- Checks a table against fields {name = checker}; unknown keys and
-- plain-string secrets raise. Returns a normalized copy (json object).
function check_fields(path, t, fields, what)
  if type(t) ~= "table" then expected(path, what, t) end
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local out = json.object()
  for _, k in ipairs(keys) do
    local v = t[k]
    local f = fields[k]
    if not f then
      local p = type(k) == "string" and sub(path, k) or path
      if type(k) == "string" and type(v) == "string" and (M.is_secret_key(k) or k == "token" or k == "password") then
        fail(p, M.SECRET_HINT)
      end
      local near = type(k) == "string" and nearest(k, fields)
      fail(path, ("unknown field '%s'%s"):format(tostring(k), near and (" (did you mean '" .. near .. "'?)") or ""))
    end
    out[k] = f(sub(path, k), v)
  end
  return out
end
M.check_fields = check_fields

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
  if type(name) ~= "string" or not pcall(registry.check_name, "cluster", name) then
    return nil, errors.new("not_found", ("cluster %s is not defined"):format(show(name)))
  end
  local rec = registry.read(db, KIND, name)
  if not rec then
    return nil, errors.new("not_found", ("cluster '%s' is not defined in %s"):format(name, db.path))
  end
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
  local out = {}
  for _, n in ipairs(registry.names(db, KIND)) do
    local rec = registry.read(db, KIND, n)
    if rec then
      out[#out + 1] = { name = n, type = rec.type, spec = rec.spec,
                        created_at = rec.created_at, updated_at = rec.updated_at }
    end
  end
  return out
end

-- M.delete(db, name) -> true | raises not_found
function M.delete(db, name)
  registry.check_name("cluster", name)
  return registry.remove(db, KIND, name)
end

-- }=====

return M
