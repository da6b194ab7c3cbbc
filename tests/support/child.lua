-- Helpers for specs that run the geneva executable as a child process, and
-- for the scratch files they share with it.
local child = {}

child.bin = os.getenv("GENEVA_BIN") or "geneva"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
child.quote = shell_quote

-- child.cli(args [, opts]) -> exit code, stdout, stderr: runs `geneva
-- args...` (a list, each one argument) and waits. opts.env: variables to
-- set for it; opts.cwd: the directory to run it in; opts.timeout: seconds
-- after which it is terminated (exit code 124).
function child.cli(args, opts)
  opts = opts or {}
  local out, err = os.tmpname(), os.tmpname()
  local prefix = opts.cwd and ("cd " .. shell_quote(opts.cwd) .. " && ") or ""
  for k, v in pairs(opts.env or {}) do prefix = prefix .. k .. "=" .. shell_quote(v) .. " " end
  if opts.timeout then prefix = prefix .. ("timeout -k 5 %d "):format(opts.timeout) end
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = shell_quote(a) end
  local cmd = ("%s%s %s >%s 2>%s"):format(prefix, shell_quote(child.bin),
    table.concat(quoted, " "), out, err)
  local _, _, status = os.execute(cmd)
  local function slurp(p) local f = io.open(p); local s = f:read("a"); f:close(); os.remove(p); return s end
  return status, slurp(out), slurp(err)
end

-- child.run(code [, env]) -> exit code, stdout, stderr: runs `geneva -e code`
function child.run(code, env)
  return child.cli({ "-e", code }, { env = env })
end

-- child.start(dir, name, code, args...) -> Process, output: starts `geneva
-- dir/name.lua args...` in the background, with code written as that
-- script, stdin from /dev/null and stdout and stderr to dir/name.out and
-- dir/name.err; output() -> what it wrote to each so far.
function child.start(dir, name, code, ...)
  local proc = require "geneva.proc"
  local script = child.write(("%s/%s.lua"):format(dir, name), code)
  local out, err = dir .. "/" .. name .. ".out", dir .. "/" .. name .. ".err"
  local p = assert(proc.spawn { argv = { child.bin, script, ... }, stdin = "null", stdout = out, stderr = err })
  return p, function() return child.read(out) or "", child.read(err) or "" end
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

-- child.write(p, text) -> p: writes the file, creating its directory
-- when it is missing
function child.write(p, text)
  local f = io.open(p, "wb")
  if not f then
    assert(os.execute("mkdir -p " .. shell_quote(p:match("^(.*)/") or ".")))
    f = assert(io.open(p, "wb"))
  end
  f:write(text)
  f:close()
  return p
end

-- child.worker_pids(parent [, mode]) -> pids of the `geneva worker --stdio`
-- (mode "--driver": background drivers) children of parent. Anchored, so
-- the shell running pgrep (whose command line holds the pattern) does not count.
-- Under valgrind (GENEVA_VALGRIND: ctest traces children) a worker's command
-- line starts with valgrind's own.
function child.worker_pids(parent, mode)
  local out = {}
  local p = io.popen(("pgrep -P %d -f '^([^ ]*valgrind[^ ]* ([^ ]+ )*)?[^ ]*geneva worker %s$'")
    :format(math.tointeger(parent), mode or "--stdio"))
  for line in p:lines() do out[#out + 1] = math.tointeger(tonumber(line)) end
  p:close()
  return out
end

-- child.pid_alive(pid) -> boolean (kill -0)
function child.pid_alive(pid)
  return os.execute("kill -0 " .. math.tointeger(pid) .. " 2>/dev/null") == true
end

return child
