-- geneva.context: execution contexts (design §3 and §8, contract).
--
--   geneva.context{cluster = "name" | {spec}, manifest = "name" | {spec},
--                  db = db, on_exit = "delete" | "retain_on_failure" | "retain"}
--     (function() tbl:backfill("col") end)
--
-- Entering reaps the db's leftovers (leases of dead drivers on this host),
-- opens a ledger scope journalled in `<db>/_geneva/leases` and the per-user
-- state directory, provisions through the cluster type's runner (local:
-- worker processes, started now and reused by every backfill inside), and
-- becomes the active context. Exiting waits for the async jobs started inside
-- (on_exit = "delete"), then closes the scope: every process, temp dir and
-- lease goes, newest first — on return, on error, on Ctrl-C. After kill -9,
-- `geneva reap` (or the next context) finishes the job from the leases.
local errors = require "geneva.errors"
local ledger = require "geneva.ledger"
local fs = require "geneva.fs"
local json = require "geneva.json"

local context = {}

local Context = {}
Context.__index = Context
Context.__name = "geneva.Context"

local active = {}          -- stack of entered contexts, innermost last

function context.current() return active[#active] end

-- context.forget_closed(): drops contexts whose scope was torn down under
-- them (the REPL closing an interrupted statement) from the active stack.
function context.forget_closed()
  for i = #active, 1, -1 do
    local c = active[i]
    if c.scope and c.scope:is_closed() then
      table.remove(active, i)
      c.state = "exited"
    end
  end
end

-- backfills inside a context use its runner and are tracked by it
local function install_hooks()
  local backfill = require "geneva.backfill"
  backfill.runner_provider = function()
    local c = active[#active]
    return c and c.runner
  end
  backfill.on_start = function(j)
    local c = active[#active]
    if c then c.jobs[#c.jobs + 1] = j end
  end
end

local EXIT_MODES = { delete = true, retain_on_failure = true, retain = true }
local OPTIONS = { cluster = true, manifest = true, db = true, on_exit = true, name = true }

-- context.new(opts) -> Context (not entered). Raises invalid_argument on bad
-- options; names are resolved at enter.
function context.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then errors.throw("invalid_argument", "context: expected a table of options") end
  for k in pairs(opts) do
    if not OPTIONS[k] then errors.throw("invalid_argument", ("context: unknown option '%s'"):format(tostring(k))) end
  end
  local on_exit = opts.on_exit or "delete"
  if not EXIT_MODES[on_exit] then
    errors.throw("invalid_argument", ("context: on_exit must be delete, retain_on_failure or retain, got '%s'")
      :format(tostring(on_exit)))
  end
  for _, k in ipairs({ "cluster", "manifest" }) do
    local v = opts[k]
    if v ~= nil and type(v) ~= "string" and type(v) ~= "table" then
      errors.throw("invalid_argument", ("context: %s must be a name or a spec table"):format(k))
    end
  end
  return setmetatable({ opts = opts, on_exit = on_exit, state = "new", jobs = {} }, Context)
end

-- {====== Resolving names

local function resolve_db(opts)
  if opts.db then return opts.db end
  local db = require("geneva.db").latest and require("geneva.db").latest()
  if not db then
    errors.throw("invalid_argument",
      "context: no database: pass db = ... or call geneva.connect first")
  end
  return db
end

local function resolve_cluster(db, c)
  if c == nil then
    return { type = "local", workers = require("geneva.backfill").cpu_count() }, "local"
  end
  if type(c) == "string" then
    local spec, err = db:get_cluster(c)
    if not spec then error(err, 0) end
    return spec, c
  end
  return require("geneva.cluster").validate(c), "inline"
end

local function resolve_manifest(db, m)
  if m == nil then return nil end
  if type(m) == "string" then
    local rec, err = db:get_manifest(m)
    if not rec then error(err, 0) end
    return rec
  end
  local name = "inline-" .. require("geneva.fs").sha256(json.canonical(m)):sub(1, 12)
  db:define_manifest(name, m)
  return (assert(db:get_manifest(name)))
end

-- }======

-- {====== Runners by cluster type

local function package_path(db, rec)
  return (db.path or db.dir) .. "/_geneva/packages/" .. rec.checksum .. ".zip"
end

-- Unpacks the manifest's package for local workers: its lua/ goes first on
-- their package.path, its env is set, and they run inside it.
local function unpack_manifest(self, db, rec)
  local scope = self.scope
  -- the lease first (the dir's path is known once it exists), and the dir
  -- owned by the context's scope, as every resource inside it
  local res = scope:reserve("tmpdir", "package " .. rec.checksum:sub(1, 12))
  local prev = scope:activate()
  local tmp, terr = fs.tmpdir("geneva-pkg-")
  prev:activate()
  if not tmp then
    res:forget()
    errors.throw("unavailable", ("cannot create a directory for the manifest package: %s"):format(terr))
  end
  res:update{ path = tmp.path }
  res:bind(function() tmp:close() end)
  local ok, err, code = require("geneva.zip").extract(package_path(db, rec), tmp.path)
  if not ok then errors.throw("unavailable", ("cannot unpack manifest package: %s (%s)"):format(err, code)) end
  local env = {}
  local cluster = require "geneva.cluster"
  local spec_env = rec.spec and rec.spec.env
  if spec_env then
    for k, v in pairs(cluster.resolve_env(spec_env)) do env[k] = v end
  end
  env.LUA_PATH = ("%s/lua/?.lua;%s/lua/?/init.lua;%s"):format(tmp.path, tmp.path,
    os.getenv("LUA_PATH") or ";")
  return env, tmp.path
end

local function provision_local(self, db, spec, manifest_rec)
  local env, cwd
  if manifest_rec then env, cwd = unpack_manifest(self, db, manifest_rec) end
  if spec.env then
    env = env or {}
    for k, v in pairs(require("geneva.cluster").resolve_env(spec.env)) do env[k] = v end
  end
  local pool = require("geneva.runner.local").new{
    workers = spec.workers, scope = self.scope, env_add = env, cwd = cwd }
  pool:start()
  return pool
end

local provisioners = {
  ["local"] = provision_local,
}

-- }======

-- this user's lease journal (the one reap trusts), created private
local function trusted_journal()
  local dir, err = require("geneva.reap").trusted_dir()
  if not dir then errors.throw("unavailable", "cannot create this user's lease journal: " .. tostring(err)) end
  return dir
end

-- ctx:enter() -> ctx. Raises if already entered, or if provisioning fails
-- (after tearing down whatever it had created).
function Context:enter()
  if self.state ~= "new" then
    errors.throw("invalid_argument", "context already " .. (self.state == "entered" and "entered" or "exited")
      .. ": make a new one")
  end
  install_hooks()
  local db = resolve_db(self.opts)
  self.db = db
  local db_dir = db.path or db.dir
  require("geneva.reap").run{ db = db_dir, quiet = true }
  local spec, cname = resolve_cluster(db, self.opts.cluster)
  local manifest_rec = resolve_manifest(db, self.opts.manifest)
  local provision = provisioners[spec.type]
  if not provision then
    errors.throw("unavailable", ("context: clusters of type '%s' are not available in this build yet")
      :format(tostring(spec.type)))
  end
  if manifest_rec then require("geneva.manifest").check_size(manifest_rec, spec.type) end
  self.cluster, self.cluster_name, self.manifest = spec, cname, manifest_rec
  self.scope = ledger.scope{
    name = "context " .. (self.opts.name or cname),
    journal = { db_dir .. "/_geneva/leases", trusted_journal() },
  }
  local ok, res = pcall(provision, self, db, spec, manifest_rec)
  if not ok then
    self.scope:close()
    self.state = "exited"
    error(errors.from(res, "unavailable"), 0)
  end
  self.runner = res
  self.prev_scope = self.scope:activate()   -- what fn creates belongs to the context
  self.state = "entered"
  active[#active + 1] = self
  return self
end

local function failed_jobs(self)
  for _, j in ipairs(self.jobs) do
    local st = j:status()
    if st == "FAILED" or st == "CANCELLED" then return true end
  end
  return false
end

-- ctx:exit([err]) -> true: idempotent. Waits for the async jobs started
-- inside unless on_exit = "retain"; then tears down (or retains).
function Context:exit(err)
  if self.state ~= "entered" then return true end
  self.state = "exiting"
  for i = #active, 1, -1 do
    if active[i] == self then table.remove(active, i) break end
  end
  if not self.prev_scope:is_closed() then self.prev_scope:activate() end
  local wait_err
  if self.on_exit ~= "retain" and not (err and errors.from(err).code == "interrupted") then
    for _, j in ipairs(self.jobs) do
      local ok, e = pcall(j.wait, j)
      if not ok then wait_err = wait_err or e end
    end
  end
  local retain = self.on_exit == "retain"
    or (self.on_exit == "retain_on_failure" and (err ~= nil or wait_err ~= nil or failed_jobs(self)))
  self.state = "exited"
  if retain then
    -- kept until this process ends (local workers cannot outlive it); the
    -- leases say so, and reap leaves retained resources alone
    self.retained = true
    ledger.mark_retained(self.scope)
    return true
  end
  local ok, errs = self.scope:close()
  if not ok then
    errors.throw("internal", "context teardown failed: " .. table.concat(errs, "; "))
  end
  return true
end

Context.__close = function(self, err) self:exit(err) end

-- ctx(fn, ...) -> fn's results; fn's error is re-raised after teardown
Context.__call = function(self, fn, ...)
  if type(fn) ~= "function" then errors.throw("invalid_argument", "context: expected a function to run") end
  self:enter()
  local res = table.pack(pcall(fn, ...))
  if not res[1] then
    pcall(self.exit, self, res[2])
    error(res[2], 0)
  end
  self:exit()
  return table.unpack(res, 2, res.n)
end

Context.__tostring = function(self)
  return ("geneva.Context %s (%s)"):format(self.cluster_name or tostring(self.opts.cluster or "local"), self.state)
end

return context
