-- geneva.ledger: the host's resource ledger, with lease journalling.
--
-- The C core (host/ledger.c) owns scopes and resources and guarantees
-- teardown (scope close, error, signal, exit). This layer adds the policy:
-- a scope may name a journal directory; reserving a resource in it writes a
-- lease file *before* the resource exists, and the lease is removed only
-- after the teardown succeeded, so `geneva reap` can finish what a kill -9
-- interrupted.
--
--   local s   = ledger.scope{name = "ctx", parent = ledger.current(), journal = dir}
--   local res = s:reserve("proc", "worker-1", {pid = ...})  -- lease written
--   local p   = create_it()
--   res:bind(function() p:close() end)                       -- teardown
--   s:close()   --> true | false, {messages}: reverse order, errors collected
local core = require "geneva.ledger.core"

local ledger = {}

local Scope = getmetatable(core.root()).__index
local Resource = debug.getregistry()["geneva.ledger.Resource"].__index

local journals = setmetatable({}, { __mode = "k" })  -- scope -> journal dir
local leases = setmetatable({}, { __mode = "k" })    -- resource -> lease path

local raw_reserve, raw_bind, raw_forget = Scope.reserve, Resource.bind, Resource.forget

local owner_cache, process_tag
-- ledger.owner() -> {hostname, boot_id, pid, start_time}: who holds leases.
function ledger.owner()
  if not owner_cache then
    local me = require("geneva.proc").self()
    owner_cache = { hostname = me.hostname, boot_id = me.boot_id, pid = me.pid,
                    start_time = me.start_time }
  end
  return owner_cache
end

-- ledger.owner_state(owner) -> "alive" | "dead" | "other-host" | "unknown":
-- how reap judges the owner of a lease or a labelled object (untrusted:
-- "unknown" when malformed). Only a process of this host can be looked at;
-- one from before this host restarted is dead.
function ledger.owner_state(owner)
  if type(owner) ~= "table" or math.type(owner.pid) ~= "integer" then return "unknown" end
  local me = ledger.owner()
  if owner.hostname ~= me.hostname then return "other-host" end
  if owner.boot_id ~= me.boot_id then return "dead" end
  return require("geneva.proc").alive(owner.pid, owner.start_time) and "alive" or "dead"
end

-- ledger.owner_alive(owner) -> false only when an owner is provably gone
-- in this boot of this host (its pid is no longer that process); one from
-- before a restart is for the caller to judge (job records say so apart).
function ledger.owner_alive(owner)
  return ledger.owner_state(owner) ~= "dead" or owner.boot_id ~= ledger.owner().boot_id
end

