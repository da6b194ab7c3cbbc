-- geneva.time: clocks, an interruptible sleep and ISO 8601 in UTC (C in
-- bindings/time.c). Nothing here raises except on misuse.
local core = require "geneva.time.core"

local time = {
  -- monotonic() -> float seconds (CLOCK_MONOTONIC): for durations
  monotonic = core.monotonic,
  -- now() -> float seconds since the epoch (CLOCK_REALTIME)
  now = core.now,
  -- sleep(seconds) -> true | nil, "interrupted", "EINTR"
  sleep = core.sleep,
  -- iso8601([t [, digits=3]]) -> "2026-11-24T12:00:00.123Z" (UTC, rounded)
  iso8601 = core.iso8601,
  -- parse_iso8601(s) -> float seconds | nil, msg, "TIME_PARSE"
  parse_iso8601 = core.parse_iso8601,
}

-- time.since(t0) -> float seconds elapsed since t0 = time.monotonic().
function time.since(t0) return core.monotonic() - t0 end

return time
