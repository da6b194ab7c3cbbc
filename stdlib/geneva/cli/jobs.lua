-- geneva jobs list|show|logs|wait|cancel --db URI [-o json|yaml|wide | --json]
local args = require "geneva.cli.args"
local output = require "geneva.cli.output"
local errors = require "geneva.errors"

local M = {}

local usage = [[
usage: geneva jobs list   --db URI [--table T] [--status S] [-o FORMAT | --json] [-w|--watch]
       geneva jobs show   ID --db URI [-o FORMAT | --json]
       geneva jobs logs   ID --db URI [-f|--follow]
       geneva jobs wait   ID --db URI [-o FORMAT | --json]
       geneva jobs cancel ID --db URI [-o FORMAT | --json]
list: the backfill jobs of a database, newest first; --watch then prints
each job again when its status or progress changes, until interrupted.
show: one job.
logs: its driver's events and its workers' output, tagged by worker or Ray
slot; with -f, follows it until the job ends, and exits 1 unless it ended
DONE. wait: until the job ends, then prints its status; exits 0 if it
ended DONE, 1 otherwise. cancel: the owning driver notices within a second
and keeps what it committed; a job whose driver is gone is marked
CANCELLED at once; a job already finished is an error.
-o json (or --json) prints the records as JSON, -o yaml as YAML, keys
sorted in both; -o wide adds to list COMPUTED, FAILED, TASKS, RUNNER,
VERSIONS and ERROR (--watch takes it too).
]]

local job = require "geneva.backfill.job"
local time = require "geneva.time"

-- committed/total (job.progress)
local function progress(rec) return ("%d/%d"):format(job.progress(rec)) end

-- how long the job ran, or has been running
local function duration(rec)
  if job.FINAL[rec.status] then
    return output.duration(rec.seconds or output.seconds_between(rec.started_at, rec.finished_at))
  end
  return output.duration(rec.started_at and output.seconds_between(rec.started_at, time.iso8601()))
end

local HEADERS = { "ID", "STATUS", "TABLE", "COLUMN", "PROGRESS", "AGE", "DURATION" }
local WIDE = { "COMPUTED", "FAILED", "TASKS", "RUNNER", "VERSIONS", "ERROR" }