-- ledger.lease_id(kind, n) -> "<kind>-<tag>-<pid>-<n>": a lease's id and
-- file name. A pid and a counter are unique on one host only (every
-- container's driver may be pid 1), and a shared database's journal holds
-- the leases of drivers on many hosts: the tag, 8 random hex digits drawn
-- once per process, sets this process's names apart from every other's,
-- on any host and across pid reuse. (Leases written before the tag,
-- "<kind>-<pid>-<n>", are read and reaped as any other: only the file's
-- content is trusted, never its name.)
function ledger.lease_id(kind, n)
  if not process_tag then process_tag = require("geneva.fs").random_hex(8) end
  return ("%s-%s-%d-%d"):format(kind, process_tag, ledger.owner().pid, n)
end

local function journal_of(scope)
  local s = scope
  while s do
    if journals[s] then return journals[s] end
    s = s:parent()
  end
end

-- Leases are written atomically but not fsynced: they must survive the
-- driver's death (the page cache does), and a machine crash takes local
-- workers with it. Remote resources (Ray jobs, Kubernetes objects) outlive a
-- crash: their scopes ask for durable = true.
-- A journal in an s3 database's mirror is written to the store
-- (geneva.store.backend), so `geneva reap --db s3://...` finds it anywhere.
-- A new lease is a conditional create (create = true): a journal in a
-- shared database is written by drivers on many hosts, and a name taken
-- is never overwritten (EEXIST: a "conflict" Error). Rewrites of one's own
-- lease are plain puts.
local function write_lease(path, lease, durable, create)
  local backend, json = require "geneva.store.backend", require "geneva.json"
  local put = create and backend.put_if_absent or backend.put
  local ok, err, code = put(path, json.encode(lease, { indent = 1 }), { fsync = durable or false })
  if not ok then
    local taken = create and code == "EEXIST"
    error(require("geneva.errors").new(taken and "conflict" or "unavailable",
      taken and ("cannot journal lease '%s': the name is taken (another driver's lease)"):format(path)
        or ("cannot journal lease '%s': %s"):format(path, err),
      { path = path }), 3)
  end
end

-- in the reverse of the order they were written: a kill between two
-- removals leaves the first journal's copy (the trusted one, by convention)
local function remove_leases(paths)
  paths = paths or {}
  for i = #paths, 1, -1 do require("geneva.store.backend").delete(paths[i]) end
end

-- ledger.scope{name=, parent=, journal=, durable=} -> scope (parent: the
-- current one). durable: fsync each lease (for resources that outlive a
-- machine crash).
-- journal: a directory, or a list of them (this user's trusted journal
-- first, then the db's shared copy): each lease is written to every one,
-- in order, and removed in reverse.
function ledger.scope(opts)
  opts = opts or {}
  local s = core.scope(opts.name or "scope", opts.parent)
  if opts.journal then
    local dirs = type(opts.journal) == "table" and opts.journal or { opts.journal }
    for _, d in ipairs(dirs) do
      local ok, err = require("geneva.fs").mkdir_p(d)
      if not ok then error(("cannot create lease journal: %s"):format(err), 2) end
    end
    dirs.durable = opts.durable
    journals[s] = dirs
  end
  return s
end

ledger.root = core.root

-- ledger.user_journal() -> dir | nil, err: this user's lease journal (the
-- one `geneva reap` trusts), created private (0700)
function ledger.user_journal()
  local fs = require "geneva.fs"
  local state, err = fs.state_dir()
  if not state then return nil, err end
  local dir = state .. "/leases"
  local ok, merr = fs.mkdir_p(dir, 448)      -- 0700
  if not ok then return nil, merr end
  return dir
end
ledger.current = core.current
ledger.list = core.list
ledger.set_step_deadline = core.set_step_deadline

-- scope:reserve(kind, name [, info]) -> resource. With a journal, the lease
-- file is on disk before this returns; raises if it cannot be written.
-- Until res:bind, the resource's teardown removes its lease: nothing was
-- made yet. It is bound before the first lease is written, so an interrupt
-- (Ctrl-C) anywhere between reserve and bind leaves no lease behind once
-- the scope closes.
function Scope:reserve(kind, name, info)
  local res = raw_reserve(self, kind, name)
  local dirs = journal_of(self)
  if dirs then
    local id = ledger.lease_id(kind, res:info().id)
    local file = id:gsub("[^%w%-_.]", "_") .. ".json"
    local lease = {
      id = id, kind = kind, name = name, info = info or {}, state = "active",
      owner = ledger.owner(), created_at = os.time(), scope = res:info().scope,
    }
    local paths, mine = {}, {}     -- mine: what the teardown may remove
    for i, d in ipairs(dirs) do paths[i] = d .. "/" .. file; mine[i] = paths[i] end
    raw_bind(res, function() remove_leases(mine) end)
    for i = 1, #paths do
      local ok, err = pcall(write_lease, paths[i], lease, dirs.durable, true)
      if not ok then
        -- a name taken is another's lease: never removed with ours
        if require("geneva.errors").is(err, "conflict") then
          for j = #mine, i, -1 do mine[j] = nil end
        end
        remove_leases(mine); raw_forget(res); error(err, 2)
      end
    end
    leases[res] = { paths = paths, lease = lease, scope = self, durable = dirs.durable }
  end
  return res
end

-- res:lease() -> the lease table (nil without a journal)
function Resource:lease() return leases[self] and leases[self].lease end

-- res:update(info) -> res: merges info into the lease (e.g. a pid known only
-- once the process exists) and rewrites it.
function Resource:update(info)
  local l = leases[self]
  if l then
    for k, v in pairs(info) do l.lease.info[k] = v end
    for _, p in ipairs(l.paths) do write_lease(p, l.lease, l.durable) end
  end
  return self
end

-- res:bind(fn) -> res: fn() tears the resource down; after it returns the
-- lease is removed (a failing teardown keeps the lease for `geneva reap`).
-- The closure does not capture the handle, so the handle can be collected
-- while the ledger keeps the resource.
function Resource:bind(fn)
  local l = leases[self]
  return raw_bind(self, function()
    fn()
    if l then remove_leases(l.paths) end
  end)
end

-- res:forget() -> true: the resource ended by itself; drop entry and lease.
function Resource:forget()
  local l = leases[self]
  if l then remove_leases(l.paths); leases[self] = nil end
  return raw_forget(self)
end

-- res:retain() -> true: keep the resource past its scope; its lease stays,
-- marked retained, so reap skips it (and `reap --retained` removes it).
function Resource:retain()
  local l = leases[self]
  if l then
    l.lease.state = "retained"
    for _, p in ipairs(l.paths) do write_lease(p, l.lease) end
    leases[self] = nil
  end
  return raw_forget(self)
end

-- ledger.mark_retained(scope) -> n: rewrites the leases of the scope's
-- resources (and its descendants') as retained, so `geneva reap` leaves
-- them alone; they stay in the ledger.
function ledger.mark_retained(scope)
  local n = 0
  for _, l in pairs(leases) do
    local s = l.scope
    while s and s ~= scope do s = s:parent() end
    if s and l.lease.state ~= "retained" then
      l.lease.state = "retained"
      for _, p in ipairs(l.paths) do write_lease(p, l.lease) end
      n = n + 1
    end
  end
  return n
end

-- ledger.with(scope, fn, ...) -> fn's results: runs fn with scope current,
-- then closes the scope whatever happens; fn's error is re-raised after
-- teardown, and teardown errors are raised if fn succeeded.
function ledger.with(scope, fn, ...)
  local prev = scope:activate()
  -- a to-be-closed guard, not pcall: fn's error keeps its own traceback
  local teardown <close> = setmetatable({}, { __close = function(_, err)   -- luacheck: ignore 211
    if not prev:is_closed() then prev:activate() end
    local ok, errs = scope:close()
    if err == nil and not ok then error("teardown failed: " .. table.concat(errs, "; "), 0) end
  end })
  return fn(...)
end

return ledger
