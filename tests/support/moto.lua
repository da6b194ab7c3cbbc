-- Starts moto's S3 (tests/support/moto_s3.py) on loopback for a spec, with
-- request signatures checked, and gives clients for it.
--
--   local moto = require "moto"
--   local m = moto.start()            -- raises naming moto when it is missing
--   m.endpoint, m.access_key, m.secret_key
--   m.read_only = {access_key =, secret_key =}   -- a user allowed only
--                                     -- s3:GetObject and s3:ListBucket
--   m:bucket("name")                  -- creates it (our client), returns the name
--   m:client{bucket = "name", ...}    -- a geneva.s3 client with m's endpoint and keys
--   m:stop()                          -- closes its stdin: it exits; then reaped
--
-- The server's stdin is our pipe: it exits when stop() closes it or when
-- the spec's process dies, so it never outlives the spec.
local proc = require "geneva.proc"
local fs = require "geneva.fs"

local moto = {}

local SRC = os.getenv("GENEVA_SOURCE_DIR") or "."
-- the Python with moto: the first python3 on PATH (not Debian's)
moto.python = os.getenv("GENEVA_MOTO_PYTHON") or "python3"

local Moto = {}
Moto.__index = Moto

-- moto.start([{env = {...}}]) -> Moto
function moto.start(opts)
  opts = opts or {}
  local err_file = os.tmpname()
  local p, msg = proc.spawn { argv = { moto.python, SRC .. "/tests/support/moto_s3.py" },
    stdin = "pipe", stdout = "pipe", stderr = err_file, env_add = opts.env }
  if not p then error("cannot start moto (" .. moto.python .. "): " .. tostring(msg)) end
  local line = p:read_line("stdout", 60)
  local endpoint, ak, sk, rak, rsk = (line or ""):match("^ready (%S+) (%S+) (%S+) (%S+) (%S+)$")
  if not endpoint then
    local err = fs.read(err_file) or ""
    p:close()
    os.remove(err_file)
    error(("moto did not start (the S3 specs need moto 5 and boto3 in the first python3 on PATH): %s %s")
      :format(tostring(line), err:sub(-2000)), 2)
  end
  return setmetatable({ p = p, endpoint = endpoint, access_key = ak, secret_key = sk,
                        read_only = { access_key = rak, secret_key = rsk }, err_file = err_file }, Moto)
end

-- m:client(opts) -> geneva.s3 client for m (opts override)
function Moto:client(opts)
  local o = { endpoint = self.endpoint, region = "us-east-1",
              credentials = { access_key = self.access_key, secret_key = self.secret_key },
              getenv = function() return nil end }
  for k, v in pairs(opts or {}) do o[k] = v end
  return require("geneva.s3").client(o)
end

-- m:bucket(name) -> name, created
function Moto:bucket(name)
  local c = self:client { bucket = name }
  c:create_bucket()
  c:close()
  return name
end

-- m:env() -> the environment a child needs to reach m with the standard
-- chain (and the read-only user's keys, for moto.from_env)
function Moto:env()
  return { AWS_ENDPOINT_URL = self.endpoint, AWS_ACCESS_KEY_ID = self.access_key,
           AWS_SECRET_ACCESS_KEY = self.secret_key, AWS_REGION = "us-east-1",
           GENEVA_TEST_S3_READ_ONLY_KEYS = self.read_only.access_key .. " " .. self.read_only.secret_key }
end

-- m:python(code, ...) -> stdout: runs code in moto's python with boto3
-- pointed at m (variables: s3 = a boto3 client, argv = {...})
function Moto:python(code, ...)
  local prelude = ("import boto3, sys\ns3 = boto3.client('s3', endpoint_url=%q, region_name='us-east-1', " ..
    "aws_access_key_id=%q, aws_secret_access_key=%q)\nargv = sys.argv[1:]\n"):format(
    self.endpoint, self.access_key, self.secret_key)
  local res = assert(proc.run { argv = { moto.python, "-c", prelude .. code, ... }, timeout = 120 })
  if not res.ok then
    error("python failed: " .. tostring(res.stderr))
  end
  return res.stdout
end

local Proxy = {}
Proxy.__index = Proxy

-- m:proxy() -> Proxy {endpoint}: tests/support/fault_proxy.py in front of
-- m. proxy:faults{sequence=, rates=, match=, seed=} sets what it injects;
-- proxy:state() -> {requests, injected = {action = n}, log}; proxy:stop().
function Moto:proxy()
  local p = assert(proc.spawn { argv = { "python3", SRC .. "/tests/support/fault_proxy.py", self.endpoint },
                                stdin = "pipe", stdout = "pipe" })
  local line = p:read_line("stdout", 30)
  local url = line and line:match("^listening (http://%S+)$")
  if not url then p:close(); error("the fault proxy did not start: " .. tostring(line)) end
  return setmetatable({ p = p, endpoint = url }, Proxy)
end

local function control(self, body)
  local http = require "geneva.http"
  local st, data = http.json { url = self.endpoint .. "/__faults__", method = body and "POST" or "GET",
                               json = body, timeout = 10 }
  assert(st == 200, "fault proxy: " .. tostring(data))
  return data
end
function Proxy:faults(spec) return control(self, spec) end
function Proxy:state() return control(self) end
function Proxy:stop()
  if self.p then
    self.p:close_stdin()
    self.p:wait(10)
    self.p:close()
    self.p = nil
  end
end

-- moto.from_env() -> Moto for the server tests/support/with_moto.lua
-- started for this process (stop() leaves it to the wrapper) | nil
function moto.from_env()
  local e, ak, sk = os.getenv("AWS_ENDPOINT_URL"), os.getenv("AWS_ACCESS_KEY_ID"), os.getenv("AWS_SECRET_ACCESS_KEY")
  if os.getenv("GENEVA_TEST_STORE") ~= "s3" or not (e and ak and sk) then return nil end
  local rak, rsk = (os.getenv("GENEVA_TEST_S3_READ_ONLY_KEYS") or ""):match("^(%S+) (%S+)$")
  return setmetatable({ endpoint = e, access_key = ak, secret_key = sk,
                        read_only = { access_key = rak, secret_key = rsk } }, Moto)
end

function Moto:stop()
  if self.p then
    self.p:close_stdin()
    self.p:wait(15)
    self.p:close()
    self.p = nil
    os.remove(self.err_file)
  end
end

return moto
