--[[
geneva.s3: an S3 client over geneva.http (libcurl), signed with our own
SigV4 (geneva.s3.sigv4; libcurl 7.88's CURLOPT_AWS_SIGV4 signs query strings
unsorted and paths unencoded). Works with AWS and S3-compatible servers
(moto, MinIO, ...).

  local s3 = require "geneva.s3"
  local c = s3.client { bucket = "b" }          -- defaults: see s3.client
  c:put("k", "v", { if_none_match = true })     -- conflict Error if k exists
  local body = c:get("k")

Every action raises a geneva.Error on failure (codes below); head is a
probe and returns nil, err for a missing object. Error fields: s3_code
(AccessDenied, NoSuchBucket, SlowDown, ...), status, bucket, key.
  not_found         NoSuchKey, NoSuchBucket, NoSuchUpload (404)
  conflict          412 PreconditionFailed, 409 ConditionalRequestConflict:
                    a conditional create lost; re-read and retry
  invalid_argument  AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch,
                    other 4xx, bad arguments, no credentials
  unavailable       5xx and SlowDown after the retries, transport failures
  interrupted       SIGINT/TERM during a transfer
Secrets (secret key, session token, Authorization) never appear in errors,
in tostring(client) nor in the client's fields.

A conditional PUT retried after a lost answer (a reset after the server
wrote the object) reports conflict although it created the object: as for
any conflict, re-read; the content then is the caller's own.
]]
local errors = require "geneva.errors"
local http = require "geneva.http"
local fs = require "geneva.fs"
local time = require "geneva.time"
local credentials = require "geneva.s3.credentials"
local request = require "geneva.s3.request"
local xml = require "geneva.s3.xml"

local s3 = {}

local MiB = 1024 * 1024
s3.MIN_PART = 5 * MiB          -- S3's minimum for every part but the last
s3.MAX_PARTS = 10000
s3.defaults = {
  multipart_threshold = 64 * MiB,   -- put_file: one PUT up to this size
  part_size = 16 * MiB,
  retry = { attempts = 6, base_delay = 0.1, max_delay = 5 },
  timeout = 300,                    -- seconds per request
  max_response_bytes = 64 * MiB,    -- for answers held in memory
}

-- credentials per client, out of the client table (pretty-printing a
-- client, or an error holding it, shows no secret)
local secrets = setmetatable({}, { __mode = "k" })

local Client = {}
Client.__index = Client
Client.__name = "geneva.s3.Client"
function Client.__tostring(c)
  return ("geneva.s3.Client s3://%s (%s, %s)"):format(c.bucket, c.endpoint, c.region)
end

-- {====== URIs, names and defaults

local function bad(fmt, ...) errors.raise("invalid_argument", fmt, ...) end

local function valid_bucket(b)
  return type(b) == "string" and #b >= 3 and #b <= 63 and b:match("^[a-z0-9][a-z0-9%.%-_]*[a-z0-9]$") ~= nil
end

local function check_key(key, fname)
  if type(key) ~= "string" or key == "" or #key > 1024 then
    bad("s3 %s: key must be a non-empty string of at most 1024 bytes", fname)
  end
  if key:find("%z") then bad("s3 %s: key contains a zero byte", fname) end
  return key
end

-- s3.parse_uri("s3://bucket/prefix") -> bucket, prefix ("" when none; no
-- leading slash, trailing one kept). Raises invalid_argument.
function s3.parse_uri(uri)
  local bucket, rest = tostring(uri):match("^s3://([^/]+)/?(.*)$")
  if not bucket then bad("not an s3:// URI: %s", request.clean(tostring(uri), 200)) end
  if not valid_bucket(bucket) then bad("invalid bucket name '%s' in %s", request.clean(bucket, 80), uri) end
  return bucket, rest
end

-- scheme, host[:port] of an endpoint URL; raises on anything else
local function parse_endpoint(ep)
  local scheme, authority, path = tostring(ep):match("^(https?)://([^/?#@]+)(/?[^?#]*)$")
  if not scheme or (path ~= "" and path ~= "/") then
    bad("s3 endpoint must look like http(s)://host[:port]: %s", request.clean(tostring(ep), 200))
  end
  authority = authority:lower()
  if scheme == "http" then authority = authority:gsub(":80$", "")
  else authority = authority:gsub(":443$", "") end
  return scheme, authority
end

-- }======

