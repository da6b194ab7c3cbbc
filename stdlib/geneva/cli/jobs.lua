-- geneva jobs list|show|logs|cancel --db URI [--json]
local args = require "geneva.cli.args"
local json = require "geneva.json"

local M = {}

local usage = [[
usage: geneva jobs list   --db URI [--table T] [--status S] [--json]
       geneva jobs show   ID --db URI [--json]
       geneva jobs logs   ID --db URI [-f|--follow]
       geneva jobs cancel ID --db URI [--json]
Lists the backfill jobs of a database, shows one record, prints a job's
log (its driver's events and its workers' output, tagged by worker or Ray
slot; with -f, follows it until the job ends, and exits 1 unless it ended
DONE), or cancels a job: the owning driver notices within a second and
keeps what it committed; a job whose driver is gone is marked CANCELLED at
once.
]]

local function line(rec)
  local r = rec.rows or {}
  return ("%-26s %-9s %-12s %-12s %8s/%-8s %s"):format(rec.id, rec.status, rec.table or "",
    rec.column or "", tostring(r.committed or 0), tostring(r.planned or 0),
    rec.error and (rec.error.code .. ": " .. rec.error.message) or "")
end

function M.main(argv)
  local opts, pos = {}, {}
  return args.run(usage, function() return opts.json end, function()
    opts, pos = args.parse(argv, { db = "value", json = "flag", help = "flag",
                                   table = "value", status = "value",
                                   follow = "flag", ["-f"] = "follow" })
    if opts.help then io.stdout:write(usage) return 0 end
    -- the whole command line is checked before the database: bad syntax is 2
    local verb = args.action(pos, { "list", "show", "logs", "cancel" }, "job ID")
    local job = require "geneva.backfill.job"
    local status = opts.status and opts.status:upper()
    if status and not job.STATUSES[status] then
      error({ usage = ("unknown status '%s'"):format(opts.status) }, 0)
    end
    local db = args.database(opts)
    if verb == "list" then
      local recs = job.list(db, { table = opts.table, status = status })
      if opts.json then
        io.stdout:write(json.encode(json.array(recs), { invalid_utf8 = "replace" }), "\n")
      else
        for _, rec in ipairs(recs) do io.stdout:write(line(rec), "\n") end
      end
    elseif verb == "logs" then
      local function out(l) io.stdout:write(l, "\n") io.stdout:flush() end
      if opts.follow then
        local rec = job.follow_log(db, pos[2], out)
        return rec.status == "DONE" and 0 or 1
      end
      local rec, err = job.load(db, pos[2])
      if not rec then error(err, 0) end
      local lines = job.read_log(db, pos[2])
      for _, l in ipairs(lines or rec.events or {}) do out(l) end
    else
      local rec, err
      if verb == "show" then
        rec, err = job.load(db, pos[2])
        if not rec then error(err, 0) end
      else
        rec = job.request_cancel(db, pos[2])
        rec = job.load(db, pos[2]) or rec
      end
      if opts.json then
        io.stdout:write(json.encode(rec, { indent = 2, invalid_utf8 = "replace" }), "\n")
      elseif verb == "cancel" then
        io.stdout:write(("cancel requested for %s (now %s)\n"):format(rec.id, rec.status))
      else
        io.stdout:write(json.encode(rec, { indent = 2, invalid_utf8 = "replace" }), "\n")
      end
    end
    return 0
  end)
end

return M
