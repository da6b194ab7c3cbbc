-- geneva.s3.request: one S3 call, signed, retried, and its failure made a
-- geneva.Error. Used by the client (geneva.s3) only.
--
-- Retries: transport resets and timeouts, 500/502/503/504, and the S3 codes
-- SlowDown, InternalError, RequestTimeout, with jittered exponential backoff
-- (full jitter, capped), re-signed each time. 4xx answers are never retried.
-- Secrets: errors carry the method, bucket, key, status and S3 code and a
-- cleaned server message; anything equal to the secret key or session
-- token is masked again before raising, whatever the server echoed.
local errors = require "geneva.errors"
local sigv4 = require "geneva.s3.sigv4"
local xml = require "geneva.s3.xml"

local M = {}

local TRANSIENT = {
  CURLE_COULDNT_CONNECT = true, CURLE_OPERATION_TIMEDOUT = true, CURLE_GOT_NOTHING = true,
  CURLE_SEND_ERROR = true, CURLE_RECV_ERROR = true, CURLE_PARTIAL_FILE = true,
  CURLE_SSL_CONNECT_ERROR = true, CURLE_HTTP2 = true, CURLE_HTTP2_STREAM = true,
  CURLE_COULDNT_RESOLVE_HOST = true, CURLE_WEIRD_SERVER_REPLY = true,
}
local RETRY_STATUS = { [500] = true, [502] = true, [503] = true, [504] = true }
local RETRY_CODE = { SlowDown = true, InternalError = true, RequestTimeout = true,
                     ServiceUnavailable = true }

-- S3 code -> geneva error code (status decides the rest)
local CODE = {
  NoSuchKey = "not_found", NoSuchBucket = "not_found", NoSuchUpload = "not_found",
  PreconditionFailed = "conflict", ConditionalRequestConflict = "conflict",
  BucketAlreadyOwnedByYou = "conflict", BucketAlreadyExists = "conflict",
  AccessDenied = "invalid_argument", InvalidAccessKeyId = "invalid_argument",
  SignatureDoesNotMatch = "invalid_argument", InvalidBucketName = "invalid_argument",
  InvalidArgument = "invalid_argument", InvalidRequest = "invalid_argument",
  EntityTooSmall = "invalid_argument", InvalidPart = "invalid_argument",
  InvalidPartOrder = "invalid_argument", KeyTooLongError = "invalid_argument",
  SlowDown = "unavailable", InternalError = "unavailable", ServiceUnavailable = "unavailable",
  RequestTimeout = "unavailable",
}

-- A server string fit for a message: printable, short.
local function clean(s, max)
  if type(s) ~= "string" then return nil end
  s = s:gsub("[%c]", " ")
  if #s > max then s = s:sub(1, max) .. "..." end
  return s
end
M.clean = clean

