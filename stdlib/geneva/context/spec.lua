-- geneva.context.spec: the pieces cluster and manifest specs are checked
-- with. Messages start with the field path ("clusters.gpu.head_group.memory:
-- ...") and the raised geneva.Error holds it as err.field; unknown fields get
-- a "did you mean" hint; the Kubernetes syntax of quantities, DNS names and
-- labels; field checkers (path, value) -> normalized value | raises.
local json = require "geneva.json"
local errors = require "geneva.errors"
local suggest = require "geneva.suggest"

local M = {}

M.SECRET_HINT = "secrets are references: use token_env/token_file or {from_env=...}"

-- {===== messages

-- M.show(v) -> v as written in a message (strings quoted)
local function show(v)
  local t = type(v)
  if t == "string" then return ("%q"):format(v):gsub("\\\n", "\\n") end
  if t == "table" then return (next(v) == nil) and "an empty table" or "a table" end
  if t == "nil" then return "nothing" end
  return tostring(v)
end
M.show = show

-- M.sub(path, key) -> the path of a field: "a", "a.b", "a[1].b"; `where`
-- prefixes everything.
local function sub(path, key)
  if type(key) == "number" then return path .. "[" .. key .. "]" end
  if path == "" then return key end
  return path .. "." .. key
end
M.sub = sub

-- M.fail(path, msg): raises invalid_argument "path: msg" with err.field
local function fail(path, msg)
  errors.throw("invalid_argument", path ~= "" and (path .. ": " .. msg) or msg, { field = path ~= "" and path or nil })
end
M.fail = fail

-- M.expected(path, what, v): raises "path: expected what, got v"
local function expected(path, what, v)
  fail(path, ("expected %s, got %s"):format(what, show(v)))
end
M.expected = expected

-- Does a key name a secret? One of SECRET_WORDS as a whole word (words are
-- the runs of letters: DB_PASS, AWS_ACCESS_KEY_ID, apiKey, PRIVATE-KEY), or
-- one of SECRET_PARTS anywhere (DBPASSWORD, MYSECRETKEY). Whole words keep
-- KEYBOARD_LAYOUT, TOKENIZERS_PARALLELISM, AUTHOR and BYPASS out. The rule
-- errs on the side of a secret: a false positive (SORT_KEY, SESSION_TTL)
-- costs a {from_env=...} reference, a false negative stores a secret.
-- Certificates are left out: CERT names are paths to public files.
local SECRET_WORDS = {}
for w in ([[pass passwd password passwords passphrase pwd secret secrets token tokens
  key keys apikey credential credentials creds cred auth authorization bearer private
  session sessionid cookie cookies signature jwt dsn]]):gmatch("%a+") do
  SECRET_WORDS[w] = true
end
local SECRET_PARTS = { "passw", "secret", "credential", "apikey", "accesskey", "privatekey",
  "authtoken", "passphrase" }

function M.is_secret_key(k)
  if type(k) ~= "string" then return false end
  local l = k:lower()
  for _, part in ipairs(SECRET_PARTS) do
    if l:find(part, 1, true) then return true end
  end
  for w in k:gsub("(%l)(%u)", "%1_%2"):lower():gmatch("%a+") do   -- camelCase too
    if SECRET_WORDS[w] then return true end
  end
  return false
end

-- Does a value carry a password in a URL (scheme://user:password@host)?
function M.has_url_password(v)
  return type(v) == "string" and v:find("^%a[%w+.%-]*://[^/@:]*:[^/@]+@") ~= nil
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

-- M.memory(path, v): a Kubernetes quantity or a positive number of bytes;
-- the sub-unit suffixes m, u and n are refused (always a typo for Mi).
function M.memory(path, v)
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

-- M.label_key(path, k): raises unless k is a label key ([prefix/]name)
function M.label_key(path, k)
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

function M.label_value(path, v)
  if type(v) ~= "string" then expected(path, "a string", v) end
  if v ~= "" and not is_label_name(v) then
    fail(path, ("bad label value '%s' (at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit)"):format(v))
  end
  return v
end

-- M.labels(path, t) -> json object of label key = value
function M.labels(path, t)
  if type(t) ~= "table" then expected(path, "a table of key = value", t) end
  local out = json.object()
  for k, v in pairs(t) do
    local p = sub(path, tostring(k))
    M.label_key(p, k)
    out[k] = M.label_value(p, v)
  end
  return out
end

function M.dns_label(path, v)
  if not is_dns_label(v) then
    expected(path, "a DNS-1123 label (lowercase letters, digits and '-', at most 63)", v)
  end
  return v
end

function M.dns_subdomain(path, v)
  if not is_dns_subdomain(v) then
    expected(path, "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')", v)
  end
  return v
end

function M.image(path, v)
  if type(v) ~= "string" or v == "" or v:find("%s") then expected(path, "a container image reference", v) end
  return v
end

-- }=====

-- {===== field checkers: (path, value) -> normalized value | raises

function M.str(path, v)
  if type(v) ~= "string" or v == "" then expected(path, "a non-empty string", v) end
  return v
end

function M.bool(path, v)
  if type(v) ~= "boolean" then expected(path, "true or false", v) end
  return v
end

-- M.int(min, what) -> a checker of integers >= min (integral floats pass)
function M.int(min, what)
  return function(path, v)
    if math.type(v) == "float" and v == math.floor(v) then v = math.tointeger(v) or v end
    if math.type(v) ~= "integer" or v < min then expected(path, what, v) end
    return v
  end
end
M.pos_int, M.nonneg_int = M.int(1, "a positive integer"), M.int(0, "a non-negative integer")

function M.nonneg_number(path, v)
  if type(v) ~= "number" or v ~= v or v < 0 or v == math.huge then expected(path, "a non-negative number", v) end
  return v
end

function M.env_name(path, v)
  if type(v) ~= "string" or not v:match("^[%a_][%w_]*$") then
    expected(path, "the name of an environment variable", v)
  end
  return v
end

-- M.array_of(path, v, what) -> #v | raises unless v is a list
function M.array_of(path, v, what)
  if type(v) ~= "table" then expected(path, what, v) end
  local n = #v
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      expected(path, what .. " (a list)", v)
    end
  end
  return n
end

-- M.check_fields(path, t, fields, what) -> normalized copy (json object)
-- Checks a table against fields {name = checker}; unknown keys (with a
-- "did you mean") and plain-string secrets raise.
function M.check_fields(path, t, fields, what)
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
      fail(path, ("unknown field '%s'%s"):format(tostring(k), suggest.hint(k, fields)))
    end
    out[k] = f(sub(path, k), v)
  end
  return out
end

-- }=====

return M
