-- The per-row limit for scripts/bench/backfill: plain lua5.4, the same
-- values (backfill_common.lua) and UDF, no storage.
--   lua5.4 backfill_loop.lua ROWS trivial|heavy
-- Prints "<rows> <seconds> <sum of the values>"; only the loop is timed.
local here = arg[0]:match("^(.*)/") or "."
local common = dofile(here .. "/backfill_common.lua")
local n, name = math.tointeger(tonumber(arg[1])), arg[2]
local fn = assert(common[name], "unknown udf")
local texts = {}
for i = 1, n do texts[i] = common.text_of(i) end
local t0 = os.clock()
local sum = 0
for i = 1, n do sum = sum + fn(texts[i]) end
print(n, os.clock() - t0, sum)
