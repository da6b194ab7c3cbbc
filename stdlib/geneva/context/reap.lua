-- geneva.context.reap: tear down what crashed drivers left (README, Teardown).
--
-- Leases live in two journals: `<db>/_geneva/leases` (shared: whoever can
-- write to the db can write there, so its files are untrusted input) and
-- this user's state directory, `<state>/leases` (trusted: ours alone, and
-- how `geneva reap` without --db finds them). The ledger writes every lease
-- to both under one file name. A lease's owner is (hostname, boot id, pid,
-- start time). Reap runs on every context entry, so a lease file must never
-- be able to make it hurt anything that geneva did not make.
--
-- The rules, in order, for each lease file name found in either journal:
--
--  1. The lease is read from the trusted journal when it is there (the db's
--     copy is then only a hint); else from the db's journal. The trusted
--     journal counts as such only if it is a real directory owned by us
--     and not writable by others; the db's is not read through a symlink.
--     A file that is not a small regular file (no symlink, FIFO, device),
--     not JSON, or not shaped like a lease (check_shape) is refused and
--     left in place.
--  2. Skipped (left alone): a live owner; a retained lease without
--     --retained; an owner on another host without --force.
--  3. Local resources (kind proc, tmpdir) are torn down only when all hold:
--       a. the lease is in the trusted journal: that copy is what is acted
--          on. A lease only in the db's journal is refused (whatever it
--          names); a db copy whose kind, info, owner or state differ from
--          the trusted one is reported and ignored;
--       b. its owner was on this host (even with --force, another host's
--          pids and paths mean nothing here);
--       c. the resource verifies as geneva's and this user's, now:
--          tmpdir: info.path is absolute, has no "." or ".." segment, its
--            directory is this user's TMPDIR (or /tmp) as set or as resolved
--            (no other path through symlinks), its name is one of
--            reap.TMP_PREFIXES followed by the 6 characters mkdtemp makes,
--            and lstat says a directory (not a symlink) owned by our uid.
--            What is removed is that direct child of the resolved TMPDIR,
--            never following a link.
--          proc: /proc/PID's start time equals the lease's (else it is gone:
--            nothing to kill); its real, effective and saved uids are ours;
--            /proc/PID/exe is the lease's exe; its command line is
--            `<exe> worker ...`. It is signalled through a pidfd (TERM, then
--            KILL), its process group only when the lease's pgid and its
--            real one both equal its pid. A lease of an earlier boot names
--            no live process.
--  4. Remote resources (kinds with where = "remote": Ray jobs, RayClusters)
--     are torn down only when the kind's verify(info) finds our
--     labels/metadata on the remote object (the cluster's answer, not the
--     lease, decides). They may come from either journal, and from other
--     hosts with --force; a lease whose credentials come from a kubeconfig
--     it names (a RayCluster, a Ray job behind the service proxy) is
--     followed only from this user's journal.
--  5. Job leases name their job's record: with --db, a record its dead
--     driver left RUNNING is written FAILED/abandoned (job.finalize_abandoned,
--     which trusts the record's owner, not the lease). With --force, an
--     owner on another host counts as dead only once no job record of its
--     has moved for job.STALE_DRIVER seconds (GENEVA_DRIVER_STALE).
--  6. Unknown kinds are refused. A lease is removed (from both journals)
--     only once its teardown succeeded or its resource is verifiably gone;
--     a refused or failed one stays, for `geneva reap --list`.
--
-- Every refusal is reported (result.refused, one line each, saying why).
--
-- A kind is {where = "local" | "remote" | "none", verify = fn, teardown = fn}:
-- verify(info, ctx) -> "gone" | "present", target | nil, why; teardown(target)
-- -> true | false, err. ctx: {lease =, same_boot = bool, uid = our uid,
-- trusted = the lease comes from this user's journal}.
local fs = require "geneva.fs"
local backend = require "geneva.store.backend"
local json = require "geneva.json"
local proc = require "geneva.proc"

local reap = {}

-- The prefixes of the temp dirs geneva leases (fs.tmpdir callers that
-- reserve a "tmpdir" lease): the manifest package and the workers'
-- heartbeat files. A new leased temp dir adds its prefix here.
reap.TMP_PREFIXES = { "geneva-pkg-", "geneva-hb-" }

local MAX_LEASE_BYTES = 64 * 1024

-- Printable and bounded: refusals quote untrusted strings to a terminal.
local function clean(s) return require("geneva.errors").clean(s, 200) end
reap.clean = clean

-- {====== Who we are

-- Real, effective, saved and fs uids of a process ("self" or a pid), from
-- /proc/PID/status; nil when unreadable.
local function uids(pid)
  local f = io.open("/proc/" .. pid .. "/status", "rb")
  if not f then return nil end
  local text = f:read(16384) or ""
  f:close()
  local r, e, s, fsu = text:match("\nUid:%s+(%d+)%s+(%d+)%s+(%d+)%s+(%d+)")
  if not r then return nil end
  return { math.tointeger(tonumber(r)), math.tointeger(tonumber(e)),
           math.tointeger(tonumber(s)), math.tointeger(tonumber(fsu)) }
end

-- argv of a process from /proc/PID/cmdline (nil when unreadable)
local function cmdline(pid)
  local f = io.open("/proc/" .. pid .. "/cmdline", "rb")
  if not f then return nil end
  local text = f:read(65536) or ""
  f:close()
  local argv = {}
  for arg in text:gmatch("([^%z]*)%z") do argv[#argv + 1] = arg end
  return argv
end

-- This user's TMPDIR as fs.tmpdir picks it (no trailing slash), and its
-- realpath
local function tmp_base()
  local base = os.getenv("TMPDIR")
  if not base or base == "" then base = "/tmp" end
  local raw = base:gsub("(.)/+$", "%1")
  return fs.realpath(base), raw
end

-- }======

-- {====== Kinds

local kinds = {}

local function is_int(v) return math.type(v) == "integer" end
local function is_pid(v) return is_int(v) and v > 0 and v <= 0x7fffffff end

local function verify_proc(info, ctx)
  if info.pid == nil then return "gone" end          -- reserved, never started
  if not is_pid(info.pid) or info.pid == 1 then return nil, "pid is not a process id" end
  if not ctx.same_boot then return "gone" end        -- an earlier boot's process
  if not is_int(info.start_time) then return nil, "no start time recorded" end
  if type(info.exe) ~= "string" or info.exe:sub(1, 1) ~= "/" then
    return nil, "no executable recorded"
  end
  if info.pgid ~= nil and not is_int(info.pgid) then return nil, "pgid is not a number" end
  local pi = proc.info(info.pid)
  if not pi or pi.state == "Z" or pi.state == "X" or pi.start_time ~= info.start_time then
    return "gone"                                     -- exited, or the pid is another's now
  end
  local u = uids(info.pid)
  if not u or u[1] ~= ctx.uid or u[2] ~= ctx.uid or u[3] ~= ctx.uid then
    return nil, "not a geneva worker of this user (another user's process)"
  end
  local argv = cmdline(info.pid)
  if pi.exe == nil or (pi.exe ~= info.exe and pi.exe ~= info.exe .. " (deleted)")
     or not argv or argv[1] ~= info.exe or argv[2] ~= "worker" then
    return nil, ("not a geneva worker of this user (runs %s)"):format(clean(pi.exe or pi.name or "?"))
  end
  local group = info.pgid == info.pid and pi.pgid == info.pid
  return "present", { pid = info.pid, start_time = info.start_time, group = group }
end

local function kill_proc(t)
  local time = require "geneva.time"
  for _, sig in ipairs({ "TERM", "KILL" }) do
    local ok, err, code = proc.kill_if(t.pid, t.start_time, sig, t.group)
    if not ok then
      if code == "ESRCH" then return true end
      return false, err
    end
    for _ = 1, sig == "TERM" and 40 or 100 do
      if not proc.alive(t.pid, t.start_time) then return true end
      time.sleep(0.05)
    end
  end
  return false, ("process %d survived SIGKILL"):format(t.pid)
end

kinds.proc = { where = "local", verify = verify_proc, teardown = kill_proc }

local function verify_tmpdir(info, ctx)
  local path = info.path
  if path == nil then return "gone" end              -- reserved, never created
  if type(path) ~= "string" then return nil, "path is not a string" end
  if path:find("[%c\127]") then return nil, "path holds control characters" end
  if path:sub(1, 1) ~= "/" then return nil, "not an absolute path" end
  for seg in path:gmatch("[^/]+") do
    if seg == "." or seg == ".." then return nil, "path holds '.' or '..'" end
  end
  local parent, name = path:match("^(.*)/([^/]+)$")
  if not name then return nil, "not a directory path" end
  local ours = false
  for _, prefix in ipairs(reap.TMP_PREFIXES) do
    if name:sub(1, #prefix) == prefix and name:sub(#prefix + 1):match("^%w%w%w%w%w%w$") then
      ours = true
    end
  end
  if not ours then return nil, "not a geneva temp dir (its name has no geneva prefix)" end
  -- the parent must be TMPDIR as written or resolved: no other path to it
  -- through symlinks
  local base, raw = tmp_base()
  if parent == "" then parent = "/" end
  if not base or (parent ~= raw and parent ~= base) or fs.realpath(parent) ~= base then
    return nil, ("not directly in this user's TMPDIR (%s)"):format(clean(base or "?"))
  end
  local target = base .. (base:sub(-1) == "/" and "" or "/") .. name
  local st, _, code = fs.stat(target, { follow = false })
  if not st then
    if code == "ENOENT" then return "gone" end
    return nil, "cannot stat it"
  end
  if st.type == "link" then return nil, "a symlink, not a directory" end
  if st.type ~= "dir" then return nil, "not a directory" end
  if st.uid ~= ctx.uid then return nil, ("owned by uid %d, not by this user"):format(st.uid) end
  return "present", target
end

local function remove_tmpdir(target)
  local ok, err, code = fs.remove_tree(target)        -- never follows links
  if not ok and code ~= "ENOENT" then return false, err end
  return true
end

kinds.tmpdir = { where = "local", verify = verify_tmpdir, teardown = remove_tmpdir }

-- the record reads as abandoned once its owner is gone: nothing to tear down
-- A job lease names its record (lease.name = the job id): with a db, a
-- record its dead driver left RUNNING is finalised FAILED/abandoned. The
-- record's own owner decides (job.finalize_abandoned), never the lease.
kinds.job = { where = "none",
  verify = function(_, ctx)
    if not ctx.db then return "gone" end
    return "present", { db = ctx.db, id = ctx.lease.name, force = ctx.force }
  end,
  teardown = function(t)
    require("geneva.backfill.job").finalize_abandoned(t.db, t.id, { force = t.force })
    return true
  end }

-- Ray jobs (geneva.runner.ray): ours only with this lease's metadata
kinds.ray_job = { where = "remote",
  verify = function(info, ctx) return require("geneva.runner.ray").reap_verify(info, ctx) end,
  teardown = function(t) return require("geneva.runner.ray").reap_teardown(t) end }

-- RayClusters (geneva.runner.kuberay): ours only with this lease's annotations
kinds.raycluster = { where = "remote",
  verify = function(info, ctx) return require("geneva.runner.kuberay").reap_verify(info, ctx) end,
  teardown = function(t) return require("geneva.runner.kuberay").reap_teardown(t) end }

-- Remote kinds register here: {where = "remote", verify = fn, teardown = fn}.
-- verify(info, ctx) must ask the remote side (Ray's job API, the Kubernetes
-- API) and answer "present" only for an object carrying our labels/metadata
-- (e.g. the geneva job id and lease id we set at creation), "gone" when it
-- no longer exists, nil + why otherwise. The lease alone proves nothing.
reap.kinds = kinds

-- }======

-- {====== Reading leases

-- The lease's shape, checked before any field is used: nil, why if wrong.
local function check_shape(l)
  if type(l) ~= "table" or l[1] ~= nil or json.is_array(l) then return nil, "not a JSON object" end
  if type(l.id) ~= "string" then return nil, "id is not a string" end
  if type(l.kind) ~= "string" then return nil, "kind is not a string" end
  if l.name ~= nil and type(l.name) ~= "string" then return nil, "name is not a string" end
  if l.state ~= "active" and l.state ~= "retained" then return nil, "state is not active or retained" end
  if l.created_at ~= nil and type(l.created_at) ~= "number" then return nil, "created_at is not a number" end
  if type(l.info) ~= "table" then return nil, "info is not an object" end
  local o = l.owner
  if type(o) ~= "table" then return nil, "owner is not an object" end
  if type(o.hostname) ~= "string" then return nil, "owner.hostname is not a string" end
  if o.boot_id ~= nil and type(o.boot_id) ~= "string" then return nil, "owner.boot_id is not a string" end
  if not is_pid(o.pid) then return nil, "owner.pid is not a process id" end
  if not is_int(o.start_time) then return nil, "owner.start_time is not an integer" end
  return true
end

-- read_lease(path) -> lease | nil, why
local function read_lease(path)
  local text, err = backend.get(path, { max = MAX_LEASE_BYTES })
  if not text then return nil, err end
  local ok, lease = pcall(json.decode, text, { null_as_nil = true })
  if not ok or lease == nil then return nil, "not valid JSON" end
  local good, why = check_shape(lease)
  if not good then return nil, why end
  return lease
end

-- The trusted journal: this user's, created private.
reap.trusted_dir = require("geneva.ledger").user_journal

-- Is dir a directory of ours that nobody else can write? nil, why if not.
local function private_dir(dir, uid)
  local st = fs.stat(dir, { follow = false })
  if not st then return nil, "missing" end
  if st.type ~= "dir" then return nil, "not a directory (a symlink?)" end
  if st.uid ~= uid then return nil, "not owned by this user" end
  if st.mode & 2 ~= 0 then return nil, "writable by others" end
  return true
end

-- The journals: {dir, trusted} pairs. The db's is used only when neither
-- _geneva nor _geneva/leases is a symlink (a link could point reap at
-- any directory).
local function journals(db, uid, refused)
  local out = {}
  if db and backend.is_remote(db) then
    out[#out + 1] = { dir = db .. "/_geneva/leases", trusted = false }    -- objects: no links to follow
  elseif db then
    local g = fs.stat(db .. "/_geneva", { follow = false })
    local l = fs.stat(db .. "/_geneva/leases", { follow = false })
    if g and l then
      if g.type == "dir" and l.type == "dir" then
        out[#out + 1] = { dir = db .. "/_geneva/leases", trusted = false }
      else
        refused[#refused + 1] = ("journal %s/_geneva/leases: not a directory (a symlink?): not read")
          :format(clean(db))
      end
    end
  end
  local tdir = reap.trusted_dir()
  if tdir then
    local ok, why = private_dir(tdir, uid)
    if ok then
      out[#out + 1] = { dir = tdir, trusted = true }
    else
      refused[#refused + 1] = ("journal %s: %s: treated as untrusted"):format(clean(tdir), why)
      out[#out + 1] = { dir = tdir, trusted = false }
    end
  end
  return out
end

local function same(a, b)
  return json.canonical(a) == json.canonical(b)
end

-- The fields reap acts on must agree between the two copies.
local function copies_agree(t, d)
  return t.kind == d.kind and t.state == d.state and same(t.info, d.info) and same(t.owner, d.owner)
end

local function my_uid()
  local u = uids("self")
  return u and u[1]
end

-- reap.list{db=} -> array of entries {file, path, lease, owner, trusted,
-- hint_differs, source = "user" | "db" | "both"} (lease is the trusted copy
-- when there is one), and an array of refusals (unreadable leases).
function reap.list(opts)
  opts = opts or {}
  local me = proc.self()
  local uid = my_uid()
  local refused = {}
  local by_name, names, dirs = {}, {}, {}
  for _, j in ipairs(journals(opts.db, uid, refused)) do
    dirs[#dirs + 1] = j.dir
    for _, name in ipairs(backend.list(j.dir) or {}) do
      if name:match("%.json$") and name:sub(1, 1) ~= "." then
        local path = j.dir .. "/" .. name
        local e = by_name[name]
        if not e then
          e = { file = name, copies = {} }
          by_name[name] = e
          names[#names + 1] = name
        end
        local lease, why = read_lease(path)
        e.copies[#e.copies + 1] = { path = path, lease = lease, why = why, trusted = j.trusted }
      end
    end
  end
  table.sort(names)
  local out = {}
  for _, name in ipairs(names) do
    local e = by_name[name]
    local t, d
    for _, c in ipairs(e.copies) do
      if c.trusted then t = c else d = c end
    end
    local use = t or d
    if not use.lease then
      refused[#refused + 1] = ("lease %s: %s"):format(clean(use.path), clean(use.why))
    else
      local entry = { file = name, path = use.path, lease = use.lease, trusted = t ~= nil,
                      source = (t and d) and "both" or (t and "user" or "db"),
                      owner = require("geneva.ledger").owner_state(use.lease.owner) }
      entry.hint_differs = t and d and (not d.lease or not copies_agree(t.lease, d.lease)) or false
      out[#out + 1] = entry
    end
  end
  return out, refused, { me = me, uid = uid, dirs = dirs }
end

-- }======

local function describe(l)
  local what = ("%s %s"):format(clean(l.kind), clean(l.name or l.id))
  if l.kind == "proc" and is_int(l.info.pid) then
    what = what .. (" (pid %d)"):format(l.info.pid)
  elseif l.kind == "tmpdir" and type(l.info.path) == "string" then
    what = what .. (" (%s)"):format(clean(l.info.path))
  end
  return what
end

local function remove_everywhere(dirs, name)
  for _, d in ipairs(dirs) do backend.delete(d .. "/" .. name) end
end

-- Decides what to do with one entry: "skip", "refuse", why | "act"
local function decide(e, opts, me)
  local l = e.lease
  if l.state == "retained" and not opts.retained then return "skip" end
  if e.owner == "alive" then return "skip" end
  if e.owner == "other-host" and not opts.force then return "skip" end
  if e.owner == "other-host" and opts.alive_elsewhere and opts.alive_elsewhere(l.owner) then
    return "skip"      -- its driver still writes its job record: alive
  end
  local kind = kinds[l.kind]
  if not kind then return "refuse", "unknown kind" end
  if kind.where == "local" then
    if not e.trusted then
      return "refuse", "lease only in the db's journal, not in this user's: local resources are never torn down from it"
    end
    if l.owner.hostname ~= me.hostname then
      return "refuse", ("a local resource of host %s: never torn down from another host"):format(clean(l.owner.hostname))
    end
  end
  return "act"
end

--[[
reap.kuberay_specs(db, uid, refused) -> array of {name, spec}: the db's
kuberay clusters whose Kubernetes config reap may follow. A cluster record
is untrusted (a shared db): its kubeconfig (which may run an exec plugin)
is followed only when it is a file of this user's that only it can write;
the others add a line to refused.
]]
function reap.kuberay_specs(db, uid, refused)
  local out = {}
  local ok, clusters = pcall(require("geneva.context.cluster").list, { path = db, dir = db })
  for _, c in ipairs(ok and clusters or {}) do
    if type(c) == "table" and type(c.spec) == "table" and c.spec.type == "kuberay" then
      local kc = c.spec.kubeconfig
      local st = type(kc) == "string" and fs.stat(kc)
      if kc == nil or (st and st.type == "file" and st.uid == uid and st.mode & 18 == 0) then
        out[#out + 1] = { name = c.name, spec = c.spec }
      else
        refused[#refused + 1] = ("cluster %s: its kubeconfig %s is not a file of this user's that only it can write: not followed")
          :format(clean(c.name), clean(kc))
      end
    end
  end
  return out
end

-- reap.run{db=, force=, retained=, quiet=} -> {reaped = n, skipped = n,
-- refused = {msgs}, failed = {msgs}, items = {what}}
function reap.run(opts)
  opts = opts or {}
  local result = { reaped = 0, skipped = 0, refused = {}, failed = {}, items = {} }
  local all, refused, who = reap.list(opts)
  for _, r in ipairs(refused) do result.refused[#result.refused + 1] = r end
  local dirs = who.dirs
  local ctx = { uid = who.uid, db = opts.db, force = opts.force }
  if opts.force and opts.db then
    -- an owner on another host is alive while a job record of its moves
    local fresh
    opts = setmetatable({ alive_elsewhere = function(owner)
      if not fresh then
        fresh = {}
        local job = require "geneva.backfill.job"
        for _, rec in ipairs(job.list(opts.db)) do
          local age = job.heartbeat_age(rec)
          if not job.FINAL[rec.status] and type(rec.owner) == "table" and age and age < job.STALE_DRIVER then
            fresh[("%s/%s/%s"):format(rec.owner.hostname, rec.owner.boot_id, rec.owner.pid)] = true
          end
        end
      end
      return fresh[("%s/%s/%s"):format(owner.hostname, owner.boot_id, owner.pid)] == true
    end }, { __index = opts })
  end
  -- newest first, like a ledger scope closing
  table.sort(all, function(a, b)
    return (a.lease.created_at or 0) > (b.lease.created_at or 0)
  end)
  for _, e in ipairs(all) do
    local l = e.lease
    local what = describe(l)
    local act, why = decide(e, opts, who.me)
    if act == "act" and e.hint_differs then
      result.refused[#result.refused + 1] = ("%s: the db's copy differs from this user's journal (tampered?): ignored, the user's copy is used")
        :format(what)
    end
    if act == "skip" then
      result.skipped = result.skipped + 1
    elseif act == "refuse" then
      result.refused[#result.refused + 1] = ("%s: %s"):format(what, why)
    elseif who.uid == nil and kinds[l.kind].where == "local" then
      result.refused[#result.refused + 1] = ("%s: cannot tell this user's uid"):format(what)
    else
      local kind = kinds[l.kind]
      ctx.lease = l
      ctx.trusted = e.trusted      -- remote kinds follow secret references only from our own journal
      ctx.same_boot = l.owner.hostname == who.me.hostname and l.owner.boot_id == who.me.boot_id
      local okv, state, target = pcall(kind.verify, l.info, ctx)
      if not okv then
        result.failed[#result.failed + 1] = ("%s: %s"):format(what, clean(state))
      elseif state == nil then
        result.refused[#result.refused + 1] = ("%s: %s"):format(what, clean(target))
      else
        local ok, err = true, nil
        if state == "present" then
          local okt, r1, r2 = pcall(kind.teardown, target)
          if okt then ok, err = r1, r2 else ok, err = false, r1 end
        end
        if ok then
          remove_everywhere(dirs, e.file)
          result.reaped = result.reaped + 1
          result.items[#result.items + 1] = what
        else
          result.failed[#result.failed + 1] = ("%s: %s"):format(what, clean(err))
        end
      end
    end
  end
  -- RayClusters found by label (a dead owner of this host, a passed TTL):
  -- a lease file can be lost with its machine. Asked of each kuberay
  -- cluster the db defines (not on every context entry: that would call
  -- every Kubernetes API there).
  if opts.db and not opts.quiet then
    for _, c in ipairs(reap.kuberay_specs(opts.db, who.uid, result.refused)) do
      local rok, r = pcall(require("geneva.runner.kuberay").reap_expired, c.spec)
      if not rok then
        result.failed[#result.failed + 1] = ("cluster %s: our-labelled RayClusters: %s"):format(clean(c.name), clean(tostring(r)))
      else
        for _, n in ipairs(r.deleted) do
          result.reaped = result.reaped + 1
          result.items[#result.items + 1] = "RayCluster " .. n
        end
        for _, f in ipairs(r.failed) do result.failed[#result.failed + 1] = "RayCluster " .. f end
      end
    end
  end
  return result
end

return reap
