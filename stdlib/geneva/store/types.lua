-- geneva.store.types: column data types (README, Types): int64, float64, string, bool,
-- blob and float32[N] vectors. Checks values returned by UDFs and converts
-- between Lua values and what SQLite stores (vectors are little-endian
-- float32 blobs, bools 0/1). NULL is nil everywhere here.
--
-- NaN: SQLite stores a NaN REAL as NULL, so a float64 NaN is
-- stored as an 8-byte BLOB, its little-endian IEEE 754 bits (sign and
-- payload kept), and from_sql turns such a BLOB back into the NaN. Every
-- other float64 (infinities included) is a plain REAL; -0.0 reads back as
-- 0.0 (SQLite stores an integral REAL as an integer), kept a number so SQL
-- compares it as one. Vectors keep NaN in their blob anyway.
local types = {}

local scalar = {
  int64 = "INTEGER", float64 = "REAL", string = "TEXT", bool = "INTEGER", blob = "BLOB",
}

local cache = {}

-- types.parse(name) -> {name=, kind=, dim=, sql=} | nil, reason
function types.parse(name)
  if type(name) ~= "string" then return nil, "data_type must be a string" end
  if cache[name] then return cache[name] end
  local t
  if scalar[name] then
    t = { name = name, kind = name, sql = scalar[name] }
  else
    local dim = name:match("^float32%[(%d+)%]$")
    dim = dim and math.tointeger(tonumber(dim))
    if not dim or dim < 1 or dim > 65536 then
      return nil, ("unknown data_type '%s' (expected int64, float64, string, bool, blob or float32[N])"):format(name)
    end
    t = { name = name, kind = "vector", dim = dim, sql = "BLOB",
          fmt = "<" .. string.rep("f", dim) }
  end
  cache[name] = t
  return t
end

-- A value as an error message shows it: a string quoted, on one line, cut
-- at 40 bytes (a bad CSV cell can be a megabyte)
local function describe(v)
  if type(v) == "string" then
    local q = ("%q"):format(v:sub(1, 40)):gsub("\\\n", "\\n")
    return #v > 40 and ("%s... (%d bytes)"):format(q, #v) or q
  end
  return tostring(v) .. " (" .. (math.type(v) or type(v)) .. ")"
end
types.describe = describe

-- types.check(t, v) -> normalized value | nil, reason. nil is valid (NULL).
-- int64 accepts integral floats; strings are never coerced to numbers.
function types.check(t, v)
  if v == nil then return nil end
  local k = t.kind
  if k == "int64" then
    if math.type(v) == "integer" then return v end
    if math.type(v) == "float" then
      local i = math.tointeger(v)
      if i then return i end
    end
    return nil, "expected int64, got " .. describe(v)
  elseif k == "float64" then
    if type(v) == "number" then return v + 0.0 end
    return nil, "expected float64, got " .. describe(v)
  elseif k == "string" then
    if type(v) == "string" then return v end
    return nil, "expected string, got " .. describe(v)
  elseif k == "bool" then
    if type(v) == "boolean" then return v end
    return nil, "expected bool, got " .. describe(v)
  elseif k == "blob" then
    if type(v) == "string" then return v end
    return nil, "expected blob (a string), got " .. describe(v)
  else -- vector
    if type(v) ~= "table" then return nil, ("expected %s (an array), got %s"):format(t.name, describe(v)) end
    local n = #v
    if n ~= t.dim then return nil, ("expected %s, got an array of %d"):format(t.name, n) end
    for i = 1, n do
      if type(v[i]) ~= "number" then
        return nil, ("expected %s, element %d is %s"):format(t.name, i, describe(v[i]))
      end
    end
    return v
  end
end

local sqlite_blob   -- geneva.sqlite's blob(), loaded on first use

-- types.to_sql(t, v) -> value to bind (v already checked). Blobs, vectors
-- and float64 NaN come back wrapped by geneva.sqlite.blob(bytes), so binding
-- them stores a BLOB (a plain string would be stored as TEXT); the wrapper's
-- .blob field holds the bytes of blobs and vectors too.
function types.to_sql(t, v)
  if v == nil then return nil end
  local k = t.kind
  if k == "bool" then return v and 1 or 0 end
  if k == "float64" and v ~= v then          -- NaN
    sqlite_blob = sqlite_blob or require("geneva.sqlite").blob
    return sqlite_blob(string.pack("<d", v))
  end
  if k == "vector" or k == "blob" then
    sqlite_blob = sqlite_blob or require("geneva.sqlite").blob
    local bytes = k == "blob" and v or string.pack(t.fmt, table.unpack(v, 1, t.dim))
    local w = sqlite_blob(bytes)
    w.blob = bytes      -- the earlier {blob = bytes} shape, for older callers
    return w
  end
  return v
