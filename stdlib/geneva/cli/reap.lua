-- geneva reap [--db URI] [--list] [--retained] [--force] [-o json|yaml | --json]
local args = require "geneva.cli.args"
local json = require "geneva.json"
local output = require "geneva.cli.output"

local M = {}

local usage = [[
usage: geneva reap [--db URI] [--list] [--retained] [--force] [-o json|yaml | --json]
Tears down what drivers that died (kill -9, a lost machine) left behind:
worker processes, temp dirs, jobs, from the leases they journalled.
Local resources are torn down only from this user's own lease journal and
only once checked to be geneva's; what it refuses is said on stderr.
  --db URI     also the leases in that database (default: this user's only)
  --list       show the leases and their owners, change nothing
  --retained   also tear down resources kept with on_exit = "retain"
  --force      also act on leases of other hosts (shared storage): only
               their remote resources, never local pids or paths
  -o FORMAT    json (or --json) or yaml: one document, keys sorted
]]

function M.main(argv)
  local opts = {}
  return args.run(usage, function() return args.machine(opts) end, function()
    local pos
    opts, pos = args.parse(argv, args.with_output{ db = "value", list = "flag", retained = "flag",
                                   force = "flag", json = "flag", help = "flag" })
    if opts.help then io.stdout:write(usage) return 0 end
    args.format(opts)
    local machine = args.machine(opts)
    if #pos > 0 then error({ usage = ("unexpected argument '%s'"):format(pos[1]) }, 0) end
    local reap = require "geneva.context.reap"
    if opts.db then opts.db = args.database(opts) end     -- an s3:// db: its mirror
    if opts.list then
      local rows = {}
      local entries, refused = reap.list{ db = opts.db }
      for _, e in ipairs(entries) do
        rows[#rows + 1] = { id = e.lease.id, kind = e.lease.kind, name = e.lease.name,
                            state = e.lease.state, owner = e.owner, info = e.lease.info,
                            journal = e.source }
      end
      if machine then
        io.stdout:write(output.document(json.array(rows), machine))
      else
        local c = reap.clean     -- lease fields are untrusted: no escape sequences
        for _, r in ipairs(rows) do
          io.stdout:write(("%-32s %-8s %-9s owner %-10s %-4s %s\n"):format(c(r.id), c(r.kind), r.state, r.owner,
            r.journal, c(r.name or "")))
        end
      end
      for _, msg in ipairs(refused) do io.stderr:write("geneva: unreadable ", msg, "\n") end
      return 0
    end
    local res = reap.run{ db = opts.db, retained = opts.retained, force = opts.force }
    for _, r in ipairs(res.refused) do io.stderr:write("geneva: refused to reap ", r, "\n") end
    if machine then
      io.stdout:write(output.document({ reaped = res.reaped, skipped = res.skipped,
                                        refused = json.array(res.refused),
                                        failed = json.array(res.failed) }, machine))
    else
      for _, item in ipairs(res.items) do io.stdout:write("reaped ", item, "\n") end
      for _, f in ipairs(res.failed) do io.stderr:write("geneva: cannot reap ", f, "\n") end
      io.stdout:write(("%d reaped, %d skipped, %d refused\n"):format(res.reaped, res.skipped, #res.refused))
    end
    return #res.failed == 0 and 0 or 1
  end)
end

return M
