--- Clocks, an interruptible sleep and ISO 8601 in UTC (C in bindings/time.c).
-- Nothing here raises except on misuse.
-- @module geneva.time
-- @usage local time = require "geneva.time"
-- local t0 = time.monotonic()
-- time.sleep(0.5)
-- print(time.since(t0), time.iso8601())
local core = require "geneva.time.core"

local time = {
  monotonic = core.monotonic,
  now = core.now,
  sleep = core.sleep,
  iso8601 = core.iso8601,
  parse_iso8601 = core.parse_iso8601,
}

--- Seconds of a clock that never goes back (CLOCK_MONOTONIC): for durations.
-- @function monotonic
-- @treturn number

--- Seconds since the epoch (CLOCK_REALTIME).
-- @function now
-- @treturn number

--- Sleeps; Ctrl-C ends it early.
-- @function sleep
-- @number seconds
-- @treturn[1] boolean true
-- @return[2] nil when interrupted
-- @treturn[2] string `"interrupted"`
-- @treturn[2] string `"EINTR"`

--- A time as ISO 8601 in UTC, `"2026-11-24T12:00:00.123Z"` (rounded).
-- @function iso8601
-- @number[opt] t seconds since the epoch (default: now)
-- @int[opt=3] digits of the fraction
-- @treturn string

--- Parses an ISO 8601 time.
-- @function parse_iso8601
-- @string s
-- @treturn[1] number seconds since the epoch
-- @return[2] nil
-- @treturn[2] string the message
-- @treturn[2] string `"TIME_PARSE"`

-- (the faces above are C functions)

--- Seconds elapsed since `t0`.
-- @number t0 a @{monotonic} time
-- @treturn number
function time.since(t0) return core.monotonic() - t0 end

return time
