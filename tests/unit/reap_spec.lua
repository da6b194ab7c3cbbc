-- geneva reap: acts on leases whose owner is gone, on this host unless
-- --force, skipping retained ones unless --retained.
local fs = require "geneva.fs"
local json = require "geneva.json"
local proc = require "geneva.proc"
local child = require "child"

describe("geneva reap", function()
  local dir, leases, me
  before_each(function()
    dir = child.tmpdir()
    leases = dir .. "/_geneva/leases"
    assert(fs.mkdir_p(leases))
    me = proc.self()
  end)
  after_each(function() child.rmtree(dir) end)

  -- a lease for a temp dir, owned as described
  local function lease(name, owner, state)
    local victim = dir .. "/victim-" .. name
    assert(fs.mkdir_p(victim))
    assert(fs.write(leases .. "/" .. name .. ".json", json.encode({
      id = name, kind = "tmpdir", name = name, state = state or "active",
      info = { path = victim }, owner = owner, created_at = os.time() })))
    return victim
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

  local function reap(...)
    local argv = { child.bin, "reap", "--json", "--db", dir, ... }
    local r = proc.run{ argv = argv, env_add = { XDG_STATE_HOME = dir .. "/state" } }
    return r.code, json.decode(r.stdout)
  end

  it("tears down what a dead owner left and keeps what a live one holds", function()
    local gone = lease("gone", dead_owner())
    local mine = lease("mine", { hostname = me.hostname, boot_id = me.boot_id,
                                  pid = me.pid, start_time = me.start_time })
    local code, res = reap()
    assert.equals(0, code)
    assert.same({ 1, 1 }, { res.reaped, res.skipped })
    assert.is_false(fs.exists(gone))
    assert.is_true(fs.exists(mine))
    assert.is_false(fs.exists(leases .. "/gone.json"))
    assert.is_true(fs.exists(leases .. "/mine.json"))
  end)

  it("a recycled pid does not keep a lease alive", function()
    local owner = { hostname = me.hostname, boot_id = me.boot_id, pid = me.pid,
                    start_time = me.start_time - 1 }     -- same pid, another process
    local v = lease("recycled", owner)
    reap()
    assert.is_false(fs.exists(v))
  end)

  it("skips retained resources unless --retained", function()
    local v = lease("kept", dead_owner(), "retained")
    local _, res = reap()
    assert.equals(0, res.reaped)
    assert.is_true(fs.exists(v))
    _, res = reap("--retained")
    assert.equals(1, res.reaped)
    assert.is_false(fs.exists(v))
  end)

  it("leaves other hosts' leases alone unless --force", function()
    local v = lease("far", { hostname = "another-host", boot_id = "x", pid = 1, start_time = 1 })
    local _, res = reap()
    assert.equals(0, res.reaped)
    assert.is_true(fs.exists(v))
    _, res = reap("--force")
    assert.equals(1, res.reaped)
    assert.is_false(fs.exists(v))
  end)

  it("lists leases with their owners' state", function()
    lease("gone", dead_owner())
    local r = proc.run{ argv = { child.bin, "reap", "--list", "--json", "--db", dir },
                        env_add = { XDG_STATE_HOME = dir .. "/state" } }
    local rows = json.decode(r.stdout)
    assert.equals(1, #rows)
    assert.same({ "gone", "tmpdir", "dead" }, { rows[1].id, rows[1].kind, rows[1].owner })
  end)

  it("rejects bad usage with exit 2", function()
    assert.equals(2, proc.run{ argv = { child.bin, "reap", "--bogus" } }.code)
    assert.equals(2, proc.run{ argv = { child.bin, "reap", "extra" } }.code)
    assert.equals(0, proc.run{ argv = { child.bin, "reap", "--help" } }.code)
  end)
end)
