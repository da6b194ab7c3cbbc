-- geneva.http: HTTP(S) requests (C in bindings/http.c, over a dlopen'd
-- libcurl). The core raises on misuse and returns nil, msg, code on transport
-- failures; this face adds defaults, query strings, JSON bodies and retries.
-- HTTP error statuses (404, 500, ...) are answers, not failures: callers
-- look at the status.
local core = require "geneva.http.core"

local http = {
  -- seconds to wait for a connection when opts.connect_timeout is not given
  connect_timeout = 10,
  -- seconds a transfer may go without a byte moving (a server that never
  -- answers, or stops halfway) when opts.stall_timeout is not given
  stall_timeout = 60,
  -- the largest body kept in memory when opts.max_response_bytes is not
  -- given: bigger ones are an error that says to use output_file
  max_response_bytes = 256 * 1024 * 1024,
  -- retry policy defaults (see http.request)
  retry_defaults = { attempts = 4, base_delay = 0.25, max_delay = 8,
                     statuses = { [502] = true, [503] = true, [504] = true } },
}

-- Transport failures worth another attempt; TLS verification, bad URLs or an
-- interrupt are not.
local transient = {
  CURLE_COULDNT_RESOLVE_HOST = true, CURLE_COULDNT_CONNECT = true,
  CURLE_OPERATION_TIMEDOUT = true, CURLE_GOT_NOTHING = true,
  CURLE_SEND_ERROR = true, CURLE_RECV_ERROR = true, CURLE_PARTIAL_FILE = true,
  CURLE_SSL_CONNECT_ERROR = true, CURLE_HTTP2 = true, CURLE_HTTP2_STREAM = true,
}

-- Methods that may be repeated without changing the outcome (RFC 9110 9.2.2).
local idempotent = { GET = true, HEAD = true, PUT = true, DELETE = true,
                     OPTIONS = true, TRACE = true }

-- Options this face consumes; everything else goes to the core, which
-- raises on names it does not know.
local face_opts = { query = true, session = true, retry = true, json = true,
                    sleep = true }

-- http.escape(s) -> s percent-encoded for a URL query component.
function http.escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

