-- Starts tests/fakes/ray_dashboard.py for a spec and talks to its test
-- routes (/_emulator/state, /_emulator/faults). The emulator's stdin is a
-- pipe of ours: it exits (killing its jobs) when we close it or die.
local proc = require "geneva.proc"
local http = require "geneva.http"
local time = require "geneva.time"
local fs = require "geneva.fs"

local emulator = {}

local SRC = os.getenv("GENEVA_SOURCE_DIR") or "."

local Emu = {}
Emu.__index = Emu

-- emulator.start(state_dir, {"--num-cpus", "4", ...} [, env]) -> Emu {url,
-- state_dir}; env: variables added to its environment (its jobs inherit it)
function emulator.start(state_dir, args, env)
  assert(fs.mkdir_p(state_dir))
  local argv = { "python3", SRC .. "/tests/fakes/ray_dashboard.py", "--max-life", "900",
                 "--state-dir", state_dir }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local p = assert(proc.spawn{ argv = argv, stdin = "pipe", stdout = "pipe",
                               stderr = state_dir .. "/emulator.err", env_add = env })
  local line = p:read_line("stdout", 30)
  local url = line and line:match("^listening (http://127%.0%.0%.1:%d+)$")
  if not url then
    p:close()
    error("the Ray emulator did not start: " .. tostring(line) .. " " .. tostring(fs.read(state_dir .. "/emulator.err")))
  end
  return setmetatable({ p = p, url = url, state_dir = state_dir }, Emu)
end

local function call(self, method, path, body)
  local st, data, _, info = http.json{ url = self.url .. path, method = method, json = body,
                                       headers = { ["User-Agent"] = "geneva-spec/1" }, timeout = 30 }
  assert(st, data)
  return st, data, info
end

-- emu:state() -> {jobs = [{submission_id, status, node, pgid, live_pids}], packages, counters}
function Emu:state() return select(2, call(self, "GET", "/_emulator/state")) end

-- emu:faults(spec): {route=, action=, count=, ...} or a list of them
function Emu:faults(spec) return select(2, call(self, "POST", "/_emulator/faults", spec)) end

-- emu:clear_faults(): drops every fault not yet taken
function Emu:clear_faults() return select(2, call(self, "DELETE", "/_emulator/faults")) end

-- emu:api(method, path [, json]) -> status, data (the real routes, no token)
function Emu:api(method, path, body) return call(self, method, path, body) end

-- emu:counter(name) -> the emulator's count of requests to that route
function Emu:counter(name) return self:state().counters[name] or 0 end

-- emu:live() -> jobs not terminal, and the pids still alive in all jobs
function Emu:live()
  local jobs, pids = {}, {}
  for _, j in ipairs(self:state().jobs) do
    if j.status == "PENDING" or j.status == "RUNNING" then jobs[#jobs + 1] = j end
    for _, pid in ipairs(j.live_pids or {}) do pids[#pids + 1] = pid end
  end
  return jobs, pids
end

-- emu:logs() -> the text of every driver log the emulator wrote (they stay
-- on disk after a DELETE)
function Emu:logs()
  local out = {}
  for _, sess in ipairs(fs.list(self.state_dir) or {}) do
    local dir = self.state_dir .. "/" .. sess .. "/logs"
    for _, f in ipairs(fs.list(dir) or {}) do out[f] = fs.read(dir .. "/" .. f) end
  end
  return out
end

-- emu:wait_idle([timeout]) -> true once no job is live and no pid is left
function Emu:wait_idle(timeout)
  local deadline = time.monotonic() + (timeout or 10)
  while time.monotonic() < deadline do
    local jobs, pids = self:live()
    if #jobs == 0 and #pids == 0 then return true end
    time.sleep(0.05)
  end
  return false
end

function Emu:close()
  if self.p then
    self.p:close_stdin()
    self.p:wait(15)
    self.p:close()
    self.p = nil
  end
end

return emulator
