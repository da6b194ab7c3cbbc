-- What the harness counts after each run: the table's rows against what
-- they must hold, and what was left behind. Every count must be 0.
local fs = require "geneva.fs"
local backend = require "geneva.store.backend"
local job = require "geneva.backfill.job"
local storage = require "geneva.store.versions"

local checks = {}

-- checks.rows(tbl, n, cols) -> {lost, dup, wrong}: ids 1..n must each be
-- there once, every column of cols (name -> f(id)) holding f(id)
function checks.rows(tbl, n, cols)
  local names = { "id" }
  for c in pairs(cols) do names[#names + 1] = c end
  local seen, r = {}, { lost = 0, dup = 0, wrong = 0 }
  for _, row in ipairs(tbl:to_rows { columns = names }) do
    local id = row.id
    if seen[id] or math.type(id) ~= "integer" or id < 1 or id > n then
      r.dup = r.dup + 1
    else
      seen[id] = true
      for c, f in pairs(cols) do
        if row[c] == nil then r.lost = r.lost + 1 elseif row[c] ~= f(id) then r.wrong = r.wrong + 1 end
      end
    end
  end
  for i = 1, n do
    if not seen[i] then r.lost = r.lost + 1 end
  end
  return r
end

-- checks.procs(tag) -> pids of live processes whose environment carries
-- GENEVA_HARNESS_RUN=tag (every process a run starts inherits it)
function checks.procs(tag)
  local mark, me, out = "\0GENEVA_HARNESS_RUN=" .. tag .. "\0", require("geneva.proc").self().pid, {}
  for _, name in ipairs(fs.list("/proc") or {}) do
    local pid = math.tointeger(tonumber(name))
    if pid and pid ~= me then
      local f = io.open("/proc/" .. name .. "/environ", "rb")
      local env = f and f:read("a")
      if f then f:close() end
      -- a zombie's environ reads empty: it is gone but for its parent's wait
      if env and ("\0" .. env):find(mark, 1, true) then out[#out + 1] = pid end
    end
  end
  return out
end

-- checks.wait_procs(tag, seconds) -> the pids still there after waiting up
-- to seconds for them to go (parent-death signals take a moment)
function checks.wait_procs(tag, seconds)
  local time = require "geneva.time"
  local deadline = time.monotonic() + seconds
  local left = checks.procs(tag)
  while #left > 0 and time.monotonic() < deadline do
    time.sleep(0.05)
    left = checks.procs(tag)
  end
  return left
end

local function count(list) return list and #list or 0 end

-- the files under a staging area, at any depth (a name that is no file is
-- a "directory", in an object store a common prefix)
local function staged(dir)
  local files = {}
  for _, e in ipairs(backend.list(dir, { details = true })) do files[e.name] = true end
  local n = 0
  for _, name in ipairs(backend.list(dir)) do
    n = n + (files[name] and 1 or staged(dir .. "/" .. name))
  end
  return n
end

-- checks.left(root, db_dir) -> {tmpdirs, leases, stray, stuck}:
--   tmpdirs  entries in the run's TMPDIR
--   leases   lease files in the db's journal and the user's state journal
--   stray    staging files, job areas (queues), cancel markers, data/.tmp-*
--   stuck    job records not final (PENDING or RUNNING)
function checks.left(root, db_dir)
  local r = { tmpdirs = count(fs.list(root .. "/tmp")), stuck = 0, stray = 0 }
  r.leases = count(backend.list(db_dir .. "/_geneva/leases")) + count(fs.list(root .. "/state/geneva/leases"))
  local jobs = db_dir .. "/_geneva/jobs"
  -- a job's area (its queue: a "directory") or cancel marker; not records,
  -- logs or the start lock
  for _, name in ipairs(backend.list(jobs)) do
    if not name:match("%.json$") and not name:match("%.log$") and name:sub(1, 1) ~= "." then
      r.stray = r.stray + 1
    end
  end
  for _, rec in ipairs(job.list(db_dir)) do
    if rec.status == "PENDING" or rec.status == "RUNNING" then r.stuck = r.stuck + 1 end
  end
  for _, t in ipairs(backend.list(db_dir)) do
    local tdir = db_dir .. "/" .. t
    if t ~= "_geneva" and #backend.list(tdir .. "/_versions") > 0 then
      r.stray = r.stray + staged(tdir .. "/_staging")
      for _, f in ipairs(backend.list(tdir .. "/data")) do
        if f:match("^%.tmp") then r.stray = r.stray + 1 end
      end
    end
  end
  return r
end

-- checks.orphans(tbl_dir) -> data files that no version references
function checks.orphans(tbl_dir)
  local used = {}
  for _, v in ipairs(storage.versions(tbl_dir)) do storage.referenced(storage.read(tbl_dir, v), used) end
  local n = 0
  for _, f in ipairs(backend.list(tbl_dir .. "/data")) do
    if not used["data/" .. f] and not f:match("^%.tmp") then n = n + 1 end
  end
  return n
end

return checks
