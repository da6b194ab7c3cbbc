-- The task queue in the database (geneva.backfill.queue): real
-- `geneva worker --queue` processes on a local db, driven by the real
-- backfill driver through a minimal runner over a Dispatcher (no Ray).
-- Workers killed -9 mid-task, workers racing for claims, and queue files
-- that lie.
local geneva = require "geneva"
local queue = require "geneva.backfill.queue"
local runner = require "geneva.runner"
local json = require "geneva.json"
local proc = require "geneva.proc"
local time = require "geneva.time"
local fs = require "geneva.fs"
local child = require "child"
local wait_until = require("expect").wait_until

-- ~0.3 ms a row, so tasks last long enough to be hit
local slow = function(id)
  local t = os.clock() + 0.0003
  while os.clock() < t do end
  return id * 7
end

local function make_table(db, n, fragment_size)
  local rows = {}
  for i = 1, n do rows[i] = { id = i, text = ("r%d"):format(i) } end
  return db:create_table("docs", rows, { fragment_size = fragment_size or 2000 })
end

-- column col holds f(id) for ids 1..n, each row once
local function check_exact(tbl, n, col, f)
  local rows = tbl:to_rows { columns = { "id", col } }
  assert.equal(n, #rows)
  local seen, bad = {}, 0
  for _, r in ipairs(rows) do
    assert.is_nil(seen[r.id], "duplicate row " .. tostring(r.id))
    seen[r.id] = true
    if r[col] ~= f(r.id) then bad = bad + 1 end
  end
  assert.equal(0, bad, ("%d wrong values in %s"):format(bad, col))
end

-- A runner over the queue whose workers are local `geneva worker --queue`
-- processes (what the Ray runner submits as Ray jobs). watch = true: a
-- worker that exits has its claims requeued at once (as the Ray runner
-- does for a FAILED submission); else only its stale heartbeat tells.
local function queue_runner(dir, db_dir, n, opts)
  opts = opts or {}
  local r = { jobs = {}, workers = {}, logs = {}, progress = {} }
  local function spawn(job_id, i)
    local id = ("w%d"):format(i)
    local log = ("%s/%s-%s.log"):format(dir, job_id, id)
    r.logs[#r.logs + 1] = log
    local p = assert(proc.spawn{ argv = { child.bin, "worker", "--queue", db_dir, job_id, "--slot", tostring(i),
                                          "--id", id },
                                 stdin = "null", stdout = log, stderr = "stdout" })
    r.workers[#r.workers + 1] = { p = p, id = id, job = job_id }
  end
  function r:submit(task)
    local d = self.jobs[task.job]
    if not d then
      d = queue.dispatcher(db_dir, task.job, { stale = opts.stale, max_attempts = opts.max_attempts })
      self.jobs[task.job] = d
      for i = 1, n do spawn(task.job, i) end
    end
    d:publish(task)
  end
  function r:poll(timeout)
    local ev = {}
    local deadline = time.monotonic() + (timeout or 0)
    repeat
      for _, d in pairs(self.jobs) do d:poll(ev) end
      if opts.watch then
        for _, w in ipairs(self.workers) do
          if not w.gone and w.p:wait(0) then
            w.gone = true
            self.jobs[w.job]:requeue_worker(w.id, "exited", ev)
          end
        end
      end
      for _, e in ipairs(ev) do
        if e.kind == "progress" then self.progress[#self.progress + 1] = { task = e.task.id, rows = e.rows } end
      end
      if #ev > 0 then return ev end
      time.sleep(0.01)
    until time.monotonic() >= deadline
    return ev
  end
  function r:cancel(job_id) if self.jobs[job_id] then self.jobs[job_id]:cancel() end end
  function r:describe() return { type = "queue-spec", workers = n } end
  function r:handoff() error("not for background jobs") end
  -- waits for the workers to exit by themselves (they must), then their codes
  function r:finish(timeout)
    local codes = {}
    for i, w in ipairs(self.workers) do
      local how, code = w.p:wait(timeout or 20)
      codes[i] = { w.id, how, code }
      w.p:close()
    end
    return codes
  end
  function r:close() for _, w in ipairs(self.workers) do w.p:close() end end
  return r
end

-- The tasks each worker's log says it ran: {task id -> count}
local function tasks_run(r)
  local seen = {}
  for _, log in ipairs(r.logs) do
    for id in (child.read(log) or ""):gmatch("task (%S+): %d+ rows in") do seen[id] = (seen[id] or 0) + 1 end
  end
  return seen
end

local function run_with(r, fn)
  local frame = runner.push(r)
  local ok, res = pcall(fn)
  runner.pop(frame)
  if not ok then r:close() error(res, 0) end
  return res
end

describe("geneva.backfill.queue", function()
  local dir, db
  before_each(function()
    dir = child.tmpdir()
    db = geneva.connect(dir .. "/db")
  end)
  after_each(function() child.rmtree(dir) end)

  it("runs a backfill through long-lived workers: exact values, each task once, workers exit 0", function()
    local N = 5000
    local tbl = make_table(db, N)
    tbl:add_columns { x = geneva.udf { data_type = "int64", fn = function(id) return id * 3 + 1 end } }
    local r = queue_runner(dir, db.path, 3)
    local rec = run_with(r, function() return tbl:backfill("x", { batch_size = 250 }) end)
    assert.equal("DONE", rec.status)
    assert.equal(N, rec.rows.computed)
    assert.equal(20, rec.tasks.done)
    check_exact(tbl, N, "x", function(id) return id * 3 + 1 end)
    for _, c in ipairs(r:finish()) do assert.same({ "exited", 0 }, { c[2], c[3] }, c[1]) end
    local seen = tasks_run(r)
    local n = 0
    for id, count in pairs(seen) do
      n = n + 1
      assert.equal(1, count, "task " .. id .. " ran " .. count .. " times")
    end
    assert.equal(20, n)
    -- the queue holds nothing open: no task, claim or result is left
    local qdir = queue.dir(db.path, rec.id)
    for _, sub in ipairs({ "tasks", "claims", "results" }) do
      assert.same({}, fs.list(qdir .. "/" .. sub), sub)
    end
  end)

  it("workers report rows done within a task, which the driver passes on as progress", function()
    local N = 6000
    local tbl = make_table(db, N, N)
    tbl:add_columns { x = geneva.udf { data_type = "int64", fn = slow } }
    local r = queue_runner(dir, db.path, 1)
    local rec = run_with(r, function() return tbl:backfill("x", { batch_size = N }) end)   -- one task
    assert.equal("DONE", rec.status)
    r:finish()
    local within, last = 0, 0
    for _, p in ipairs(r.progress) do
      assert.equal(rec.id .. "/1", p.task)
      assert.is_true(p.rows > last and p.rows <= N, "rows went back or past the task")
      if p.rows < N then within = within + 1 end
      last = p.rows
    end
    assert.is_true(within > 0, "no progress inside the task")
    -- the report is gone with the task
    for _, name in ipairs(fs.list(queue.dir(db.path, rec.id) .. "/workers") or {}) do
      assert.is_nil(name:match("%.progress$"), name)
    end
  end)

  it("a progress report that lies (another task, rows past the window, garbage) moves nothing", function()
    local d = queue.dispatcher(db.path, "j1")
    d:publish({ id = "j1/1", job = "j1", lo = 1, hi = 100 })
    fs.write(queue.dir(db.path, "j1") .. "/claims/1.1.json", json.encode({ worker = "w1" }))
    local function report(text)
      fs.write(queue.dir(db.path, "j1") .. "/workers/w1.progress", text)
      time.sleep(0.3)          -- the dispatcher looks at most every 0.25 s
      local out = {}
      for _, e in ipairs(d:poll()) do if e.kind == "progress" then out[#out + 1] = e.rows end end
      return out
    end
    assert.same({}, report("2.1.json 50"))        -- another task
    assert.same({}, report("1.1.json 101"))       -- past the window
    assert.same({}, report("1.1.json -5"))
    assert.same({}, report("1.1.json 5 extra"))
    assert.same({}, report(("1.1.json %s"):format(("9"):rep(40))))
    assert.same({ 40 }, report("1.1.json 40"))
    assert.same({}, report("1.1.json 40"))        -- no change, no event
    d:cancel()
    d:remove()
  end)

  it("two workers racing for many small tasks: each task is run exactly once", function()
    local N = 3000
    local tbl = make_table(db, N, 3000)
    tbl:add_columns { y = geneva.udf { data_type = "int64", fn = function(id) return -id end } }
    local r = queue_runner(dir, db.path, 2)
    -- every task is published before the workers start: they race from the first claim
    local rec = run_with(r, function() return tbl:backfill("y", { batch_size = 20 }) end)
    assert.equal("DONE", rec.status)
    assert.equal(150, rec.tasks.done)
    check_exact(tbl, N, "y", function(id) return -id end)
    r:finish()
    local seen, n, per = tasks_run(r), 0, {}
    for id, count in pairs(seen) do
      n = n + 1
      assert.equal(1, count, "task " .. id .. " ran " .. count .. " times")
    end
    assert.equal(150, n)
    for _, log in ipairs(r.logs) do
      local k = select(2, (child.read(log) or ""):gsub("rows in", ""))
      per[#per + 1] = k
    end
    -- both took part (the race really happened)
    assert.is_true(per[1] > 0 and per[2] > 0, ("tasks per worker: %d, %d"):format(per[1], per[2]))
  end)

  for _, watch in ipairs({ false, true }) do
    local how = watch and "its exit is seen" or "its heartbeat goes stale"
    it("a worker killed -9 mid-task has its task re-run by another (" .. how .. "): exact", function()
      local N = 6000
      local tbl = make_table(db, N)
      tbl:add_columns { s = geneva.udf { data_type = "int64", fn = slow } }
      local victim
      local r = queue_runner(dir, db.path, 2, { stale = 1.5, watch = watch })
      -- once two tasks are done, kill -9 the worker w1 while it holds a claim
      local poll, done = r.poll, 0
      r.poll = function(self, timeout)
        local ev = poll(self, timeout)
        for _, e in ipairs(ev) do if e.kind == "done" then done = done + 1 end end
        if not victim and done >= 2 then
          for _, d in pairs(self.jobs) do
            if d:claims().w1 then
              victim = self.workers[1]
              assert.equal("w1", victim.id)
              assert.is_true(proc.kill(victim.p:pid(), "KILL"))
            end
          end
        end
        return ev
      end
      local rec = run_with(r, function() return tbl:backfill("s", { batch_size = 300, commit_every = 2 }) end)
      assert.is_truthy(victim, "no worker was killed mid-task")
      assert.equal("DONE", rec.status)
      assert.equal(N, rec.rows.committed)
      check_exact(tbl, N, "s", slow)
      local retried
      for _, line in ipairs(rec.events) do
        if line:find("retrying task", 1, true) and line:find("w1", 1, true) then retried = line end
      end
      assert.is_truthy(retried, "no retry event: " .. table.concat(rec.events, "\n"))
      assert.is_truthy(retried:find(watch and "exited" or "no heartbeat", 1, true), retried)
      local codes = r:finish()
      assert.same({ "w1", "signaled", 9 }, codes[1])
      assert.same({ "w2", "exited", 0 }, codes[2])
    end)
  end

  it("a lying task file is refused by the worker; a lying result file is ignored by the driver", function()
    local tbl = make_table(db, 400, 400)
    tbl:add_columns { z = geneva.udf { data_type = "int64", fn = function(id) return id + 5 end } }
    -- a job record as backfill makes it, and its first task
    local job = require "geneva.backfill.job"
    local rec = { id = job.new_id(), kind = "backfill", status = "RUNNING", table = "docs", column = "z",
                  db = db.path, owner = require("geneva.ledger").owner(), options = {},
                  rows = { planned = 0, computed = 0, committed = 0, failed = 0 }, tasks = {}, events = {} }
    job.save(db.path, rec)
    local snap = tbl:_snapshot()
    local col = require("geneva.store.reader").find_column(snap, "z")
    local spec = col.udf
    spec.version = col.udf_version
    local function task(i, lo, hi)
      return { id = rec.id .. "/" .. i, job = rec.id, table_dir = tbl.dir, version = snap.version,
               fragment = 1, lo = lo, hi = hi, column = "z", udf = spec }
    end
    local d = queue.dispatcher(db.path, rec.id, { stale = 30 })
    d:publish(task(1, 1, 200))
    d:publish(task(2, 201, 400))
    -- task 2's file now claims another UDF (code the table does not hold)
    local path = d.dir .. "/tasks/2.1.json"
    local doc = json.decode(assert(fs.read(path)))
    doc.task.udf.version = ("0"):rep(64)
    assert(fs.write(path, json.encode(doc)))
    -- and a forged result for task 1 names a file outside its window's path
    assert(fs.write(d.dir .. "/results/1.1.json", json.encode{ op = "done", task = rec.id .. "/1",
      computed = 200, failed = 0, staged = "/etc/passwd" }))
    local events = d:poll()
    assert.equal(2, #events, json.encode(events))
    assert.equal("log", events[1].kind)
    assert.is_truthy(events[1].line:find("bad result file", 1, true), events[1].line)
    assert.is_truthy(events[2].line:find("retrying task " .. rec.id .. "/1 (attempt 2)", 1, true), events[2].line)
    assert.is_false(fs.exists(d.dir .. "/results/1.1.json"))
    -- one worker serves both
    local log = dir .. "/w.log"
    local p = assert(proc.spawn{ argv = { child.bin, "worker", "--queue", db.path, rec.id, "--id", "w9" },
                                 stdin = "null", stdout = log, stderr = "stdout" })
    local got = {}
    wait_until("both results", function()
      for _, e in ipairs(d:poll()) do got[#got + 1] = e end
      return #got >= 2
    end, 30)
    local by = {}
    for _, e in ipairs(got) do by[e.task.id] = e end
    assert.equal("done", by[rec.id .. "/1"].kind)
    assert.equal(200, by[rec.id .. "/1"].result.computed)
    local f = by[rec.id .. "/2"]
    assert.equal("failed", f.kind)
    assert.equal("internal", f.error.code)
    assert.is_truthy(f.error.message:find("its UDF is not the column's", 1, true), f.error.message)
    -- the worker computed nothing for task 2
    assert.is_false(fs.exists(require("geneva.backfill.worker").staged_path(tbl.dir, "z", spec.version, 1, 201, 400)))
    d:stop()
    assert.same({ "exited", 0 }, { p:wait(10) })
    p:close()
  end)

  it("a worker whose database is not there says so, and exits 1", function()
    local r = assert(proc.run{ argv = { child.bin, "worker", "--queue", dir .. "/nowhere", "20260101-000000-abcd0123" },
                               timeout = 30 })
    assert.equal(1, r.code)
    assert.is_truthy(r.stderr:find("is not reachable from this node", 1, true), r.stderr)
    assert.is_truthy(r.stderr:find("shared at the same path", 1, true), r.stderr)
    r = assert(proc.run{ argv = { child.bin, "worker", "--queue", db.path }, timeout = 30 })
    assert.equal(2, r.code)
  end)
end)