-- Masks every occurrence of the client's secrets in s.
local function scrub(s, creds)
  for _, secret in ipairs { creds.secret_key, creds.session_token } do
    if secret and #secret >= 4 then
      local i = s:find(secret, 1, true)
      while i do
        s = s:sub(1, i - 1) .. "***" .. s:sub(i + #secret)
        i = s:find(secret, 1, true)
      end
    end
  end
  return s
end

-- The S3 error of an answer: {code, message, bucket, key, request_id}
-- from its XML body (HEAD and some proxies send none).
function M.parse_error(body)
  local root = body and body ~= "" and xml.parse(body)
  if not root or root.name ~= "Error" then return {} end
  return { code = clean(xml.text(root, "Code"), 64), message = clean(xml.text(root, "Message"), 300),
           bucket = clean(xml.text(root, "BucketName"), 80), key = clean(xml.text(root, "Key"), 300),
           request_id = clean(xml.text(root, "RequestId"), 80) }
end

-- "PUT s3://bucket/key"; a listing is "LIST s3://bucket/prefix", what a
-- user would call it (a GET of the bucket means little to them)
local function what(req)
  local q = type(req.query) == "table" and req.query or {}
  if req.method == "GET" and not req.key and q["list-type"] then
    return "LIST " .. clean("s3://" .. req.bucket .. "/" .. (q.prefix or ""), 400)
  end
  local target = "s3://" .. req.bucket .. (req.key and ("/" .. req.key) or "/")
  return req.method .. " " .. clean(target, 400)
end

-- Raises the Error for an answer that is not one of req.ok.
local function fail(client, req, status, body)
  local e = M.parse_error(body)
  local s3code = e.code
  if not s3code then
    if status == 404 then s3code = req.key and "NoSuchKey" or "NoSuchBucket"
    elseif status == 412 then s3code = "PreconditionFailed"
    elseif status == 403 then s3code = "AccessDenied"
    elseif status >= 500 then s3code = "InternalError" end
  end
  local code = CODE[s3code] or (status >= 500 and "unavailable")
    or (status == 409 and "conflict") or (status == 404 and "not_found") or "invalid_argument"
  local msg = ("%s: %s%s (HTTP %d)"):format(what(req), s3code or "error",
    e.message and (": " .. e.message) or "", status)
  if s3code == "NoSuchBucket" then
    msg = msg .. (" [bucket '%s']"):format(req.bucket)
  elseif s3code == "InvalidAccessKeyId" or s3code == "SignatureDoesNotMatch" then
    msg = msg .. (" [access key %s, credentials from %s]"):format(
      clean(client.access_key_id, 40), client.credentials_source or "?")
  end
  errors.throw(code, scrub("s3 " .. msg, client:_secrets()),
    { s3_code = s3code, status = status, bucket = req.bucket, key = req.key,
      request_id = e.request_id })
end

-- The backoff before attempt n+1 (n >= 1): full jitter over an exponential
-- ceiling, capped by max_delay.
function M.backoff(policy, n)
  local ceiling = math.min(policy.max_delay, policy.base_delay * 2 ^ (n - 1))
  return ceiling * (0.5 + math.random() / 2)
end

--[[
M.perform(client, req) -> status, headers, body
req: method, bucket, key (nil: the bucket itself), query (map or pairs),
headers, body | body_file (+ body_file_offset, body_file_length),
payload_hash (hex; computed for a body), output_file, ok ({[status]=true};
default 200), max_response_bytes. Raises an Error for anything else.
]]
function M.perform(client, req)
  local ok = req.ok or { [200] = true }
  local policy = client.retry
  local n = 0
  local payload = req.payload_hash
  if not payload then
    payload = req.body and require("geneva.crypto").sha256(req.body, "hex") or sigv4.EMPTY_SHA256
  end
  while true do
    n = n + 1
    local url, host, path = client:_url(req.bucket, req.key)
    local query = sigv4.canonical_query(req.query)
    local headers = { Host = host, ["x-amz-content-sha256"] = payload }
    for k, v in pairs(req.headers or {}) do headers[k] = v end
    local creds = client:_secrets()
    local add = sigv4.sign { method = req.method, path = path, query = req.query,
      headers = headers, payload_hash = payload, date = sigv4.amz_date(client.clock()),
      region = client.region, access_key = creds.access_key, secret_key = creds.secret_key,
      session_token = creds.session_token }
    for k, v in pairs(add) do headers[k] = v end
    headers.Expect = false   -- no 100-continue round trip (and no 1 s stall)
    local status, rh, body = client:_http {
      url = url .. (query ~= "" and ("?" .. query) or ""), method = req.method, headers = headers,
      body = req.body, body_file = req.body_file, body_file_offset = req.body_file_offset,
      body_file_length = req.body_file_length, output_file = req.output_file,
      max_response_bytes = req.max_response_bytes or (req.output_file and nil) or client.max_response_bytes,
      timeout = client.timeout, path_as_is = true,
    }
    local again, last_err
    if not status then
      if body == "EINTR" then errors.raise("interrupted", "interrupted") end
      again = TRANSIENT[body]
      last_err = { msg = rh, errno = body }
    elseif ok[status] then
      return status, rh, body
    else
      if req.output_file then
        -- the error body went to the file: read it back (small), then drop it
        local f = io.open(req.output_file, "rb")
        body = f and f:read(64 * 1024) or ""
        if f then f:close() end
        os.remove(req.output_file)
      end
      again = RETRY_STATUS[status] or RETRY_CODE[M.parse_error(body).code or ""]
      if not again or n >= policy.attempts then fail(client, req, status, body) end
    end
    if not again or n >= policy.attempts then
      errors.throw("unavailable", scrub(("s3 %s: %s%s"):format(what(req), clean(last_err.msg, 400),
        n > 1 and (" (after %d attempts)"):format(n) or ""), client:_secrets()),
        { errno = last_err.errno, bucket = req.bucket, key = req.key })
    end
    client.stats.retries = client.stats.retries + 1
    local slept, msg = client.sleep(M.backoff(policy, n))
    if not slept and msg == "interrupted" then errors.raise("interrupted", "interrupted") end
  end
end

return M
