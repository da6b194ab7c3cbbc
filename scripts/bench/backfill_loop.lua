-- The per-row limit for scripts/bench/backfill: plain lua5.4, the same
-- values (backfill_common.lua) and UDF, no storage.
--   lua5.4 backfill_loop.lua ROWS trivial|heavy
-- Prints "<rows> <seconds> <sum of the values>"; only the loop is timed
-- (CPU time; wall time when run by geneva, which the bench does to see how
-- much two CPU-bound processes at once get from this machine).
local here = arg[0]:match("^(.*)/") or "."
local common = dofile(here .. "/backfill_common.lua")
local n, name = math.tointeger(tonumber(arg[1])), arg[2]
local fn = assert(common[name], "unknown udf")
local texts = {}
for i = 1, n do texts[i] = common.text_of(i) end
local ok, time = pcall(require, "geneva.time")
local clock = ok and time.monotonic or os.clock
local t0 = clock()
local sum = 0
for i = 1, n do sum = sum + fn(texts[i]) end
print(n, clock() - t0, sum)
