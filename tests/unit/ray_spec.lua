-- The Ray runner (geneva.runner.ray) against the Ray dashboard emulator
-- (tests/fakes/ray_dashboard.py, which really runs the workers it is sent),
-- over loopback: backfills with exact values, packages, faults, auth,
-- teardown, cancel, reap. Every describe block starts its own emulator.
local geneva = require "geneva"
local json = require "geneva.json"
local errors = require "geneva.errors"
local proc = require "geneva.proc"
local time = require "geneva.time"
local fs = require "geneva.fs"
local child = require "child"
local emulator = require "ray_emulator"
local expect = require "expect"
local wait_until = expect.wait_until

local SRC = os.getenv("GENEVA_SOURCE_DIR") or "."
local function runner_current() return (require("geneva.runner").current()) end

local function make_table(db, name, n, fragment_size)
  local rows = {}
  for i = 1, n do rows[i] = { id = i, text = ("w%d x%d"):format(i, i % 7) } end
  return db:create_table(name, rows, { fragment_size = fragment_size or 2000 })
end

-- every row's col is f(row) (nil where f says nil)
local function check_exact(tbl, n, col, f)
  local rows = tbl:to_rows { columns = { "id", "text", col } }
  assert.equal(n, #rows)
  local bad, first = 0, nil
  for _, r in ipairs(rows) do
    if r[col] ~= f(r) then
      bad = bad + 1
      first = first or ("id %d: %s, want %s"):format(r.id, tostring(r[col]), tostring(f(r)))
    end
  end
  assert.equal(0, bad, ("%d wrong values in %s (%s)"):format(bad, col, tostring(first)))
end

local function count(events, pattern)
  local n = 0
  for _, e in ipairs(events) do if e:find(pattern) then n = n + 1 end end
  return n
end

local function has(events, plain)
  for _, e in ipairs(events) do if e:find(plain, 1, true) then return e end end
end

-- ~1 ms a row: tasks last long enough to be hit
local function slow(id)
  local t = os.clock() + 0.001
  while os.clock() < t do end
  return id * 13
end

describe("ray runner", function()
  local root, emu

  setup(function()
    root = child.tmpdir()
    emu = emulator.start(root .. "/ray", { "--num-cpus", "4", "--stop-wait", "1" })
  end)
  teardown(function()
    if emu then emu:close() end
    child.rmtree(root)
  end)

  local dir, db
  before_each(function()
    dir = child.tmpdir()
    db = geneva.connect(dir .. "/db")
  end)
  after_each(function()
    -- whatever a test did, nothing of ours runs on the cluster afterwards
    assert.is_true(emu:wait_idle(20), "jobs still live on the emulator: " .. json.encode(emu:state().jobs))
    child.rmtree(dir)
  end)

  local function ray(opts)
    local o = { address = emu.url, db = db }
    for k, v in pairs(opts or {}) do o[k] = v end
    return geneva.ray_cluster(o)
  end

  it("backfills a scalar UDF with exact values, one submission per slot, and leaves nothing behind", function()
    local N = 6000
    local tbl = make_table(db, "docs", N)
    tbl:add_columns { x = geneva.udf { data_type = "int64", fn = function(id) return id * 2 + 1 end } }
    local submits = emu:counter("submit")
    local rec
    ray()(function() rec = tbl:backfill("x", { batch_size = 500 }) end)
    assert.equal("DONE", rec.status)
    assert.equal(N, rec.rows.computed)
    assert.equal(12, rec.tasks.done)
    check_exact(tbl, N, "x", function(r) return r.id * 2 + 1 end)
    -- 4 free CPUs, num_cpus = 1: four workers for twelve tasks, not twelve jobs
    assert.equal(4, emu:counter("submit") - submits)
    assert.equal(4, count(rec.events, "^ray: submitted geneva%-"))
    assert.is_truthy(has(rec.events, "4 worker submissions for 12 tasks"), table.concat(rec.events, "\n"))
    assert.equal("ray", rec.runner.type)
    assert.equal("2.52.0", rec.runner.ray_version)
    assert.equal(emu.url, rec.runner.address)
    -- teardown: every submission stopped or finished, deleted, gone
    assert.same({}, emu:state().jobs)
    assert.is_false(fs.exists(dir .. "/db/_geneva/jobs/" .. rec.id))      -- its queue
    assert.same({}, fs.list(dir .. "/db/_geneva/leases"))
  end)

  it("batch and stateful UDFs with where, and concurrency = 2: exact, two submissions", function()
    local N = 3000
    local tbl = make_table(db, "docs", N, 1000)
    tbl:add_columns {
      up = geneva.udf { data_type = "string", batch = true, input_columns = { "text" },
        fn = function(texts)
          local out = { n = texts.n }
          for i = 1, texts.n do out[i] = texts[i]:upper() end
          return out
        end },
      salted = geneva.udf { data_type = "int64", input_columns = { "id" },
        setup = function() return { salt = 1000 } end,
        fn = function(state, id) return id + state.salt end },
    }
    local submits = emu:counter("submit")
    local a, b
    -- a named cluster this time
    db:define_cluster("emulated", { type = "ray", address = emu.url })
    geneva.context{ cluster = "emulated", db = db }(function()
      a = tbl:backfill("up", { batch_size = 400, where = "id % 3 = 0" })
      b = tbl:backfill("salted", { batch_size = 400, concurrency = 2 })
    end)
    assert.equal("DONE", a.status)
    assert.equal(1000, a.rows.computed)
    assert.equal("DONE", b.status)
    check_exact(tbl, N, "up", function(r) return r.id % 3 == 0 and r.text:upper() or nil end)
    check_exact(tbl, N, "salted", function(r) return r.id + 1000 end)
    assert.equal(2, count(b.events, "^ray: submitted geneva%-"))
    assert.equal(4 + 2, emu:counter("submit") - submits)
    assert.same({}, emu:state().jobs)
  end)

  it("a UDF that raises fails the job with its error, and teardown still leaves nothing", function()
    local tbl = make_table(db, "docs", 2000)
    tbl:add_columns { bad = geneva.udf { data_type = "int64", fn = function(id)
      if id == 1234 then error("no luck with 1234") end
      return id
    end } }
    local e = expect.raises("udf_error", function()
      ray()(function() tbl:backfill("bad", { batch_size = 500 }) end)
    end)
    assert.is_truthy(tostring(e):find("no luck with 1234", 1, true), tostring(e))
    local rec = db:jobs()[1]
    assert.equal("FAILED", rec.status)
    assert.same({}, emu:state().jobs)
  end)
  it("ships a manifest: modules and env on the workers; an unchanged manifest uploads nothing", function()
    local mdir = dir .. "/src"
    assert(fs.mkdir_p(mdir))
    assert(fs.write(mdir .. "/ray_udfs.lua", [==[
      local M = {}
      function M.tagged(id) return os.getenv("RAY_SPEC_MODE") .. ":" .. id end
      return M]==]))
    local saved = package.path
    package.path = mdir .. "/?.lua;" .. package.path
    local tbl = make_table(db, "docs", 1000)
    tbl:add_columns { tagged = geneva.udf { module = "ray_udfs", ["function"] = "tagged", data_type = "string" } }
    db:define_manifest("m", { modules = { "ray_udfs" }, env = { RAY_SPEC_MODE = "shipped" } })
    package.path = saved          -- workers must get the module from the package
    local puts = emu:counter("package_put_ok")
    local rec
    ray{ manifest = "m" }(function() rec = tbl:backfill("tagged", { batch_size = 300 }) end)
    check_exact(tbl, 1000, "tagged", function(r) return "shipped:" .. r.id end)
    assert.equal(puts + 1, emu:counter("package_put_ok"))
    assert.is_truthy(has(rec.events, "package _ray_pkg_"), table.concat(rec.events, "\n"))
    assert.is_truthy(has(rec.events, " uploaded"))
    -- the same manifest again: its package is on the cluster already
    tbl:add_columns { again = geneva.udf { module = "ray_udfs", ["function"] = "tagged", data_type = "string" } }
    package.path = mdir .. "/?.lua;" .. package.path
    db:define_manifest("m", { modules = { "ray_udfs" }, env = { RAY_SPEC_MODE = "shipped" } })
    package.path = saved
    ray{ manifest = "m" }(function() rec = tbl:backfill("again", { batch_size = 300 }) end)
    check_exact(tbl, 1000, "again", function(r) return "shipped:" .. r.id end)
    assert.equal(puts + 1, emu:counter("package_put_ok"))
    assert.is_truthy(has(rec.events, "already on the cluster"), table.concat(rec.events, "\n"))
  end)

  it("refuses a package of 100 MiB or more before uploading, naming its largest files", function()
    local ray_runner = require "geneva.runner.ray"
    local manifest = require "geneva.context.manifest"
    local mdir = dir .. "/big"
    assert(fs.mkdir_p(mdir))
    assert(fs.write(mdir .. "/small.txt", ("s"):rep(100)))
    assert(fs.write(mdir .. "/huge.bin", fs.random_hex(6000)))
    assert(fs.write(mdir .. "/large.bin", fs.random_hex(3000)))
    db:define_manifest("big", { files = { "*" }, base_dir = mdir })
    local caps = { ray_runner.MAX_UPLOAD, manifest.MAX_UPLOAD }
    local puts = emu:counter("package_put_ok") + emu:counter("package_put")
    -- the cap scaled down, a few KiB standing for 100 MiB: at context enter
    -- (the manifest's record), and in the runner (the zip itself) when the
    -- record passed
    local msgs = {}
    for _, c in ipairs({ { 1e12, 4096 }, { 4096, 1e12 } }) do
      ray_runner.MAX_UPLOAD, manifest.MAX_UPLOAD = c[1], c[2]
      local ok, e = pcall(ray{ manifest = "big" }, function() end)
      ray_runner.MAX_UPLOAD, manifest.MAX_UPLOAD = caps[1], caps[2]
      assert.is_false(ok)
      assert.equal("invalid_argument", e.code)
      msgs[#msgs + 1] = tostring(e)
    end
    assert.is_truthy(msgs[1]:find("over Ray's 100 MiB upload limit for ray clusters", 1, true), msgs[1])
    assert.is_truthy(msgs[2]:find("Ray refuses uploads of 100 MiB or more", 1, true), msgs[2])
    for _, msg in ipairs(msgs) do
      assert.is_truthy(msg:find("largest files: huge.bin (0.0 MiB), large.bin (0.0 MiB), small.txt (0.0 MiB)", 1, true), msg)
    end
    assert.equal(puts, emu:counter("package_put_ok") + emu:counter("package_put"))
    assert.same({}, fs.list(dir .. "/db/_geneva/leases"))
  end)

  it("a submit whose answer was lost is recognised on retry, not doubled", function()
    local tbl = make_table(db, "docs", 2000)
    tbl:add_columns { y = geneva.udf { data_type = "int64", fn = function(id) return id - 7 end } }
    emu:faults{ route = "submit", action = "drop_after_accept", count = 1 }
    local submits = emu:counter("submit")
    local rec
    ray()(function() rec = tbl:backfill("y", { batch_size = 500, concurrency = 2 }) end)
    check_exact(tbl, 2000, "y", function(r) return r.id - 7 end)
    -- two slots, three POSTs: the lost one and its retry, answered "already exists"
    assert.equal(3, emu:counter("submit") - submits)
    assert.equal(2, count(rec.events, "^ray: submitted geneva%-"))
    assert.is_truthy(has(rec.events, "its answer was lost, the retry found it made"), table.concat(rec.events, "\n"))
  end)

  it("rides out dropped connections and 500s on status polls and the cluster status", function()
    local tbl = make_table(db, "docs", 3000)
    tbl:add_columns { s = geneva.udf { data_type = "int64", fn = slow } }
    emu:faults{ { route = "get", action = "drop", count = 3 }, { route = "get", action = "status", count = 3 },
                { route = "cluster_status", action = "status", count = 1 } }
    local rec
    ray()(function() rec = tbl:backfill("s", { batch_size = 500 }) end)
    assert.equal("DONE", rec.status)
    check_exact(tbl, 3000, "s", function(r) return r.id * 13 end)
  end)

  it("teardown rides out 500s on DELETE: each submission deleted on a later try, nothing left", function()
    -- found by tests/reliability's ray-faults loop: one 500 per DELETE
    -- used to fail the context's exit and leave the submissions' leases
    local tbl = make_table(db, "docs", 2000)
    tbl:add_columns { x = geneva.udf { data_type = "int64", fn = function(id) return id + 1 end } }
    emu:faults{ route = "delete", action = "status", status = 500, count = 3 }
    local rec
    ray()(function() rec = tbl:backfill("x", { batch_size = 500, concurrency = 2 }) end)
    assert.equal("DONE", rec.status)
    check_exact(tbl, 2000, "x", function(r) return r.id + 1 end)
    assert.same({}, emu:state().jobs)
    assert.same({}, fs.list(dir .. "/db/_geneva/leases"))
    assert.equal(0, emu:faults({}).faults[1].count)     -- the 500s were served
  end)

  for _, how in ipairs({ "stop", "kill" }) do
    it("a worker submission " .. (how == "stop" and "stopped" or "killed -9") .. " mid-task: its task runs again, exact", function()
      local N = 4000
      local tbl = make_table(db, "docs", N)
      tbl:add_columns { s = geneva.udf { data_type = "int64", fn = slow } }
      local j
      local victim
      ray()(function()
        j = tbl:backfill_async("s", { batch_size = 250 })
        -- the worker holding a claim made a moment ago (so it is mid-task): hit it
        local claims = dir .. "/db/_geneva/jobs/" .. j.id .. "/queue/claims"
        wait_until("a fresh claim", function()
          for _, name in ipairs(fs.list(claims) or {}) do
            local st = fs.stat(claims .. "/" .. name)
            local c = st and time.now() - st.mtime < 0.1 and json.decode(child.read(claims .. "/" .. name) or "null")
            if c then
              for _, job in ipairs(emu:state().jobs) do
                if job.submission_id == c.worker and job.status == "RUNNING" then victim = job return true end
              end
            end
          end
        end, 60)
        if how == "stop" then
          assert.equal(200, (emu:api("POST", "/api/jobs/" .. victim.submission_id .. "/stop")))
        else
          -- the geneva worker itself (the entrypoint's exec'd process), not its heartbeat
          local pid
          for _, p in ipairs(victim.live_pids) do
            local cmd = child.read("/proc/" .. p .. "/cmdline") or ""
            if cmd:find("worker\0--queue", 1, true) then pid = p end
          end
          assert.is_truthy(pid, "no worker process in " .. json.encode(victim))
          assert.is_true(proc.kill(pid, "KILL"))
        end
        j:wait()
      end)
      local rec = j:record()
      assert.equal("DONE", rec.status)
      assert.equal(N, rec.rows.committed)
      check_exact(tbl, N, "s", function(r) return r.id * 13 end)
      local ended = has(rec.events, "worker submission " .. victim.submission_id .. " " .. (how == "stop" and "STOPPED" or "FAILED"))
      assert.is_truthy(ended, table.concat(rec.events, "\n"))
      assert.is_truthy(has(rec.events, "retrying task"), table.concat(rec.events, "\n"))
      -- the slot came back under its next attempt
      local again = victim.submission_id:gsub("%-1$", "-2")
      assert.is_truthy(has(rec.events, "submitted " .. again), table.concat(rec.events, "\n"))
    end)
  end

  it("a head that restarts and forgets its jobs and packages: slots resubmitted, package uploaded again, exact", function()
    local mdir = dir .. "/src"
    assert(fs.mkdir_p(mdir))
    assert(fs.write(mdir .. "/restart_udfs.lua", "return { f = function(id) local t = os.clock() + 0.001 while os.clock() < t do end return id * 13 end }"))
    local saved = package.path
    package.path = mdir .. "/?.lua;" .. package.path
    local tbl = make_table(db, "docs", 4000)
    tbl:add_columns { s = geneva.udf { module = "restart_udfs", ["function"] = "f", data_type = "int64" } }
    db:define_manifest("rm", { modules = { "restart_udfs" } })
    package.path = saved
    local puts = emu:counter("package_put_ok")
    local rec
    ray{ manifest = "rm" }(function()
      local j = tbl:backfill_async("s", { batch_size = 250 })
      wait_until("tasks done", function() return j:record().tasks.done >= 2 end, 60)
      assert.equal(200, (emu:api("POST", "/_emulator/restart", { downtime = 1 })))
      rec = j:wait()
    end)
    assert.equal("DONE", rec.status)
    assert.equal(4000, rec.rows.committed)
    check_exact(tbl, 4000, "s", function(r) return r.id * 13 end)
    assert.is_truthy(has(rec.events, "no longer knows it"), table.concat(rec.events, "\n"))
    assert.is_truthy(has(rec.events, "uploaded again"), table.concat(rec.events, "\n"))
    assert.equal(puts + 2, emu:counter("package_put_ok"))
  end)

  it("a dashboard lost for longer than LOST_AFTER fails the job clearly; teardown finishes once it is back", function()
    local ray_runner = require "geneva.runner.ray"
    local tbl = make_table(db, "docs", 4000)
    tbl:add_columns { s = geneva.udf { data_type = "int64", fn = slow } }
    local saved = ray_runner.LOST_AFTER
    ray_runner.LOST_AFTER = 1.5
    local ok, e = pcall(ray(), function()
      local r = runner_current()
      local poll, hit = r.poll, false
      r.poll = function(self, timeout)
        local ev = poll(self, timeout)
        for _, x in ipairs(ev) do
          if x.kind == "done" and not hit then
            hit = true
            emu:api("POST", "/_emulator/restart", { downtime = 4 })
          end
        end
        return ev
      end
      tbl:backfill("s", { batch_size = 250 })
    end)
    ray_runner.LOST_AFTER = saved
    assert.is_false(ok)
    assert.equal("unavailable", e.code)
    assert.is_truthy(tostring(e):find("lost the Ray dashboard at " .. emu.url .. " for over 1.5s", 1, true), tostring(e))
    assert.same({}, emu:state().jobs)
    assert.same({}, fs.list(dir .. "/db/_geneva/leases"))
  end)

  it("workers that cannot start: each slot retried, then a clear error with the Ray message and log lines", function()
    local tbl = make_table(db, "docs", 1000)
    tbl:add_columns { x = geneva.udf { data_type = "int64", fn = function(id) return id end } }
    local R = require "geneva.runner"
    local real = R.worker_exe
    R.worker_exe = function() return "/nonexistent/bin/geneva" end    -- what a node without geneva does
    local submits = emu:counter("submit")
    local ok, e = pcall(ray(), function() tbl:backfill("x", { batch_size = 500, concurrency = 1 }) end)
    R.worker_exe = real
    assert.is_false(ok)
    assert.equal("unavailable", e.code)
    local msg = tostring(e)
    assert.is_truthy(msg:find("every worker submission of job", 1, true), msg)
    assert.is_truthy(msg:find("ended FAILED: Job entrypoint command failed with exit code 127", 1, true), msg)
    assert.is_truthy(msg:find("/nonexistent/bin/geneva", 1, true), msg)      -- the log's last lines
    assert.equal(3, emu:counter("submit") - submits)                         -- SLOT_ATTEMPTS for its one slot
    local rec = db:jobs()[1]
    assert.equal("FAILED", rec.status)
    assert.equal(3, count(rec.events, "^ray: worker submission .* FAILED"))
  end)

  -- how fast: scripts/bench/cancel measures it; a bound here would flake on a loaded machine
  it("job:cancel() of a background job stops its workers before the job ends", function()
    local tbl = make_table(db, "docs", 20000)
    tbl:add_columns { s = geneva.udf { data_type = "int64", fn = slow } }
    ray()(function()
      local j = tbl:backfill_async("s", { batch_size = 1000 })
      wait_until("workers running", function()
        local jobs, pids = emu:live()
        return #jobs >= 2 and #pids >= 2 and j:record().status == "RUNNING"
      end, 60)
      j:cancel()
      assert.is_true(emu:wait_idle(60))
      assert.equal("CANCELLED", j:status())
      local rec = j:record()
      assert.is_true(rec.rows.committed < 20000)
      assert.equal(rec.rows.committed, tbl:count_rows("s IS NOT NULL"))
    end)
    assert.same({}, emu:state().jobs)
  end)

  it("logs: the workers' Ray logs, tagged by slot, followed live by geneva jobs logs -f and job:logs", function()
    local tbl = make_table(db, "docs", 8000)
    tbl:add_columns { s = geneva.udf { data_type = "int64", fn = function(id)
      if id % 1000 == 0 then io.stderr:write("udf at row ", id, "\n") end
      local t = os.clock() + 0.0005
      while os.clock() < t do end
      return id
    end } }
    ray()(function()
      local j = tbl:backfill_async("s", { batch_size = 1000, concurrency = 2 })
      wait_until("a running job", function() return j:status() == "RUNNING" end)
      -- another process follows the log while the job runs
      local code, out = child.cli({ "jobs", "logs", j.id, "-f", "--db", db.dir }, { timeout = 60 })
      assert.equal(0, code)
      for i = 1000, 8000, 1000 do
        assert.matches("%[slot [12]%] udf at row " .. i .. "\n", out)
      end
      assert.matches("%[slot 1%] geneva worker", out)
      assert.matches("%[slot 2%] geneva worker", out)
      assert.matches("ray: submitted geneva%-", out)
      assert.matches("DONE: 8000 rows computed, 0 failed[^\n]*\n$", out)
      -- the same lines through the Job object, once it has ended
      local lines = j:logs()
      assert.equal(out, table.concat(lines, "\n") .. "\n")
    end)
  end)

  it("ship_host: the workers run the geneva shipped in a py_modules package, not this host's", function()
    local tbl = make_table(db, "docs", 1000)
    tbl:add_columns { h = geneva.udf { data_type = "int64", fn = function(id) return id + 1 end } }
    local puts = emu:counter("package_put_ok")
    ray{ ship_host = true }(function() tbl:backfill("h", { batch_size = 500 }) end)
    check_exact(tbl, 1000, "h", function(r) return r.id + 1 end)
    assert.equal(puts + 1, emu:counter("package_put_ok"))
    local runs = 0
    for name, text in pairs(emu:logs()) do
      for exe in text:gmatch("serving job [^\n]*, (/[^\n]*)%)") do
        if exe:find("/runtime_resources/py_modules_files/_ray_pkg_", 1, true) then
          assert.is_truthy(exe:find("/geneva_runtime/bin/geneva$"), exe)
          runs = runs + 1
        end
      end
    end
    assert.equal(2, runs)
    -- shared: a second context uploads nothing
    tbl:add_columns { h2 = geneva.udf { data_type = "int64", fn = function(id) return id + 2 end } }
    ray{ ship_host = true }(function() tbl:backfill("h2", { batch_size = 500 }) end)
    check_exact(tbl, 1000, "h2", function(r) return r.id + 2 end)
    assert.equal(puts + 1, emu:counter("package_put_ok"))
  end)

  describe("a driver process", function()
    local script = [[
      local geneva = require "geneva"
      local db = geneva.connect(arg[1])
      local tbl = db:open_table("docs")
      geneva.ray_cluster{ address = arg[2] }(function()
        io.stdout:write("entered\n"); io.stdout:flush()
        tbl:backfill("s", { batch_size = 200 })
      end)
    ]]
    local function start()
      local tbl = make_table(db, "docs", 8000)
      tbl:add_columns { s = geneva.udf { data_type = "int64", fn = slow } }
      local path = dir .. "/job.lua"
      assert(fs.write(path, script))
      local p = assert(proc.spawn{ argv = { child.bin, path, db.path, emu.url }, stdout = "pipe",
                                   stderr = dir .. "/driver.err", env_add = { XDG_STATE_HOME = dir .. "/state" } })
      assert.equal("entered", p:read_line("stdout", 30))
      wait_until("workers running", function()
        local jobs, pids = emu:live()
        return #jobs == 4 and #pids >= 4 and #(db:jobs()[1].events or {}) > 0
      end, 60)
      return p
    end
    local function leases()
      return #(fs.list(dir .. "/db/_geneva/leases") or {}) + #(fs.list(dir .. "/state/geneva/leases") or {})
    end

    for _, c in ipairs({ { "INT", 130 }, { "TERM", 143 } }) do
      it("SIG" .. c[1] .. " mid-backfill: every Ray submission is stopped and deleted", function()
        local p = start()
        assert.is_true(proc.kill(p:pid(), c[1]))
        local how, code = p:wait(40)
        p:close()
        assert.same({ "exited", c[2] }, { how, code }, child.read(dir .. "/driver.err"))
        assert.same({}, emu:state().jobs)
        assert.equal(0, leases())
        local rec = db:jobs()[1]
        assert.equal("CANCELLED", rec.status)
        assert.equal("interrupted", rec.error.code)
      end)
    end

    it("kill -9 of the driver, then geneva reap: its Ray jobs are stopped and deleted", function()
      local p = start()
      local names = {}
      for _, j in ipairs(emu:state().jobs) do names[#names + 1] = j.submission_id end
      assert.is_true(proc.kill(p:pid(), "KILL"))
      p:wait(10)
      p:close()
      -- left behind: the jobs, and their leases (4 Ray jobs, the backfill job)
      assert.equal(4, #emu:state().jobs)
      local state = { XDG_STATE_HOME = dir .. "/state" }
      local r = assert(proc.run{ argv = { child.bin, "reap", "--json", "--db", db.path }, env_add = state, timeout = 120 })
      assert.equal(0, r.code, r.stderr)
      local out = json.decode(r.stdout)
      assert.equal(5, out.reaped, r.stdout .. r.stderr)
      assert.same({}, out.refused)
      assert.same({}, emu:state().jobs)
      assert.is_true(emu:wait_idle(5))
      assert.equal(0, leases())
    end)
  end)

  it("reap refuses a ray_job lease naming a Ray job without our metadata", function()
    local sid = "geneva-20260101-000000-abcdef01-1-1"
    assert.equal(200, (emu:api("POST", "/api/jobs/", { entrypoint = "sleep 60", submission_id = sid,
                                                       metadata = { geneva_job = "20260101-000000-abcdef01" } })))
    wait_until("the planted job running", function()
      local st, d = emu:api("GET", "/api/jobs/" .. sid)
      return st == 200 and d.status == "RUNNING"
    end, 20)
    -- a dead owner's lease, in both journals, as the ledger writes them
    local me = proc.self()
    local p = assert(proc.spawn{ argv = { "true" } })
    local dead = { hostname = me.hostname, boot_id = me.boot_id, pid = p:pid(), start_time = proc.info(p:pid()).start_time }
    p:wait(5); p:close()
    local lease = { id = "ray_job-1-1", kind = "ray_job", name = sid, state = "active", owner = dead,
                    created_at = os.time(), info = { address = emu.url, submission_id = sid,
                                                     job = "20260101-000000-abcdef01", slot = 1 } }
    for _, d in ipairs({ dir .. "/db/_geneva/leases", dir .. "/state/geneva/leases" }) do
      assert(fs.mkdir_p(d))
      assert(fs.write(d .. "/ray_job-1-1.json", json.encode(lease)))
    end
    local r = assert(proc.run{ argv = { child.bin, "reap", "--json", "--db", db.path },
                               env_add = { XDG_STATE_HOME = dir .. "/state" }, timeout = 60 })
    local out = json.decode(r.stdout)
    assert.equal(0, out.reaped)
    assert.equal(1, #out.refused, r.stdout)
    assert.is_truthy(out.refused[1]:find("does not carry this lease's geneva metadata: not ours", 1, true), out.refused[1])
    local _, d = emu:api("GET", "/api/jobs/" .. sid)
    assert.equal("RUNNING", d.status)                   -- untouched
    assert.is_true(fs.exists(dir .. "/db/_geneva/leases/ray_job-1-1.json"))   -- kept for --list
    emu:api("POST", "/api/jobs/" .. sid .. "/stop")
    wait_until("the planted job stopped", function() return select(2, emu:api("GET", "/api/jobs/" .. sid)).status == "STOPPED" end, 20)
    emu:api("DELETE", "/api/jobs/" .. sid)
  end)
end)

describe("ray runner: connecting", function()
  local root
  setup(function() root = child.tmpdir() end)
  teardown(function() child.rmtree(root) end)

  local function with_emulator(args, fn)
    local e = emulator.start(root .. "/ray-" .. fs.random_hex(6), args)
    local ok, err = pcall(fn, e)
    e:close()
    if not ok then error(err, 0) end
  end

  local function tiny(db, name)
    local tbl = make_table(db, name, 600)
    tbl:add_columns { x = geneva.udf { data_type = "int64", memory = 256 * 1024 * 1024,
                                       fn = function(id) return id * 5 end } }
    return tbl
  end

  it("an older Ray: no authentication_mode route (404), and no entrypoint_memory before 2.8", function()
    for _, v in ipairs({ "2.47.1", "2.7.0" }) do
      with_emulator({ "--old", "--ray-version", v, "--num-cpus", "2", "--stop-wait", "1" }, function(e)
        local dir = child.tmpdir()
        local db = geneva.connect(dir)
        local tbl = tiny(db, "docs")
        local rec
        geneva.ray_cluster{ address = e.url, db = db }(function() rec = tbl:backfill("x", { batch_size = 200 }) end)
        check_exact(tbl, 600, "x", function(r) return r.id * 5 end)
        assert.equal(v, rec.runner.ray_version)
        assert.equal("none", rec.runner.auth)
        local note = has(rec.events, "takes no entrypoint_memory")
        if v == "2.7.0" then assert.is_truthy(note, table.concat(rec.events, "\n")) else assert.is_nil(note) end
        assert.same({}, e:state().jobs)
        child.rmtree(dir)
      end)
    end
  end)

  it("a Ray older than 2.0, a dashboard that does not answer, a server that is not a dashboard: unavailable", function()
    local dir = child.tmpdir()
    local db = geneva.connect(dir)
    with_emulator({ "--old", "--ray-version", "1.13.0" }, function(e)
      local err = expect.raises("unavailable", geneva.ray_cluster{ address = e.url, db = db }, function() end)
      assert.is_truthy(tostring(err):find("runs Ray 1.13.0: geneva needs Ray 2.0 or later", 1, true), tostring(err))
    end)
    local err = expect.raises("unavailable", geneva.ray_cluster{ address = "http://127.0.0.1:9", db = db }, function() end)
    assert.is_truthy(tostring(err):find("cannot reach the Ray dashboard at http://127.0.0.1:9", 1, true), tostring(err))
    local h = assert(io.popen(("exec python3 %s/tests/support/httpd.py > %s/port"):format(SRC, dir), "w"))
    local port = wait_until("httpd", function() return (child.read(dir .. "/port") or ""):match("^(%d+)\n") end, 20)
    err = expect.raises("unavailable", geneva.ray_cluster{ address = "http://127.0.0.1:" .. port, db = db }, function() end)
    h:close()
    assert.is_truthy(tostring(err):find("has no Ray Jobs API (GET /api/version answered 404)", 1, true), tostring(err))
    assert.same({}, fs.list(dir .. "/_geneva/leases") or {})
    child.rmtree(dir)
  end)

  describe("with token auth", function()
    local TOKEN = "tok-" .. fs.random_hex(24)
    local e, dir
    setup(function() e = emulator.start(root .. "/ray-auth", { "--auth-token", TOKEN, "--num-cpus", "2", "--stop-wait", "1" }) end)
    teardown(function() e:close() end)
    before_each(function() dir = child.tmpdir() end)
    after_each(function() child.rmtree(dir) end)

    -- runs a backfill in a child geneva with env; -> exit code, stdout, stderr
    local function run(cluster, env)
      local code = ([[
        local geneva = require "geneva"
        local db = geneva.connect(%q)
        local rows = {}
        for i = 1, 600 do rows[i] = { id = i } end
        local tbl = db:create_table("docs", rows)
        tbl:add_columns { x = geneva.udf { data_type = "int64", fn = function(id) return id * 5 end } }
        local c = %s
        c.address = %q
        local rec
        geneva.ray_cluster(c)(function() rec = tbl:backfill("x", { batch_size = 200 }) end)
        print(rec.id, rec.status, tbl:count_rows("x = id * 5"))
      ]]):format(dir .. "/db", cluster, e.url)
      child.rmtree(dir .. "/db")
      local full = { XDG_STATE_HOME = dir .. "/state" }
      for k, v in pairs(env or {}) do full[k] = v end
      return child.run(code, full)
    end

    -- the token is nowhere: output, records, leases, `geneva jobs show --json`
    local function assert_no_token(...)
      for _, text in ipairs({ ... }) do assert.is_nil(text:find(TOKEN, 1, true), "the token leaked: " .. text) end
      for _, f in ipairs(fs.walk(dir) or {}) do
        if f == "tok" then goto next end       -- the token's own file
        local text = fs.read(dir .. "/" .. f) or ""
        assert.is_nil(text:find(TOKEN, 1, true), "the token leaked into " .. f)
        ::next::
      end
    end

    it("the right token from token_env, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH: works, and is never shown", function()
      assert(fs.write(dir .. "/tok", TOKEN .. "\n"))
      for _, case in ipairs({
        { '{ token_env = "SPEC_RAY_TOKEN" }', { SPEC_RAY_TOKEN = TOKEN } },
        { '{ token_file = ' .. ("%q"):format(dir .. "/tok") .. ' }', {} },
        { '{}', { RAY_AUTH_TOKEN = TOKEN } },
        { '{}', { RAY_AUTH_TOKEN_PATH = dir .. "/tok" } },
      }) do
        local code, out, err = run(case[1], case[2])
        assert.equal(0, code, err)
        local id, status, n = out:match("^(%S+)\t(%S+)\t(%d+)")
        assert.equal("DONE", status, out .. err)
        assert.equal("600", n)
        local show = assert(proc.run{ argv = { child.bin, "jobs", "show", id, "--json", "--db", dir .. "/db" }, timeout = 30 })
        assert.equal(0, show.code, show.stderr)
        assert.equal("ray", json.decode(show.stdout).runner.type)
        assert_no_token(out, err, show.stdout, show.stderr)
        child.rmtree(dir .. "/db")
      end
      assert.same({}, e:state().jobs)
      -- nor in what the workers logged on the cluster (they never get it)
      for name, text in pairs(e:logs()) do assert.is_nil(text:find(TOKEN, 1, true), "the token is in " .. name) end
    end)

    it("a wrong token (403) and a missing one (refused before sending): clear errors without the token", function()
      local code, out, err = run('{ token_env = "SPEC_RAY_TOKEN" }', { SPEC_RAY_TOKEN = "wrong-" .. TOKEN })
      assert.equal(1, code)
      assert.is_truthy(err:find("invalid_argument: the Ray dashboard at " .. e.url .. " refused GET /api/version: it rejected the token from token_env SPEC_RAY_TOKEN (403 Forbidden: Invalid authentication token)", 1, true), err)
      assert_no_token(out, err)
      code, out, err = run("{}", { HOME = dir })
      assert.equal(1, code)
      assert.is_truthy(err:find("wants a token (authentication mode token)", 1, true), err)
      -- a token the cluster's own lookup cannot find: the cluster's reference is named
      code, out, err = run('{ token_env = "SPEC_RAY_NO_SUCH" }', {})
      assert.equal(1, code)
      assert.is_truthy(err:find("environment variable SPEC_RAY_NO_SUCH is not set", 1, true), err)
      assert.same({}, e:state().jobs)
    end)
  end)

  it("a 401 that comes back (auth turned on after connecting): a clear error naming what to set", function()
    with_emulator({ "--num-cpus", "2", "--stop-wait", "1" }, function(e)
      local dir = child.tmpdir()
      local db = geneva.connect(dir)
      local tbl = tiny(db, "docs")
      -- upstream's answer to a request without the header (authentication_token.h)
      e:faults { { route = "submit", action = "status", status = 401, count = 10,
                   body = "Unauthorized: Missing authentication token" } }
      local ok, err = pcall(function()
        geneva.ray_cluster{ address = e.url, db = db }(function() tbl:backfill("x") end)
      end)
      assert.is_false(ok)
      err = errors.from(err)
      assert.equal("invalid_argument", err.code, err.message)
      assert.matches("refused POST /api/jobs/: it wants a token and none was sent (set token_env or token_file on the cluster, or RAY_AUTH_TOKEN) (401 Unauthorized: Missing authentication token)",
        err.message, 1, true)
      assert.same({}, e:state().jobs)
      child.rmtree(dir)
    end)
  end)

  it("Ctrl-C while the submissions are PENDING, on a Ray that loses such stops (ray#58353): stopped once running", function()
    with_emulator({ "--num-cpus", "2", "--stop-wait", "1", "--setup-delay", "5", "--lose-pending-stops" }, function(e)
      local dir = child.tmpdir()
      local db = geneva.connect(dir .. "/db")
      local tbl = make_table(db, "docs", 4000)
      tbl:add_columns { s = geneva.udf { data_type = "int64", fn = slow } }
      local path = dir .. "/job.lua"
      assert(fs.write(path, [[
        local geneva = require "geneva"
        local tbl = geneva.connect(arg[1]):open_table("docs")
        geneva.ray_cluster{ address = arg[2] }(function() tbl:backfill("s", { batch_size = 200 }) end)
      ]]))
      local p = assert(proc.spawn{ argv = { child.bin, path, db.path, e.url }, stderr = dir .. "/driver.err",
                                   env_add = { XDG_STATE_HOME = dir .. "/state" } })
      local sids = wait_until("submissions, all PENDING", function()
        local jobs = e:state().jobs
        if #jobs == 0 then return nil end
        for _, j in ipairs(jobs) do if j.status ~= "PENDING" then return nil end end
        return #jobs
      end, 30)
      assert.is_true(proc.kill(p:pid(), "INT"))
      local how, code = p:wait(60)
      p:close()
      assert.same({ "exited", 130 }, { how, code }, child.read(dir .. "/driver.err"))
      -- the first stops were lost; the teardown stopped each again once it ran
      assert.is_true(e:counter("stop") > sids, ("%d stops for %d submissions"):format(e:counter("stop"), sids))
      assert.same({}, e:state().jobs)
      assert.is_true(e:wait_idle(5))
      assert.equal("CANCELLED", db:jobs()[1].status)
      child.rmtree(dir)
    end)
  end)

  it("two nodes: the workers land on both", function()
    with_emulator({ "--nodes", "2", "--num-cpus", "2", "--stop-wait", "1" }, function(e)
      local dir = child.tmpdir()
      local db = geneva.connect(dir)
      local tbl = make_table(db, "docs", 4000)
      tbl:add_columns { s = geneva.udf { data_type = "int64", fn = slow } }
      local rec
      geneva.ray_cluster{ address = e.url, db = db }(function() rec = tbl:backfill("s", { batch_size = 250 }) end)
      check_exact(tbl, 4000, "s", function(r) return r.id * 13 end)
      -- each submission's node (the driver's events), then the tasks each
      -- submission's worker ran (its lines in the job's log)
      local node_of = {}
      for _, line in ipairs(rec.events) do
        local sid, n = line:match("(%S+) RUNNING on node (%x+)")
        if sid then node_of[sid] = n end
      end
      local tasks_on, total = {}, 0
      for _, line in ipairs(db:job(rec.id):logs()) do
        local sid = line:match("geneva worker (%S+): task %S+: %d+ rows in")
        if sid then
          local n = assert(node_of[sid], "a task from an unknown submission: " .. line)
          tasks_on[n] = (tasks_on[n] or 0) + 1
          total = total + 1
        end
      end
      assert.equal(16, total)
      local k = 0
      for _ in pairs(tasks_on) do k = k + 1 end
      assert.equal(2, k, "tasks ran on one node only: " .. table.concat(rec.events, "\n"))
      assert.same({}, e:state().jobs)
      child.rmtree(dir)
    end)
  end)
end)
