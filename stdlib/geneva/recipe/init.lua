-- geneva.recipe: team recipes, templated YAML files that define clusters
-- and manifests and name backfill jobs (design §4, contract).
--
--   recipe.load(path [, vars]) -> Recipe        parse, substitute, check shape
--   recipe.validate(r) -> r                     deeper checks, nothing created
--   recipe.render(path [, vars]) -> yaml, r     the substituted document
--   recipe.apply(r) -> db, summary              define clusters and manifests
--   recipe.run(r [, job [, opts]]) -> results   apply, then run jobs in order
--
-- All raise geneva.Errors: not_found for a missing file, invalid_argument
-- for a bad recipe with the message "<file>:<line>:<col>: <what>" and the
-- fields path, line, col, and `problems` (every problem found, each
-- {line=, col=, message=}, in document order); run raises what the job
-- raises, prefixed with the job's name.
--
-- Templating, per scalar after parsing (keys too, which stay strings):
--   ${name}            the value of var `name`: vars from the `vars`
--                      argument (`--set`), else the recipe's `vars:` block
--   ${name:-default}   default when `name` is unset, null or empty; the
--                      default may hold references itself
--   $${                a literal "${"
-- An unquoted scalar is re-typed after substitution (yaml.resolve: `2` is
-- an integer, `true` a boolean, empty is null); a quoted one stays a string.
-- An unquoted scalar that is exactly `${name}` takes a list or map var as
-- is. Defaults in `vars:` may refer to other vars. Note that YAML ends an
-- unquoted scalar at `{` inside flow collections ({...} and [...]): there,
-- quote the reference or write the collection in block style.
-- A --set that no ${...} uses is a warning (r.warnings). Top-level keys
-- starting with `x-` are free-form (a place for anchors that jobs merge
-- with `<<: *name`); any other unknown field is an error.
--
-- Relative paths (db; manifest files, base_dir and local_zip_output_dir;
-- cluster kubeconfig and token_file) resolve against the recipe's directory
-- (a manifest's base_dir defaults to it), which
-- load also puts first on package.path (so `udf.module` finds a module next
-- to the recipe).
local yaml = require "geneva.yaml"
local errors = require "geneva.errors"
local fs = require "geneva.fs"

local NULL = yaml.null

local recipe = {}

local Recipe = {}
Recipe.__index = Recipe
Recipe.__name = "geneva.Recipe"
function Recipe:__tostring() return ("geneva.Recipe %s"):format(self.file) end
recipe.Recipe = Recipe

local function isnull(v) return v == nil or v == NULL end

local function describe(v)
  if isnull(v) then return "null" end
  if math.type(v) == "integer" then return "an integer" end
  if math.type(v) == "float" then return "a number" end
  if type(v) == "table" then return next(v) == nil and "an empty collection"
    or (v[1] ~= nil and "a list" or "a map") end
  return "a " .. type(v)
end

-- A scalar as written in messages (strings quoted); collections described.
local function show(v)
  if type(v) == "string" then return (("%q"):format(v):gsub("\\\n", "\\n")) end
  if type(v) == "number" or type(v) == "boolean" then return tostring(v) end
  return describe(v)
end

-- {====== Source positions
-- libyaml counts columns in characters; these turn (line, col) into byte
-- offsets of the source and back.

local function new_source(text, file)
  local starts = { 1 }
  for i in text:gmatch("\n()") do starts[#starts + 1] = i end
  return { text = text, file = file, starts = starts }
end

local function utf8_step(text, i)
  local b = text:byte(i)
  return i + ((b >= 0xF0 and 4) or (b >= 0xE0 and 3) or (b >= 0xC0 and 2) or 1)
end

local function offset_of(src, line, col)
  local i = src.starts[line]
  if not i then return nil end
  local stop = src.starts[line + 1] or (#src.text + 1)
  for _ = 2, col do
    if i >= stop then break end
    i = utf8_step(src.text, i)
  end
  return i
end

local function linecol_of(src, off)
  local lo, hi = 1, #src.starts
  while lo < hi do
    local mid = (lo + hi + 1) // 2
    if src.starts[mid] <= off then lo = mid else hi = mid - 1 end
  end
  local col, i = 1, src.starts[lo]
  while i < off do i = utf8_step(src.text, i); col = col + 1 end
  return lo, col
end

-- The offset of the k-th "${" that is not part of an escape "$${", scanning
-- text from `from` the way the substitution does.
local function kth_ref(text, from, k)
  local i, n = from, 0
  while true do
    local d = text:find("$", i, true)
    if not d then return nil end
    if text:sub(d, d + 2) == "$${" then
      i = d + 3
    elseif text:sub(d, d + 1) == "${" then
      n = n + 1
      if n == k then return d end
      i = d + 2
    else
      i = d + 1
    end
  end
end

-- }======

-- {====== Problems (errors with file:line:col)

local function problem_error(file, problems)
  table.sort(problems, function(a, b)
    if a.line ~= b.line then return a.line < b.line end
    return a.col < b.col
  end)
  local p = problems[1]
  local msg = ("%s:%d:%d: %s"):format(file, p.line, p.col, p.message)
  if #problems > 1 then
    msg = msg .. (" (and %d more problem%s)"):format(#problems - 1, #problems > 2 and "s" or "")
  end
  return errors.new("invalid_argument", msg, { path = file, line = p.line, col = p.col,
    problems = problems })
end

-- Collects problems; raises them at check() or at the first fatal one.
local Problems = {}
Problems.__index = Problems

local function new_problems(file) return setmetatable({ file = file, list = {} }, Problems) end

function Problems:add(loc, fmt, ...)
  local msg = select("#", ...) > 0 and fmt:format(...) or fmt
  loc = loc or { line = 1, col = 1 }
  self.list[#self.list + 1] = { line = loc.line or 1, col = loc.col or 1, message = msg }
end

function Problems:check()
  if #self.list > 0 then error(problem_error(self.file, self.list), 0) end
end

-- }======

-- {====== Substitution

-- A thrown substitution error: offset into the scalar text and a message.
local function sub_fail(at, msg) error({ sub_at = at, sub_msg = msg }, 0) end

-- parse(s) -> parts: strings and refs {name=, at=, default=parts|nil}.
-- Raises sub_fail for a bad or unterminated reference.
local function parse_parts(s, i, nested, open_at)
  local parts, buf = {}, {}
  local function flush()
    if #buf > 0 then parts[#parts + 1] = table.concat(buf); buf = {} end
  end
  local n = #s
  while i <= n do
    local d = s:find(nested and "[%$}]" or "%$", i)
    if not d then buf[#buf + 1] = s:sub(i); break end
    if d > i then buf[#buf + 1] = s:sub(i, d - 1) end
    i = d
    if s:byte(i) == 125 then                       -- "}" closes a default
      flush()
      return parts, i + 1
    elseif s:sub(i, i + 2) == "$${" then
      buf[#buf + 1] = "${"
      i = i + 3
    elseif s:sub(i, i + 1) == "${" then
      flush()
      local name = s:match("^[%a_][%w_]*", i + 2)
      if not name then
        if s:sub(i + 2, i + 2) == "}" then sub_fail(i, "empty variable reference '${}'") end
        sub_fail(i, "expected a variable name after '${' (letters, digits and _)")
      end
      local j = i + 2 + #name
      if s:sub(j, j) == "}" then
        parts[#parts + 1] = { name = name, at = i }
        i = j + 1
      elseif s:sub(j, j + 1) == ":-" then
        local def
        def, j = parse_parts(s, j + 2, true, i)
        parts[#parts + 1] = { name = name, at = i, default = def }
        i = j
      elseif j > n then
        sub_fail(i, ("unterminated reference '${%s' (no closing '}')"):format(name))
      else
        sub_fail(i, ("bad reference '${%s%s': expected '}' or ':-default}' after the name")
          :format(name, s:sub(j, j)))
      end
    else
      buf[#buf + 1] = "$"
      i = i + 1
    end
  end
  if nested then sub_fail(open_at, "unterminated '${' (no closing '}')") end
  flush()
  return parts
end

local function has_ref(parts)
  for _, p in ipairs(parts) do if type(p) == "table" then return true end end
  return false
end

-- The text a scalar var value stands for inside a string.
local function value_text(v)
  if type(v) == "string" then return v end
  if math.type(v) == "integer" then return ("%d"):format(v) end
  if math.type(v) == "float" then
    if v ~= v then return ".nan" end
    if v == math.huge then return ".inf" end
    if v == -math.huge then return "-.inf" end
    local s = ("%.17g"):format(v)
    for p = 15, 16 do
      local t = ("%." .. p .. "g"):format(v)
      if tonumber(t) == v then s = t break end
    end
    if not s:find("[%.eEn]") then s = s .. ".0" end
    return s
  end
  if type(v) == "boolean" then return tostring(v) end
  return nil
end

-- A deep copy of v; with pos, the copies get the originals' positions.
local function deep_copy(v, pos, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local t = {}
  seen[v] = t
  for k, x in pairs(v) do t[deep_copy(k, pos, seen)] = deep_copy(x, pos, seen) end
  if pos and pos[v] then pos[t] = pos[v] end
  return t
end

-- The substitution state of one load: vars, their sources and uses.
local Subst = {}
Subst.__index = Subst

-- lookup(name) -> value | nil (unset), declared
function Subst:lookup(name)
  self.used[name] = true
  local v = self.set[name]
  if v ~= nil then return v, true end
  if self.var_nodes and rawget(self.var_nodes, name) ~= nil then
    v = self:var_value(name)
    if isnull(v) then return nil, true end
    return v, true
  end
  return nil, false
end

-- A vars: default, substituted (it may refer to other vars); memoized.
function Subst:var_value(name)
  local memo = self.var_memo[name]
  if memo ~= nil then return memo[1] end
  if self.resolving[name] then
    local chain = {}
    for _, n in ipairs(self.resolving_stack) do chain[#chain + 1] = n end
    chain[#chain + 1] = name
    error({ sub_cycle = ("variable '%s' refers to itself (%s)"):format(name, table.concat(chain, " -> ")) }, 0)
  end
  self.resolving[name] = true
  self.resolving_stack[#self.resolving_stack + 1] = name
  local vp = self.var_pos
  local v = self:walk(self.var_nodes[name], vp and vp.values[name])
  self.resolving_stack[#self.resolving_stack] = nil
  self.resolving[name] = nil
  self.var_memo[name] = { v }
  return v
end

function Subst:eval(parts, plain_whole)
  -- an unquoted scalar that is exactly ${name}: a list or map var goes in as is
  if plain_whole and #parts == 1 and type(parts[1]) == "table" then
    local p = parts[1]
    local v = self:lookup(p.name)
    if type(v) == "table" then return deep_copy(v, self.pos) end
  end
  local out = {}
  for _, p in ipairs(parts) do
    if type(p) == "string" then
      out[#out + 1] = p
    else
      local v, declared = self:lookup(p.name)
      if p.default and (v == nil or v == "") then
        out[#out + 1] = self:eval(p.default, false)
      elseif v == nil then
        -- recorded, so every bad reference of a scalar is reported
        self.missing[#self.missing + 1] = { at = p.at, msg = declared
          and ("variable '%s' has no value (give it one with --set %s=...)"):format(p.name, p.name)
          or ("unknown variable '%s' (declare it under vars: or pass --set %s=...)"):format(p.name, p.name) }
      else
        local t = value_text(v)
        if not t then
          self.missing[#self.missing + 1] = { at = p.at, msg =
            ("variable '%s' is %s: it can only be used as a whole unquoted value"):format(p.name, describe(v)) }
          t = ""
        end
        out[#out + 1] = t
      end
    end
  end
  return table.concat(out)
end

-- Expands one scalar string; loc is its position entry {line, col, plain}.
-- Problems are recorded and the scalar is kept as written.
function Subst:scalar(s, loc, is_key)
  local outer = self.missing
  self.missing = {}
  local ok, res = pcall(function()
    local parts = parse_parts(s, 1, false)
    if #parts == 1 and parts[1] == s then return s end       -- nothing to do
    local plain = loc and loc.plain and not is_key
    local v = self:eval(parts, plain)
    if #self.missing > 0 then error({ sub_list = self.missing }, 0) end
    if type(v) == "string" and plain and (has_ref(parts) or v ~= s) then v = yaml.resolve(v) end
    return v
  end)
  self.missing = outer
  if ok then return res end
  if type(res) == "table" and res.sub_at then res = { sub_list = { { at = res.sub_at, msg = res.sub_msg } } } end
  if type(res) == "table" and res.sub_list then
    for _, m in ipairs(res.sub_list) do
      local line, col = loc and loc.line or 1, loc and loc.col or 1
      local src = self.src
      local start = loc and offset_of(src, loc.line, loc.col)
      if start then
        -- the k-th "${" of the value is the k-th of the source from its start
        local k, i = 0, 1
        while true do
          local d = kth_ref(s, i, 1)
          if not d or d > m.at then break end
          k = k + 1
          i = d + 2
        end
        local off = k > 0 and kth_ref(src.text, start, k)
        if off then line, col = linecol_of(src, off) end
      end
      self.problems:add({ line = line, col = col }, "%s", m.msg)
    end
    return s
  end
  if type(res) == "table" and res.sub_cycle then
    self.problems:add(loc, "%s", res.sub_cycle)
    return s
  end
  error(res, 0)
end

-- Walks a loaded value: a new tree with every scalar substituted; new tables
-- get entries in self.pos (kind, order of keys, key and value positions).
function Subst:walk(v, loc)
  if type(v) == "string" then
    if v:find("$", 1, true) then return self:scalar(v, loc) end
    return v
  end
  if type(v) ~= "table" then return v end
  local p = self.src_pos[v]
  local out = {}
  if p and p.kind == "seq" then
    local np = { kind = "seq", line = p.line, col = p.col, items = {} }
    for i = 1, #v do
      out[i] = self:walk(v[i], p.items[i])
      np.items[i] = p.items[i]
    end
    self.pos[out] = np
    return out
  end
  local np = { kind = "map", line = p and p.line or 1, col = p and p.col or 1,
               order = {}, keys = {}, values = {} }
  local order = p and p.order
  if not order then
    order = {}
    for k in pairs(v) do order[#order + 1] = k end
    table.sort(order, function(a, b) return tostring(a) < tostring(b) end)
  end
  for _, k in ipairs(order) do
    if v[k] ~= nil then
      local kloc, vloc = p and p.keys[k], p and p.values[k]
      local nk = k
      if type(k) == "string" and k:find("$", 1, true) then nk = self:scalar(k, kloc, true) end
      if out[nk] ~= nil then
        self.problems:add(kloc, "duplicate key '%s' after substitution", tostring(nk))
      else
        out[nk] = self:walk(v[k], vloc)
        np.order[#np.order + 1] = nk
        np.keys[nk], np.values[nk] = kloc, vloc
      end
    end
  end
  self.pos[out] = np
  return out
end

-- }======

-- {====== Shape of a recipe

local TOP = { vars = "map", db = "string", clusters = "map", manifests = "map", jobs = "map" }
local TOP_ORDER = "vars, db, clusters, manifests, jobs"

local JOB = { table = "string", column = "string", udf = "map", where = "string",
              cluster = "string", manifest = "string", backfill = "map" }
local JOB_ORDER = "table, column, udf, where, cluster, manifest, backfill"

local UDF = { module = "string", ["function"] = "string", data_type = "string",
              input_columns = "strings", batch = "boolean", setup = "setup",
              on_error = "string", retries = "count", timeout = "number", num_cpus = "number",
              num_gpus = "number", memory = "posint", name = "string" }
local UDF_ORDER = "module, function, data_type, input_columns, batch, setup, on_error, "
  .. "retries, timeout, num_cpus, num_gpus, memory, name"

local BACKFILL = { where = "string", batch_size = "posint", concurrency = "posint",
                   commit_every = "posint", resume = "boolean" }
local BACKFILL_ORDER = "where, batch_size, concurrency, commit_every, resume"

local kinds = {
  string = function(v) return type(v) == "string" end,
  map = function(v) return type(v) == "table" and v[1] == nil end,
  boolean = function(v) return type(v) == "boolean" end,
  number = function(v) return type(v) == "number" end,
  count = function(v) return math.type(v) == "integer" and v >= 0 end,
  posint = function(v) return math.type(v) == "integer" and v > 0 end,
  strings = function(v)
    if type(v) ~= "table" then return false end
    for k, x in pairs(v) do
      if math.type(k) ~= "integer" or type(x) ~= "string" then return false end
    end
    return true
  end,
  setup = function(v) return type(v) == "string" or (type(v) == "table" and v[1] == nil) end,
}
local expected = {
  string = "a string", map = "a map", boolean = "true or false", number = "a number",
  count = "an integer >= 0", posint = "an integer > 0", strings = "a list of strings",
  setup = "a function name or a map {module, function}",
}

-- Checks map t (at pos entry p) against fields; returns a plain table of
-- the non-null values. what names the map in messages ("job 'x'").
local function is_map(r, v)
  if type(v) ~= "table" then return false end
  local p = r.pos[v]
  if p then return p.kind == "map" end
  return v[1] == nil
end

local function check_fields(r, t, fields, allowed, what)
  local p = r.pos[t] or { order = {}, keys = {}, values = {} }
  local out = {}
  for _, k in ipairs(p.order) do
    local v = t[k]
    local kind = fields[k]
    if not kind and fields == TOP and type(k) == "string" and k:sub(1, 2) == "x-" then
      out[k] = v                             -- x-*: free-form, for anchors to merge
    elseif not kind then
      r.problems:add(p.keys[k], "unknown field '%s' in %s (allowed: %s)", tostring(k), what, allowed)
    elseif not isnull(v) then
      if (kind == "map" and is_map(r, v)) or (kind ~= "map" and kinds[kind](v)) then
        out[k] = v
      else
        r.problems:add(p.values[k], "%s: '%s' must be %s, got %s", what, k, expected[kind], show(v))
      end
    end
  end
  return out
end

local function loc_of(r, t, key, which)
  local p = r.pos[t]
  if not p then return nil end
  if key == nil then return p end
  if p.kind == "seq" then return p.items[key] end
  return (which == "key" and p.keys or p.values)[key] or p.keys[key]
end

-- The entries of a map value, in document order: {name=, value=}.
local function entries(r, t)
  local out = {}
  local p = r.pos[t]
  for _, k in ipairs(p and p.order or {}) do out[#out + 1] = { name = k, value = t[k] } end
  return out
end

local function check_shape(r)
  local doc = r.doc
  if not is_map(r, doc) then
    r.problems:add(r.pos[doc] or { line = 1, col = 1 },
      "a recipe is a map with the fields %s, got %s", TOP_ORDER, describe(doc))
    r.problems:check()
  end
  local top = check_fields(r, doc, TOP, TOP_ORDER, "the recipe")
  if top.db == nil and isnull(doc.db) then
    r.problems:add(r.pos[doc], "missing field 'db' (the database the recipe applies to)")
  elseif top.db == "" then
    r.problems:add(loc_of(r, doc, "db"), "'db' must not be empty")
  end
  r.db_uri = top.db

  r.clusters, r.manifests, r.jobs = {}, {}, {}
  for _, section in ipairs({ "clusters", "manifests" }) do
    local m = top[section]
    if m then
      for _, e in ipairs(entries(r, m)) do
        local what = section:sub(1, -2) .. " '" .. tostring(e.name) .. "'"
        if type(e.name) ~= "string" then
          r.problems:add(loc_of(r, m, e.name, "key"), "%s name must be a string", section:sub(1, -2))
        elseif not is_map(r, e.value) then
          r.problems:add(loc_of(r, m, e.name), "%s: the spec must be a map, got %s", what, describe(e.value))
        else
          table.insert(r[section], { name = e.name, spec = e.value })
        end
      end
    end
  end

  if top.jobs then
    for _, e in ipairs(entries(r, top.jobs)) do
      local what = "job '" .. tostring(e.name) .. "'"
      local jt = e.value
      if type(e.name) ~= "string" then
        r.problems:add(loc_of(r, top.jobs, e.name, "key"), "job names must be strings")
      elseif not is_map(r, jt) then
        r.problems:add(loc_of(r, top.jobs, e.name), "%s must be a map, got %s", what, describe(jt))
      else
        local j = check_fields(r, jt, JOB, JOB_ORDER, what)
        j.name, j.node = e.name, jt
        for _, req in ipairs({ "table", "column", "udf" }) do
          if isnull(jt[req]) then
            r.problems:add(loc_of(r, top.jobs, e.name, "key"), "%s: missing field '%s'", what, req)
          end
        end
        if j.udf then
          j.udf = check_fields(r, jt.udf, UDF, UDF_ORDER, what .. " udf")
          for _, req in ipairs({ "module", "function", "data_type" }) do
            if isnull(jt.udf[req]) then
              r.problems:add(loc_of(r, jt, "udf", "key"), "%s udf: missing field '%s'", what, req)
            end
          end
          local s = jt.udf.setup
          if type(s) == "table" then
            check_fields(r, s, { module = "string", ["function"] = "string" }, "module, function",
              what .. " udf setup")
          end
        end
        if j.backfill then
          j.backfill = check_fields(r, jt.backfill, BACKFILL, BACKFILL_ORDER, what .. " backfill")
          if j.backfill.where and j.where then
            r.problems:add(loc_of(r, jt.backfill, "where", "key"),
              "%s: 'where' is given both in the job and in its backfill options: keep one", what)
          end
        end
        r.jobs[#r.jobs + 1] = j
      end
    end
  end

  -- names a job uses that the recipe does not define come from the db
  for _, j in ipairs(r.jobs) do
    for _, kind in ipairs({ "cluster", "manifest" }) do
      local name = j[kind]
      if name then
        local found = false
        for _, e in ipairs(r[kind .. "s"]) do if e.name == name then found = true end end
        if not found then
          local l = loc_of(r, j.node, kind) or { line = 1, col = 1 }
          r.warnings[#r.warnings + 1] = ("%s:%d:%d: job '%s': %s '%s' is not defined in this recipe; "
            .. "it must exist in the db"):format(r.file, l.line, l.col, j.name, kind, name)
        end
      end
    end
  end
end

-- }======

-- {====== Loading

local function dirname(path)
  local d = path:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

local function absolute(dir, p)
  if p:sub(1, 1) == "/" then return p end
  p = p:gsub("^%./", "")
  if p == "." or p == "" then return dir end
  return dir .. "/" .. p
end

local function prepend_package_path(dir)
  local entry = dir .. "/?.lua;" .. dir .. "/?/init.lua;"
  if package.path:sub(1, #entry) ~= entry then
    -- remove an older copy so the recipe's directory is first exactly once
    local plain = entry:gsub("%p", "%%%0")
    package.path = entry .. package.path:gsub(plain, "")
  end
end

local function check_vars(vars)
  if vars == nil then return {} end
  if type(vars) ~= "table" then
    errors.throw("invalid_argument", ("recipe: vars must be a table of name = value, got %s"):format(type(vars)))
  end
  local out = {}
  for k, v in pairs(vars) do
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then
      errors.throw("invalid_argument", ("recipe: bad variable name %s (letters, digits and _, not starting with a digit)")
        :format(type(k) == "string" and ("'" .. k .. "'") or tostring(k)))
    end
    if type(v) ~= "table" and not value_text(v) then
      errors.throw("invalid_argument", ("recipe: variable '%s' must be a string, number, boolean or table, got %s")
        :format(k, type(v)))
    end
    out[k] = v
  end
  return out
end

-- A parse error message "<file>:<l>:<c>: what" -> line, col; with a hint
-- when the line puts ${...} inside a flow collection.
local function yaml_error(file, src, msg, code)
  local line, col = msg:match("^.-:(%d+):(%d+): ")
  line, col = tonumber(line), tonumber(col)
  local text = line and src.text:sub(src.starts[line] or 1, (src.starts[line + 1] or 0) - 1) or ""
  if code == "YAML_PARSE" and text:find("[%[{].-%${") then
    msg = msg .. " (hint: inside [...] or {...} an unquoted ${...} ends at '{': quote it or use block style)"
  end
  return errors.new("invalid_argument", msg, { path = file, line = line, col = col, yaml_code = code,
    problems = { { line = line or 1, col = col or 1, message = msg:gsub("^.-:%d+:%d+: ", "") } } })
end

-- recipe.load(path [, vars]) -> Recipe
-- vars: {name = value} overriding the recipe's `vars:` (what --set gives;
-- strings are re-typed like unquoted text when they fill a whole unquoted
-- scalar). Raises not_found (no file), invalid_argument (bad YAML, unknown
-- variable or field, wrong type: file:line:col). Puts the recipe's
-- directory first on package.path. Nothing else is touched.
-- The Recipe: file (as given), path, dir (absolute), doc (the substituted
-- document), vars (effective values), warnings (array of strings),
-- db (absolute path or URI), clusters / manifests ({name=, spec=} in file
-- order), jobs ({name=, table=, column=, udf={...}, where=, cluster=,
-- manifest=, backfill={...}} in file order).
function recipe.load(path, vars)
  if type(path) ~= "string" or path == "" then
    errors.throw("invalid_argument", "recipe.load: path must be a file name")
  end
  local set = check_vars(vars)
  local text, msg, code = fs.read(path)
  if not text then
    errors.throw(code == "ENOENT" and "not_found" or "unavailable",
      ("cannot read recipe %s: %s"):format(path, tostring(msg)), { path = path })
  end
  local src = new_source(text, path)
  local doc, pos, ycode = yaml.load(text, { filename = path, positions = true })
  if doc == nil then error(yaml_error(path, src, pos, ycode), 0) end

  local dir = assert(fs.realpath(dirname(path)))
  local r = setmetatable({ file = path, dir = dir, path = dir .. "/" .. path:match("[^/]*$"),
                           warnings = {}, problems = new_problems(path) }, Recipe)

  local st = setmetatable({ set = set, used = {}, src = src, src_pos = pos or {}, pos = {}, missing = {},
                            problems = r.problems, var_memo = {}, resolving = {},
                            resolving_stack = {} }, Subst)
  if type(doc) == "table" and doc[1] == nil and type(doc.vars) == "table" then
    local vp = pos[doc.vars]
    if vp and vp.kind == "map" then
      st.var_nodes, st.var_pos = doc.vars, vp
      for _, k in ipairs(vp.order) do
        if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then
          r.problems:add(vp.keys[k], "bad variable name '%s' (letters, digits and _, not starting with a digit)",
            tostring(k))
        end
      end
    end
  end

  local out
  if type(doc) == "table" then
    -- substitute everything but vars; vars itself shows its effective values
    local p = pos[doc]
    local np = { kind = p.kind, line = p.line, col = p.col, order = {}, keys = {}, values = {},
                 items = p.items }
    if p.kind == "seq" then
      out = st:walk(doc, p)
    else
      out = {}
      for _, k in ipairs(p.order) do
        if k == "vars" and st.var_nodes then
          local vars_out = {}
          local vnp = { kind = "map", line = st.var_pos.line, col = st.var_pos.col, order = {},
                        keys = {}, values = {} }
          for _, name in ipairs(st.var_pos.order) do
            local v = set[name]
            if v == nil then v = st:var_value(name) end
            vars_out[name] = v
            vnp.order[#vnp.order + 1] = name
            vnp.keys[name], vnp.values[name] = st.var_pos.keys[name], st.var_pos.values[name]
          end
          st.pos[vars_out] = vnp
          out.vars = vars_out
        else
          out[k] = st:walk(doc[k], p.values[k])
        end
        np.order[#np.order + 1] = k
        np.keys[k], np.values[k] = p.keys[k], p.values[k]
      end
      st.pos[out] = np
    end
  else
    out = st:walk(doc)
  end
  r.doc, r.pos = out, st.pos
  r.problems:check()

  -- effective vars: --set values, then the recipe's defaults
  r.vars = {}
  for k, v in pairs(set) do r.vars[k] = v end
  if st.var_nodes then
    for _, k in ipairs(st.var_pos.order) do
      if r.vars[k] == nil then
        local v = st.var_memo[k] and st.var_memo[k][1]
        if v == nil then v = st:var_value(k) end
        r.vars[k] = v
      end
    end
  end
  local names = {}
  for k in pairs(set) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    if not st.used[k] then
      r.warnings[#r.warnings + 1] = ("%s: --set %s: no ${%s} in the recipe uses it"):format(path, k, k)
    end
  end

  check_shape(r)
  r.problems:check()

  -- the database: an absolute path (or a URI, kept)
  local uri = r.db_uri
  if uri:match("^%a[%w+.-]*://") then
    local p = uri:match("^file://(.*)$")
    r.db = p and absolute(dir, p) or uri
  else
    r.db = absolute(dir, uri)
  end
  prepend_package_path(dir)
  return r
end

-- }======

-- {====== Validation and the objects a recipe makes

-- Where an error naming a field path (err.field = "a.b[2].c" or an array,
-- or a quoted path in its message) points in the spec map at node; at
-- least node itself.
local function field_loc(r, node, err, fallback)
  local paths = {}
  local f = type(err) == "table" and err.field
  if type(f) == "table" then
    paths[#paths + 1] = f
  elseif type(f) == "string" then
    paths[#paths + 1] = f
  end
  local msg = type(err) == "table" and tostring(err.message or "") or tostring(err)
  for q in msg:gmatch("'([%w_%.%[%]%-]+)'") do
    paths[#paths + 1] = q
    if type(f) == "string" then paths[#paths + 1] = f .. "." .. q end   -- "unknown field 'q'" in f
  end
  for seg in (msg .. ": "):gmatch("%s*([^:]+): ") do
    if seg:match("^[%w_][%w_%.%[%]]*$") then paths[#paths + 1] = seg end
  end
  local best, best_depth = fallback, 0
  for _, path in ipairs(paths) do
    local parts = path
    if type(path) == "string" then
      parts = {}
      for seg in path:gsub("%[(%d+)%]", ".%1"):gmatch("[^.]+") do
        parts[#parts + 1] = math.tointeger(tonumber(seg)) or seg
      end
    end
    local t, loc, depth = node, nil, 0
    for _, seg in ipairs(parts) do
      if type(t) ~= "table" then break end
      local p = r.pos[t]
      if not p then break end
      local l
      if p.kind == "seq" then
        l = math.type(seg) == "integer" and p.items[seg]
      else
        l = p.keys[seg] or (math.type(seg) == "integer" and p.keys[tostring(seg)])
        if l and t[seg] == nil then seg = tostring(seg) end
      end
      if not l then break end
      loc, t, depth = l, t[seg], depth + 1
    end
    if loc and depth > best_depth then best, best_depth = loc, depth end
  end
  return best
end

-- Re-raises err as an invalid_argument (or its own code) located in the file.
local function located_error(r, loc, prefix, err)
  local e = errors.from(err)
  loc = loc or { line = 1, col = 1 }
  local fields = {}
  for k, v in pairs(e) do fields[k] = v end
  fields.code, fields.message = nil, nil
  fields.path, fields.line, fields.col = r.file, loc.line, loc.col
  return errors.new(e.code, ("%s:%d:%d: %s: %s"):format(r.file, loc.line, loc.col, prefix, e.message), fields)
end

-- YAML nulls are absent fields to the registries
local function strip_nulls(t)
  for k, v in pairs(t) do
    if v == NULL then t[k] = nil elseif type(v) == "table" then strip_nulls(v) end
  end
  return t
end

-- Specs with relative paths resolved against the recipe's directory.
local function resolve_cluster_spec(r, spec)
  local s = strip_nulls(deep_copy(spec))
  for _, k in ipairs({ "kubeconfig", "token_file" }) do
    if type(s[k]) == "string" and s[k] ~= "" then s[k] = absolute(r.dir, s[k]) end
  end
  return s
end

local function resolve_manifest_spec(r, spec)
  local s = strip_nulls(deep_copy(spec))
  -- file globs stay relative (their zip names), to the recipe's directory
  if s.base_dir == nil then s.base_dir = r.dir
  elseif type(s.base_dir) == "string" and s.base_dir ~= "" then s.base_dir = absolute(r.dir, s.base_dir) end
  if type(s.local_zip_output_dir) == "string" then
    s.local_zip_output_dir = absolute(r.dir, s.local_zip_output_dir)
  end
  return s
end

-- The geneva.udf of a job. Raises located errors.
local function job_udf(r, j)
  local o = {}
  for k, v in pairs(j.udf or {}) do o[k] = v end
  if type(o.setup) == "table" then o.setup = { module = o.setup.module, ["function"] = o.setup["function"] } end
  local ok, u = pcall(require("geneva.udf").new, o)
  if ok then return u end
  local node = j.node.udf
  local loc = field_loc(r, node, u, loc_of(r, j.node, "udf", "key"))
  error(located_error(r, loc, ("job '%s' udf"):format(j.name), u), 0)
end

local function backfill_opts(j)
  local o = {}
  for k, v in pairs(j.backfill or {}) do o[k] = v end
  if j.where then o.where = j.where end
  return o
end

-- recipe.validate(r) -> r: checks what can be checked without creating
-- anything: cluster and manifest specs (by their modules' validate, when
-- this build has them), each job's UDF (its module must load), the names
-- jobs use. Raises invalid_argument with file:line:col.
function recipe.validate(r)
  assert(getmetatable(r) == Recipe, "recipe.validate: expected a Recipe (recipe.load)")
  local problems = new_problems(r.file)
  local function add(loc, err, prefix)
    local e = located_error(r, loc, prefix, err)
    problems:add(loc, "%s", (e.message:gsub("^.-:%d+:%d+: ", "")))
  end
  local cluster_mod = require "geneva.context.cluster"
  local manifest_mod = require "geneva.context.manifest"
  local registry = require "geneva.context.registry"
  for _, section in ipairs({ { "clusters", "cluster", cluster_mod, resolve_cluster_spec },
                             { "manifests", "manifest", manifest_mod, resolve_manifest_spec } }) do
    local list, kind, mod, resolve = section[1], section[2], section[3], section[4]
    local node = r.doc[list]
    for _, e in ipairs(r[list]) do
      local keyloc = loc_of(r, node, e.name, "key")
      local ok, err = pcall(registry.check_name, kind, e.name)
      if not ok then add(keyloc, err, kind .. " '" .. e.name .. "'") end
      ok, err = pcall(mod.validate, resolve(r, e.spec))
      if not ok then add(field_loc(r, e.spec, err, keyloc), err, kind .. " '" .. e.name .. "'") end
    end
  end
  for _, j in ipairs(r.jobs) do
    local ok, err = pcall(job_udf, r, j)
    if not ok then
      local e = errors.from(err)
      problems:add({ line = e.line or 1, col = e.col or 1 }, "%s", (e.message:gsub("^.-:%d+:%d+: ", "")))
    end
    local ok2, err2 = pcall(require("geneva.db").check_table_name, j.table)
    if not ok2 then add(loc_of(r, j.node, "table"), err2, ("job '%s'"):format(j.name)) end
  end
  problems:check()
  return r
end

-- Finds a job by name; raises not_found listing the recipe's jobs.
local function find_job(r, name)
  for _, j in ipairs(r.jobs) do
    if j.name == name then return j end
  end
  local names = {}
  for _, j in ipairs(r.jobs) do names[#names + 1] = j.name end
  errors.throw("not_found", ("%s: no job '%s' (jobs: %s)"):format(r.file, tostring(name),
    #names > 0 and table.concat(names, ", ") or "none"), { path = r.file })
end

-- recipe.apply(r) -> db, summary: validates, connects the recipe's db
-- (creating its directory) and defines its clusters, then its manifests,
-- in file order (unchanged definitions write nothing). summary =
-- {db = path, clusters = {names}, manifests = {names}}. Spec errors raise
-- at the offending field's file:line:col.
function recipe.apply(r)
  recipe.validate(r)
  local db = require("geneva.db").connect(r.db)
  local summary = { db = db.path, clusters = {}, manifests = {} }
  for _, section in ipairs({ { "clusters", "cluster", resolve_cluster_spec, "define_cluster" },
                             { "manifests", "manifest", resolve_manifest_spec, "define_manifest" } }) do
    local list, kind, resolve, method = section[1], section[2], section[3], section[4]
    for _, e in ipairs(r[list]) do
      local ok, err = pcall(db[method], db, e.name, resolve(r, e.spec))
      if not ok then
        local keyloc = loc_of(r, r.doc[list], e.name, "key")
        error(located_error(r, field_loc(r, e.spec, err, keyloc), kind .. " '" .. e.name .. "'", err), 0)
      end
      table.insert(summary[list], e.name)
    end
  end
  return db, summary
end

-- Adds the job's column, or re-points it when its UDF changed; returns
-- "added" | "altered" | "unchanged".
local function ensure_column(r, j, tbl, u)
  local json = require "geneva.json"
  local col = tbl:schema()[j.column]
  if not col then
    local ok, err = pcall(tbl.add_columns, tbl, { [j.column] = u })
    if not ok then error(located_error(r, loc_of(r, j.node, "column"), ("job '%s'"):format(j.name), err), 0) end
    return "added"
  end
  if not col.virtual then
    error(located_error(r, loc_of(r, j.node, "column"), ("job '%s'"):format(j.name),
      errors.new("invalid_argument", ("column '%s' of table '%s' is a stored column, not a computed one")
        :format(j.column, j.table))), 0)
  end
  local function norm(spec)
    return json.canonical(json.decode(json.encode(spec), { null_as_nil = true }))
  end
  if col.udf_version == u.version and norm(col.udf) == norm(u:spec()) then return "unchanged" end
  local ok, err = pcall(tbl.alter_columns, tbl, { { path = j.column, udf = u } })
  if not ok then error(located_error(r, loc_of(r, j.node, "udf", "key"), ("job '%s'"):format(j.name), err), 0) end
  return "altered"
end

-- Runs one job on db; returns its result (see recipe.run).
local function run_job(r, db, j)
  local time = require "geneva.time"
  local t0 = time.monotonic()
  local ok, tbl = pcall(db.open_table, db, j.table)
  if not ok then error(located_error(r, loc_of(r, j.node, "table"), ("job '%s'"):format(j.name), tbl), 0) end
  local u = job_udf(r, j)
  local action = ensure_column(r, j, tbl, u)
  local opts = backfill_opts(j)
  local rec
  local function go() rec = tbl:backfill(j.column, opts) end
  local bok, berr
  if j.cluster or j.manifest then
    bok, berr = pcall(function()
      require("geneva.context").new{ cluster = j.cluster, manifest = j.manifest, db = db, name = "recipe job " .. j.name }(go)
    end)
  else
    bok, berr = pcall(go)
  end
  if not bok then
    local e = errors.from(berr)
    if e.code == "interrupted" then error(berr, 0) end
    local fields = {}
    for k, v in pairs(e) do fields[k] = v end
    fields.code, fields.message = nil, nil
    fields.recipe_job = j.name
    error(errors.new(e.code, ("%s: job '%s': %s"):format(r.file, j.name, e.message), fields), 0)
  end
  if type(rec) == "table" and type(rec.record) == "function" then rec = rec:record() end
  rec = rec or {}
  local rows = rec.rows or {}
  return { job = j.name, table = j.table, column = j.column, column_action = action,
           cluster = j.cluster, manifest = j.manifest, id = rec.id, status = rec.status,
           rows = rows.computed or 0, failed = rows.failed or 0, committed = rows.committed or 0,
           seconds = time.monotonic() - t0 }
end

-- recipe.run(r [, job_name [, opts]]) -> results
-- Applies the recipe, then runs the named job, or every job in file order.
-- A job: open its table (raises not_found at the job's `table`), add its
-- column with the UDF or alter it when the UDF's spec changed, then
-- backfill inside geneva.context{cluster=, manifest=, db=} (directly, on
-- the embedded local cluster, when the job names neither). Stops at the
-- first failing job, raising its error prefixed "<file>: job '<name>': ".
-- results: array of {job, table, column, column_action, cluster, manifest,
-- id, status, rows (computed), failed, committed, seconds}.
-- opts.on_result(result) is called after each job (the CLI prints there).
function recipe.run(r, job_name, opts)
  assert(getmetatable(r) == Recipe, "recipe.run: expected a Recipe (recipe.load)")
  opts = opts or {}
  local jobs = r.jobs
  if job_name ~= nil then jobs = { find_job(r, job_name) } end
  local db = recipe.apply(r)
  local results = {}
  for _, j in ipairs(jobs) do
    local res = run_job(r, db, j)
    results[#results + 1] = res
    if opts.on_result then opts.on_result(res) end
  end
  return results
end

-- recipe.find_job(r, name) -> job | raises not_found
recipe.find_job = find_job

-- }======

-- {====== Rendering

-- A copy of t where every "${" in a string (keys too) is written "$${",
-- so loading the rendered text gives the same values back.
local function escape_tree(v, pos, newpos)
  if type(v) == "string" then return (v:gsub("%${", "$${")) end
  if type(v) ~= "table" then return v end
  local out, p = {}, pos[v]
  local np = p and { kind = p.kind, order = p.order and {} }
  for k, x in pairs(v) do out[escape_tree(k, pos, newpos)] = escape_tree(x, pos, newpos) end
  if np and p.order then
    for i, k in ipairs(p.order) do np.order[i] = escape_tree(k, pos, newpos) end
  end
  if np then newpos[out] = np end
  return out
end

-- recipe.render(path [, vars]) -> yaml text, r
-- The substituted document as YAML (keys in the file's order), with vars:
-- showing the effective values; loading it again gives the same document.
-- Raises like recipe.load.
function recipe.render(path, vars)
  local r = getmetatable(path) == Recipe and path or recipe.load(path, vars)
  local newpos = {}
  local doc = escape_tree(r.doc, r.pos, newpos)
  local text, err = yaml.dump(doc, { order = newpos })
  if not text then errors.throw("internal", ("%s: cannot render: %s"):format(r.file, err)) end
  return text, r
end

-- }======

return recipe
