-- geneva.recipe.template: the text side of a recipe. Source positions,
-- problems reported as "<file>:<line>:<col>: <what>", and ${var}
-- substitution over a loaded YAML document (the rules are in
-- geneva.recipe's header).
--
--   template.source(text, file) -> src          {text, file, starts (of lines)}
--   template.problems(file) -> Problems         :add(loc, fmt, ...), :check()
--   template.expand(doc, pos, src, set, problems) -> doc, pos, vars, used
--   template.value_text(v) -> string | nil      a scalar as substituted text
--   template.deep_copy(v) -> copy
--   template.isnull(v), template.describe(v)    for messages
local yaml = require "geneva.yaml"
local errors = require "geneva.errors"

local NULL = yaml.null

local template = {}

local function isnull(v) return v == nil or v == NULL end

local function describe(v)
  if isnull(v) then return "null" end
  if math.type(v) == "integer" then return "an integer" end
  if math.type(v) == "float" then return "a number" end
  if type(v) == "table" then return next(v) == nil and "an empty collection"
    or (v[1] ~= nil and "a list" or "a map") end
  return "a " .. type(v)
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

-- Caps on what substitution may build, the defence YAML loaders have
-- against "billion laughs" (our yaml binding's max_alias_nodes, go-yaml's
-- alias budget): ten vars of ten uses each of the one before reached 3 GB.
-- A recipe is a few KB, so the caps are far above any real one and far
-- below what hurts a machine:
-- - MAX_BYTES: the text every substituted scalar adds up to (4 MiB);
-- - MAX_NODES: the list and map nodes whole `${name}` uses copy, as many as
--   the yaml binding lets aliases stand for (1e6, ~100 MB of Lua tables);
-- - MAX_DEPTH: vars whose values use vars, and defaults inside defaults; a
--   real chain is a handful long, and 64 keeps the recursion (pcall per
--   level) well inside Lua's C-stack limit (LUAI_MAXCCALLS, 200).
local MAX_BYTES = 4 * 1024 * 1024
local MAX_NODES = 1000000
local MAX_DEPTH = 64


-- A thrown substitution error: offset into the scalar text and a message.
local function sub_fail(at, msg) error({ sub_at = at, sub_msg = msg }, 0) end

-- A thrown cap: ends the whole expansion (template.expand) at the scalar
-- being substituted, since anything after it would only pile up more.
local function limit_fail(fmt, ...) error({ sub_limit = fmt:format(...) }, 0) end

-- parse(s) -> parts: strings and refs {name=, at=, default=parts|nil}.
-- nested: the depth of the default being parsed (nil at the top). Raises
-- sub_fail for a bad or unterminated reference.
local function parse_parts(s, i, nested, open_at)
  if nested and nested > MAX_DEPTH then
    sub_fail(open_at, ("defaults nested more than %d levels deep"):format(MAX_DEPTH))
  end
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
        def, j = parse_parts(s, j + 2, (nested or 0) + 1, i)
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

-- The nodes (tables and scalars) of v, counting no further than `stop`.
local function count_nodes(v, stop)
  if type(v) ~= "table" then return 1 end
  local n = 1
  for _, x in pairs(v) do
    n = n + count_nodes(x, stop - n)
    if n > stop then break end
  end
  return n
end

-- The substitution state of one load: vars, their sources and uses.
local Subst = {}
Subst.__index = Subst

local function too_deep(name)
  limit_fail("variables refer to variables more than %d levels deep (through '%s')", MAX_DEPTH, name)
end

-- lookup(name) -> value | nil (unset), declared
function Subst:lookup(name)
  self.used[name] = true
  local v = self.set[name]
  if v ~= nil then return v, true end
  if self.var_nodes and rawget(self.var_nodes, name) ~= nil then
    local depth
    v, depth = self:var_value(name)
    -- the var being resolved (if any) is one deeper than those it uses
    local top = #self.depth_stack
    if top > 0 and depth + 1 > self.depth_stack[top] then self.depth_stack[top] = depth + 1 end
    if depth + 1 > MAX_DEPTH then too_deep(name) end
    if isnull(v) then return nil, true end
    return v, true
  end
  return nil, false
end

-- A vars: default, substituted (it may refer to other vars); memoized.
-- -> value, depth (0 for a var that uses none, else one more than the
-- deepest it uses: the same whatever order the vars are resolved in).
function Subst:var_value(name)
  local memo = self.var_memo[name]
  if memo ~= nil then return memo[1], memo[2] end
  if self.resolving[name] then
    local chain = {}
    for _, n in ipairs(self.resolving_stack) do chain[#chain + 1] = n end
    chain[#chain + 1] = name
    error({ sub_cycle = ("variable '%s' refers to itself (%s)"):format(name, table.concat(chain, " -> ")) }, 0)
  end
  -- stops the recursion itself before the C stack does (one pcall a level)
  if #self.resolving_stack >= MAX_DEPTH then too_deep(name) end
  self.resolving[name] = true
  self.resolving_stack[#self.resolving_stack + 1] = name
  self.depth_stack[#self.depth_stack + 1] = 0
  local vp = self.var_pos
  local v = self:walk(self.var_nodes[name], vp and vp.values[name])
  local depth = self.depth_stack[#self.depth_stack]
  self.depth_stack[#self.depth_stack] = nil
  self.resolving_stack[#self.resolving_stack] = nil
  self.resolving[name] = nil
  self.var_memo[name] = { v, depth }
  return v, depth
end

function Subst:eval(parts, plain_whole)
  -- an unquoted scalar that is exactly ${name}: a list or map var goes in as is
  if plain_whole and #parts == 1 and type(parts[1]) == "table" then
    local p = parts[1]
    local v = self:lookup(p.name)
    if type(v) == "table" then
      self.nodes = self.nodes + count_nodes(v, MAX_NODES - self.nodes)
      if self.nodes > MAX_NODES then limit_fail("${...} expands to more than %d nodes", MAX_NODES) end
      return deep_copy(v, self.pos)
    end
  end
  local out, n, size = {}, 0, 0
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
    -- checked before the concat: the parts may be one big string many times
    if #out > n then
      n, size = #out, size + #out[#out]
      if self.bytes + size > MAX_BYTES then limit_fail("${...} expands to more than %d bytes", MAX_BYTES) end
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
    if type(v) == "string" then self.bytes = self.bytes + #v end
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
  if type(res) == "table" and res.sub_limit then
    self.problems:add(loc, "%s", res.sub_limit)
    self.problems:check()                    -- raises: no point going on
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

-- template.expand(doc, pos, src, set, problems) -> doc, pos, vars, used
-- doc and pos as yaml.load(text, {positions = true}) gives them, src from
-- template.source, set the vars given to recipe.load (--set). Returns a new
-- document with every scalar substituted except under `vars:`, which shows
-- the effective values; the positions of its tables (kind, order of keys,
-- key and value positions); the effective vars (set, then the recipe's
-- defaults); and the set of names a ${...} referred to. Problems are added
-- to `problems` (template.problems), for the caller to check.
function template.expand(doc, pos, src, set, problems)
  local st = setmetatable({ set = set, used = {}, src = src, src_pos = pos or {}, pos = {}, missing = {},
                            problems = problems, var_memo = {}, resolving = {},
                            resolving_stack = {}, depth_stack = {}, bytes = 0, nodes = 0 }, Subst)
  if type(doc) == "table" and doc[1] == nil and type(doc.vars) == "table" then
    local vp = pos[doc.vars]
    if vp and vp.kind == "map" then
      st.var_nodes, st.var_pos = doc.vars, vp
      for _, k in ipairs(vp.order) do
        if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then
          problems:add(vp.keys[k], "bad variable name '%s' (letters, digits and _, not starting with a digit)",
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

  -- effective vars: set values, then the recipe's defaults
  local vars = {}
  for k, v in pairs(set) do vars[k] = v end
  if st.var_nodes then
    for _, k in ipairs(st.var_pos.order) do
      if vars[k] == nil then
        local v = st.var_memo[k] and st.var_memo[k][1]
        if v == nil then v = st:var_value(k) end
        vars[k] = v
      end
    end
  end
  return out, st.pos, vars, st.used
end

template.isnull, template.describe = isnull, describe
template.source, template.problems = new_source, new_problems
template.value_text, template.deep_copy = value_text, deep_copy

return template
