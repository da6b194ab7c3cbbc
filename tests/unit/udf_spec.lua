-- geneva.udf: definition, spec round trip across processes, version hash, memcheck
-- the worker environment, execution (scalar, batch, stateful), type checks,
-- on_error, retries, timeouts.
local geneva = require "geneva"
local udf = require "geneva.udf"
local json = require "geneva.json"
local errors = require "geneva.errors"
local child = require "child"

local NULL = geneva.null

local function raises(code, pattern, f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  assert.is_true(errors.is(e, code), "expected a " .. code .. " Error, got " .. tostring(e))
  if pattern then
    assert.is_truthy(e.message:find(pattern, 1, true), ("%q does not contain %q"):format(e.message, pattern))
  end
  return e
end

local write = child.write

-- runs code in a child `geneva -e`; returns its stdout (asserting exit 0)
local function in_child(code, env)
  local status, out, err = child.run(code, env)
  assert.equal(0, status, "child failed: " .. err)
  return out
end

-- A temp dir on package.path holding module files, for module UDFs.
local tmp, saved_path
local function module_file(name, src)
  write(tmp .. "/" .. name .. ".lua", src)
  package.loaded[name] = nil
end

describe("geneva.udf", function()
  setup(function()
    tmp = child.tmpdir()
    saved_path = package.path
    package.path = tmp .. "/?.lua;" .. package.path
  end)
  teardown(function()
    package.path = saved_path
    child.rmtree(tmp)
  end)

  describe("definition", function()
    it("is callable as geneva.udf{} and takes input_columns from parameter names", function()
      local u = geneva.udf { data_type = "int64", fn = function(content, title) return #content + #title end }
      assert.same({ "content", "title" }, u.input_columns)
      assert.equal("int64", u.data_type)
      assert.is_false(u.batch)
      assert.equal("fail", u.on_error)
      assert.equal(0, u.retries)
      assert.equal(1, u.num_cpus)
      assert.equal(0, u.num_gpus)
      assert.is_nil(u.timeout)
      assert.is_nil(u.memory)
      assert.matches("^%x+$", u.version)
      assert.equal(64, #u.version)
      assert.equal(5, u:call { content = "abc", title = "de" })
      assert.equal(getmetatable(u), udf.Udf)
      assert.matches("^geneva.Udf .* %-> int64", tostring(u))
    end)

    it("drops the state parameter of a stateful UDF", function()
      local u = geneva.udf { data_type = "int64", setup = function() return 1 end,
        fn = function(model, content) return model + #content end }
      assert.same({ "content" }, u.input_columns)
    end)

    it("takes explicit input_columns and keeps the options", function()
      local u = geneva.udf { data_type = "float64", input_columns = { "a", "b" }, name = "ratio",
        num_cpus = 0.5, num_gpus = 1, memory = 1 << 30, retries = 2, timeout = 1.5, on_error = "null",
        fn = function(x, y) return x / y end }
      assert.same({ "a", "b" }, u.input_columns)
      assert.equal("ratio", u.name)
      assert.equal(0.5, u.num_cpus)
      assert.equal(1, u.num_gpus)
      assert.equal(1 << 30, u.memory)
      assert.equal(2, u.retries)
      assert.equal(1.5, u.timeout)
      assert.equal("null", u.on_error)
      assert.equal(1.5, u:call { a = 3, b = 2 })
      -- a vararg function needs them; and they must fit the parameters
      raises("invalid_argument", "input_columns: required for a vararg function",
        udf.new, { data_type = "int64", fn = function(...) return select("#", ...) end })
      local v = geneva.udf { data_type = "int64", input_columns = { "p", "q", "r" },
        fn = function(...) return select("#", ...) end }
      assert.equal(3, v:call { p = 1 })
      raises("invalid_argument", "input_columns: 3 columns but the function takes 2",
        udf.new, { data_type = "int64", input_columns = { "a", "b", "c" }, fn = function(a, b) return a end })
    end)

    it("refuses a function with upvalues, naming the upvalue and suggesting a module", function()
      local helper = function(s) return #s end
      local e = raises("invalid_argument", "fn: the function captures upvalue 'helper'",
        udf.new, { data_type = "int64", fn = function(s) return helper(s) end })
      assert.matches("module=", e.message)
      assert.equal("fn", e.field)
      raises("invalid_argument", "setup: the function captures upvalue 'helper'",
        udf.new, { data_type = "int64", fn = function(st, s) return st end, setup = function() return helper end })
    end)

    it("accepts upvalues that are loaded modules and requires them again on the worker", function()
      local jsonmod = require "geneva.json"
      -- geneva is upvalue 1 here, _ENV (for tostring) upvalue 2
      local u = geneva.udf { data_type = "string",
        fn = function(x) return geneva.null ~= x and tostring(x) .. jsonmod.encode({ x }) end }
      assert.equal("3[3]", u:call { x = 3 })
      local s = u:spec()
      assert.same({ "geneva", "_ENV", "geneva.json" }, s.upvalues)
      local out = in_child(([[
local udf = require "geneva.udf"
local json = require "geneva.json"
local u = udf.from_spec(json.decode(%q))
io.write(u.version, " ", u:call { x = 4 })
]]):format(json.encode(s)))
      assert.equal(u.version .. " 4[4]", out)
      -- a recursive local function refers to itself
      local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
      local r = geneva.udf { data_type = "int64", fn = fib }
      assert.same({ "_SELF" }, r:spec().upvalues)
      assert.equal(55, udf.from_spec(json.decode(json.encode(r:spec()))):call { n = 10 })
    end)

    it("refuses a C function without module=/function=", function()
      local e = raises("invalid_argument", "fn: a C function cannot be shipped",
        udf.new, { data_type = "int64", fn = string.len, input_columns = { "s" } })
      assert.matches("module=", e.message)
      -- a C function given as module + function works (built-in module)
      local u = geneva.udf { data_type = "int64", module = "string", ["function"] = "len",
        input_columns = { "s" } }
      assert.equal(3, u:call { s = "abc" })
      raises("invalid_argument", "input_columns: required for a C function", udf.new,
        { data_type = "int64", module = "string", ["function"] = "len" })
    end)

    it("validates options, naming the field", function()
      local f = function(x) return x end
      local cases = {
        { { fn = f }, "data_type: required" },
        { { fn = f, data_type = "int32" }, "data_type: unknown data_type 'int32'" },
        { { fn = f, data_type = "int64", bogus = 1 }, "bogus: unknown option" },
        { { data_type = "int64" }, "fn: required" },
        { { fn = 42, data_type = "int64" }, "fn: expected a function" },
        { { fn = f, data_type = "int64", on_error = "skip" }, "on_error: expected" },
        { { fn = f, data_type = "int64", retries = -1 }, "retries: expected an integer >= 0" },
        { { fn = f, data_type = "int64", retries = 1.5 }, "retries: expected an integer >= 0" },
        { { fn = f, data_type = "int64", timeout = 0 }, "timeout: expected seconds > 0" },
        { { fn = f, data_type = "int64", num_cpus = 0 }, "num_cpus: expected a number > 0" },
        { { fn = f, data_type = "int64", num_gpus = -1 }, "num_gpus: expected a number >= 0" },
        { { fn = f, data_type = "int64", memory = "1G" }, "memory: expected bytes" },
        { { fn = f, data_type = "int64", batch = "yes" }, "batch: expected a boolean" },
        { { fn = f, data_type = "int64", input_columns = { "a", "a" } }, "input_columns: column 'a' appears twice" },
        { { fn = f, data_type = "int64", input_columns = "a" }, "input_columns: expected an array" },
        { { fn = f, data_type = "int64", name = "" }, "name: expected a non-empty string" },
        { { module = "m x", ["function"] = "f", data_type = "int64" }, "module: expected a module name" },
        { { module = "m", data_type = "int64" }, "function: expected a function name" },
        { { fn = f, data_type = "int64", setup = "init" }, "setup: a function name needs module=" },
      }
      for _, c in ipairs(cases) do
        local e = raises("invalid_argument", c[2], udf.new, c[1])
        assert.matches("^geneva.udf: ", e.message)
      end
      raises("invalid_argument", "options: expected a table", udf.new, "x")
    end)
  end)

  describe("module UDFs", function()
    it("resolve module.function with require, defaulting input_columns and name", function()
      module_file("udfmod_words", [[
local M = {}
function M.words(content) return select(2, content:gsub("%S+", "")) end
M.nested = { upper = function(s) return s:upper() end }
return M
]])
      local u = geneva.udf { module = "udfmod_words", ["function"] = "words", data_type = "int64" }
      assert.same({ "content" }, u.input_columns)
      assert.equal("udfmod_words.words", u.name)
      assert.equal(3, u:call { content = "a b  c" })
      local s = u:spec()
      assert.equal("udfmod_words", s.module)
      assert.equal("words", s["function"])
      assert.is_nil(s.code)
      local n = geneva.udf { module = "udfmod_words", ["function"] = "nested.upper", data_type = "string" }
      assert.equal("AB", n:call { s = "ab" })
      raises("not_found", "module 'udfmod_words' has no function 'nope'", function()
        geneva.udf { module = "udfmod_words", ["function"] = "nope", data_type = "int64",
          input_columns = { "x" } }:call { x = 1 }
      end)
      raises("not_found", "module 'udfmod_missing' not found", udf.new,
        { module = "udfmod_missing", ["function"] = "f", data_type = "int64", input_columns = { "x" } })
      -- without input_columns, the same: one line, no list of the files require tried
      local e = raises("not_found", "module 'udfmod_missing' not found", udf.new,
        { module = "udfmod_missing", ["function"] = "f", data_type = "int64" })
      assert.equal("geneva.udf: module 'udfmod_missing' not found on package.path", e.message)
    end)

    it("use a local fn when given with module/function, versioned by the module source", function()
      module_file("udfmod_local", "return { f = function(x) return x + 1 end }\n")
      local u = geneva.udf { module = "udfmod_local", ["function"] = "f", data_type = "int64",
        fn = function(y) return y + 100 end }
      assert.same({ "y" }, u.input_columns)
      assert.equal(101, u:call { y = 1 })
      local v1 = u.version
      module_file("udfmod_local", "return { f = function(x) return x + 2 end }\n")
      local u2 = geneva.udf { module = "udfmod_local", ["function"] = "f", data_type = "int64",
        fn = function(y) return y + 100 end }
      assert.not_equal(v1, u2.version)
    end)

    it("run on a worker from their spec, with the module on the worker's package.path", function()
      module_file("udfmod_child", "return { twice = function(x) return 2 * x end }\n")
      local u = geneva.udf { module = "udfmod_child", ["function"] = "twice", data_type = "int64" }
      local out = in_child(([[
package.path = %q .. "/?.lua;" .. package.path
local udf = require "geneva.udf"
local json = require "geneva.json"
local u = udf.from_spec(json.decode(%q))
io.write(u.version, " ", u:call { x = 21 })
]]):format(tmp, json.encode(u:spec())))
      assert.equal(u.version .. " 42", out)
    end)
  end)

  describe("spec and version", function()
    local SRC = [[geneva.udf { data_type = "int64", name = "words", on_error = "null", retries = 1,
  timeout = 5, memory = 1000, fn = function(content) return select(2, content:gsub("%S+", "")) end }]]

    it("round-trips through JSON and from_spec in a child process", function()
      local u = load("local geneva = ...; return " .. SRC)(geneva)
      local s = json.encode(u:spec())
      local d = json.decode(s)
      assert.equal("string", type(d.code))
      assert.same({ "content" }, d.input_columns)
      for _, k in ipairs { "data_type", "batch", "on_error", "retries", "timeout", "num_cpus",
        "num_gpus", "memory", "name" } do
        assert.equal(u[k], d[k], k)
      end
      local local_u = udf.from_spec(d)
      assert.equal(u.version, local_u.version)
      assert.equal(3, local_u:call { content = "a b c" })
      local out = in_child(([[
local udf = require "geneva.udf"
local json = require "geneva.json"
local u = udf.from_spec(json.decode(%q))
io.write(u.version, " ", u.name, " ", u.on_error, " ", u.retries, " ", u:call { content = "one two" })
]]):format(s))
      assert.equal(u.version .. " words null 1 2", out)
    end)

    it("gives the same version in two processes (and here), whatever the line or nesting", function()
      local code = "local geneva = require 'geneva'\n\n\nlocal u = " .. SRC .. "\nio.write(u.version)"
      local a = in_child(code)
      local b = in_child(code)
      assert.equal(a, b)
      assert.matches("^%x+$", a)
      local here = geneva.udf { data_type = "int64", name = "words", on_error = "null", retries = 1,
        timeout = 5, memory = 1000, fn = function(content) return select(2, content:gsub("%S+", "")) end }
      assert.equal(a, here.version)
    end)

    it("changes when code, data_type, input_columns, batch or setup change, not with options", function()
      local function v(o)
        o.data_type = o.data_type or "int64"
        o.fn = o.fn or function(x) return x end
        return geneva.udf(o).version
      end
      local base = v {}
      assert.equal(base, v {})
      assert.equal(base, v { name = "other", retries = 3, on_error = "null", num_cpus = 4, timeout = 9 })
      assert.not_equal(base, v { fn = function(x) return x + 0 end })
      assert.not_equal(base, v { data_type = "float64" })
      assert.not_equal(base, v { input_columns = { "y" } })
      assert.not_equal(base, v { batch = true })
      assert.not_equal(base, v { fn = function(s, x) return x end, setup = function() return 1 end })
      assert.not_equal(v { fn = function(s, x) return x end, setup = function() return 1 end },
        v { fn = function(s, x) return x end, setup = function() return 2 end })
    end)

    it("refuses malformed specs", function()
      raises("invalid_argument", "spec: expected a table", udf.from_spec, "x")
      raises("invalid_argument", "code: not base64 Lua bytecode", udf.from_spec,
        { code = "bm90IGJ5dGVjb2Rl", data_type = "int64", input_columns = { "x" } })
      raises("invalid_argument", "input_columns", udf.from_spec,
        { code = udf._b64encode(string.dump(function(x) return x end, true)), data_type = "int64" })
      raises("invalid_argument", "format: unsupported", udf.from_spec, { format = 2 })
      -- json.null stands for absent
      local u = udf.from_spec(json.decode(json.encode(json.object {
        code = udf._b64encode(string.dump(function(x) return x end, true)), data_type = "int64",
        input_columns = json.array { "x" }, timeout = json.null, memory = json.null, name = json.null })))
      assert.equal(7, u:call { x = 7 })
      assert.equal("udf", u.name)
    end)

    it("base64 round-trips any bytes", function()
      for _, s in ipairs { "", "a", "ab", "abc", "abcd", "\0\255\1\254", string.dump(print ~= nil and function() end) } do
        assert.equal(s, udf._b64decode(udf._b64encode(s)))
      end
      assert.equal("YWJj", udf._b64encode("abc"))
      assert.equal("YQ==", udf._b64encode("a"))
      assert.is_nil(udf._b64decode("a*=="))
    end)
  end)

  describe("the worker environment", function()
    it("raises a udf_error naming a global that the worker does not have", function()
      local u = geneva.udf { data_type = "int64", name = "uses_helper",
        fn = function(s) return my_helper(s) end }   -- luacheck: ignore
      local e = raises("udf_error", "UDF 'uses_helper' used global 'my_helper', which does not exist on the worker "
        .. "(define it in a module and use module=...)", u.call, u, { s = "x" })
      assert.equal("uses_helper", e.column)
      -- same on a worker
      local out = in_child(([[
local udf = require "geneva.udf"
local json = require "geneva.json"
local u = udf.from_spec(json.decode(%q))
local ok, e = pcall(u.call, u, { s = "x" })
io.write(tostring(ok), "|", e.code, "|", e.message)
]]):format(json.encode(u:spec())))
      assert.matches("^false|udf_error|.*used global 'my_helper'", out)
    end)

    it("has the standard globals and geneva", function()
      local u = geneva.udf { data_type = "string",
        fn = function(s) return string.upper(s) .. tostring(math.floor(2.5)) .. type(geneva.udf) .. table.concat({ "x" }) end }
      assert.equal("AB2tablex", u:call { s = "ab" })
      -- globals a UDF sets stay in its own environment
      local w = geneva.udf { data_type = "int64",
        fn = function(x) counter_global = (rawget(_ENV, "counter_global") or 0) + x; return counter_global end }
      assert.equal(2, w:call { x = 2 })
      assert.equal(5, w:call { x = 3 })
      assert.is_nil(rawget(_G, "counter_global"))
    end)
  end)

  describe("execution", function()
    it("holds memory = bytes around each call only: a tiny limit fails the call, never the caller after it", function()
      local tiny = geneva.udf { data_type = "int64", memory = 4096, fn = function(x)
        local t = {}
        for i = 1, 100000 do t[i] = i end
        return #t + x
      end }
      for _ = 1, 3 do
        local ok, e = pcall(tiny.call, tiny, { x = 1 })
        assert.is_false(ok)
        assert.equal("udf_error", e.code)
        assert.matches("went over its memory limit %(memory = 4096 bytes", e.message)
      end
      -- the limit went with the call: this state allocates freely again
      local t = {}
      for i = 1, 1000000 do t[i] = i end
      assert.equal(1000000, #t)
      -- a limit too large to add to the heap's size is no limit, not an error
      local huge = geneva.udf { data_type = "int64", memory = math.maxinteger,
        fn = function(x) return #string.rep("a", 1000000) + x end }
      assert.equal(1000001, huge:call { x = 1 })
    end)

    it("runs a scalar UDF over a batch with NULLs as nil arguments and geneva.null results", function()
      local u = geneva.udf { data_type = "int64",
        fn = function(a, b) if a == nil then return nil end return a + (b or 0) end }
      local ex = u:executor { column = "sum" }
      local r = ex:run { n = 4, rowids = { 10, 11, 12, 13 },
        columns = { a = { 1, NULL, 3, 4 }, b = { 10, 20, NULL, 40 } } }
      assert.equal(4, r.n)
      assert.same({ 11, NULL, 3, 44 }, r.values)
      assert.same({}, r.failed)
      local empty = ex:run { n = 0, columns = { a = {}, b = {} } }
      assert.same({ n = 0, values = {}, failed = {} }, empty)
      raises("invalid_argument", "batch: has no column 'b'", ex.run, ex, { n = 1, columns = { a = { 1 } } })
      raises("invalid_argument", "batch: expected", ex.run, ex, { columns = {} })
      -- u:call: nil is NULL, unknown columns are refused
      assert.is_nil(u:call {})
      assert.equal(5, u:call { a = 5 })
      raises("invalid_argument", "'c' is not an input column", u.call, u, { a = 1, c = 2 })
    end)

    it("runs a batch UDF once per batch with arrays carrying n", function()
      local u = geneva.udf { data_type = "int64", batch = true,
        fn = function(a, b)
          local out = {}
          for i = 1, a.n do
            if a[i] == geneva.null then out[i] = geneva.null else out[i] = a[i] * b[i] + a.n end
          end
          return out
        end }
      assert.same({ "a", "b" }, u.input_columns)
      local r = u:executor():run { n = 3, rowids = { 1, 2, 3 }, columns = { a = { 1, NULL, 3 }, b = { 2, 2, 2 } } }
      assert.same({ 5, NULL, 9 }, r.values)
      assert.equal(7, u:call { a = 3, b = 2 })
      -- results may use nil with an explicit n
      local h = geneva.udf { data_type = "string", batch = true,
        fn = function(s) return { n = s.n, nil, "x" } end }
      assert.same({ NULL, "x" }, h:executor():run { n = 2, columns = { s = { "a", "b" } } }.values)
      -- exactly n values
      local bad_n = geneva.udf { data_type = "int64", batch = true, fn = function(x) return { 1 } end }
      local e = raises("udf_error", "must return exactly 2 values, got 1", bad_n:executor { column = "c" }.run,
        bad_n:executor { column = "c" }, { n = 2, rowids = { 7, 8 }, columns = { x = { 1, 2 } } })
      assert.equal("c", e.column)
      local nul = geneva.udf { data_type = "int64", batch = true, on_error = "null", fn = function(x) return 5 end }
      local r2 = nul:executor():run { n = 2, rowids = { 7, 8 }, columns = { x = { 1, 2 } } }
      assert.same({ NULL, NULL }, r2.values)
      assert.equal(2, #r2.failed)
      assert.equal(8, r2.failed[2].rowid)
      assert.matches("must return an array of 2 values", r2.failed[2].error.message)
    end)

    it("runs setup once per executor and passes its result first (scalar and batch)", function()
      local u = geneva.udf { data_type = "int64",
        setup = function() return { seen = 0 } end,
        fn = function(state, x) state.seen = state.seen + 1; return x and state.seen * 100 + x end }
      local ex = u:executor()
      assert.same({ 101, 202 }, ex:run { n = 2, columns = { x = { 1, 2 } } }.values)
      assert.same({ 303, NULL }, (function()
        local r = ex:run { n = 2, columns = { x = { 3, NULL } } }
        return r.values
      end)())
    end)

    it("runs a module setup once per executor, and once per Udf for call", function()
      module_file("udfmod_state", [[
local M = { setups = 0 }
function M.init() M.setups = M.setups + 1; return { k = 10 } end
function M.add(state, x) return state.k + x end
function M.addv(state, xs) local o = {} for i = 1, xs.n do o[i] = xs[i] + state.k end return o end
return M
]])
      local M = require "udfmod_state"
      local u = geneva.udf { module = "udfmod_state", ["function"] = "add", setup = "init", data_type = "int64" }
      assert.same({ "x" }, u.input_columns)
      assert.equal(11, u:call { x = 1 })
      assert.equal(12, u:call { x = 2 })
      assert.equal(1, M.setups)
      local ex = u:executor()
      assert.equal(2, M.setups)
      assert.same({ 13, 14 }, ex:run { n = 2, columns = { x = { 3, 4 } } }.values)
      assert.equal(2, M.setups)
      local b = geneva.udf { module = "udfmod_state", ["function"] = "addv", batch = true, data_type = "int64",
        setup = { module = "udfmod_state", ["function"] = "init" } }
      assert.same({ "xs" }, b.input_columns)
      assert.same({ 11, 12 }, b:executor():run { n = 2, columns = { xs = { 1, 2 } } }.values)
      assert.equal("init", b:spec().setup["function"])
      -- a failing setup is a udf_error from executor()
      local f = geneva.udf { data_type = "int64", setup = function() error("no model") end,
        fn = function(s, x) return x end }
      raises("udf_error", "setup of UDF", f.executor, f)
    end)

    it("checks result types: the error names column, rowid and value", function()
      local u = geneva.udf { data_type = "int64", fn = function(x) return x end }
      local ex = u:executor { column = "num" }
      local r = ex:run { n = 2, rowids = { 1, 2 }, columns = { x = { 3.0, 4 } } }
      assert.same({ 3, 4 }, r.values)
      assert.equal("integer", math.type(r.values[1]))
      ex = u:executor("num")           -- the column name alone
      local e = raises("udf_error", nil, ex.run, ex, { n = 3, rowids = { 5, 6, 7 }, columns = { x = { 1, "3", 2 } } })
      assert.equal("num", e.column)
      assert.equal(6, e.rowid)
      assert.equal("3", e.value)
      assert.matches("column 'num'", e.message)
      assert.matches("rowid 6", e.message)
      assert.matches('expected int64, got "3"', e.message)
      raises("udf_error", "expected int64, got 2.5 (float)", u.call, u, { x = 2.5 })
      -- float64 takes integers as floats; bool, string, blob are strict
      local f = geneva.udf { data_type = "float64", fn = function(x) return x end }
      assert.equal("float", math.type(f:call { x = 2 }))
      local b = geneva.udf { data_type = "bool", fn = function(x) return x end }
      assert.is_false(b:call { x = false })
      raises("udf_error", "expected bool", b.call, b, { x = 0 })
      local s = geneva.udf { data_type = "string", fn = function(x) return x end }
      raises("udf_error", "expected string, got 1 (integer)", s.call, s, { x = 1 })
    end)

    it("checks float32[N] vectors", function()
      local u = geneva.udf { data_type = "float32[3]", fn = function(x)
        if x == 1 then return { 1, 2, 3 } elseif x == 2 then return { 1, 2 } elseif x == 3 then return { 1, "a", 3 } end
      end }
      assert.same({ 1, 2, 3 }, u:call { x = 1 })
      assert.is_nil(u:call { x = 4 })
      raises("udf_error", "expected float32[3], got an array of 2", u.call, u, { x = 2 })
      raises("udf_error", "element 2 is", u.call, u, { x = 3 })
      local r = u:executor { column = "vec" }:run { n = 2, columns = { x = { 1, 1 } } }
      assert.same({ { 1, 2, 3 }, { 1, 2, 3 } }, r.values)
    end)

    it("on_error = fail aborts the batch at the first failing row; null records it and goes on", function()
      local def = { data_type = "int64", name = "inv",
        fn = function(x) if x == 0 then error("division by zero") end return 100 // x end }
      local fail = geneva.udf(def)
      local e = raises("udf_error", "division by zero", fail:executor { column = "inv" }.run,
        fail:executor { column = "inv" }, { n = 4, rowids = { 21, 22, 23, 24 }, columns = { x = { 1, 0, 2, 0 } } })
      assert.equal(22, e.rowid)
      assert.equal("inv", e.column)
      assert.matches("rowid 22", e.message)
      assert.is_string(e.traceback)
      def.on_error = "null"
      local null = geneva.udf(def)
      assert.equal(fail.version, null.version)
      local r = null:executor { column = "inv" }:run { n = 5, rowids = { 21, 22, 23, 24, 25 },
        columns = { x = { 1, 0, 2, 0, "s" } } }
      assert.same({ 100, NULL, 50, NULL, NULL }, r.values)
      assert.equal(3, #r.failed)
      assert.same({ 2, 22 }, { r.failed[1].index, r.failed[1].rowid })
      assert.same({ 4, 24 }, { r.failed[2].index, r.failed[2].rowid })
      assert.same({ 5, 25 }, { r.failed[3].index, r.failed[3].rowid })
      assert.is_true(errors.is(r.failed[1].error, "udf_error"))
      assert.matches("division by zero", r.failed[1].error.message)
      assert.matches("attempt to", r.failed[3].error.message)
      -- u:call raises whatever on_error says
      raises("udf_error", "division by zero", null.call, null, { x = 0 })
      -- an Error raised by the UDF is kept as the cause
      local g = geneva.udf { data_type = "int64", fn = function(x) error(require("geneva.errors").new("not_found", "no such key")) end }
      local ge = raises("udf_error", "no such key", g.call, g, { x = 1 })
      assert.equal("not_found", ge.cause.code)
    end)

    it("retries a failing call before on_error applies", function()
      module_file("udfmod_flaky", [[
local M = { calls = 0 }
-- fails twice, then succeeds, then fails twice again ...
function M.flaky(x) M.calls = M.calls + 1; if M.calls % 3 ~= 0 then error("flaky " .. M.calls) end return x * 2 end
function M.flaky_batch(xs) M.calls = M.calls + 1; if M.calls % 3 ~= 0 then error("flaky") end
  local o = {} for i = 1, xs.n do o[i] = xs[i] * 2 end return o end
return M
]])
      local M = require "udfmod_flaky"
      local u = geneva.udf { module = "udfmod_flaky", ["function"] = "flaky", data_type = "int64", retries = 2 }
      assert.equal(14, u:call { x = 7 })
      assert.equal(3, M.calls)
      local r = u:executor():run { n = 2, columns = { x = { 1, 2 } } }
      assert.same({ 2, 4 }, r.values)
      assert.equal(9, M.calls)
      M.calls = 0
      local once = geneva.udf { module = "udfmod_flaky", ["function"] = "flaky", data_type = "int64",
        retries = 1, on_error = "null" }
      local r1 = once:executor():run { n = 1, rowids = { 9 }, columns = { x = { 1 } } }
      assert.same({ NULL }, r1.values)
      assert.equal(2, M.calls)
      assert.matches("flaky 2", r1.failed[1].error.message)
      M.calls = 0
      local b = geneva.udf { module = "udfmod_flaky", ["function"] = "flaky_batch", data_type = "int64",
        batch = true, retries = 2 }
      assert.same({ 2, 4, 6 }, b:executor():run { n = 3, columns = { xs = { 1, 2, 3 } } }.values)
      assert.equal(3, M.calls)
      -- a wrong type is not retried
      M.calls = 0
      local wrong = geneva.udf { data_type = "int64", retries = 3,
        fn = function(x) calls = (rawget(_ENV, "calls") or 0) + 1; return "s" .. calls end }
      raises("udf_error", 'got "s1"', wrong.call, wrong, { x = 1 })
    end)

    it("aborts a row that runs longer than timeout, even through pcall, and removes its hook", function()
      local clock = geneva.time.monotonic
      local u = geneva.udf { data_type = "int64", timeout = 0.2, on_error = "null", fn = function(x)
        if x == 2 then while true do end end
        if x == 3 then while true do pcall(function() while true do end end) end end
        return x
      end }
      local t0 = clock()
      local r = u:executor { column = "c" }:run { n = 4, rowids = { 11, 12, 13, 14 }, columns = { x = { 1, 2, 3, 4 } } }
      local dt = clock() - t0
      assert.same({ 1, NULL, NULL, 4 }, r.values)
      assert.equal(2, #r.failed)
      assert.matches("timed out after 0.2s", r.failed[1].error.message)
      assert.equal(12, r.failed[1].rowid)
      assert.equal(13, r.failed[2].rowid)
      assert.is_true(dt >= 0.4, "took " .. dt)    -- two rows ran to their timeout
      assert.is_nil(debug.gethook())
      -- nothing fires afterwards, outside the UDF
      local t1 = clock()
      while clock() - t1 < 0.3 do end
      -- a previous Lua hook is restored
      local hits = 0
      local function mine() hits = hits + 1 end
      debug.sethook(mine, "", 100000)
      assert.same({ 5 }, u:executor():run { n = 1, columns = { x = { 5 } } }.values)
      assert.equal(mine, (debug.gethook()))
      debug.sethook()
      -- fail mode raises; call raises too; a batch UDF call is timed as a whole
      local f = geneva.udf { data_type = "int64", timeout = 0.1, fn = function(x) while true do end end }
      local e = raises("udf_error", "timed out after 0.1s", f.call, f, { x = 1 })
      assert.equal(0.1, e.timeout)
      local b = geneva.udf { data_type = "int64", timeout = 0.1, batch = true, retries = 1,
        fn = function(xs) while true do end end }
      raises("udf_error", "timed out after 0.1s on the batch of rowids 1..2", b:executor().run, b:executor(),
        { n = 2, columns = { xs = { 1, 2 } } })
      assert.is_nil(debug.gethook())
      -- fast rows are unaffected
      local ok = geneva.udf { data_type = "int64", timeout = 0.5, fn = function(x) return x + 1 end }
      local many = {}
      for i = 1, 10000 do many[i] = i end
      local rr = ok:executor():run { n = 10000, columns = { x = many } }
      assert.equal(10001, rr.values[10000])
      assert.same({}, rr.failed)
    end)

    it("lets a host interrupt through, even with on_error = null and retries", function()
      local code = [[
local geneva = require "geneva"
local u = geneva.udf { data_type = "int64", on_error = "null", retries = 3, timeout = 100,
  fn = function(x) while true do pcall(function() while true do end end) end end }
u:executor():run { n = 3, columns = { x = { 1, 2, 3 } } }
print("survived")]]
      local err = os.tmpname()
      local p = io.popen(("timeout --preserve-status -s INT 0.5 %s -e %s 2>%s; echo \"rc=$?\"")
        :format(child.quote(child.bin), child.quote(code), err))
      local out = p:read("a")
      p:close()
      local stderr = child.read(err)
      os.remove(err)
      assert.equal("rc=130\n", out)
      assert.matches("interrupted", stderr)
      assert.not_matches("udf_error", stderr)
    end)
  end)
end)
