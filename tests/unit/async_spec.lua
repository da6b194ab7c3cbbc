-- Background jobs (README, Using it): backfill_async makes progress whatever its
-- caller does, other processes see it and stop it, and it belongs to its
-- context and its owner. Real processes, real signals.
-- Runs on a directory and on s3 (moto): see testdb.lua. storage: dir s3
local geneva = require "geneva"
local testdb = require "testdb"
local job = require "geneva.backfill.job"
local json = require "geneva.json"
local proc = require "geneva.proc"
local time = require "geneva.time"
local child = require "child"
local tables = require "tables"
local wait_until = require("expect").wait_until

-- table docs: ids 1..n and s = id * 7 computed at ~0.3 ms a row (a 6000-row
-- job lasts a couple of seconds on 2 workers)
local function make_table(db, n)
  return tables.make(db, "docs", n, { fragment_size = 2000,
    columns = { s = geneva.udf { data_type = "int64", fn = require("udfs").slow } } })
end

-- what another process sees: the record on disk
local function on_disk(dir, id) return assert(job.load(dir, id)) end

-- `geneva jobs ARGS... --db URI --json` -> exit code, stdout, stderr
local function jobs_cli(dir, ...)
  local args = { "jobs", ... }
  for _, a in ipairs { "--db", dir, "--json" } do args[#args + 1] = a end
  return child.cli(args)
end

-- Starts `geneva dir/owner.lua <db's URI>`, a script that starts a job and prints
-- its id; returns the Process and the job's id once the job is RUNNING.
local function start_owner(dir, db, code)
  local p, output = child.start(dir, "owner", code, db.uri)
  local id = wait_until("the job id", function() return output():match("^(%S+)\n") end, 30)
  wait_until("RUNNING", function() return on_disk(db.dir, id).status == "RUNNING" end, 30)
  return p, id
end

describe("background jobs", function()
  local dir, db
  before_each(function()
    dir = child.tmpdir()
    db = testdb.connect(dir)
  end)
  after_each(function() child.rmtree(dir) end)

  it("progress while the caller sleeps, without touching the job", function()
    local tbl = make_table(db, 12000)
    local j = tbl:backfill_async("s", { batch_size = 200, commit_every = 2 })
    -- no status(), no wait(): only time passes here, and the record on
    -- disk is read (however long a loaded machine takes to start the job)
    local rec
    local deadline = time.monotonic() + 120
    repeat
      time.sleep(0.5)
      rec = on_disk(db.dir, j.id)
    until (rec.tasks.done > 0 and rec.rows.committed > 0) or time.monotonic() > deadline
    assert.is_truthy(({ RUNNING = true, DONE = true })[rec.status], rec.status)
    assert.is_true(rec.tasks.done > 0, "no task done while the caller slept")
    assert.is_true(rec.rows.committed > 0, "nothing committed while the caller slept")
    assert.equal("DONE", j:wait().status)
    assert.equal(0, tbl:count_rows("s IS NULL OR s <> id * 7"))
  end)

  it("progress while the caller busy-loops in Lua, and is seen live by `geneva jobs show`", function()
    local tbl = make_table(db, 6000)
    local j = tbl:backfill_async("s", { batch_size = 200, commit_every = 2 })
    -- spin a second at a time (a loaded machine may take long to start
    -- the job), looking from another shell in between
    local shown
    for _ = 1, 120 do
      local t = os.clock() + 1.0
      local spins = 0
      while os.clock() < t do spins = spins + 1 end
      local code, out, err = jobs_cli(db.uri, "show", j.id)
      assert.equal(0, code, err)
      shown = json.decode(out)
      assert.equal(j.id, shown.id)
      if shown.tasks.done > 0 then break end
    end
    assert.is_true(shown.tasks.done > 0, "another shell saw no progress")
    -- and the progress goes on while we look
    wait_until("more progress", function()
      local again = json.decode((select(2, jobs_cli(db.uri, "show", j.id))))
      return again.tasks.done > shown.tasks.done or again.status == "DONE"
    end, 30)
    j:wait()
  end)

  it("is cancelled from another process within a second, keeping what was committed", function()
    local tbl = make_table(db, 20000)
    local j = tbl:backfill_async("s", { batch_size = 200, commit_every = 1 })
    wait_until("a commit", function() return on_disk(db.dir, j.id).rows.committed > 0 end, 30)
    local t0 = time.monotonic()
    local code, _, err = jobs_cli(db.uri, "cancel", j.id)
    assert.equal(0, code, err)
    wait_until("CANCELLED", function() return on_disk(db.dir, j.id).status == "CANCELLED" end, 60)
    local took = time.monotonic() - t0
    -- a bounded wait, not a timing assertion: the marker is polled every 250 ms
    print(("  (cancel took %.2f s)"):format(took))
    local rec = on_disk(db.dir, j.id)
    assert.is_true(rec.rows.committed < 20000)
    assert.equal(rec.rows.committed, tbl:count_rows("s IS NOT NULL"))
    local ok, err = pcall(j.wait, j)
    assert.is_false(ok)
    assert.equal("cancelled", err.code)
    -- its driver process and its workers are gone
    wait_until("no driver", function() return #child.worker_pids(proc.self().pid, "--driver") == 0 end, 60)
    if rec.driver_pid then
      wait_until("no workers", function() return #child.worker_pids(rec.driver_pid) == 0 end, 60)
    end
  end)

  it("belongs to its context: exit waits for it, an interrupt of the owner stops it", function()
    local tbl = make_table(db, 3000)
    local j
    geneva.local_cluster{ workers = 2 }(function()
      j = tbl:backfill_async("s", { batch_size = 300 })
    end)
    assert.equal("DONE", on_disk(db.dir, j.id).status)
    assert.equal(0, #child.worker_pids(proc.self().pid, "--driver"))

    -- a script that starts a job and is then SIGTERMed: teardown stops it
    local p, id = start_owner(dir, db, [[
local geneva = require "geneva"
local db = geneva.connect(arg[1])
local tbl = db:open_table("docs")
tbl:add_columns { u = geneva.udf { data_type = "int64", fn = function(id)
  local t = os.clock() + 0.002 while os.clock() < t do end return id end } }
geneva.local_cluster{ workers = 1 }(function()
  local j = tbl:backfill_async("u", { batch_size = 100 })
  print(j.id)
  io.stdout:flush()
  require("geneva.time").sleep(60)
end)
]])
    local driver_pid = on_disk(db.dir, id).driver_pid
    assert.is_true(proc.alive(driver_pid))
    assert.is_true(proc.kill(p:pid(), "TERM"))
    local how, code = p:wait(30)
    assert.equal("exited", how)
    assert.equal(143, code)
    assert.is_false(proc.alive(driver_pid))
    local rec = on_disk(db.dir, id)
    assert.equal("CANCELLED", rec.status)
    assert.equal("interrupted", rec.error.code)
    p:close()
  end)

  it("dies with its owner after kill -9", function()
    local tbl = make_table(db, 2000)
    assert.is_not_nil(tbl)
    local p, id = start_owner(dir, db, [[
local geneva = require "geneva"
local tbl = geneva.connect(arg[1]):open_table("docs")
tbl:add_columns { u = geneva.udf { data_type = "int64", fn = function(id)
  local t = os.clock() + 0.005 while os.clock() < t do end return id end } }
local j = tbl:backfill_async("u", { batch_size = 50 })
print(j.id)
io.stdout:flush()
require("geneva.time").sleep(60)
]])
    local driver_pid = on_disk(db.dir, id).driver_pid
    local workers = wait_until("workers", function()
      local w = child.worker_pids(driver_pid)
      return #w > 0 and w
    end, 30)
    assert.is_true(proc.kill(p:pid(), "KILL"))
    p:wait(10)
    wait_until("the driver process gone", function() return not proc.alive(driver_pid) end, 10)
    for _, w in ipairs(workers) do
      wait_until("worker gone", function() return not proc.alive(w) end, 10)
    end
    -- its driver either saw the signal its owner's death sends (interrupted:
    -- CANCELLED) or died before writing (abandoned: FAILED)
    local rec = on_disk(db.dir, id)
    local want = { interrupted = "CANCELLED", abandoned = "FAILED" }
    assert.equal(want[rec.error.code], rec.status, rec.error.code)
    p:close()
  end)
end)
