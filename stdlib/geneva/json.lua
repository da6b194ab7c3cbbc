--- JSON that keeps Lua 5.4's integers and floats apart and tells `[]` from
-- `{}` (the encoder and decoder are C, in bindings/json.c). Usable in UDFs:
-- a UDF's upvalue `local json = require "geneva.json"` is required again on
-- the worker. Raising variants belong to callers: `assert(json.decode(s))`.
-- @module geneva.json
-- @usage local json = require "geneva.json"
-- local t = assert(json.decode('{"a": [1, 2.5, null]}'))
-- print(json.encode(t, { sort_keys = true }))   --> {"a":[1,2.5,null]}
local core = require "geneva.json.core"

local json = {
  null = core.null,
  -- metatables marking tables as arrays / objects for the encoder
  array_mt = core.array_mt,
  object_mt = core.object_mt,
  decode = core.decode,
  encode = core.encode,
  canonical = core.canonical,
}

--- The sentinel `null` decodes to; encodes as null. `geneva.null` is the same
-- value, and `tostring` gives `"geneva.null"`.
-- @field null

-- null is the NULL light userdata (shared with geneva.sqlite, geneva.yaml
-- and lua-cjson): it prints as "geneva.null", not "userdata: (nil)". The
-- metatable of a light userdata is every light userdata's, so any other
-- keeps Lua's own "userdata: 0x..." form.
if debug.getmetatable(core.null) == nil then
  debug.setmetatable(core.null, { __tostring = function(v)
    if v == core.null then return "geneva.null" end
    return ("userdata: %p"):format(v)
  end })
end

--- Decodes JSON text (UTF-8: a bad byte or a lone surrogate `\u` fails with
-- its offset).
-- @function decode
-- @string text
-- @tab[opt] opts `null_as_nil` (null becomes `nil`, not @{null}),
-- `exact_integers` (an integer beyond int64 fails instead of becoming a
-- float), `unique_keys` (a repeated key fails instead of the last winning),
-- `key_order` (a second result lists a top-level object's keys in the
-- order of the text, null members too)
-- @return[1] the value
-- @treturn[1] table with `key_order`: the keys
-- @return[2] nil
-- @treturn[2] string the message, with the offset
-- @treturn[2] string `"JSON_PARSE"`

--- Encodes a value; integers stay integers, floats keep a fraction or
-- exponent. An empty table is `{}` unless marked with @{array}.
-- @function encode
-- @param v
-- @tab[opt] opts `indent` (spaces), `sort_keys`, `invalid_utf8` (`"error"`,
-- the default, or `"replace"`: each bad byte becomes U+FFFD)
-- @treturn string
-- @raise with the path of the value that cannot be encoded

--- Compact JSON with sorted keys: the same text for the same value in every
-- process (for hashing).
-- @function canonical
-- @param v
-- @treturn string

-- (the faces above are C functions)

local function mark(t, mt, fname)
  if t == nil then return setmetatable({}, mt) end
  if type(t) ~= "table" then
    error(("bad argument #1 to '%s' (table expected, got %s)"):format(fname, type(t)), 3)
  end
  local old = getmetatable(t)
  if old ~= nil and old ~= json.array_mt and old ~= json.object_mt then
    error(("bad argument #1 to '%s' (table already has a metatable)"):format(fname), 3)
  end
  return setmetatable(t, mt)
end

--- Marks a table to encode as an array, `[]` when empty.
-- @tab[opt] t default: a new table (modified and returned)
-- @treturn table t
-- @raise if t has a metatable of its own
function json.array(t) return mark(t, json.array_mt, "array") end

--- Marks a table to encode as an object, `{}` when empty; integer keys then
-- encode as strings.
-- @tab[opt] t default: a new table (modified and returned)
-- @treturn table t
-- @raise if t has a metatable of its own
function json.object(t) return mark(t, json.object_mt, "object") end

--- Whether v is a table marked with @{array}.
-- @param v
-- @treturn boolean
function json.is_array(v)
  return type(v) == "table" and getmetatable(v) == json.array_mt
end

return json
