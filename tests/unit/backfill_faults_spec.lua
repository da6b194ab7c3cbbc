-- Specs for backfill under faults, with real processes and real signals:
-- kill -9 of a worker, kill -9 of the driver then a resuming re-run, two
-- drivers on one table at once, SIGINT and SIGTERM of a driver.
-- Runs on a directory and on s3 (moto): see testdb.lua. storage: dir s3
local geneva = require "geneva"
local backfill = require "geneva.backfill"
local job = require "geneva.backfill.job"
local json = require "geneva.json"
local proc = require "geneva.proc"
local time = require "geneva.time"
local fs = require "geneva.fs"
local sqlite = require "geneva.sqlite"
local child = require "child"
local tables = require "tables"
local testdb = require "testdb"

local function text_of(i) return ("r%d:"):format(i) .. ("xy"):rep(i % 9) end

local make_table = tables.maker { rows = function(i) return { id = i, text = text_of(i) } end }
local slow = require("udfs").slow                -- id * 7, ~0.3 ms a row
local check_exact, staged = tables.check_exact, tables.staged
local start_driver = child.start

local wait_until = require("expect").wait_until

-- The driver script: backfills column arg[3] of table arg[2] in db arg[1]
local DRIVER = [[
local geneva = require "geneva"
local db = geneva.connect(arg[1])
local tbl = db:open_table(arg[2])
local ok, res = pcall(tbl.backfill, tbl, arg[3], { batch_size = tonumber(arg[4]),
                                                   commit_every = tonumber(arg[5] or "1") })
if ok then
  print("DONE " .. res.id .. " " .. res.rows.computed)
else
  print("ERROR " .. tostring(res.code) .. " " .. tostring(res.job_id))
  os.exit(1)
end
]]