--[[
s3.client(opts) -> Client
opts: bucket (required), endpoint, region, profile, path_style,
credentials ({access_key, secret_key, session_token}), getenv (a function
reading the environment; default os.getenv), multipart_threshold,
part_size, retry ({attempts, base_delay, max_delay}), timeout, sleep
(seconds -> true; for tests), clock (-> epoch seconds; for tests).
Defaults (those of the AWS SDKs): endpoint AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else
AWS (https://s3.<region>.amazonaws.com); region AWS_REGION,
AWS_DEFAULT_REGION, else us-east-1; path_style on when an endpoint is given
or the bucket has a dot; credentials: geneva.s3.credentials.
]]
function s3.client(opts)
  if type(opts) ~= "table" then bad("s3.client: options table expected") end
  local getenv = opts.getenv or os.getenv
  local function env(n) local v = getenv(n); return v ~= "" and v or nil end
  if not valid_bucket(opts.bucket) then
    bad("s3.client: invalid bucket name '%s'", request.clean(tostring(opts.bucket), 80))
  end
  local region = opts.region or env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1"
  if not tostring(region):match("^[%w%-]+$") then bad("s3.client: invalid region") end
  local endpoint = opts.endpoint or env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL")
  local path_style = opts.path_style
  if path_style == nil then path_style = endpoint ~= nil or opts.bucket:find(".", 1, true) ~= nil end
  endpoint = endpoint or ("https://s3.%s.amazonaws.com"):format(region)
  local scheme, authority = parse_endpoint(endpoint)
  local creds = opts.credentials
  if creds then
    if type(creds.access_key) ~= "string" or type(creds.secret_key) ~= "string" then
      bad("s3.client: credentials need access_key and secret_key strings")
    end
    creds = { access_key = creds.access_key, secret_key = creds.secret_key,
              session_token = creds.session_token, source = "options" }
  else
    creds = credentials.resolve { profile = opts.profile, getenv = getenv }
  end
  local d = s3.defaults
  local retry = {}
  for k, v in pairs(d.retry) do retry[k] = v end
  for k, v in pairs(opts.retry or {}) do retry[k] = v end
  local c = setmetatable({
    bucket = opts.bucket, region = region, scheme = scheme, authority = authority,
    endpoint = scheme .. "://" .. authority, path_style = path_style and true or false,
    access_key_id = creds.access_key, credentials_source = creds.source,
    multipart_threshold = opts.multipart_threshold or d.multipart_threshold,
    part_size = opts.part_size or d.part_size, retry = retry,
    timeout = opts.timeout or d.timeout, max_response_bytes = d.max_response_bytes,
    sleep = opts.sleep or time.sleep, clock = opts.clock or time.now,
    stats = { requests = 0, retries = 0 },
  }, Client)
  if c.part_size < s3.MIN_PART then bad("s3.client: part_size must be at least 5 MiB") end
  secrets[c] = { access_key = creds.access_key, secret_key = creds.secret_key,
                 session_token = creds.session_token }
  return c
end

function Client:_secrets() return secrets[self] end

-- url (no query), Host header value, raw (unencoded) path to sign
function Client:_url(bucket, key)
  local sigv4 = require "geneva.s3.sigv4"
  local host, path = self.authority, "/" .. (key or "")
  if self.path_style then
    path = "/" .. bucket .. (key and ("/" .. key) or "")
  else
    host = bucket .. "." .. self.authority
  end
  return self.scheme .. "://" .. host .. sigv4.canonical_path(path), host, path
end

-- one HTTP exchange on the client's session (opened on first use)
function Client:_http(o)
  if not self.session or self.session:is_closed() then self.session = http.session() end
  self.stats.requests = self.stats.requests + 1
  o.connect_timeout = http.connect_timeout
  return self.session:request(o)
end

-- c:close(): closes the connections; the client reopens them if used again.
function Client:close()
  if self.session then self.session:close(); self.session = nil end
end

function Client:_call(req)
  req.bucket = req.bucket or self.bucket
  return request.perform(self, req)
end

-- The validated ETag of an answer (quoted hex for S3, anything printable
-- and short elsewhere), or nil.
local function etag_of(h)
  local e = h and h.etag
  if type(e) == "string" and #e <= 128 and e:match("^[%w\"%-:/_=+]+$") then return e end
end

local function size_of(h)
  local n = h and tonumber(h["content-length"])
  if n and n >= 0 and math.type(n) == "integer" then return n end
end

-- }======

