--- Backfill jobs: the Job object that @{geneva.table.Table:backfill_async}
-- and @{geneva.db.Db:job} return, and the records @{geneva.db.Db:jobs} lists.
--
-- A job's record is a plain table (those @{geneva.db.Db:jobs} lists print
-- as one line: `geneva.JobRecord <id> DONE docs.words 4000/4000 rows, 5m ago`):
-- `id`, `status` (`"PENDING"`,
-- `"RUNNING"`, `"DONE"`, `"FAILED"`, `"CANCELLED"`), `table`, `column`,
-- `rows` (`planned`, `computed`, `committed`, `failed`, `failed_rowids` by
-- fragment), `tasks` (`planned`, `done`), `commits`, `error` (`code`,
-- `message`, ...), `events`, `created_at`, `started_at`, `finished_at`,
-- `seconds`, `options`, `runner`, `version_start`, `version_end`. A RUNNING
-- job whose driver is gone reads as FAILED with code `abandoned`.
-- @module geneva.backfill.job

-- Internals (job.save/load/list, logs, cancel markers: geneva.cli.jobs and
-- the drivers use them):
-- A record is `<db>/_geneva/jobs/<id>.json`, rewritten atomically on every
-- state change and at most about once a second for progress. A cancel
-- request from another process is the file `<id>.cancel`, which the owning
-- driver polls. A RUNNING record whose owner (hostname, boot id, pid, start
-- time) is gone reads as FAILED with code `abandoned`. Its log, every line
-- of the driver and of its workers (tagged by worker or Ray slot), is
-- `<id>.log` beside it, appended by the driver (job:logs, geneva jobs logs).
local fs = require "geneva.fs"
local backend = require "geneva.store.backend"
local json = require "geneva.json"
local errors = require "geneva.errors"
local time = require "geneva.time"

local job = {}

job.STATUSES = { PENDING = true, RUNNING = true, DONE = true, FAILED = true, CANCELLED = true }
local FINAL = { DONE = true, FAILED = true, CANCELLED = true }
job.FINAL = FINAL

-- job.end_status(err) -> the final status of a job that ended with err: a
-- user stopped it (job:cancel, geneva jobs cancel, or Ctrl-C/SIGTERM/SIGHUP
-- of its driver: code interrupted) -> "CANCELLED", anything else "FAILED".
-- An interrupt is a decision, not a failure: `geneva jobs list --status
-- FAILED` shows what needs attention.
function job.end_status(err)
  local code = errors.from(err).code
  return (code == "cancelled" or code == "interrupted") and "CANCELLED" or "FAILED"
end

-- job.INTERRUPTED: the error of a job whose driver was interrupted
job.INTERRUPTED = { code = "interrupted", message = "interrupted" }

-- A record lists at most this many failed rowids (rows.failed_rowids, by
-- fragment); rows.failed counts them all, and the column files mark them all.
job.MAX_FAILED_ROWIDS = 1000

local function jobs_dir(db_dir) return db_dir .. "/_geneva/jobs" end


-- job.new_id() -> "20261124-231500-1a2b3c4d": sortable by start time
function job.new_id()
  return os.date("!%Y%m%d-%H%M%S") .. "-" .. fs.random_hex(8)
end

local function record_path(db_dir, id) return jobs_dir(db_dir) .. "/" .. id .. ".json" end

local function valid_id(id)
  return type(id) == "string" and id:match("^[%w%-_]+$") ~= nil
end

-- job.save(db_dir, rec [, compact]): atomic rewrite of the record (compact:
-- without indentation). Raises unavailable when it cannot be written (a
-- full disk, ulimit -f).
function job.save(db_dir, rec, compact)
  local ok, err, code = fs.mkdir_p(jobs_dir(db_dir))
  if ok then
    rec.updated_at = time.iso8601()
    ok, err, code = backend.put(record_path(db_dir, rec.id),
      compact and json.encode(rec) or json.encode(rec, { indent = 2 }),
      { fsync = FINAL[rec.status] or false })
  end
  if not ok then
    if code == "EINTR" then errors.throw("interrupted", "interrupted") end
    errors.throw("unavailable", ("cannot write job record %s: %s"):format(rec.id, tostring(err)),
      { path = record_path(db_dir, rec.id) })
  end
