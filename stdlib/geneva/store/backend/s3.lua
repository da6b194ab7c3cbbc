--[[
geneva.store.backend.s3: a database in an object store (s3://bucket/prefix),
served to geneva.store.backend through a local mirror directory.

The mirror is `<cache>/s3/<endpoint host>/<bucket>/<prefix>` (the host
followed by `@<profile>` when connect names a profile), where <cache>
is GENEVA_CACHE_DIR, else $XDG_CACHE_HOME/geneva, else ~/.cache/geneva. A
path under it names the object whose key is the path's rest under the
prefix. Only immutable objects (data, column and staged files, whose names
are never reused) are kept there: fetch() downloads one once per machine,
and later reads open the local copy. Everything mutable (versions, records)
is read from the store every time. The cache is capped
(GENEVA_CACHE_MAX_BYTES, default CACHE_MAX): past it the least recently
used data files go.

Conditional creates are `PUT` with `If-None-Match: *`; a 412 (or 409
ConditionalRequestConflict) is EEXIST. A store that ignores the header
would let two writers both "win" a version: mount() probes for that once
per bucket and process, and refuses to write to such a store. The probe
comes after a plain read (a LIST of the prefix), so that connect errors
name a request the user knows; credentials allowed to read but not to
write (AccessDenied on the probe) mount the database read-only, and every
write then says why (check_writable).
]]
local fs = require "geneva.fs"
local errors = require "geneva.errors"

local M = {}

M.CACHE_MAX = 10 * 1024 * 1024 * 1024

local S3 = {}
S3.__index = S3

-- {====== The client's raised Errors as the bindings' nil, msg, code

local CODES = { not_found = "ENOENT", conflict = "EEXIST", interrupted = "EINTR" }

local function call(fn, ...)
  local ok, res = pcall(fn, ...)
  if ok then return res == nil and true or res end
  local e = errors.from(res)
  return nil, e.message, CODES[e.code] or "EIO"
end

-- }======

-- {====== The cache

local function cache_root()
  local d = os.getenv("GENEVA_CACHE_DIR")
  if d and d ~= "" then return d end
  local x = os.getenv("XDG_CACHE_HOME")
  if x and x ~= "" then return x .. "/geneva" end
  return (fs.home() or "/tmp") .. "/.cache/geneva"
end
M.cache_root = cache_root

local function cache_max()
  local v = math.tointeger(tonumber(os.getenv("GENEVA_CACHE_MAX_BYTES") or ""))
  return v and v > 0 and v or M.CACHE_MAX
end

-- what this process has downloaded since it last looked at the whole cache
local cache = { total = nil }

-- The cached data files under root, oldest use first
local function cached_files(root)
  local out = {}
  for _, rel in ipairs(fs.walk(root, { ignore_errors = true }) or {}) do
    local path = root .. "/" .. rel
    if path:match("/data/[^/]+%.db$") or path:match("/_staging/.+%.db$") then
      local st = fs.stat(path)
      if st and st.type == "file" then out[#out + 1] = { path = path, size = st.size, mtime = st.mtime } end
    end
  end
  table.sort(out, function(a, b) return a.mtime < b.mtime end)
  return out
end

-- After a download of `size` bytes: evict the least recently used files
-- (their mtime is bumped on every use) until the cache is under its cap.
-- An open SQLite handle keeps reading an evicted file (unlink semantics).
local function account(size, keep)
  local root = cache_root() .. "/s3"
  if not cache.total then
    cache.total = 0
    for _, f in ipairs(cached_files(root)) do cache.total = cache.total + f.size end
  else
    cache.total = cache.total + size
  end
  local cap = cache_max()
  if cache.total <= cap then return end
  local files = cached_files(root)
  cache.total = 0
  for _, f in ipairs(files) do cache.total = cache.total + f.size end
  for _, f in ipairs(files) do
    if cache.total <= cap then break end
    if f.path ~= keep and fs.remove(f.path) then cache.total = cache.total - f.size end
  end
end

-- }======

-- {====== The backend interface (geneva.store.backend)

local function key_of(self, key)
  if self.prefix == "" or key == "" then return self.prefix .. key end
  return self.prefix .. "/" .. key
end

function S3:get(key, _, opts)
  local range = opts and opts.from and opts.from > 0 and { range = { opts.from } } or nil
  local bytes, msg, code = call(self.client.get, self.client, key_of(self, key), range)
  if bytes and opts and opts.max and #bytes > opts.max then
    return nil, ("%s: larger than %d bytes"):format(key, opts.max), "EFBIG"
  end
  return bytes, msg, code
end

function S3:put(key, _, bytes)
  self:check_writable()
  return call(self.client.put, self.client, key_of(self, key), bytes)
end

-- A create whose answer was lost is retried by the client and then meets
-- its own object (412): the bytes tell. Every caller's bytes are unique
-- (they name their writer and time), so equal bytes mean ours.
function S3:put_if_absent(key, _, bytes)
  self:check_writable()
  local k = key_of(self, key)
  local ok, msg, code = call(self.client.put, self.client, k, bytes, { if_none_match = true })
  if not ok and code == "EEXIST" then
    local cur = call(self.client.get, self.client, k)
    if cur == bytes then return true end
  end
  return ok, msg, code
end

-- The names directly under a "directory": objects and common prefixes
function S3:list(key, _, opts)
  local prefix = key_of(self, (key:gsub("/+$", "")))
  prefix = prefix == "" and "" or (prefix .. "/")
  local ok, objects, prefixes = pcall(self.client.list, self.client, prefix, { delimiter = "/" })
  if not ok then return call(error, objects) end
  if opts and opts.details then
    local out = {}
    for _, o in ipairs(objects) do
      local name = o.key:sub(#prefix + 1)
      if name ~= "" and not name:find("/", 1, true) then
        out[#out + 1] = { name = name, size = o.size,
                          mtime = require("geneva.time").parse_iso8601(o.last_modified or "") or 0 }
      end
    end
    table.sort(out, function(a, b) return a.name < b.name end)
    return out
  end
  local seen, out = {}, {}
  local function add(full)
    local name = full:sub(#prefix + 1):gsub("/$", "")
    if name ~= "" and not name:find("/", 1, true) and not seen[name] then
      seen[name] = true
      out[#out + 1] = name
    end
  end
  for _, o in ipairs(objects) do add(o.key) end
  for _, p in ipairs(prefixes) do add(p) end
  table.sort(out)
  return out
end

function S3:delete(key, path)
  self:check_writable()
  fs.remove(path)          -- the mirror's copy, if any
  local ok, msg, code = call(self.client.delete, self.client, key_of(self, key))
  if not ok and code == "ENOENT" then return true end
  return ok, msg, code
end

function S3:delete_tree(key, path)
  self:check_writable()
  fs.remove_tree(path)
  local prefix = key_of(self, key) .. "/"
  local lok, objects = pcall(self.client.list, self.client, prefix)
  if not lok then return call(error, objects) end
  for _, o in ipairs(objects) do
    local ok, dmsg, dcode = call(self.client.delete, self.client, o.key)
    if not ok and dcode ~= "ENOENT" then return nil, dmsg, dcode end
  end
  return true
end

-- The object as a local file: the cached copy (its use recorded for the
-- LRU), else downloaded into place (atomically: a temp name, then rename).
function S3:fetch(key, path)
  if fs.exists(path) then
    fs.utime(path)
    return path
  end
  local ok, msg, code = fs.mkdir_p(path:match("^(.*)/[^/]*$"))
  if not ok then return nil, msg, code end
  ok, msg, code = call(self.client.get_file, self.client, key_of(self, key), path)
  if not ok then return nil, msg, code end
  local st = fs.stat(path)
  account(st and st.size or 0, path)
  return path
end

function S3:upload(key, path, opts)
  self:check_writable()
  return call(self.client.put_file, self.client, key_of(self, key), path,
              { if_none_match = opts and opts.if_absent or nil })
end

function S3:exists(key)
  local ok, info = pcall(self.client.head, self.client, key_of(self, key))
  return ok and info ~= nil
end

function S3:sync_dir() return true end

-- Is there any object under the prefix? (one LIST of one key): a database
-- that holds nothing is, to the CLI, a mistyped URI. Once seen holding
-- something (mount's own LIST, or the marker it wrote), it is not asked again.
function S3:holds_objects()
  if self.nonempty then return true end
  local p = self.prefix == "" and "" or (self.prefix .. "/")
  local ok, objects = pcall(self.client.list, self.client, p, { max_keys = 1, first_page = true })
  if not ok then error(errors.from(objects), 0) end
  self.nonempty = #objects > 0
  return self.nonempty
end

-- dst made from the local file src (never replacing an object); the
-- mirror keeps a copy of it under dst's name too.
function S3:publish(src, dkey, dst)
  local ok, msg, code = self:upload(dkey, src, { if_absent = true })
  if not ok then return nil, msg, code end
  if not fs.link(src, dst) then fs.copy(src, dst) end
  return true
end

-- The backfill start lock (geneva.store.backend.lock): an object made by
-- conditional create, holding its owner's token, time and identity,
-- deleted on close (as a ledger teardown, so a Ctrl-C or SIGTERM that is
-- unwinding does not cut the DELETE short). A holder on this host that is
-- gone (kill -9) is broken at once; one elsewhere keeps it until it is
-- M.STALE_LOCK seconds old (by the writer's clock: keep it well above
-- clock skew).
M.STALE_LOCK = 120

function S3:lock(key, path, opts)
  opts = opts or {}
  local json, time, ledger = require "geneva.json", require "geneva.time", require "geneva.ledger"
  local owner = ledger.owner()
  local token = ("%s-%d-%s"):format(owner.hostname, owner.pid, require("geneva.fs").random_hex(8))
  local body = json.encode({ token = token, at = os.time(), owner = owner })
  local deadline = time.monotonic() + (opts.timeout or 30)
  local nap = 0.02
  while true do
    local ok, msg, code = self:put_if_absent(key, path, body)
    if ok then
      local res = ledger.root():reserve("s3_lock", path)
      res:bind(function()
        local cur = self:get(key)
        local v = cur and json.decode(cur, { null_as_nil = true })
        if type(v) == "table" and v.token == token then self:delete(key, path) end
      end)
      local lock = {}
      function lock.close() res:release() end
      lock.unlock = lock.close
      return setmetatable(lock, { __close = lock.close, __gc = lock.close })
    end
    if code ~= "EEXIST" then return nil, msg, code end
    local cur = self:get(key)
    local ok_json, v = pcall(json.decode, cur or "", { null_as_nil = true })
    if not ok_json then v = nil end
    if type(v) ~= "table" or math.type(v.at) ~= "integer" or os.time() - v.at > (opts.stale or M.STALE_LOCK)
       or not ledger.owner_alive(v.owner) then
      -- its holder died holding it (or it is garbage). Two processes breaking
      -- it at once can race (one deletes the other's new lock: S3 has no
      -- conditional delete); it takes a crashed holder to open that window.
      self:delete(key, path)
    elseif time.monotonic() >= deadline then
      return nil, ("%s is locked by %s"):format(path, tostring(v.token)), "EWOULDBLOCK"
    else
      if not time.sleep(nap) then return nil, "interrupted", "EINTR" end
      nap = math.min(nap * 2, 0.5)
    end
  end
end

function S3:check_writable()
  if self.unsafe then
    errors.throw("unavailable", ("%s ignores conditional writes (If-None-Match: *): two writers could both commit the same version, so geneva does not write there"):format(self.uri))
  end
  if self.denied then
    errors.throw("invalid_argument", ("%s: the credentials (from %s) can read but cannot write there (a test write at connect was refused: %s), so it is open read-only; use credentials allowed s3:PutObject and s3:DeleteObject to change it")
      :format(self.uri, self.client.credentials_source or "?", self.denied), { s3_code = self.denied })
  end
end

-- }======

-- {====== Mounting

-- What connect writes into an empty prefix: the database exists from then on
M.MARKER = "_geneva/database.json"

local mounted = {}     -- mount identity (see M.mount) -> {root =, desc =}

local function safe_part(s, what, uri)
  if s == "" or s == "." or s == ".." or not s:match("^[%w%-_.=+@,]+$") then
    errors.throw("invalid_argument", ("%s: %s '%s' has characters geneva does not use in paths"):format(uri, what, s))
  end
  return s
end

-- M.parse(uri) -> bucket, prefix ("" for the bucket's root)
function M.parse(uri)
  local bucket, rest = tostring(uri):match("^s3://([^/]+)/*(.-)/*$")
  -- the prefix is made of path parts (it names the mirror's directories)
  if not bucket then
    errors.throw("invalid_argument", ("'%s' is not an s3:// URI (s3://bucket/prefix)"):format(tostring(uri)))
  end
  if not bucket:match("^[a-z0-9][a-z0-9.-]+[a-z0-9]$") or #bucket > 63 then
    errors.throw("invalid_argument", ("%s: '%s' is not a valid bucket name"):format(uri, bucket))
  end
  local parts = {}
  for p in rest:gmatch("[^/]+") do parts[#parts + 1] = safe_part(p, "prefix part", uri) end
  return bucket, table.concat(parts, "/")
end

--[[
M.mount(uri [, opts]) -> root, description
Mounts an s3:// database (opts: endpoint, region, profile, path_style;
geneva.connect's doc gives their defaults) and returns its mirror root, the path the
rest of geneva uses as the database's directory. description is plain and
secret-free: what another process (a worker) needs to mount it the same way.
Probes the store for conditional writes once per process (workers, whose
driver probed, pass probe = false). An empty prefix gets M.MARKER, as
connect makes a missing directory (not with create = false: the CLI's
--db, for which nothing there means a mistyped URI).
]]
function M.mount(uri, opts)
  opts = opts or {}
  local bucket, prefix = M.parse(uri)
  local s3 = require "geneva.s3"
  local client = s3.client { bucket = bucket, endpoint = opts.endpoint, region = opts.region,
                             profile = opts.profile, path_style = opts.path_style }
  local endpoint = client.endpoint
  -- one mount per database and way of reaching it: what changes the
  -- requests (region, addressing) or the credentials (a profile, or keys
  -- that changed in the environment) is another mount. The secret enters
  -- the key hashed; the key stays in memory.
  local secret = client:_secrets()
  local id = table.concat({ bucket, prefix, tostring(endpoint), client.region, tostring(client.path_style),
    opts.profile or "", client.access_key_id,
    require("geneva.crypto").sha256(secret.secret_key .. "\0" .. (secret.session_token or ""), "hex") }, "\0")
  if mounted[id] then return mounted[id].root, mounted[id].desc end
  local host = tostring(endpoint):match("^%a[%w+.-]*://([^/]+)") or tostring(endpoint)
  host = host:gsub("[^%w%-_.]", "_")
  if opts.profile then
    -- a mirror of its own: paths route to a mount by its mirror (connect(uri)
    -- and connect(uri, {profile = "b"}) must not share one), and a profile's
    -- downloads are not served to other credentials. Workers given the same
    -- profile compute the same mirror.
    local tag = opts.profile:gsub("[^%w%-_.]", "_")
    if tag ~= opts.profile then tag = tag .. "-" .. require("geneva.crypto").sha256(opts.profile, "hex"):sub(1, 8) end
    host = host .. "@" .. tag
  end
  local root = ("%s/s3/%s/%s%s"):format(cache_root(), host, bucket, prefix ~= "" and ("/" .. prefix) or "")
  errors.io(fs.mkdir_p(root))
  local impl = setmetatable({ client = client, prefix = prefix, uri = uri }, S3)
  local empty
  if opts.probe ~= false then
    -- a plain read first: a wrong key, a missing bucket or an endpoint
    -- that does not answer fail on a request the user knows (a LIST of
    -- the database), not on the write probe's object
    local lok, objects = pcall(client.list, client, prefix == "" and "" or (prefix .. "/"),
                               { max_keys = 1, first_page = true })
    if not lok then error(errors.from(objects), 0) end
    empty = #objects == 0
    impl.nonempty = not empty
  end
  if client.probe_conditional_writes and opts.probe ~= false then
    local ok, safe = pcall(client.probe_conditional_writes, client, key_of(impl, "_geneva/.probe-" .. fs.random_hex(8)))
    if ok and safe == false then
      impl.unsafe = true
      io.stderr:write(("geneva: warning: %s ignores If-None-Match: *: read-only\n"):format(uri))
    elseif not ok and errors.from(safe).s3_code == "AccessDenied" then
      -- credentials that may only read (GetObject, ListBucket): reading
      -- works, and a write says why it cannot (check_writable)
      impl.denied = "AccessDenied"
    elseif not ok then
      error(errors.from(safe), 0)
    end
  end
  if empty and opts.create ~= false and not impl.unsafe and not impl.denied then
    -- connect creates a database as it creates a directory: an object
    -- under the prefix says one is there (M.holds_objects, the CLI's --db)
    local body = require("geneva.json").encode({ geneva = "database", created_at = os.date("!%Y-%m-%dT%H:%M:%SZ") })
    local ok, msg, code = impl:put_if_absent(M.MARKER, nil, body)
    if not ok and code ~= "EEXIST" then errors.io(nil, msg, code) end
    impl.nonempty = true
  end
  require("geneva.store.backend").mount(root, impl)
  local desc = { uri = uri, endpoint = opts.endpoint, region = opts.region, profile = opts.profile,
                 path_style = opts.path_style }
  mounted[id] = { root = root, desc = desc }
  return root, desc
end

-- }======

return M
