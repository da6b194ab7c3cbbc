-- geneva.kube.client: the few Kubernetes API calls geneva makes, over
-- geneva.http (the Kubernetes API reference: create, get, delete, list, events).
--
--   local kube = require "geneva.kube.client"
--   local c = kube.client(require("geneva.kube.config").load{...})
--   local rc, warnings = c:create(kube.RAYCLUSTERS, ns, obj)
--
-- Requests: JSON in and out (Accept/Content-Type application/json), the
-- bearer token or client certificate of the config, the CA as a PEM blob.
-- Every answer is untrusted: bodies are decoded with geneva.json, and only
-- bounded, printable pieces of them reach a message.
--
-- Credentials: a token file (kubeconfig tokenFile, the service account's
-- projected token) is re-read every TOKEN_FILE_TTL seconds and after a 401;
-- an exec plugin's credential is cached until its expirationTimestamp (less
-- EXPIRY_SKEW) and the plugin is run again, once, after a 401.
--
-- Retries: 429 and 503 are retried after Retry-After (else exponential
-- backoff), at most RETRY_ATTEMPTS times and never past RETRY_FOR seconds;
-- the apiserver answers those before acting, so a POST is safe to repeat.
-- Transport failures are retried for idempotent methods only (geneva.http).
--
-- Errors (M.status_error): the Status object's message and reason, mapped
-- 401/403 -> invalid_argument ("credentials rejected", naming the context
-- and user), 404 -> not_found, 409 -> conflict, 400/422 -> invalid_argument
-- (with the causes), 410 -> conflict (Expired), 429/5xx -> unavailable.
-- Error fields: status (HTTP), reason, causes. No token, key or exec output
-- ever reaches a message: every message is scrubbed of the live token.
--
-- Warnings: `Warning: 299 - "..."` answer headers (deprecations, unknown
-- fields the apiserver pruned) are returned by the helpers and collected in
-- c.warnings (the last MAX_WARNINGS).
local http = require "geneva.http"
local json = require "geneva.json"
local errors = require "geneva.errors"
local time = require "geneva.time"
local kconfig = require "geneva.kube.config"

local M = {}

M.USER_AGENT = "geneva-kube/1"
M.TIMEOUT = 30             -- seconds per request unless opts.timeout
M.RETRY_ATTEMPTS = 5       -- answers of 429/503 in a row before giving up
M.RETRY_FOR = 60           -- seconds of 429/503 retries at most
M.MAX_RETRY_AFTER = 10     -- a longer Retry-After is cut to this
M.TOKEN_FILE_TTL = 60      -- seconds before a token file is read again (client-go: 1 min)
M.EXPIRY_SKEW = 10         -- an exec credential this close to expiry is renewed
M.MAX_WARNINGS = 50
M.MAX_PAGES = 100          -- list pages (limit/continue) followed at most
M.MAX_RESPONSE = 64 * 1024 * 1024

-- Resources geneva uses: {group, version, plural}
M.RAYCLUSTERS = { group = "ray.io", version = "v1", plural = "rayclusters", kind = "RayCluster" }
M.EVENTS = { group = "", version = "v1", plural = "events", kind = "Event" }
M.SECRETS = { group = "", version = "v1", plural = "secrets", kind = "Secret" }