describe("geneva.backfill faults", function()
  local root, db
  before_each(function()
    root = child.tmpdir()
    db = testdb.connect(root .. "/db")
  end)
  after_each(function() child.rmtree(root) end)

  it("gives exact results when workers are killed -9 mid-job", function()
    local N = 6000
    local tbl = make_table(db, "docs", N, { fragment_size = 2000 })
    tbl:add_columns { s = geneva.udf { data_type = "int64", fn = slow } }
    local j = tbl:backfill_async("s", { batch_size = 100, commit_every = 4 })
    local killed, victims = 0, {}
    while killed < 2 do
      local rec = j:record()
      assert.is_true(rec.status == "PENDING" or rec.status == "RUNNING", "the job ended before the kills")
      -- its workers are the background driver's children (all busy: 60 slow tasks)
      local busy = rec.driver_pid and child.worker_pids(rec.driver_pid) or {}
      if rec.tasks.done >= 3 * (killed + 1) and busy[1] and not victims[busy[1]] then
        victims[busy[1]] = true
        assert.is_true(proc.kill(busy[1], "KILL"))
        killed = killed + 1
      end
    end
    local rec = j:wait()
    assert.equal("DONE", rec.status)
    assert.equal(N, rec.rows.planned)
    assert.equal(N, rec.rows.committed)
    local retried = 0
    for _, line in ipairs(rec.events) do
      if line:match("killed by signal") and line:match("retrying task") then retried = retried + 1 end
    end
    -- a kill can land just after a worker reported its task done (nothing
    -- to retry then), so at least one of the two kills hit a running task
    assert.is_true(retried >= 1 and retried <= 2, "retried " .. retried)
    check_exact(tbl, N, "s", function(id) return id * 7 end)
    for pid in pairs(victims) do assert.is_false(proc.alive(pid)) end
    -- the pool replaced them and still works
    tbl:add_columns { t = geneva.udf { data_type = "int64", fn = function(id) return -id end } }
    assert.equal(N, tbl:backfill("t", { batch_size = 1000 }).rows.computed)
  end)

  it("fails the job when a task keeps killing its worker", function()
    local tbl = make_table(db, "docs", 300, { fragment_size = 300 })
    -- row 150 kills the worker process itself, every time
    tbl:add_columns { d = geneva.udf { data_type = "int64", fn = function(id)
      if id == 150 then
        local pid = require("geneva.proc").self().pid
        require("geneva.proc").kill(pid, "KILL")
      end
      return id
    end } }
    local ok, e = pcall(tbl.backfill, tbl, "d", { batch_size = 100 })
    assert.is_false(ok)
    assert.equal("internal", e.code)
    assert.matches("failed 3 times", e.message)
    assert.matches("signal 9", e.message)
    assert.equal("FAILED", job.load(db.dir, e.job_id).status)
    -- the windows before and after the bad one were computed
    assert.equal(0, tbl:count_rows("d IS NOT NULL AND id BETWEEN 101 AND 200"))
  end)

  it("resumes after kill -9 of the driver: exact, computing less than from scratch", function()
    local N = 8000
    local tbl = make_table(db, "docs", N, { fragment_size = 2000 })
    tbl:add_columns { s = geneva.udf { data_type = "int64", fn = slow } }
    local v0 = tbl:version()
    local p, output = start_driver(root, "driver", DRIVER, db.uri, "docs", "s", "50", "4")
    wait_until("commits", function() return tbl:version() >= v0 + 3 end)
    local dpid = p:pid()
    local r = assert(proc.run { argv = { "pgrep", "-P", tostring(dpid), "-f", "worker --stdio" } })
    local workers = {}
    for pid in r.stdout:gmatch("%d+") do workers[#workers + 1] = math.tointeger(tonumber(pid)) end
    assert.is_true(#workers > 0, "no workers under the driver")
    -- stop the driver so its workers' last outputs stay staged, uncommitted
    assert.is_true(proc.kill(dpid, "STOP"))
    wait_until("staged outputs", function() return #staged(tbl, "s") > 0 end, 20)
    time.sleep(0.3)
    assert.is_true(proc.kill(dpid, "KILL"))
    local how, code = p:wait(10)
    assert.equal("signaled", how)
    assert.equal(9, code)
    p:close()
    local out = output()
    assert.is_nil(out:match("DONE"), "the driver finished before the kill")

    -- its record reads FAILED / abandoned
    local jobs = db:jobs { table = "docs" }
    assert.equal(1, #jobs)
    local killed_id = jobs[1].id
    local rec0 = job.load(db.dir, killed_id)
    assert.equal("FAILED", rec0.status)
    assert.equal("abandoned", rec0.error.code)
    local committed = tbl:count_rows("s IS NOT NULL")
    local checkpoint_rows = 0
    for _, path in ipairs(staged(tbl, "s")) do
      local sdb <close> = assert(sqlite.open(path, { readonly = true }))
      for row in sdb:rows("SELECT count(*) FROM col") do checkpoint_rows = checkpoint_rows + row[1] end
    end
    assert.is_true(checkpoint_rows > 0)
    assert.is_true(committed > 0 and committed < N, "committed " .. committed)
    -- its workers died with it (parent-death signal)
    wait_until("workers gone", function()
      for _, pid in ipairs(workers) do
        if proc.alive(pid) then return false end
      end
      return true
    end, 10)

    -- a re-run in this process resumes
    local rec = tbl:backfill("s", { batch_size = 50 })
    assert.equal("DONE", rec.status)
    -- a staged file stays until its commit has landed: one the killed
    -- driver had just committed is a checkpoint of nothing, and is dropped
    local dropped = 0
    for _, e in ipairs(rec.events) do
      local n = e:match("^dropped (%d+) checkpoint")
      if n then dropped = tonumber(n) end
    end
    assert.is_true(rec.rows.recovered > 0, table.concat(rec.events, "\n"))
    assert.is_true(rec.rows.recovered == checkpoint_rows or dropped > 0,
      ("recovered %d of %d checkpointed rows, dropped none"):format(rec.rows.recovered, checkpoint_rows))
    assert.equal(N - committed - rec.rows.recovered, rec.rows.planned)
    assert.equal(rec.rows.planned, rec.rows.computed)
    assert.is_true(rec.rows.computed < N)
    assert.equal(N - committed, rec.rows.committed)
    check_exact(tbl, N, "s", function(id) return id * 7 end)
    local resumed = false
    for _, e in ipairs(rec.events) do resumed = resumed or e:match("^resumed: committed") ~= nil end
    assert.is_true(resumed)
    -- no checkpoint is left behind
    assert.same({}, staged(tbl, "s"))

    -- geneva jobs cancel on the killed job marks it CANCELLED
    local st, cancel_out, cancel_err = child.cli { "jobs", "cancel", killed_id, "--db", db.uri, "--json" }
    assert.equal(0, st, cancel_err)
    assert.equal("CANCELLED", json.decode(cancel_out).status)
    assert.equal("CANCELLED", job.load(db.dir, killed_id).status)
    assert.is_false(require("geneva.store.backend").exists(db.dir .. "/_geneva/jobs/" .. killed_id .. ".cancel"))
  end)

  it("commits both of two drivers backfilling different columns at once", function()
    local N = 5000
    local tbl = make_table(db, "docs", N, { fragment_size = 1000 })
    tbl:add_columns {
      a = geneva.udf { data_type = "int64", fn = slow },
      b = geneva.udf { data_type = "string", fn = function(text) return text:reverse() end },
    }
    local pa, outa = start_driver(root, "da", DRIVER, db.uri, "docs", "a", "100")
    local pb, outb = start_driver(root, "db", DRIVER, db.uri, "docs", "b", "100")
    for _, x in ipairs { { pa, outa }, { pb, outb } } do
      local how, code = x[1]:wait(90)
      local o, e = x[2]()
      assert.equal("exited", how, e)
      assert.equal(0, code, o .. e)
      assert.matches("^DONE %S+ " .. N, o)
      x[1]:close()
    end
    check_exact(tbl, N, "a", function(id) return id * 7 end)
    check_exact(tbl, N, "b", function(_, text) return text:reverse() end)
    local done = db:jobs { table = "docs", status = "DONE" }
    assert.equal(2, #done)
    -- 2 x 50 commits, all landed on distinct versions
    assert.equal(2 + 100, tbl:version())
  end)

  it("lets only one of two drivers starting on one column at the same instant run", function()
    local tbl = make_table(db, "docs", 2000, { fragment_size = 1000 })
    -- each driver spins until the same wall-clock instant, then starts; the
    -- one that started cancels its job once both have answered. Each round
    -- has a column of its own: a job with nothing to compute would end
    -- (rightly) before the other driver looks.
    local START = [[
local geneva = require "geneva"
local time = require "geneva.time"
local tbl = geneva.connect(arg[1]):open_table("docs")
local at = tonumber(arg[2])
while time.now() < at do end
local ok, j = pcall(tbl.backfill_async, tbl, arg[4])
io.stdout:write(ok and "STARTED\n" or ("REFUSED " .. tostring(j.code) .. "\n"))
io.stdout:flush()
if ok then
  while not io.open(arg[3]) do time.sleep(0.01) end
  j:cancel()
end
]]
    for round = 1, 4 do
      local release = ("%s/release%d"):format(root, round)
      local column = "s" .. round
      tbl:add_columns { [column] = geneva.udf { data_type = "int64", fn = slow } }
      local at = ("%.3f"):format(time.now() + 1.5)
      local pa, outa = start_driver(root, "sa" .. round, START, db.uri, at, release, column)
      local pb, outb = start_driver(root, "sb" .. round, START, db.uri, at, release, column)
      wait_until("both drivers to answer", function()
        return outa() ~= "" and outb() ~= ""
      end, 60)
      assert(fs.write(release, ""))
      local started, refused = 0, 0
      for _, x in ipairs { { pa, outa }, { pb, outb } } do
        local how, code = x[1]:wait(30)
        local o, e = x[2]()
        assert.equal("exited", how, e)
        assert.equal(0, code, o .. e)
        if o:match("^STARTED") then started = started + 1 end
        if o:match("^REFUSED conflict") then refused = refused + 1 end
        x[1]:close()
      end
      assert.same({ 1, 1 }, { started, refused }, "round " .. round)
    end
  end)

  for _, sig in ipairs({ { "INT", 130 }, { "TERM", 143 } }) do
    it("records the job CANCELLED/interrupted when its driver gets SIG" .. sig[1], function()
      local tbl = make_table(db, "docs", 8000, { fragment_size = 2000 })
      tbl:add_columns { s = geneva.udf { data_type = "int64", fn = slow } }
      local v0 = tbl:version()
      local p = start_driver(root, "driver", DRIVER, db.uri, "docs", "s", "50")
      wait_until("a commit", function() return tbl:version() > v0 end)
      assert.is_true(proc.kill(p:pid(), sig[1]))
      local how, code = p:wait(20)
      assert.same({ "exited", sig[2] }, { how, code })
      p:close()
      local rec = db:jobs()[1]
      assert.equal("CANCELLED", rec.status)
      assert.same({ code = "interrupted", message = "interrupted" }, rec.error)
      assert.is_true(#db:jobs { status = "FAILED" } == 0)
      local log = table.concat(db:job(rec.id):logs(), "\n")
      assert.matches("CANCELLED: interrupted: interrupted", log, 1, true)
      -- what it committed stays, and a re-run finishes the job
      assert.is_true(tbl:count_rows("s IS NOT NULL") > 0)
      tbl:backfill("s", { batch_size = 500 })
      check_exact(tbl, 8000, "s", function(id) return id * 7 end)
    end)
  end

  it("kills a worker stuck in C past the UDF's timeout and leaves the row to on_error", function()
    local tbl = tables.make(db, "stuck", 40)
    -- os.execute blocks in C: the in-process timeout hook cannot reach it
    tbl:add_columns {
      hang = geneva.udf { data_type = "int64", timeout = 1, on_error = "null",
        fn = function(id) if id == 7 then os.execute("sleep 60") end return id * 10 end },
      hangfail = geneva.udf { data_type = "int64", timeout = 1,
        fn = function(id) if id == 9 then os.execute("sleep 60") end return id end } }
    local t0 = require("geneva.time").monotonic()
    local rec = tbl:backfill("hang")
    assert.same({ "DONE", 39, 1 }, { rec.status, rec.rows.computed, rec.rows.failed })
    local got = tbl:to_rows{ where = "id IN (6, 7, 8)", columns = { "id", "hang" } }
    assert.same({ 60, nil, 80 }, { got[1].hang, got[2].hang, got[3].hang })
    local err = select(2, pcall(tbl.backfill, tbl, "hangfail"))
    assert.equals("udf_error", err.code)
    assert.equals(9, err.rowid)
    assert.matches("timed out after 1s", err.message)
    assert.is_true(require("geneva.time").monotonic() - t0 < 30)
  end)
end)
