-- scripts/bench/cancel: see that script's header.
local geneva = require "geneva"
local fs = require "geneva.fs"
local proc = require "geneva.proc"
local time = require "geneva.time"

local src = os.getenv("GENEVA_SOURCE_DIR")
package.path = src .. "/tests/support/?.lua;" .. package.path
local emulator = require "ray_emulator"
local bin = os.getenv("GENEVA_BIN")
local RUNS = math.tointeger(tonumber(arg[1]))
local ROWS = 20000

local tmp = fs.tmpdir("geneva-bench-cancel-")
local dir = tmp.path

-- ~1 ms a row, so a job outlives any cancel by far
local function slow(id)
  local t = os.clock() + 0.001
  while os.clock() < t do end
  return id
end

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

local function wait_for(what, f, timeout)
  local deadline = time.monotonic() + (timeout or 60)
  while time.monotonic() < deadline do
    local v = f()
    if v then return v end
    time.sleep(0.02)
  end
  error("timed out waiting for " .. what, 0)
end

local DRIVER = [[
local geneva = require "geneva"
local tbl = geneva.connect(arg[1]):open_table("docs")
geneva.context { cluster = { type = "local", workers = 2 } } (function()
  pcall(tbl.backfill, tbl, arg[2], { batch_size = 500 })
end)
]]

-- one local run: start a driver, wait for its job to commit, stop it by
-- `how` ("cancel" or "sigint"); -> ms from the stop to the driver's exit
local function local_run(db, tbl, n, how)
  local col = ("l%d"):format(n)
  tbl:add_columns { [col] = geneva.udf { data_type = "int64", fn = slow } }
  local script = dir .. "/driver.lua"
  fs.write(script, DRIVER)
  local p = assert(proc.spawn { argv = { bin, script, db.uri, col }, stdin = "null",
                                stdout = dir .. "/driver.out", stderr = dir .. "/driver.err" })
  local v0 = tbl:version()
  local id = wait_for("a running job", function()
    local recs = db:jobs { status = "RUNNING" }
    return recs[1] and recs[1].column == col and tbl:version() > v0 and recs[1].id
  end)
  local t0 = time.monotonic()
  if how == "cancel" then
    assert(proc.run { bin, "jobs", "cancel", id, "--db", db.uri, stdout = "null" })
  else
    assert(p:kill("INT"))
  end
  assert(p:wait(60))
  local ms = (time.monotonic() - t0) * 1000
  p:close()
  return ms
end

local emu    -- the Ray emulator, closed however main ends

-- one Ray run: a background job on the emulator, stopped by `how`
-- ("cancel": job:cancel(); "stop": POST .../stop of its one submission)
local function ray_run(db, tbl, n, how)
  local col = ("r%d"):format(n)
  tbl:add_columns { [col] = geneva.udf { data_type = "int64", fn = slow } }
  local ms
  geneva.ray_cluster { address = emu.url, db = db } (function()
    -- one submission, so both ways stop the same work
    local j = tbl:backfill_async(col, { batch_size = 1000, concurrency = 1 })
    local live = wait_for("workers running", function()
      local jobs, pids = emu:live()
      return #jobs >= 1 and #pids >= 1 and j:record().status == "RUNNING" and jobs
    end)
    local t0 = time.monotonic()
    if how == "cancel" then
      j:cancel()
    else
      emu:api("POST", "/api/jobs/" .. live[1].submission_id .. "/stop")
    end
    assert(emu:wait_idle(60), "the emulator stayed busy")
    ms = (time.monotonic() - t0) * 1000
    if how == "stop" then pcall(j.cancel, j) end
    pcall(j.wait, j)
  end)
  return ms
end

local function main()
  local db = geneva.connect(dir .. "/db")
  local rows = {}
  for i = 1, ROWS do rows[i] = { id = i } end
  local tbl = db:create_table("docs", rows)
  emu = emulator.start(dir .. "/ray", { "--num-cpus", "2", "--stop-wait", "1" })
  local t = { cancel = {}, sigint = {}, ray_cancel = {}, ray_stop = {} }
  local n = 0
  for _ = 1, RUNS do
    n = n + 1; t.cancel[#t.cancel + 1] = local_run(db, tbl, n, "cancel")
    n = n + 1; t.sigint[#t.sigint + 1] = local_run(db, tbl, n, "sigint")
    n = n + 1; t.ray_cancel[#t.ray_cancel + 1] = ray_run(db, tbl, n, "cancel")
    n = n + 1; t.ray_stop[#t.ray_stop + 1] = ray_run(db, tbl, n, "stop")
  end
  local c, s, rc, rs = median(t.cancel), median(t.sigint), median(t.ray_cancel), median(t.ray_stop)
  print(("cancel of a running backfill (%d-row table, ~1 ms a row, 2 workers), median of %d"):format(ROWS, RUNS))
  print(("%-60s %8s"):format("", "ms"))
  print(("%-60s %8.0f"):format("local: geneva jobs cancel (another process) -> driver gone", c))
  print(("%-60s %8.0f"):format("local: Ctrl-C (SIGINT) to the driver -> driver gone", s))
  print(("  cancel / Ctrl-C: %.2fx"):format(c / s))
  print(("%-60s %8.0f"):format("ray: job:cancel() -> no submission or worker left", rc))
  print(("%-60s %8.0f"):format("ray: one POST /api/jobs/{id}/stop -> its workers gone", rs))
  print(("  cancel / stop: %.2fx"):format(rc / rs))
end

local ok, err = pcall(main)
if emu then emu:close() end
tmp:close()
if not ok then error(err, 0) end