-- http.encode_query(t) -> "a=1&b=x%20y": keys sorted, array values repeat
-- the key. Raises on a non-table.
function http.encode_query(t)
  assert(type(t) == "table", "query must be a table")
  local keys, out = {}, {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = t[k]
    if v == nil then v = t[tonumber(k)] end
    if type(v) == "table" then
      for _, x in ipairs(v) do out[#out + 1] = http.escape(k) .. "=" .. http.escape(x) end
    else
      out[#out + 1] = http.escape(k) .. "=" .. http.escape(v)
    end
  end
  return table.concat(out, "&")
end

-- The core's options for opts: defaults filled, query appended. A new table;
-- opts is not modified.
local function core_opts(opts)
  local o = {}
  for k, v in pairs(opts) do
    if not face_opts[k] then o[k] = v end
  end
  if o.connect_timeout == nil then o.connect_timeout = http.connect_timeout end
  if o.stall_timeout == nil then o.stall_timeout = http.stall_timeout end
  if o.max_response_bytes == nil and o.output_file == nil then o.max_response_bytes = http.max_response_bytes end
  if opts.query and next(opts.query) ~= nil and type(o.url) == "string" then
    local sep = o.url:find("?", 1, true) and "&" or "?"
    o.url = o.url .. sep .. http.encode_query(opts.query)
  end
  return o
end

local function perform(opts, o)
  if opts.session then return opts.session:request(o) end
  return core.request(o)
end

-- The delay before attempt n+1: exponential with jitter, or Retry-After
-- (whole seconds) when the server gave one; capped by max_delay.
local function backoff(policy, n, headers)
  local ra = headers and tonumber(headers["retry-after"])
  local d = ra or policy.base_delay * 2 ^ (n - 1) * (0.5 + math.random() / 2)
  return math.min(d, policy.max_delay)
end

--[[
http.request(opts) -> status, headers, body, info | nil, msg, code
Options are the core's (bindings/http.c: url, method, headers, body,
body_file, body_file_offset, body_file_length (a range of body_file: one
part of a multipart upload), output_file, connect_timeout, timeout, verify,
ca_file, ca_pem, client_cert, client_key, client_cert_pem, client_key_pem,
bearer_token, follow_redirects, max_response_bytes, path_as_is (send /./
and /../ as given: signed URLs), stall_timeout (give up after that many
seconds without a byte moving)) plus:
  query   = {name = value | {values}}: appended to the URL, encoded
  session = a handle from http.session(): reuse its connections
  retry   = true | {attempts=4, base_delay=0.25, max_delay=8,
            statuses={[502]=true,...}, any_method=false}: repeat idempotent
            requests after transient transport failures and those statuses,
            sleeping with exponential backoff (opts.sleep(seconds) overrides
            the sleep, for tests). The last answer or failure is returned;
            a failure's message then says how many attempts were made.
Raises on misuse (bad options); never raises on network or HTTP errors.
headers has lower-cased names; body is nil when output_file took it; info
is {status_line, http_version, url, bytes, time, redirects,
new_connections}.
]]
function http.request(opts)
  assert(type(opts) == "table", "bad argument #1 to 'request' (table expected)")
  local o = core_opts(opts)
  local retry = opts.retry
  if not retry then return perform(opts, o) end
  local policy = {}
  for k, v in pairs(http.retry_defaults) do policy[k] = v end
  if type(retry) == "table" then
    for k, v in pairs(retry) do policy[k] = v end
  end
  local method = (o.method or "GET"):upper()
  if not (idempotent[method] or policy.any_method) then
    return perform(opts, o)
  end
  local sleep = opts.sleep or require("geneva.time").sleep
  local n = 0
  while true do
    n = n + 1
    local status, headers, body, info = perform(opts, o)
    local again
    if status then
      again = policy.statuses[status]
    else
      again = transient[body]
    end
    if not again or n >= policy.attempts then
      if not status and n > 1 then
        headers = headers .. (" (after %d attempts)"):format(n)
      end
      return status, headers, body, info
    end
    local ok, msg, code = sleep(backoff(policy, n, status and headers))
    if not ok then return nil, msg, code end   -- interrupted
  end
end

local function with_method(method, url, opts, body)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.method, o.url = method, url
  if body ~= nil then o.body = body end
  return http.request(o)
end

-- http.get(url [, opts]) / http.delete(url [, opts]) -> as http.request
function http.get(url, opts) return with_method("GET", url, opts) end
function http.delete(url, opts) return with_method("DELETE", url, opts) end
-- http.post(url, body [, opts]) / http.put(url, body [, opts]) -> as http.request
function http.post(url, body, opts) return with_method("POST", url, opts, body) end
function http.put(url, body, opts) return with_method("PUT", url, opts, body) end

--[[
http.json(opts) -> status, data, headers, info | nil, msg, code
Like http.request, with opts.json (any Lua value) encoded as the body
(method then defaults to POST) and the answer decoded: data is nil for an
empty body, and for an HTTP error status whose body is not JSON (info.body
keeps the raw body in every case). A 2xx answer that is not JSON gives
nil, msg, "JSON_PARSE"; a value that cannot be encoded raises.
]]
function http.json(opts)
  -- geneva.json, not cjson: the Ray and Kubernetes APIs need exact
  -- integers (cjson decodes 1 as 1.0 and loses digits past 2^53) and [] vs {}
  local json = require "geneva.json"
  local o, headers = {}, {}
  for k, v in pairs(opts) do o[k] = v end
  if type(opts.headers) == "table" then
    for k, v in pairs(opts.headers) do headers[k] = v end
  end
  headers.Accept = headers.Accept or "application/json"
  if opts.json ~= nil then
    local ok, body = pcall(json.encode, opts.json)
    if not ok then error("bad option 'json' to 'json' (" .. tostring(body) .. ")", 2) end
    o.body = body
    o.method = o.method or "POST"
    headers["Content-Type"] = headers["Content-Type"] or "application/json"
  end
  o.json, o.headers = nil, headers
  local status, hdrs, body, info = http.request(o)
  if not status then return nil, hdrs, body end
  info.body = body
  if body == nil or body == "" then return status, nil, hdrs, info end
  local data, err = json.decode(body)
  if data == nil and status >= 200 and status < 300 then
    return nil, ("invalid JSON in a %d response: %s"):format(status, tostring(err)),
      "JSON_PARSE"
  end
  return status, data, hdrs, info
end

-- http.session() -> session: keeps connections alive across requests. Pass
-- it as opts.session, or call session:request(core_opts) directly. Close it
-- (session:close(), or `local s <close> = http.session()`); it is also
-- tracked in the ledger, so the enclosing scope closes it.
http.session = core.session

-- http.version() -> libcurl version, TLS library version
http.version = core.version

return http
