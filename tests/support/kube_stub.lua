-- Helpers for the kube specs: a scratch directory, files, a test CA with
-- server and client certificates (the openssl CLI), and the stub API server
-- (kube_stub.py) started and stopped around a spec.
local json = require "geneva.json"

local SRC = os.getenv("GENEVA_SOURCE_DIR") or "."
local M = { SRC = SRC, PLUGIN = SRC .. "/tests/support/kube_exec_plugin.py" }

local function sh(cmd)
  local f = assert(io.popen(cmd))
  local out = f:read("a")
  local ok, _, rc = f:close()
  return out, ok and 0 or rc
end
M.sh = sh

function M.read(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

function M.write(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
  return p
end

function M.mktemp_dir()
  return (assert(sh("mktemp -d"):match("%S+")))
end

function M.rm_rf(dir) os.execute("rm -rf '" .. dir .. "'") end

-- Base64 of a string (the openssl CLI, as a kubeconfig's *-data would hold it)
function M.b64(s)
  local tmp = os.tmpname()
  M.write(tmp, s)
  local out = sh("base64 -w0 < '" .. tmp .. "'")
  os.remove(tmp)
  return out
end

--[[
M.make_pki(dir) -> {ca, ca_key, server_cert, server_key, client_cert,
client_key, other_ca} paths: a CA that signs a server certificate for
127.0.0.1 and a client certificate (CN geneva-client); other_ca is a CA
that signed neither.
]]
function M.make_pki(dir)
  local p = {}
  for _, k in ipairs { "ca", "ca_key", "server_cert", "server_key", "client_cert", "client_key", "other_ca", "other_key" } do
    p[k] = dir .. "/" .. k .. ".pem"
  end
  local ext = M.write(dir .. "/san.cnf", "subjectAltName = IP:127.0.0.1\n")
  local q = "openssl %s >/dev/null 2>&1"
  local cmds = {
    ("req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout %s -out %s"):format(p.ca_key, p.ca),
    ("req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca -keyout %s -out %s"):format(p.other_key, p.other_ca),
    ("req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout %s -out %s/server.csr"):format(p.server_key, dir),
    ("x509 -req -in %s/server.csr -CA %s -CAkey %s -CAcreateserial -days 2 -extfile %s -out %s")
      :format(dir, p.ca, p.ca_key, ext, p.server_cert),
    ("req -newkey rsa:2048 -nodes -subj /CN=geneva-client -keyout %s -out %s/client.csr"):format(p.client_key, dir),
    ("x509 -req -in %s/client.csr -CA %s -CAkey %s -CAcreateserial -days 2 -out %s")
      :format(dir, p.ca, p.ca_key, p.client_cert),
  }
  for _, c in ipairs(cmds) do
    local _, rc = sh(q:format(c))
    assert(rc == 0, "openssl failed: " .. c)
  end
  return p
end

--[[
M.start(args) -> server {port, base, stop(), requests(), reset(),
throttle(n, code, retry_after), event(ev)}
args: the arguments of kube_stub.py (--tls CERT KEY, --client-ca, --tokens).
]]
function M.start(args)
  local portfile = os.tmpname()
  local h = assert(io.popen(("exec python3 %s/tests/support/kube_stub.py %s > %s")
    :format(SRC, args or "", portfile), "w"))
  local port
  for _ = 1, 400 do
    local line = M.read(portfile):match("^(%d+)\n")
    if line then port = tonumber(line) break end
    os.execute("sleep 0.025")
  end
  os.remove(portfile)
  if not port then h:close() error("the kube stub did not start") end
  local tls = args and args:find("--tls", 1, true)
  local base = ("%s://127.0.0.1:%d"):format(tls and "https" or "http", port)
  local srv = { port = port, base = base }
  -- stub control calls go around the client under test (no auth needed)
  local function ctl(method, path, body)
    local st, _, out = require("geneva.http").request { url = base .. path, method = method,
                                                          body = body, verify = false }
    assert(st == 200, "kube stub control call failed: " .. path)
    return out
  end
  function srv.stop() h:close() end
  function srv.requests() return assert(json.decode(ctl("GET", "/_stub/requests"))) end
  function srv.reset() ctl("POST", "/_stub/reset") end
  function srv.throttle(n, code, retry_after)
    ctl("POST", ("/_stub/throttle?n=%d&code=%d%s"):format(n, code or 429,
      retry_after and ("&retry_after=" .. retry_after) or ""))
  end
  function srv.event(ev)
    ctl("POST", "/_stub/event", json.encode(ev))
  end
  return srv
end

--[[
M.kubeconfig(t) -> YAML text of a kubeconfig: t = {current=, clusters =
{name = {server=, ...}}, users = {name = {...}}, contexts = {name =
{cluster=, user=, namespace=}}} (JSON is YAML, and keeps it exact).
]]
function M.kubeconfig(t)
  local doc = { apiVersion = "v1", kind = "Config", ["current-context"] = t.current,
                clusters = json.array(), users = json.array(), contexts = json.array() }
  for _, kind in ipairs { { "clusters", "cluster" }, { "users", "user" }, { "contexts", "context" } } do
    local names = {}
    for name in pairs(t[kind[1]] or {}) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      doc[kind[1]][#doc[kind[1]] + 1] = { name = name, [kind[2]] = t[kind[1]][name] }
    end
  end
  return json.encode(doc, { indent = 2 })
end

-- An environment function for config.load: only these variables exist
function M.env(vars)
  return function(k) return vars[k] end
end

return M
