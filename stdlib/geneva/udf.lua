--- UDFs: the functions that compute a virtual column, one row (or one
-- batch) at a time, on workers.
--
-- Code travels to workers as stripped bytecode or as a module reference
-- (`module=`, `function=`) that the worker `require`s (ship the module with
-- a manifest: @{geneva.db.Db:define_manifest}). Bytecode runs in a fresh
-- environment holding the standard globals and `geneva`; any other global
-- raises a `udf_error` naming it. Upvalues other than `_ENV` must be loaded
-- modules (`local json = require "geneva.json"`): the worker requires them
-- again. Locally, @{Udf:call} loads the code the same way, so it behaves as a
-- worker does.
--
-- NULL is `nil` in scalar arguments and results, and `geneva.null` inside
-- batch arrays.
--
-- `memory = bytes` is enforced wherever the UDF runs in a geneva host
-- (workers, @{Udf:call}): its calls may grow the Lua heap by at most that
-- much; past it the row fails with a `udf_error` naming the limit.
-- @module geneva.udf

-- The worker's contract (geneva.backfill.worker), not public:
--   udf.from_spec(spec) -> Udf; u:executor([column | {column=, on_error=}])
--   -> ex; ex:run(batch) -> results, where
--   batch   = { n = N, rowids = {r1..rN} (optional, default 1..N),
--               columns = { name = {v1..vN}, ... } }     NULL = geneva.null
--   results = { n = N, values = {v1..vN},                NULL = geneva.null
--               failed = { {index = i, rowid = r, error = Error}, ... } }
-- values never has holes: every NULL (returned nil, or a failed row with
-- on_error = "null") is geneva.null. With on_error = "fail" the first
-- failing row raises its udf_error (fields column, rowid, [value], [cause],
-- [traceback], [timeout]) and there are no results. Batch UDFs get the
-- column arrays themselves, with .n set (the executor writes n into them).
-- A dumped function sees only the worker's globals, hence the environment
-- above.
local errors = require "geneva.errors"
local types = require "geneva.store.types"
local json = require "geneva.json"
local fs = require "geneva.fs"

local NULL = json.null
local udf = {}

local Udf = {}
Udf.__index = Udf
Udf.__name = "geneva.Udf"
-- "geneva.Udf words -> int64 (f918943da012)": its name, type and version
function Udf.__tostring(u)
  return ("geneva.Udf %s -> %s (%s)"):format(u.name, u.data_type, u.version:sub(1, 12))
end
udf.Udf = Udf

local Executor = {}
Executor.__index = Executor
Executor.__name = "geneva.udf.Executor"
udf.Executor = Executor

local function bad(field, msg, ...)
  if select("#", ...) > 0 then msg = msg:format(...) end
  error(errors.new("invalid_argument", ("geneva.udf: %s: %s"):format(field, msg),
    { field = field }), 3)
end

