-- geneva.proc: spawn/exec hygiene, pipes, waiting, process groups, teardown memcheck
-- guarantees (scope close, host exit, PR_SET_PDEATHSIG) and handle lifetimes.
local proc = require "geneva.proc"
local child = require "child"

local GENEVA = os.getenv("GENEVA_BIN") or proc.exe()

-- Polls until pid is dead (gone or a zombie) or secs pass.
local function gone_within(pid, secs)
  local deadline = proc.clock() + (secs or 5)
  repeat
    if not proc.alive(pid) then return true end
    os.execute("sleep 0.02")
  until proc.clock() > deadline
  return not proc.alive(pid)
end

-- Starts `geneva -e code` with stdout/stderr pipes.
local function geneva(code)
  return assert(proc.spawn { argv = { GENEVA, "-e", code }, stdout = "pipe", stderr = "pipe" })
end

describe("geneva.proc", function()
  describe("spawn and pipes", function()
    it("reads echo's output line by line, then EOF", function()
      local p <close> = assert(proc.spawn { argv = { "echo", "hello", "world" }, stdout = "pipe" })
      assert.equals("hello world", p:read_line("stdout", 5))
      local line, msg, code = p:read_line("stdout", 5)
      assert.is_nil(line)
      assert.equals("eof", msg)
      assert.equals("EOF", code)
      assert.same({ "exited", 0 }, { p:wait(5) })
      assert.is_number(p:pid())
      assert.equals(p:pid(), p:pgid())
    end)

    it("round-trips through cat", function()
      local p <close> = assert(proc.spawn { "cat", stdin = "pipe", stdout = "pipe" })
      assert.equals(4, p:write("abc\n"))
      assert.equals("abc", p:read_line("stdout", 5))
      assert.equals(5, p:write("x\ny\nz"))
      assert.equals("x", p:read_line("stdout", 5))
      assert.equals("y", p:read_line("stdout", 5))
      assert.is_true(p:close_stdin())
      assert.is_true(p:close_stdin())           -- idempotent
      assert.equals("z", p:read_line("stdout", 5))  -- last line without "\n"
      assert.same({ nil, "eof", "EOF" }, { p:read("stdout", nil, 5) })
      assert.same({ "exited", 0 }, { p:wait(5) })
    end)

    it("read returns what is there, up to max_bytes", function()
      local p <close> = assert(proc.spawn { "printf", "abcdef", stdout = "pipe" })
      assert.same({ "exited", 0 }, { p:wait(5) })
      assert.equals("abc", p:read("stdout", 3, 5))
      assert.equals("def", p:read("stdout", 100, 5))
      assert.same({ nil, "eof", "EOF" }, { p:read("stdout") })
    end)

    it("polls pipes of one or many processes", function()
      local a <close> = assert(proc.spawn { "sh", "-c", "echo a", stdout = "pipe" })
      local b <close> = assert(proc.spawn { "sleep", "10", stdout = "pipe", stderr = "pipe" })
      assert.same({ "stdout" }, a:poll(5))
      assert.same({}, b:poll(0.05))
      local ea, eb = { a, "stdout" }, { b, "stdout" }
      local ready = proc.poll({ eb, ea }, 5)
      assert.equals(1, #ready)
      assert.equals(ea, ready[1])
      assert.same({}, proc.poll({ eb, { b, "stderr" } }, 0.05))
      local fds = b:fds()
      assert.is_number(fds.stdout)
      assert.is_number(fds.stderr)
      assert.is_nil(fds.stdin)
    end)

    it("passes env, env_add and removes with false", function()
      local r = assert(proc.run { "sh", "-c", 'printf "%s:%s" "$FOO" "$HOME"',
        env = { FOO = "bar", N = 1 } })
      assert.equals("bar:", r.stdout)
      r = assert(proc.run { "sh", "-c", 'printf "%s:%s:%s" "$GENEVA_T" "$HOME" "$N"',
        env_add = { GENEVA_T = "x y", N = 42 } })
      assert.equals("x y:" .. (os.getenv("HOME") or "") .. ":42", r.stdout)
      r = assert(proc.run { "sh", "-c", 'printf "%s" "${HOME-unset}"', env_add = { HOME = false } })
      assert.equals("unset", r.stdout)
    end)

    it("runs in cwd and reports a bad cwd", function()
      local dir = child.tmpdir()
      finally(function() child.rmtree(dir) end)
      local r = assert(proc.run { "sh", "-c", "echo hi > marker", cwd = dir })
      assert.is_true(r.ok)
      assert.equals("hi\n", child.read(dir .. "/marker"))
      local p, msg, code = proc.spawn { "true", cwd = dir .. "/nope" }
      assert.is_nil(p)
      assert.equals("ENOENT", code)
      assert.matches("cannot change directory to '.*/nope'", msg)
    end)

    it("redirects to files, /dev/null, and stderr into stdout", function()
      local dir = child.tmpdir()
      finally(function() child.rmtree(dir) end)
      local f = assert(io.open(dir .. "/in", "w"))
      f:write("from a file\n")
      f:close()
      local p = assert(proc.spawn { "sh", "-c", "cat; echo err >&2", stdin = dir .. "/in",
        stdout = dir .. "/out", stderr = "stdout" })
      assert.same({ "exited", 0 }, { p:wait(5) })
      p:close()
      assert.equals("from a file\nerr\n", child.read(dir .. "/out"))
      local r = assert(proc.run { "sh", "-c", "echo out; echo err >&2", stdout = "null" })
      assert.equals("err\n", r.stderr)
      r = assert(proc.run { "sh", "-c", "echo out; echo err >&2", stdout = "stderr" })
      assert.equals("out\nerr\n", r.stderr)
      local q, msg, code = proc.spawn { "cat", stdin = dir .. "/missing" }
      assert.is_nil(q)
      assert.equals("ENOENT", code)
      assert.matches("cannot open '.*/missing'", msg)
    end)

    it("moves several MB both ways through cat without deadlock", function()
      local chunk = {}
      for i = 1, 4096 do chunk[i] = string.format("%07d\n", i) end
      local data = table.concat(chunk):rep(256)    -- 8 MiB
      local p <close> = assert(proc.spawn { "cat", stdin = "pipe", stdout = "pipe" })
      local pos, out, got = 1, {}, 0
      local win, rout = { p, "stdin" }, { p, "stdout" }
      local watch = { win, rout }
      while true do
        local ready = assert(proc.poll(watch, 10))
        assert.is_true(#ready > 0)
        for _, e in ipairs(ready) do
          if e == win then
            local n = assert(p:write(data:sub(pos, pos + 100000), 0))
            pos = pos + n
            if pos > #data then
              p:close_stdin()
              watch = { rout }
            end
          else
            local s, _, code = p:read("stdout", 1 << 20, 0)
            if s then
              out[#out + 1] = s
              got = got + #s
            else
              assert.equals("EOF", code)
              goto done
            end
          end
        end
      end
      ::done::
      assert.equals(#data, got)
      assert.is_true(table.concat(out) == data)
      assert.same({ "exited", 0 }, { p:wait(5) })
    end)

    it("run() feeds input and collects both streams", function()
      local input = ("0123456789"):rep(300000)   -- 3 MB in and out
      local r = assert(proc.run { "sh", "-c", "cat; echo done >&2", input = input })
      assert.is_true(r.ok)
      assert.equals("exited", r.status)
      assert.equals(0, r.code)
      assert.is_true(r.stdout == input)
      assert.equals("done\n", r.stderr)
      local x, msg, code = proc.run { "sleep", "10", timeout = 0.2 }
      assert.is_nil(x)
      assert.equals("timeout", msg)
      assert.equals("ETIMEDOUT", code)
    end)

    it("reports EPIPE when the child closed its stdin", function()
      local p <close> = assert(proc.spawn { "true", stdin = "pipe" })
      assert.same({ "exited", 0 }, { p:wait(5) })
      local n, msg, code = p:write(("x"):rep(100000))
      assert.is_nil(n)
      assert.matches("broken pipe", msg)
      assert.equals("EPIPE", code)
    end)

    it("times out a read", function()
      local p <close> = assert(proc.spawn { "sleep", "10", stdout = "pipe" })
      local t0 = proc.clock()
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { p:read("stdout", nil, 0.1) })
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { p:read_line("stdout", 0.1) })
      assert.is_true(proc.clock() - t0 >= 0.2)
    end)
  end)

  describe("exec failures", function()
    it("raises on an argv whose __len lies (no buffer overflow)", function()
      local core = require "geneva.proc.core"
      -- (2^61 - 1 + 1) * sizeof(char *) wraps to 0 bytes in size_t
      local argv = setmetatable({ "true", "x", "y" }, { __len = function() return (1 << 61) - 1 end })
      assert.has_error(function() core.spawn { argv = argv } end,
        "bad argument #1 to 'spawn' (option 'argv' is too long)")
      argv = setmetatable({ "true" }, { __len = function() return -1 end })
      assert.has_error(function() core.spawn { argv = argv } end)
    end)

    it("reports ENOENT from the child", function()
      local p, msg, code = proc.spawn { argv = { "nosuch-geneva-cmd" } }
      assert.is_nil(p)
      assert.equals("cannot run 'nosuch-geneva-cmd': No such file or directory", msg)
      assert.equals("ENOENT", code)
      p, msg, code = proc.spawn { argv = { "/nonexistent/x" } }
      assert.is_nil(p)
      assert.equals("ENOENT", code)
    end)

    it("reports EACCES for a file that is not executable", function()
      local dir = child.tmpdir()
      finally(function() child.rmtree(dir) end)
      local f = assert(io.open(dir .. "/script", "w"))
      f:write("#!/bin/sh\necho hi\n")
      f:close()
      local p, msg, code = proc.spawn { argv = { dir .. "/script" } }
      assert.is_nil(p)
      assert.equals("EACCES", code)
      assert.matches("cannot run", msg)
    end)

    it("searches the PATH of the child's environment", function()
      local p, _, code = proc.spawn { "sh", "-c", "true", env = { PATH = "/nonexistent" } }
      assert.is_nil(p)
      assert.equals("ENOENT", code)
      local r = assert(proc.run { "sh", "-c", "exit 0", env = {} })   -- default PATH
      assert.is_true(r.ok)
    end)

    it("raises on bad options", function()
      assert.has_error(function() proc.spawn {} end)
      assert.has_error(function() proc.spawn { argv = {} } end)
      assert.has_error(function() proc.spawn { argv = { "" } } end)
      assert.has_error(function() proc.spawn { argv = { "true", {} } } end)
      assert.has_error(function() proc.spawn { "true", stdout = 5 } end)
      assert.has_error(function() proc.spawn { "true", stdout = "" } end)
      assert.has_error(function() proc.spawn { "true", stdout = "stderr", stderr = "stdout" } end)
      assert.has_error(function() proc.spawn { "true", env = { [1] = "x" } } end)
      assert.has_error(function() proc.spawn { "true", env_add = { ["A=B"] = "x" } } end)
      assert.has_error(function() proc.spawn { "true", new_group = "yes" } end)
      assert.has_error(function() proc.spawn("true") end)
      local p <close> = assert(proc.spawn { "true", stdout = "pipe" })
      assert.has_error(function() p:read("stdin") end)
      assert.has_error(function() p:read("stderr") end, "bad argument #1 to 'read' (stderr is not a pipe (or was closed))")
      assert.has_error(function() p:read("stdout", 0) end)
      assert.has_error(function() p:wait(-1) end)
      assert.has_error(function() p:write("x") end)
      assert.has_error(function() p:kill("NOSUCH") end)
      assert.has_error(function() proc.poll({ { p, "bogus" } }) end)
    end)
  end)

  describe("waiting and signals", function()
    it("waits with a timeout, then sees the signal", function()
      local p <close> = assert(proc.spawn { "sleep", "10" })
      assert.same({ nil, "timeout", "ETIMEDOUT" }, { p:wait(0.1) })
      assert.equals("running", p:status())
      assert.is_true(p:kill())
      assert.same({ "signaled", 15 }, { p:wait(5) })
      assert.same({ "signaled", 15 }, { p:status() })
      assert.same({ nil, "kill: No such process", "ESRCH" }, { p:kill("KILL") })
    end)

    it("reports exit codes and signals", function()
      local function status(cmd)
        local p <close> = assert(proc.spawn { "sh", "-c", cmd })
        return { p:wait(5) }
      end
      assert.same({ "exited", 0 }, status("exit 0"))
      assert.same({ "exited", 3 }, status("exit 3"))
      assert.same({ "exited", 255 }, status("exit 255"))
      assert.same({ "signaled", 9 }, status("kill -KILL $$"))
      assert.same({ "signaled", 15 }, status("kill -TERM $$"))
      assert.equals(9, proc.signum("KILL"))
      assert.equals(15, proc.signum("SIGTERM"))
    end)

    it("resets the signal mask and dispositions in the child", function()
      -- the host ignores SIGPIPE: exec would pass SIG_IGN on unless reset
      local r = assert(proc.run { "grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status" })
      assert.equals("SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n", r.stdout)
    end)

    it("kill() reaches the whole group, grandchildren included", function()
      local p <close> = assert(proc.spawn { "sh", "-c", "sleep 100 & echo $!; wait", stdout = "pipe" })
      local gpid = math.tointeger(tonumber(p:read_line("stdout", 5)))
      assert.is_true(proc.alive(gpid))
      local info = assert(proc.info(gpid))
      assert.equals(p:pid(), info.pgid)
      assert.is_true(p:kill("TERM"))
      assert.same({ "signaled", 15 }, { p:wait(5) })
      assert.is_true(gone_within(gpid, 5))
    end)

    it("terminate() escalates to KILL after the grace period", function()
      local p <close> = assert(proc.spawn { "sh", "-c", "trap '' TERM; echo ready; sleep 100; sleep 100",
        stdout = "pipe" })
      assert.equals("ready", p:read_line("stdout", 5))
      local t0 = proc.clock()
      assert.same({ "signaled", 9 }, { p:terminate(0.3) })
      assert.is_true(proc.clock() - t0 >= 0.3)
    end)

    it("proc.kill and proc.killpg", function()
      local p <close> = assert(proc.spawn { "sleep", "10" })
      assert.is_true(proc.kill(p:pid(), 0))
      assert.is_true(proc.killpg(p:pgid(), "KILL"))
      assert.same({ "signaled", 9 }, { p:wait(5) })
      local ok, _, code = proc.kill(p:pid(), "TERM")
      assert.is_nil(ok)
      assert.equals("ESRCH", code)
      assert.has_error(function() proc.kill(0, "TERM") end)
      assert.has_error(function() proc.kill(1, "NOPE") end)
    end)

    it("new_group = false keeps the child in our group", function()
      local p <close> = assert(proc.spawn { "sleep", "10", new_group = false })
      assert.is_nil(p:pgid())
      assert.equals(proc.self().pgid, proc.info(p:pid()).pgid)
      assert.is_true(p:kill())
      assert.same({ "signaled", 15 }, { p:wait(5) })
    end)
  end)

  describe("teardown guarantees", function()
    it("a geneva child that errors out kills what it spawned", function()
      local p <close> = geneva([[
        local proc = require "geneva.proc"
        local s = assert(proc.spawn { argv = { "sleep", "1000" } })
        io.stdout:write(s:pid(), "\n")
        io.stdout:flush()
        error("boom")
      ]])
      local spid = math.tointeger(tonumber(p:read_line("stdout", 10)))
      assert.is_number(spid)
      local status, code = p:wait(10)
      assert.equals("exited", status)
      assert.is_true(code ~= 0)
      assert.matches("boom", p:read_all("stderr", 5))
      local info, _, ecode = proc.info(spid)
      assert.is_nil(info)                    -- killed and reaped by the child's host
      assert.equals("ESRCH", ecode)
    end)

    it("a SIGKILLed geneva child's sleep dies by PR_SET_PDEATHSIG", function()
      local p <close> = geneva([[
        local proc = require "geneva.proc"
        local s = assert(proc.spawn { argv = { "sleep", "1000" } })
        io.stdout:write(s:pid(), "\n")
        io.stdout:flush()
        s:wait()
      ]])
      local spid = math.tointeger(tonumber(p:read_line("stdout", 10)))
      assert.is_true(proc.alive(spid))
      assert.is_true(p:kill("KILL"))
      assert.same({ "signaled", 9 }, { p:wait(5) })
      assert.is_true(gone_within(spid, 5))
    end)

    it("without pdeathsig the orphan survives (so the default matters)", function()
      local p <close> = geneva([[
        local proc = require "geneva.proc"
        local s = assert(proc.spawn { argv = { "sleep", "1000" }, pdeathsig = false })
        io.stdout:write(s:pid(), "\n")
        io.stdout:flush()
        s:wait()
      ]])
      local spid = math.tointeger(tonumber(p:read_line("stdout", 10)))
      local start = assert(proc.info(spid)).start_time
      finally(function() proc.kill(spid, "KILL") end)
      assert.is_true(p:kill("KILL"))
      assert.same({ "signaled", 9 }, { p:wait(5) })
      os.execute("sleep 0.2")
      assert.is_true(proc.alive(spid, start))
    end)

    it("a signal interrupts a blocking read; the host tears down", function()
      local p <close> = geneva([[
        local proc = require "geneva.proc"
        local s = assert(proc.spawn { argv = { "sleep", "1000" }, stdout = "pipe" })
        io.stdout:write(s:pid(), "\n")
        io.stdout:flush()
        s:read("stdout")
        io.stdout:write("not reached\n")
      ]])
      local spid = math.tointeger(tonumber(p:read_line("stdout", 10)))
      os.execute("sleep 0.2")
      assert.is_true(p:kill("INT"))
      assert.same({ "exited", 130 }, { p:wait(10) })
      assert.same({ nil, "eof", "EOF" }, { p:read_line("stdout", 5) })
      assert.is_true(gone_within(spid, 5))
    end)

    it("closing a ledger scope kills and closes its processes", function()
      local ledger = require "geneva.ledger.core"
      local scope = ledger.scope("proc-spec")
      local prev = scope:activate()
      local p = assert(proc.spawn { "sleep", "100" })
      prev:activate()
      local pid = p:pid()
      assert.is_true(scope:close())
      assert.is_true(p:is_closed())
      assert.equals("geneva.proc.Process (closed)", tostring(p))
      assert.is_nil(proc.info(pid))          -- killed and reaped
      assert.is_true(p:close())
    end)
  end)

  describe("process identity", function()
    it("self() describes this process", function()
      local me = assert(proc.self())
      local r = assert(proc.run { "sh", "-c", "echo $PPID" })
      assert.equals(me.pid, tonumber(r.stdout))
      assert.is_true(math.type(me.start_time) == "integer" and me.start_time > 0)
      assert.is_true(math.type(me.ppid) == "integer")
      assert.is_true(math.type(me.uid) == "integer")
      assert.equals(proc.exe(), me.exe)
      assert.matches("geneva$", me.exe)
      local boot = child.read("/proc/sys/kernel/random/boot_id"):gsub("%s+$", "")
      assert.equals(boot, me.boot_id)
      local host = assert(proc.run { "hostname" }).stdout:gsub("%s+$", "")
      assert.equals(host, me.hostname)
      assert.equals("R", me.state)
    end)

    it("info() and alive() tell live, recycled and gone pids apart", function()
      local p = assert(proc.spawn { "sleep", "10" })
      local pid = p:pid()
      local info = assert(proc.info(pid))
      assert.equals(pid, info.pid)
      assert.equals(proc.self().pid, info.ppid)
      assert.equals("sleep", info.name)
      assert.is_true(proc.alive(pid))
      assert.is_true(proc.alive(pid, info.start_time))
      assert.is_false(proc.alive(pid, info.start_time + 1))
      p:close()
      assert.is_false(proc.alive(pid))
      local none, msg, code = proc.info(pid)
      assert.is_nil(none)
      assert.matches("no such process", msg)
      assert.equals("ESRCH", code)
    end)

    it("kill_if() signals only the process that started at that time", function()
      local p = assert(proc.spawn { "sleep", "10" })
      local pid = p:pid()
      local info = assert(proc.info(pid))
      assert.equals("ESRCH", select(3, proc.kill_if(pid, info.start_time + 1, "TERM")))
      assert.is_true(proc.alive(pid, info.start_time))
      local q = assert(proc.spawn { "sleep", "10", new_group = false })   -- in our group
      local qi = assert(proc.info(q:pid()))
      assert.equals("EPERM", select(3, proc.kill_if(q:pid(), qi.start_time, "TERM", true)))
      assert.is_true(proc.alive(q:pid(), qi.start_time))
      q:close()
      assert.is_true(proc.kill_if(pid, info.start_time, "TERM", true))
      assert.same({ "signaled", 15 }, { p:wait(5) })
      assert.equals("ESRCH", select(3, proc.kill_if(pid, info.start_time, "KILL")))
      p:close()
    end)
  end)

  describe("lifetime", function()
    it("close is idempotent and kills; use after close raises", function()
      local p = assert(proc.spawn { "sleep", "100", stdout = "pipe" })
      local pid = p:pid()
      assert.matches("^geneva.proc.Process %(pid %d+%)$", tostring(p))
      assert.is_false(p:is_closed())
      assert.is_true(p:close())
      assert.is_true(p:close())
      assert.is_true(p:is_closed())
      assert.is_nil(proc.info(pid))
      assert.equals("geneva.proc.Process (closed)", tostring(p))
      assert.has_error(function() p:pid() end, "attempt to use a closed geneva.proc.Process")
      assert.has_error(function() p:read("stdout") end, "attempt to use a closed geneva.proc.Process")
      assert.has_error(function() proc.poll({ { p, "stdout" } }) end)
    end)

    it("<close> kills at scope exit", function()
      local pid
      do
        local p <close> = assert(proc.spawn { "sleep", "100" })
        pid = p:pid()
        assert.is_true(proc.alive(pid))
      end
      assert.is_nil(proc.info(pid))
    end)

    it("leaves no descriptors behind, on success or failure", function()
      -- counted in this process: a child (ls) would race with the closing
      -- of its own pipes' parent ends
      local function nfds()
        return #assert(require("geneva.fs").list("/proc/self/fd"))
      end
      local before = nfds()
      for _ = 1, 3 do
        local p = assert(proc.spawn { "cat", stdin = "pipe", stdout = "pipe", stderr = "pipe" })
        p:close()
        assert.is_nil(proc.spawn { "nosuch-geneva-cmd", stdin = "pipe", stdout = "pipe" })
        assert.is_nil(proc.spawn { "true", stdout = "pipe", cwd = "/nonexistent" })
        assert.is_nil(proc.spawn { "true", stdin = "pipe", stdout = "/nonexistent/x" })
        assert.truthy(proc.run { "echo", input = "x" })
      end
      assert.equals(before, nfds())
    end)

    it("garbage collection kills and reaps", function()
      local weak = setmetatable({}, { __mode = "v" })
      weak[1] = assert(proc.spawn { "sleep", "100", stdin = "pipe", stdout = "pipe" })
      local pid = weak[1]:pid()
      collectgarbage()
      collectgarbage()
      assert.is_nil(weak[1])
      assert.is_nil(proc.info(pid))
    end)
  end)
end)
