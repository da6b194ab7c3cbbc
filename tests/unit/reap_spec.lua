-- geneva reap: acts on leases whose owner is gone, on this host unless memcheck
-- --force, skipping retained ones unless --retained; and never on what
-- geneva did not make: a lease file is untrusted input (the db's journal is
-- writable by anyone who can write the db).
local fs = require "geneva.fs"
local json = require "geneva.json"
local proc = require "geneva.proc"
local child = require "child"

describe("geneva reap", function()
  local dir, leases, trusted, tmp, me
  before_each(function()
    dir = child.tmpdir()
    leases = dir .. "/_geneva/leases"            -- the db's journal (shared)
    trusted = dir .. "/state/geneva/leases"      -- this user's (XDG_STATE_HOME below)
    tmp = dir .. "/tmp"                          -- TMPDIR of the reap child
    assert(fs.mkdir_p(leases))
    assert(fs.mkdir_p(trusted))
    assert(fs.mkdir_p(tmp))
    me = proc.self()
  end)
  after_each(function() child.rmtree(dir) end)

  local env = function() return { XDG_STATE_HOME = dir .. "/state", TMPDIR = tmp } end

  -- writes a lease file into the db's journal ("db"), this user's ("user")
  -- or both, as the ledger does
  local function plant(where, name, lease)
    local text = type(lease) == "string" and lease or json.encode(lease)
    if where == "db" or where == "both" then assert(fs.write(leases .. "/" .. name .. ".json", text)) end
    if where == "user" or where == "both" then assert(fs.write(trusted .. "/" .. name .. ".json", text)) end
  end

  local function has_lease(name)
    return fs.exists(leases .. "/" .. name .. ".json") or fs.exists(trusted .. "/" .. name .. ".json")
  end

  -- a directory as fs.tmpdir("geneva-hb-") makes it, in the reap child's TMPDIR
  local n = 0
  local function geneva_tmp(prefix)
    n = n + 1
    local p = ("%s/%s%s"):format(tmp, prefix or "geneva-hb-", ("Ab%04d"):format(n))
    assert(fs.mkdir_p(p .. "/sub"))
    assert(fs.write(p .. "/sub/file", "x"))
    return p
  end

  local function tmpdir_lease(name, path, owner, state)
    return { id = name, kind = "tmpdir", name = name, state = state or "active",
             info = { path = path }, owner = owner, created_at = os.time() }
  end

  local function dead_owner()
    -- a process that existed and is gone: its pid and start time
    local p = assert(proc.spawn{ argv = { "true" } })
    local pid = p:pid()
    local info = proc.info(pid)
    p:wait(5); p:close()
    return { hostname = me.hostname, boot_id = me.boot_id, pid = pid,
             start_time = info and info.start_time or 1 }
  end

  local function live_owner()
    return { hostname = me.hostname, boot_id = me.boot_id, pid = me.pid, start_time = me.start_time }
  end

  local function reap(...)
    local code, out, err = child.cli({ "reap", "--json", "--db", dir, ... }, { env = env(), timeout = 60 })
    return code, json.decode(out), err
  end

  -- the refusal that mentions s (plain text), or nil
  local function refusal(res, s)
    for _, r in ipairs(res.refused or {}) do
      if r:find(s, 1, true) then return r end
    end
  end

  it("tears down what a dead owner left and keeps what a live one holds", function()
    local gone = geneva_tmp()
    local mine = geneva_tmp("geneva-pkg-")
    plant("both", "gone", tmpdir_lease("gone", gone, dead_owner()))
    plant("both", "mine", tmpdir_lease("mine", mine, live_owner()))
    local code, res = reap()
    assert.equals(0, code)
    assert.same({ 1, 1, {} }, { res.reaped, res.skipped, res.refused })
    assert.is_false(fs.exists(gone))
    assert.is_true(fs.exists(mine))
    assert.is_false(has_lease("gone"))
    assert.is_true(has_lease("mine"))
  end)

  it("reaps leases named as before the process tag (kind-pid-n) and as now (kind-tag-pid-n)", function()
    local owner = dead_owner()
    local old, new = geneva_tmp(), geneva_tmp()
    local old_id, new_id = ("tmpdir-%d-7"):format(owner.pid), ("tmpdir-0a1b2c3d-%d-7"):format(owner.pid)
    plant("both", old_id, tmpdir_lease(old_id, old, owner))
    plant("both", new_id, tmpdir_lease(new_id, new, owner))
    local code, res = reap()
    assert.equals(0, code)
    assert.same({ 2, 0, {} }, { res.reaped, res.skipped, res.refused })
    assert.is_false(fs.exists(old))
    assert.is_false(fs.exists(new))
    assert.is_false(has_lease(old_id))
    assert.is_false(has_lease(new_id))
  end)

  it("reaps temp dirs of a TMPDIR that is a symlink, named as fs.tmpdir names them", function()
    local real = geneva_tmp()
    assert(fs.symlink(tmp, dir .. "/tmplink"))
    local named = dir .. "/tmplink/" .. real:match("[^/]+$")
    plant("both", "via", tmpdir_lease("via", named, dead_owner()))
    local _, out = child.cli({ "reap", "--json", "--db", dir }, { timeout = 60,
      env = { XDG_STATE_HOME = dir .. "/state", TMPDIR = dir .. "/tmplink/" } })
    local res = json.decode(out)
    assert.same({ 1, {} }, { res.reaped, res.refused })
    assert.is_false(fs.exists(real))
    assert.equals("link", fs.stat(dir .. "/tmplink", { follow = false }).type)
  end)

  it("a recycled pid does not keep a lease alive", function()
    local owner = { hostname = me.hostname, boot_id = me.boot_id, pid = me.pid,
                    start_time = me.start_time - 1 }     -- same pid, another process
    local v = geneva_tmp()
    plant("both", "recycled", tmpdir_lease("recycled", v, owner))
    reap()
    assert.is_false(fs.exists(v))
  end)

  it("skips retained resources unless --retained", function()
    local v = geneva_tmp()
    plant("both", "kept", tmpdir_lease("kept", v, dead_owner(), "retained"))
    local _, res = reap()
    assert.equals(0, res.reaped)
    assert.is_true(fs.exists(v))
    _, res = reap("--retained")
    assert.equals(1, res.reaped)
    assert.is_false(fs.exists(v))
  end)

  it("leaves other hosts' leases alone; with --force, never their local paths", function()
    local far = { hostname = "another-host", boot_id = "x", pid = 1, start_time = 1 }
    local v = geneva_tmp()
    plant("both", "far", tmpdir_lease("far", v, far))
    plant("db", "farjob", { id = "farjob", kind = "job", name = "j", state = "active",
                            info = {}, owner = far, created_at = os.time() })
    local _, res = reap()
    assert.same({ 0, 2 }, { res.reaped, res.skipped })
    _, res = reap("--force")
    assert.equals(1, res.reaped)                 -- the job lease: no resource behind it
    assert.is_false(has_lease("farjob"))
    assert.is_true(fs.exists(v))                 -- a path of another host means nothing here
    assert.is_true(has_lease("far"))
    assert.truthy(refusal(res, "host another-host"))
  end)

  describe("job records a dead driver left RUNNING (F4)", function()
    local job = require "geneva.backfill.job"
    local function record(id, owner, updated_ago)
      local rec = { id = id, kind = "backfill", status = "RUNNING", table = "t", column = "c",
                    owner = owner, rows = { planned = 10, computed = 2, committed = 2, failed = 0 },
                    tasks = { planned = 1, done = 0 }, commits = 0, events = {}, options = {} }
      job.save(dir, rec)
      if updated_ago then     -- as if its driver last wrote it that long ago
        rec.updated_at = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() - updated_ago)
        assert(fs.write_atomic(dir .. "/_geneva/jobs/" .. id .. ".json", json.encode(rec)))
      end
    end
    local function on_disk(id)     -- the file itself, not job.load's reading of it
      return json.decode(assert(fs.read(dir .. "/_geneva/jobs/" .. id .. ".json")))
    end
    local function job_lease(id, owner)
      plant("both", "job-" .. id, { id = "job-" .. id, kind = "job", name = id, state = "active",
                                    info = {}, owner = owner, created_at = os.time() })
    end

    it("this host: reap writes it FAILED/abandoned and clears its cancel marker", function()
      local id = "20260101-000000-aaaaaaaa"
      local owner = dead_owner()
      record(id, owner)
      job_lease(id, owner)
      assert(fs.write(dir .. "/_geneva/jobs/" .. id .. ".cancel", "x"))
      assert.equals("RUNNING", on_disk(id).status)
      local code, res = reap()
      assert.equals(0, code)
      assert.equals(1, res.reaped)
      local rec = on_disk(id)
      assert.equals("FAILED", rec.status)
      assert.equals("abandoned", rec.error.code)
      assert.matches("is gone", rec.error.message)
      assert.is_false(fs.exists(dir .. "/_geneva/jobs/" .. id .. ".cancel"))
    end)

    it("a live driver's record is never touched, whatever its lease says", function()
      local id = "20260101-000000-bbbbbbbb"
      record(id, live_owner())
      job_lease(id, dead_owner())           -- a planted lease claiming a dead owner
      reap()
      assert.equals("RUNNING", on_disk(id).status)
    end)

    it("another host: only with --force, and only once its driver has been silent", function()
      local far = { hostname = "another-host", boot_id = "x", pid = 7, start_time = 1 }
      local quiet, busy = "20260101-000000-cccccccc", "20260101-000000-dddddddd"
      local busy_owner = { hostname = "another-host", boot_id = "x", pid = 8, start_time = 1 }
      record(quiet, far, 3600)
      record(busy, busy_owner)               -- written just now: its driver is alive
      job_lease(quiet, far)
      job_lease(busy, busy_owner)
      local v = geneva_tmp()
      plant("db", "busyray", { id = "busyray", kind = "ray_job", name = "r", state = "active",
        info = { address = "http://127.0.0.1:1", submission_id = "geneva-x-1-1", job = busy },
        owner = busy_owner, created_at = os.time() })
      reap()
      assert.equals("RUNNING", on_disk(quiet).status)
      local _, res = reap("--force")
      assert.equals("FAILED", on_disk(quiet).status)
      assert.equals("abandoned", on_disk(quiet).error.code)
      assert.matches("another%-host has not written its record", on_disk(quiet).error.message)
      assert.equals("RUNNING", on_disk(busy).status)
      assert.is_true(has_lease("job-" .. busy))
      assert.is_true(has_lease("busyray"))   -- its owner is alive: its Ray jobs are left alone
      assert.is_true(res.skipped >= 2)
      assert.is_true(fs.exists(v))
    end)
  end)

  it("lists leases with their owners' state and journal", function()
    plant("both", "gone", tmpdir_lease("gone", geneva_tmp(), dead_owner()))
    plant("db", "hint", tmpdir_lease("hint", geneva_tmp(), dead_owner()))
    local _, out = child.cli({ "reap", "--list", "--json", "--db", dir }, { env = env() })
    local rows = json.decode(out)
    assert.equals(2, #rows)
    assert.same({ "gone", "tmpdir", "dead", "both" }, { rows[1].id, rows[1].kind, rows[1].owner, rows[1].journal })
    assert.same({ "hint", "db" }, { rows[2].id, rows[2].journal })
    -- for people: a header row and columns, as kubectl prints; -o wide adds the holder
    local code, text = child.cli({ "reap", "--list", "--db", dir }, { env = env() })
    assert.equal(0, code)
    local lines = {}
    for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(3, #lines, text)
    assert.matches("^KIND%s+NAME%s+STATE%s+OWNER%s+JOURNAL%s+REAP$", lines[1])
    assert.matches("^tmpdir%s+%S+%s+active%s+dead%s+both%s+%-$", lines[2])
    local _, wide = child.cli({ "reap", "--list", "-o", "wide", "--db", dir }, { env = env() })
    assert.matches("^KIND%s+NAME%s+STATE%s+OWNER%s+JOURNAL%s+REAP%s+ID%s+HOST%s+PID%s+AGE\n", wide)
    assert.matches("\ntmpdir .* gone%s+%S+%s+%d+%s+%d+[smhd]\n", wide)
    -- nothing to list: said on stderr, nothing on stdout
    local empty = child.tmpdir()
    local ecode, eout, eerr = child.cli({ "reap", "--list" }, { env = { XDG_STATE_HOME = empty } })
    child.rmtree(empty)
    assert.same({ 0, "", "No leases found.\n" }, { ecode, eout, eerr })
  end)

  it("rejects bad usage with exit 2", function()
    assert.equals(2, (child.cli { "reap", "--bogus" }))
    assert.equals(2, (child.cli { "reap", "extra" }))
    assert.equals(0, (child.cli { "reap", "--help" }))
  end)

  it("--db removes each table's orphan files older than --grace, and no version", function()
    local geneva = require "geneva"
    local tbl = geneva.connect(dir):create_table("docs", { { id = 1 }, { id = 2 } })
    local data = tbl.dir .. "/data"
    local kept = fs.list(data)
    -- what a commit cut short by kill -9 leaves: a file no version references
    local old, young = data .. "/c-00000000000000aa.db", data .. "/c-00000000000000bb.db"
    assert(fs.write(old, "x"))
    assert(fs.write(young, "y"))
    assert(fs.utime(old, os.time() - 7200, os.time() - 7200))
    local code, res = reap()
    assert.equals(0, code)
    assert.equals(1, res.orphan_files)
    assert.is_false(fs.exists(old))
    assert.is_true(fs.exists(young))              -- may be a commit in flight
    code, res = reap("--grace", "0")
    assert.equals(0, code)
    assert.equals(1, res.orphan_files)
    table.sort(kept)
    local now = fs.list(data)
    table.sort(now)
    assert.same(kept, now)
    assert.equals(2, tbl:count_rows())
    assert.equals(2, (child.cli({ "reap", "--grace", "x", "--db", dir }, { env = env() })))
    assert.equals(2, (child.cli({ "reap", "--grace", "0" }, { env = env() })))
  end)

  -- a real `geneva worker --stdio` (it waits for its init line), and the
  -- lease its driver would have written
  local function start_worker()
    local exe = proc.exe()           -- the geneva running this spec, as the runner does
    local w = assert(proc.spawn{ argv = { exe, "worker", "--stdio" }, stdin = "pipe",
                                 stdout = "pipe", stderr = "pipe" })
    local info = assert(proc.info(w:pid()))
    return w, { pid = w:pid(), pgid = w:pgid(), start_time = info.start_time, exe = exe }
  end

  local function proc_lease(name, info, owner)
    return { id = name, kind = "proc", name = "worker", state = "active", info = info,
             owner = owner, created_at = os.time() }
  end

  it("kills a worker that a dead driver left", function()
    local w, info = start_worker()
    plant("both", "w", proc_lease("w", info, dead_owner()))
    local code, res = reap()
    assert.equals(0, code)
    if os.getenv("GENEVA_VALGRIND") == "1" then
      -- the worker runs as valgrind's memcheck (ctest traces children):
      -- not a geneva executable, so reap must leave it alone
      assert.same({ 0, 1 }, { res.reaped, #res.refused })
      assert.matches("not a geneva worker of this user %(runs .*valgrind", res.refused[1])
      w:close()
      return
    end
    assert.same({ 1, {} }, { res.reaped, res.refused })
    assert.is_false(proc.alive(info.pid, info.start_time))
    assert.truthy(w:wait(5))                      -- TERM: a worker exits 143
    w:close()
    assert.is_false(has_lease("w"))
  end)

  describe("with planted leases", function()
    local victim
    before_each(function()
      victim = dir .. "/victim"
      assert(fs.mkdir_p(victim .. "/precious"))
      assert(fs.write(victim .. "/precious/data", "keep me"))
    end)

    local function victim_intact()
      assert.equals("keep me", child.read(victim .. "/precious/data"))
    end

    it("never removes a directory outside TMPDIR", function()
      plant("db", "planted", tmpdir_lease("planted", victim, dead_owner()))
      -- even a lease in this user's own journal is checked before acting
      plant("both", "odd", tmpdir_lease("odd", victim, dead_owner()))
      local code, res, err = reap()
      assert.equals(0, code)
      victim_intact()
      assert.equals(0, res.reaped)
      assert.truthy(refusal(res, "tmpdir planted (" .. victim .. "): lease only in the db's journal"))
      assert.truthy(refusal(res, "tmpdir odd (" .. victim .. "): not a geneva temp dir"))
      assert.is_true(has_lease("planted"))
      assert.is_true(has_lease("odd"))
      assert.truthy(err:find("refused to reap tmpdir planted", 1, true))
    end)

    it("never removes what is in TMPDIR but not a geneva temp dir of this user", function()
      local owner = dead_owner()
      local plain = tmp .. "/someone-else"
      assert(fs.mkdir_p(plain))
      local link = tmp .. "/geneva-hb-Link01"          -- a symlink with our prefix
      assert(fs.symlink(victim, link))
      local nested = tmp .. "/sub/geneva-hb-Nest01"    -- not a direct child
      assert(fs.mkdir_p(nested))
      local outside = dir .. "/elsewhere/geneva-hb-Away01"
      assert(fs.mkdir_p(outside))
      local real = geneva_tmp()                        -- ours, but named through a link
      assert(fs.symlink(tmp, dir .. "/tmplink"))
      local linked = dir .. "/tmplink/" .. real:match("[^/]+$")
      local cases = {
        plain = { plain, "not a geneva temp dir" },
        link = { link, "a symlink" },
        dots = { tmp .. "/geneva-hb-Dots01/../../victim", "'..'" },
        dots2 = { tmp .. "/../victim/geneva-hb-Dots02", "'..'" },
        nested = { nested, "not directly in this user's TMPDIR" },
        outside = { outside, "not directly in this user's TMPDIR" },
        relative = { "geneva-hb-Rela01", "not an absolute path" },
        linked = { linked, "not directly in this user's TMPDIR" },
      }
      for name, c in pairs(cases) do plant("both", name, tmpdir_lease(name, c[1], owner)) end
      local code, res = reap()
      assert.equals(0, code)
      assert.equals(0, res.reaped)
      victim_intact()
      for name, c in pairs(cases) do
        local r = refusal(res, "tmpdir " .. name .. " (")
        assert(r, "no refusal for " .. name)
        assert(r:find(c[2], 1, true), r)
        assert.is_true(has_lease(name))
      end
      assert.is_true(fs.exists(plain))
      assert.is_true(fs.exists(nested))
      assert.is_true(fs.exists(outside))
      assert.is_true(fs.exists(real))
      assert.equals("link", fs.stat(link, { follow = false }).type)
    end)

    it("never signals a live process that is not a geneva worker of this user", function()
      local sleeper = assert(proc.spawn{ argv = { "sleep", "60" } })
      local pid = sleeper:pid()
      local si = assert(proc.info(pid))
      local owner = dead_owner()
      -- its real pid, group and start time; its real exe, or geneva's
      plant("db", "p1", proc_lease("p1", { pid = pid, pgid = pid, start_time = si.start_time, exe = si.exe }, owner))
      plant("both", "p2", proc_lease("p2", { pid = pid, pgid = pid, start_time = si.start_time, exe = si.exe }, owner))
      plant("both", "p3", proc_lease("p3", { pid = pid, pgid = pid, start_time = si.start_time,
                                             exe = proc.exe() }, owner))
      -- a genuine worker, named only by the db's journal
      local w, winfo = start_worker()
      plant("db", "p4", proc_lease("p4", winfo, owner))
      local code, res = reap()
      assert.equals(0, code)
      assert.equals(0, res.reaped)
      assert.is_true(proc.alive(pid, si.start_time))
      assert.is_true(proc.alive(winfo.pid, winfo.start_time))
      local mine = ("proc worker (pid %d): "):format(pid)
      assert.truthy(refusal(res, mine .. "lease only in the db's journal"))
      assert.equals(2, select(2, table.concat(res.refused, "\n")
        :gsub(mine:gsub("%p", "%%%0") .. "not a geneva worker of this user", "")))
      assert.truthy(refusal(res, ("proc worker (pid %d): lease only in the db's journal"):format(winfo.pid)))
      for _, name in ipairs({ "p1", "p2", "p3", "p4" }) do assert.is_true(has_lease(name)) end
      sleeper:close()
      w:close()
    end)

    it("refuses malformed leases without failing, and still reaps the good ones", function()
      local owner = dead_owner()
      local good = geneva_tmp()
      plant("both", "good", tmpdir_lease("good", good, owner))
      plant("db", "notjson", "{ this is not json")
      plant("db", "array", "[1, 2, 3]")
      local bad_info = tmpdir_lease("badinfo", victim, owner)
      bad_info.info = "x"
      plant("both", "badinfo", bad_info)
      local bad_pid = tmpdir_lease("badpid", victim, owner)
      bad_pid.owner = { hostname = me.hostname, boot_id = me.boot_id, pid = "1", start_time = 1 }
      plant("both", "badpid", bad_pid)
      local big_pid = tmpdir_lease("bigpid", victim, owner)
      big_pid.owner = { hostname = me.hostname, boot_id = me.boot_id, pid = 1 << 40, start_time = 1 }
      plant("both", "bigpid", big_pid)
      plant("both", "bigworker", proc_lease("bigworker", { pid = 1 << 40, start_time = 1, exe = "/x" }, owner))
      local no_owner = tmpdir_lease("noowner", victim, owner)
      no_owner.owner = nil
      plant("both", "noowner", no_owner)
      local bad_path = tmpdir_lease("badpath", victim, owner)
      bad_path.info.path = { victim }
      plant("both", "badpath", bad_path)
      local bad_proc = proc_lease("badproc", { pid = "123", start_time = {} }, owner)
      plant("both", "badproc", bad_proc)
      plant("db", "deep", ("["):rep(20000) .. ("]"):rep(20000))
      plant("db", "huge", json.encode(tmpdir_lease("huge", ("/x"):rep(50000), owner)))
      assert(fs.write(dir .. "/big", ("x"):rep(1 << 20)))
      assert(fs.symlink(dir .. "/big", leases .. "/link.json"))
      assert(os.execute("mkfifo " .. child.quote(leases .. "/fifo.json")))   -- must not hang reap
      local code, res = reap()
      assert.equals(0, code)
      victim_intact()
      assert.equals(1, res.reaped)
      assert.is_false(fs.exists(good))
      for _, s in ipairs({ "notjson.json: not valid JSON", "array.json: not a JSON object",
                           "badinfo.json: info is not an object", "badpid.json: owner.pid",
                           "noowner.json: owner is not an object", "fifo.json: read",
                           "link.json: read", "deep.json: not valid JSON",
                           "huge.json: read", "bigpid.json: owner.pid",
                           ("(pid %d): pid is not a process id"):format(1 << 40) }) do
        assert(refusal(res, s), "no refusal for " .. s .. " in " .. table.concat(res.refused, "\n"))
      end
      assert.truthy(refusal(res, "tmpdir badpath"))
      assert.truthy(refusal(res, "proc worker"))
    end)

    it("acts on this user's copy of a lease, not on a tampered db copy", function()
      local owner = dead_owner()
      local mine = geneva_tmp()
      plant("user", "t", tmpdir_lease("t", mine, owner))
      plant("db", "t", tmpdir_lease("t", victim, owner))
      local _, res = reap()
      assert.equals(1, res.reaped)
      assert.is_false(fs.exists(mine))
      victim_intact()
      assert.truthy(refusal(res, "differs from this user's journal"))
      assert.is_false(has_lease("t"))
    end)
  end)
end)
