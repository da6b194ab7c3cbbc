-- geneva.proc: child processes. The C core (geneva.proc.core) does the
-- fork/exec, pipes, process groups and teardown; this face adds argv
-- shorthand, whole-stream reads and `run` (spawn, feed, collect, wait).
--
-- Conventions: misuse raises; expected failures return nil, msg, code
-- ("ENOENT", "ETIMEDOUT", "EPIPE", "EOF", "EINTR" ...). Every Process is
-- owned by the current ledger scope until closed: closing kills its whole
-- process group (TERM, grace, KILL) and reaps it.
local core = require "geneva.proc.core"

local M = {
  poll = core.poll, self = core.self, info = core.info, alive = core.alive,
  exe = core.exe, kill = core.kill, killpg = core.killpg, signum = core.signum,
  clock = core.clock,   -- monotonic seconds, for deadlines
  kill_if = core.kill_if,   -- (pid, start_time, sig [, group]): only that very process
}

local Process = core.Process   -- the method table shared by every Process
local now = core.clock         -- monotonic seconds

-- Accepts {argv = {...}, ...} or the shorthand {"cmd", "arg", stdout = ...}.
local function normalize(opts)
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'spawn' (table expected, got %s)"):format(type(opts)), 3)
  end
  if opts.argv ~= nil or opts[1] == nil then return opts end
  local o = { argv = table.move(opts, 1, #opts, 1, {}) }
  for k, v in pairs(opts) do
    if type(k) ~= "number" then o[k] = v end
  end
  return o
end

-- spawn(opts) -> Process | nil, msg, code. See bindings/proc.c for opts
-- (argv, env, env_add, cwd, stdin/stdout/stderr, new_group, pdeathsig, grace).
-- The standard streams are inherited unless given. Raises on bad options.
function M.spawn(opts)
  return core.spawn(normalize(opts))
end

-- p:read_all(which [, timeout_s]) -> everything up to EOF | nil, msg, code.
-- On timeout or interrupt what was read so far is lost to the caller:
-- use read() in a loop for partial results.
function Process:read_all(which, timeout)
  local deadline = timeout and now() + timeout
  local parts = {}
  while true do
    local left = deadline and math.max(0, deadline - now())
    local data, msg, code = self:read(which, 1 << 16, left)
    if data then
      parts[#parts + 1] = data
    elseif code == "EOF" then
      return table.concat(parts)
    else
      return nil, msg, code
    end
  end
end

-- p:lines(which [, timeout_s]) -> iterator over lines until EOF; raises on
-- a timeout or read error (the per-line timeout is timeout_s).
function Process:lines(which, timeout)
  return function()
    local line, msg, code = self:read_line(which, timeout)
    if line then return line end
    if code == "EOF" then return nil end
    error(("reading %s of process %d: %s"):format(which, self:pid(), msg), 2)
  end
end

--[[
run(opts) -> result | nil, msg, code
Spawns opts (as spawn; stdout and stderr default to "pipe"), writes
opts.input (a string) to stdin, collects stdout and stderr without
deadlocking, and waits. With opts.timeout (seconds) the process group is
terminated when it runs out: nil, "timeout", "ETIMEDOUT".
result: {status = "exited"|"signaled", code = exit code or signal number,
ok = (exited with 0), stdout = string, stderr = string}.
The process is always closed before run returns.
]]
function M.run(opts)
  opts = normalize(opts)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  local input = o.input
  if input ~= nil and type(input) ~= "string" then
    error("bad option 'input' to 'run' (string expected, got " .. type(input) .. ")", 2)
  end
  o.input, o.timeout = nil, nil
  o.stdin = o.stdin or (input and "pipe" or "null")
  o.stdout = o.stdout or "pipe"
  o.stderr = o.stderr or "pipe"
  local deadline = opts.timeout and now() + opts.timeout

  local p <close>, msg, code = core.spawn(o)
  if not p then return nil, msg, code end
  local out = { stdout = {}, stderr = {} }
  local watch = {}
  for _, which in ipairs { "stdout", "stderr" } do
    if p:fds()[which] then watch[#watch + 1] = { p, which } end
  end
  local pos = 1
  if input and p:fds().stdin then
    watch[#watch + 1] = { p, "stdin" }
  elseif input == nil and p:fds().stdin then
    p:close_stdin()
  end
  while #watch > 0 do
    local left = deadline and math.max(0, deadline - now())
    if left == 0 then return nil, "timeout", "ETIMEDOUT" end
    local ready, err, ecode = core.poll(watch, left)
    if not ready then return nil, err, ecode end
    for _, e in ipairs(ready) do
      local which = e[2]
      if which == "stdin" then
        local n, werr, wcode = p:write(input:sub(pos, pos + 65535), 0)
        if n then pos = pos + n end
        if not n and wcode ~= "EPIPE" then return nil, werr, wcode end
        if not n or pos > #input then
          p:close_stdin()
          e.done = true
        end
      else
        local data, rerr, rcode = p:read(which, 1 << 16, 0)
        if data then
          out[which][#out[which] + 1] = data
        elseif rcode == "EOF" then
          e.done = true
        elseif rcode ~= "ETIMEDOUT" then
          return nil, rerr, rcode
        end
      end
    end
    for i = #watch, 1, -1 do
      if watch[i].done then table.remove(watch, i) end
    end
  end
  local left = deadline and math.max(0, deadline - now())
  local status, value, wcode = p:wait(left)
  if not status then return nil, value, wcode end
  return {
    status = status, code = value, ok = status == "exited" and value == 0,
    stdout = table.concat(out.stdout), stderr = table.concat(out.stderr),
  }
end

-- cpu_count() -> the number of online CPUs (at least 1): the default size
-- of local worker pools.
function M.cpu_count()
  local f = io.open("/sys/devices/system/cpu/online")
  local s = f and f:read("a") or ""
  if f then f:close() end
  local n = 0
  for a, b in s:gmatch("(%d+)%-?(%d*)") do
    n = n + (b ~= "" and (tonumber(b) - tonumber(a) + 1) or 1)
  end
  return math.max(n, 1)
end

return M
