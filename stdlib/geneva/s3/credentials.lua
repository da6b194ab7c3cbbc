-- geneva.s3.credentials: the standard chain, as the AWS SDKs and CLI walk it.
--   1. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY [/ AWS_SESSION_TOKEN]
--   2. the profile (AWS_PROFILE, else "default") in
--      AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials
-- A profile the caller names (connect's `profile`, opts.profile) comes
-- before step 1, as `aws --profile` and boto3's Session(profile_name=) do:
-- otherwise ambient keys (CI, a container's environment) would silently
-- stand in for the credentials asked for. AWS_PROFILE is ambient too: it
-- does not beat the keys.
-- Messages name variables, files and profiles, never a key's value.
local errors = require "geneva.errors"
local fs = require "geneva.fs"

local credentials = {}

local MAX_FILE = 1024 * 1024

-- parse_ini(text) -> {section = {key = value}}: '#' and ';' comments,
-- keys lowercased, values trimmed.
function credentials.parse_ini(text)
  local out, cur = {}, nil
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    line = line:gsub("\r$", "")
    local sec = line:match("^%s*%[%s*([^%]]-)%s*%]%s*$")
    if sec then
      cur = out[sec] or {}
      out[sec] = cur
    elseif cur and not line:match("^%s*[#;]") then
      local k, v = line:match("^%s*([%w_%-%.]+)%s*=%s*(.-)%s*$")
      if k then cur[k:lower()] = v end
    end
  end
  return out
end

local function valid(c)
  return type(c.access_key) == "string" and c.access_key:match("^[%w]+$")
    and type(c.secret_key) == "string" and #c.secret_key > 0
    and not c.secret_key:find("[%c]")
    and (c.session_token == nil or (type(c.session_token) == "string"
                                    and not c.session_token:find("[%c]")))
end

--[[
credentials.resolve(opts) -> {access_key, secret_key, session_token?, source}
opts.getenv(name) reads the environment (default os.getenv); opts.profile
names a profile. source says where they came from ("environment", or
"profile 'p' in <file>"). Raises invalid_argument when nothing is found or
what is found is malformed.
]]
function credentials.resolve(opts)
  opts = opts or {}
  local getenv = opts.getenv or os.getenv
  local function env(name)
    local v = getenv(name)
    if v == "" then return nil end
    return v
  end
  if not opts.profile and env("AWS_ACCESS_KEY_ID") then
    local c = { access_key = env("AWS_ACCESS_KEY_ID"), secret_key = env("AWS_SECRET_ACCESS_KEY"),
                session_token = env("AWS_SESSION_TOKEN"), source = "environment" }
    if not c.secret_key then
      errors.raise("invalid_argument", "s3 credentials: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not")
    end
    if not valid(c) then
      errors.raise("invalid_argument", "s3 credentials: malformed AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_SESSION_TOKEN")
    end
    return c
  end
  local profile = opts.profile or env("AWS_PROFILE") or "default"
  local file = env("AWS_SHARED_CREDENTIALS_FILE")
  if not file then
    local home = env("HOME") or fs.home()
    file = home and (home .. "/.aws/credentials")
  end
  local text = file and fs.read_regular(file, MAX_FILE)
  if not text then
    errors.raise("invalid_argument",
      "s3 credentials: none found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or profile '%s' in %s)",
      profile, tostring(file))
  end
  local sec = credentials.parse_ini(text)[profile]
  if not sec then
    errors.raise("invalid_argument", "s3 credentials: no profile '%s' in %s", profile, file)
  end
  local c = { access_key = sec.aws_access_key_id, secret_key = sec.aws_secret_access_key,
              session_token = sec.aws_session_token,
              source = ("profile '%s' in %s"):format(profile, file) }
  if not c.access_key or not c.secret_key then
    errors.raise("invalid_argument",
      "s3 credentials: profile '%s' in %s lacks aws_access_key_id or aws_secret_access_key", profile, file)
  end
  if not valid(c) then
    errors.raise("invalid_argument", "s3 credentials: profile '%s' in %s has malformed keys", profile, file)
  end
  return c
end

return credentials
