-- geneva.runner.ray: backfills on an existing Ray cluster, through the Ray
-- dashboard's Job Submission REST API only (Ray's "Ray Jobs REST API"
-- docs): no Python, no Ray client on the driver. It implements
-- the runner interface of geneva.runner for clusters of type "ray":
--
--   {type = "ray", address = "http://head:8265", token_env | token_file,
--    ca_file, client_cert, client_key, verify, env, ship_host}
--
-- Connect: GET /api/authentication_mode (public; 404 = a Ray without token
-- auth), then GET /api/version, whose ray_version decides which submit
-- fields may be sent (entrypoint_num_cpus/gpus from 2.2, entrypoint_memory
-- from 2.8). A token is sent as `X-Ray-Authorization: Bearer ...` (the
-- header that also passes the Kubernetes API server's proxy) when the
-- cluster asks for one; it comes from token_env / token_file, else Ray's own
-- lookup: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token. It never
-- appears in an error, an event, a lease or describe(): messages name where
-- it came from, never what it is.
--
-- Packages: the manifest's zip (working_dir) and, with ship_host, the worker
-- runtime (the geneva binary and the libraries it needs beyond glibc, as a
-- py_modules package shared by every manifest) are uploaded as
-- gcs://_ray_pkg_<sha256 of the zip>.zip: GET first (which also pins it),
-- PUT only on 404, so an unchanged package uploads nothing. Ray refuses
-- bodies of 100 MiB or more: that is checked before, naming the largest
-- files. Without ship_host the workers run the geneva of this host by its
-- absolute path: the cluster's nodes must have it there (true of a cluster
-- on this machine, such as the emulator in tests/fakes).
-- Packages are not leased: Ray owns their lifetime, and there is nothing for
-- a lease to do. The REST API has no way to delete one; the GCS keeps an
-- upload pinned for RAY_RUNTIME_ENV_TEMPORARY_REFERENCE_EXPIRATION_S (600 s
-- by default), then only while some job's runtime_env uses it; and a
-- content-addressed name is shared by everyone who uploads the same bytes,
-- so deleting "ours" could break another user's running job.
--
-- Workers: per backfill job, one submission per worker slot (the job's
-- concurrency, else what the free CPUs/GPUs in /api/cluster_status allow
-- for the UDF's num_cpus/num_gpus, else DEFAULT_SLOTS; never more than the
-- tasks), each running `geneva worker --queue DB JOB --slot N` for many
-- tasks; tasks go through the job's queue in the database
-- (geneva.backfill.queue), never through Ray. Submission ids are
-- geneva-<job>-<slot>-<attempt>: a submit whose answer was lost and that is
-- answered "already exists" on retry is recognised by its metadata, not
-- doubled. A submission that ends FAILED or STOPPED (or that the dashboard
-- forgot) has its claimed tasks retried and its slot resubmitted under the
-- next attempt, up to SLOT_ATTEMPTS; its message and the last lines of its
-- log go to the job's events.
--
-- Lifetimes: every submission is leased (kind ray_job, in a durable scope
-- journalled in the db and this user's state dir) before it is submitted,
-- with the address, the submission id and the token's reference (behind a
-- Kubernetes service proxy, also the kubeconfig reference that rebuilds
-- the proxy's credentials: geneva.runner.kuberay.proxy_transport); its
-- metadata carries the geneva job, the lease id and the lease's owner, which
-- is how `geneva reap` (reap_verify) tells a Ray job of ours from any other.
-- Teardown (close, scope close, signals): POST stop to every live
-- submission, again every second until terminal (a stop on a PENDING job
-- can be a no-op upstream, ray#58353), then DELETE, then GET until 404.
--
-- Data: workers open the database by its path. A local directory works when
-- the Ray nodes share it at the same path (a cluster on this machine, or a
-- shared mount); provisioning says so on stderr when the dashboard is not on
-- this host.
local http = require "geneva.http"
local json = require "geneva.json"
local errors = require "geneva.errors"
local ledger = require "geneva.ledger"
local time = require "geneva.time"
local fs = require "geneva.fs"
local queue = require "geneva.backfill.queue"

local M = {}

M.STATUS_EVERY = 1.0      -- seconds between looks at the submissions' statuses
M.STOP_DEADLINE = 20      -- seconds for every submission to stop at teardown
M.SLOT_ATTEMPTS = 3       -- submissions per slot in all
M.DEFAULT_SLOTS = 4       -- slots when the cluster's free resources are unknown
M.MAX_UPLOAD = 100 * 1024 * 1024   -- aiohttp's client_max_size: a body this big is a 413
M.USER_AGENT = "geneva-ray/1"      -- not a browser (the dashboard's guard)
M.STALE = nil             -- heartbeat timeout for the queue (nil: queue.STALE)
M.LOST_AFTER = 60         -- seconds of an unreachable dashboard before the job fails
M.UNREACHABLE_TEARDOWN = 10   -- seconds of no answer at all before teardown gives up (leases stay)
M.LOG_EVERY = 2.0         -- seconds between pulls of a running submission's log
M.MAX_LOG_FETCH = 64 * 1024 * 1024   -- a log bigger than this is not pulled any more

local TERMINAL = { STOPPED = true, SUCCEEDED = true, FAILED = true }

-- {====== Small helpers

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local clean = errors.clean      -- a remote answer may be anything

local function first_line(s) return clean((tostring(s or "")):match("[^\n]*"), 200) end

local function last_lines(text, n)
  local lines = {}
  for l in tostring(text or ""):gmatch("[^\n]+") do
    lines[#lines + 1] = l
    if #lines > n then table.remove(lines, 1) end
  end
  return lines
end

-- "2.52.0" -> {2, 52, 0}
local function parse_version(s)
  local t = {}
  for part in tostring(s):gmatch("[^.]+") do
    t[#t + 1] = math.tointeger(tonumber(part:match("^%d+") or "0")) or 0
    if #t == 3 then break end
  end
  while #t < 3 do t[#t + 1] = 0 end
  return t
end

local function at_least(v, a, b)
  return v[1] > a or (v[1] == a and v[2] >= b)
end

-- M.is_local_address(url) -> boolean: the dashboard runs on this host
function M.is_local_address(url)
  local host = tostring(url):match("^%a[%w+.-]*://%[([^%]]+)%]") or tostring(url):match("^%a[%w+.-]*://([^/:]+)")
  if not host then return false end
  host = host:lower()
  if host == "localhost" or host == "::1" or host:match("^127%.") or host == "0.0.0.0" then return true end
  local me = require("geneva.proc").self().hostname
  return me ~= nil and (host == me:lower() or host == me:lower():match("^[^.]+"))
end

local function owner_string(o)
  return ("%s/%s/%s/%s"):format(tostring(o.hostname), tostring(o.boot_id), tostring(o.pid), tostring(o.start_time))
end

-- }======

-- {====== The dashboard connection

local TLS_FIELDS = { "ca_file", "client_cert", "client_key", "verify" }

local function read_token_file(path, what)
  local f, msg = io.open(path, "rb")
  if not f then errors.throw("invalid_argument", ("%s: cannot read the token file: %s"):format(what, clean(msg))) end
  local v = (f:read("a") or ""):gsub("%s+$", ""):gsub("^%s+", "")
  f:close()
  if v == "" then errors.throw("invalid_argument", ("%s: the token file %s is empty"):format(what, path)) end
  return v
end

--[[
M.resolve_token(spec [, getenv]) -> token, source | nil
The cluster's token_env / token_file, else Ray's own order: RAY_AUTH_TOKEN,
RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token. source says where it came from
(for messages: never the token). Raises invalid_argument for a reference
that cannot be read.
]]
function M.resolve_token(spec, getenv)
  getenv = getenv or os.getenv
  if spec.token_env or spec.token_file then
    local tok = require("geneva.context.cluster").resolve_token(spec, getenv)
    return tok, spec.token_env and ("token_env " .. spec.token_env) or ("token_file " .. spec.token_file)
  end
  local v = getenv("RAY_AUTH_TOKEN")
  if v and v:match("%S") then return (v:gsub("^%s+", ""):gsub("%s+$", "")), "RAY_AUTH_TOKEN" end
  local p = getenv("RAY_AUTH_TOKEN_PATH")
  if p and p ~= "" then return read_token_file(p, "RAY_AUTH_TOKEN_PATH"), "RAY_AUTH_TOKEN_PATH " .. p end
  local home = fs.home()
  local path = home and home .. "/.ray/auth_token"
  if path and fs.exists(path) then return read_token_file(path, path), path end
  return nil
end

local Conn = {}
Conn.__index = Conn

local function new_conn(fields)
  local c = setmetatable({}, Conn)
  for k, v in pairs(fields) do c[k] = v end
  c.address = tostring(c.address):gsub("/+$", "")
  return c
end

--[[
conn:request(method, path [, {json=, body_file=, timeout=, retry=}])
  -> status, data (decoded JSON or nil), body | nil, msg, code
Transport failures return nil, msg, code; HTTP statuses are answers.
]]
function Conn:request(method, path, o)
  o = o or {}
  local headers = { ["User-Agent"] = M.USER_AGENT, Accept = "application/json" }
  if self.token and self.send_token then headers["X-Ray-Authorization"] = "Bearer " .. self.token end
  local req = { url = self.address .. path, method = method, headers = headers,
                timeout = o.timeout or 30, connect_timeout = o.connect_timeout or 5, retry = o.retry,
                max_response_bytes = o.max_response_bytes }
  if o.json ~= nil then
    req.body = json.encode(o.json)
    headers["Content-Type"] = "application/json"
  elseif o.body_file then
    req.body_file = o.body_file
    headers["Content-Type"] = "application/octet-stream"
  end
  local refreshed, sent = false, {}
  while true do
    -- a dashboard behind the Kubernetes API's service proxy (runner.kuberay):
    -- the API server's own TLS and credentials, fresh for each request
    if self.transport then
      local ok, t = pcall(self.transport.opts)      -- may run an exec plugin: it may fail
      if not ok then
        local e = errors.from(t)
        if e.code == "interrupted" then error(e, 0) end
        return nil, e.message, e.code
      end
      for k in pairs(sent) do req[k] = nil end   -- the credential before a refresh
      sent = t
      for k, v in pairs(t) do req[k] = v end
    end
    for _, k in ipairs(TLS_FIELDS) do
      if self.tls and self.tls[k] ~= nil then req[k] = self.tls[k] end
    end
    local status, hdrs, body = http.request(req)
    if not status then return nil, hdrs, body end
    local data
    if body and body ~= "" and tostring(hdrs["content-type"] or ""):find("json", 1, true) then
      local ok, v = pcall(json.decode, body)
      if ok then data = v end
    end
    -- the API server's 401 (a Status object; Ray's own is plain text): its
    -- credential expired (an exec plugin's, a rotated token file): renew
    -- it and ask once more
    if status == 401 and self.transport and not refreshed and type(data) == "table" and data.kind == "Status"
       and pcall(self.transport.refresh) then
      refreshed = true
    else
      return status, data, body
    end
  end
end

-- The error for a request that did not get an answer
local function unreachable(conn, what, msg)
  errors.throw("unavailable", ("cannot reach the Ray dashboard at %s (%s): %s"):format(conn.address, what, clean(msg)))
end

local function auth_error(conn, status, body, what)
  local why
  if status == 401 then
    why = conn.send_token and "the token was not accepted as sent"
      or "it wants a token and none was sent (set token_env or token_file on the cluster, or RAY_AUTH_TOKEN)"
  else
    why = ("it rejected the token from %s"):format(conn.token_source or "?")
  end
  errors.throw("invalid_argument", ("the Ray dashboard at %s refused %s: %s (%d %s)")
    :format(conn.address, what, why, status, first_line(body)))
end

local function not_ray(conn, what, status, body)
  errors.throw("unavailable", ("%s does not answer as a Ray dashboard: %s answered %d %s")
    :format(conn.address, what, status, first_line(body)))
end

-- An answer that is not what a request wants: auth errors, else unavailable
local function bad_answer(conn, what, status, body)
  if status == 401 or status == 403 then auth_error(conn, status, body, what) end
  errors.throw("unavailable", ("Ray dashboard %s: %s answered %d: %s"):format(conn.address, what, status, first_line(body)))
end

--[[
M.connect(spec) -> conn: talks to the dashboard of a validated ray cluster
spec: authentication mode, token, version. Raises unavailable when it does
not answer or answers as something else, invalid_argument for token
trouble (401, 403, a token needed and none found).
]]
function M.connect(spec)
  local tls = {}
  for _, k in ipairs(TLS_FIELDS) do tls[k] = spec[k] end
  local conn = new_conn{ address = spec.address, tls = tls, transport = spec.transport }
  local st, data, body = conn:request("GET", "/api/authentication_mode", { retry = true, timeout = 15 })
  if not st then unreachable(conn, "GET /api/authentication_mode", data) end
  if st == 404 then
    conn.auth_mode = nil                -- before Ray 2.52: no token auth
  elseif st == 200 and type(data) == "table" and type(data.authentication_mode) == "string" then
    conn.auth_mode = clean(data.authentication_mode, 40)
  elseif st == 401 or st == 403 then
    conn.auth_mode = "token"            -- a proxy in front that wants it
  else
    not_ray(conn, "GET /api/authentication_mode", st, body)
  end
  if conn.auth_mode and conn.auth_mode ~= "disabled" then
    local tok, source = M.resolve_token(spec)
    if not tok then
      errors.throw("invalid_argument", ("the Ray dashboard at %s wants a token (authentication mode %s): set token_env or token_file on the cluster, or RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")
        :format(conn.address, clean(conn.auth_mode, 40)))
    end
    conn.token, conn.token_source, conn.send_token = tok, source, true
  end
  st, data, body = conn:request("GET", "/api/version", { retry = true, timeout = 15 })
  if not st then unreachable(conn, "GET /api/version", data) end
  if st == 401 or st == 403 then auth_error(conn, st, body, "GET /api/version") end
  if st == 404 then
    errors.throw("unavailable", ("%s has no Ray Jobs API (GET /api/version answered 404): not a Ray dashboard, or a Ray older than 1.9")
      :format(conn.address))
  end
  if st ~= 200 or type(data) ~= "table" or type(data.ray_version) ~= "string" then
    not_ray(conn, "GET /api/version", st, body)
  end
  conn.ray_version = clean(data.ray_version, 40)
  conn.api_version = type(data.version) == "string" and clean(data.version, 20) or nil
  conn.v = parse_version(conn.ray_version)
  if not at_least(conn.v, 2, 0) then
    errors.throw("unavailable", ("the Ray cluster at %s runs Ray %s: geneva needs Ray 2.0 or later (submission ids)")
      :format(conn.address, conn.ray_version))
  end
  return conn
end

-- conn:free() -> {CPU = n, GPU = n, ...} free now | nil (unknown: no
-- autoscaler status on this cluster)
function Conn:free()
  local st, data = self:request("GET", "/api/cluster_status", { timeout = 10 })
  if st ~= 200 or type(data) ~= "table" or type(data.data) ~= "table" then return nil end
  local cs = data.data.clusterStatus or data.data.cluster_status
  local lm = type(cs) == "table" and (cs.loadMetricsReport or cs.load_metrics_report)
  local usage = type(lm) == "table" and lm.usage
  if type(usage) ~= "table" then return nil end
  local free = {}
  for k, v in pairs(usage) do
    if type(k) == "string" and type(v) == "table" and type(v[1]) == "number" and type(v[2]) == "number" then
      free[k] = math.max(0, v[2] - v[1])
    end
  end
  return free
end

-- A JobDetails that is the submission we made: our metadata, our lease
function M.is_ours(details, lease_id, owner, job)
  local m = type(details) == "table" and details.metadata
  return type(m) == "table" and m.geneva_lease == lease_id and m.geneva_owner == owner
    and m.geneva_job == job
end

-- conn:job(sid [, quick]) -> JobDetails | false (404) | nil, why. quick:
-- one try with short timeouts (reap, on every context entry, must not hang
-- on a dashboard that is gone)
function Conn:job(sid, quick)
  local st, data, body = self:request("GET", "/api/jobs/" .. sid, quick and { timeout = 5, connect_timeout = 2 }
                                                                   or { timeout = 15, retry = true })
  if not st then return nil, data end
  if st == 404 then return false end
  if st == 200 and type(data) == "table" and type(data.status) == "string" then return data end
  return nil, ("GET /api/jobs/%s answered %d %s"):format(sid, st, first_line(body))
end

-- conn:stop(sid) -> true | nil, why (a 404 counts as stopped: gone)
function Conn:stop(sid)
  local st, data, body = self:request("POST", "/api/jobs/" .. sid .. "/stop", { timeout = 15 })
  if not st then return nil, data end
  if st == 200 or st == 404 then return true end
  return nil, ("POST /api/jobs/%s/stop answered %d %s"):format(sid, st, first_line(body))
end

-- conn:delete(sid) -> true (deleted or gone) | nil, why
function Conn:delete(sid)
  local st, data, body = self:request("DELETE", "/api/jobs/" .. sid, { timeout = 15, retry = true })
  if not st then return nil, data end
  if st == 200 or st == 404 then return true end
  return nil, ("DELETE /api/jobs/%s answered %d %s"):format(sid, st, first_line(body))
end

-- conn:log_text(sid) -> the submission's whole log | nil (Ray has no
-- offset parameter: GET /api/jobs/{id}/logs answers all of it)
function Conn:log_text(sid)
  local st, data = self:request("GET", "/api/jobs/" .. sid .. "/logs",
                                { timeout = 15, max_response_bytes = M.MAX_LOG_FETCH })
  if st ~= 200 or type(data) ~= "table" or type(data.logs) ~= "string" then return nil end
  return data.logs
end

-- conn:logs(sid, n) -> the last n lines of the submission's log (may be {})
function Conn:logs(sid, n)
  local out = {}
  for i, l in ipairs(last_lines(self:log_text(sid), n)) do out[i] = clean(l, 300) end
  return out
end

--[[
conn:stop_all(sids [, deadline_s]) -> gone (set of sids), failures (array)
Stops every submission (re-stopping each second until it is terminal),
deletes it (re-deleting each second: a 5xx may pass) and checks it is gone
(404). What could not be stopped or deleted in time is in failures.
]]
function Conn:stop_all(sids, deadline_s)
  local deadline = time.monotonic() + (deadline_s or M.STOP_DEADLINE)
  local state, gone, failures = {}, {}, {}
  local unreachable_since        -- no answer at all since then
  for _, sid in ipairs(sids) do state[sid] = { next_stop = 0, next_delete = 0 } end
  while true do
    local waiting = 0
    for _, sid in ipairs(sids) do
      local s = state[sid]
      if not gone[sid] then
        local d, why = self:job(sid)
        if d ~= nil then unreachable_since = nil end
        if d == false then
          gone[sid] = true
        elseif d == nil then
          unreachable_since = unreachable_since or time.monotonic()
          s.why = why
          waiting = waiting + 1
        elseif TERMINAL[d.status] then
          s.terminal = true
          if time.monotonic() >= s.next_delete then   -- gone is confirmed by the next look
            local ok, derr = self:delete(sid)
            s.why = not ok and derr or "still listed"
            s.next_delete = time.monotonic() + 1
          end
          waiting = waiting + 1
        else
          if time.monotonic() >= s.next_stop then
            local ok, serr = self:stop(sid)
            if not ok then s.why = serr end
            s.next_stop = time.monotonic() + 1
          end
          s.why = s.why or ("still " .. clean(d.status, 20))
          waiting = waiting + 1
        end
      end
    end
    if waiting == 0 or time.monotonic() > deadline
       or (unreachable_since and time.monotonic() - unreachable_since > M.UNREACHABLE_TEARDOWN) then
      break
    end
    time.sleep(0.1)
  end
  for _, sid in ipairs(sids) do
    local s = state[sid]
    if not gone[sid] then
      if s.terminal then
        failures[#failures + 1] = ("%s: not deleted (%s)"):format(sid, clean(s.why or "still listed"))
      else
        failures[#failures + 1] = ("%s: not stopped within %ds (%s)"):format(sid, deadline_s or M.STOP_DEADLINE,
          clean(s.why or "?"))
      end
    end
  end
  return gone, failures
end

-- }======

-- {====== Packages

-- The 100 MiB cap, before any byte goes: the package's size and its
-- largest files (files: array of {path, size}) in the error.
function M.check_package_size(what, size, files)
  if size < M.MAX_UPLOAD then return true end
  local sorted = {}
  for i, f in ipairs(files or {}) do sorted[i] = f end
  table.sort(sorted, function(a, b) return (a.size or 0) > (b.size or 0) end)
  local parts = {}
  for i = 1, math.min(5, #sorted) do
    parts[i] = ("%s (%.1f MiB)"):format(sorted[i].path, (sorted[i].size or 0) / 1048576)
  end
  errors.throw("invalid_argument", ("%s is %.1f MiB: Ray refuses uploads of 100 MiB or more%s; keep large data in the database or object storage, not in the package")
    :format(what, size / 1048576, #parts > 0 and ("; largest files: " .. table.concat(parts, ", ")) or ""))
end

-- M.package_name(zip_path) -> "_ray_pkg_<32 hex of its sha256>.zip"
function M.package_name(path)
  local hex = errors.io(fs.sha256_file(path))
  return "_ray_pkg_" .. hex:sub(1, 32) .. ".zip"
end

-- conn:ensure_package(name, path) -> "cached" | "uploaded". GET first: it
-- pins the package for the jobs about to use it; PUT only on 404.
function Conn:ensure_package(name, path)
  local route = "/api/packages/gcs/" .. name
  local st, data, body = self:request("GET", route, { retry = true, timeout = 30 })
  if not st then unreachable(self, "GET " .. route, data) end
  if st == 200 then return "cached" end
  if st ~= 404 then bad_answer(self, "GET " .. route, st, body) end
  st, data, body = self:request("PUT", route, { body_file = path, retry = true, timeout = 600 })
  if not st then unreachable(self, "PUT " .. route, data) end
  if st ~= 200 then bad_answer(self, "PUT " .. route, st, body) end
  return "uploaded"
end

-- The worker runtime (ship_host): bin/geneva and the libraries it needs
-- beyond glibc under geneva_runtime/, zipped once per content into the
-- db's package store. -> path, files
local function runtime_package(db_dir)
  local manifest = require "geneva.context.manifest"
  local exe = require("geneva.runner").worker_exe()
  local entries = { { name = "geneva_runtime/bin/geneva", path = exe, mode = "exec" } }
  for _, l in ipairs(manifest.host_libs(exe)) do
    entries[#entries + 1] = { name = "geneva_runtime/lib/" .. l[1], path = l[2] }
  end
  local list, files = {}, {}
  for i, e in ipairs(entries) do
    local hex, size = errors.io(fs.sha256_file(e.path))
    list[i] = { e.name, size, hex }
    files[i] = { path = e.name, size = size }
  end
  local sum = fs.sha256(json.canonical(list))
  local dir = db_dir .. "/_geneva/packages"
  local path = ("%s/runtime-%s.zip"):format(dir, sum)
  if not fs.exists(path) then
    errors.io(fs.mkdir_p(dir))
    local tmp = path .. ".tmp-" .. fs.random_hex(8)
    local ok, err, code = require("geneva.zip").create(tmp, entries)
    if not ok then os.remove(tmp) errors.io(nil, err, code) end
    errors.io(fs.rename(tmp, path))
  end
  return path, files
end

-- }======

-- {====== The runner

local Runner = {}
Runner.__index = Runner
Runner.__name = "geneva.runner.ray.Runner"

-- M.journals(db_dir) -> the lease journals of a scope of remote
-- resources: this user's, then the db's. A lease is written to each in
-- turn, so a kill -9 between the two leaves the copy reap trusts (and
-- follows a kubeconfig from), not one it must refuse forever.
local function journals(db_dir)
  local dirs = {}
  local user = ledger.user_journal()
  if user then dirs[#dirs + 1] = user end
  dirs[#dirs + 1] = db_dir .. "/_geneva/leases"
  return dirs
end
M.journals = journals

-- o: {conn, db_dir, parent (scope), exe, lua_path, working_dir, py_modules,
--     manifest_exe, env_refs = {spec env tables} | env = resolved table,
--     refs = {token_env=, token_file=}, notes = {lines}}
local function new_runner(o)
  local self = setmetatable({
    conn = o.conn, db_dir = o.db_dir, store = o.store, exe = o.exe, lua_path = o.lua_path, working_dir = o.working_dir,
    packages = o.packages or {},
    py_modules = o.py_modules, manifest_exe = o.manifest_exe, env_refs = o.env_refs, env = o.env,
    refs = o.refs or {}, notes = o.notes or {}, max_slots = o.max_slots,
    jobs = {}, subs = {}, order = {}, next_status = 0, status_failures = 0, closed = false,
  }, Runner)
  self.scope = ledger.scope{ name = "ray " .. o.conn.address, parent = o.parent,
                             journal = journals(o.db_dir), durable = true }
  return self
end

-- The workers' environment: the cluster's and the manifest's env, secrets
-- resolved now (at submit time) and never kept.
function Runner:env_vars()
  local out = json.object()
  if self.env then
    for k, v in pairs(self.env) do out[k] = v end
  else
    local resolve = require("geneva.context.cluster").resolve_env
    for _, env in ipairs(self.env_refs or {}) do
      for k, v in pairs(resolve(env)) do out[k] = v end
    end
  end
  return out
end

local function entrypoint(self, js, sub)
  local exe
  local pre = ""
  if self.manifest_exe then
    -- ship_host in the manifest: its bin/geneva in the working_dir (Ray
    -- unpacks packages without file modes)
    pre = 'chmod u+x "$PWD/bin/geneva" 2>/dev/null; LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" '
    exe = '"$PWD/bin/geneva"'
  elseif self.py_modules then
    -- the runtime package: a py_modules dir on PYTHONPATH holds geneva_runtime/
    pre = 'R=; IFS=:; for d in $PYTHONPATH; do [ -f "$d/geneva_runtime/bin/geneva" ] && R="$d/geneva_runtime" && break; done; unset IFS; '
      .. '[ -n "$R" ] || { echo "geneva: the worker runtime package is not on PYTHONPATH" >&2; exit 3; }; '
      .. 'chmod u+x "$R/bin/geneva" 2>/dev/null; LD_LIBRARY_PATH="$R/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" '
    exe = '"$R/bin/geneva"'
  else
    exe = sh_quote(self.exe)
  end
  local lua_path = sh_quote(self.lua_path)
  if self.working_dir then
    -- the manifest's modules, then its files' root (context.manifest.lua_path)
    lua_path = '"$PWD/lua/?.lua;$PWD/lua/?/init.lua;$PWD/?.lua;$PWD/?/init.lua;"' .. lua_path
  end
  local db = sh_quote(self.db_dir)
  if self.store then
    -- an object store: the workers mount it themselves, wherever they run
    db = sh_quote(self.store.uri) .. " --store " .. sh_quote(json.encode(self.store))
  end
  return ("%sLUA_PATH=%s exec %s worker --queue %s %s --slot %d --id %s")
    :format(pre, lua_path, exe, db, sh_quote(js.id), sub.slot, sh_quote(sub.sid))
end

local function log(events, job, line)
  events[#events + 1] = { kind = "log", job = job, line = "ray: " .. line }
end

-- The lines a submission's log has gained since the last pull, as log
-- events tagged by slot. Ray answers the whole log every time: what was
-- seen is skipped by length (a shorter log is a new one: a restarted
-- dashboard), and a last line without its newline waits for the next pull.
local function pull_log(self, sub, events)
  if sub.log_failed then return end
  sub.log_pulled = time.monotonic()
  local text = self.conn:log_text(sub.sid)
  if not text then return end
  local seen = sub.log_seen or 0
  if #text < seen then seen = 0 end
  local upto = text:find("\n[^\n]*$", seen + 1)
  if not upto then return end
  for l in text:sub(seen + 1, upto):gmatch("([^\n]*)\n") do
    events[#events + 1] = { kind = "log", job = sub.job, line = ("[slot %d] %s"):format(sub.slot, clean(l, 2000)) }
  end
  sub.log_seen = upto
end

local function submission_body(self, js, sub)
  local udf = js.udf or {}
  local renv = json.object()
  if self.working_dir then renv.working_dir = self.working_dir end
  if self.py_modules then renv.py_modules = json.array{ self.py_modules } end
  renv.env_vars = self:env_vars()
  local me = ledger.owner()
  local body = {
    entrypoint = entrypoint(self, js, sub),
    submission_id = sub.sid,
    runtime_env = renv,
    metadata = { geneva = "backfill-worker", geneva_job = js.id, geneva_lease = sub.lease_id,
                 geneva_owner = owner_string(me), geneva_slot = tostring(sub.slot) },
  }
  local v = self.conn.v
  if at_least(v, 2, 2) then
    body.entrypoint_num_cpus = udf.num_cpus or 1
    if (udf.num_gpus or 0) > 0 then body.entrypoint_num_gpus = udf.num_gpus end
  end
  if udf.memory then
    if at_least(v, 2, 8) then
      body.entrypoint_memory = math.tointeger(udf.memory)
    elseif not js.memory_warned then
      js.memory_warned = true
      js.notes = js.notes or {}
      js.notes[#js.notes + 1] = ("Ray %s takes no entrypoint_memory (2.8 and later): the UDF's memory is not reserved")
        :format(self.conn.ray_version)
    end
  end
  return body
end

-- POST /api/jobs/ with retries; a duplicate-id answer after a lost answer
-- is ours when the job carries this submission's metadata.
local function post_submission(self, body, sub)
  local conn = self.conn
  local delay, last = 0.25, "?"
  for _ = 1, 5 do
    local st, data, raw = conn:request("POST", "/api/jobs/", { json = body, timeout = 30 })
    if st == 200 then return "submitted" end
    if st == 500 and raw and (raw:find("Please use a different submission_id", 1, true)
                              or raw:find("already exists", 1, true)) then
      local d, why = conn:job(sub.sid)
      if d and M.is_ours(d, sub.lease_id, body.metadata.geneva_owner, body.metadata.geneva_job) then
        return "recovered"
      end
      if d == nil then
        last = why
      else
        errors.throw("conflict", ("Ray job %s already exists and is not this submission (its metadata differs)"):format(sub.sid))
      end
    elseif st and st ~= 500 and st ~= 502 and st ~= 503 and st ~= 504 then
      if st == 401 or st == 403 then auth_error(conn, st, raw, "POST /api/jobs/") end
      errors.throw("unavailable", ("the Ray dashboard at %s refused submission %s: %d %s")
        :format(conn.address, sub.sid, st, first_line(raw)))
    else
      last = st and ("%d %s"):format(st, first_line(raw)) or clean(data)
    end
    local ok = time.sleep(delay)
    if not ok then errors.throw("interrupted", "interrupted") end
    delay = math.min(delay * 2, 4)
  end
  errors.throw("unavailable", ("cannot submit %s to the Ray dashboard at %s: %s (after 5 attempts)")
    :format(sub.sid, conn.address, clean(last)))
end

-- Submits a worker for slot `slot` of job js, leased first.
local function submit_slot(self, js, slot, attempt, events)
  local sid = ("geneva-%s-%d-%d"):format(js.id, slot, attempt)
  local info = { address = self.conn.address, submission_id = sid, job = js.id, slot = slot,
                 token_env = self.refs.token_env, token_file = self.refs.token_file,
                 kube = self.conn.transport and self.conn.transport.ref or nil }
  for _, k in ipairs(TLS_FIELDS) do info[k] = self.conn.tls and self.conn.tls[k] end
  local res = self.scope:reserve("ray_job", sid, info)
  local lease = res:lease()
  local sub = { sid = sid, job = js.id, slot = slot, attempt = attempt, status = "SUBMITTING", res = res,
                lease_id = lease and lease.id or sid }
  self.subs[sid] = sub
  self.order[#self.order + 1] = sid
  js.slots[slot] = sub
  -- bound before the submit: an interrupt mid-submit still stops what got made
  res:bind(function()
    if not sub.gone then self:_teardown() end
    if not sub.gone then
      error(("Ray job %s at %s is not stopped and deleted: %s"):format(sid, self.conn.address,
        self.teardown_errors or "?"), 0)
    end
  end)
  local how = post_submission(self, submission_body(self, js, sub), sub)
  sub.status = "PENDING"
  sub.submitted_at = time.monotonic()
  log(events, js.id, ("submitted %s (slot %d%s)%s"):format(sid, slot, attempt > 1 and (", attempt " .. attempt) or "",
    how == "recovered" and ": its answer was lost, the retry found it made" or ""))
end

-- The slots a job gets: its concurrency (what the driver published at
-- once), within the cluster's free resources for the UDF's needs.
local function start_slots(self, js, events)
  js.started = true
  local udf = js.udf or {}
  local want = js.disp:open()
  local cpus, gpus = udf.num_cpus or 1, udf.num_gpus or 0
  local free = self.conn:free()
  local cap
  if free and free.CPU then
    -- our workers of ended jobs are on their way out: their share counts as free
    for _, sid in ipairs(self.order) do
      local sub = self.subs[sid]
      local other = self.jobs[sub.job]
      if other ~= js and not sub.ended and not sub.gone and (other.done or other.cancelled or other.failed) then
        local u = other.udf or {}
        free.CPU = free.CPU + (u.num_cpus or 1)
        if free.GPU then free.GPU = free.GPU + (u.num_gpus or 0) end
      end
    end
    cap = cpus > 0 and math.floor(free.CPU / cpus + 1e-9) or want
    if gpus > 0 then cap = math.min(cap, math.floor((free.GPU or 0) / gpus + 1e-9)) end
  else
    cap = self.max_slots or M.DEFAULT_SLOTS
  end
  local n = math.max(1, math.min(want, cap))
  for _, note in ipairs(self.notes) do log(events, js.id, note) end
  log(events, js.id, ("%d worker submission%s for %d tasks on %s (Ray %s; free CPUs %s)")
    :format(n, n == 1 and "" or "s", want, self.conn.address, self.conn.ray_version,
            free and free.CPU and ("%g"):format(free.CPU) or "unknown"))
  js.nslots = n
  for slot = 1, n do submit_slot(self, js, slot, 1, events) end
  for _, note in ipairs(js.notes or {}) do log(events, js.id, note) end
end

-- Every open task of js fails with err (no slot can run them any more)
local function fail_job(js, err, events)
  js.failed = true
  js.disp:fail_open(err, events)
end

-- A submission ended while its job still needs it.
local function submission_ended(self, sub, details, events)
  local js = self.jobs[sub.job]
  if not js or js.cancelled or js.done or js.failed or sub.stopping then return end
  local msg = details and details.message or "the dashboard no longer knows it (restarted?)"
  log(events, js.id, ("worker submission %s %s: %s"):format(sub.sid, sub.status, first_line(msg)))
  local tail = details and self.conn:logs(sub.sid, 10) or {}
  for _, l in ipairs(tail) do log(events, js.id, "  | " .. l) end
  js.disp:requeue_worker(sub.sid, ("ended (Ray job %s)"):format(sub.status), events)
  if js.failed then return end
  if sub.status == "GONE" then
    -- a head restarted without GCS fault tolerance forgets packages too
    for _, pkg in ipairs(self.packages) do
      if type(pkg) == "table" and type(pkg.name) == "string" and type(pkg.path) == "string" then
        local how = self.conn:ensure_package(pkg.name, pkg.path)
        if how == "uploaded" then log(events, js.id, ("package %s uploaded again"):format(pkg.name)) end
      end
    end
  end
  if sub.attempt < M.SLOT_ATTEMPTS then
    submit_slot(self, js, sub.slot, sub.attempt + 1, events)
  else
    js.dead = (js.dead or 0) + 1
    if js.dead >= js.nslots then
      fail_job(js, errors.new("unavailable", ("every worker submission of job %s failed; the last, %s, ended %s: %s%s")
        :format(js.id, sub.sid, sub.status, clean(msg, 2000),
                #tail > 0 and ("\nlast lines of its log:\n" .. table.concat(tail, "\n")) or "")), events)
    end
  end
end

local function lost(self)
  errors.throw("unavailable", ("lost the Ray dashboard at %s for over %gs: %s")
    :format(self.conn.address, M.LOST_AFTER, clean(self.last_status_error)))
end

local function check_submissions(self, events)
  local failures = 0
  local round = time.monotonic()
  if self.unreachable_since and round - self.unreachable_since > M.LOST_AFTER then lost(self) end
  for _, sid in ipairs(self.order) do
    local sub = self.subs[sid]
    if not sub.gone and not sub.ended then
      local d, why = self.conn:job(sid)
      if d == nil then
        failures = failures + 1
        self.last_status_error = why
      else
        local status = d and d.status or "GONE"
        if status ~= sub.status then
          sub.status = clean(status, 20)
          if status == "RUNNING" then
            sub.node = type(d.driver_node_id) == "string" and clean(d.driver_node_id, 64) or nil
            log(events, sub.job, ("%s RUNNING on node %s"):format(sid, sub.node and sub.node:sub(1, 12) or "?"))
          end
          if TERMINAL[status] then pull_log(self, sub, events) end
          if TERMINAL[status] or status == "GONE" then
            sub.ended = true
            if status == "GONE" then sub.gone = true end
            submission_ended(self, sub, d or nil, events)
          end
        end
      end
    end
  end
  for _, sid in ipairs(self.order) do
    local sub = self.subs[sid]
    if sub.status == "RUNNING" and not sub.ended and round - (sub.log_pulled or 0) >= M.LOG_EVERY then
      pull_log(self, sub, events)
    end
  end
  -- an unreachable dashboard: back off, and give up after a minute
  if failures > 0 then
    self.status_failures = self.status_failures + 1
    self.unreachable_since = self.unreachable_since or round
    if time.monotonic() - self.unreachable_since > M.LOST_AFTER then lost(self) end
    self.next_status = time.monotonic() + math.min(M.STATUS_EVERY * 2 ^ self.status_failures, 10)
  else
    self.status_failures, self.unreachable_since = 0, nil
    self.next_status = time.monotonic() + M.STATUS_EVERY
  end
end

-- Submissions that ended for finished jobs: deleted now, leases released
local function tidy(self)
  for _, sid in ipairs(self.order) do
    local sub = self.subs[sid]
    local js = self.jobs[sub.job]
    if not sub.gone and sub.ended and js and (js.done or js.cancelled) then
      if sub.status == "GONE" or self.conn:delete(sid) then
        sub.gone = true
        sub.res:release()
      end
    end
  end
end

function Runner:submit(task)
  if self.closed then errors.throw("invalid_argument", "attempt to use a closed ray runner") end
  local js = self.jobs[task.job]
  if not js then
    js = { id = task.job, slots = {}, udf = task.udf,
           disp = queue.dispatcher(self.db_dir, task.job, { stale = M.STALE }) }
    self.jobs[task.job] = js
  end
  js.disp:publish(task)
end

function Runner:poll(timeout)
  if self.closed then errors.throw("invalid_argument", "attempt to use a closed ray runner") end
  local events = {}
  local deadline = time.monotonic() + (timeout or 0)
  local nap = 0.002
  while true do
    for _, js in pairs(self.jobs) do
      if not (js.cancelled or js.done or js.failed) then
        if not js.started then start_slots(self, js, events) end
        js.disp:poll(events)
      end
    end
    if time.monotonic() >= self.next_status then
      check_submissions(self, events)
      tidy(self)
    end
    local now = time.monotonic()
    if #events > 0 or now >= deadline then return events end
    local ok = time.sleep(math.min(nap, deadline - now))
    if not ok then errors.throw("interrupted", "interrupted") end
    nap = math.min(nap * 2, 0.05)
  end
end

-- cancel(job): the stop marker, open tasks withdrawn, the job's
-- submissions asked to stop (close() confirms and deletes them)
function Runner:cancel(job_id)
  local targets = {}
  for id, js in pairs(self.jobs) do
    if job_id == nil or id == job_id then targets[#targets + 1] = js end
  end
  for _, js in ipairs(targets) do
    js.cancelled = true
    js.disp:cancel()
    for _, sub in pairs(js.slots) do
      if not sub.ended and not sub.gone then
        sub.stopping = true
        self.conn:stop(sub.sid)
      end
    end
  end
end

-- drain(job) -> log events: the last lines of the job's workers' logs,
-- pulled now (the driver writes them before it closes the job's log)
function Runner:drain(job_id)
  local events = {}
  for _, sid in ipairs(self.order) do
    local sub = self.subs[sid]
    if sub.job == job_id and not sub.gone then pcall(pull_log, self, sub, events) end
  end
  return events
end

-- job_done(job) (the driver, when a job has ended): workers are told to
-- stop taking tasks; they exit once idle and are deleted on later polls
-- or at close.
function Runner:job_done(job_id)
  local js = self.jobs[job_id]
  if not js then return end
  js.done = true
  js.disp:stop()
  for _, sub in pairs(js.slots) do sub.stopping = true end
  -- a background job's driver exits next, and its owner may not wait long
  -- for it: its submissions go now, while nothing hurries it
  if self.attached then pcall(self._teardown, self) end
end

function Runner:describe()
  local subs, live = json.array(), 0
  for _, sid in ipairs(self.order) do
    local s = self.subs[sid]
    subs[#subs + 1] = { id = sid, job = s.job, slot = s.slot, attempt = s.attempt, status = s.status,
                        node = s.node }
    if not s.ended and not s.gone then live = live + 1 end
  end
  return { type = "ray", address = self.conn.address, ray_version = self.conn.ray_version,
           auth = self.conn.auth_mode or "none", slots = live, submissions = subs,
           closed = self.closed or nil }
end

-- What attach() needs; holds the resolved Ray token and env: a pipe only.
-- Behind a service proxy, the Kubernetes reference (kubeconfig, context),
-- never the API server's credential: attach() loads it again, so an exec
-- plugin's token or a rotated token file renews in the job's driver too.
function Runner:handoff()
  local c = self.conn
  return { type = "ray", address = c.address, db = self.db_dir, store = self.store,
           kube = c.transport and c.transport.ref or nil, token = c.token, token_source = c.token_source,
           send_token = c.send_token or false, auth_mode = c.auth_mode, ray_version = c.ray_version,
           api_version = c.api_version, tls = c.tls, env = self:env_vars(), exe = self.exe,
           lua_path = self.lua_path, working_dir = self.working_dir, py_modules = self.py_modules,
           manifest_exe = self.manifest_exe, refs = self.refs, max_slots = self.max_slots,
           notes = self.notes, packages = self.packages }
end

-- Stops, deletes and confirms gone every submission not gone yet; queue
-- dirs of jobs whose workers are all gone are removed. Idempotent: a
-- second call after a failure only retries briefly.
function Runner:_teardown()
  local sids = {}
  for _, js in pairs(self.jobs) do pcall(js.disp.stop, js.disp) end
  for _, sid in ipairs(self.order) do
    if not self.subs[sid].gone then sids[#sids + 1] = sid end
  end
  if #sids > 0 then
    local gone, failures = self.conn:stop_all(sids, self.teardown_tried and 3 or M.STOP_DEADLINE)
    self.teardown_tried = true
    for sid in pairs(gone) do self.subs[sid].gone = true end
    self.teardown_errors = #failures > 0 and table.concat(failures, "; ") or nil
  end
  for id, js in pairs(self.jobs) do
    local all = true
    for _, sub in pairs(js.slots) do if not sub.gone then all = false end end
    for _, sid in ipairs(self.order) do
      if self.subs[sid].job == id and not self.subs[sid].gone then all = false end
    end
    if all and not js.removed then
      js.removed = true
      pcall(js.disp.remove, js.disp)
    end
  end
end

-- close(): every submission stopped, deleted and confirmed gone; then the
-- leases go. Raises (leases kept for `geneva reap`) when some could not be.
function Runner:close()
  if self.closed then return true end
  self.closed = true
  local ok, err = pcall(self._teardown, self)
  local sok, errs = self.scope:close()
  if not ok then error(err, 0) end
  if not sok then errors.throw("unavailable", "ray runner teardown: " .. table.concat(errs, "; ")) end
  return true
end
Runner.__close = Runner.close

-- }======

-- {====== Provisioning (the runner interface)

local function check_handoff(h)
  local function str(k, opt)
    if (h[k] == nil and opt) or type(h[k]) == "string" then return end
    errors.throw("invalid_argument", ("ray handoff: %s is not a string"):format(k))
  end
  str("address"); str("db"); str("ray_version"); str("exe", true); str("lua_path")
  str("token", true); str("working_dir", true); str("py_modules", true); str("auth_mode", true)
  if h.env ~= nil and type(h.env) ~= "table" then errors.throw("invalid_argument", "ray handoff: env is not a table") end
  if h.tls ~= nil and type(h.tls) ~= "table" then errors.throw("invalid_argument", "ray handoff: tls is not a table") end
  if h.kube ~= nil and type(h.kube) ~= "table" then errors.throw("invalid_argument", "ray handoff: kube is not a table") end
end

--[[
M.provision(spec, {scope=, db=, manifest=}) -> Runner
Connects (M.connect), uploads the manifest's package (and the runtime with
ship_host) when the cluster lacks it, and says on stderr when a local
database serves a cluster that is not on this host.
]]
function M.provision(spec, env)
  local db = env.db
  if not db then
    errors.throw("invalid_argument", "ray clusters need a database: their workers take tasks from it")
  end
  local db_dir = db.path or db.dir
  local notes = {}
  local conn = M.connect(spec)
  -- said once a context, after connecting (a caller that retries a
  -- dashboard still starting does not repeat it)
  local msg
  if db.store then
    msg = nil
  elseif spec.remote_nodes then
    msg = ("the database %s is a local path, and %s never see this host's files: use an s3:// database (or mount it in them at this same path)")
      :format(db_dir, spec.remote_nodes)
  elseif not M.is_local_address(spec.address) then
    msg = ("the database %s is a local path and the Ray dashboard %s is not on this host: the Ray nodes must mount it at the same path")
      :format(db_dir, spec.address)
  end
  if msg then
    io.stderr:write("geneva: warning: ", msg, "\n")
    notes[#notes + 1] = "warning: " .. msg
  end
  local o = { conn = conn, db_dir = db_dir, store = db.store, parent = env.scope, lua_path = package.path, notes = notes,
              refs = { token_env = spec.token_env, token_file = spec.token_file },
              env_refs = {} }
  local rec = env.manifest
  if rec then
    local manifest = require "geneva.context.manifest"
    local zip = manifest.package_path(db, rec)
    local st = errors.io(fs.stat(zip))
    M.check_package_size(("manifest '%s' package"):format(rec.name or "?"), st.size, rec.files)
    local name = M.package_name(zip)
    local how = conn:ensure_package(name, zip)
    o.working_dir = "gcs://" .. name
    o.packages = o.packages or {}
    o.packages[#o.packages + 1] = { name = name, path = zip }
    notes[#notes + 1] = ("manifest '%s': package %s %s"):format(rec.name or "?", name,
      how == "uploaded" and "uploaded" or "already on the cluster")
    if rec.spec and rec.spec.env then o.env_refs[#o.env_refs + 1] = rec.spec.env end
    if rec.host then o.manifest_exe = true end
  end
  if spec.env then o.env_refs[#o.env_refs + 1] = spec.env end
  if not o.manifest_exe then
    if spec.ship_host then
      local path, files = runtime_package(db_dir)
      local st = errors.io(fs.stat(path))
      M.check_package_size("the worker runtime package (ship_host)", st.size, files)
      local name = M.package_name(path)
      local how = conn:ensure_package(name, path)
      o.py_modules = "gcs://" .. name
      o.packages = o.packages or {}
      o.packages[#o.packages + 1] = { name = name, path = path }
      notes[#notes + 1] = ("worker runtime: package %s %s"):format(name,
        how == "uploaded" and "uploaded" or "already on the cluster")
    else
      o.exe = require("geneva.runner").worker_exe()
    end
  end
  local self = new_runner(o)
  self:env_vars()           -- a reference that cannot be resolved fails now, not at the first submit
  return self
end

-- M.attach(handoff, scope [, {transport=}]) -> Runner making submissions
-- of its own (a background job's driver), on what provision() connected
-- and uploaded. A handoff through a service proxy (h.kube) gets its
-- transport from geneva.runner.kuberay (given, or built here).
function M.attach(h, scope, opts)
  check_handoff(h)
  local transport = opts and opts.transport
  if not transport and h.kube then transport = require("geneva.runner.kuberay").proxy_transport(h.kube) end
  local conn = new_conn{ address = transport and transport.address or h.address, token = h.token,
                         token_source = h.token_source,
                         send_token = h.send_token and h.token ~= nil, auth_mode = h.auth_mode,
                         ray_version = h.ray_version, api_version = h.api_version, tls = h.tls or {},
                         transport = transport }
  conn.v = parse_version(conn.ray_version)
  local env = {}
  for k, v in pairs(h.env or {}) do env[k] = tostring(v) end
  local self = new_runner{ conn = conn, db_dir = h.db, store = type(h.store) == "table" and h.store or nil, parent = scope, exe = h.exe, lua_path = h.lua_path,
                           working_dir = h.working_dir, py_modules = h.py_modules, manifest_exe = h.manifest_exe,
                           env = env, refs = type(h.refs) == "table" and h.refs or {}, max_slots = h.max_slots,
                           notes = type(h.notes) == "table" and h.notes or {},
                           packages = type(h.packages) == "table" and h.packages or {} }
  self.attached = true
  return self
end

-- }======

-- {====== Reap (geneva.context.reap kind "ray_job")

local function is_ref_name(v) return v == nil or (type(v) == "string" and v:match("^[%a_][%w_]*$") ~= nil) end

--[[
M.reap_verify(info, ctx) -> "gone" | "present", target | nil, why
A ray_job lease of a dead driver: the Ray job is ours only when the
dashboard shows it with this lease's id, owner and job in its metadata.
Token references are followed only for a lease of this user's own journal
(ctx.trusted): a lease planted in a shared db must not be able to send a
token anywhere.
]]
function M.reap_verify(info, ctx)
  local ok = pcall(require("geneva.context.cluster").validate, { type = "ray", address = info.address })
  if not ok then return nil, "its address is not a Ray dashboard URL" end
  local sid = info.submission_id
  if type(sid) ~= "string" or not sid:match("^geneva%-[%w%-_]+$") or #sid > 200 then
    return nil, "its submission id is not one geneva makes"
  end
  if type(info.job) ~= "string" then return nil, "it names no job" end
  local tls = {}
  local conn = new_conn{ address = info.address, tls = tls }
  if info.kube ~= nil then
    -- behind a Kubernetes API server's service proxy: its credentials come
    -- from the kubeconfig the lease names (which may run an exec plugin),
    -- followed only from this user's own journal
    if not ctx.trusted then
      return nil, "a Ray job behind a Kubernetes service proxy, leased only in the db's journal: its kubeconfig is not followed"
    end
    local tok, t = pcall(require("geneva.runner.kuberay").proxy_transport, info.kube)
    if not tok then return nil, ("cannot reach its Kubernetes API: %s"):format(clean(tostring(errors.from(t)))) end
    conn = new_conn{ address = t.address, tls = tls, transport = t }
  end
  if ctx.trusted then
    if not is_ref_name(info.token_env) or (info.token_file ~= nil and type(info.token_file) ~= "string") then
      return nil, "bad token reference"
    end
    for _, k in ipairs(TLS_FIELDS) do tls[k] = info[k] end
    local tok, source = M.resolve_token({ token_env = info.token_env, token_file = info.token_file })
    conn.token, conn.token_source, conn.send_token = tok, source, tok ~= nil
  end
  local d, why = conn:job(sid, true)
  if d == false then return "gone" end
  if d == nil then return nil, ("cannot ask %s about %s: %s"):format(conn.address, sid, clean(why)) end
  if not M.is_ours(d, ctx.lease.id, owner_string(ctx.lease.owner), info.job) then
    return nil, ("Ray job %s at %s does not carry this lease's geneva metadata: not ours, left alone"):format(sid, conn.address)
  end
  return "present", { conn = conn, sid = sid }
end

-- M.reap_teardown(target) -> true | false, why
function M.reap_teardown(t)
  local gone, failures = t.conn:stop_all({ t.sid })
  if gone[t.sid] then return true end
  return false, table.concat(failures, "; ")
end

-- }======

return M
