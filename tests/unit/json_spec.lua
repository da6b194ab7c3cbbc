-- memcheck
-- geneva.json: numbers keep their Lua subtype, [] vs {}, null, canonical form,
-- errors with positions and paths. Kept quick: it also runs under valgrind.
local json = require "geneva.json"
local child = require "child"

local function rt(s) return json.encode(assert(json.decode(s))) end

describe("geneva.json", function()
  describe("numbers", function()
    it("decodes integers as integers and the rest as floats", function()
      local v = json.decode("[1, -7, 0, 1.0, 2.5, 1e2, 1E-2, -0.0]")
      assert.same({"integer", "integer", "integer", "float", "float", "float", "float", "float"},
        {math.type(v[1]), math.type(v[2]), math.type(v[3]), math.type(v[4]),
         math.type(v[5]), math.type(v[6]), math.type(v[7]), math.type(v[8])})
      assert.equal(100.0, v[6])
      assert.equal(1, json.decode("1"))
      assert.equal("integer", math.type(json.decode("1")))
    end)

    it("keeps 64-bit integers exact", function()
      assert.equal(9007199254740993, json.decode("9007199254740993"))
      assert.equal(math.mininteger, json.decode("-9223372036854775808"))
      assert.equal(math.maxinteger, json.decode("9223372036854775807"))
      assert.equal("integer", math.type(json.decode("-9223372036854775808")))
      assert.equal("9007199254740993", json.encode(9007199254740993))
      assert.equal("-9223372036854775808", json.encode(math.mininteger))
      assert.equal("123456789012345678", json.encode(123456789012345678))
      assert.equal("[9223372036854775807,-9223372036854775808]",
        rt("[9223372036854775807, -9223372036854775808]"))
    end)

    it("turns integers beyond int64 into floats", function()
      local v = json.decode("9223372036854775808")
      assert.equal("float", math.type(v))
      assert.equal(2^63, v)
      assert.equal("float", math.type(json.decode("-9223372036854775809")))
      assert.equal("float", math.type(json.decode("1" .. string.rep("0", 30))))
      assert.equal(1e30, json.decode("1" .. string.rep("0", 30)))
    end)

    it("refuses integers beyond int64 with exact_integers", function()
      local o = { exact_integers = true }
      assert.equal(math.maxinteger, json.decode("9223372036854775807", o))
      assert.equal(math.mininteger, json.decode("-9223372036854775808", o))
      assert.equal(1e30, json.decode("1e30", o))                  -- a float is a float
      local v, err, code = json.decode('{"id": 99999999999999999999}', o)
      assert.is_nil(v)
      assert.equal("JSON_PARSE", code)
      assert.equal("json: integer 99999999999999999999 is beyond the int64 range at line 1, column 8 (byte 8)", err)
      _, err = json.decode("[-9223372036854775809]", o)
      assert.matches("integer %-9223372036854775809 is beyond", err)
    end)

    it("encodes integral floats with .0 so they come back as floats", function()
      assert.equal("1.0", json.encode(1.0))
      assert.equal("-0.0", json.encode(-0.0))
      assert.equal("1e+300", json.encode(1e300))
      assert.equal("float", math.type(json.decode(json.encode(2.0))))
      assert.equal("float", math.type(json.decode(json.encode(1e300))))
      assert.equal("[1,1.0]", json.encode({1, 1.0}))
    end)

    it("encodes floats in the shortest form that round-trips", function()
      assert.equal("0.1", json.encode(0.1))
      assert.equal("0.3333333333333333", json.encode(1 / 3))
      assert.equal("9.223372036854776e+18", json.encode(2^63))
      for _, x in ipairs({0.1, 1 / 3, math.pi, 2^-1074, 1.7976931348623157e308, -123.456, 1e-7}) do
        local back = json.decode(json.encode(x))
        assert.equal(x, back)
        assert.equal("float", math.type(back))
      end
    end)

    it("rejects NaN and infinities with the path", function()
      assert.error_matches(function() json.encode({a = {0 / 0}}) end, "cannot encode NaN at %.a%[1%]")
      assert.error_matches(function() json.encode(math.huge) end, "infinity at top level")
      local v, err, code = json.decode("[1e999]")
      assert.is_nil(v)
      assert.equal("JSON_PARSE", code)
      assert.matches("out of range", err)
    end)
  end)

  describe("arrays, objects and null", function()
    it("round-trips [] and {}", function()
      assert.equal("[]", rt("[]"))
      assert.equal("{}", rt("{}"))
      assert.equal('{"a":[],"b":{}}', json.canonical(json.decode('{"b":{},"a":[]}')))
      assert.equal("[[],[[]]]", rt("[[],[[]]]"))
    end)

    it("marks decoded arrays, and json.array/json.object mark tables", function()
      local v = json.decode('[1, {"x": [2]}]')
      assert.is_true(json.is_array(v))
      assert.is_true(json.is_array(v[2].x))
      assert.is_false(json.is_array(v[2]))
      assert.equal(json.array_mt, getmetatable(v))
      assert.equal("[]", json.encode(json.array()))
      assert.equal("[]", json.encode(json.array({})))
      assert.equal("{}", json.encode({}))
      assert.equal("{}", json.encode(json.object()))
      assert.equal('{"1":"a","2":"b"}', json.canonical(json.object({"a", "b"})))
      assert.equal("[1,2]", json.encode(json.array({1, 2})))
    end)

    it("refuses to re-mark a table with a foreign metatable", function()
      local t = setmetatable({}, {})
      assert.error_matches(function() json.array(t) end, "already has a metatable")
      assert.error_matches(function() json.object(42) end, "table expected")
    end)

    it("maps null to json.null and back", function()
      local v = json.decode('[null, {"a": null}]')
      assert.equal(json.null, v[1])
      assert.equal(json.null, v[2].a)
      assert.equal(require("geneva.sqlite").null, json.null)   -- one NULL sentinel
      assert.equal("null", json.encode(json.null))
      assert.equal('[null,{"a":null}]', json.encode(v))
      assert.equal(json.null, json.decode("null"))
      assert.equal("null", json.encode(require("cjson").null))
    end)

    it("drops null members with null_as_nil, keeping arrays whole", function()
      local v = json.decode('{"a": null, "b": [1, null, 3], "c": 1}', {null_as_nil = true})
      assert.is_nil(v.a)
      assert.equal(json.null, v.b[2])
      assert.equal(3, #v.b)
      assert.equal(json.null, json.decode("null", {null_as_nil = true}))
      assert.error_matches(function() json.decode("1", {nul = true}) end, "unknown option 'nul'")
    end)

    it("refuses repeated keys with unique_keys, naming the key", function()
      assert.equal(2, json.decode('{"a": 1, "a": 2}').a)          -- by default the last wins
      local o = { unique_keys = true }
      local v, err = json.decode('{"a": 1, "b": {"c": 1, "c": 2}}', o)
      assert.is_nil(v)
      assert.equal("json: duplicate key 'c' at line 1, column 24 (byte 24)", err)
      -- also when the first value was null and null_as_nil drops it
      _, err = json.decode('{"a": null, "a": 2}', { unique_keys = true, null_as_nil = true })
      assert.matches("duplicate key 'a'", err, 1, true)
      v = json.decode('{"a": null, "b": {"c": null}, "d": [null]}', { unique_keys = true, null_as_nil = true })
      assert.same({ b = {}, d = { json.null } }, v)
    end)

    it("gives a top-level object's keys in the text's order with key_order", function()
      local v, keys = json.decode('{"b": 1, "a": {"z": 1, "y": 2}, "c": null}', { key_order = true, null_as_nil = true })
      assert.same({ "b", "a", "c" }, keys)                 -- null members too; not nested keys
      assert.same({ b = 1, a = { z = 1, y = 2 } }, v)
      assert.same({}, select(2, json.decode("[1, 2]", { key_order = true })))
      assert.equal(1, select("#", json.decode('{"a": 1}')))
    end)

    it("keeps booleans and nested structures", function()
      local s = '{"a":true,"b":false,"c":[1,"two",{"d":[]}]}'
      assert.equal(s, json.canonical(json.decode(s)))
    end)
  end)

  describe("strings", function()
    it("escapes quotes, backslashes and control characters", function()
      assert.equal([["a\"b\\c\n\r\t\b\f\u0001\u001f"]], json.encode('a"b\\c\n\r\t\b\f\1\31'))
      local s = "x\0y\"\\\1\127/"
      assert.equal(s, json.decode(json.encode(s)))
    end)

    it("passes UTF-8 through and decodes \\u escapes and surrogate pairs", function()
      assert.equal('"héllo 😀"', json.encode("héllo 😀"))
      assert.equal("é😀/\0", json.decode([["\u00e9\ud83d\ude00\/\u0000"]]))
      local _, err = json.decode([["\ud83d"]])
      assert.matches("surrogate", err)
      _, err = json.decode([["\udc00"]])
      assert.matches("surrogate", err)
    end)

    it("rejects invalid UTF-8 with its byte offset, and lone surrogate escapes", function()
      local bad = {
        { '"ab\xffc"', 4 },                -- a byte that never starts a character
        { '["\xc3"]', 3 },                 -- truncated two-byte sequence
        { '"\xc0\xaf"', 2 },              -- overlong "/"
        { '"\xe0\x80\xaf"', 2 },         -- overlong, three bytes
        { '"\xed\xa0\x80"', 2 },         -- a UTF-16 surrogate written as UTF-8
        { '"\xf4\x90\x80\x80"', 2 },    -- past U+10FFFF
        { '"\xe2\x82"', 2 },              -- truncated three-byte sequence
        { '{"k\x80": 1}', 4 },             -- in a key
        { '"x\\n\xfe"', 5 },             -- after an escape (the slow path)
      }
      for _, c in ipairs(bad) do
        local v, err, code = json.decode(c[1])
        assert.is_nil(v, c[1])
        assert.equal("JSON_PARSE", code)
        assert.matches("json: invalid UTF%-8 in string at line 1, column %d+ %(byte " .. c[2] .. "%)", err)
      end
      -- the longest valid forms of each length pass
      assert.equal("\u{7f}\u{7ff}\u{ffff}\u{10ffff}\u{d7ff}\u{e000}",
        json.decode('"\u{7f}\u{7ff}\u{ffff}\u{10ffff}\u{d7ff}\u{e000}"'))
      local _, err = json.decode([[ ["ok", "\ude00x"] ]])
      assert.matches("lone low surrogate in \\u escape at line 1, column 10 %(byte 10%)", err)
      _, err = json.decode([["\ud800\u0041"]])
      assert.matches("high surrogate not followed by a low one", err)
    end)

    it("encodes only UTF-8: raises naming the path, or replaces with invalid_utf8", function()
      assert.error_matches(function() json.encode({ rows = { "ok", "caf\xe9" } }) end,
        "json: invalid UTF%-8 in string %(byte 4%) at %.rows%[2%]$")
      assert.error_matches(function() json.encode({ ["k\xff"] = 1 }) end, "invalid UTF%-8 in string %(byte 2%)")
      assert.error_matches(function() json.canonical("\xed\xa0\x80") end, "invalid UTF%-8")
      local out = json.encode({ m = "caf\xe9 \xc3", ["k\xff"] = "\u{10ffff}" }, { invalid_utf8 = "replace", sort_keys = true })
      assert.equal('{"k\u{fffd}":"\u{10ffff}","m":"caf\u{fffd} \u{fffd}"}', out)
      assert.truthy(utf8.len(out))
      assert.equal('"\u{fffd}\u{fffd}"', json.encode("\xed\xa0", { invalid_utf8 = "replace" }))
      assert.error_matches(function() json.encode("", { invalid_utf8 = "drop" }) end, "invalid option 'drop'")
    end)

    it("rejects raw control characters and bad escapes", function()
      local v, err, code = json.decode('"a\tb"')
      assert.is_nil(v)
      assert.equal("JSON_PARSE", code)
      assert.matches("control character in string at line 1, column 3 %(byte 3%)", err)
      _, err = json.decode([["\x"]])
      assert.matches("invalid escape", err)
      _, err = json.decode([["\u12g4"]])
      assert.matches("invalid \\u escape", err)
      _, err = json.decode('"abc')
      assert.matches("unterminated string", err)
    end)
  end)

  describe(".decode errors", function()
    it("say where: line, column and byte", function()
      local v, err, code = json.decode('{\n  "a": 1,\n  "b": tru\n}')
      assert.is_nil(v)
      assert.equal("JSON_PARSE", code)
      assert.equal("json: unexpected character 't' at line 3, column 8 (byte 20)", err)
      _, err = json.decode("[1, 2,, 3]")
      assert.matches("unexpected character ',' at line 1, column 7 %(byte 7%)", err)
      _, err = json.decode("[1] x")
      assert.matches("trailing characters after the value at line 1, column 5", err)
      _, err = json.decode("")
      assert.matches("empty input", err)
      _, err = json.decode("[1, 2")
      assert.matches("end of input in array", err)
      _, err = json.decode('{"a" 1}')
      assert.matches("expected ':'", err)
      _, err = json.decode("{a: 1}")
      assert.matches("expected a string key", err)
      _, err = json.decode("01")
      assert.matches("leading zero", err)
      _, err = json.decode("1.")
      assert.matches("digit expected after '.'", err)
      _, err = json.decode("[1,]")
      assert.matches("unexpected character ']'", err)
    end)

    it("stops deep nesting without overflowing the C stack", function()
      local v, err, code = json.decode(string.rep("[", 100000))
      assert.is_nil(v)
      assert.equal("JSON_PARSE", code)
      assert.matches("nesting deeper than 1000 levels at line 1, column 1001", err)
      v, err = json.decode(string.rep('{"a":', 100000))
      assert.is_nil(v)
      assert.matches("nesting deeper", err)
      local ok = json.decode(string.rep("[", 1000) .. string.rep("]", 1000))
      assert.is_table(ok)
    end)

    it("raises on misuse", function()
      assert.error_matches(function() json.decode(nil) end, "string expected")
      assert.error_matches(function() json.decode(12) end, "string expected")
    end)
  end)

  describe(".encode errors", function()
    it("name the path to the bad value", function()
      assert.error_matches(function() json.encode({a = {1, 2, {x = print}}}) end,
        "json: cannot encode a function at %.a%[3%]%.x$")
      assert.error_matches(function() json.encode({["odd key"] = {coroutine.create(print)}}) end,
        'cannot encode a thread at %["odd key"%]%[1%]')
      assert.error_matches(function() json.encode(io.stdout) end, "cannot encode a userdata at top level")
    end)

    it("reject cycles", function()
      local t = {name = "loop"}
      t.children = {t}
      assert.error_matches(function() json.encode(t) end, "cycle .* at %.children%[1%]")
      local shared = {1}
      assert.equal('{"a":[1],"b":[1]}', json.canonical({a = shared, b = shared}))
    end)

    it("reject sparse arrays and mixed or odd keys", function()
      assert.error_matches(function() json.encode({a = {1, 2, nil, 4}}) end,
        "sparse array %(3 elements, highest index 4%) at %.a")
      assert.error_matches(function() json.encode({1, 2, x = 3}) end, "mixed integer and string keys")
      assert.error_matches(function() json.encode({[1.5] = 1}) end, "key of type number %(not an integer%)")
      assert.error_matches(function() json.encode({[true] = 1}) end, "key of type boolean")
      assert.error_matches(function() json.encode(json.array({x = 1})) end,
        "string key in a table marked as array at %.x")
      assert.error_matches(function() json.encode({[0] = 1}) end, "array index below 1")
    end)

    it("reject nesting deeper than 1000 levels", function()
      local deep = {}
      local cur = deep
      for _ = 1, 100000 do cur[1] = {}; cur = cur[1] end
      assert.error_matches(function() json.encode(deep) end, "nesting deeper than 1000 levels at %[1%]")
    end)

    it("free their buffer when raising mid-way", function()
      local big = {}
      for i = 1, 2000 do big[i] = ("item %d"):format(i) end
      big[2001] = print
      for _ = 1, 20 do
        assert.has_error(function() json.encode(big) end)
      end
      big[2001] = nil
      assert.equal(2000, #json.decode(json.encode(big)))
    end)

    it("check their options", function()
      assert.error_matches(function() json.encode({}, {indnet = 2}) end, "unknown option 'indnet'")
      assert.error_matches(function() json.encode({}, {indent = -1}) end, "indent must be")
    end)
  end)

  describe(".encode options", function()
    it("pretty-prints with indent", function()
      assert.equal('{\n  "a": [\n    1,\n    []\n  ],\n  "b": {}\n}',
        json.encode({b = {}, a = {1, json.array()}}, {indent = 2, sort_keys = true}))
    end)
  end)

  describe(".canonical", function()
    it("does not depend on insertion order", function()
      local keys = {}
      for i = 1, 60 do keys[i] = ("k%02d"):format(i) end
      local a, b = {}, {}
      for i = 1, #keys do a[keys[i]] = {i, i + 0.5} end
      for i = #keys, 1, -1 do b[keys[i]] = {i, i + 0.5} end
      b.k05 = nil; b.k05 = {5, 5.5}     -- reinsert: a different hash chain
      assert.equal(json.canonical(a), json.canonical(b))
      assert.matches('^{"k01":%[1,1%.5%],"k02":', json.canonical(a))
    end)

    it("sorts bytewise and has no whitespace", function()
      assert.equal('{"A":1,"B":2,"a":3,"b":{"x":[1,2.0],"é":null}}',
        json.canonical({b = {["é"] = json.null, x = {1, 2.0}}, a = 3, B = 2, A = 1}))
    end)

    it("is identical across processes", function()
      local code = [[
        local json = require "geneva.json"
        local t = {}
        for i = 1, 40 do t["key" .. i] = i end
        io.write(json.canonical(t))
      ]]
      local s1, out1 = child.run(code)
      local s2, out2 = child.run(code)
      assert.equal(0, s1)
      assert.equal(0, s2)
      assert.equal(out1, out2)
      assert.matches('^{"key1":1,"key10":10,', out1)
    end)
  end)
end)
