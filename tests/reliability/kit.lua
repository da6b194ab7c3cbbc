-- A run's kit: its own directory (db, TMPDIR, state dir, cache), the
-- environment every process of the run inherits (tagged, so leaked
-- processes can be found), and the driver and CLI processes it starts.
local fs = require "geneva.fs"
local proc = require "geneva.proc"
local time = require "geneva.time"

local kit = {}
local Kit = {}
Kit.__index = Kit

kit.ROWS = 4000          -- rows of the table each run backfills
kit.FRAGMENT = 1000      -- rows per fragment

-- the column UDFs: ~0.25 ms a row, so a job lasts long enough to be hit
kit.COLUMNS = {
  x = function(id) return id * 7 end,
  y = function(id) return id * 11 end,
}

-- The driver: backfills column arg[2] of table docs in db arg[1], on a
-- local context of 2 workers, or on the Ray cluster at arg[3]. Prints
-- "DONE status" or "ERROR code message" and exits 0 or 1.
local DRIVER = [[
local geneva = require "geneva"
local db = geneva.connect(arg[1])
local ok, res = pcall(function()
  local tbl = db:open_table("docs")
  local ctx = arg[3] and geneva.ray_cluster { address = arg[3], db = db }
              or geneva.context { cluster = { type = "local", workers = 2 }, db = db }
  local rec
  ctx(function() rec = tbl:backfill(arg[2], { batch_size = 250, commit_every = 2 }) end)
  return rec
end)
if ok then
  print("DONE " .. res.status)
  os.exit(0)
end
local code = type(res) == "table" and res.code or "raw"
print(("ERROR %s %s"):format(code, type(res) == "table" and res.message or tostring(res)))
os.exit(1)
]]

local seq = 0

-- The bucket of the runs' databases when the harness runs under
-- tests/support/with_moto.lua (--store s3), else nil
kit.BUCKET = os.getenv("GENEVA_TEST_STORE") == "s3" and (os.getenv("GENEVA_TEST_S3_BUCKET") or "geneva-test") or nil

-- kit.new(base, opts) -> Kit: a fresh run directory under base. opts.db_dir:
-- where the db goes (default <root>/db, or s3://<bucket>/<run> with --store
-- s3). k.db is what processes are given (a path or URI); k.db_dir, once
-- k:table() has connected, the path this process reads it by (an object
-- store's local mirror: geneva.store.backend routes it)
function kit.new(base, opts)
  seq = seq + 1
  local root = ("%s/run-%04d"):format(base, seq)
  for _, d in ipairs { "", "/tmp", "/state", "/cache" } do assert(fs.mkdir_p(root .. d)) end
  local tag = fs.random_hex(12)
  local db = (opts and opts.db_dir) or (kit.BUCKET and ("s3://%s/run-%04d-%s"):format(kit.BUCKET, seq, tag))
             or root .. "/db"
  local self = setmetatable({ root = root, tag = tag, db = db, db_dir = db,
                              bin = os.getenv("GENEVA_BIN"), procs = {}, notes = {} }, Kit)
  self.env = { TMPDIR = root .. "/tmp", XDG_STATE_HOME = root .. "/state", GENEVA_CACHE_DIR = root .. "/cache",
               GENEVA_HARNESS_RUN = tag, GENEVA_PROGRESS = "0" }
  assert(fs.write(root .. "/driver.lua", DRIVER))
  return self
end

-- k:table() -> the run's table docs (created on first call) with columns x and y
function Kit:table()
  if not self.tbl then
    local geneva = require "geneva"
    local rows = {}
    for i = 1, kit.ROWS do rows[i] = { id = i } end
    local db = geneva.connect(self.db)
    self.db_dir = db.dir
    self.tbl = db:create_table("docs", rows, { fragment_size = kit.FRAGMENT })
    local cols = {}
    for name, f in pairs(kit.COLUMNS) do
      -- the UDF travels as bytecode: no upvalues, so the body is spelled out
      local k = f(1)
      cols[name] = geneva.udf { data_type = "int64", fn = load(([[
        return function(id)
          local t = os.clock() + 0.00025
          while os.clock() < t do end
          return id * %d
        end]]):format(k))() }
    end
    self.tbl:add_columns(cols)
  end
  return self.tbl
end

-- k:driver(column [, {ray = url, ulimit_kb = n}]) -> Driver {p = Process,
-- n, sent = the signal a loop sent it}: a driver in its own process group,
-- as a shell would start it
function Kit:driver(column, opts)
  opts = opts or {}
  local argv = { self.bin, self.root .. "/driver.lua", self.db, column, opts.ray }
  if opts.ulimit_kb then
    argv = { "bash", "-c", 'ulimit -f "$1"; shift; exec "$@"', "_", tostring(opts.ulimit_kb),
             table.unpack(argv) }
  end
  local n = #self.procs + 1
  local p = assert(proc.spawn { argv = argv, env_add = self.env, stdin = "null", new_group = true,
                                stdout = ("%s/driver%d.out"):format(self.root, n),
                                stderr = ("%s/driver%d.err"):format(self.root, n) })
  self.procs[n] = p
  return { p = p, n = n }
end

-- k:outcome(driver [, timeout]) -> "done" | "clean" | "killed" | "unclean", detail:
-- waits for a driver (an unclean end's detail goes to k.notes). clean: it ended with a geneva error (not internal);
-- killed: by the signal the loop sent (driver.sent); unclean: anything else
function Kit:outcome(d, timeout)
  local how, code = d.p:wait(timeout or 300)
  local out = fs.read(("%s/driver%d.out"):format(self.root, d.n)) or ""
  local err = fs.read(("%s/driver%d.err"):format(self.root, d.n)) or ""
  d.p:close()
  if how == nil then
    self.notes[#self.notes + 1] = ("driver%d did not end in time"):format(d.n)
    return "unclean", self.notes[#self.notes]
  end
  if how == "exited" and code == 0 and out:match("^DONE DONE") then return "done", out end
  local ecode = out:match("^ERROR (%S+)")
  if how == "exited" and code == 1 and ecode and ecode ~= "internal" and ecode ~= "raw" then
    return "clean", out
  end
  if d.sent and ((how == "signaled" and proc.signum(d.sent) == code)
                 -- the host's way to end on SIGINT/SIGTERM: teardown, then 128 + signal
                 or (how == "exited" and code == 128 + proc.signum(d.sent))) then
    return "killed", d.sent
  end
  local detail = ("driver%d %s %s: %s %s"):format(d.n, how, tostring(code), out, err:sub(-600))
  self.notes[#self.notes + 1] = detail
  return "unclean", detail
end

-- k:cli(args...) -> result of proc.run (stdout, stderr, code) of `geneva args...`
function Kit:cli(...)
  return assert(proc.run { argv = { self.bin, ... }, env_add = self.env, timeout = 120 })
end

-- kit.pause(seconds): sleeps that long (time.sleep returns early when a
-- child exits: docs/internals.md, Traps we met)
function kit.pause(seconds)
  local deadline = time.monotonic() + seconds
  repeat
    local left = deadline - time.monotonic()
    if left > 0 then time.sleep(left) end
  until left <= 0
end

-- kit.pause_random(lo, hi): a pause of a random length between lo and hi s
function kit.pause_random(lo, hi) kit.pause(lo + math.random() * (hi - lo)) end

-- k:close(keep): removes the run's directory unless keep
function Kit:close(keep)
  for _, p in ipairs(self.procs) do p:close() end
  if not keep then fs.remove_tree(self.root) end
end

return kit