end

-- job.save_final(db_dir, rec): saves a record in its final state; when the
-- whole record does not fit (ulimit -f, a nearly full disk), a smaller one
-- (only the last event, the error message cut short, no indentation) so the job
-- still reads final. Raises the first error when neither can be written.
function job.save_final(db_dir, rec)
  local ok, err = pcall(job.save, db_dir, rec)
  if ok or errors.from(err).code == "interrupted" then
    if not ok then error(err, 0) end
    return
  end
  local events, e = rec.events, rec.error
  local last = type(events) == "table" and events[#events]
  rec.events = json.array({ type(last) == "string" and last:sub(1, 200) or nil })
  if type(e) == "table" and type(e.message) == "string" and #e.message > 200 then
    local short = {}
    for k, v in pairs(e) do short[k] = v end
    short.message = e.message:sub(1, 200) .. "..."
    rec.error = short
  end
  ok = pcall(job.save, db_dir, rec, true)
  rec.events, rec.error = events, e
  if not ok then error(err, 0) end
end

local owner_alive = require("geneva.ledger").owner_alive

-- A driver rewrites its record at least every SAVE_EVERY (0.5 s) while it
-- runs: that is its heartbeat. A record of a driver on another host that
-- has not moved for this long (GENEVA_DRIVER_STALE, seconds) counts as
-- abandoned for `geneva reap --force`.
job.STALE_DRIVER = math.tointeger(tonumber(os.getenv("GENEVA_DRIVER_STALE") or "")) or 300

-- job.heartbeat_age(rec) -> seconds since its driver last wrote it | nil
function job.heartbeat_age(rec)
  local t = type(rec.updated_at) == "string" and time.parse_iso8601(rec.updated_at)
  if not t then return nil end
  return time.now() - t
end

-- job.load(db_dir, id) -> record | nil, Error(not_found). A RUNNING or
-- PENDING record whose driver is gone is reported FAILED/abandoned.
local function read_record(db_dir, id)
  local text = backend.get(record_path(db_dir, id))
  if not text then return nil, errors.new("not_found", ("no job '%s'"):format(id), { job_id = id }) end
  local rec, err = json.decode(text, { null_as_nil = true })
  if type(rec) ~= "table" then
    return nil, errors.new("internal", ("corrupt job record %s: %s"):format(id, err or "not an object"))
  end
  return rec
end

function job.load(db_dir, id)
  if not valid_id(id) then
    return nil, errors.new("invalid_argument", ("bad job id '%s'"):format(tostring(id)))
  end
  local rec, err = read_record(db_dir, id)
  if not rec then return nil, err end
  if not FINAL[rec.status] and not owner_alive(rec.owner) then
    -- a driver writes its final record before it exits: what we read may
    -- predate that write, so look again now that it is gone
    rec, err = read_record(db_dir, id)
    if not rec then return nil, err end
    if not FINAL[rec.status] then
      rec.status = "FAILED"
      rec.error = { code = "abandoned", message = "the job's driver is gone" }
    end
  end
  return rec
end

-- job.progress(rec) -> committed, total: the rows committed of the total.
-- A resumed run commits the checkpoints of an earlier one (rows.recovered)
-- besides the rows it planned, and counts both as committed, so the total
-- is planned + recovered; the cap keeps a record from an older geneva (or
-- a hand-edited one) from showing more than that.
function job.progress(rec)
  local r = type(rec.rows) == "table" and rec.rows or {}
  local total = (tonumber(r.planned) or 0) + (tonumber(r.recovered) or 0)
  return math.min(tonumber(r.committed) or 0, total), total
end

-- The records job.list gives print as one line (`=db:jobs()` in the REPL:
-- a line per job, not the record's thirty-odd fields); their fields stay
-- plain data.
job.Record = { __name = "geneva.JobRecord" }
job.Record.__tostring = function(rec)
  local committed, total = job.progress(rec)
  local age = require("geneva.cli.output").age(rec.created_at)
  return ("geneva.JobRecord %s %s %s.%s %d/%d rows%s"):format(tostring(rec.id), tostring(rec.status),
    tostring(rec.table), tostring(rec.column), committed, total, age ~= "-" and (", %s ago"):format(age) or "")
end

-- job.list(db_dir [, {table=, status=}]) -> array of records, newest first
-- (by created_at, then id: ids only order jobs to the second)
-- Raises invalid_argument for a status that does not exist.
function job.list(db_dir, filter)
  filter = filter or {}
  if type(filter) ~= "table" then errors.throw("invalid_argument", "jobs: filter must be a table {table=, status=}") end
  local suggest = require "geneva.suggest"
  suggest.check_options("jobs", filter, { "table", "status" })
  if filter.status ~= nil and not job.STATUSES[filter.status] then
    errors.throw("invalid_argument", ("jobs: unknown status '%s'%s"):format(tostring(filter.status),
      suggest.unknown(type(filter.status) == "string" and filter.status:upper() or filter.status,
        { "PENDING", "RUNNING", "DONE", "FAILED", "CANCELLED" })))
  end
  local names = backend.list(jobs_dir(db_dir)) or {}
  local out = {}
  for i = #names, 1, -1 do
    local id = names[i]:match("^([%w%-_]+)%.json$")
    if id then
      local rec = job.load(db_dir, id)
      if rec and (not filter.table or rec.table == filter.table)
          and (not filter.status or rec.status == filter.status) then
        out[#out + 1] = setmetatable(rec, job.Record)
      end
    end
  end
  table.sort(out, function(a, b)
    local ca, cb = tostring(a.created_at or ""), tostring(b.created_at or "")
    if ca ~= cb then return ca > cb end
    return a.id > b.id
  end)
  return out
end

-- {====== The job's log

-- A log stops growing at this size (a line says so): a UDF printing per row
-- must not fill the disk that holds the table.
job.MAX_LOG_BYTES = 64 * 1024 * 1024

local function log_path(db_dir, id) return jobs_dir(db_dir) .. "/" .. id .. ".log" end

-- In an object store (no appends) the log is written locally in the
-- mirror and uploaded whole, at most every LOG_UPLOAD_EVERY seconds and at
-- the end.
job.LOG_UPLOAD_EVERY = 5

-- job.open_log(db_dir, id) -> log with :write(line) and :close(). Lines get
-- the wall-clock time; a log that cannot be written costs its lines, never
-- the job.
function job.open_log(db_dir, id)
  fs.mkdir_p(jobs_dir(db_dir))
  local path = log_path(db_dir, id)
  local f = io.open(path, "a")
  local log = { f = f, size = f and f:seek("end") or 0, remote = backend.is_remote(path), uploaded = 0,
                uploaded_at = time.monotonic() }
  function log:upload(force)
    if not self.remote or self.size == self.uploaded then return end
    if force or time.monotonic() - self.uploaded_at >= job.LOG_UPLOAD_EVERY then
      self.uploaded_at = time.monotonic()
      if backend.upload(path) then self.uploaded = self.size end
    end
  end
  function log:write(line)
    if not self.f then return end
    local text = os.date("!%H:%M:%S ") .. tostring(line):gsub("[\r\n]+", " ") .. "\n"
    if self.size + #text > job.MAX_LOG_BYTES then
      self.f:write(os.date("!%H:%M:%S "), "(log truncated at ", job.MAX_LOG_BYTES, " bytes)\n")
      self.f:close()
      self.f = nil
      return
    end
    if not self.f:write(text) or not self.f:flush() then
      self.f:close()
      self.f = nil
      return
    end
    self.size = self.size + #text
    self:upload(false)
  end
  function log:close()
    if self.f then self.f:close() self.f = nil end
    self:upload(true)
  end
  return log
end

-- job.read_log(db_dir, id [, offset]) -> lines, next offset | nil when there
-- is no log: the whole lines from byte offset on (a line still being
-- written waits for the next read). Raises unavailable when the log exists
-- but cannot be read: its record's events are no stand-in for it then.
function job.read_log(db_dir, id, offset)
  offset = offset or 0
  -- (perf) a followed log is read from where it was: a ranged GET on s3
  local text, err, code = backend.get(log_path(db_dir, id), { from = offset })
  if not text and code == "ENOENT" then return nil end
  if not text then errors.raise("unavailable", "cannot read the log of job %s: %s", id, tostring(err)) end
  local lines, pos = {}, 1
  while true do
    local nl = text:find("\n", pos, true)
    if not nl then break end
    lines[#lines + 1] = text:sub(pos, nl - 1)
    pos = nl + 1
  end
  return lines, offset + pos - 1
end

-- }======

--[[
job.finalize_abandoned(db_dir, id, opts) -> record | nil, why
`geneva reap`: a record left PENDING or RUNNING by a driver that is gone is
written FAILED with code `abandoned`, so that its column is free again and
every reader agrees. Gone: its owner is on this host and dead (or this host
rebooted since), or, with opts.force, it is on another host and its record
has not moved for job.STALE_DRIVER seconds. Its cancel marker goes too.
]]
function job.finalize_abandoned(db_dir, id, opts)
  if not valid_id(id) then return nil, "bad job id" end
  local rec, err = read_record(db_dir, id)
  if not rec then return nil, tostring(err) end
  if FINAL[rec.status] then return nil, "already final" end
  local o = rec.owner
  local why
  local me = require("geneva.proc").self()
  if type(o) ~= "table" then
    why = "its record names no driver"
  elseif o.hostname == me.hostname and o.boot_id == me.boot_id then
    if owner_alive(o) then return nil, "its driver is alive" end
    why = ("its driver (pid %s) is gone"):format(tostring(o.pid))
  elseif o.hostname == me.hostname then
    why = "its driver ran before this host restarted"
  else
    local age = job.heartbeat_age(rec)
    if not (opts and opts.force) then return nil, ("its driver is on host %s"):format(tostring(o.hostname)) end
    if age and age < job.STALE_DRIVER then
      return nil, ("its driver on host %s wrote its record %.0fs ago: alive"):format(tostring(o.hostname), age)
    end
    why = ("its driver on host %s has not written its record for %s"):format(tostring(o.hostname),
      age and ("%.0fs"):format(age) or "an unknown time")
  end
  rec.status, rec.finished_at = "FAILED", time.iso8601()
  rec.error = { code = "abandoned", message = "the job's driver is gone: " .. why .. " (finalised by geneva reap)" }
  job.save_final(db_dir, rec)
  job.clear_cancel(db_dir, id)
  return rec
end

-- job.request_cancel(db_dir, id) -> record: leaves a cancel marker; if the
-- owner is gone, marks the record CANCELLED itself.
function job.request_cancel(db_dir, id)
  local rec, err = job.load(db_dir, id)
  if not rec then error(err, 2) end
  if rec.error and rec.error.code == "abandoned" then
    -- nobody will see a marker: record the end ourselves (its workers died
    -- with their driver: local workers have a parent-death signal)
    rec.status = "CANCELLED"
    rec.finished_at = time.iso8601()
    rec.error = { code = "cancelled", message = "cancelled after its driver was gone" }
    job.save(db_dir, rec)
    return rec
  end
  if FINAL[rec.status] then return rec end
  local ok, perr = backend.put(jobs_dir(db_dir) .. "/" .. id .. ".cancel", time.iso8601())
  if not ok then errors.raise("unavailable", "cannot write the cancel marker of job %s: %s", id, perr) end
  return rec
end

function job.cancel_requested(db_dir, id)
  return backend.exists(jobs_dir(db_dir) .. "/" .. id .. ".cancel")
end

function job.clear_cancel(db_dir, id)
  backend.delete(jobs_dir(db_dir) .. "/" .. id .. ".cancel")
end

--[[
job.follow_log(db_dir, id, on_line [, {interval=, step=}]) -> record
Calls on_line(line) for every line of the job's log, as it is written,
until the job has ended and its log is read to the end. step(seconds), if
given, replaces the sleep between reads (a job this process drives steps
there). Raises interrupted on a signal. A job without a log (made before
logs existed) gives its record's events once it has ended.
]]
function job.follow_log(db_dir, id, on_line, opts)
  opts = opts or {}
  -- an object store's copy changes at most every LOG_UPLOAD_EVERY seconds
  local interval = opts.interval or (backend.is_remote(log_path(db_dir, id)) and 1 or 0.2)
  local offset = 0
  local rec, err
  while true do
    rec, err = job.load(db_dir, id)
    if not rec then error(err, 2) end
    local final = FINAL[rec.status]
    local lines, next_offset = job.read_log(db_dir, id, offset)
    if lines then
      offset = next_offset
      for _, l in ipairs(lines) do on_line(l) end
    elseif final then
      for _, ev in ipairs(rec.events or {}) do on_line(ev) end
    end
    if final then return rec end
    if opts.step then
      opts.step(interval)
    elseif not time.sleep(interval) then
      errors.raise("interrupted", "interrupted while following the log of job %s", id)
    end
  end
end

-- {====== The Job object

local Job = {}
Job.__index = function(self, k)
  if k == "id" then return rawget(self, "_rec").id end
  return Job[k]
end
Job.__name = "geneva.Job"

-- Drivers of the jobs this process steps itself, by id (set by the driver
-- until the job ends), so db:job(id) can step a job run here.
job.live = {}

-- job.object(db_dir, rec [, driver [, bg]]) -> Job. With a driver, this
-- process runs the job and status/wait step it. With bg = {proc=, lease=},
-- the job runs in that background driver process and the Job reads its
-- record (and owns the process). Else it reads the record.
function job.object(db_dir, rec, driver, bg)
  driver = driver or job.live[rec.id]
  if driver then rec = driver.rec end
  return setmetatable({ _db_dir = db_dir, _rec = rec, _driver = driver, _bg = bg }, Job)
end

-- A background driver that is gone with its record not final: say so.
local function check_bg(self)
  local bg = self._bg
  if not bg or bg.done then return end
  local rec = self._rec
  local how, code = bg.proc:wait(0)
  if FINAL[rec.status] or how then
    if how and not FINAL[rec.status] then
      rec = job.load(self._db_dir, rec.id) or rec    -- it may have written it as it went
      if not FINAL[rec.status] then
        rec.status, rec.finished_at = "FAILED", time.iso8601()
        rec.error = { code = "abandoned",
          message = ("the job's driver process %s %s"):format(how, tostring(code)) }
        pcall(job.save_final, self._db_dir, rec)
      end
      self._rec = rec
    end
    if FINAL[rec.status] then
      bg.done = true
      bg.proc:wait(2)          -- it exits right after its last record
      bg.lease:release()
    end
  end
end

local function refresh(self)
  if self._driver then
    self._driver:step(0)
    return self._rec
  end
  if not FINAL[self._rec.status] then
    local rec = job.load(self._db_dir, self._rec.id)
    if rec then self._rec = rec end
  end
  check_bg(self)
  return self._rec
end

--- A job. `job.id` is its id; it prints as one line,
-- `geneva.Job <id> RUNNING docs.words 1200/5000 rows`.
-- @type Job

-- the line above, from the record as it is now
Job.__tostring = function(self)
  local ok, rec = pcall(refresh, self)
  if not ok then rec = self._rec end
  local r = type(rec.rows) == "table" and rec.rows or {}
  local done = (tonumber(r.computed) or 0) + (tonumber(r.failed) or 0)
  return ("geneva.Job %s %s %s.%s %d/%d rows%s"):format(rec.id, tostring(rec.status), tostring(rec.table),
    tostring(rec.column), done, tonumber(r.planned) or 0, (tonumber(r.failed) or 0) > 0 and
    (" (%d failed)"):format(r.failed) or "")
end

--- The job's status now.
-- @treturn string `"PENDING"`, `"RUNNING"`, `"DONE"`, `"FAILED"` or `"CANCELLED"`
function Job:status() return refresh(self).status end

--- The job's record now (a copy: a plain table; fields in the module's
-- description).
-- @treturn table
-- @usage local r = job:record()
-- print(r.rows.computed .. "/" .. r.rows.planned, r.status)
function Job:record()
  local rec = refresh(self)
  return json.decode(json.encode(rec), { null_as_nil = true })
end

--- Waits for the job's end.
-- @number[opt] timeout seconds to wait at most (default: no limit)
-- @treturn[1] table the record, when it ended DONE
-- @return[2] nil when `timeout` passed first
-- @treturn[2] string `"timeout"`
-- @raise the job's error when it ended FAILED (`udf_error`, `abandoned`, ...)
-- or CANCELLED (`cancelled`), with `job_id`; `interrupted` on Ctrl-C
-- @usage local rec, why = job:wait(60)
-- if not rec then print("still running after a minute") end
function Job:wait(timeout)
  local deadline = timeout and time.monotonic() + timeout
  local nap = 0.01               -- short jobs end fast: look often at first
  while not FINAL[refresh(self).status] do
    if deadline and time.monotonic() >= deadline then return nil, "timeout" end
    if self._driver then
      self._driver:step(0.2)
    else
      local ok = time.sleep(nap)
      if not ok then errors.raise("interrupted", "interrupted while waiting for job %s", self.id) end
      nap = math.min(nap * 2, 0.1)
    end
  end
  local rec = self._rec
  if rec.status ~= "DONE" then
    local e = rec.error or { code = rec.status == "CANCELLED" and "cancelled" or "internal",
                             message = "job " .. rec.status:lower() }
    error(errors.new(errors.codes[e.code] and e.code or "internal", e.message,
      { job_id = rec.id, column = e.column, rowid = e.rowid, value = e.value,
        fragment = e.fragment }), 2)
  end
  return self:record()
end

--- Cancels the job: its tasks stop; what was committed stays.
-- A job of another process is asked through a marker its driver watches;
-- one of this process's background jobs is waited for until it has ended.
-- @treturn boolean true
function Job:cancel()
  if self._driver then
    self._driver:cancel()
    return true
  end
  job.request_cancel(self._db_dir, self._rec.id)
  if self._bg then
    local deadline = time.monotonic() + 5
    while not FINAL[refresh(self).status] and time.monotonic() < deadline do
      if not time.sleep(0.02) then errors.raise("interrupted", "interrupted while cancelling job %s", self.id) end
    end
    if not FINAL[self._rec.status] then self._bg.lease:release() refresh(self) end
  end
  return true
end

--- The job's log: its driver's events and its workers' output.
-- Each line is `HH:MM:SS [worker N|slot N] text` (UTC). With `follow`,
-- lines are passed to `on_line` as they come until the job has ended, and
-- the whole log is returned then.
-- @tab[opt] opts `follow` (boolean), `on_line` (function(line); default:
-- write to stdout)
-- @treturn {string,...} the lines
-- @raise `invalid_argument` for an unknown option
-- @usage job:logs { follow = true }     -- like `geneva jobs logs -f ID`
function Job:logs(opts)
  opts = opts or {}
  if type(opts) ~= "table" then errors.throw("invalid_argument", "job:logs: options must be a table {follow=, on_line=}") end
  require("geneva.suggest").check_options("job:logs", opts, { "follow", "on_line" })
  local rec = refresh(self)
  local lines = {}
  if not opts.follow then
    lines = job.read_log(self._db_dir, rec.id)
    if not lines then
      lines = {}
      for _, ev in ipairs(rec.events or {}) do lines[#lines + 1] = ev end
    end
    return lines
  end
  local on_line = opts.on_line or function(l) io.stdout:write(l, "\n") io.stdout:flush() end
  local step = self._driver and function(t) self._driver:step(t) end or nil
  self._rec = job.follow_log(self._db_dir, rec.id, function(l)
    lines[#lines + 1] = l
    on_line(l)
  end, { step = step })
  refresh(self)
  return lines
end

-- }======

return job
