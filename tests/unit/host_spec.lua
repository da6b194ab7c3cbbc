-- geneva.host.core: what the host tells its scripts (host/worker_exe.c). memcheck
-- The embedding side (opts.worker_exe, libgeneva beside its install) is
-- tested in C by tests/unit/host_api.c and tests/integration/embed.sh.
local host = require "geneva.host.core"
local proc = require "geneva.proc"
local child = require "child"

describe("geneva.host.core", function()
  describe(".worker_exe", function()
    it("is the geneva command itself when the host is the geneva command", function()
      assert.equal(proc.exe(), host.worker_exe())
    end)

    it("honours GENEVA_WORKER_EXE, a path or a name on PATH", function()
      local status, out = child.run([[io.write(require("geneva.host.core").worker_exe())]],
        { GENEVA_WORKER_EXE = "sh" })
      assert.equal(0, status)
      assert.matches("^/.*sh", out)
      local real = io.popen("readlink -f /bin/sh"):read("l")
      status, out = child.run([[io.write(require("geneva.host.core").worker_exe())]],
        { GENEVA_WORKER_EXE = "/bin/sh" })
      assert.equal(0, status)
      assert.equal(real, out)
    end)

    it("says what is wrong with a bad GENEVA_WORKER_EXE and how to set it", function()
      local status, out = child.run([[
        local p, e = require("geneva.host.core").worker_exe()
        io.write(tostring(p), "|", e)
      ]], { GENEVA_WORKER_EXE = "/nonexistent/geneva" })
      assert.equal(0, status)
      assert.matches("^nil|GENEVA_WORKER_EXE '/nonexistent/geneva' is not an executable file", out)
      assert.matches("set geneva_host_opts.worker_exe, or the GENEVA_WORKER_EXE environment variable", out)
    end)

    it("is what the local runner starts; without one it is unavailable", function()
      local status, out = child.run([[
        local ok, e = pcall(require("geneva.runner.local").new, { workers = 1 })
        io.write(tostring(ok), "|", tostring(e))
      ]], { GENEVA_WORKER_EXE = "/nonexistent/geneva" })
      assert.equal(0, status)
      assert.matches("^false|unavailable: cannot start workers: GENEVA_WORKER_EXE '/nonexistent/geneva'", out)
    end)
  end)
end)
