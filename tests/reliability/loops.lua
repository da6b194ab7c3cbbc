-- The harness's loops. Each run(k, env) starts its drivers on the run's
-- table, injects its fault at a random moment and returns
--   {hit = the fault landed while the job ran, outcomes = {"done"|...},
--    teardown = true when what a clean exit must leave (no process, temp
--    dir or lease) is checked now, before any reap, ray_left = Ray jobs or
--    pids left on the emulator}
-- env.D is the length of a clean run (seconds), measured first: faults land
-- uniformly within it. Recovery (reap, a resuming driver, cleanup) and the
-- counting are the harness's.
local kit = require "kit"
local proc = require "geneva.proc"
local time = require "geneva.time"
local fs = require "geneva.fs"

local loops = {}
local order = {}

local function loop(name, about, def)
  def.name, def.about = name, about
  loops[name] = def
  order[#order + 1] = name
end

-- pids of the local workers of a driver (its children running `geneva worker`)
local function workers_of(pid)
  local r = proc.run { argv = { "pgrep", "-P", tostring(pid), "-f", "worker --stdio" } }
  local out = {}
  for p in ((r and r.stdout) or ""):gmatch("%d+") do out[#out + 1] = math.tointeger(tonumber(p)) end
  return out
end

local function running(d) return d.p:status() == "running" end

loop("worker-kill9", "kill -9 of a random worker at a random time in a backfill", {
  run = function(k, env)
    local d = k:driver("x")
    kit.pause_random(0, env.D)
    local hit = false
    local deadline = time.monotonic() + env.D
    while running(d) and time.monotonic() < deadline do
      local ws = workers_of(d.p:pid())
      if #ws > 0 then
        hit = proc.kill(ws[math.random(#ws)], "KILL") and running(d)
        break
      end
      kit.pause(0.01)
    end
    return { hit = hit, outcomes = { (k:outcome(d)) }, teardown = true }
  end,
})

loop("driver-kill9", "kill -9 of the driver at a random time, then reap and resume", {
  run = function(k, env)
    local d = k:driver("x")
    kit.pause_random(0, env.D)
    local hit = running(d)
    d.sent = "KILL"
    proc.kill(d.p:pid(), "KILL")
    return { hit = hit, outcomes = { (k:outcome(d)) }, teardown = false }
  end,
})

-- Ctrl-C reaches the terminal's whole foreground group; `kill PID` the driver
local function signal_loop(sig, group)
  return {
    run = function(k, env)
      local d = k:driver("x")
      -- half the runs in the first 150 ms: context entry and worker start
      if math.random() < 0.5 then kit.pause_random(0, 0.15) else kit.pause_random(0, env.D) end
      local hit = running(d)
      d.sent = sig
      if group then proc.killpg(d.p:pid(), sig) else proc.kill(d.p:pid(), sig) end
      return { hit = hit, outcomes = { (k:outcome(d)) }, teardown = true }
    end,
  }
end
loop("sigint", "Ctrl-C (SIGINT to the driver's group) at a random time, worker start included",
     signal_loop("INT", true))
loop("sigterm", "SIGTERM to the driver at a random time, worker start included", signal_loop("TERM", false))

-- the db on a tmpfs of its own, filled to leave a random amount free
loop("disk-full", "a full disk (the db on a small tmpfs) at a random point of the backfill", {
  setup = function(base)
    if kit.BUCKET then return nil, "the databases are in a bucket" end
    local mnt = base .. "/disk"
    assert(fs.mkdir_p(mnt))
    local r = proc.run { argv = { "mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt } }
    if not (r and r.ok) then return nil, "cannot mount a tmpfs here (needs root)" end
    return { mnt = mnt }
  end,
  teardown = function(state)
    proc.run { argv = { "umount", "-l", state.mnt } }
  end,
  kit_opts = function(state, n) return { db_dir = ("%s/db%d"):format(state.mnt, n) } end,
  run = function(k, env)
    k:table()
    local free = tonumber((proc.run { argv = { "df", "--output=avail", "-B1", k.db_dir } }).stdout:match("(%d+)%s*$"))
    local leave = math.floor(math.random() * 2 * env.growth)
    local filler = k.db_dir .. "/../filler-" .. k.tag
    if free > leave then assert(proc.run { argv = { "fallocate", "-l", tostring(free - leave), filler } }) end
    local d = k:driver("x")
    local o, detail = k:outcome(d)
    fs.remove(filler)
    return { hit = o ~= "done", outcomes = { o }, detail = detail, teardown = true }
  end,
})

loop("ulimit-f", "`ulimit -f` below what the backfill writes: writes fail with EFBIG", {
  run = function(k, env)
    local kb = math.random(math.max(1, env.largest_kb))
    local d = k:driver("x", { ulimit_kb = kb })
    local o, detail = k:outcome(d)
    return { hit = o ~= "done", outcomes = { o }, detail = detail, teardown = true }
  end,
})

loop("two-drivers", "two drivers backfilling two columns of one table at once", {
  run = function(k, env)
    local a = k:driver("x")
    kit.pause_random(0, env.D / 2)
    local hit = running(a)
    local b = k:driver("y")
    return { hit = hit, outcomes = { (k:outcome(a)), (k:outcome(b)) }, teardown = true, both = true }
  end,
})

-- faults the Ray emulator injects on its routes (tests/fakes/ray_dashboard.py)
local RAY_ROUTES = { "submit", "get", "list", "logs", "stop", "delete", "package_get", "package_put", "version", "*" }
local function ray_fault()
  local f = { route = RAY_ROUTES[math.random(#RAY_ROUTES)], count = math.random(2) }
  local r = math.random(5)
  if r == 1 then f.action, f.status = "status", 500
  elseif r == 2 then f.action = "drop"
  elseif r == 3 then f.action, f.seconds = "delay", 0.5 + math.random() * 2
  elseif r == 4 then f.action, f.status, f.body = "status", 200, "{\"truncated\": [1, 2"
  else f.action = "drop_after_accept" end
  return f
end

loop("ray-faults", "Ray dashboard faults: 500s, resets, slow and garbage answers, lost replies", {
  setup = function(base)
    if not proc.run { argv = { "python3", "--version" } } then return nil, "no python3 for the Ray emulator" end
    package.path = os.getenv("GENEVA_SOURCE_DIR") .. "/tests/support/?.lua;" .. package.path
    local emu = require("ray_emulator").start(base .. "/ray", { "--num-cpus", "2", "--stop-wait", "1" })
    return { emu = emu }
  end,
  teardown = function(state) state.emu:close() end,
  resume_opts = function(state) state.emu:clear_faults() return { ray = state.emu.url } end,
  run = function(k, env, state)
    local emu = state.emu
    local faults = {}
    for i = 1, math.random(3) do faults[i] = ray_fault() end
    local before = 0
    for _, f in ipairs(faults) do before = before + f.count end
    emu:faults(faults)
    local d = k:driver("x", { ray = emu.url })
    local o, detail = k:outcome(d)
    local left = 0
    for _, f in ipairs(emu:faults({}).faults) do left = left + (f.count or 0) end
    emu:clear_faults()
    emu:wait_idle(15)
    local jobs, pids = emu:live()
    return { hit = left < before, outcomes = { o }, detail = detail, teardown = true, ray_left = #jobs + #pids }
  end,
})

loops.order = order
return loops