-- {====== base64 (bytecode in the spec)
local ALPHA = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local ENC, DEC = {}, {}
for i = 1, 64 do
  local c = ALPHA:sub(i, i)
  ENC[i - 1] = c
  DEC[c:byte()] = i - 1
end

local function b64encode(s)
  local out, n = {}, #s
  for i = 1, n, 3 do
    local a, b, c = s:byte(i, i + 2)
    local x = (a << 16) | ((b or 0) << 8) | (c or 0)
    out[#out + 1] = ENC[x >> 18] .. ENC[(x >> 12) & 63]
      .. (b and ENC[(x >> 6) & 63] or "=") .. (c and ENC[x & 63] or "=")
  end
  return table.concat(out)
end

local function b64decode(s)
  if #s % 4 ~= 0 or s:find("[^%w%+/=]") then return nil end
  local out = {}
  for i = 1, #s, 4 do
    local a, b, c, d = s:byte(i, i + 3)
    local va, vb, vc, vd = DEC[a], DEC[b], DEC[c], DEC[d]
    if not (va and vb) then return nil end
    local x = (va << 18) | (vb << 12) | ((vc or 0) << 6) | (vd or 0)
    if vc then
      if vd then out[#out + 1] = string.char(x >> 16, (x >> 8) & 255, x & 255)
      else out[#out + 1] = string.char(x >> 16, (x >> 8) & 255) end
    else
      out[#out + 1] = string.char(x >> 16)
    end
  end
  return table.concat(out)
end
udf._b64encode, udf._b64decode = b64encode, b64decode
-- }======

-- {====== the worker environment for bytecode
local STD_GLOBALS = {
  "assert", "collectgarbage", "dofile", "error", "getmetatable", "ipairs",
  "load", "loadfile", "next", "pairs", "pcall", "print", "rawequal", "rawget",
  "rawlen", "rawset", "require", "select", "setmetatable", "tonumber",
  "tostring", "type", "xpcall", "warn", "_VERSION", "coroutine", "debug", "io",
  "math", "os", "package", "string", "table", "utf8",
}

-- A fresh global table for one Udf: standard globals and `geneva`; reading
-- any other name raises a udf_error naming it. `geneva` is the UDF's own
-- require of the public module, on first use: user code depends on it, this
-- module does not (no geneva -> udf -> geneva cycle).
local function worker_env(name)
  local env = {}
  for _, k in ipairs(STD_GLOBALS) do env[k] = rawget(_G, k) end
  env._G = env
  return setmetatable(env, { __index = function(t, k)
    if k == "geneva" then
      local g = t.require("geneva")
      rawset(t, k, g)
      return g
    end
    error(errors.new("udf_error", ("UDF '%s' used global '%s', which does not exist on the worker "
      .. "(define it in a module and use module=...)"):format(name, tostring(k)), { global = k }), 2)
  end })
end
-- }======

-- {====== code: functions, bytecode, modules
-- The name under which v is in package.loaded (the first in sorted order),
-- or nil: such an upvalue is re-required on the worker.
local function loaded_name(v)
  local tv = type(v)
  if tv ~= "table" and tv ~= "function" and tv ~= "userdata" then return nil end
  local best
  for k, m in pairs(package.loaded) do
    if m == v and type(k) == "string" and (best == nil or k < best) then best = k end
  end
  return best
end

-- Checks that f can travel as bytecode; returns its upvalue roles: "_ENV"
-- (the worker environment), "_SELF" (f itself) or a module name (`local json = require
-- "geneva.json"` captured by f is required again on the worker).
local function dump_roles(field, f)
  local info = debug.getinfo(f, "Su")
  if info.what == "C" then
    bad(field, "a C function cannot be shipped to workers; give module= and function= "
      .. "(e.g. module = \"string\", [\"function\"] = \"len\")")
  end
  local roles = {}
  for i = 1, info.nups do
    local uname, uval = debug.getupvalue(f, i)
    if uname == "_ENV" or ((uname == "" or uname == "?" or uname == "(no name)") and uval == _G) then
      roles[i] = "_ENV"
    elseif uval == f then
      roles[i] = "_SELF"           -- a recursive local function
    else
      roles[i] = loaded_name(uval)
      if not roles[i] then
        bad(field, "the function captures upvalue '%s' (a local variable from outside it, not a "
          .. "module), which cannot travel to workers; define the function in a module and use "
          .. "module= and function= (or compute the value in setup)", uname)
      end
    end
  end
  return roles
end

-- Parameter names of f (taken before dumping: stripped bytecode has none).
local function param_names(f)
  local info = debug.getinfo(f, "u")
  local names = {}
  for i = 1, info.nparams do
    local n = debug.getlocal(f, i)
    if not n or n:sub(1, 1) == "(" then return nil, info end
    names[i] = n
  end
  return names, info
end

local read_file = fs.read   -- bytes | nil, msg, code

-- Identity of a module's code for the version hash: the sha256 of its source
-- file on package.path (or binary on package.cpath); a module with no file
-- (built in, preloaded) is identified by its name only.
local function module_identity(modname, field)
  local path = package.searchpath(modname, package.path)
    or package.searchpath(modname, package.cpath)
  if path then
    local src = read_file(path)
    if src then return { source_sha256 = fs.sha256(src) } end
  end
  if package.loaded[modname] ~= nil or package.preload[modname] ~= nil then
    return { builtin = true }
  end
  error(errors.new("not_found", ("geneva.udf: %s: module '%s' not found on package.path "
    .. "(its source feeds the UDF version)"):format(field, modname), { field = field }), 3)
end

-- require's message for a module it cannot find lists every file it
-- tried, a dozen lines per module: one line says what a user acts on.
local function short_require_error(msg)
  msg = msg:gsub("\n\tno [^\n]*", "")
  return (msg:gsub("(module '[^']*' not found):", "%1 on package.path"))
end

-- require(modname)[fname] (fname may be dotted) -> function; raises
-- not_found (the module or the function is not there) / udf_error (loading
-- it failed).
local function resolve_module(modname, fname, what)
  local ok, m = pcall(require, modname)
  if not ok then
    local msg = short_require_error(tostring(errors.is(m) and m.message or m))
    if msg:find("^module '" .. modname:gsub("%p", "%%%0") .. "' not found") then
      error(errors.new("not_found", ("%s: module '%s' not found on package.path"):format(what, modname),
        { field = "module" }), 0)
    end
    error(errors.new("udf_error", ("%s: cannot load module '%s': %s"):format(what, modname, msg)), 0)
  end
  local f = m
  for part in fname:gmatch("[^.]+") do
    f = type(f) == "table" and f[part] or nil
  end
  if type(f) ~= "function" and not (type(f) == "table" and getmetatable(f) and getmetatable(f).__call) then
    error(errors.new("not_found", ("%s: module '%s' has no function '%s'"):format(what, modname, fname)), 0)
  end
  return f
end

-- Bytecode as hashed for the version: string.dump keeps linedefined and
-- lastlinedefined even when stripped, and the top function's upvalue
-- descriptors depend on where it was nested (load resets its only upvalue,
-- _ENV, anyway). Both are zeroed so a UDF moved within its script, or typed
-- at another nesting level, keeps its version. Walks the Lua 5.4 dump
-- format (ldump.c); anything unexpected falls back to the raw bytes.
local function canonical_bytecode(s)
  if s:sub(1, 4) ~= "\27Lua" or s:byte(5) ~= 0x54 or s:byte(6) ~= 0 then return s end
  local isz, intsz, numsz = s:byte(13), s:byte(14), s:byte(15)
  local out, seg, p = {}, 1, 33      -- 31-byte header, main upvalue count
  local function size()
    local x, b = 0
    repeat
      b = s:byte(p)
      if not b then error("truncated", 0) end
      p = p + 1
      x = (x << 7) | (b & 0x7f)
    until b >= 0x80
    return x
  end
  local function str()
    local n = size()
    if n > 0 then p = p + n - 1 end
  end
  local function replace(from, bytes)  -- s[from, p) -> bytes
    out[#out + 1] = s:sub(seg, from - 1)
    out[#out + 1] = bytes
    seg = p
  end
  local function func(top)
    str()                                                  -- source
    local at = p
    size(); size()                                         -- line(last)defined
    replace(at, "\x80\x80")
    p = p + 3                                              -- params, vararg, stack
    local ncode = size()                                   -- code
    p = p + isz * ncode
    for _ = 1, size() do                                   -- constants
      local t = s:byte(p)
      p = p + 1
      if t == 3 then p = p + intsz
      elseif t == 19 then p = p + numsz
      elseif t == 4 or t == 20 then str()
      elseif t ~= 0 and t ~= 1 and t ~= 17 then error("constant type " .. tostring(t), 0) end
    end
    local nup = size()                                     -- upvalues
    if top then
      at = p
      p = p + 3 * nup
      local z = {}
      for i = 0, nup - 1 do z[#z + 1] = "\0\0" .. s:sub(at + 3 * i + 2, at + 3 * i + 2) end
      replace(at, table.concat(z))
    else
      p = p + 3 * nup
    end
    for _ = 1, size() do func(false) end                   -- protos
    local nline = size()                                   -- lineinfo
    p = p + nline
    for _ = 1, size() do size(); size() end                -- abslineinfo
    for _ = 1, size() do str(); size(); size() end         -- locvars
    for _ = 1, size() do str() end                         -- upvalue names
  end
  local ok = pcall(func, true)
  if not ok or p ~= #s + 1 then return s end
  out[#out + 1] = s:sub(seg)
  return table.concat(out)
end
udf._canonical_bytecode = canonical_bytecode

local MODNAME = "^[%w_][%w_%-%.]*$"
-- }======

-- {====== validation shared by udf.new and udf.from_spec
local function opt(v) if v == NULL then return nil end return v end

local function check_common(u, o)
  local dt, why = types.parse(opt(o.data_type))
  if not dt then bad("data_type", o.data_type == nil and "required" or why) end
  u.data_type, u.type = dt.name, dt

  local batch = opt(o.batch)
  if batch == nil then batch = false end
  if type(batch) ~= "boolean" then bad("batch", "expected a boolean, got %s", type(batch)) end
  u.batch = batch

  local on_error = opt(o.on_error) or "fail"
  if on_error ~= "fail" and on_error ~= "null" then
    bad("on_error", "expected \"fail\" or \"null\", got %s", types.describe(on_error))
  end
  u.on_error = on_error

  local retries = opt(o.retries) or 0
  if math.type(retries) == "float" then retries = math.tointeger(retries) or retries end
  if math.type(retries) ~= "integer" or retries < 0 then
    bad("retries", "expected an integer >= 0, got %s", types.describe(retries))
  end
  u.retries = retries

  local timeout = opt(o.timeout)
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout > 0) or timeout == math.huge) then
    bad("timeout", "expected seconds > 0, got %s", types.describe(timeout))
  end
  u.timeout = timeout

  local num_cpus = opt(o.num_cpus) or 1
  if type(num_cpus) ~= "number" or not (num_cpus > 0) then
    bad("num_cpus", "expected a number > 0, got %s", types.describe(num_cpus))
  end
  u.num_cpus = num_cpus
  local num_gpus = opt(o.num_gpus) or 0
  if type(num_gpus) ~= "number" or not (num_gpus >= 0) then
    bad("num_gpus", "expected a number >= 0, got %s", types.describe(num_gpus))
  end
  u.num_gpus = num_gpus
  local memory = opt(o.memory)
  if memory ~= nil then
    if math.type(memory) == "float" then memory = math.tointeger(memory) or memory end
    if math.type(memory) ~= "integer" or memory <= 0 then
      bad("memory", "expected bytes (an integer > 0), got %s", types.describe(memory))
    end
  end
  u.memory = memory

  local name = opt(o.name)
  if name ~= nil and (type(name) ~= "string" or name == "") then
    bad("name", "expected a non-empty string, got %s", types.describe(name))
  end
  u.name = name
end

local function check_columns(v)
  if type(v) ~= "table" then bad("input_columns", "expected an array of column names, got %s", type(v)) end
  local n, seen, out = 0, {}, {}
  for _ in pairs(v) do n = n + 1 end
  if n ~= #v then bad("input_columns", "expected an array (no holes, no named keys)") end
  for i, c in ipairs(v) do
    if type(c) ~= "string" or c == "" then
      bad("input_columns", "entry %d is not a column name: %s", i, types.describe(c))
    end
    if seen[c] then bad("input_columns", "column '%s' appears twice", c) end
    seen[c] = true
    out[i] = c
  end
  return out
end

local function check_modname(field, m)
  if type(m) ~= "string" or not m:match(MODNAME) then
    bad(field, "expected a module name, got %s", types.describe(m))
  end
end
-- }======

-- What identifies a function in the version: its bytecode (with the roles
-- of its upvalues), or its module and function name (field names the part
-- in messages: "module", "setup").
local function code_identity(code, upvalues, modname, fname, field)
  if code then
    return { bytecode_sha256 = fs.sha256(canonical_bytecode(code)),
             upvalues = json.array({ table.unpack(upvalues) }) }
  end
  local id = module_identity(modname, field)
  id.module, id["function"] = modname, fname
  return id
end

-- The version: sha256 over the canonical JSON of what decides the values.
local function compute_version(u)
  local code = code_identity(u._code, u._upvalues, u.module, u["function"], "module")
  local s = u._setup
  local setup = s and code_identity(s.code, s.upvalues, s.module, s["function"], "setup") or NULL
  return fs.sha256(json.canonical({
    format = 1, code = code, setup = setup, data_type = u.data_type,
    input_columns = json.array({ table.unpack(u.input_columns) }), batch = u.batch,
  }))
end

local OPTIONS = {
  fn = true, data_type = true, input_columns = true, batch = true, setup = true,
  num_cpus = true, num_gpus = true, memory = true, on_error = true, retries = true,
  timeout = true, name = true, module = true, ["function"] = true,
}

--- Makes a UDF; `geneva.udf{...}` is the same call.
--
-- **Scalar** (the default): `fn` gets one row's input values (`nil` for
-- NULL) and returns the value, or `nil` for NULL. **Batch** (`batch =
-- true`): `fn` gets one array per input column, each with `.n` and
-- `geneva.null` for NULL, and returns an array of exactly `n` values.
-- **Stateful** (`setup`): `setup()` runs once per worker (and once per Udf
-- object for @{Udf:call}); its result is passed as `fn`'s first argument,
-- before the columns: load a model, open a connection, build a lookup table.
--
-- The UDF's version (`u.version`, a SHA-256) covers its code (and setup's),
-- `data_type`, `input_columns` and `batch`: a column whose UDF changes is
-- recomputed by the next backfill; `on_error`, `retries`, `timeout` and the
-- resources do not change it.
-- @tab opts the options below
-- @tparam function opts.fn the function; its parameter names are the input
-- columns unless `input_columns` says otherwise (required unless `module`
-- and `function` are given)
-- @string opts.data_type `"int64"`, `"float64"`, `"string"`, `"bool"`,
-- `"blob"` or `"float32[N]"` (required)
-- @tparam[opt] {string,...} opts.input_columns the columns passed, in order
-- @bool[opt=false] opts.batch pass column arrays instead of one row
-- @tparam[opt] function|string|table opts.setup a function, a function name in
-- `module`, or `{module=, function=}`; its result is the state
-- @string[opt="fail"] opts.on_error `"fail"`: the first failing row fails the
-- backfill; `"null"`: failing rows become NULL and the job records them
-- (`rows.failed_rowids`), and the next backfill tries them again
-- @int[opt=0] opts.retries more attempts for a row that raised (a batch
-- is retried row by row)
-- @number[opt] opts.timeout seconds one row (one call of a batch UDF) may
-- run; past it the row fails with a `udf_error` that has `timeout = true`
-- @number[opt=1] opts.num_cpus CPUs a worker slot needs (Ray scheduling)
-- @number[opt=0] opts.num_gpus GPUs a worker slot needs
-- @int[opt] opts.memory bytes a worker slot needs; also the most the UDF's
-- calls may grow the Lua heap (a `udf_error` past it)
-- @string[opt] opts.name shown in errors, logs and job records (default:
-- `file:line` of `fn`, or `module.function`)
-- @string[opt] opts.module a module to `require` on the worker, with
-- `function`, the name of the function in it
-- @treturn Udf
-- @raise `invalid_argument` naming the field (and an unknown option, with
-- "did you mean"); `not_found` when `module` cannot be found on `package.path`
-- @usage -- scalar
-- local words = geneva.udf { data_type = "int64",
--   fn = function(content) return content and select(2, content:gsub("%S+", "")) end }
--
-- -- batch: one array per column, an array of n values back
-- local lens = geneva.udf { data_type = "int64", batch = true, input_columns = { "content" },
--   fn = function(content)
--     local out = {}
--     for i = 1, content.n do out[i] = content[i] ~= geneva.null and #content[i] or geneva.null end
--     return out
--   end }
--
-- -- stateful: setup runs once per worker; bad rows become NULL after 2 retries
-- local score = geneva.udf { data_type = "float64", on_error = "null", retries = 2, timeout = 5,
--   setup = function() return { weights = { lorem = 0.5, ipsum = 2 } } end,
--   fn = function(model, content)
--     local s = 0
--     for w in content:gmatch("%S+") do s = s + (model.weights[w] or 0) end
--     return s
--   end }
--
-- -- from a module shipped with a manifest
-- local chars = geneva.udf { module = "my_udfs", ["function"] = "chars", data_type = "int64" }
function udf.new(opts)
  if type(opts) ~= "table" then bad("options", "expected a table, got %s", type(opts)) end
  for k in pairs(opts) do
    if not OPTIONS[k] then bad(tostring(k), "unknown option" .. require("geneva.suggest").unknown(k, OPTIONS)) end
  end
  local u = setmetatable({}, Udf)
  check_common(u, opts)

  -- setup: a function, a function name in module=, or {module=, function=}
  local s = opts.setup
  if s ~= nil then
    if type(s) == "function" then
      u._setup = { upvalues = dump_roles("setup", s), code = string.dump(s, true) }
    elseif type(s) == "string" then
      if opts.module == nil then bad("setup", "a function name needs module=") end
      u._setup = { module = opts.module, ["function"] = s }
    elseif type(s) == "table" then
      check_modname("setup", s.module)
      if type(s["function"]) ~= "string" then bad("setup", "expected {module=, function=}") end
      u._setup = { module = s.module, ["function"] = s["function"] }
    else
      bad("setup", "expected a function or a module reference, got %s", type(s))
    end
  end

  local fn, cols = opts.fn, opts.input_columns
  if fn ~= nil and type(fn) ~= "function" then bad("fn", "expected a function, got %s", type(fn)) end
  if opts.module ~= nil or opts["function"] ~= nil then
    check_modname("module", opts.module)
    local fname = opts["function"]
    if type(fname) ~= "string" or not fname:match("^[%a_][%w_%.]*$") then
      bad("function", "expected a function name, got %s", types.describe(fname))
    end
    u.module, u["function"] = opts.module, fname
    u._fn = fn                       -- the local version, if given
  elseif fn == nil then
    bad("fn", "required (or module= and function=)")
  else
    u._upvalues = dump_roles("fn", fn)
    u._code = string.dump(fn, true)
  end
  u.name = u.name or (u.module and (u.module .. "." .. u["function"]))
    or (function()
      local info = debug.getinfo(fn, "S")
      return (info.short_src:match("[^/]*$") or "?") .. ":" .. info.linedefined
    end)()

  -- input_columns: explicit, or fn's parameter names (minus the state)
  local f = fn
  if cols == nil then
    if f == nil then
      local ok, r = pcall(resolve_module, u.module, u["function"], "geneva.udf")
      if not ok and errors.is(r) and r.code == "not_found" then error(r, 0) end   -- says it all
      if not ok then
        bad("input_columns", "not given, and the function cannot be loaded here to read its "
          .. "parameter names (%s)", tostring(errors.is(r) and r.message or r))
      end
      f = r
    end
    if type(f) ~= "function" then bad("input_columns", "required for a callable table") end
    if debug.getinfo(f, "S").what == "C" then
      bad("input_columns", "required for a C function (it has no parameter names)")
    end
    local names, info = param_names(f)
    if info.isvararg then bad("input_columns", "required for a vararg function") end
    if not names then bad("input_columns", "required (fn has no parameter names: stripped code)") end
    if u._setup then table.remove(names, 1) end
    cols = names
  else
    cols = check_columns(cols)
    if f and debug.getinfo(f, "S").what == "Lua" then
      local info = debug.getinfo(f, "u")
      local avail = info.nparams - (u._setup and 1 or 0)
      if not info.isvararg and #cols > avail then
        bad("input_columns", "%d columns but the function takes %d argument(s)%s", #cols,
          avail, u._setup and " after the state" or "")
      end
    end
  end
  u.input_columns = cols
  u.version = compute_version(u)
  return u
end

-- u:spec() -> a fresh plain table, JSON-serializable (json.encode), that
-- udf.from_spec turns back into an equivalent Udf. Absent options are absent.
function Udf:spec()
  local s = {
    format = 1, data_type = self.data_type,
    input_columns = json.array({ table.unpack(self.input_columns) }),
    batch = self.batch, on_error = self.on_error, retries = self.retries,
    timeout = self.timeout, num_cpus = self.num_cpus, num_gpus = self.num_gpus,
    memory = self.memory, name = self.name,
  }
  if self._code then s.code, s.upvalues = b64encode(self._code), json.array({ table.unpack(self._upvalues) })
  else s.module, s["function"] = self.module, self["function"] end
  local st = self._setup
  if st then
    s.setup = st.code and { code = b64encode(st.code), upvalues = json.array({ table.unpack(st.upvalues) }) }
      or { module = st.module, ["function"] = st["function"] }
  end
  return s
end

local function spec_roles(field, r)
  if r == nil then return {} end
  if type(r) ~= "table" then bad(field, "expected an array of upvalue roles") end
  for i = 1, #r do
    if type(r[i]) ~= "string" or not (r[i] == "_ENV" or r[i] == "_SELF" or r[i]:match(MODNAME)) then
      bad(field, "entry %d is not \"_ENV\" or a module name", i)
    end
  end
  return { table.unpack(r) }
end

local function spec_code(field, b64)
  if type(b64) ~= "string" then bad(field, "expected base64 bytecode, got %s", type(b64)) end
  local bytes = b64decode(b64)
  if not bytes or bytes:sub(1, 4) ~= "\27Lua" then bad(field, "not base64 Lua bytecode") end
  return bytes
end

-- udf.from_spec(spec) -> Udf: the inverse of u:spec() (accepts json.null for
-- absent fields). Raises invalid_argument for a malformed spec; not_found
-- when a module UDF's module is not on this process's package.path. The
-- version is recomputed here (for module UDFs from this process's files).
function udf.from_spec(spec)
  if type(spec) ~= "table" then bad("spec", "expected a table, got %s", type(spec)) end
  local format = opt(spec.format) or 1
  if format ~= 1 then bad("format", "unsupported spec format %s", tostring(format)) end
  local u = setmetatable({}, Udf)
  check_common(u, spec)
  local code = opt(spec.code)
  if code ~= nil then
    u._code = spec_code("code", code)
    u._upvalues = spec_roles("upvalues", opt(spec.upvalues))
  else
    check_modname("module", opt(spec.module))
    if type(opt(spec["function"])) ~= "string" then bad("function", "expected a function name") end
    u.module, u["function"] = spec.module, spec["function"]
  end
  local st = opt(spec.setup)
  if st ~= nil then
    if type(st) ~= "table" then bad("setup", "expected a table") end
    if opt(st.code) ~= nil then
      u._setup = { code = spec_code("setup", st.code), upvalues = spec_roles("setup", opt(st.upvalues)) }
    else
      check_modname("setup", opt(st.module))
      if type(opt(st["function"])) ~= "string" then bad("setup", "expected {module=, function=}") end
      u._setup = { module = st.module, ["function"] = st["function"] }
    end
  end
  u.name = u.name or u.module and (u.module .. "." .. u["function"]) or "udf"
  u.input_columns = check_columns(opt(spec.input_columns))
  u.version = compute_version(u)
  return u
end

-- {====== execution

-- u:_functions() -> fn, setup_fn|nil (cached): bytecode loaded into the
-- worker environment, or module functions through require. Raises udf_error
-- / not_found.
function Udf:_functions()
  if self._loaded_fn then return self._loaded_fn, self._loaded_setup end
  local env
  local function from_code(bytes, roles, what)
    env = env or worker_env(self.name)
    local f, err = load(bytes, "=udf:" .. self.name .. what, "b", env)
    if not f then
      error(errors.new("udf_error", ("UDF '%s': cannot load its code: %s"):format(self.name, err)), 0)
    end
    for i, role in ipairs(roles) do
      if role == "_ENV" then debug.setupvalue(f, i, env)
      elseif role == "_SELF" then debug.setupvalue(f, i, f)
      else
        local ok, m = pcall(require, role)
        if not ok then
          error(errors.new("not_found", ("UDF '%s': cannot load module '%s' (an upvalue of its code): %s")
            :format(self.name, role, short_require_error(tostring(errors.is(m) and m.message or m)))), 0)
        end
        debug.setupvalue(f, i, m)
      end
    end
    return f
  end
  local fn
  if self._code then fn = from_code(self._code, self._upvalues, "")
  else fn = self._fn or resolve_module(self.module, self["function"], "UDF '" .. self.name .. "'") end
  local setup
  local s = self._setup
  if s then
    if s.code then setup = from_code(s.code, s.upvalues, ":setup")
    else setup = resolve_module(s.module, s["function"], "setup of UDF '" .. self.name .. "'") end
  end
  self._loaded_fn, self._loaded_setup = fn, setup
  return fn, setup
end

local FAST = {
  int64 = 'mtype(v) == "integer"',
  float64 = 'mtype(v) == "float"',
  string = 'type(v) == "string"',
  blob = 'type(v) == "string"',
  bool = "v == true or v == false",
  vector = "vec_ok(v)",
}

-- Generated per executor: the scalar row loop specialized for the arity, the
-- type check and the state argument, a single call (slow path, batch UDFs),
-- the xpcall message handler and, for timeouts, the count hook; they share
-- upvalues. Timeouts cost no clock read per row: the loop only marks the
-- running row (`cur`, 0 outside the UDF); the hook, every 1000 instructions,
-- starts a row's clock the first time it sees the row and raises once the
-- row has run longer than the timeout. It never raises outside the UDF nor
-- in this chunk's functions; once expired it fires on every instruction, so
-- a pcall inside the UDF cannot swallow the timeout.
local function chunk_source(nargs, kind, stateful, timed)
  local L = {
    "local NULL, mtype, type, vec_ok, clock, TIMEOUT_S, TIMEOUT, traceback, sethook, getinfo, error = ...",
    "local cur, seen, started, expired = 0, nil, 0, false",
    "local hook",
    "local function loop(fn, state, C, values, from, n)",
  }
  local args = {}
  for k = 1, nargs do
    L[#L + 1] = ("  local c%d = C[%d]"):format(k, k)
    args[#args + 1] = "a" .. k
  end
  if timed then L[#L + 1] = "  seen = nil" end
  L[#L + 1] = "  for i = from, n do"
  for k = 1, nargs do
    L[#L + 1] = ("    local a%d = c%d[i] if a%d == NULL then a%d = nil end"):format(k, k, k, k)
  end
  if stateful then table.insert(args, 1, "state") end
  if timed then L[#L + 1] = "    cur = i" end
  L[#L + 1] = "    local v = fn(" .. table.concat(args, ", ") .. ")"
  if timed then L[#L + 1] = "    cur = 0" end
  L[#L + 1] = "    if v == nil then values[i] = NULL elseif " .. FAST[kind]
    .. " then values[i] = v else return i, v end"
  L[#L + 1] = "  end"
  L[#L + 1] = "  return n + 1"
  L[#L + 1] = "end"
  L[#L + 1] = "local function call(fn, ...)"  -- returns the first result
  if timed then
    L[#L + 1] = "  seen = nil; cur = -1"
    L[#L + 1] = "  local v = fn(...)"
    L[#L + 1] = "  cur = 0"
    L[#L + 1] = "  return v"
  else
    L[#L + 1] = "  return (fn(...))"
  end
  L[#L + 1] = "end"
  L[#L + 1] = [[
local function handler(e)
  cur, expired = 0, false
  if e == TIMEOUT or e == "interrupted" then return e end
  return { err = e, traceback = traceback("", 2):gsub("^\n", "") }
end
local ours = { [loop] = true, [call] = true, [handler] = true }
hook = function()
  if cur == 0 then return end
  if not expired then
    if cur ~= seen then seen, started = cur, clock() return end
    if clock() - started <= TIMEOUT_S then return end
  end
  if ours[getinfo(2, "f").func] then return end
  expired = true
  sethook(hook, "", 1)
  error(TIMEOUT, 0)
end
return loop, call, handler, hook]]
  return table.concat(L, "\n")
end

local TIMEOUT = setmetatable({}, { __tostring = function() return "timeout" end })
local sources = {}

-- {====== memory = bytes: the host allocator's limit around the UDF's calls
-- (host/memory.c). While the UDF (or its setup) runs, the Lua heap may grow
-- by at most `memory` bytes over what it held when the call began (what
-- Lua cannot collect counts: an emergency collection runs first); an
-- allocation past that is a Lua memory error, which comes back here as
-- MEMORY and becomes the row's udf_error (on_error and retries apply). In a
-- state the host did not make (no counting allocator) nothing is enforced.
local MEMORY = setmetatable({}, { __tostring = function() return "memory" end })
local host_limited_xpcall
do
  local ok, core = pcall(require, "geneva.host.core")
  if ok and core.memory and core.memory() then host_limited_xpcall = core.limited_xpcall end
end

-- ok, results... | false, err: a memory error our limit caused becomes MEMORY
local function name_memory_error(ok, ...)
  if ok then return ok, ... end
  local e, over = ...
  return false, over and MEMORY or e
end

-- xpcall(f, handler, ...) with the heap held to its size now + limit (an
-- outer limit, a UDF called by a UDF, stays when it is lower): the host's
-- core.limited_xpcall arms and disarms it in C, around the protected call
local function limited_xpcall(limit, f, handler, ...)
  return name_memory_error(host_limited_xpcall(limit, f, handler, ...))
end

local function mib(n) return ("%.4g MiB"):format(n / 1048576) end
-- }======

-- u:executor([column | {column=, on_error=}]) -> Executor. column names the output
-- column in errors (default: the UDF's name); on_error overrides the UDF's.
-- Loads the code and runs setup once (its result is the state passed as
-- the first argument). Raises udf_error when setup fails, not_found when a
-- module cannot be loaded.
function Udf:executor(opts)
  if type(opts) == "string" then opts = { column = opts } end
  opts = opts or {}
  if type(opts) ~= "table" then bad("executor", "expected a column name or an options table") end
  local on_error = opts.on_error or self.on_error
  if on_error ~= "fail" and on_error ~= "null" then bad("on_error", "expected \"fail\" or \"null\"") end
  local fn, setup = self:_functions()
  local ex = setmetatable({
    udf = self, column = opts.column or self.name, on_error = on_error,
    fn = fn, stateful = setup ~= nil, nargs = #self.input_columns,
  }, Executor)
  local t = self.type
  local key = ("%d:%s:%s:%s"):format(ex.nargs, t.kind, tostring(ex.stateful), tostring(self.timeout ~= nil))
  local src = sources[key]
  if not src then
    src = chunk_source(ex.nargs, t.kind, ex.stateful, self.timeout ~= nil)
    sources[key] = src
  end
  local dim = t.dim
  local function vec_ok(v)
    if type(v) ~= "table" or #v ~= dim then return false end
    for i = 1, dim do if type(v[i]) ~= "number" then return false end end
    return true
  end
  local gen = assert(load(src, "=geneva.udf.loop", "t"))
  ex.loop, ex.call, ex.handler, ex.hook = gen(NULL, math.type, type, vec_ok,
    require("geneva.time").monotonic, self.timeout, TIMEOUT, debug.traceback, debug.sethook,
    debug.getinfo, error)
  ex.memory = host_limited_xpcall and self.memory or nil
  if setup then
    local ok, st = ex:_xpcall(setup)
    if not ok then
      if st == "interrupted" then error(st, 0) end
      if st == MEMORY then
        error(errors.new("udf_error", ("setup of UDF '%s' went over its memory limit (memory = %d bytes, %s)")
          :format(self.name, self.memory, mib(self.memory)), { column = ex.column, memory = self.memory }), 0)
      end
      local e = type(st) == "table" and st.err or st
      error(errors.new("udf_error", ("setup of UDF '%s' failed: %s"):format(self.name,
        tostring(errors.is(e) and e.message or e)), { column = ex.column, cause = errors.is(e) and e or nil,
        traceback = type(st) == "table" and st.traceback or nil }), 0)
    end
    ex.state = st
  end
  return ex
end

-- ex:_xpcall(f, ...) -> xpcall(f, ex.handler, ...), under the UDF's memory
-- limit when it has one (a memory error past it: false, MEMORY)
function Executor:_xpcall(f, ...)
  if self.memory then return limited_xpcall(self.memory, f, self.handler, ...) end
  return xpcall(f, self.handler, ...)
end

local function is_interrupt(e)
  return e == "interrupted" or (type(e) == "table" and errors.is(e.err, "interrupted"))
    or errors.is(e, "interrupted")
end

-- An Error for a failed call: e is what the handler returned.
function Executor:_call_error(e, rowid, rows)
  local u = self.udf
  local where = rowid ~= nil and (" at rowid " .. tostring(rowid)) or (rows or "")
  local base = ("UDF '%s' (column '%s')"):format(u.name, self.column)
  if e == TIMEOUT then
    return errors.new("udf_error", ("%s timed out after %gs%s"):format(base, u.timeout, where),
      { column = self.column, rowid = rowid, timeout = u.timeout })
  end
  if e == MEMORY then
    return errors.new("udf_error", ("%s went over its memory limit%s (memory = %d bytes, %s)")
      :format(base, where, u.memory, mib(u.memory)), { column = self.column, rowid = rowid, memory = u.memory })
  end
  local cause = type(e) == "table" and e.err or e
  local msg = errors.is(cause) and cause.message or tostring(cause)
  msg = msg:gsub("^%?:%-1: ", "")     -- stripped bytecode has no positions
  return errors.new("udf_error", ("%s failed%s: %s"):format(base, where, msg), {
    column = self.column, rowid = rowid, cause = errors.is(cause) and cause or nil,
    traceback = type(e) == "table" and e.traceback or nil })
end

function Executor:_type_error(reason, v, rowid)
  local u = self.udf
  local where = rowid ~= nil and (" at rowid " .. tostring(rowid)) or ""
  return errors.new("udf_error", ("UDF '%s' (column '%s') returned a bad value%s: %s")
    :format(u.name, self.column, where, reason), { column = self.column, rowid = rowid, value = v })
end

-- ex:run(batch) -> results. See the header of the spec / docs: batch is
-- {n = N, rowids = {...} (optional: rowids default to 1..N),
--  columns = {name = array of N values, NULL as geneva.null}};
-- results is {n = N, values = array of N values (NULL as geneva.null),
--  failed = { {index = i, rowid = r, error = Error}, ... }}.
-- Raises: invalid_argument for a malformed batch; the row's udf_error with
-- on_error = "fail"; "interrupted" is re-raised as it came.
function Executor:run(batch)
  if type(batch) ~= "table" or math.type(batch.n) ~= "integer" or batch.n < 0 then
    bad("batch", "expected {n = integer, columns = {...}}")
  end
  local u, n = self.udf, batch.n
  local bcols = batch.columns
  if type(bcols) ~= "table" then bad("batch", "missing columns") end
  local C = {}
  for k, name in ipairs(u.input_columns) do
    local arr = bcols[name]
    if type(arr) ~= "table" then bad("batch", "has no column '%s'", name) end
    C[k] = arr
  end
  local res = { n = n, values = {}, failed = {} }
  if n == 0 then return res end
  local timed = u.timeout ~= nil
  local prev_hook, prev_mask, prev_count
  if timed then
    prev_hook, prev_mask, prev_count = debug.gethook()
    debug.sethook(self.hook, "", 1000)
  end
  local ok, err = pcall(u.batch and self._run_batch or self._run_rows, self, batch, C, res)
  if timed and not (not ok and is_interrupt(err)) then
    -- a host interrupt hook replaced ours: leave it in place
    if type(prev_hook) == "function" then debug.sethook(prev_hook, prev_mask, prev_count)
    else debug.sethook() end
  end
  if not ok then error(err, 0) end
  return res
end

-- The rowid of row i: batch.rowids[i], or i when the batch has no rowids.
local function rid(rowids, i)
  if rowids then return rowids[i] end
  return i
end

-- A row (or batch) failed for good: raise with on_error = "fail", else
-- record it and leave NULL.
function Executor:_fail(res, i, e)
  if self.on_error == "fail" then error(e, 0) end
  res.values[i] = NULL
  local f = res.failed
  f[#f + 1] = { index = i, rowid = e.rowid, error = e }
end

-- One scalar row in slow motion: the retries after a first failure `e`.
function Executor:_retry_row(_res, C, i, _rowid, e)
  local u, nargs = self.udf, self.nargs
  for _ = 1, u.retries do
    if u.timeout then debug.sethook(self.hook, "", 1000) end
    local a = {}
    for k = 1, nargs do
      local x = C[k][i]
      if x ~= NULL then a[k] = x end
    end
    local ok, v
    if self.stateful then ok, v = self:_xpcall(self.call, self.fn, self.state, table.unpack(a, 1, nargs))
    else ok, v = self:_xpcall(self.call, self.fn, table.unpack(a, 1, nargs)) end
    if ok then return true, v end
    if is_interrupt(v) then error(v, 0) end
    e = v
  end
  if u.timeout then debug.sethook(self.hook, "", 1000) end
  return false, e
end

function Executor:_check(res, i, v, rowid)
  local nv, why = types.check(self.udf.type, v)
  if why then return self:_fail(res, i, self:_type_error(why, v, rowid)) end
  res.values[i] = nv == nil and NULL or nv
end

function Executor:_run_rows(batch, C, res)
  local values, rowids, n = res.values, batch.rowids, batch.n
  local loop, fn, state = self.loop, self.fn, self.state
  local i = 1
  while i <= n do
    local ok, stop, v = self:_xpcall(loop, fn, state, C, values, i, n)
    if ok then
      if stop > n then break end
      -- a value the inline check did not accept: normalize or fail
      self:_check(res, stop, v, rid(rowids, stop))
      i = stop + 1
    else
      if is_interrupt(stop) then error(stop, 0) end
      local idx = #values + 1          -- values are filled contiguously
      local rowid = rid(rowids, idx)
      local okr, r = self:_retry_row(res, C, idx, rowid, stop)
      if okr then self:_check(res, idx, r, rowid)
      else self:_fail(res, idx, self:_call_error(r, rowid)) end
      i = idx + 1
    end
  end
end

function Executor:_run_batch(batch, C, res)
  local u, n, rowids = self.udf, batch.n, batch.rowids
  for k = 1, #C do C[k].n = n end
  local args = { table.unpack(C, 1, #C) }
  if self.stateful then table.insert(args, 1, self.state) end
  local nargs = #C + (self.stateful and 1 or 0)
  local ok, r
  for attempt = 0, u.retries do
    if attempt > 0 and u.timeout then debug.sethook(self.hook, "", 1000) end
    ok, r = self:_xpcall(self.call, self.fn, table.unpack(args, 1, nargs))
    if ok then break end
    if is_interrupt(r) then error(r, 0) end
  end
  local function rows() return (" on the batch of rowids %s..%s"):format(
    tostring(rid(rowids, 1)), tostring(rid(rowids, n))) end
  local e
  if not ok then
    e = self:_call_error(r, nil, rows())
  elseif type(r) ~= "table" then
    e = self:_type_error(("a batch UDF must return an array of %d values, got %s"):format(n, types.describe(r)), nil)
  else
    local cnt = r.n or #r
    if cnt ~= n then
      e = self:_type_error(("a batch UDF must return exactly %d values, got %s%s"):format(n,
        tostring(cnt), rows()), nil)
    end
  end
  if e then
    if self.on_error == "fail" then error(e, 0) end
    for i = 1, n do
      local ei = setmetatable({}, errors.Error)
      for k, v in pairs(e) do ei[k] = v end
      ei.rowid = rid(rowids, i)
      self:_fail(res, i, ei)
    end
    return
  end
  local t, values = u.type, res.values
  local check = types.check
  for i = 1, n do
    local v = r[i]
    if v == nil or v == NULL then values[i] = NULL
    else
      local nv, why = check(t, v)
      if why then self:_fail(res, i, self:_type_error(why, v, rid(rowids, i)))
      else values[i] = nv end
    end
  end
end

--- A UDF object, from @{new}. Fields: `name`, `data_type`, `input_columns`,
-- `batch`, `on_error`, `retries`, `timeout`, `num_cpus`, `num_gpus`, `memory`,
-- `module`, `version` (SHA-256 hex).
-- @type Udf

--- Runs the UDF on one row, here: for tests and the REPL.
-- setup runs once per Udf object; retries and the timeout apply, and a
-- failure raises whatever `on_error` says.
-- @tab row `{column = value}` for the input columns (absent or `nil`: NULL)
-- @return the value (`nil` for NULL)
-- @raise `udf_error` (with `rowid`, `value`, `cause`, `traceback`, `timeout`
-- when they apply); `invalid_argument` for a key that is not an input column
-- @usage assert(words:call { content = "a b c" } == 3)
function Udf:call(row)
  row = row or {}
  if type(row) ~= "table" then bad("call", "expected a record table, got %s", type(row)) end
  local cols = {}
  for _, name in ipairs(self.input_columns) do
    local v = row[name]
    cols[name] = { v == nil and NULL or v }
  end
  for k in pairs(row) do
    if cols[k] == nil then
      bad("call", "'%s' is not an input column of UDF '%s'%s", tostring(k), self.name,
        require("geneva.suggest").unknown(k, self.input_columns))
    end
  end
  local ex = self._call_ex
  if not ex then
    ex = self:executor({ on_error = "fail" })
    self._call_ex = ex
  end
  local r = ex:run({ n = 1, rowids = {}, columns = cols })
  local v = r.values[1]
  if v == NULL then return nil end
  return v
end
-- }======

return setmetatable(udf, { __call = function(_, o) return udf.new(o) end })
