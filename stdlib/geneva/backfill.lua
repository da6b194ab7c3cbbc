-- geneva.backfill: the driver of a backfill job (docs/internals.md).
--
-- plan: pin the latest version, fold checkpoints (staged outputs of this UDF
-- version left by an earlier run) into a commit, then cut the rows that are
-- missing or stale and match `where` into tasks over fixed rowid windows.
-- run: hand tasks to a runner (the local pool, later Ray), at most
-- `concurrency` in flight. commit: every `commit_every` finished tasks and at
-- the end, the staged files become column files in a new table version.
-- The driver is a step function, so backfill_async needs no threads: Job
-- methods step it, and backfill() is start + wait.
local errors = require "geneva.errors"
local fs = require "geneva.fs"
local job = require "geneva.job"
local time = require "geneva.time"
local ledger = require "geneva.ledger"

local backfill = {}

-- (perf) Rows per task. Was 10000: each 100k-row fragment then got 10
-- column files and the commit folded them (more than
-- storage.MAX_COLUMN_FILES), copying every value again in the driver,
-- serially; and the per-task costs (reader setup, a synced output file, a
-- commit entry) came every ~5 ms of a trivial UDF's work. 50000 writes two
-- files per default-size fragment (no fold) and still gives a 100k-row
-- table two tasks for two workers (100000 would save only ~3% CPU).
local DEFAULT_BATCH = 50000
local MAX_EVENTS = 200

local function quote(name) return '"' .. name:gsub('"', '""') .. '"' end

-- {====== Runners

local default_pool

local function cpu_count()
  local s = fs.read("/sys/devices/system/cpu/online") or ""
  local n = 0
  for a, b in s:gmatch("(%d+)%-?(%d*)") do
    n = n + (b ~= "" and (tonumber(b) - tonumber(a) + 1) or 1)
  end
  return math.max(n, 1)
end
backfill.cpu_count = cpu_count

-- Contexts (geneva.context) set these: the runner to use, and a callback
-- told of every job started (a context waits for its async jobs at exit).
backfill.runner_provider = nil
backfill.on_start = nil

-- The embedded local cluster used outside any context: workers = cores,
-- owned by the root scope, started on first use and reused.
function backfill.default_runner()
  if not default_pool or default_pool.closed then
    default_pool = require("geneva.runner.local").new{ workers = cpu_count(), scope = ledger.root() }
  end
  return default_pool
end

local function current_runner()
  local r = backfill.runner_provider and backfill.runner_provider()
  return r or backfill.default_runner()
end

-- Several drivers (backfill_async jobs) may share one runner: whoever polls
-- it keeps its own events and parks the others' here until they step.
local inboxes = setmetatable({}, { __mode = "k" })   -- runner -> {job id -> events}

-- }======

