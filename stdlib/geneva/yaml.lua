-- geneva.yaml: YAML for recipes and configuration (reader in bindings/yaml.c
-- over libyaml; the block-style writer is here).
--
-- Typing: plain (unquoted, untagged) scalars follow the YAML 1.2 core schema:
--   ~ null Null NULL and the empty scalar   -> yaml.null
--   true True TRUE false False FALSE        -> booleans
--   [-+]?[0-9]+  0o[0-7]+  0x[0-9a-fA-F]+   -> integers (past math.maxinteger:
--                                              floats, as Lua's decimal literals)
--   1.5 -2e3 .5 1.  .inf -.inf .nan (and .Inf/.INF/.NaN/.NAN) -> floats
--   anything else                           -> strings
-- Quoted scalars are always strings. Tags !!str !!int !!float !!bool !!null
-- are honoured (a value that does not fit, e.g. `!!int abc` or an `!!int`
-- beyond int64, fails with YAML_TAG); any other tag (`!!binary`, `!local`, `!`) leaves the scalar a
-- string and a collection what it is.
--
-- Nulls: `yaml.null` (a light userdata, equal to json.null and cjson.null)
-- stands for null everywhere, so `key: ~` keeps its key and a document that
-- is null still loads to a non-nil value: nil always means failure. nil
-- itself cannot be offered, since it would drop keys and punch holes in
-- sequences; `{null = v}` picks another non-nil sentinel (e.g. false).
--
-- Aliases share the anchored value: `*a` of a mapping is the same Lua table.
-- `<<` merge keys take a mapping or a sequence of mappings; keys written in
-- the mapping override merged ones, earlier sources override later ones.
--
-- Errors are returned, never raised: nil, "<file>:<line>:<col>: <what>", code
-- (1-based line and column; file is opts.filename or "<string>"). Codes:
--   YAML_PARSE          syntax, bad encoding/bytes, bad merge, >1 document
--   YAML_DUPLICATE_KEY  a key repeated in one mapping (position of the 2nd)
--   YAML_ALIAS          unknown alias, or an alias inside its own anchor
--   YAML_KEY            a key that is a mapping, a sequence, null or NaN
--   YAML_TAG            a !!int/!!float/!!bool/!!null value that does not fit
--                       (an !!int beyond int64 included)
--   YAML_LIMIT          nesting deeper than max_depth (1000), or aliases
--                       standing for more than max_alias_nodes (1e6) nodes
--   YAML_DUMP           (dump) a value YAML cannot carry
-- Misuse (a non-string input, a bad option) raises.
--
-- Positions: with {positions = true}, load also returns `pos`, a table keyed
-- by every mapping and sequence of the result (1-based line and col):
--   pos[map] = { line=, col=, kind = "map",
--                order  = {k1, k2, ...},            -- keys in document order
--                keys   = {[k] = {line=, col=}},    -- where each key starts
--                values = {[k] = {line=, col=, plain=true|nil}} }
--   pos[seq] = { line=, col=, kind = "seq",
--                items  = {[i] = {line=, col=, plain=true|nil}} }
-- `plain` marks a plain untagged scalar: the kind a recipe re-types with
-- yaml.resolve after substituting ${vars}; quoted ones stay strings. Merged
-- keys appear in `order` where the `<<` stood, with the positions they have
-- in their source mapping. An alias's position is where the alias is
-- written; a shared table has the one entry of its anchored node.
local core = require "geneva.yaml.core"

local yaml = {
  -- the value nulls load as (and dump as `null`)
  null = core.null,
}

-- yaml.resolve(str) -> value: the core-schema value of str as a plain
-- scalar ("1" -> 1, "true" -> true, "" -> yaml.null, "a b" -> "a b").
-- Raises if str is not a string.
yaml.resolve = core.resolve

-- {====== Loading

local load_opts = { filename = "string", positions = "boolean", null = "any",
                    max_depth = "number", max_alias_nodes = "number" }

local function check_opts(opts, fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("bad argument #2 to '%s' (table expected, got %s)"):format(fname, type(opts)), 3)
  end
  local o = {}
  for k, v in pairs(opts) do
    local want = load_opts[k]
    if not want then
      error(("bad argument #2 to '%s' (unknown option '%s'%s)"):format(fname, tostring(k),
        require("geneva.suggest").hint(k, load_opts)), 3)
    end
    if want ~= "any" and type(v) ~= want
        or want == "number" and math.type(v) ~= "integer" then
      error(("bad argument #2 to '%s' ('%s' must be %s)"):format(fname, k,
        want == "number" and "an integer" or "a " .. want), 3)
    end
    o[k] = v
  end
  return o
end

local function check_input(str, fname)
  if type(str) ~= "string" then
    error(("bad argument #1 to '%s' (string expected, got %s)"):format(fname, type(str)), 3)
  end
end

-- Applies the recorded `<<` merges, innermost first, so a source has its
-- own merges done before it is merged anywhere else.
local function apply_merges(merges, pos)
  for _, m in ipairs(merges) do
    local t, added = m.t, {}
    for _, src in ipairs(m.src) do
      local sp = pos and pos[src]
      local keys = {}
      if sp then
        keys = sp.order
      else
        for k in pairs(src) do keys[#keys + 1] = k end
      end
      for _, k in ipairs(keys) do
        if rawget(t, k) == nil then
          rawset(t, k, src[k])
          added[#added + 1] = k
          if sp then
            local tp = pos[t]
            tp.keys[k], tp.values[k] = sp.keys[k], sp.values[k]
          end
        end
      end
    end
    if pos and #added > 0 then
      local order, new = pos[t].order, {}
      for i = 1, m.at do new[#new + 1] = order[i] end
      for _, k in ipairs(added) do new[#new + 1] = k end
      for i = m.at + 1, #order do new[#new + 1] = order[i] end
      pos[t].order = new
    end
  end
end

local function run(str, o)
  local docs, pos, merges = core.load(str, o)
  if not docs then return nil, pos, merges end
  apply_merges(merges, pos)
  return docs, pos
end

-- yaml.load(str [, opts]) -> value [, pos] | nil, msg, code
-- One document (an empty input is yaml.null); a second document fails with
-- YAML_PARSE at its start. opts: filename, positions (see the header), null,
-- max_depth, max_alias_nodes. The result is new and owned by the caller
-- (aliases share tables within it). Raises on misuse only.
function yaml.load(str, opts)
  check_input(str, "load")
  local o = check_opts(opts, "load")
  o.single = true
  local docs, pos, code = run(str, o)
  if not docs then return nil, pos, code end
  local v = docs[1]
  if v == nil then v = o.null == nil and yaml.null or o.null end
  if o.positions then return v, pos end
  return v
end

-- yaml.load_all(str [, opts]) -> {doc1, doc2, ...} [, pos] | nil, msg, code
-- Every document of a stream, in order (an empty input gives {}); with
-- positions, one pos table covers the tables of all documents.
function yaml.load_all(str, opts)
  check_input(str, "load_all")
  local o = check_opts(opts, "load_all")
  local docs, pos, code = run(str, o)
  if not docs then return nil, pos, code end
  if o.positions then return docs, pos end
  return docs
end

-- }======

-- {====== Dumping

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    local rank = { number = 1, boolean = 2, string = 3 }
    return (rank[ta] or 4) < (rank[tb] or 4)
  end
  if ta == "boolean" then return (not a) and b end
  return a < b
end

-- Escapes for double-quoted scalars; YAML folds raw NEL/LS/PS, so they too.
local named = { ["\0"] = "\\0", ["\a"] = "\\a", ["\b"] = "\\b", ["\t"] = "\\t",
                ["\n"] = "\\n", ["\v"] = "\\v", ["\f"] = "\\f", ["\r"] = "\\r",
                ["\27"] = "\\e", ['"'] = '\\"', ["\\"] = "\\\\" }

local function quote(s)
  if not utf8.len(s) then return nil, "string is not valid UTF-8" end
  local out = {}
  for _, c in utf8.codes(s) do
    local ch = utf8.char(c)
    if named[ch] then
      out[#out + 1] = named[ch]
    elseif c < 0x20 or (c >= 0x7F and c <= 0x9F) or c == 0x2028 or c == 0x2029
        or c == 0xFEFF or c == 0xFFFE or c == 0xFFFF then
      out[#out + 1] = ("\\u%04X"):format(c)
    else
      out[#out + 1] = ch
    end
  end
  return '"' .. table.concat(out) .. '"'
end

-- YAML 1.1 readers (not ours) take these for booleans: quote them too.
local yaml11_bool = { y = true, n = true, yes = true, no = true, on = true,
                      off = true }

-- Whether s may be written plain and read back as the same string. On the
-- safe side: printable ASCII, no indicator first, no `: ` or ` #`.
local function plain_ok(s)
  return s:find("^[%w_/$(][%w_/$(). ,:;=+%-@~%%^&*<>{}|!?%[%]]*$") ~= nil
    and not s:find(" $") and not s:find(":$") and not s:find(": ", 1, true)
    and not s:find(" #", 1, true) and type(core.resolve(s)) == "string"
    and not yaml11_bool[s:lower()]
end

local function float_text(x)
  if x ~= x then return ".nan" end
  if x == math.huge then return ".inf" end
  if x == -math.huge then return "-.inf" end
  local s
  for p = 15, 17 do
    s = ("%." .. p .. "g"):format(x)
    if tonumber(s) == x then break end
  end
  if not s:find("[%.eEn]") then s = s .. ".0" end   -- keep it a float
  return s
end

local function scalar_text(v)
  local t = type(v)
  if t == "string" then
    if plain_ok(v) then return v end
    return quote(v)
  elseif math.type(v) == "integer" then
    return ("%d"):format(v)
  elseif t == "number" then
    return float_text(v)
  elseif t == "boolean" then
    return tostring(v)
  elseif v == nil or v == yaml.null then
    return "null"
  end
  return nil, "cannot dump a " .. t
end

local function is_seq(t)
  local n = #t
  if n == 0 then return false end
  local count = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
    count = count + 1
  end
  return count == n
end

local dump_fail = {}   -- error tag, so real bugs still raise

local function fail(msg) error({ dump_fail, msg }, 0) end

local function sorted_keys(t, opts)
  local p = opts.pos and opts.pos[t]
  local keys, seen = {}, {}
  if p and p.order then
    for _, k in ipairs(p.order) do
      if rawget(t, k) ~= nil and not seen[k] then keys[#keys + 1] = k; seen[k] = true end
    end
  end
  local rest = {}
  for k in pairs(t) do
    local tk = type(k)
    if tk ~= "string" and tk ~= "number" and tk ~= "boolean" then
      fail("cannot dump a " .. tk .. " key")
    end
    if k ~= k then fail("cannot dump a NaN key") end
    if not seen[k] then rest[#rest + 1] = k end
  end
  table.sort(rest, opts.cmp or key_order)
  for _, k in ipairs(rest) do keys[#keys + 1] = k end
  return keys
end

local function scalar_or_fail(v)
  local s, err = scalar_text(v)
  if not s then fail(err) end
  return s
end

-- Appends the lines of v, a table, at indentation `ind` to out.
local function block(v, ind, depth, opts, out, active)
  if depth > opts.max_depth then fail("nesting deeper than " .. opts.max_depth .. " levels") end
  if active[v] then fail("cannot dump a cyclic table") end
  active[v] = true
  local pad = (" "):rep(ind)
  -- prefix: "-" for a sequence item, "key:" for a mapping entry
  local function item(prefix, x)
    if type(x) == "table" and next(x) ~= nil then
      if prefix == "-" then
        -- the nested block's first line shares the dash: "- k: v", "- - x"
        local sub = {}
        block(x, ind + 2, depth + 1, opts, sub, active)
        out[#out + 1] = pad .. "- " .. sub[1]:sub(ind + 3)
        for i = 2, #sub do out[#out + 1] = sub[i] end
      else
        out[#out + 1] = pad .. prefix
        block(x, ind + 2, depth + 1, opts, out, active)
      end
    elseif type(x) == "table" then
      local p = opts.pos and opts.pos[x]
      out[#out + 1] = pad .. prefix .. ((p and p.kind == "seq") and " []" or " {}")
    else
      out[#out + 1] = pad .. prefix .. " " .. scalar_or_fail(x)
    end
  end
  if is_seq(v) then
    for i = 1, #v do item("-", v[i]) end
  else
    for _, k in ipairs(sorted_keys(v, opts)) do
      local ks = scalar_or_fail(k)
      if #ks > 1000 then
        -- libyaml reads implicit keys of up to 1024 characters: be explicit
        out[#out + 1] = pad .. "? " .. ks
        item(":", v[k])
      else
        item(ks .. ":", v[k])
      end
    end
  end
  active[v] = nil
end

-- yaml.dump(value [, opts]) -> string | nil, msg, "YAML_DUMP"
-- Block-style YAML that yaml.load reads back to an equal value: map keys
-- sorted (numbers, booleans, strings), strings quoted whenever they would
-- re-type or be misread, floats always written as floats. Tables whose keys
-- are exactly 1..n are sequences; empty tables are `{}`. Shared tables are
-- written out at each use (no anchors). opts:
--   order = pos   a positions table from load: keys in their loaded order,
--                 empty sequences as [] (other keys follow, sorted)
--   order = fn    a comparator for keys
--   max_depth     nesting limit (1000)
-- Fails (nil, msg, "YAML_DUMP") on functions, userdata other than
-- yaml.null, cycles, non-UTF-8 strings, table or NaN keys, too deep nesting.
-- Raises on bad options.
function yaml.dump(value, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error(("bad argument #2 to 'dump' (table expected, got %s)"):format(type(opts)), 2)
  end
  opts = opts or {}
  local o = { max_depth = opts.max_depth or 1000 }
  if type(opts.order) == "table" then o.pos = opts.order
  elseif type(opts.order) == "function" then o.cmp = opts.order
  elseif opts.order ~= nil then
    error("bad argument #2 to 'dump' ('order' must be a positions table or a function)", 2)
  end
  if math.type(o.max_depth) ~= "integer" then
    error("bad argument #2 to 'dump' ('max_depth' must be an integer)", 2)
  end
  local ok, res = pcall(function()
    if type(value) == "table" and next(value) ~= nil then
      local out = {}
      block(value, 0, 1, o, out, {})
      return table.concat(out, "\n") .. "\n"
    elseif type(value) == "table" then
      local p = o.pos and o.pos[value]
      return ((p and p.kind == "seq") and "[]" or "{}") .. "\n"
    end
    return scalar_or_fail(value) .. "\n"
  end)
  if ok then return res end
  if type(res) == "table" and res[1] == dump_fail then
    return nil, res[2], "YAML_DUMP"
  end
  error(res, 0)
end

-- }======

return yaml