local function headers(wide)
  if not wide then return HEADERS end
  return table.move(WIDE, 1, #WIDE, #HEADERS + 1, table.move(HEADERS, 1, #HEADERS, 1, {}))
end

local function runner_text(rec)
  local r = rec.runner
  if type(r) ~= "table" then return "-" end
  return tostring(r.type or "?") .. (math.type(r.workers) == "integer" and ("/" .. r.workers) or "")
end

local function row(rec, wide)
  local out = { rec.id, rec.status, rec.table or "", rec.column or "", progress(rec),
                output.age(rec.created_at), duration(rec) }
  if wide then
    local r, t = rec.rows or {}, rec.tasks or {}
    local v = rec.version_start and ("%s->%s"):format(rec.version_start, rec.version_end or "?") or "-"
    for _, cell in ipairs({ tostring(r.computed or 0), tostring(r.failed or 0),
                            ("%d/%d"):format(t.done or 0, t.planned or 0), runner_text(rec), v,
                            rec.error and tostring(rec.error.code) or "" }) do
      out[#out + 1] = cell
    end
  end
  return out
end

local function list(db, opts, status)
  local recs = job.list(db, { table = opts.table, status = status })
  local machine = args.machine(opts)
  if machine then
    io.stdout:write(output.document(require("geneva.json").array(recs), machine))
    return
  end
  if #recs == 0 then io.stderr:write("No jobs found.\n") return end
  local wide = opts.format == "wide"
  local rows = {}
  for i, rec in ipairs(recs) do rows[i] = row(rec, wide) end
  io.stdout:write(output.table(headers(wide), rows))
end

-- --watch, as kubectl's: the list, then a line for each job whose status or
-- progress changed (oldest first), every second until interrupted
local function watch(db, opts, status)
  local shown, header = {}, true
  local wide = opts.format == "wide"
  while true do
    local recs, rows = job.list(db, { table = opts.table, status = status }), {}
    for i = #recs, 1, -1 do
      local r = row(recs[i], wide)
      local key = r[2] .. " " .. r[5]
      if shown[r[1]] ~= key then
        shown[r[1]] = key
        rows[#rows + 1] = r
      end
    end
    if #rows > 0 then
      io.stdout:write(output.table(headers(wide), rows, not header))
      io.stdout:flush()
      header = false
    end
    if not time.sleep(1) then errors.raise("interrupted", "interrupted") end
  end
end

-- `show` without --json: the fields a person asks about, one per line
local function describe(rec)
  local r, t = rec.rows or {}, rec.tasks or {}
  local lines = {}
  local function add(k, v) if v ~= nil and v ~= "" then lines[#lines + 1] = ("%-12s %s"):format(k .. ":", v) end end
  add("ID", rec.id)
  add("Status", rec.status)
  add("Table", rec.table)
  add("Column", rec.column)
  add("UDF version", rec.udf_version and rec.udf_version:sub(1, 12))
  add("Progress", ("%s rows committed (%d computed, %d failed%s), %d/%d tasks"):format(progress(rec),
    r.computed or 0, r.failed or 0,
    (r.recovered or 0) > 0 and (", %d recovered from checkpoints"):format(r.recovered) or "",
    t.done or 0, t.planned or 0))
  if rec.options and rec.options.where then add("Where", rec.options.where) end
  add("Created", rec.created_at and ("%s (%s ago)"):format(rec.created_at, output.age(rec.created_at)))
  add("Started", rec.started_at)
  add("Finished", rec.finished_at)
  add("Duration", duration(rec))
  if rec.version_start then
    local n = rec.commits or 0
    add("Versions", ("%s -> %s (%d commit%s)"):format(rec.version_start, rec.version_end or "?", n, n == 1 and "" or "s"))
  end
  if rec.runner then
    add("Runner", tostring(rec.runner.type) .. (rec.runner.workers and (", %d workers"):format(rec.runner.workers) or ""))
  end
  if rec.error then add("Error", ("%s: %s"):format(rec.error.code, rec.error.message)) end
  if r.failed_rowids then
    local frags = {}
    for f in pairs(r.failed_rowids) do frags[#frags + 1] = f end
    table.sort(frags, function(a, b) return (tonumber(a) or 0) < (tonumber(b) or 0) end)
    for _, f in ipairs(frags) do
      local ids = r.failed_rowids[f]
      add("Failed rows", ("fragment %s: %s%s"):format(f, table.concat(ids, ", ", 1, math.min(#ids, 10)),
        #ids > 10 and (", ... %d more"):format(#ids - 10) or ""))
    end
  end
  if rec.events and #rec.events > 0 then
    lines[#lines + 1] = "Events:"
    for _, ev in ipairs(rec.events) do lines[#lines + 1] = "  " .. ev end
  end
  return table.concat(lines, "\n") .. "\n"
end

local function load(db, id)
  local rec, err = job.load(db, id)
  if not rec then error(err, 0) end
  return rec
end

-- waits for the job's end; interrupted on a signal
local function wait(db, id)
  while true do
    local rec = load(db, id)   -- reads a RUNNING job whose driver died as FAILED
    if job.FINAL[rec.status] then return rec end
    if not time.sleep(0.2) then errors.raise("interrupted", "interrupted while waiting for job %s", id) end
  end
end

local function cancel(db, id)
  local rec = load(db, id)
  -- a job whose driver is gone reads FAILED (abandoned): cancel records its end
  if job.FINAL[rec.status] and not (rec.error and rec.error.code == "abandoned") then
    errors.throw("conflict", ("job %s is already finished (%s)"):format(id, rec.status), { job_id = id })
  end
  rec = job.request_cancel(db, id)
  return job.load(db, id) or rec
end

function M.main(argv)
  local opts, pos = {}, {}
  return args.run(usage, function() return args.machine(opts) end, function()
    opts, pos = args.parse(argv, args.with_output{ db = "value", json = "flag", help = "flag",
                                   table = "value", status = "value",
                                   follow = "flag", ["-f"] = "follow",
                                   watch = "flag", ["-w"] = "watch" })
    if opts.help then io.stdout:write(usage) return 0 end
    -- the whole command line is checked before the database: bad syntax is 2
    local verb = args.action(pos, { "list", "show", "logs", "wait", "cancel" }, "job ID")
    args.format(opts)
    if opts.format and verb == "logs" then
      error({ usage = "logs prints the log as it is: it takes no -o or --json" }, 0)
    end
    local status = opts.status and opts.status:upper()
    if status and not job.STATUSES[status] then
      error({ usage = ("unknown status '%s'"):format(opts.status) }, 0)
    end
    if opts.watch and (verb ~= "list" or args.machine(opts)) then
      error({ usage = "--watch goes with list, without --json or -o json|yaml" }, 0)
    end
    local db = args.database(opts)
    if verb == "list" and opts.watch then
      watch(db, opts, status)
    elseif verb == "list" then
      list(db, opts, status)
    elseif verb == "logs" then
      local function out(l) io.stdout:write(l, "\n") io.stdout:flush() end
      if opts.follow then
        local rec = job.follow_log(db, pos[2], out)
        return rec.status == "DONE" and 0 or 1
      end
      local rec = load(db, pos[2])
      local lines = job.read_log(db, pos[2])
      for _, l in ipairs(lines or rec.events or {}) do out(l) end
    else
      local rec
      if verb == "show" then rec = load(db, pos[2])
      elseif verb == "wait" then rec = wait(db, pos[2])
      else rec = cancel(db, pos[2]) end
      if args.machine(opts) then
        io.stdout:write(output.document(rec, args.machine(opts), true))
      elseif verb == "show" then
        io.stdout:write(describe(rec))
      elseif verb == "wait" then
        io.stdout:write(("%s %s%s\n"):format(rec.id, rec.status,
          rec.error and (": %s: %s"):format(rec.error.code, rec.error.message) or ""))
      else
        io.stdout:write(("cancel requested for %s (now %s)\n"):format(rec.id, rec.status))
      end
      if verb == "wait" then return rec.status == "DONE" and 0 or 1 end
    end
    return 0
  end)
end

return M