-- {====== Planning

local column_of = require("geneva.reader").find_column

-- Rows in a staged output file (0 if it cannot be read: the commit will say)
local function staged_rows(path)
  local db = require("geneva.sqlite").open(path, { readonly = true })
  if not db then return 0 end
  local n = 0
  local ok = pcall(function()
    for row in db:rows("SELECT count(*) FROM col") do n = row[1] end
  end)
  db:close()
  return ok and n or 0
end

-- Staged outputs: other UDF versions are garbage; this version's files are
-- checkpoints of an earlier run, committed first when resuming.
local function recover_staged(tbl, column, udf_version, resume, rec)
  local base = tbl.dir .. "/_staging/" .. column
  local files = {}
  for _, v in ipairs(fs.list(base) or {}) do
    local dir = base .. "/" .. v
    if v ~= udf_version then
      fs.remove_tree(dir)
    else
      for _, name in ipairs(fs.list(dir) or {}) do
        local f, lo, hi = name:match("^f(%d+)%-(%d+)%-(%d+)%.db$")
        if f and resume then
          files[#files + 1] = { fragment = math.tointeger(tonumber(f)), lo = math.tointeger(tonumber(lo)),
                                hi = math.tointeger(tonumber(hi)), path = dir .. "/" .. name }
        else
          os.remove(dir .. "/" .. name)   -- a partial temp file, or not resuming
        end
      end
    end
  end
  if #files > 0 then
    local rows = 0
    for _, f in ipairs(files) do rows = rows + staged_rows(f.path) end
    local _, n = tbl:_commit_column_files(column, udf_version, files)
    rec.rows.recovered, rec.tasks.recovered = rows, n
    rec.rows.committed = rec.rows.committed + rows
    rec.events[#rec.events + 1] = ("resumed: committed %d checkpoint(s) of an earlier run (%d rows)"):format(n, rows)
  end
end

-- (perf) A fragment where no file holds the column and there is no `where`:
-- every row is missing, so its windows follow from its row count (rowids run
-- 1..rows) without the scan below, which reads every row (~0.2 s per 1M rows
-- before any worker can start). Appends them to tasks; returns the rows.
local function all_windows(tasks, frag, batch_size)
  for lo = 1, frag.rows, batch_size do
    tasks[#tasks + 1] = { fragment = frag.id, lo = lo, hi = lo + batch_size - 1,
                          rows = math.min(frag.rows, lo + batch_size - 1) - lo + 1 }
  end
  return frag.rows
end

-- Tasks over fixed windows [k*bs+1, (k+1)*bs] of each fragment's rowids.
local function plan_tasks(tbl, manifest, column, udf_version, where, batch_size)
  local reader = require "geneva.reader"
  local tasks, planned = {}, 0
  -- (perf) the scan reads only the column and what `where` mentions
  local cols = { column }
  if where then
    for _, name in ipairs(reader.columns_in(manifest, where)) do cols[#cols + 1] = name end
  end
  local sql = ("SELECT (_rowid - 1) / %d AS w, count(*) FROM t WHERE (%s IS NULL OR %s IS NOT ?)%s GROUP BY w ORDER BY w")
    :format(batch_size, quote(column), quote("__ver_" .. column),
            where and (" AND (" .. where .. ")") or "")
  for _, frag in ipairs(manifest.fragments) do
    if not where and #((frag.columns or {})[column] or {}) == 0 then
      planned = planned + all_windows(tasks, frag, batch_size)
    else
      local r = reader.open(tbl.dir, manifest, frag, { columns = cols })
      local stmt, err = r:prepare(sql)
      if not stmt then
        r:close()
        errors.throw("invalid_argument", ("bad where clause %q: %s"):format(where or "", err), { where = where })
      end
      stmt:bind_all({ udf_version })
      for row in stmt:rows() do
        local w, n = row[1], row[2]
        tasks[#tasks + 1] = { fragment = frag.id, lo = w * batch_size + 1, hi = (w + 1) * batch_size, rows = n }
        planned = planned + n
      end
      stmt:close()
      r:close()
    end
  end
  return tasks, planned
end

-- }======

-- {====== The driver

local Driver = {}
Driver.__index = Driver

local function save(self, force)
  local now = time.monotonic()
  if force or now - (self.saved_at or 0) >= 1 then
    job.save(self.db_dir, self.rec)
    self.saved_at = now
  end
end

local function event(self, line)
  local ev = self.rec.events
  if #ev >= MAX_EVENTS then table.remove(ev, 2) end
  ev[#ev + 1] = line
end

local function progress(self)
  if not self.bar then return end
  local r = self.rec.rows
  local done = r.computed + r.failed
  local total = math.max(r.planned, 1)
  local el = time.monotonic() - self.t0
  local rate = done / math.max(el, 1e-6)
  local width = 30
  local fill = math.floor(width * done / total)
  local eta = rate > 0 and (r.planned - done) / rate or 0
  io.stderr:write(("\r%s [%s%s] %d/%d rows  %.0f rows/s  ETA %ds "):format(
    self.rec.column, ("#"):rep(fill), ("."):rep(width - fill), done, r.planned, rate, math.ceil(eta)))
end

local function finish(self, status, err)
  local rec = self.rec
  if job.FINAL[rec.status] then return end
  rec.status = status
  rec.finished_at = time.iso8601()
  rec.seconds = time.monotonic() - self.t0
  if err then
    local e = errors.from(err)
    rec.error = errors.plain(e)
    event(self, ("%s: %s"):format(status, tostring(e)))
  end
  local ok, v = pcall(self.tbl.version, self.tbl)
  rec.version_end = ok and v or nil
  if self.bar then io.stderr:write("\n") end
  job.live[rec.id] = nil
  local box = inboxes[self.runner]
  if box then box[rec.id] = nil end
  job.save_final(self.db_dir, rec)
  self.saved_at = time.monotonic()
  job.clear_cancel(self.db_dir, rec.id)
  if self.lease then self.lease:forget() end
end

-- This job's runner events: parked ones first, else a poll whose events for
-- other jobs are parked for them.
local function poll_events(self, timeout)
  local boxes = inboxes[self.runner]
  if not boxes then
    boxes = {}
    inboxes[self.runner] = boxes
  end
  local id = self.rec.id
  if boxes[id] and #boxes[id] > 0 then
    local mine = boxes[id]
    boxes[id] = nil
    return mine
  end
  local out = {}
  for _, ev in ipairs(self.runner:poll(timeout)) do
    local owner = ev.task and ev.task.job or ev.job
    if owner == nil or owner == id or not job.live[owner] then
      out[#out + 1] = ev
    else
      local b = boxes[owner] or {}
      boxes[owner] = b
      b[#b + 1] = ev
    end
  end
  return out
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
  local manifest = self.tbl:_manifest()
  local col = column_of(manifest, rec.column)
  self.udf_version = col.udf_version
  rec.udf_version = col.udf_version
  recover_staged(self.tbl, rec.column, col.udf_version, rec.options.resume, rec)
  manifest = self.tbl:_manifest()
  rec.version_start = manifest.version
  local tasks, planned = plan_tasks(self.tbl, manifest, rec.column, col.udf_version,
                                    rec.options.where, rec.options.batch_size)
  rec.rows.planned = planned
  rec.tasks.planned = #tasks
  local spec = col.udf
  spec.version = col.udf_version
  for i, t in ipairs(tasks) do
    t.id, t.job = ("%s/%d"):format(rec.id, i), rec.id
    t.table_dir, t.version, t.column = self.tbl.dir, manifest.version, rec.column
    t.udf, t.where = spec, rec.options.where
  end
  self.tasks, self.next_task, self.in_flight = tasks, 1, 0
  event(self, ("planned %d rows in %d tasks at version %d"):format(planned, #tasks, manifest.version))
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

-- driver:step(timeout): one round of dispatch, wait, results and commits.
-- Raises only on interrupts; job failures end up in the record.
function Driver:step(timeout)
  local rec = self.rec
  if job.FINAL[rec.status] then return end
  local ok, err = pcall(function()
    -- another process's cancel marker: looked for twice a second
    local marker = false
    if not self.cancel_requested and time.monotonic() - (self.cancel_checked or 0) >= 0.5 then
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
    for _, ev in ipairs(poll_events(self, timeout or 0)) do
      if ev.kind == "log" then
        event(self, ev.line)
      elseif ev.kind == "done" then
        self.in_flight = self.in_flight - 1
        local r = ev.result
        rec.rows.computed = rec.rows.computed + r.computed
        rec.rows.failed = rec.rows.failed + r.failed
        rec.tasks.done = rec.tasks.done + 1
        for _, e in ipairs(r.errors or {}) do event(self, "row error: " .. tostring(errors.from(e))) end
        if r.staged then
          self.pending[#self.pending + 1] = { fragment = ev.task.fragment, lo = ev.task.lo,
            hi = ev.task.hi, path = r.staged, rows = r.computed + r.failed }
        end
        if #self.pending >= self.commit_every then commit_pending(self) end
      elseif ev.kind == "failed" then
        self.in_flight = self.in_flight - 1
        self.runner:cancel(rec.id)
        commit_pending(self)
        local e = errors.from(ev.error)
        if e.rowid ~= nil and e.fragment == nil then   -- rowids count within a fragment
          e.fragment = ev.task.fragment
          e.message = ("%s (fragment %d)"):format(e.message, ev.task.fragment)
        end
        finish(self, "FAILED", e)
        return
      end
    end
    progress(self)
    save(self)
  end)
  if not ok then
    local e = errors.from(err)
    if e.code == "interrupted" then
      pcall(finish, self, "FAILED", e)
      error(err, 0)
    end
    pcall(self.runner.cancel, self.runner, rec.id)
    pcall(finish, self, "FAILED", e)
  end
end

function Driver:cancel()
  self.cancel_requested = true
  self:step(0)
end

-- }======

local option_names = { where = true, batch_size = true, concurrency = true,
                       commit_every = true, resume = true }

-- backfill.start(tbl, column [, opts]) -> Job (driven by this process).
-- Raises invalid_argument / not_found before anything starts.
function backfill.start(tbl, column, opts)
  opts = opts or {}
  if type(column) ~= "string" then errors.throw("invalid_argument", "backfill: column must be a string") end
  for k in pairs(opts) do
    if not option_names[k] then errors.throw("invalid_argument", ("backfill: unknown option '%s'"):format(tostring(k))) end
  end
  local function posint(name)
    local v = opts[name]
    if v ~= nil and (math.type(v) ~= "integer" or v < 1) then
      errors.throw("invalid_argument", ("backfill: %s must be a positive integer"):format(name))
    end
  end
  posint("batch_size"); posint("concurrency"); posint("commit_every")
  if opts.where ~= nil and type(opts.where) ~= "string" then
    errors.throw("invalid_argument", "backfill: where must be a SQL string")
  end
  if tbl._pinned then
    errors.throw("invalid_argument", ("table '%s' is checked out at version %d: backfill needs the latest")
      :format(tbl.name, tbl._pinned))
  end
  local manifest = tbl:_manifest()
  local col = column_of(manifest, column)
  if not col then errors.throw("not_found", ("table '%s' has no column '%s'"):format(tbl.name, column), { column = column }) end
  if not col.virtual or not col.udf then
    errors.throw("invalid_argument", ("column '%s' has no UDF to backfill"):format(column), { column = column })
  end
  local db_dir = tbl.db.dir
  -- two drivers on one column would compute the same rows and trip over
  -- each other's staged files. The check and this job's PENDING record are
  -- made under a lock (released on return), so of two drivers starting at
  -- once the second sees the first.
  fs.mkdir_p(db_dir .. "/_geneva/jobs")
  local lock <close>, lerr, lcode = fs.lock(db_dir .. "/_geneva/jobs/.start.lock", { timeout = 30 })
  if not lock then
    errors.throw(lcode == "EINTR" and "interrupted" or "unavailable",
      ("cannot lock the job records of '%s': %s"):format(db_dir, tostring(lerr)))
  end
  for _, other in ipairs(job.list(db_dir, { table = tbl.name })) do
    if not job.FINAL[other.status] and other.column == col.name then
      errors.throw("conflict", ("column '%s' of table '%s' is being backfilled by job %s (%s): wait for it or cancel it")
        :format(col.name, tbl.name, other.id, other.status), { column = col.name, job_id = other.id })
    end
  end
  local rec = {
    id = job.new_id(), kind = "backfill", status = "PENDING", table = tbl.name, column = column,
    db = db_dir, created_at = time.iso8601(time.now(), 6), owner = ledger.owner(),
    options = { where = opts.where, batch_size = opts.batch_size or DEFAULT_BATCH,
                concurrency = opts.concurrency, commit_every = opts.commit_every,
                resume = opts.resume ~= false },
    rows = { planned = 0, computed = 0, committed = 0, failed = 0 },
    tasks = { planned = 0, done = 0 }, commits = 0, events = {},
  }
  local self = setmetatable({ tbl = tbl, db_dir = db_dir, rec = rec, pending = {},
    runner = current_runner(), t0 = time.monotonic(), bar = fs.isatty(2) }, Driver)
  -- if the process is torn down mid-job, the record says so
  self.lease = ledger.current():reserve("job", rec.id):bind(function()
    if not job.FINAL[rec.status] then
      pcall(self.runner.cancel, self.runner, rec.id)   -- its tasks stop with it
      rec.status, rec.finished_at = "FAILED", time.iso8601()
      rec.error = { code = "interrupted", message = "the driver was interrupted" }
      -- if even that cannot be written, the record reads abandoned once
      -- this process is gone; keeping the lease would not help reap
      pcall(job.save_final, db_dir, rec)
    end
  end)
  local saved, serr = pcall(job.save, db_dir, rec)
  if not saved then      -- nothing started: no record, no lease
    self.lease:forget()
    error(serr, 0)
  end
  job.live[rec.id] = self
  local j = job.object(db_dir, rec, self)
  if backfill.on_start then backfill.on_start(j) end   -- contexts track their jobs
  return j
end

-- backfill.run(tbl, column, opts) -> record; raises the job's error
function backfill.run(tbl, column, opts)
  local j = backfill.start(tbl, column, opts)
  return j:wait()
end

return backfill