-- {====== Objects

-- c:get(key [, {range = "bytes=0-9" | {first, last}}]) -> body, info
-- info = {status, etag, size, content_range}. not_found when missing. A
-- range that starts past the end is "" with status 416.
function Client:get(key, opts)
  check_key(key, "get")
  opts = opts or {}
  local headers = {}
  if opts.range then
    local r = opts.range
    if type(r) == "table" then r = ("bytes=%d-%s"):format(r[1], r[2] and tostring(r[2]) or "") end
    if type(r) ~= "string" or not r:match("^bytes=%d*%-%d*$") then bad("s3 get: bad range") end
    headers.Range = r
  end
  local status, h, body = self:_call { method = "GET", key = key, headers = headers,
                                       ok = { [200] = true, [206] = true, [416] = opts.range and true } }
  if status == 416 then body = "" end
  return body, { status = status, etag = etag_of(h), size = #body, content_range = h["content-range"] }
end

-- c:get_file(key, path) -> info {etag, size}: streamed to a temp file
-- beside path, renamed over path once complete (never a partial file).
function Client:get_file(key, path)
  check_key(key, "get_file")
  local dir, base = tostring(path):match("^(.-)([^/]+)$")
  if not base then bad("s3 get_file: bad local path") end
  -- unique among processes downloading the same object into one cache at
  -- once (math.random may be seeded alike in processes started together)
  local tmp = ("%s.%s.part-%s"):format(dir, base, fs.random_hex(12))
  local ok, err, h = pcall(self._call, self, { method = "GET", key = key, output_file = tmp })
  if not ok then os.remove(tmp); error(err, 0) end
  local st = fs.stat(tmp)
  local renamed, msg = fs.rename(tmp, path)
  if not renamed then
    os.remove(tmp)
    errors.raise("unavailable", "s3 get_file: %s", msg)
  end
  return { size = st and st.size, etag = etag_of(h) }
end

local function put_headers(opts)
  local h = {}
  if opts.if_none_match then h["If-None-Match"] = "*" end
  if opts.content_type then h["Content-Type"] = opts.content_type end
  return h
end

-- c:put(key, body [, {if_none_match = true, content_type}]) -> {etag}
-- With if_none_match, an existing key raises conflict (412, or 409
-- ConditionalRequestConflict when another create is in flight).
function Client:put(key, body, opts)
  check_key(key, "put")
  if type(body) ~= "string" then bad("s3 put: body must be a string") end
  opts = opts or {}
  local _, h = self:_call { method = "PUT", key = key, body = body, headers = put_headers(opts) }
  return { etag = etag_of(h) }
end

-- Hex SHA-256 of length bytes of path from offset, read 1 MiB at a time.
local function sha256_range(path, offset, length)
  local f <close> = assert(io.open(path, "rb"))
  local h <close> = fs.sha256_new()
  assert(f:seek("set", offset))
  local left = length
  while left > 0 do
    local chunk = f:read(math.min(left, MiB))
    if not chunk then errors.raise("unavailable", "s3 put_file: '%s' shrank while uploading", path) end
    h:update(chunk)
    left = left - #chunk
  end
  return h:hex()
end

-- c:put_file(key, path [, {if_none_match, content_type}]) -> {etag, size, parts}
-- One signed PUT up to multipart_threshold, else a multipart upload of
-- part_size parts read from the file by range (never whole in memory); a
-- failed multipart upload is aborted before the error propagates.
function Client:put_file(key, path, opts)
  check_key(key, "put_file")
  opts = opts or {}
  local st, msg = fs.stat(path)
  if not st or st.type ~= "file" then
    errors.raise(st and "invalid_argument" or "not_found", "s3 put_file: %s",
                 msg or ("not a regular file: " .. tostring(path)))
  end
  local size = st.size
  if size <= self.multipart_threshold then
    local hash = assert(fs.sha256_file(path))
    local _, h = self:_call { method = "PUT", key = key, body_file = path, payload_hash = hash,
                              headers = put_headers(opts) }
    return { etag = etag_of(h), size = size, parts = 0 }
  end
  return require("geneva.s3.multipart").upload(self, key, path, size, opts, {
    sha256_range = sha256_range, etag_of = etag_of, put_headers = put_headers })
end

-- c:head(key) -> info {etag, size, last_modified, headers} | nil, Error
-- (not_found) for a missing object; raises on other failures.
function Client:head(key)
  check_key(key, "head")
  local ok, st_or_err, h = pcall(self._call, self, { method = "HEAD", key = key })
  if not ok then
    if errors.is(st_or_err, "not_found") then return nil, st_or_err end
    error(st_or_err, 0)
  end
  return { etag = etag_of(h), size = size_of(h), last_modified = h["last-modified"], headers = h }
end

-- c:delete(key) -> true (also when the key did not exist, as S3 answers)
function Client:delete(key)
  check_key(key, "delete")
  self:_call { method = "DELETE", key = key, ok = { [200] = true, [204] = true } }
  return true
end

-- }======

-- {====== Listing

local function parse_list(body, what)
  local root, err = xml.parse(body)
  if not root then errors.raise("unavailable", "s3 %s: unreadable answer (%s)", what, err) end
  return root
end

local function int_field(s, what, field)
  local n = tonumber(s or "")
  if not n or math.type(n) ~= "integer" or n < 0 then
    errors.raise("unavailable", "s3 %s: bad %s in the answer", what, field)
  end
  return n
end

local function key_field(s, what)
  if type(s) ~= "string" or s == "" or #s > 1024 then
    errors.raise("unavailable", "s3 %s: bad Key in the answer", what)
  end
  return s
end

--[[
c:list(prefix [, {delimiter=, max_keys=1000, start_after=, first_page=}]) -> objects, prefixes
objects: array of {key, size, etag, last_modified}, in key order;
prefixes: array of common prefixes (with a delimiter). Follows
ListObjectsV2 continuation tokens to the end (max_keys is the page size),
or with first_page stops after one page (at most max_keys entries: "is
there anything under prefix?").
]]
function Client:list(prefix, opts)
  opts = opts or {}
  prefix = prefix or ""
  if type(prefix) ~= "string" or #prefix > 1024 then bad("s3 list: bad prefix") end
  local objects, prefixes, token = {}, {}, nil
  local pages = 0
  repeat
    local q = { ["list-type"] = "2", prefix = prefix, ["max-keys"] = tostring(opts.max_keys or 1000) }
    if opts.delimiter then q.delimiter = opts.delimiter end
    if opts.start_after and not token then q["start-after"] = opts.start_after end
    if token then q["continuation-token"] = token end
    local _, _, body = self:_call { method = "GET", query = q }
    local root = parse_list(body, "list")
    if root.name ~= "ListBucketResult" then errors.raise("unavailable", "s3 list: unexpected answer <%s>", root.name) end
    for _, c in ipairs(xml.children(root, "Contents")) do
      objects[#objects + 1] = { key = key_field(xml.text(c, "Key"), "list"),
        size = int_field(xml.text(c, "Size"), "list", "Size"),
        etag = request.clean(xml.text(c, "ETag"), 128),
        last_modified = request.clean(xml.text(c, "LastModified"), 64) }
    end
    for _, c in ipairs(xml.children(root, "CommonPrefixes")) do
      prefixes[#prefixes + 1] = key_field(xml.text(c, "Prefix"), "list")
    end
    local truncated = xml.text(root, "IsTruncated") == "true"
    local next_token = xml.text(root, "NextContinuationToken")
    if truncated then
      if not next_token or next_token == "" or #next_token > 4096 or next_token == token then
        errors.raise("unavailable", "s3 list: truncated answer without a usable continuation token")
      end
      token = next_token
    end
    pages = pages + 1
  until not truncated or opts.first_page
  return objects, prefixes, pages
end

-- c:list_multipart_uploads([prefix]) -> array of {key, upload_id, initiated}
function Client:list_multipart_uploads(prefix)
  local out, key_marker, id_marker = {}, nil, nil
  repeat
    local q = { uploads = "", prefix = prefix or "" }
    if key_marker then q["key-marker"] = key_marker; q["upload-id-marker"] = id_marker end
    local _, _, body = self:_call { method = "GET", query = q }
    local root = parse_list(body, "list_multipart_uploads")
    for _, u in ipairs(xml.children(root, "Upload")) do
      out[#out + 1] = { key = key_field(xml.text(u, "Key"), "list_multipart_uploads"),
        upload_id = request.clean(xml.text(u, "UploadId"), 1024),
        initiated = request.clean(xml.text(u, "Initiated"), 64) }
    end
    local truncated = xml.text(root, "IsTruncated") == "true"
    local nk, ni = xml.text(root, "NextKeyMarker"), xml.text(root, "NextUploadIdMarker")
    if truncated and (not nk or nk == "" or (nk == key_marker and ni == id_marker)) then
      errors.raise("unavailable", "s3 list_multipart_uploads: truncated answer without markers")
    end
    key_marker, id_marker = nk, ni
  until not truncated
  return out
end

-- c:abort_multipart_upload(key, upload_id) -> true (a gone upload too)
function Client:abort_multipart_upload(key, upload_id)
  check_key(key, "abort_multipart_upload")
  self:_call { method = "DELETE", key = key, query = { uploadId = upload_id },
               ok = { [200] = true, [204] = true, [404] = true } }
  return true
end

-- c:abort_stale_uploads([prefix [, older_than_s = 86400]]) -> number aborted.
-- Incomplete uploads cost storage until aborted: call it from cleanup.
function Client:abort_stale_uploads(prefix, older_than)
  older_than = older_than or 86400
  local now, n = self.clock(), 0
  for _, u in ipairs(self:list_multipart_uploads(prefix)) do
    local t = u.initiated and time.parse_iso8601(u.initiated)
    if older_than <= 0 or (t and now - t >= older_than) then
      self:abort_multipart_upload(u.key, u.upload_id)
      n = n + 1
    end
  end
  return n
end

-- }======

--[[
c:probe_conditional_writes(key) -> true | false, why
Writes key twice with If-None-Match: *; the second must be refused (412,
or 409 ConditionalRequestConflict). A store that accepts it ignores
conditional writes (lance#4205: Alibaba OSS), so concurrent commits would
overwrite each other: callers must refuse to write to it. The probe key is
deleted afterwards. Other failures raise.
]]
function Client:probe_conditional_writes(key)
  check_key(key, "probe_conditional_writes")
  local token = ("probe %d %06d"):format(math.floor(self.clock()), math.random(0, 999999))
  self:delete(key)
  local pok, perr = pcall(self.put, self, key, token, { if_none_match = true })
  -- a retry after a lost answer meets our own object: not a conflict
  if not pok and not (errors.is(perr, "conflict") and self:get(key) == token) then error(perr, 0) end
  local ok, err = pcall(self.put, self, key, token .. " again", { if_none_match = true })
  self:delete(key)
  if ok then
    return false, ("s3://%s at %s accepted a second PUT with If-None-Match: * (conditional writes are ignored)")
      :format(self.bucket, self.endpoint)
  end
  if errors.is(err, "conflict") then return true end
  error(err, 0)
end

-- c:create_bucket() -> true (true also when this account already owns it)
function Client:create_bucket()
  local body
  if self.region ~= "us-east-1" then
    body = ('<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
      .. "<LocationConstraint>%s</LocationConstraint></CreateBucketConfiguration>"):format(xml.escape(self.region))
  end
  local ok, err = pcall(self._call, self, { method = "PUT", body = body })
  if not ok and not (errors.is(err) and err.s3_code == "BucketAlreadyOwnedByYou") then error(err, 0) end
  return true
end

s3.Client = Client
return s3
