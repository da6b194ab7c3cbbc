-- geneva.json: JSON that keeps Lua 5.4's integers and floats apart and tells
-- `[]` from `{}` (encoder and decoder in bindings/json.c; see its header for
-- the number rules). Raising variants belong to callers: `assert(json.decode(s))`.
local core = require "geneva.json.core"

local json = {
  -- json.null: the sentinel `null` decodes to; encodes as null (cjson.null too)
  null = core.null,
  -- metatables marking tables as arrays / objects for the encoder
  array_mt = core.array_mt,
  object_mt = core.object_mt,
  -- decode(str [, {null_as_nil = bool, exact_integers = bool, unique_keys = bool}])
  -- -> value | nil, msg, "JSON_PARSE"; text must be UTF-8 (a bad byte or lone
  -- surrogate \u fails with its offset). exact_integers: an integer beyond
  -- int64 fails (else it becomes a float); unique_keys: a repeated key fails
  -- (else the last one wins).
  decode = core.decode,
  -- encode(v [, {indent = n, sort_keys = bool, invalid_utf8 = "error"|"replace"}])
  -- -> string; raises with a path (also on a string that is not UTF-8, unless
  -- invalid_utf8 = "replace": then each bad byte is U+FFFD; for output to people)
  encode = core.encode,
  -- canonical(v) -> string: compact, sorted keys; stable across processes
  canonical = core.canonical,
}

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

-- json.array([t]) -> t: marks t (default: a new table) to encode as an array,
-- `[]` when empty. Raises if t has a metatable of its own. Modifies t.
function json.array(t) return mark(t, json.array_mt, "array") end

-- json.object([t]) -> t: marks t to encode as an object, `{}` when empty;
-- integer keys then encode as strings. Same rules as json.array.
function json.object(t) return mark(t, json.object_mt, "object") end

-- json.is_array(v) -> boolean: whether v is a table marked as array.
function json.is_array(v)
  return type(v) == "table" and getmetatable(v) == json.array_mt
end

return json
