-- geneva reap [--db URI [--grace SECONDS]] [--list] [--retained] [--force] [-o json|yaml | --json]
local args = require "geneva.cli.args"
local json = require "geneva.json"
local output = require "geneva.cli.output"

local M = {}

local usage = [==[
usage: geneva reap [--db URI [--grace SECONDS]] [--list] [--retained] [--force] [-o json|yaml | --json]
Tears down what drivers that died (kill -9, a lost machine) left behind:
worker processes, temp dirs, jobs, Ray jobs and RayClusters, from the
leases they journalled; with --db, also RayClusters with geneva's label
whose owner on this host is gone or whose TTL has passed.
Local resources are torn down only from this user's own lease journal and
only once checked to be geneva's; what it refuses is said on stderr.
With --db, also removes each table's orphan files: data files no version
references (commits a crash cut short, failed folds) and killed workers'
temp files, once older than --grace (default 3600 s: younger ones may
belong to a commit in flight). Versions stay: see geneva tables cleanup.
  --db URI     also the leases in that database (default: this user's only)
  --grace S    the age in seconds below which an orphan file is left alone
  --list       show the leases and their owners, change nothing; with
               --db, also the RayClusters with geneva's label that its
               kuberay clusters' namespaces hold (journal "label")
  --retained   also tear down resources kept with on_exit = "retain"
  --force      also act on leases of other hosts (shared storage): only
               their remote resources, never local pids or paths
  -o FORMAT    json (or --json) or yaml: one document, keys sorted
]==]

-- Each table's orphan files (storage.cleanup without removing versions)
-- -> how many went; a table that fails adds a line to failed
local function remove_orphans(uri, grace, failed)
  local storage = require "geneva.store.versions"
  local db = require("geneva.db").connect(uri)
  local n = 0
  for _, name in ipairs(db:table_names()) do
    local ok, r = pcall(storage.cleanup, db:table_dir(name), { grace = grace })
    if ok then n = n + r.files_removed
    else failed[#failed + 1] = ("orphan files of table %s: %s"):format(name, tostring(r)) end
  end
  return n
end

-- The RayClusters with our label that the db's kuberay clusters can see,
-- as --list rows: id = the lease its annotations name, state "expired" or
-- "active", owner as for leases, reap = why reap would delete it (or nil).
local function labelled(reap, db, uid, problems)
  local rows = {}
  for _, c in ipairs(reap.kuberay_specs(db, uid, problems)) do
    local ok, list = pcall(require("geneva.runner.kuberay").list_labelled, c.spec)
    if not ok then
      problems[#problems + 1] = ("cluster %s: cannot list its RayClusters: %s"):format(reap.clean(c.name), reap.clean(tostring(list)))
    else
      for _, e in ipairs(list) do
        rows[#rows + 1] = { id = e.lease or "-", kind = "raycluster", name = e.namespace .. "/" .. e.name,
                            state = e.expired and "expired" or "active", owner = e.owner_state,
                            journal = "label", reap = e.reap, cluster = c.name,
                            info = { namespace = e.namespace, name = e.name, owner = e.owner,
                                     expires_at = e.expires and os.date("!%Y-%m-%dT%H:%M:%SZ", e.expires) or nil } }
      end
    end
  end
  return rows
end

-- --list as a table, kubectl's way; -o wide adds who owns each and when
-- it was made. Lease fields are untrusted: cleaned of escape sequences.
local function list_headers(wide)
  local h = { "KIND", "NAME", "STATE", "OWNER", "JOURNAL", "REAP" }
  if wide then
    for _, x in ipairs({ "ID", "HOST", "PID", "AGE" }) do h[#h + 1] = x end
  end
  return h
end

local function list_rows(reap, rows, wide)
  local c, out = reap.clean, {}
  for i, r in ipairs(rows) do
    local o = type(r.info) == "table" and type(r.info.owner) == "table" and r.info.owner or r.holder or {}
    local cells = { c(r.kind or "?"), c(r.name or ""), c(r.state or "?"), c(tostring(r.owner or "?")),
                    c(r.journal or "?"), r.reap and c(r.reap) or "-" }
    if wide then
      for _, x in ipairs({ c(r.id or "-"), c(tostring(o.hostname or "-")), c(tostring(o.pid or "-")),
                           r.created_at and output.age(os.date("!%Y-%m-%dT%H:%M:%SZ", r.created_at)) or "-" }) do
        cells[#cells + 1] = x
      end
    end
    out[i] = cells
  end
  return out
end

function M.main(argv)
  local opts = {}
  return args.run(usage, function() return args.machine(opts) end, function()
    local pos
    opts, pos = args.parse(argv, args.with_output{ db = "value", list = "flag", retained = "flag",
                                   force = "flag", json = "flag", help = "flag", grace = "value" })
    if opts.help then io.stdout:write(usage) return 0 end
    args.format(opts)
    local machine = args.machine(opts)
    if #pos > 0 then error({ usage = ("unexpected argument '%s'"):format(pos[1]) }, 0) end
    local grace = opts.grace and tonumber(opts.grace)
    if opts.grace and not (grace and grace >= 0) then
      error({ usage = ("--grace: expected seconds >= 0, got '%s'"):format(opts.grace) }, 0)
    end
    if opts.grace and not opts.db then error({ usage = "--grace goes with --db" }, 0) end
    local reap = require "geneva.context.reap"
    local uri = opts.db
    if opts.db then opts.db = args.database(opts) end     -- an s3:// db: its mirror
    if opts.list then
      local rows = {}
      local entries, refused, who = reap.list{ db = opts.db }
      for _, e in ipairs(entries) do
        rows[#rows + 1] = { id = e.lease.id, kind = e.lease.kind, name = e.lease.name,
                            state = e.lease.state, owner = e.owner, info = e.lease.info,
                            journal = e.source, holder = e.lease.owner,
                            created_at = math.type(e.lease.created_at) == "integer" and e.lease.created_at or nil }
      end
      -- with --db, the RayClusters with our label in the namespaces of its
      -- kuberay clusters (journal "label"): what reap would delete says why
      local problems = {}
      if opts.db then
        for _, r in ipairs(labelled(reap, opts.db, who.uid, problems)) do rows[#rows + 1] = r end
      end
      if machine then
        io.stdout:write(output.document(json.array(rows), machine))
      elseif #rows == 0 then
        io.stderr:write("No leases found.\n")
      else
        io.stdout:write(output.table(list_headers(opts.format == "wide"), list_rows(reap, rows, opts.format == "wide")))
      end
      for _, msg in ipairs(refused) do io.stderr:write("geneva: unreadable ", msg, "\n") end
      for _, msg in ipairs(problems) do io.stderr:write("geneva: ", msg, "\n") end
      return 0
    end
    local res = reap.run{ db = opts.db, retained = opts.retained, force = opts.force }
    local orphans = uri and remove_orphans(uri, grace, res.failed) or 0
    for _, r in ipairs(res.refused) do io.stderr:write("geneva: refused to reap ", r, "\n") end
    if machine then
      io.stdout:write(output.document({ reaped = res.reaped, skipped = res.skipped,
                                        refused = json.array(res.refused),
                                        failed = json.array(res.failed),
                                        orphan_files = opts.db and orphans or nil }, machine))
    else
      for _, item in ipairs(res.items) do io.stdout:write("reaped ", item, "\n") end
      for _, f in ipairs(res.failed) do io.stderr:write("geneva: cannot reap ", f, "\n") end
      io.stdout:write(("%d reaped, %d skipped, %d refused%s\n"):format(res.reaped, res.skipped, #res.refused,
        opts.db and (", %d orphan files removed"):format(orphans) or ""))
    end
    return #res.failed == 0 and 0 or 1
  end)
end

return M
