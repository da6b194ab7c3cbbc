-- memcheck
local core = require "geneva.ledger.core"
local ledger = require "geneva.ledger"
local child = require "child"

describe("geneva.ledger", function()
  local function tracker()
    local log = {}
    return log, function(tag) return function() log[#log + 1] = tag end end
  end

  describe("scope:close", function()
    it("tears resources down newest first", function()
      local log, td = tracker()
      local s = ledger.scope{ name = "t" }
      for i = 1, 3 do s:reserve("thing", "r" .. i):bind(td(i)) end
      assert.is_true(s:close())
      assert.same({ 3, 2, 1 }, log)
      assert.is_true(s:is_closed())
      assert.is_true(s:close())           -- idempotent
      assert.same({ 3, 2, 1 }, log)
    end)

    it("closes child scopes with their parent, in creation order reversed", function()
      local log, td = tracker()
      local parent = ledger.scope{ name = "parent" }
      parent:reserve("a", "p1"):bind(td("p1"))
      local kid = ledger.scope{ name = "kid", parent = parent }
      kid:reserve("a", "k1"):bind(td("k1"))
      parent:reserve("a", "p2"):bind(td("p2"))
      assert.is_true(parent:close())
      assert.same({ "p2", "k1", "p1" }, log)
      assert.is_true(kid:is_closed())
    end)

    it("collects teardown errors and still runs every teardown", function()
      local log, td = tracker()
      local s = ledger.scope{ name = "errs" }
      s:reserve("a", "one"):bind(td(1))
      s:reserve("a", "bad"):bind(function() error("boom") end)
      s:reserve("a", "three"):bind(td(3))
      local ok, errs = s:close()
      assert.is_false(ok)
      assert.same({ 3, 1 }, log)
      assert.equals(1, #errs)
      assert.matches("teardown of a 'bad' failed: .*boom", errs[1])
    end)

    it("refuses new resources in a closed scope", function()
      local s = ledger.scope{ name = "done" }
      s:close()
      assert.has_error(function() s:reserve("a", "x") end,
        "attempt to use a closed scope ('done')")
      assert.has_error(function() ledger.scope{ name = "k", parent = s } end)
    end)

    it("cuts a runaway teardown step at the deadline", function()
      ledger.set_step_deadline(0.2)
      local s = ledger.scope{ name = "slow" }
      local ran = false
      s:reserve("a", "first"):bind(function() ran = true end)
      s:reserve("a", "spin"):bind(function() while true do end end)
      local ok, errs = s:close()
      ledger.set_step_deadline(30)
      assert.is_false(ok)
      assert.matches("timed out", errs[1])
      assert.is_true(ran)
    end)
  end)

  describe("resources", function()
    it("release tears down now, once", function()
      local log, td = tracker()
      local s = ledger.scope{ name = "r" }
      local r = s:reserve("a", "x"):bind(td("x"))
      assert.is_true(r:release())
      assert.is_true(r:release())
      assert.same({ "x" }, log)
      assert.is_false(r:is_live())
      assert.has_error(function() r:bind(td("y")) end, "attempt to use a released resource ('x')")
      s:close()
      assert.same({ "x" }, log)
    end)

    it("forget drops the entry without teardown", function()
      local log, td = tracker()
      local s = ledger.scope{ name = "f" }
      local r = s:reserve("a", "x"):bind(td("x"))
      r:forget()
      s:close()
      assert.same({}, log)
    end)

    it("adopt moves a resource into another scope", function()
      local log, td = tracker()
      local a, b = ledger.scope{ name = "a" }, ledger.scope{ name = "b" }
      local r = a:reserve("a", "x"):bind(td("x"))
      r:adopt(b)
      a:close()
      assert.same({}, log)
      assert.equals("b", r:info().scope)
      b:close()
      assert.same({ "x" }, log)
    end)

    it("is owned by the ledger, not the garbage collector", function()
      local log, td = tracker()
      local s = ledger.scope{ name = "gc" }
      local weak = setmetatable({}, { __mode = "v" })
      do weak[1] = s:reserve("a", "x"):bind(td("x")) end
      collectgarbage(); collectgarbage()
      assert.is_nil(weak[1])
      assert.same({}, log)            -- the handle went, the resource did not
      assert.equals(1, #s:resources())
      s:close()
      assert.same({ "x" }, log)
    end)

    it("lists live resources", function()
      local s = ledger.scope{ name = "list" }
      s:reserve("kind1", "n1")
      local all = core.list()
      local found
      for _, e in ipairs(all) do if e.name == "n1" then found = e end end
      assert.same("kind1", found.kind)
      assert.same("list", found.scope)
      s:close()
    end)
  end)

  describe("leases", function()
    local dir
    before_each(function() dir = child.tmpdir() end)
    after_each(function() child.rmtree(dir) end)

    local function lease_files()
      local fs = require "geneva.fs"
      return assert(fs.list(dir))
    end

    it("are journalled before the resource exists and removed after teardown", function()
      local s = ledger.scope{ name = "ctx", journal = dir }
      local r = s:reserve("proc", "worker", { pid = 42 })
      local files = lease_files()
      assert.equals(1, #files)
      local lease = require("geneva.json").decode(child.read(dir .. "/" .. files[1]))
      assert.equals("proc", lease.kind)
      assert.equals("active", lease.state)
      assert.equals(42, lease.info.pid)
      assert.equals(ledger.owner().pid, lease.owner.pid)
      assert.is_string(lease.owner.boot_id)
      r:bind(function() end)
      assert.is_true(s:close())
      assert.same({}, lease_files())
    end)

    it("are written to each journal in order and removed in reverse (the first, trusted copy goes last)", function()
      local backend = require "geneva.store.backend"
      local a, b = dir .. "/a", dir .. "/b"
      local s = ledger.scope{ name = "ctx", journal = { a, b } }
      local put, delete, log = backend.put_if_absent, backend.delete, {}
      backend.put_if_absent = function(p, ...) log[#log + 1] = "put " .. p:sub(#dir + 2, #dir + 2) return put(p, ...) end
      local ok, err = pcall(function()
        local r = s:reserve("proc", "worker")
        r:bind(function() end)
        backend.delete = function(p, ...) log[#log + 1] = "delete " .. p:sub(#dir + 2, #dir + 2) return delete(p, ...) end
        assert.is_true(s:close())
      end)
      backend.put_if_absent, backend.delete = put, delete
      assert(ok, err)
      local writes = {}
      for _, l in ipairs(log) do if l:match("^put") then writes[#writes + 1] = l end end
      assert.same({ "put a", "put b" }, { writes[1], writes[#writes] })
      local deletes = {}
      for _, l in ipairs(log) do if l:match("^delete") then deletes[#deletes + 1] = l end end
      assert.same({ "delete b", "delete a" }, deletes)
    end)

    it("leave nothing when an interrupt lands between reserve and bind", function()
      local s = ledger.scope{ name = "ctx", journal = dir }
      -- as spawn_worker: the lease is written, then Ctrl-C before the process is bound
      local ok, err = pcall(function()
        s:reserve("proc", "worker", { exe = "geneva" })
        error("interrupted", 0)
      end)
      assert.is_false(ok)
      assert.equals("interrupted", err)
      assert.equals(1, #lease_files())
      assert.is_true(s:close())
      assert.same({}, lease_files())
      -- a later bind replaces the lease-only teardown (and still drops the lease)
      local log = {}
      s = ledger.scope{ name = "ctx2", journal = dir }
      s:reserve("proc", "w"):bind(function() log[#log + 1] = "down" end)
      assert.is_true(s:close())
      assert.same({ "down" }, log)
      assert.same({}, lease_files())
    end)

    it("are named apart from other processes' and never overwrite nor remove a lease whose name is taken", function()
      local fs = require "geneva.fs"
      local s = ledger.scope{ name = "ctx", journal = dir }
      s:reserve("proc", "first"):bind(function() end)
      local id = require("geneva.json").decode(child.read(dir .. "/" .. lease_files()[1])).id
      -- kind, this process's random tag, pid, counter
      assert.matches("^proc%-%x%x%x%x%x%x%x%x%-" .. ledger.owner().pid .. "%-%d+$", id)
      -- the next resource's name, taken already (ids count scopes and resources)
      local probe = ledger.scope{ name = "probe" }
      local n = probe:reserve("x", "probe"):info().id
      probe:close()
      local taken = dir .. "/" .. ledger.lease_id("proc", n + 1) .. ".json"
      assert(fs.write(taken, "another driver's lease"))
      local err = require("expect").raises("conflict", s.reserve, s, "proc", "second")
      assert.matches("taken", err.message)
      assert.equals("another driver's lease", child.read(taken))
      assert.is_true(s:close())
      assert.same({ (taken:match("[^/]+$")) }, lease_files())     -- ours went, the other's stayed
      assert.equals("another driver's lease", child.read(taken))
    end)

    it("stay when teardown fails, and are marked when retained", function()
      local s = ledger.scope{ name = "ctx", journal = dir }
      s:reserve("a", "bad"):bind(function() error("nope") end)
      local kept = s:reserve("a", "kept")
      kept:retain()
      assert.is_false((s:close()))
      local files = lease_files()
      assert.equals(2, #files)
      local states = {}
      for _, f in ipairs(files) do
        local l = require("geneva.json").decode(child.read(dir .. "/" .. f))
        states[l.name] = l.state
      end
      assert.same({ bad = "active", kept = "retained" }, states)
    end)
  end)

  describe("ledger.with", function()
    it("returns results and closes the scope", function()
      local log, td = tracker()
      local s = ledger.scope{ name = "w" }
      local a, b = ledger.with(s, function(x)
        assert.equals(s, ledger.current())
        ledger.current():reserve("a", "x"):bind(td("x"))
        return x, 2
      end, 1)
      assert.same({ 1, 2 }, { a, b })
      assert.same({ "x" }, log)
      assert.is_true(s:is_closed())
      assert.not_equals(s, ledger.current())
    end)

    it("re-raises the body's error after teardown", function()
      local log, td = tracker()
      local s = ledger.scope{ name = "w" }
      local ok, err = pcall(ledger.with, s, function()
        s:reserve("a", "x"):bind(td("x"))
        error({ code = "udf_error" })
      end)
      assert.is_false(ok)
      assert.same({ code = "udf_error" }, err)
      assert.same({ "x" }, log)
    end)
  end)

  describe("res:release", function()
    it("keeps the caller's debug hook", function()
      local hook = function() end
      debug.sethook(hook, "", 100000)
      ledger.current():reserve("a", "hooked"):bind(function() end):release()
      local after = debug.gethook()
      debug.sethook()
      assert.equals(hook, after)
    end)

    it("does not lose a signal that lands during the teardown", function()
      local status, out = child.run([[
        local ledger = require "geneva.ledger"
        local proc = require "geneva.proc"
        ledger.current():reserve("a", "signals itself"):bind(function()
          proc.kill(proc.self().pid, "INT")
        end):release()
        local x = 0
        for _ = 1, 3e7 do x = x + 1 end
        print("unreachable")
      ]])
      assert.equals(130, status)
      assert.not_matches("unreachable", out)
    end)
  end)

  describe("listing", function()
    it("survives handles finalized while it runs", function()
      -- list() allocates per entry; an allocation may run a finalizer that
      -- untracks (frees) the entry being read
      local fs = require "geneva.fs.core"
      local dir = child.tmpdir()
      collectgarbage("incremental", 0, 100)
      local ok, err = pcall(function()
        for round = 1, 3000 do
          fs.lock(dir .. "/l" .. (round % 20), true, false)   -- left to __gc
          core.list()
          ledger.current():resources()
        end
      end)
      collectgarbage("incremental", 200, 100)
      collectgarbage()
      child.rmtree(dir)
      assert(ok, err)
    end)
  end)

  describe("host teardown", function()
    local dir
    before_each(function() dir = child.tmpdir() end)
    after_each(function() child.rmtree(dir) end)

    local script = [[
      local ledger = require "geneva.ledger"
      local s = ledger.scope{ name = "leftover" }
      s:reserve("file", "marker"):bind(function()
        local f = assert(io.open(%q, "w")); f:write("torn down"); f:close()
      end)
      %s
    ]]

    for _, case in ipairs({
      { "a normal end", "", 0 },
      { "a script error", "error('boom')", 1 },
      { "os.exit", "os.exit(3)", 3 },
      { "os.exit caught by pcall", "pcall(os.exit, 4); print('unreachable')", 4 },
      { "os.exit in a coroutine",
        "coroutine.resume(coroutine.create(function() os.exit(5) end)); print('unreachable')", 5 },
      { "os.exit in a wrapped coroutine under pcall",
        "pcall(coroutine.wrap(function() os.exit(6) end)); print('unreachable')", 6 },
    }) do
      it("runs on " .. case[1], function()
        local marker = dir .. "/marker"
        local status, out = child.run(script:format(marker, case[2]))
        assert.equals(case[3], status)
        assert.equals("torn down", child.read(marker))
        assert.not_matches("unreachable", out)
      end)
    end
  end)
end)