-- {====== helpers

local clean = errors.clean

local function quote(s) return '"' .. tostring(s):gsub("[%c\"\\]", "?") .. '"' end

-- A path segment: names are DNS labels already, but a name read from a
-- server or a file is untrusted, so escape anything else.
local function seg(s)
  s = tostring(s)
  if s == "" or s == "." or s == ".." then error("bad path segment " .. quote(s), 3) end
  return (s:gsub("[^%w%-%._~:]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--[[
M.parse_warnings(value) -> {text, ...}
The texts of a Warning header (RFC 7234 §5.5: code agent "text" ["date"]);
curl joins repeated headers with ", ", which this reads through.
]]
function M.parse_warnings(value)
  local out = {}
  if type(value) ~= "string" then return out end
  local i = 1
  while true do
    local s, e = value:find('%d%d%d%s+%S+%s+"', i)
    if not s then break end
    local j, buf = e + 1, {}
    while j <= #value do
      local ch = value:sub(j, j)
      if ch == "\\" then
        buf[#buf + 1] = value:sub(j + 1, j + 1)
        j = j + 2
      elseif ch == '"' then
        break
      else
        buf[#buf + 1] = ch
        j = j + 1
      end
    end
    out[#out + 1] = clean(table.concat(buf), 500)
    i = j + 1
    -- an optional quoted date follows: skip it
    local ds, de = value:find('^%s*"[^"]*"', i)
    if ds then i = de + 1 end
  end
  return out
end

-- }======

-- {====== errors

local CODES = { [400] = "invalid_argument", [401] = "invalid_argument", [403] = "invalid_argument",
                [404] = "not_found", [409] = "conflict", [410] = "conflict", [422] = "invalid_argument" }

--[[
M.status_error(status, data, body, what, who) -> Error
status: the HTTP status; data: the decoded body (a Status object, or
anything); body: the raw body (for a non-JSON answer); what: the request
("POST rayclusters"); who: {context=, user=, server=} for auth errors.
]]
function M.status_error(status, data, body, what, who)
  local msg, reason, causes
  if type(data) == "table" and data.kind == "Status" then
    msg = type(data.message) == "string" and clean(data.message, 500) or nil
    reason = type(data.reason) == "string" and clean(data.reason, 60) or nil
    local d = data.details
    if type(d) == "table" and type(d.causes) == "table" then
      causes = {}
      for i, c in ipairs(d.causes) do
        if i > 10 then break end
        if type(c) == "table" then
          causes[#causes + 1] = { field = type(c.field) == "string" and clean(c.field, 200) or nil,
                                  reason = type(c.reason) == "string" and clean(c.reason, 60) or nil,
                                  message = type(c.message) == "string" and clean(c.message, 300) or nil }
        end
      end
    end
  end
  if not msg then msg = clean((tostring(body or "")):match("[^\n]*"), 200) end
  local code = CODES[status] or (status >= 500 and "unavailable") or (status == 429 and "unavailable")
    or "invalid_argument"
  who = who or {}
  local text
  if status == 401 or status == 403 then
    text = ("the Kubernetes API server %s rejected the credentials of context %s (user %s)%s: %d %s: %s")
      :format(who.server or "?", quote(who.context or "?"), quote(who.user or "anonymous"),
        status == 403 and " for " .. what or "", status, reason or (status == 401 and "Unauthorized" or "Forbidden"), msg)
  else
    text = ("%s: %d %s: %s"):format(what, status, reason or "", msg)
  end
  if causes and #causes > 0 then
    local parts = {}
    for _, c in ipairs(causes) do
      parts[#parts + 1] = (c.field and (c.field .. ": ") or "") .. (c.message or c.reason or "")
    end
    text = text .. " (" .. table.concat(parts, "; ") .. ")"
  end
  return errors.new(code, text, { status = status, reason = reason, causes = causes })
end

-- }======

-- {====== the client

local Client = {}
Client.__index = Client
Client.__name = "geneva.kube.Client"
Client.__tostring = function(c) return ("kube client: %s (context %s)"):format(c.cfg.server, quote(c.cfg.context)) end

--[[
M.client(cfg [, opts]) -> Client
cfg: from geneva.kube.config.load. opts: sleep (function(seconds), for
tests), now (function() -> epoch seconds, for tests), exec_timeout.
]]
function M.client(cfg, opts)
  assert(type(cfg) == "table" and cfg.server, "bad argument #1 to 'client' (a kube config expected)")
  opts = opts or {}
  local c = setmetatable({ cfg = cfg, warnings = {}, requests = 0,
                           sleep = opts.sleep or time.sleep, now = opts.now or time.now,
                           exec_timeout = opts.exec_timeout }, Client)
  -- the config's own credential is the first cached one
  if cfg.auth.kind == "token" or cfg.auth.kind == "token_file" then
    c.cred = { token = cfg.secret.token, read_at = c.now() }
  end
  return c
end

-- Removes the live secrets from a message (belt and braces: a server may
-- echo what it got)
function Client:scrub(s)
  s = tostring(s)
  for _, v in ipairs { self.cred and self.cred.token, self.cfg.secret.token } do
    if v and #v >= 4 then
      local i = s:find(v, 1, true)
      while i do
        s = s:sub(1, i - 1) .. "***" .. s:sub(i + #v)
        i = s:find(v, i + 3, true)
      end
    end
  end
  return s
end

-- The credential to send now: {token=, client_cert_pem=, client_key_pem=}
-- or nil; force: the last one was rejected (401).
function Client:credential(force)
  local auth, cred = self.cfg.auth, self.cred
  if auth.kind == "token" then
    return cred
  elseif auth.kind == "token_file" then
    if force or not cred or self.now() - cred.read_at >= M.TOKEN_FILE_TTL then
      -- the last good value stays if the file is unreadable for a moment
      local ok, tok = pcall(kconfig.read_token, auth.path, "token file")
      if ok then self.cred = { token = tok, read_at = self.now() }
      elseif not cred then error(tok, 0) end
    end
    return self.cred
  elseif auth.kind == "exec" then
    if force or not cred or (cred.expires and self.now() >= cred.expires - M.EXPIRY_SKEW) then
      self.cred = kconfig.run_exec(self.cfg, { timeout = self.exec_timeout })
      self.exec_runs = (self.exec_runs or 0) + 1
    end
    return self.cred
  end
  return nil
end

--[[
c:transport_opts() -> table of geneva.http options (TLS and bearer_token)
for a request to c.cfg.server made elsewhere (the dashboard through the
service proxy). It holds secrets: merge it into a request, never log it.
]]
function Client:transport_opts()
  local o = {}
  for k, v in pairs(self.cfg.tls) do o[k] = v end
  if self.cfg.secret.client_key_pem then o.client_key_pem = self.cfg.secret.client_key_pem end
  local cred = self:credential(false)
  if cred then
    if cred.token then o.bearer_token = cred.token end
    if cred.client_cert_pem then
      o.client_cert_pem, o.client_key_pem = cred.client_cert_pem, cred.client_key_pem
    end
  end
  return o
end

local function retry_delay(headers, n)
  local ra = headers and tonumber(headers["retry-after"])
  local d = ra or 0.5 * 2 ^ (n - 1)
  return math.max(0, math.min(d, M.MAX_RETRY_AFTER))
end

local function record_warnings(self, headers)
  local ws = M.parse_warnings(headers and headers.warning)
  for _, w in ipairs(ws) do
    self.warnings[#self.warnings + 1] = w
    if #self.warnings > M.MAX_WARNINGS then table.remove(self.warnings, 1) end
  end
  return ws
end

--[[
c:request(method, path [, opts]) -> status, data, headers, warnings, body
path: from the server's root ("/apis/..."), appended to cfg.server (which
may carry a path prefix). opts: json (a Lua value: the body), body (a raw
string), content_type, query (table), headers (table), timeout (seconds).
data: the decoded JSON answer, or nil (empty or not JSON); body: the raw
answer (for M.status_error); warnings: this answer's Warning texts. Any
HTTP status is returned (after the 401 refresh and the 429/503 retries);
a transport failure raises unavailable, a plugin or token file problem
invalid_argument, an interrupt interrupted.
]]
function Client:request(method, path, opts)
  opts = opts or {}
  assert(type(path) == "string" and path:sub(1, 1) == "/", "bad argument #2 to 'request' (a path starting with '/')")
  local headers = { Accept = "application/json", ["User-Agent"] = M.USER_AGENT }
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  local body = opts.body
  if opts.json ~= nil then
    body = json.encode(opts.json)
    headers["Content-Type"] = opts.content_type or "application/json"
  elseif body ~= nil and opts.content_type then
    headers["Content-Type"] = opts.content_type
  end
  local url = self.cfg.server .. path
  local what = method .. " " .. path:gsub("%?.*", "")
  local started, n, refreshed = self.now(), 0, false
  while true do
    n = n + 1
    local req = self:transport_opts()
    req.url, req.method, req.headers, req.body = url, method, headers, body
    req.query = opts.query
    req.timeout = opts.timeout or M.TIMEOUT
    req.max_response_bytes = M.MAX_RESPONSE
    req.retry = { statuses = {}, attempts = 3, max_delay = 2 }   -- transport failures, idempotent methods
    req.sleep = self.sleep
    self.requests = self.requests + 1
    local status, hdrs, rbody = http.request(req)
    if not status then
      if rbody == "EINTR" then errors.throw("interrupted", "interrupted") end
      errors.throw("unavailable", self:scrub(("cannot reach the Kubernetes API server %s (context %s): %s: %s")
        :format(self.cfg.server, quote(self.cfg.context), what, clean(hdrs))))
    end
    local warnings = record_warnings(self, hdrs)
    if status == 401 and not refreshed and (self.cfg.auth.kind == "exec" or self.cfg.auth.kind == "token_file") then
      refreshed = true
      self:credential(true)
    elseif (status == 429 or status == 503) and n < M.RETRY_ATTEMPTS
        and self.now() - started + retry_delay(hdrs, n) <= M.RETRY_FOR then
      local ok, msg = self.sleep(retry_delay(hdrs, n))
      if ok == nil then errors.throw("interrupted", tostring(msg)) end
    else
      local data
      if rbody and rbody ~= "" then data = json.decode(rbody) end   -- nil when not JSON
      return status, data, hdrs, warnings, rbody
    end
  end
end

-- c:fail(status, data, body, what): raises the mapped Status error, with
-- this client's context, user and server, scrubbed of the live token
function Client:fail(status, data, body, what)
  local e = M.status_error(status, data, body, what,
    { context = self.cfg.context, user = self.cfg.user, server = self.cfg.server })
  e.message = self:scrub(e.message)
  error(e, 2)
end

-- c:path(res, ns [, name [, sub]]) -> "/apis/ray.io/v1/namespaces/ns/rayclusters/name"
function Client:path(res, ns, name, sub)
  local p = res.group == "" and ("/api/" .. res.version) or ("/apis/%s/%s"):format(res.group, res.version)
  if ns then p = p .. "/namespaces/" .. seg(ns) end
  p = p .. "/" .. res.plural
  if name then p = p .. "/" .. seg(name) end
  if sub then p = p .. "/" .. sub end
  return p
end

local function expect_object(self, data, what, status)
  if type(data) ~= "table" then
    errors.throw("unavailable", ("%s: %d with an answer that is not a JSON object (is %s a Kubernetes API server?)")
      :format(what, status, self.cfg.server))
  end
  return data
end

--[[
c:get(res, ns, name [, opts]) -> object | nil (opts.missing_ok and 404)
Raises the mapped error for any other failure (404: not_found).
]]
function Client:get(res, ns, name, opts)
  local what = ("GET %s %s/%s"):format(res.plural, ns, name)
  local st, data, _, _, body = self:request("GET", self:path(res, ns, name), opts)
  if st == 404 and opts and opts.missing_ok then return nil end
  if st ~= 200 then self:fail(st, data, body, what) end
  return expect_object(self, data, what, st)
end

--[[
c:list(res, ns [, {label_selector=, field_selector=, limit=, timeout=}])
  -> items (array), resource_version
Follows `continue` pages (at most MAX_PAGES).
]]
function Client:list(res, ns, opts)
  opts = opts or {}
  local what = ("GET %s in %s"):format(res.plural, ns or "all namespaces")
  local query = { labelSelector = opts.label_selector, fieldSelector = opts.field_selector,
                  limit = opts.limit }
  local items = json.array()
  for _ = 1, M.MAX_PAGES do
    local st, data, _, _, body = self:request("GET", self:path(res, ns), { query = query, timeout = opts.timeout })
    if st ~= 200 then self:fail(st, data, body, what) end
    expect_object(self, data, what, st)
    for _, it in ipairs(type(data.items) == "table" and data.items or {}) do items[#items + 1] = it end
    local meta = type(data.metadata) == "table" and data.metadata or {}
    local cont = meta.continue
    if type(cont) ~= "string" or cont == "" then return items, meta.resourceVersion end
    query.continue = cont
  end
  errors.throw("unavailable", ("%s: more than %d pages"):format(what, M.MAX_PAGES))
end

--[[
c:create(res, ns, obj [, opts]) -> created object, warnings
409 raises conflict (reason AlreadyExists), 422 invalid_argument with the
causes; warnings are the texts of the answer's Warning headers (fields the
apiserver pruned, deprecations).
]]
function Client:create(res, ns, obj, opts)
  local name = type(obj) == "table" and type(obj.metadata) == "table" and obj.metadata.name
  local what = ("POST %s %s/%s"):format(res.plural, ns, tostring(name or "?"))
  local st, data, _, warnings, body = self:request("POST", self:path(res, ns),
    { json = obj, timeout = opts and opts.timeout, query = opts and opts.query })
  if st ~= 200 and st ~= 201 and st ~= 202 then self:fail(st, data, body, what) end
  return expect_object(self, data, what, st), warnings
end

--[[
c:patch(res, ns, name, patch [, opts]) -> patched object, warnings
A JSON merge patch (RFC 7386: application/merge-patch+json): only the
fields it names change, so it needs no resourceVersion and meets no 409.
]]
function Client:patch(res, ns, name, patch, opts)
  local what = ("PATCH %s %s/%s"):format(res.plural, ns, name)
  local st, data, _, warnings, body = self:request("PATCH", self:path(res, ns, name),
    { json = patch, content_type = "application/merge-patch+json", timeout = opts and opts.timeout })
  if st ~= 200 then self:fail(st, data, body, what) end
  return expect_object(self, data, what, st), warnings
end

--[[
c:delete(res, ns, name [, {propagation = "Background"|"Foreground",
grace_seconds=}]) -> true (deleted or being deleted) | false (not found)
Never Orphan: dependents (pods, services) must go with their owner.
]]
function Client:delete(res, ns, name, opts)
  opts = opts or {}
  local policy = opts.propagation or "Background"
  if policy ~= "Background" and policy ~= "Foreground" then
    error("bad option 'propagation' to 'delete' (Background or Foreground)", 2)
  end
  local what = ("DELETE %s %s/%s"):format(res.plural, ns, name)
  local st, data, _, _, body = self:request("DELETE", self:path(res, ns, name), {
    json = { kind = "DeleteOptions", apiVersion = "v1", propagationPolicy = policy,
             gracePeriodSeconds = opts.grace_seconds },
    timeout = opts.timeout })
  if st == 404 then return false end
  if st ~= 200 and st ~= 202 then self:fail(st, data, body, what) end
  return true
end

--[[
c:events(ns, name [, {type = "Warning"}]) -> array of events about object
`name` (involvedObject.name), oldest first by lastTimestamp/eventTime.
]]
function Client:events(ns, name, opts)
  local items = self:list(M.EVENTS, ns, { field_selector = "involvedObject.name=" .. name })
  local out = {}
  for _, ev in ipairs(items) do
    if type(ev) == "table" and (not (opts and opts.type) or ev.type == opts.type) then out[#out + 1] = ev end
  end
  local function t(ev)
    return tostring(ev.lastTimestamp ~= json.null and ev.lastTimestamp or ev.eventTime or "")
  end
  table.sort(out, function(a, b) return t(a) < t(b) end)
  return out
end

--[[
c:poll(fn [, {timeout = 300, interval = 0.5, max_interval = 5, factor = 1.5,
what = "..."}]) -> the first non-nil value fn() returns
Calls fn() until it returns a value, sleeping between calls with
exponential backoff; fn may raise to stop. After `timeout` seconds raises
unavailable "timed out waiting for <what>" (with fn's second return value,
a description of the last state, when it gives one).
]]
function Client:poll(fn, opts)
  opts = opts or {}
  local deadline = time.monotonic() + (opts.timeout or 300)
  local delay = opts.interval or 0.5
  while true do
    local v, state = fn()
    if v ~= nil then return v end
    local left = deadline - time.monotonic()
    if left <= 0 then
      errors.throw("unavailable", ("timed out after %gs waiting for %s%s"):format(opts.timeout or 300,
        opts.what or "the Kubernetes API", state and (" (" .. clean(state, 300) .. ")") or ""))
    end
    local ok, msg = self.sleep(math.min(delay, left))
    if ok == nil then errors.throw("interrupted", tostring(msg)) end
    delay = math.min(delay * (opts.factor or 1.5), opts.max_interval or 5)
  end
end

--[[
c:service_proxy_path(ns, service, port_name [, path]) -> string
c:service_proxy_url(ns, service, port_name [, path]) -> string
/api/v1/namespaces/{ns}/services/{service}:{port}/proxy/{path}: the
apiserver forwards to the service (it strips Authorization: send a Ray
token as X-Ray-Authorization). path may carry a query string.
]]
function Client:service_proxy_path(ns, service, port_name, path)
  path = tostring(path or ""):gsub("^/+", "")
  return ("/api/v1/namespaces/%s/services/%s:%s/proxy/%s"):format(seg(ns), seg(service), seg(port_name), path)
end

function Client:service_proxy_url(ns, service, port_name, path)
  return self.cfg.server .. self:service_proxy_path(ns, service, port_name, path)
end

-- }======

return M
