-- geneva.context.reap: tear down what crashed drivers left (design §8).
--
-- Leases live in `<db>/_geneva/leases` and in the per-user state directory
-- (`<state>/leases`, which lets `geneva reap` without --db find them). A
-- lease's owner is (hostname, boot id, pid, start time): reap acts only on
-- leases whose owner is gone, only on this host unless forced, and skips
-- retained ones unless asked.
local fs = require "geneva.fs"
local json = require "geneva.json"
local proc = require "geneva.proc"

local reap = {}

-- Teardown of one leftover by kind; returns true when it is gone.
local kinds = {}

function kinds.proc(info)
  if not info.pid then return true end         -- never started
  if not proc.alive(info.pid, info.start_time) then return true end
  local target = info.pgid or info.pid
  local kill = info.pgid and proc.killpg or proc.kill
  kill(target, "TERM")
  for _ = 1, 40 do
    if not proc.alive(info.pid, info.start_time) then return true end
    require("geneva.time").sleep(0.05)
  end
  kill(target, "KILL")
  return true
end

function kinds.tmpdir(info)
  if info.path and fs.exists(info.path) then
    local ok, err = fs.remove_tree(info.path)
    if not ok then return false, err end
  end
  return true
end

function kinds.job(info) return true end         -- the record reads as abandoned

-- Further kinds (ray_job, k8s objects) register here.
reap.kinds = kinds

local function read_lease(path)
  local text = fs.read(path)
  local lease = text and json.decode(text, { null_as_nil = true })
  return lease
end

local function owner_state(owner, me)
  if type(owner) ~= "table" then return "unknown" end
  if owner.hostname ~= me.hostname or owner.boot_id ~= me.boot_id then
    if owner.hostname == me.hostname then return "dead" end   -- this host rebooted
    return "other-host"
  end
  return proc.alive(owner.pid, owner.start_time) and "alive" or "dead"
end

local function lease_dirs(db)
  local dirs = {}
  if db then dirs[#dirs + 1] = db .. "/_geneva/leases" end
  dirs[#dirs + 1] = fs.state_dir() .. "/leases"
  return dirs
end

-- reap.list{db=} -> array of {path, lease, owner_state}
function reap.list(opts)
  opts = opts or {}
  local me = proc.self()
  local seen, out = {}, {}
  for _, dir in ipairs(lease_dirs(opts.db)) do
    for _, name in ipairs(fs.list(dir) or {}) do
      if name:match("%.json$") and not seen[name] then
        local path = dir .. "/" .. name
        local lease = read_lease(path)
        if lease then
          seen[name] = true
          out[#out + 1] = { path = path, file = name, lease = lease, owner = owner_state(lease.owner, me) }
        end
      end
    end
  end
  table.sort(out, function(a, b) return a.file < b.file end)
  return out
end

local function remove_everywhere(dirs, name)
  for _, d in ipairs(dirs) do os.remove(d .. "/" .. name) end
end

-- reap.run{db=, force=, retained=, quiet=} -> {reaped = n, skipped = n, failed = {msgs}}
function reap.run(opts)
  opts = opts or {}
  local dirs = lease_dirs(opts.db)
  local result = { reaped = 0, skipped = 0, failed = {}, items = {} }
  -- newest first, like a ledger scope closing
  local all = reap.list(opts)
  table.sort(all, function(a, b)
    return (a.lease.created_at or 0) > (b.lease.created_at or 0)
  end)
  for _, e in ipairs(all) do
    local l = e.lease
    local act
    if l.state == "retained" then act = opts.retained
    elseif e.owner == "dead" then act = true
    elseif e.owner == "other-host" or e.owner == "unknown" then act = opts.force
    else act = false end
    if not act then
      result.skipped = result.skipped + 1
    else
      local teardown = kinds[l.kind]
      local ok, err
      if teardown then ok, err = teardown(l.info or {}) else ok, err = false, "unknown kind" end
      if ok then
        remove_everywhere(dirs, e.file)
        result.reaped = result.reaped + 1
        result.items[#result.items + 1] = ("%s %s"):format(l.kind, l.name or "")
      else
        result.failed[#result.failed + 1] = ("%s %s: %s"):format(l.kind, l.id, tostring(err))
      end
    end
  end
  return result
end

return reap
