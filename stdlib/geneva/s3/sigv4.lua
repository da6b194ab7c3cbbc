-- geneva.s3.sigv4: AWS Signature Version 4 for the Authorization header
-- (docs: "Signature Calculations for the Authorization Header: Transferring
-- Payload in a Single Chunk"). Pure string work over geneva.crypto.
--
-- S3 rules, which differ from other services: the path is URI-encoded once,
-- segment by segment ('/' kept), and never normalised ('.', '..' and '//'
-- are signed as they are), so the caller must send it as given (libcurl:
-- path_as_is). Query parameters are encoded and sorted by encoded key, then
-- value. Header names are lowercased, values trimmed with inner runs of
-- spaces collapsed, and every header given is signed.
--
-- Nothing here logs or raises with a secret: errors name fields only.
local crypto = require "geneva.crypto"

local sigv4 = {}

local ALGORITHM = "AWS4-HMAC-SHA256"
sigv4.EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

-- uri_encode(s [, keep_slash]) -> s with every byte but A-Z a-z 0-9 - . _ ~
-- as %XX (uppercase hex); '/' kept when keep_slash.
function sigv4.uri_encode(s, keep_slash)
  local pat = keep_slash and "[^%w%-%._~/]" or "[^%w%-%._~]"
  return (s:gsub(pat, function(c) return ("%%%02X"):format(c:byte()) end))
end

-- canonical_path(path) -> "/" for "", else path encoded once with '/' kept.
function sigv4.canonical_path(path)
  if path == "" then return "/" end
  return sigv4.uri_encode(path, true)
end

-- canonical_query(query) -> "a=1&b=x%2Fy". query is an array of {name,
-- value} pairs (repeats allowed; value nil or "" gives "name=") or a map
-- {name = value}. Names and values are raw (not yet encoded).
function sigv4.canonical_query(query)
  if not query then return "" end
  local pairs_ = {}
  if #query > 0 then
    for _, kv in ipairs(query) do
      pairs_[#pairs_ + 1] = { sigv4.uri_encode(tostring(kv[1])),
                              sigv4.uri_encode(tostring(kv[2] or "")) }
    end
  else
    for k, v in pairs(query) do
      if v == true then v = "" end
      pairs_[#pairs_ + 1] = { sigv4.uri_encode(tostring(k)), sigv4.uri_encode(tostring(v)) }
    end
  end
  table.sort(pairs_, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for i, kv in ipairs(pairs_) do pairs_[i] = kv[1] .. "=" .. kv[2] end
  return table.concat(pairs_, "&")
end

local function trim_value(v)
  return (tostring(v):gsub("^%s+", ""):gsub("%s+$", ""):gsub("%s+", " "))
end

-- canonical_headers(headers) -> block ("name:value\n"...), signed names
-- ("a;b"). headers: {Name = value | {values...}}; names differing only in
-- case are the same header, their values joined by ',' in the order given
-- (an array value keeps its order; separate keys are ordered by name).
function sigv4.canonical_headers(headers)
  local by_name, names = {}, {}
  local keys = {}
  for k in pairs(headers) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local name, v = k:lower(), headers[k]
    if not by_name[name] then by_name[name] = {}; names[#names + 1] = name end
    local list = by_name[name]
    if type(v) == "table" then
      for _, x in ipairs(v) do list[#list + 1] = trim_value(x) end
    else
      list[#list + 1] = trim_value(v)
    end
  end
  table.sort(names)
  local lines = {}
  for i, name in ipairs(names) do
    lines[i] = name .. ":" .. table.concat(by_name[name], ",") .. "\n"
  end
  return table.concat(lines), table.concat(names, ";")
end

-- signing_key(secret, yyyymmdd, region, service) -> 32 raw bytes
function sigv4.signing_key(secret, day, region, service)
  local k = crypto.hmac_sha256("AWS4" .. secret, day)
  k = crypto.hmac_sha256(k, region)
  k = crypto.hmac_sha256(k, service)
  return crypto.hmac_sha256(k, "aws4_request")
end

local function check_field(req, name, pattern)
  local v = req[name]
  if type(v) ~= "string" or (pattern and not v:match(pattern)) then
    error(("bad field '%s' to 'sign'"):format(name), 3)
  end
  return v
end

--[[
sigv4.sign(req) -> headers, info
req: method, path (raw; encoded_path = true when already encoded, for
other services' test vectors), query (see canonical_query), headers
({Name = value}; must include Host), payload_hash (hex; default the empty
body's), date ("20130524T000000Z"), region, service (default "s3"),
access_key, secret_key, session_token (optional).
Returns the headers to add to the request: x-amz-date (unless present),
x-amz-security-token (with a session token; signed) and Authorization;
info = {canonical_request, string_to_sign, signed_headers, signature}, which
hold no secret. Raises on a missing or malformed field, naming the field
only.
]]
function sigv4.sign(req)
  local method = check_field(req, "method", "^%u+$")
  local date = check_field(req, "date", "^%d%d%d%d%d%d%d%dT%d%d%d%d%d%dZ$")
  local region = check_field(req, "region", "^[%w%-_]+$")
  local access = check_field(req, "access_key", "^[^%s/,=]+$")
  check_field(req, "secret_key")
  local service = req.service or "s3"
  local path = check_field(req, "path")
  local payload = req.payload_hash or sigv4.EMPTY_SHA256
  if type(req.headers) ~= "table" then error("bad field 'headers' to 'sign'", 2) end

  local headers, add = {}, {}
  local have = {}
  for k, v in pairs(req.headers) do headers[k] = v; have[k:lower()] = true end
  if not have.host then error("bad field 'headers' to 'sign' (no Host)", 2) end
  if not have["x-amz-date"] then headers["x-amz-date"] = date; add["x-amz-date"] = date end
  if req.session_token and not have["x-amz-security-token"] then
    headers["x-amz-security-token"] = req.session_token
    add["x-amz-security-token"] = req.session_token
  end

  local hblock, signed = sigv4.canonical_headers(headers)
  local creq = table.concat({
    method,
    req.encoded_path and path or sigv4.canonical_path(path),
    sigv4.canonical_query(req.query),
    hblock,
    signed,
    payload,
  }, "\n")
  local day = date:sub(1, 8)
  local scope = ("%s/%s/%s/aws4_request"):format(day, region, service)
  local sts = table.concat({ ALGORITHM, date, scope, crypto.sha256(creq, "hex") }, "\n")
  local key = sigv4.signing_key(req.secret_key, day, region, service)
  local signature = crypto.hmac_sha256(key, sts, "hex")
  add.Authorization = ("%s Credential=%s/%s, SignedHeaders=%s, Signature=%s")
    :format(ALGORITHM, access, scope, signed, signature)
  return add, { canonical_request = creq, string_to_sign = sts,
                signed_headers = signed, signature = signature }
end

-- sigv4.amz_date([t]) -> "YYYYMMDDTHHMMSSZ" for t (default now), UTC.
function sigv4.amz_date(t)
  return os.date("!%Y%m%dT%H%M%SZ", t and math.floor(t) or os.time())
end

return sigv4
