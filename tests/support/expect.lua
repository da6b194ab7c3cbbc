-- Assertion helpers shared by the specs.
local errors = require "geneva.errors"
local assert = require "luassert"   -- busted's assert lives in the spec's env only

local expect = {}

-- expect.raises(code, fn, ...) -> the error: fn must raise a geneva.Error
-- with that code.
function expect.raises(code, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  assert.is_true(errors.is(err), "expected a geneva.Error, got " .. tostring(err))
  assert.equal(code, err.code, tostring(err))
  return err
end

return expect
