-- Helpers for specs that run the geneva executable as a child process.
local child = {}

child.bin = os.getenv("GENEVA_BIN") or "geneva"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
child.quote = shell_quote

-- child.run(code [, env]) -> exit code, stdout, stderr: runs `geneva -e code`
function child.run(code, env)
  local out, err = os.tmpname(), os.tmpname()
  local prefix = ""
  for k, v in pairs(env or {}) do prefix = prefix .. k .. "=" .. shell_quote(v) .. " " end
  local cmd = ("%s%s -e %s >%s 2>%s"):format(prefix, shell_quote(child.bin),
    shell_quote(code), out, err)
  local _, _, status = os.execute(cmd)
  local function slurp(p) local f = io.open(p); local s = f:read("a"); f:close(); os.remove(p); return s end
  return status, slurp(out), slurp(err)
end

-- child.tmpdir() -> a fresh directory path (removed by child.rmtree)
function child.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p " .. shell_quote(p)))
  return p
end

function child.rmtree(p) os.execute("rm -rf " .. shell_quote(p)) end

function child.exists(p)
  local f = io.open(p, "r")
  if f then f:close() return true end
  return false
end

function child.read(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- child.worker_pids(parent [, mode]) -> pids of the `geneva worker --stdio`
-- (mode "--driver": background drivers) children of parent. Anchored, so
-- the shell running pgrep (whose command line holds the pattern) does not count.
function child.worker_pids(parent, mode)
  local out = {}
  local p = io.popen(("pgrep -P %d -f '^[^ ]*geneva worker %s$'"):format(math.tointeger(parent), mode or "--stdio"))
  for line in p:lines() do out[#out + 1] = math.tointeger(tonumber(line)) end
  p:close()
  return out
end

-- child.pid_alive(pid) -> boolean (kill -0)
function child.pid_alive(pid)
  return os.execute("kill -0 " .. math.tointeger(pid) .. " 2>/dev/null") == true
end

return child
