-- Real SIGINT/SIGTERM/SIGHUP to a geneva process that holds resources: its memcheck
-- teardown callbacks run, its children are gone, and it exits 128+n.
local proc = require "geneva.proc"
local time = require "geneva.time"
local fs = require "geneva.fs"
local child = require "child"

local script = [[
local geneva = require "geneva"
local marker, mode = arg[1], arg[2]
local scope = geneva.ledger.scope{ name = "job" }
scope:activate()
local pids, kids = {}, {}
for i = 1, 2 do
  kids[i] = assert(geneva.proc.spawn{ argv = { "sleep", "1000" } })
  pids[i] = kids[i]:pid()
end
scope:reserve("file", "marker"):bind(function()
  if mode == "slow" then geneva.time.sleep(0.5) end  -- a second signal lands here
  local f = assert(io.open(marker, "w")); f:write("torn down"); f:close()
end)
local tmp = geneva.fs.tmpdir()
io.stdout:write(table.concat(pids, " "), " ", tmp.path, "\n"); io.stdout:flush()
if mode == "busy" then
  local x = 0
  while true do x = x + 1 end             -- interrupted by the hook
elseif mode == "pcall" then
  while true do pcall(geneva.time.sleep, 0.01) end  -- pcall cannot keep it
else
  geneva.time.sleep(1000)                   -- interrupted inside C
end
]]

describe("signals", function()
  local dir, path
  before_each(function()
    dir = child.tmpdir()
    path = dir .. "/job.lua"
    assert(fs.write(path, script))
  end)
  after_each(function() child.rmtree(dir) end)

  local function run(sig, mode, extra_signals)
    local marker = dir .. "/marker"
    local p = assert(proc.spawn{ argv = { child.bin, path, marker, mode }, stdout = "pipe" })
    local line = assert(p:read_line("stdout", 20))
    local words = {}
    for w in line:gmatch("%S+") do words[#words + 1] = w end
    local kids = { math.tointeger(tonumber(words[1])), math.tointeger(tonumber(words[2])) }
    local tmp = words[3]
    assert.is_true(child.pid_alive(kids[1]) and child.pid_alive(kids[2]))
    time.sleep(0.1)
    assert(proc.kill(p:pid(), sig))
    for _ = 1, extra_signals or 0 do
      time.sleep(0.1)
      proc.kill(p:pid(), sig)
    end
    local how, code = p:wait(20)
    p:close()
    return how, code, marker, kids, tmp
  end

  local cases = {
    { "INT", 130, "sleep" }, { "TERM", 143, "sleep" }, { "HUP", 129, "sleep" },
    { "INT", 130, "busy" }, { "TERM", 143, "pcall" },
  }
  for _, c in ipairs(cases) do
    it(("SIG%s during %s tears down and exits %d"):format(c[1], c[3], c[2]), function()
      local how, code, marker, kids, tmp = run(c[1], c[3])
      assert.equals("exited", how)
      assert.equals(c[2], code)
      assert.equals("torn down", child.read(marker))
      assert.is_false(child.pid_alive(kids[1]))
      assert.is_false(child.pid_alive(kids[2]))
      assert.is_false(fs.exists(tmp))
    end)
  end

  it("a second Ctrl-C cannot cut teardown short", function()
    local how, code, marker, kids = run("INT", "slow", 2)
    assert.equals("exited", how)
    assert.equals(130, code)
    assert.equals("torn down", child.read(marker))
    assert.is_false(child.pid_alive(kids[1]))
  end)
end)
