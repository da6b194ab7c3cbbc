-- scripts/bench/s3's body, run by geneva under tests/support/with_moto.lua
-- (see the launcher for usage).   geneva s3.lua ROWS WORKERS
local geneva = require "geneva"
local fs = require "geneva.fs"
local clock = geneva.time.monotonic

local here = arg[0]:match("^(.*)/") or "."
local src = os.getenv("GENEVA_SOURCE_DIR") or (here .. "/../..")
package.path = src .. "/tests/support/?.lua;" .. package.path
local common = dofile(here .. "/backfill_common.lua")
local N = math.tointeger(tonumber(arg[1]))
local W = math.tointeger(tonumber(arg[2] or "2"))
local bucket = assert(os.getenv("GENEVA_TEST_S3_BUCKET"), "run under tests/support/with_moto.lua")
local cache = assert(os.getenv("GENEVA_CACHE_DIR"))

local tmp = fs.tmpdir("geneva-bench-")
local function say(fmt, ...) io.stderr:write(fmt:format(...), "\n") end

local expected = 0
for i = 1, N do expected = expected + #common.text_of(i) end

local runs = 0
local function backfill(tbl, opts, n, want)
  n, want = n or N, want or expected
  runs = runs + 1
  local col = ("c%d"):format(runs)
  tbl:add_columns{ [col] = geneva.udf{ data_type = "int64", fn = common.trivial, input_columns = { "text" } } }
  local t0 = clock()
  local rec
  geneva.local_cluster{ workers = W }(function() rec = tbl:backfill(col, opts) end)
  local secs = clock() - t0
  local sum, nonnull = common.column_sum(tbl, col)
  assert(nonnull == n and sum == want, ("%s: wrong result (%d rows, sum %d)"):format(col, nonnull, sum))
  return secs, rec
end

local function drop_cache()
  fs.remove_tree(cache .. "/s3")
end

say("building %d rows twice: a directory and s3://%s ...", N, bucket)
local t0 = clock()
local dir_tbl = common.build_table(geneva.connect(tmp.path .. "/db"), "bench", N)
local dir_create = clock() - t0
t0 = clock()
local s3_db = geneva.connect(("s3://%s/bench-%d"):format(bucket, os.time()))
local s3_tbl = common.build_table(s3_db, "bench", N)
local s3_create = clock() - t0

local d = backfill(dir_tbl)
drop_cache()
local cold = backfill(s3_tbl)
local warm = backfill(s3_tbl)

-- requests, through a counting proxy (no faults)
local m = require("moto").from_env()
local proxy = m:proxy()
local pdb = geneva.connect(s3_db.uri, { endpoint = proxy.endpoint })
local ptbl = pdb:open_table("bench")
local r0 = proxy:state().requests
ptbl:add { { id = N + 1, text = common.text_of(N + 1) } }
local per_commit = proxy:state().requests - r0
r0 = proxy:state().requests
local tasks_rows = math.max(1, N // 20)
local _, rec = backfill(ptbl, { batch_size = tasks_rows, commit_every = 1000 }, N + 1,
                        expected + #common.text_of(N + 1))
local per_backfill = proxy:state().requests - r0
proxy:stop()

local function rate(s) return N / s end
local function fmt(r) return r >= 1e6 and ("%.2fM"):format(r / 1e6) or ("%.0fk"):format(r / 1e3) end
print(("backfill of a trivial UDF over %d rows, %d local workers (moto on loopback)"):format(N, W))
print(("%-40s %10s %10s"):format("", "rows/s", "seconds"))
print(("%-40s %10s %10.2f"):format("directory", fmt(rate(d)), d))
print(("%-40s %10s %10.2f"):format("s3, cold cache", fmt(rate(cold)), cold))
print(("%-40s %10s %10.2f"):format("s3, warm cache", fmt(rate(warm)), warm))
print(("  s3 / directory: cold %.2fx, warm %.2fx"):format(d / cold, d / warm))
print(("  create_table + add: directory %.2f s, s3 %.2f s"):format(dir_create, s3_create))
print(("  requests: %d for a one-row append commit; %d for a backfill of %d tasks in %d commit(s): %.1f per task")
  :format(per_commit, per_backfill, rec.tasks.done, rec.commits, per_backfill / rec.tasks.done))
tmp:close()
