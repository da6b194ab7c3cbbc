--- Execution contexts: workers provisioned for a piece of work and always
-- torn down.
--
--    geneva.context { cluster = "gpu", manifest = "dev" } (function()
--      tbl:backfill("embedding")
--    end)   -- the workers are gone here, whether the function returned or raised
--
-- Entering reaps the database's leftovers (leases of dead drivers on this
-- host), journals a lease for each resource before it exists (in
-- `<db>/_geneva/leases` and `~/.local/state/geneva/leases`), provisions the
-- cluster (local: worker processes, started now and reused by every backfill
-- inside; ray: submissions to an existing Ray cluster; kuberay: a RayCluster
-- created now) and becomes the active context: backfills inside run there.
-- Exiting waits for the async jobs started inside (`on_exit = "delete"`),
-- then tears everything down, newest first: on return, on error, on Ctrl-C,
-- on `kill`. After `kill -9`, `geneva reap` (or the next context) finishes
-- the teardown from the leases. Outside any context a backfill runs on the
-- embedded local cluster (workers = cores).
-- @module geneva.context

local errors = require "geneva.errors"
local ledger = require "geneva.ledger"
local json = require "geneva.json"
local runner = require "geneva.runner"

local context = {}

local Context = {}
Context.__index = Context
Context.__name = "geneva.Context"

local active = {}          -- stack of entered contexts, innermost last

