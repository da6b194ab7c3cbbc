-- geneva.backfill.driver: runs one backfill job to its end on a runner
-- (docs/internals.md, "Backfill").
--
-- start: plan (geneva.backfill.planner); step: hand tasks to the runner, at
-- most `concurrency` in flight, take its events, commit every `commit_every`
-- finished tasks; the end: commit what is left and write the final record.
-- The driver is a step function: tbl:backfill steps it until the end in the
-- caller's process; a background job steps it in a driver process of its
-- own (geneva.backfill.start_async).
local errors = require "geneva.errors"
local job = require "geneva.backfill.job"
local planner = require "geneva.backfill.planner"
local time = require "geneva.time"
local ledger = require "geneva.ledger"
local bars = require "geneva.progress"

local column_of = require("geneva.store.reader").find_column

local driver = {}

local MAX_EVENTS = 200
local CANCEL_POLL = 0.25       -- seconds between looks for a cancel marker
local SAVE_EVERY = 0.5         -- seconds between progress writes of the record (others read it)

local Driver = {}
Driver.__index = Driver

local function save(self, force)
  local now = time.monotonic()
  if force or now - (self.saved_at or 0) >= SAVE_EVERY then
    job.save(self.db_dir, self.rec)
    self.saved_at = now
  end
end