end

-- types.is_null(v) -> boolean: nil or one of the NULL sentinels
-- (geneva.null / json.null, sqlite.null / cjson.null).
local json_null, sqlite_null
function types.is_null(v)
  if v == nil then return true end
  if type(v) ~= "userdata" then return false end     -- light or full
  json_null = json_null or require("geneva.json").null
  sqlite_null = sqlite_null or require("geneva.sqlite").null
  return v == json_null or v == sqlite_null
end

-- types.infer_value(v) -> type name | nil, reason: the type of one Lua value
-- (integer int64, float float64, string, boolean bool, an array of N
-- numbers float32[N]); nil for NULL.
function types.infer_value(v)
  local tv = type(v)
  if tv == "number" then return math.type(v) == "integer" and "int64" or "float64" end
  if tv == "string" then return "string" end
  if tv == "boolean" then return "bool" end
  if tv == "table" then
    local n = #v
    if n == 0 then return nil, "cannot infer a type from an empty table" end
    for i = 1, n do
      if type(v[i]) ~= "number" then return nil, "cannot infer a type from a table that is not an array of numbers" end
    end
    return ("float32[%d]"):format(n)
  end
  return nil, "cannot store a " .. tv
end

-- types.from_sql(t, v) -> Lua value
function types.from_sql(t, v)
  if v == nil then return nil end
  local k = t.kind
  if k == "bool" then return v ~= 0 end
  if k == "vector" then
    if type(v) ~= "string" or #v ~= 4 * t.dim then return nil end
    local out = { string.unpack(t.fmt, v) }
    out[t.dim + 1] = nil          -- drop unpack's next position
    return out
  end
  if k == "float64" then
    if math.type(v) == "integer" then return v + 0.0 end
    if type(v) == "string" and #v == 8 then return (string.unpack("<d", v)) end   -- NaN
  end
  return v
end

--[[
types.infer_csv(facts) -> type name for a CSV column | nil, row, reason.
facts: what geneva.csv.core.classify counted over the column's non-empty
cells (values, ints, floats, bools; big/big_value: the first integer beyond
int64; zero/zero_value: the first with a leading zero). The rules:
  - a leading zero ("007", "-01", "00.5") makes it string: an id or a code;
  - all integers: int64, but one beyond int64 is an error (row and reason),
    not a column of rounded floats; so in a float64 column;
  - all numbers (not hex): float64; all true/false: bool; else string;
  - no values at all: string.
]]
function types.infer_csv(f)
  if f.values == 0 or f.zero then return "string" end
  if f.ints == f.values or f.floats == f.values then
    if f.big then return nil, f.big, ("integer %s is beyond the int64 range"):format(f.big_value) end
    return f.ints == f.values and "int64" or "float64"
  end
  if f.bools == f.values then return "bool" end
  return "string"
end

-- types.parse_cell(t, s) -> value | nil, reason: a CSV cell as Lua sees it
-- ("" is NULL); geneva.csv.core reads cells alike in C, and ingest words its
-- errors with this
function types.parse_cell(t, s)
  if s == "" then return nil end
  local k = t.kind
  if k == "int64" then
    local digits = s:match("^[+-]?%d+$")
    local v = digits and math.tointeger(tonumber(s))
    if v then return v end
    if digits then return nil, ("integer %s is beyond the int64 range"):format(#s <= 60 and s or describe(s)) end
    return nil, ("expected int64, got %s"):format(describe(s))
  elseif k == "float64" then
    local v = tonumber(s)
    if v and not s:match("^%s*[+-]?0[xX]") then return v + 0.0 end
    return nil, ("expected float64, got %s"):format(describe(s))
  elseif k == "bool" then
    if s == "true" then return true elseif s == "false" then return false end
    return nil, ("expected bool (true/false), got %s"):format(describe(s))
  elseif k == "string" or k == "blob" then
    return s
  end
  return nil, ("%s cannot be read from CSV"):format(t.name)
end

return types