-- Takes the context's manifest entries off package.path (where enter put
-- them; what else changed package.path meanwhile stays).
local function restore_path(c)
  if not c.lua_path then return end
  local at = package.path:find(c.lua_path, 1, true)
  if at then package.path = package.path:sub(1, at - 1) .. package.path:sub(at + #c.lua_path) end
  c.lua_path = nil
end

function context.current() return active[#active] end

-- context.forget_closed(): drops contexts whose scope was torn down under
-- them (the REPL closing an interrupted statement) from the active stack.
function context.forget_closed()
  for i = #active, 1, -1 do
    local c = active[i]
    if c.scope and c.scope:is_closed() then
      table.remove(active, i)
      runner.pop(c.frame)
      restore_path(c)
      c.state = "exited"
    end
  end
end

local EXIT_MODES = { delete = true, retain_on_failure = true, retain = true }
local OPTIONS = { cluster = true, manifest = true, db = true, on_exit = true, name = true }

--- Makes a context (not entered; `geneva.context{...}` is the same call).
-- Names are resolved when it is entered, against `db`, else the database of
-- the latest `geneva.connect` in this Lua state.
-- @tab[opt] opts the options below
-- @tparam[opt] string|table opts.cluster a cluster's name
-- (@{geneva.db.Db:define_cluster}) or an inline spec (@{geneva.context.cluster});
-- default: a local cluster
-- @tparam[opt] string|table opts.manifest a manifest's name
-- (@{geneva.db.Db:define_manifest}) or an inline spec
-- @tparam[opt] geneva.db.Db opts.db where names resolve
-- @string[opt="delete"] opts.on_exit `"delete"`: wait for the async jobs
-- started inside, then tear down; `"retain_on_failure"`: keep the cluster
-- when the function failed; `"retain"`: keep it (its lease is marked
-- retained: `geneva reap --list` shows it, `--retained` removes it)
-- @treturn Context
-- @raise `invalid_argument` for a bad option (entering raises `not_found`
-- for an unknown name, `invalid_argument` when no database is known)
function context.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then errors.throw("invalid_argument", "context: expected a table of options") end
  require("geneva.suggest").check_options("context", opts, OPTIONS)
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

-- The database names resolve against when a context gives no db: the one
-- of the latest geneva.connect in this Lua state (geneva.db tells us).
local latest_db = setmetatable({}, { __mode = "v" })

-- context.use_db(db): called by geneva.db's connect
function context.use_db(db) latest_db[1] = db end

-- context.latest_db() -> that Db, or nil
function context.latest_db() return latest_db[1] end

local function resolve_db(opts)
  if opts.db then return opts.db end
  local db = latest_db[1]
  if not db then
    errors.throw("invalid_argument",
      "context: no database: pass db = ... or call geneva.connect first")
  end
  return db
end

local function resolve_cluster(db, c)
  if c == nil then
    return { type = "local", workers = require("geneva.context.cluster").default_local_workers() }, "local"
  end
  if type(c) == "string" then
    local spec, err = db:get_cluster(c)
    if not spec then error(err, 0) end
    return spec, c
  end
  return require("geneva.context.cluster").validate(c), "inline"
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

-- this user's lease journal (the one reap trusts), created private
local function trusted_journal()
  local dir, err = require("geneva.context.reap").trusted_dir()
  if not dir then errors.throw("unavailable", "cannot create this user's lease journal: " .. tostring(err)) end
  return dir
end

--- A context, from @{new}, @{geneva.local_cluster} or @{geneva.ray_cluster}.
--
-- Calling it, `ctx(fn, ...)`, enters, runs `fn(...)`, always exits, and
-- returns `fn`'s results or re-raises its error after teardown. In the REPL
-- or a long script, @{Context:enter} and @{Context:exit} split that in two,
-- and `local c <close> = ctx:enter()` exits at the end of the block. It
-- prints as `geneva.Context two (entered)`.
-- @type Context

--- Enters: reaps leftovers, provisions the cluster, becomes the active context.
-- @treturn Context the context itself (to-be-closed: `<close>` exits it)
-- @raise `invalid_argument` when already entered (or exited); `not_found` for an unknown cluster
-- or manifest; `unavailable` when provisioning fails (after tearing down
-- whatever it had created)
-- @usage local c = geneva.context { cluster = "two" }:enter()
-- tbl:backfill("words")
-- c:exit()
function Context:enter()
  if self.state ~= "new" then
    errors.throw("invalid_argument", "context already " .. (self.state == "entered" and "entered" or "exited")
      .. ": make a new one")
  end
  local db = resolve_db(self.opts)
  self.db = db
  local db_dir = db.path or db.dir
  require("geneva.context.reap").run{ db = db_dir, quiet = true }
  local spec, cname = resolve_cluster(db, self.opts.cluster)
  local manifest_rec = resolve_manifest(db, self.opts.manifest)
  if not runner.types[spec.type] then
    errors.throw("unavailable", ("context: clusters of type '%s' are not available in this build yet")
      :format(tostring(spec.type)))
  end
  if manifest_rec then require("geneva.context.manifest").check_size(manifest_rec, spec.type) end
  self.cluster, self.cluster_name, self.manifest = spec, cname, manifest_rec
  self.scope = ledger.scope{
    name = "context " .. (self.opts.name or cname),
    -- this user's journal first: a kill -9 between the two writes leaves
    -- the trusted copy, which reap acts on (a copy only in the shared db
    -- is a hint it never trusts)
    journal = { trusted_journal(), db_dir .. "/_geneva/leases" },
  }
  local ok, res = pcall(function()
    -- the manifest's package, unpacked once: local workers run in it, and
    -- this driver resolves module UDFs from it (package.path, below)
    local pkg = manifest_rec and require("geneva.context.manifest").unpack(self.scope, db, manifest_rec)
    self.package_dir = pkg
    return runner.provision(spec, { scope = self.scope, db = db, manifest = manifest_rec, package_dir = pkg })
  end)
  if not ok then
    self.scope:close()
    self.state = "exited"
    error(errors.from(res, "unavailable"), 0)
  end
  self.runner = res
  if self.package_dir then
    -- module UDFs of the manifest load here as on the workers, without LUA_PATH
    self.lua_path = require("geneva.context.manifest").lua_path(self.package_dir)
    package.path = self.lua_path .. package.path
  end
  self.frame = runner.push(res)        -- backfills inside run on it
  self.jobs = self.frame.jobs
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

--- Exits: waits for the async jobs started inside (unless `on_exit =
-- "retain"`), then tears down or retains. Idempotent.
-- @param[opt] err the error that ends the context, if any (for
-- `on_exit = "retain_on_failure"`)
-- @treturn boolean true
function Context:exit(err)
  if self.state ~= "entered" then return true end
  self.state = "exiting"
  for i = #active, 1, -1 do
    if active[i] == self then table.remove(active, i) break end
  end
  runner.pop(self.frame)
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
  restore_path(self)
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

-- On an error the teardown's own failure must not hide it.
Context.__close = function(self, err)
  if err ~= nil then pcall(self.exit, self, err) else self:exit() end
end

-- ctx(fn, ...) -> fn's results; fn's error goes on, with its own traceback,
-- after teardown
Context.__call = function(self, fn, ...)
  if type(fn) ~= "function" then errors.throw("invalid_argument", "context: expected a function to run") end
  local entered <close> = self:enter()   -- luacheck: ignore 211 (to-be-closed)
  return fn(...)
end

-- "geneva.Context two (entered)"
Context.__tostring = function(self)
  local c = self.opts.cluster
  if type(c) == "table" then c = "inline " .. tostring(c.type) end
  return ("geneva.Context %s (%s)"):format(self.cluster_name or tostring(c or "local"), self.state)
end

return context
