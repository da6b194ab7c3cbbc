-- geneva.time: clocks, interruptible sleep, ISO 8601 in UTC. memcheck
local time = require "geneva.time"
local child = require "child"

describe("geneva.time", function()
  describe("clocks", function()
    it("monotonic() is a float that never goes back", function()
      local a = time.monotonic()
      local b = time.monotonic()
      assert.equal("float", math.type(a))
      assert.is_true(b >= a)
    end)

    it("now() is the wall clock in seconds since the epoch", function()
      local t = time.now()
      assert.equal("float", math.type(t))
      assert.is_true(math.abs(t - os.time()) < 2)
    end)
  end)

  describe(".sleep", function()
    it("sleeps roughly the requested time", function()
      local t0 = time.monotonic()
      assert.is_true(time.sleep(0.2))
      local dt = time.since(t0)
      assert.is_true(dt >= 0.199, "slept " .. dt)
      assert.is_true(dt < 5, "slept " .. dt)    -- not seconds too long (loose: machines are loaded)
    end)

    it("returns at once for 0", function()
      local t0 = time.monotonic()
      assert.is_true(time.sleep(0))
      assert.is_true(time.since(t0) < 1)
    end)

    it("raises on a negative or non-finite duration", function()
      assert.error_matches(function() time.sleep(-1) end, "finite number >= 0")
      assert.error_matches(function() time.sleep(0 / 0) end, "finite number >= 0")
      assert.error_matches(function() time.sleep(math.huge) end, "finite number >= 0")
      assert.error_matches(function() time.sleep("x") end, "number expected")
    end)

    it("gives up on SIGINT", function()
      -- the child marks a file, then sleeps 20 s; SIGINT 0.2 s after the mark
      -- must end it promptly with 130 (128 + SIGINT) after teardown
      local mark = os.tmpname()
      os.remove(mark)
      local code = ("io.open(%q, 'w'):close(); require('geneva.time').sleep(20)"):format(mark)
      local cmd = ("%s -e %s 2>/dev/null & pid=$!; i=0; " ..
        "while [ ! -e %s ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; " ..
        "sleep 0.2; kill -INT $pid; wait $pid"):format(
        child.quote(child.bin), child.quote(code), child.quote(mark))
      local t0 = time.monotonic()
      local _, _, status = os.execute(cmd)
      local dt = time.since(t0)
      os.remove(mark)
      assert.is_true(dt < 8, "took " .. dt)
      assert.equal(130, status)
    end)
  end)

  describe(".iso8601", function()
    it("formats UTC with milliseconds", function()
      assert.equal("1970-01-01T00:00:00.000Z", time.iso8601(0))
      assert.equal("2026-11-24T12:00:00.123Z", time.iso8601(1795521600.123))
      assert.equal("1969-12-31T23:59:59.000Z", time.iso8601(-1))
      assert.equal("1969-12-31T23:59:59.500Z", time.iso8601(-0.5))
      assert.equal("2000-02-29T00:00:00.000Z", time.iso8601(951782400))
      assert.equal("9999-12-31T23:59:59.000Z", time.iso8601(253402300799))
    end)

    it("takes 0..9 fraction digits and rounds", function()
      assert.equal("2026-11-24T12:00:00Z", time.iso8601(1795521600.4, 0))
      assert.equal("2026-11-24T12:00:01Z", time.iso8601(1795521600.6, 0))
      assert.equal("1970-01-01T00:00:00.250000Z", time.iso8601(0.25, 6))
      assert.equal("1970-01-01T00:00:01.000Z", time.iso8601(0.9999, 3))
      assert.error_matches(function() time.iso8601(0, 10) end, "0..9 digits")
    end)

    it("defaults to now", function()
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", time.iso8601())
    end)

    it("raises outside years 0000..9999", function()
      assert.error_matches(function() time.iso8601(1e12) end, "outside years")
      assert.error_matches(function() time.iso8601(0 / 0) end, "outside years")
    end)
  end)

  describe(".parse_iso8601", function()
    it("reads what iso8601 writes", function()
      for _, t in ipairs({0, 1795521600.123, -1, 951782400.5, 1e9 + 0.001}) do
        local s = time.iso8601(t)
        assert.equal(s, time.iso8601(assert(time.parse_iso8601(s))))
        assert.is_true(math.abs(time.parse_iso8601(s) - t) < 1e-3)
      end
    end)

    it("accepts offsets, dates alone and variants", function()
      assert.equal(1795521600, time.parse_iso8601("2026-11-24T12:00:00Z"))
      assert.equal(1795521600, time.parse_iso8601("2026-11-24T14:00:00+02:00"))
      assert.equal(1795521600, time.parse_iso8601("2026-11-24T06:30:00-0530"))
      assert.equal(1795521600, time.parse_iso8601("2026-11-24T13:00+01"))
      assert.equal(1795521600, time.parse_iso8601("2026-11-24 12:00:00z"))
      assert.equal(1795478400, time.parse_iso8601("2026-11-24"))
      assert.equal(0.123456789, time.parse_iso8601("1970-01-01T00:00:00.123456789Z"))
    end)

    it("returns nil, msg, TIME_PARSE on bad input", function()
      local cases = {
        ["2026-11-24T12:00:00"] = "missing time zone",
        ["2026-02-30"] = "out of range",
        ["2026-13-01"] = "out of range",
        ["2026-11-24T24:00:00Z"] = "out of range",
        ["2026/11/24"] = "expected YYYY%-MM%-DD",
        ["2026-11-24T12:00:00Zjunk"] = "trailing characters at byte 21",
        ["2026-11-24T12:00:00.Z"] = "digits after the decimal point",
        [""] = "expected YYYY%-MM%-DD",
      }
      for s, pat in pairs(cases) do
        local v, err, code = time.parse_iso8601(s)
        assert.is_nil(v, s)
        assert.equal("TIME_PARSE", code)
        assert.matches(pat, err)
      end
    end)
  end)
end)
