-- Starts the Kubernetes API emulator (tests/fakes/kube_apiserver.py, with
-- its KubeRay controller starting a Ray dashboard emulator per RayCluster)
-- for a spec, and reads its test hooks.
--   local kube = require "kube_emulator"
--   local k = kube.start(state_dir [, {"--ready-delay", "0.5", ...}])
--   k.url, k.kubeconfig, k.state_dir
--   k:state() -> {clusters = {...}, counters = {...}, ...}
--   k:clusters() -> names of the RayClusters it holds
--   k:live_dashboards() -> pids of dashboards still running
--   k:kubectl(args...) -> code, stdout, stderr (the real kubectl, on k)
--   k:close()
local proc = require "geneva.proc"
local fs = require "geneva.fs"
local http = require "geneva.http"

local SRC = os.getenv("GENEVA_SOURCE_DIR") or "."

local kube = {}
local K = {}
K.__index = K

function kube.start(state_dir, args)
  assert(fs.mkdir_p(state_dir))
  local argv = { "python3", SRC .. "/tests/fakes/kube_apiserver.py", "--state-dir", state_dir,
                 "--max-life", "900" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local p = assert(proc.spawn { argv = argv, stdin = "pipe", stdout = "pipe", stderr = state_dir .. "/emulator.err" })
  local url = (p:read_line("stdout", 60) or ""):match("^listening (https?://%S+)$")
  local kc = (p:read_line("stdout", 10) or ""):match("^kubeconfig (%S+)$")
  if not (url and kc) then
    p:close()
    error("the Kubernetes emulator did not start: " .. tostring(fs.read(state_dir .. "/emulator.err")))
  end
  return setmetatable({ p = p, url = url, kubeconfig = kc, state_dir = state_dir }, K)
end

function K:hook(method, path, body)
  local st, data = http.json { url = self.url .. path, method = method, json = body, verify = false,
                               headers = { ["User-Agent"] = "geneva-spec/1" }, timeout = 30 }
  assert(st == 200, "emulator hook " .. path .. ": " .. tostring(st) .. " " .. tostring(data))
  return data
end

function K:state() return self:hook("GET", "/_emulator/state") end

function K:clusters()
  local out = {}
  for _, c in ipairs(self:state().clusters or {}) do out[#out + 1] = c.name or (c.metadata and c.metadata.name) end
  return out
end

function K:live_dashboards()
  local out = {}
  local st = self:state()
  local function add(d)
    if type(d) == "table" and d.alive and d.pid then out[#out + 1] = d.pid end
  end
  for _, c in ipairs(st.clusters or {}) do add(c.dashboard) end
  for _, d in ipairs(st.orphaned_dashboards or st.orphans or {}) do add(d) end
  return out
end

function K:kubectl(...)
  local args = { "kubectl", "--kubeconfig", self.kubeconfig, ... }
  local r = assert(proc.run { argv = args, timeout = 60, env_add = { HOME = self.state_dir } })
  return r.code, r.stdout, r.stderr
end

function K:close()
  if self.p then
    self.p:close_stdin()
    self.p:wait(20)
    self.p:close()
    self.p = nil
  end
end

return kube
