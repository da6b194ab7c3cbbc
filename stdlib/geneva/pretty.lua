--- Readable, bounded rendering of Lua values, as the REPL prints them.
--
-- Tables print nested with sorted keys. What could flood a terminal is cut:
-- arrays after `max_items` entries (`… 4990 more`), maps after `max_keys`
-- keys, nesting below `max_depth` (`{…}`), long strings inside tables, and
-- cycles (`<cycle>`). An object, a value whose metatable has `__tostring`
-- (a `geneva.Table`, `geneva.Job`, `geneva.Udf`, `geneva.Db`, a schema,
-- an error), prints as its one line in angle brackets:
-- `<geneva.Table docs v3 (4 columns)>`; so do the job records that
-- `db:jobs()` lists. An array also indexed by name (a schema) prints its
-- entries once, not once per index and once per name. `geneva.null` prints
-- as `geneva.null`.
-- @module geneva.pretty
local pretty = {}

local NULL = require("geneva.json").null

--- The default limits; `pretty.format`'s options override them.
-- @table defaults
-- @field max_depth tables nested deeper print as `{…}` (4)
-- @field max_items array entries shown before `… N more` (10)
-- @field max_keys named fields shown before `… N more keys` (30)
-- @field max_string a string inside a table longer than this is cut (120)
pretty.defaults = { max_depth = 4, max_items = 10, max_keys = 30, max_string = 120 }

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function scalar(v, limit)
  if type(v) == "string" then
    if limit and #v > limit then
      -- cut on a character boundary: never half of a UTF-8 sequence
      local cut = utf8.offset(v, 0, limit + 1)
      if cut < limit - 3 then cut = limit + 1 end     -- not text: bytes
      return ("%q… (%d bytes)"):format(v:sub(1, cut - 1), #v)
    end
    return string.format("%q", v)
  end
  if math.type(v) == "float" and v == math.floor(v) and v == v and v ~= math.huge
      and v ~= -math.huge then
    return string.format("%.1f", v)
  end
  return tostring(v)
end

-- An object's one line (`<name ...>`), or nil for plain data. A __tostring
-- that raises (a table handle whose files are gone) still gives a line.
local function object(v)
  local mt = getmetatable(v)
  if type(mt) ~= "table" or not mt.__tostring then return nil end
  local ok, s = pcall(tostring, v)
  local name = type(mt.__name) == "string" and mt.__name or nil
  if not ok then s = (name or type(v)) .. " (" .. tostring(s) .. ")" end
  if s:find("\n") or s:sub(1, 1) == "<" then return s end
  if name and s:sub(1, #name) ~= name then s = name .. " " .. s end
  return "<" .. s .. ">"
end

local function key_text(k, opts)
  return is_identifier(k) and k or "[" .. scalar(k, opts.max_string) .. "]"
end

-- A table of scalars that fits on a line prints on one: `{id = 1, x = "a"}`.
local INLINE_WIDTH = 72
local function inline(v, n, keys, opts)
  local parts, width = {}, 0
  local function add(s)
    width = width + #s + 2
    parts[#parts + 1] = s
    return width <= INLINE_WIDTH
  end
  for i = 1, n do
    if type(v[i]) == "table" or not add(scalar(v[i], opts.max_string)) then return nil end
  end
  for _, k in ipairs(keys) do
    local x = v[k]
    if type(x) == "table" or not add(key_text(k, opts) .. " = " .. scalar(x, opts.max_string)) then return nil end
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

local function render(v, indent, depth, seen, opts, out)
  if rawequal(v, NULL) then out[#out + 1] = "geneva.null"; return end   -- as the REPL user types it
  if type(v) ~= "table" then
    out[#out + 1] = type(v) == "userdata" and object(v) or scalar(v, depth > 0 and opts.max_string)
    return
  end
  local obj = object(v)
  if obj then out[#out + 1] = obj; return end
  if seen[v] then out[#out + 1] = "<cycle>"; return end
  local n = #v
  local keys, listed = {}, {}
  for i = 1, n do if type(v[i]) == "table" then listed[v[i]] = true end end
  for k, x in next, v do
    local in_array = math.type(k) == "integer" and k >= 1 and k <= n
    -- a name that only indexes an entry already listed (schema["id"])
    if not in_array and not (type(k) == "string" and listed[x]) then keys[#keys + 1] = k end
  end
  if n == 0 and #keys == 0 then out[#out + 1] = "{}"; return end
  if depth >= opts.max_depth then out[#out + 1] = "{…}"; return end
  table.sort(keys, key_order)
  local line = n <= opts.max_items and #keys <= opts.max_keys and inline(v, n, keys, opts)
  if line then out[#out + 1] = line; return end
  seen[v] = true
  local pad = string.rep("  ", indent + 1)
  out[#out + 1] = "{\n"
  local shown = math.min(n, opts.max_items)
  for i = 1, shown do
    out[#out + 1] = pad
    render(v[i], indent + 1, depth + 1, seen, opts, out)
    out[#out + 1] = ",\n"
  end
  if n > shown then out[#out + 1] = ("%s… %d more\n"):format(pad, n - shown) end
  local named = math.min(#keys, opts.max_keys)
  for i = 1, named do
    local k = keys[i]
    out[#out + 1] = pad
    out[#out + 1] = key_text(k, opts) .. " = "
    render(v[k], indent + 1, depth + 1, seen, opts, out)
    out[#out + 1] = ",\n"
  end
  if #keys > named then out[#out + 1] = ("%s… %d more keys\n"):format(pad, #keys - named) end
  out[#out + 1] = string.rep("  ", indent) .. "}"
  seen[v] = nil
end

--- Renders a value as text.
-- @param v any value
-- @tparam[opt] table opts limits: `max_depth`, `max_items`, `max_keys`,
-- `max_string` (see `defaults`)
-- @treturn string
-- @raise `invalid_argument` for an unknown option
-- @usage pretty.format({ id = 1, tags = { "a", "b" } })  --> '{\n  id = 1,\n  tags = {"a", "b"},\n}'
-- pretty.format({ 1, 2, 3 }, { max_items = 2 })          --> '{\n  1,\n  2,\n  … 1 more\n}'
function pretty.format(v, opts)
  if opts ~= nil then require("geneva.suggest").check_options("pretty.format", opts, pretty.defaults) end
  local o = {}
  for k, d in pairs(pretty.defaults) do o[k] = opts and opts[k] or d end
  local out = {}
  render(v, 0, 0, {}, o, out)
  return table.concat(out)
end

--- Writes each value formatted, tab-separated, and a newline to stdout
-- (what the REPL does with a statement's results).
-- @param ... values
function pretty.print(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = pretty.format((select(i, ...))) end
  io.stdout:write(table.concat(parts, "\t"), "\n")
end

return pretty
