-- geneva.backfill: starting backfill jobs (docs/internals.md, "Backfill").
--
--   tbl:backfill(column, opts)       backfill.run: the job runs in this
--       process, on the current runner (the innermost context's, else the
--       embedded local cluster), and its record is returned at the end.
--   tbl:backfill_async(column, opts) backfill.start_async: the job runs in a
--       driver process of its own (`geneva worker --driver`), so it makes
--       progress whatever this process does; the process is owned by the
--       current ledger scope (the context's): exiting waits for it,
--       teardown stops it, and it dies with its owner.
-- Both plan with geneva.backfill.planner and drive with
-- geneva.backfill.driver; the record (geneva.backfill.job) is the one
-- source of truth other processes read.
local errors = require "geneva.errors"
local fs = require "geneva.fs"
local json = require "geneva.json"
local job = require "geneva.backfill.job"
local driver = require "geneva.backfill.driver"
local runner = require "geneva.runner"
local time = require "geneva.time"
local ledger = require "geneva.ledger"
local where = require "geneva.store.where"

local column_of = require("geneva.store.reader").find_column

local backfill = {}

-- (perf) Rows per task. Was 10000: each 100k-row fragment then got 10
-- column files and the commit folded them (more than
-- storage.MAX_COLUMN_FILES), copying every value again in the driver,
-- serially; and the per-task costs (reader setup, a synced output file, a
-- commit entry) came every ~5 ms of a trivial UDF's work. 50000 writes two
-- files per default-size fragment (no fold) and still gives a 100k-row
-- table two tasks for two workers (100000 would save only ~3% CPU).
local DEFAULT_BATCH = 50000

local option_names = { where = true, batch_size = true, concurrency = true,
                       commit_every = true, resume = true }

-- new_job(tbl, column, opts) -> the PENDING record of a new job, saved.
-- Raises invalid_argument / not_found / conflict before anything starts.
local function new_job(tbl, column, opts)
  opts = opts or {}
  if type(column) ~= "string" then errors.throw("invalid_argument", "backfill: column must be a string") end
  if type(opts) ~= "table" then errors.throw("invalid_argument", "backfill: options must be a table") end
  require("geneva.suggest").check_options("backfill", opts, option_names)
  local function posint(name)
    local v = opts[name]
    if v ~= nil and (math.type(v) ~= "integer" or v < 1) then
      errors.throw("invalid_argument", ("backfill: %s must be a positive integer"):format(name))
    end
  end
  posint("batch_size"); posint("concurrency"); posint("commit_every")
  if tbl._pinned then
    errors.throw("invalid_argument", ("table '%s' is checked out at version %d: backfill needs the latest")
      :format(tbl.name, tbl._pinned))
  end
  local snapshot = tbl:_snapshot()
  local col = column_of(snapshot, column)
  if not col then errors.throw("not_found", ("table '%s' has no column '%s'"):format(tbl.name, column), { column = column }) end
  if not col.virtual or not col.udf then
    errors.throw("invalid_argument", ("column '%s' has no UDF to backfill"):format(column), { column = column })
  end
  -- before any job exists: a where that is not one expression never runs
  where.check(opts.where, snapshot, "backfill")
  local db_dir = tbl.db.dir
  -- two drivers on one column would compute the same rows and trip over
  -- each other's staged files. The check and this job's PENDING record are
  -- made under a lock (released on return), so of two drivers starting at
  -- once the second sees the first.
  fs.mkdir_p(db_dir .. "/_geneva/jobs")
  local lock <close>, lerr, lcode = require("geneva.store.backend").lock(db_dir .. "/_geneva/jobs/.start.lock",
                                                                        { timeout = 30 })
  if not lock then
    errors.io(nil, ("cannot lock the job records of '%s': %s"):format(db_dir, tostring(lerr)), lcode)
  end
  for _, other in ipairs(job.list(db_dir, { table = tbl.name })) do
    if not job.FINAL[other.status] and other.column == col.name then
      local host = type(other.owner) == "table" and tostring(other.owner.hostname) or "?"
      errors.throw("conflict", ("column '%s' of table '%s' is being backfilled by job %s (%s, driver on host %s): wait for it or cancel it; if that driver is gone, `geneva reap --db %s --force` finalises its job once it has been silent for %ds")
        :format(col.name, tbl.name, other.id, other.status, host, tbl.db.uri, job.STALE_DRIVER),
        { column = col.name, job_id = other.id })
    end
  end
  -- rec.db is for people and other machines: an s3 database's URI, not
  -- this machine's mirror of it (code is handed the database's directory
  -- separately: job.load(db_dir, id), the background driver's handoff)
  local rec = {
    id = job.new_id(), kind = "backfill", status = "PENDING", table = tbl.name, column = column,
    db = tbl.db.store and tbl.db.uri or db_dir, created_at = time.iso8601(time.now(), 6), owner = ledger.owner(),
    options = { where = opts.where, batch_size = opts.batch_size or DEFAULT_BATCH,
                concurrency = opts.concurrency, commit_every = opts.commit_every,
                resume = opts.resume ~= false },
    rows = { planned = 0, computed = 0, committed = 0, failed = 0 },
    tasks = { planned = 0, done = 0 }, commits = 0, events = {},
  }
  job.save(db_dir, rec)
  return rec
end

-- backfill.run(tbl, column [, opts]) -> the finished record; raises the
-- job's error when it ends FAILED or CANCELLED.
function backfill.run(tbl, column, opts)
  local rec = new_job(tbl, column, opts)
  local r, frame = runner.current()
  rec.runner = r:describe()
  -- a foreground job draws its bar (geneva.progress says when: a terminal,
  -- GENEVA_PROGRESS); a background one never does
  local d = driver.new(tbl, rec, r, { bar = require("geneva.progress").enabled() })
  local j = job.object(tbl.db.dir, rec, d)
  if frame then frame.jobs[#frame.jobs + 1] = j end
  return j:wait()
end

-- {====== Background jobs

-- backfill.start_async(tbl, column [, opts]) -> Job running in a driver
-- process of its own, on a runner attached to the current one.
function backfill.start_async(tbl, column, opts)
  local rec = new_job(tbl, column, opts)
  local r, frame = runner.current()
  local db_dir = tbl.db.dir
  local ok, j = pcall(function()
    local exe = runner.worker_exe()
    local scope = ledger.current()
    local lease = scope:reserve("proc", "driver " .. rec.id, { exe = exe, job = rec.id })
    local prev = scope:activate()
    local p, err = require("geneva.proc").spawn{ argv = { exe, "worker", "--driver" },
      env_add = { LUA_PATH = package.path }, stdin = "pipe" }
    prev:activate()
    if not p then
      lease:forget()
      errors.throw("unavailable", "cannot start the job's driver process: " .. tostring(err))
    end
    local info = require("geneva.proc").info(p:pid())
    lease:update{ pid = p:pid(), pgid = p:pgid(), start_time = info and info.start_time }
    lease:bind(function() p:close() end)
    -- the handoff may hold resolved secrets (env): a pipe, never a file
    local msg = json.encode{ db = db_dir, store = tbl.db.store, table = tbl.name, job = rec.id, runner = r:handoff(),
                             describe = r:describe() }
    local wok, werr = p:write(msg .. "\n")
    p:close_stdin()
    if not wok then
      lease:release()
      errors.throw("unavailable", "cannot hand the job to its driver process: " .. tostring(werr))
    end
    return job.object(db_dir, rec, nil, { proc = p, lease = lease })
  end)
  if not ok then
    rec.status, rec.finished_at = "FAILED", time.iso8601()
    rec.error = errors.plain(errors.from(j))
    pcall(job.save_final, db_dir, rec)
    error(j, 0)
  end
  if frame then frame.jobs[#frame.jobs + 1] = j end
  return j
end

-- backfill.read_handoff(text) -> msg | nil, why: what a background
-- driver process is handed on stdin (checked: it comes over a pipe, but
-- nothing read is trusted blindly)
function backfill.read_handoff(text)
  local msg = text and json.decode(text, { null_as_nil = true })
  if type(msg) ~= "table" or type(msg.db) ~= "string" or type(msg.job) ~= "string"
      or type(msg.table) ~= "string" or type(msg.runner) ~= "table" then
    return nil, "expected a job handoff on stdin"
  end
  return msg
end

-- backfill.drive(tbl, msg) -> exit code: runs the handed-off job to its end
-- in this process (`geneva worker --driver`, geneva.cli.worker).
function backfill.drive(tbl, msg)
  local rec, err = job.load(msg.db, msg.job)
  if not rec then error(err, 0) end
  rec.owner = ledger.owner()        -- from now on, this process answers for it
  rec.runner = msg.describe
  rec.driver_pid = rec.owner.pid
  job.save(msg.db, rec)
  local ok, res = pcall(function()
    local r = runner.attach(msg.runner, ledger.current())
    return driver.new(tbl, rec, r, { bar = false }):run()
  end)
  if not ok then
    local e = errors.from(res)
    if not job.FINAL[rec.status] then
      rec.status, rec.finished_at = job.end_status(e), time.iso8601()
      rec.error = errors.plain(e)
      pcall(job.save_final, msg.db, rec)
    end
    if e.code == "interrupted" then error(res, 0) end
    return 1
  end
  return res.status == "DONE" and 0 or 1
end

-- }======

return backfill
