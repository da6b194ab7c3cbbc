-- geneva.udf: definition, spec round trip across processes, version hash,
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

describe("geneva.udf", function()
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
      assert.matches("^%x+$", u.version)
      assert.equal(64, #u.version)
      assert.equal(5, u:call { content = "abc", title = "de" })
    end)
  end)
end)
