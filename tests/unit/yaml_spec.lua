-- memcheck
-- geneva.yaml: loading (core schema, anchors, merges, positions, errors,
-- limits) and dumping (quoting, round trips).
local yaml = require "geneva.yaml"

local function fails(code, pattern, ...)
  local v, msg, c = ...
  assert.is_nil(v)
  assert.are.equal(code, c)
  assert.is_string(msg)
  if pattern then
    assert(msg:find(pattern), ("%q does not match %q"):format(msg, pattern))
  end
  return msg
end

describe("geneva.yaml", function()
  describe("load", function()
    it("types plain scalars by the core schema and keeps quoted ones strings", function()
      local cases = {
        -- text, plain value, math.type or type
        { "~", yaml.null }, { "null", yaml.null }, { "Null", yaml.null },
        { "NULL", yaml.null }, { "", yaml.null },
        { "true", true }, { "True", true }, { "TRUE", true },
        { "false", false }, { "False", false }, { "FALSE", false },
        { "0", 0, "integer" }, { "42", 42, "integer" }, { "-17", -17, "integer" },
        { "+8", 8, "integer" }, { "007", 7, "integer" },
        { "0o17", 15, "integer" }, { "0x1F", 31, "integer" }, { "0xff", 255, "integer" },
        { "9223372036854775807", math.maxinteger, "integer" },
        { "1.5", 1.5, "float" }, { "-2.0", -2.0, "float" }, { ".5", 0.5, "float" },
        { "1.", 1.0, "float" }, { "1e3", 1000.0, "float" }, { "-1.5E-2", -0.015, "float" },
        { ".inf", math.huge, "float" }, { "-.Inf", -math.huge, "float" },
        { "+.INF", math.huge, "float" },
        { "yes", "yes" }, { "no", "no" }, { "on", "on" }, { "nul", "nul" },
        { "tRUE", "tRUE" }, { "0o8", "0o8" }, { "0xg", "0xg" }, { "1_000", "1_000" },
        { "1.2.3", "1.2.3" }, { "-0x10", "-0x10" }, { "e3", "e3" }, { ".", "." },
        { "inf", "inf" }, { "nan", "nan" }, { "12:30", "12:30" },
        { "${db}", "${db}" }, { "a b", "a b" },
      }
      for _, c in ipairs(cases) do
        local text, want, mt = c[1], c[2], c[3]
        local v = assert(yaml.load("v: " .. text .. "\n")).v
        assert.are.equal(want, v, "plain " .. text)
        if mt then assert.are.equal(mt, math.type(v), "type of " .. text) end
        assert.are.equal(want, yaml.resolve(text), "resolve " .. text)
        -- quoted: always the string itself
        assert.are.equal(text, assert(yaml.load("v: '" .. text .. "'\n")).v)
        assert.are.equal(text, assert(yaml.load('v: "' .. text .. '"\n')).v)
      end
      local nan = assert(yaml.load("v: .nan")).v
      assert.is_true(nan ~= nan)
      -- past 64 bits an integer becomes a float, like a Lua literal
      assert.are.equal("float", math.type(yaml.load("99999999999999999999")))
      assert.are.equal("float", math.type(yaml.load("0xFFFFFFFFFFFFFFFFF")))
    end)

    it("honours core tags and leaves other tags strings", function()
      local v = assert(yaml.load([[
a: !!str 12
b: !!int "12"
c: !!float 3
d: !!bool "true"
e: !!null ""
f: !!binary aGk=
g: !local 5
h: ! 5
i: !!float "-.inf"
]]))
      assert.are.equal("12", v.a)
      assert.are.equal(12, v.b); assert.are.equal("integer", math.type(v.b))
      assert.are.equal(3.0, v.c); assert.are.equal("float", math.type(v.c))
      assert.are.equal(true, v.d)
      assert.are.equal(yaml.null, v.e)
      assert.are.equal("aGk=", v.f)
      assert.are.equal("5", v.g)
      assert.are.equal("5", v.h)
      assert.are.equal(-math.huge, v.i)
      fails("YAML_TAG", "^<string>:2:4: invalid !!int value 'abc'$",
        yaml.load("a: 1\nb: !!int abc\n"))
      fails("YAML_TAG", "!!bool", yaml.load("!!bool yes"))
      -- an explicit !!int is never rounded into a float
      fails("YAML_TAG", "^r.yaml:3:6: !!int value '99999999999999999999' is beyond the int64 range$",
        yaml.load("a: 1\nb:\n  c: !!int 99999999999999999999\n", { filename = "r.yaml" }))
      fails("YAML_TAG", "!!int value '0x1FFFFFFFFFFFFFFFF' is beyond", yaml.load("!!int 0x1FFFFFFFFFFFFFFFF"))
      assert.are.equal(math.mininteger, yaml.load("!!int -9223372036854775808"))
    end)

    it("loads nulls as yaml.null, or the sentinel asked for", function()
      local v = assert(yaml.load("a: ~\nb:\nc: [~, 1]\n"))
      assert.are.equal(yaml.null, v.a)
      assert.are.equal(yaml.null, v.b)
      assert.are.same({ yaml.null, 1 }, v.c)
      assert.are.equal(yaml.null, yaml.load(""))
      assert.are.equal(yaml.null, yaml.load("# only a comment\n"))
      assert.are.equal(yaml.null, yaml.load("--- ~\n"))
      v = assert(yaml.load("a: ~\nb: [null]\n", { null = false }))
      assert.are.same({ a = false, b = { false } }, v)
    end)

    it("reads one document with load and all of them with load_all", function()
      local docs = assert(yaml.load_all("--- 1\n--- [a, b]\n---\nk: v\n...\n--- 'x'\n"))
      assert.are.same({ 1, { "a", "b" }, { k = "v" }, "x" }, docs)
      assert.are.same({}, assert(yaml.load_all("")))
      fails("YAML_PARSE", "^doc.yaml:3:1: expected a single document",
        yaml.load("a: 1\n# two\n---\nb: 2\n", { filename = "doc.yaml" }))
      -- anchors do not cross documents
      fails("YAML_ALIAS", "^<string>:2:5: unknown alias '%*a'",
        yaml.load_all("--- &a 1\n--- *a\n"))
    end)

    it("shares anchored values through aliases", function()
      local v = assert(yaml.load([[
base: &b {x: 1}
list: &l [*b, *b]
again: *l
name: &n hello
who: *n
]]))
      assert.are.equal(v.base, v.list[1])
      assert.are.equal(v.base, v.list[2])
      assert.are.equal(v.list, v.again)
      assert.are.equal("hello", v.who)
      fails("YAML_ALIAS", "^<string>:3:5: unknown alias '%*nope'$",
        yaml.load("a: 1\nb:\n  - *nope\n"))
      fails("YAML_ALIAS", "^<string>:1:9: alias '%*a' refers to a node that contains it",
        yaml.load("a: &a [ *a ]"))
    end)

    it("applies << merges: explicit keys win, then earlier sources", function()
      local v = assert(yaml.load([[
one: &one {a: 1, b: 1, c: 1}
two: &two {b: 2, d: 2}
single:
  <<: *one
  c: 3
many:
  x: 0
  <<: [*two, *one]
  d: 4
inline:
  <<: {k: v}
nested:
  <<: *one
  sub: &sub
    <<: *two
    e: 5
use_sub:
  <<: *sub
]]))
      assert.are.same({ a = 1, b = 1, c = 3 }, v.single)
      assert.are.same({ x = 0, a = 1, b = 2, c = 1, d = 4 }, v.many)
      assert.are.same({ k = "v" }, v.inline)
      assert.are.same({ b = 2, d = 2, e = 5 }, v.use_sub)
      assert.are.same({ a = 1, b = 1, c = 1 }, v.one)   -- sources untouched
      assert.is_nil(v.single["<<"])
      -- a quoted "<<" is an ordinary key
      assert.are.same({ ["<<"] = 1 }, assert(yaml.load("'<<': 1")))
      fails("YAML_PARSE", "^<string>:2:3: merge key '<<' needs a mapping",
        yaml.load("a:\n  <<: 5\n"))
      fails("YAML_PARSE", "merge key", yaml.load("a: &a [1]\nb:\n  <<: [*a]\n"))
      fails("YAML_DUPLICATE_KEY", "^<string>:3:3: duplicate merge key",
        yaml.load("a:\n  <<: {x: 1}\n  <<: {y: 1}\n"))
    end)

    it("rejects duplicate keys at the second key", function()
      local msg = fails("YAML_DUPLICATE_KEY", nil, yaml.load([[
jobs:
  first:
    table: docs
    column: words
    table: other
]], { filename = "recipe.yaml" }))
      assert.are.equal("recipe.yaml:5:5: duplicate mapping key 'table'", msg)
      fails("YAML_DUPLICATE_KEY", "^<string>:1:8: duplicate mapping key 1$",
        yaml.load("{1: a, 1: b}"))
      -- 1 and 1.0 are one Lua key
      fails("YAML_DUPLICATE_KEY", "1:8:", yaml.load("{1: a, 1.0: b}"))
      -- "1" and 1 are not
      assert.are.same({ [1] = "a", ["1"] = "b" }, assert(yaml.load("{1: a, '1': b}")))
    end)

    it("rejects keys Lua tables cannot hold", function()
      fails("YAML_KEY", "^<string>:1:2: mapping keys must be scalars", yaml.load("{[1]: a}"))
      fails("YAML_KEY", "must not be null", yaml.load("~: a"))
      fails("YAML_KEY", "NaN", yaml.load(".nan: a"))
    end)

    it("reports syntax errors with file:line:col", function()
      local msg = fails("YAML_PARSE", nil,
        yaml.load("a: 1\nb: 2\nc: d: e\n", { filename = "file.yaml" }))
      assert.are.equal("file.yaml:3:5: mapping values are not allowed in this context", msg)
      fails("YAML_PARSE", "^<string>:3:2: did not find expected key %(while parsing a block mapping at 1:1%)$",
        yaml.load("a:\n  b: 1\n c: 2\n"))
      fails("YAML_PARSE", "^<string>:2:2: did not find expected ',' or ']' %(while parsing a flow sequence at 1:4%)$",
        yaml.load("a: [1, 2\nb: 3\n"))
      fails("YAML_PARSE", "^<string>:2:1: did not find expected", yaml.load("k: [1, 2"))   -- at end of input
      fails("YAML_PARSE", "^<string>:2:4: found undefined tag handle", yaml.load("a: 1\nb: !e!x 2\n"))
    end)

    it("fails cleanly on non-UTF-8 and garbage input", function()
      fails("YAML_PARSE", "^<string>:2:6: invalid trailing UTF%-8 octet",
        yaml.load("a: 1\nb: x\195\40y\n"))
      fails("YAML_PARSE", "^<string>:1:1: invalid leading UTF%-8 octet %(0xFF%)$",
        yaml.load("\255\254g\0a\0r"))
      fails("YAML_PARSE", "control characters are not allowed", yaml.load("a: \0\1\2"))
      fails("YAML_PARSE", "^<string>:1:", yaml.load("\"unterminated"))
      fails("YAML_PARSE", nil, yaml.load("]]]["))
      -- every byte prefix of a valid document either loads or fails cleanly
      local doc = "a: &x {b: [1, 'two', \"thr\\u00e9e\"]}\nc: *x\nd: |\n  text\n"
      for i = 0, #doc do
        local v, msg, code = yaml.load(doc:sub(1, i))
        assert(v ~= nil or (type(msg) == "string" and code), i)
      end
      -- a UTF-8 BOM is fine
      assert.are.same({ a = 1 }, assert(yaml.load("\239\187\191a: 1\n")))
    end)

    it("returns positions of tables, keys and items", function()
      local src = [[
# recipe
vars: { db: ./data, table: docs }
jobs:
  words:
    table: ${table}
    where: "id <= ${max_id:-100}"
    list:
      - plain
      - 'quoted'
      - k: v
]]
      local v, pos = yaml.load(src, { positions = true, filename = "r.yaml" })
      assert.is_table(v)
      local top = pos[v]
      assert.are.same({ "vars", "jobs" }, top.order)
      assert.are.equal("map", top.kind)
      assert.are.same({ line = 2, col = 1 }, top.keys.vars)
      assert.are.same({ line = 2, col = 7 }, top.values.vars)
      assert.are.same({ "db", "table" }, pos[v.vars].order)
      assert.are.same({ line = 2, col = 21 }, pos[v.vars].keys.table)
      assert.are.same({ line = 2, col = 28, plain = true }, pos[v.vars].values.table)
      local words = pos[v.jobs.words]
      assert.are.same({ line = 5, col = 5 }, words.line and { line = words.line, col = words.col })
      assert.are.same({ "table", "where", "list" }, words.order)
      assert.are.same({ line = 5, col = 5 }, words.keys.table)
      assert.are.same({ line = 5, col = 12, plain = true }, words.values.table)
      assert.are.same({ line = 6, col = 12 }, words.values.where)   -- quoted: not plain
      local list = pos[v.jobs.words.list]
      assert.are.equal("seq", list.kind)
      assert.are.same({ line = 8, col = 9, plain = true }, list.items[1])
      assert.are.same({ line = 9, col = 9 }, list.items[2])
      assert.are.same({ line = 10, col = 9 }, list.items[3])
      assert.are.same({ line = 10, col = 9 }, pos[v.jobs.words.list[3]].keys.k)
      -- merged keys sit where << stood, with their source positions
      local m, mpos = yaml.load("b: &b {y: 1, z: 2}\nt:\n  x: 0\n  <<: *b\n  w: 3\n",
        { positions = true })
      assert.are.same({ "x", "y", "z", "w" }, mpos[m.t].order)
      assert.are.same({ line = 1, col = 8 }, mpos[m.t].keys.y)
      -- load_all: one pos table for all documents
      local docs, dpos = yaml.load_all("--- [a]\n--- {b: 1}\n", { positions = true })
      assert.are.same({ line = 1, col = 6, plain = true }, dpos[docs[1]].items[1])
      assert.are.same({ line = 2, col = 6 }, dpos[docs[2]].keys.b)
      -- without the option there is no second value
      assert.are.equal(1, select("#", yaml.load("a: 1")))
    end)

    it("caps nesting depth instead of overflowing the C stack", function()
      local deep = ("["):rep(5000) .. ("]"):rep(5000)
      fails("YAML_LIMIT", "^<string>:1:1001: nesting deeper than 1000 levels$", yaml.load(deep))
      local ok = ("["):rep(50) .. ("]"):rep(50)
      assert.is_table(assert(yaml.load(ok, { max_depth = 50 })))
      fails("YAML_LIMIT", "nesting deeper than 49", yaml.load(ok, { max_depth = 49 }))
      -- aliases cannot stack depth past the limit either
      local chain = "a: &a " .. ("["):rep(30) .. ("]"):rep(30) .. "\nb: [[[*a]]]\n"
      assert.is_table(assert(yaml.load(chain, { max_depth = 35 })))
      fails("YAML_LIMIT", "^<string>:2:7: nesting deeper than 33", yaml.load(chain, { max_depth = 33 }))
    end)

    it("stops alias bombs (billion laughs)", function()
      local lines = { "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]" }
      for i = 1, 9 do
        local refs = {}
        for j = 1, 10 do refs[j] = "*a" .. (i - 1) end
        lines[#lines + 1] = ("a%d: &a%d [%s]"):format(i, i, table.concat(refs, ", "))
      end
      local bomb = table.concat(lines, "\n") .. "\n"
      local t0 = os.clock()
      fails("YAML_LIMIT", "aliases expand to more than 1000000 nodes", yaml.load(bomb))
      assert(os.clock() - t0 < 5)
      -- a handful of levels is fine, and the limit is adjustable
      local small = table.concat(lines, "\n", 1, 3) .. "\n"
      assert.is_table(assert(yaml.load(small)))
      fails("YAML_LIMIT", "^<string>:2:55: aliases expand to more than 100 nodes$",
        yaml.load(small, { max_alias_nodes = 100 }))
    end)

    it("raises on misuse", function()
      assert.has_error(function() yaml.load(nil) end,
        "bad argument #1 to 'load' (string expected, got nil)")
      assert.has_error(function() yaml.load_all(42) end)
      assert.has_error(function() yaml.load("a", "b") end)
      assert.has_error(function() yaml.load("a", { positoins = true }) end,
        "bad argument #2 to 'load' (unknown option 'positoins' (did you mean 'positions'?))")
      assert.has_error(function() yaml.load("a", { filename = 1 }) end)
      assert.has_error(function() yaml.load("a", { max_depth = 0 }) end)
      assert.has_error(function() yaml.resolve({}) end)
    end)

    it("frees everything on every path (collectable results)", function()
      local weak = setmetatable({}, { __mode = "k" })
      for _ = 1, 3 do
        local v = assert(yaml.load("a: [1, {b: c}]\n", { positions = true }))
        weak[v] = true
        yaml.load("a: [1, {b: c}\n")   -- error mid-document
        yaml.load("a: *x")
      end
      collectgarbage(); collectgarbage()
      assert.is_nil(next(weak))
    end)
  end)

  describe("dump", function()
    local function round(v, opts)
      local s = assert(yaml.dump(v, opts))
      local back, msg = yaml.load(s)
      assert(back ~= nil, msg)
      return back, s
    end

    it("writes sorted block YAML", function()
      local s = assert(yaml.dump({ b = { 1, 2 }, a = "x", c = { d = true, e = {} },
        list = { { k = 1, l = 2 }, { 3, 4 } } }))
      assert.are.equal([[
a: x
b:
  - 1
  - 2
c:
  d: true
  e: {}
list:
  - k: 1
    l: 2
  - - 3
    - 4
]], s)
      assert.are.equal("42\n", yaml.dump(42))
      assert.are.equal("null\n", yaml.dump(yaml.null))
      assert.are.equal("{}\n", yaml.dump({}))
    end)

    it("quotes strings that would re-type or be misread", function()
      local tricky = { "true", "False", "1", "-2", "0x1F", "0o7", "1.5", "1e3", ".inf",
        "null", "~", "", " lead", "trail ", "a: b", "a #b", "#c", "- x", "-", "? q",
        "key:", "[1]", "{a}", "*x", "&y", "!t", "|", ">", "'s'", '"d"', "%p", "@a",
        "`b`", "---", "...", "line\nbreak", "tab\there", "nul\0byte", "\27esc",
        "caf\195\169", "\226\128\168ls", "yes", "off", "<<", "a,b", "${x}",
        "x ${y:-1} z", "C:\\path", "é" }
      for _, s in ipairs(tricky) do
        local back = round({ [s] = s, list = { s } })
        assert.are.equal(s, back[s], ("%q"):format(s))
        assert.are.equal(s, back.list[1], ("%q"):format(s))
        assert.are.equal(s, round(s), ("%q"):format(s))
      end
      -- and random strings of awkward characters
      math.randomseed(7)
      local chars = " ax09-_:#,[]{}&*!|>'\"%@`?~.\\/\t\n$<=+^()"
      for _ = 1, 300 do
        local b = {}
        for j = 1, math.random(0, 6) do
          local k = math.random(#chars)
          b[j] = chars:sub(k, k)
        end
        local s = table.concat(b)
        local back = round({ [s] = s, list = { s } })
        assert.are.equal(s, back[s], ("%q"):format(s))
        assert.are.equal(s, back.list[1], ("%q"):format(s))
      end
      -- keys too long for an implicit key are written explicitly
      local long = ("k"):rep(2000)
      assert.are.same({ [long] = { 1 }, x = { [long] = 2 } },
        round({ [long] = { 1 }, x = { [long] = 2 } }))
      assert.are.equal('"true"\n', yaml.dump("true"))
      assert.are.equal("plain words\n", yaml.dump("plain words"))
    end)

    it("keeps integers and floats apart", function()
      local v = { 1, 1.0, -0.0, 0.1, 1e300, 2^63, math.huge, -math.huge,
        math.mininteger, math.maxinteger, 1/3 }
      local back = round(v)
      for i = 1, #v do
        assert.are.equal(math.type(v[i]), math.type(back[i]), i)
        assert.are.equal(v[i], back[i], i)
      end
      assert.are.equal("- 1\n- 1.0\n", yaml.dump({ 1, 1.0 }))
      local nan = round({ 0/0 })[1]
      assert.is_true(nan ~= nan)
    end)

    it("round-trips what it loads", function()
      local src = [==[
vars: {db: ./data, n: 3}
jobs:
  words:
    column: words
    udf: {module: my_udfs, function: words, data_type: int64}
    where: "id <= 100"
    flags: [true, false, ~, 1.5, '2']
    nested: [[1, [2, {x: y}]], {}]
]==]
      local v = assert(yaml.load(src))
      local back = round(v)
      assert.are.same(v, back)
      -- mixed and odd keys
      local w = { [1] = "a", [3] = "c", [true] = "t", [2.5] = "f", s = yaml.null }
      assert.are.same(w, round(w))
    end)

    it("follows loaded key order with order = pos", function()
      local v, pos = yaml.load("z: 1\na: {q: [], b: 2}\nm: 3\n", { positions = true })
      assert.are.equal("z: 1\na:\n  q: []\n  b: 2\nm: 3\n", yaml.dump(v, { order = pos }))
      assert.are.equal("3: a\n2: b\n", yaml.dump({ [2] = "b", [3] = "a", [1] = nil },
        { order = function(a, b) return a > b end }))
    end)

    it("fails on values YAML cannot carry", function()
      fails("YAML_DUMP", "cannot dump a function", yaml.dump({ f = print }))
      local cyc = {}; cyc.self = cyc
      fails("YAML_DUMP", "cyclic", yaml.dump(cyc))
      fails("YAML_DUMP", "UTF%-8", yaml.dump({ "\255" }))
      fails("YAML_DUMP", "key", yaml.dump({ [{}] = 1 }))
      local deep = {}
      for _ = 1, 20 do deep = { deep } end
      fails("YAML_DUMP", "nesting", yaml.dump(deep, { max_depth = 10 }))
      -- shared (acyclic) tables are fine
      local shared = { 1 }
      assert.are.same({ a = { 1 }, b = { 1 } }, round({ a = shared, b = shared }))
      assert.has_error(function() yaml.dump(1, 2) end)
      assert.has_error(function() yaml.dump(1, { order = 3 }) end)
    end)
  end)
end)