-- An event: in the record (the last MAX_EVENTS) and in the job's log (all)
local function event(self, line)
  local ev = self.rec.events
  if #ev >= MAX_EVENTS then table.remove(ev, 2) end
  ev[#ev + 1] = line
  self.log:write(line)
end

-- The bar on stderr (a terminal, unless GENEVA_PROGRESS=0 / --no-progress):
--   embedding [########......]  45%  450000/1000000 rows  120k rows/s  ETA 4s
-- Rows done count those still inside running tasks (the workers' progress
-- reports), so the bar moves within a 50,000-row task. The rate is over
-- the job so far.
local function progress(self, final)
  if not self.bar then return end
  local now = time.monotonic()
  if not final and now - (self.drawn_at or 0) < bars.EVERY then return end
  self.drawn_at = now
  local r = self.rec.rows
  local done = r.computed + r.failed
  for _, n in pairs(self.partial) do done = done + n end
  done = math.min(done, r.planned)
  local rate = done / math.max(now - self.t0, 1e-6)
  local eta = final and "" or rate > 0 and ("  ETA " .. bars.duration((r.planned - done) / rate)) or ""
  bars.draw(self.rec.column, r.planned > 0 and done / r.planned or 1,
    ("%d/%d rows  %s rows/s%s"):format(done, r.planned, bars.rate(rate), eta))
end

local function finish(self, status, err)
  local rec = self.rec
  if job.FINAL[rec.status] then return end
  -- the workers' last lines come first in the log
  if self.runner.drain then
    local dok, evs = pcall(self.runner.drain, self.runner, rec.id)
    for _, ev in ipairs(dok and evs or {}) do
      if ev.kind == "log" then self.log:write(ev.line) end
    end
  end
  rec.status = status
  rec.finished_at = time.iso8601()
  rec.seconds = time.monotonic() - self.t0
  if err then
    local e = errors.from(err)
    rec.error = errors.plain(e)
    event(self, ("%s: %s"):format(status, tostring(e)))
  else
    local r = rec.rows
    event(self, ("%s: %d rows computed, %d failed, %d commits in %.2fs"):format(status,
      r.computed, r.failed, rec.commits, rec.seconds))
  end
  local ok, v = pcall(self.tbl.version, self.tbl)
  rec.version_end = ok and v or nil
  if self.bar then
    progress(self, true)
    io.stderr:write("\n")
  end
  job.live[rec.id] = nil
  -- the log is whole (and uploaded, on s3) before the record reads final:
  -- a follower stops at a final record, and takes its events if no log
  self.log:close()
  job.save_final(self.db_dir, rec)
  self.saved_at = time.monotonic()
  job.clear_cancel(self.db_dir, rec.id)
  if self.runner.job_done then pcall(self.runner.job_done, self.runner, rec.id) end
  if self.lease then self.lease:forget() end
end

-- This job's events. A runner serves one driver at a time in a process
-- (background jobs have processes of their own); events of another job are
-- leftovers of one that was cancelled, and are dropped.
local function poll_events(self, timeout)
  local out = {}
  for _, ev in ipairs(self.runner:poll(timeout)) do
    local owner = ev.task and ev.task.job or ev.job
    if owner == nil or owner == self.rec.id then out[#out + 1] = ev end
  end
  return out
end

-- Lists a task's failed rowids in rec.rows.failed_rowids (there once a row
-- failed; keys: fragment ids as strings, JSON object keys), at most
-- job.MAX_FAILED_ROWIDS in all; rows.failed_rowids_truncated says some are
-- not listed. n: how many failed (the worker lists at most as many too).
local function list_failed(self, fragment, rowids, n)
  local rows = self.rec.rows
  local room = job.MAX_FAILED_ROWIDS - (self.failed_listed or 0)
  if n > #rowids or #rowids > room then rows.failed_rowids_truncated = true end
  if room <= 0 then return end
  local key = tostring(fragment)
  rows.failed_rowids = rows.failed_rowids or {}
  local list = rows.failed_rowids[key] or {}
  rows.failed_rowids[key] = list
  for i = 1, math.min(#rowids, room) do list[#list + 1] = rowids[i] end
  table.sort(list)             -- tasks end in any order
  self.failed_listed = (self.failed_listed or 0) + math.min(#rowids, room)
end

local function commit_pending(self)
  if #self.pending == 0 then return end
  local files = self.pending
  self.pending = {}
  local rows = 0
  for _, f in ipairs(files) do rows = rows + f.rows end
  self.tbl:_commit_column_files(self.rec.column, self.udf_version, files)
  self.rec.rows.committed = self.rec.rows.committed + rows
  self.rec.commits = self.rec.commits + 1
end

local function start(self)
  local rec = self.rec
  rec.status = "RUNNING"
  rec.started_at = time.iso8601()
  local snapshot = self.tbl:_snapshot()
  local col = column_of(snapshot, rec.column)
  self.udf_version = col.udf_version
  rec.udf_version = col.udf_version
  local seen = #rec.events
  planner.recover_staged(self.tbl, rec.column, col.udf_version, rec.options.resume, rec)
  for i = seen + 1, #rec.events do self.log:write(rec.events[i]) end
  snapshot = self.tbl:_snapshot()
  rec.version_start = snapshot.version
  local tasks, planned = planner.plan_tasks(self.tbl, snapshot, rec.column, col.udf_version,
                                            rec.options.where, rec.options.batch_size)
  rec.rows.planned = planned
  rec.tasks.planned = #tasks
  local spec = col.udf
  spec.version = col.udf_version
  for i, t in ipairs(tasks) do
    t.id, t.job = ("%s/%d"):format(rec.id, i), rec.id
    t.table_dir, t.version, t.column = self.tbl.dir, snapshot.version, rec.column
    t.store = self.tbl.db.store        -- an object store the worker mounts (nil: a directory)
    t.udf, t.where = spec, rec.options.where
  end
  self.tasks, self.next_task, self.in_flight = tasks, 1, 0
  event(self, ("planned %d rows in %d tasks at version %d"):format(planned, #tasks, snapshot.version))
  self.commit_every = rec.options.commit_every or math.max(1, math.ceil(#tasks / 10))
  save(self, true)
end

local function submit_more(self)
  local limit = self.rec.options.concurrency or math.huge
  while self.next_task <= #self.tasks and self.in_flight < limit do
    self.runner:submit(self.tasks[self.next_task])
    self.next_task = self.next_task + 1
    self.in_flight = self.in_flight + 1
  end
end

local function on_event(self, ev)
  local rec = self.rec
  if ev.kind == "log" then
    event(self, ev.line)
  elseif ev.kind == "progress" then
    self.partial[ev.task.id] = ev.rows
  elseif ev.kind == "done" then
    self.in_flight = self.in_flight - 1
    self.partial[ev.task.id] = nil
    local r = ev.result
    rec.rows.computed = rec.rows.computed + r.computed
    rec.rows.failed = rec.rows.failed + r.failed
    if r.failed > 0 then list_failed(self, ev.task.fragment, r.failed_rowids or {}, r.failed) end
    rec.tasks.done = rec.tasks.done + 1
    for _, e in ipairs(r.errors or {}) do event(self, "row error: " .. tostring(errors.from(e))) end
    if r.staged then
      self.pending[#self.pending + 1] = { fragment = ev.task.fragment, lo = ev.task.lo,
        hi = ev.task.hi, path = r.staged, rows = r.computed + r.failed }
    end
    if #self.pending >= self.commit_every then commit_pending(self) end
  elseif ev.kind == "failed" then
    self.in_flight = self.in_flight - 1
    self.partial[ev.task.id] = nil
    self.runner:cancel(rec.id)
    commit_pending(self)
    local e = errors.from(ev.error)
    if e.rowid ~= nil and e.fragment == nil then   -- rowids count within a fragment
      e.fragment = ev.task.fragment
      e.message = ("%s (fragment %d)"):format(e.message, ev.task.fragment)
    end
    finish(self, "FAILED", e)
    return true
  end
end

local function step(self, timeout)
  local rec = self.rec
  -- another process's cancel marker (geneva jobs cancel, job:cancel of a
  -- background job)
  local marker = false
  if not self.cancel_requested and time.monotonic() - (self.cancel_checked or 0) >= CANCEL_POLL then
    self.cancel_checked = time.monotonic()
    marker = job.cancel_requested(self.db_dir, rec.id)
  end
  if self.cancel_requested or marker then
    if rec.status ~= "PENDING" then
      self.runner:cancel(rec.id)
      commit_pending(self)
    end
    finish(self, "CANCELLED", errors.new("cancelled", "job " .. rec.id .. " was cancelled"))
    return
  end
  if rec.status == "PENDING" then start(self) end
  submit_more(self)
  if self.in_flight == 0 then
    commit_pending(self)
    finish(self, "DONE")
    return
  end
  -- a cancel marker must be seen within CANCEL_POLL even while idle
  for _, ev in ipairs(poll_events(self, math.min(timeout or 0, CANCEL_POLL))) do
    if on_event(self, ev) then return end
  end
  progress(self)
  save(self)
end

-- driver:step(timeout): one round of dispatch, wait, results and commits.
-- Raises only on interrupts; job failures end up in the record.
function Driver:step(timeout)
  if job.FINAL[self.rec.status] then return end
  local ok, err = pcall(step, self, timeout)
  if not ok then
    local e = errors.from(err)
    if e.code == "interrupted" then
      pcall(finish, self, "CANCELLED", errors.new("interrupted", job.INTERRUPTED.message))
      error(err, 0)
    end
    pcall(self.runner.cancel, self.runner, self.rec.id)
    pcall(finish, self, "FAILED", e)
  end
end

-- driver:run() -> record: steps until the job has ended
function Driver:run()
  while not job.FINAL[self.rec.status] do self:step(0.2) end
  return self.rec
end

function Driver:cancel()
  self.cancel_requested = true
  self:step(0)
end

-- driver.new(tbl, rec, runner [, {bar = bool}]) -> Driver for the PENDING
-- record rec (saved by the caller). It holds a lease in the current scope:
-- if the process is torn down mid-job (Ctrl-C, SIGTERM, a REPL statement
-- interrupted), the record says CANCELLED (interrupted) and the job's tasks
-- stop with it.
function driver.new(tbl, rec, runner, opts)
  opts = opts or {}
  local self = setmetatable({ tbl = tbl, db_dir = tbl.db.dir, rec = rec, pending = {},
    runner = runner, t0 = time.monotonic(), bar = opts.bar, partial = {} }, Driver)
  self.log = job.open_log(self.db_dir, rec.id)
  for _, line in ipairs(rec.events) do self.log:write(line) end
  self.lease = ledger.current():reserve("job", rec.id):bind(function()
    if not job.FINAL[rec.status] then
      pcall(runner.cancel, runner, rec.id)
      rec.status, rec.finished_at = "CANCELLED", time.iso8601()
      rec.error = { code = job.INTERRUPTED.code, message = job.INTERRUPTED.message }
      self.log:write("CANCELLED: interrupted: " .. job.INTERRUPTED.message)
      self.log:close()
      -- if even that cannot be written, the record reads abandoned once
      -- this process is gone; keeping the lease would not help reap
      pcall(job.save_final, self.db_dir, rec)
    end
  end)
  job.live[rec.id] = self
  return self
end

return driver
