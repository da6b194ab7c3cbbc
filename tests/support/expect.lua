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

-- expect.wait_until(what, fn [, timeout_s = 60]) -> fn's first truthy
-- result, polling every 20 ms; fails the spec naming `what` on timeout.
function expect.wait_until(what, fn, timeout)
  local time = require "geneva.time"
  local deadline = time.monotonic() + (timeout or 60)
  while true do
    local v = fn()
    if v then return v end
    assert.is_true(time.monotonic() < deadline, "timed out waiting for " .. what)
    time.sleep(0.02)
  end
end

return expect
