-- Contexts: semantics, and guaranteed teardown with real signals and kill -9. memcheck
-- Runs on a directory and on s3 (moto): see testdb.lua. storage: dir s3
local geneva = require "geneva"
local testdb = require "testdb"
local backend = require "geneva.store.backend"
local fs = require "geneva.fs"
local proc = require "geneva.proc"
local time = require "geneva.time"
local child = require "child"
local tables = require "tables"

local worker_pids = child.worker_pids
local wait_until = require("expect").wait_until

-- the leases in the database's journal
local function leases(db)
  return #(backend.list(db.dir .. "/_geneva/leases") or {})
end

describe("geneva.context", function()
  local dir, db, tbl
  before_each(function()
    dir = child.tmpdir()
    db = testdb.connect(dir)
    tbl = tables.make(db, "docs", 3000, {
      rows = function(i) return { id = i, content = ("w "):rep(i % 4 + 1) } end,
      columns = { words = geneva.udf { data_type = "int64",
        fn = function(content) return select(2, content:gsub("%S+", "")) end } } })
  end)
  after_each(function() child.rmtree(dir) end)

  describe("ctx(fn, ...)", function()
    it("returns fn's results and tears down", function()
      local a, b = geneva.context{ cluster = { type = "local", workers = 2 } }(function(x)
        local pids = worker_pids(proc.self().pid)
        assert.equals(2, #pids)                 -- started at enter
        assert.equals(3, leases(db))           -- a lease per worker, one for their heartbeat dir
        return x, tbl:backfill("words").rows.computed
      end, "x")
      assert.same({ "x", 3000 }, { a, b })
      assert.equals(0, #worker_pids(proc.self().pid))
      assert.equals(0, leases(db))
    end)

    it("re-raises fn's error after teardown", function()
      local ok, err = pcall(geneva.context{}, function()
        error({ code = "mine" })
      end)
      assert.is_false(ok)
      assert.same({ code = "mine" }, err)
      assert.equals(0, #worker_pids(proc.self().pid))
      assert.equals(0, leases(db))
    end)

    it("reuses its workers for every backfill inside", function()
      tbl:add_columns { twice = geneva.udf { data_type = "int64", fn = function(id) return 2 * id end } }
      geneva.local_cluster{ workers = 2 }(function()
        local before = worker_pids(proc.self().pid)
        tbl:backfill("words")
        tbl:backfill("twice")
        assert.same(before, worker_pids(proc.self().pid))
      end)
    end)
  end)

  describe("enter and exit", function()
    it("works with <close>", function()
      do
        local c <close> = geneva.local_cluster{ workers = 1 }:enter()
        assert.equals(1, #worker_pids(proc.self().pid))
      end
      assert.equals(0, #worker_pids(proc.self().pid))
    end)

    it("refuses workers past the local cap, naming it, before starting anything", function()
      for _, ctx in ipairs({ geneva.local_cluster{ workers = 1000000 },
                             geneva.context{ cluster = { type = "local", workers = 1000000 } } }) do
        local ok, err = pcall(ctx.enter, ctx)
        assert.is_false(ok)
        assert.equals("invalid_argument", err.code)
        assert.equals("workers: 1000000 is more than the 1024 worker processes a local cluster may have",
          err.message)
      end
      local ok, err = pcall(db.define_cluster, db, "huge", { type = "local", workers = 1000000 })
      assert.is_false(ok)
      assert.matches("1024 worker processes", err.message)
      assert.equals(0, #worker_pids(proc.self().pid))
      assert.equals(0, leases(db))
    end)

    it("refuses a second enter; a second exit does nothing", function()
      local ctx = geneva.local_cluster{ workers = 1 }
      ctx:enter()
      local ok, err = pcall(ctx.enter, ctx)
      assert.is_false(ok)
      assert.equals("invalid_argument", err.code)
      assert.is_true(ctx:exit())
      assert.is_true(ctx:exit())
      assert.equals(0, #worker_pids(proc.self().pid))
    end)

    it("nests: the innermost context runs the backfill", function()
      local outer = geneva.local_cluster{ workers = 1 }:enter()
      local inner = geneva.local_cluster{ workers = 2 }:enter()
      assert.equals(3, #worker_pids(proc.self().pid))
      assert.equals(inner, require("geneva.context").current())
      tbl:backfill("words")
      inner:exit()
      assert.equals(outer, require("geneva.context").current())
      assert.equals(1, #worker_pids(proc.self().pid))
      outer:exit()
      assert.equals(0, #worker_pids(proc.self().pid))
    end)

    it("waits for async jobs started inside before tearing down", function()
      local j
      geneva.context{}(function()
        j = tbl:backfill_async("words", { batch_size = 200 })
      end)
      assert.equals("DONE", j:status())
      assert.equals(3000, tbl:count_rows("words IS NOT NULL"))
    end)

    it("retains on failure when asked, marking the leases", function()
      local ctx = geneva.local_cluster{ workers = 1, on_exit = "retain_on_failure" }
      pcall(ctx, function() error("fail") end)
      assert.equals(1, #worker_pids(proc.self().pid))
      local l = require("geneva.json").decode(backend.get(db.dir .. "/_geneva/leases/" ..
        backend.list(db.dir .. "/_geneva/leases")[1]))
      assert.equals("retained", l.state)
      require("geneva.ledger").root():close()      -- what host exit does
      assert.equals(0, #worker_pids(proc.self().pid))
    end)

    it("ships a manifest to its workers: modules, files and env", function()
      local mdir = dir .. "/src"
      assert(fs.mkdir_p(mdir .. "/data"))
      assert(fs.write(mdir .. "/ctx_udfs.lua", [==[
        local M = {}
        function M.tagged(id)
          local f = assert(io.open("data/tag.txt")); local tag = f:read("l"); f:close()
          return tag .. ":" .. os.getenv("CTX_MODE") .. ":" .. id
        end
        return M]==]))
      assert(fs.write(mdir .. "/data/tag.txt", "v1\n"))
      local saved = package.path
      package.path = mdir .. "/?.lua;" .. package.path
      tbl:add_columns { tagged = geneva.udf { module = "ctx_udfs", ["function"] = "tagged",
                                              data_type = "string" } }
      db:define_manifest("m", { modules = { "ctx_udfs" }, files = { "data/**" },
                                base_dir = mdir, env = { CTX_MODE = "shipped" } })
      package.path = saved          -- workers must get the module from the package
      geneva.context{ cluster = { type = "local", workers = 1 }, manifest = "m" }(function()
        tbl:backfill("tagged")
      end)
      local rows = tbl:to_rows{ columns = { "id", "tagged" }, where = "id <= 2" }
      assert.same({ "v1:shipped:1", "v1:shipped:2" }, { rows[1].tagged, rows[2].tagged })
      assert.equals(0, leases(db))
    end)

    it("resolves module UDFs from its manifest in the driver and on workers, without LUA_PATH", function()
      local mdir = dir .. "/lib"
      assert(fs.mkdir_p(mdir .. "/shipped_pkg"))
      assert(fs.write(mdir .. "/shipped_udfs.lua",
        "return { chars = function(content) return #content end }"))
      assert(fs.write(mdir .. "/shipped_pkg/init.lua",
        "return { words = { count = function(content) return select(2, content:gsub('%S+', '')) end } }"))
      db:define_manifest("files_only", { files = { "shipped_udfs.lua", "shipped_pkg" }, base_dir = mdir })
      assert.is_nil(package.searchpath("shipped_udfs", package.path))
      local path0 = package.path
      local raises = require("expect").raises
      raises("not_found", geneva.udf, { module = "shipped_udfs", ["function"] = "chars", data_type = "int64",
                                        input_columns = { "content" } })
      local j
      geneva.context{ cluster = { type = "local", workers = 2 }, manifest = "files_only" }(function()
        -- a module at the package's root, and a package (init.lua) with a dotted function
        tbl:add_columns {
          chars = geneva.udf { module = "shipped_udfs", ["function"] = "chars", data_type = "int64" },
          wc = geneva.udf { module = "shipped_pkg", ["function"] = "words.count", data_type = "int64" } }
        assert.equals(3000, tbl:backfill("chars").rows.computed)
        j = tbl:backfill_async("wc")                    -- its driver process finds them too
      end)
      assert.equals("DONE", j:status())
      assert.equals(0, tbl:count_rows("chars IS NULL OR chars <> length(content)"))
      assert.equals(3000, tbl:count_rows("wc = id % 4 + 1"))
      assert.equals(path0, package.path)                -- exit took the package off again
      assert.equals(0, leases(db))
    end)

    it("leaves no lease nor worker when Ctrl-C lands while a worker starts", function()
      -- the interrupt arrives after the process exists, before its lease is bound
      local real, calls = proc.info, 0
      proc.info = function(pid)
        calls = calls + 1
        if calls == 2 then error("interrupted", 0) end
        return real(pid)
      end
      local ok, err = pcall(function()
        geneva.context{ cluster = { type = "local", workers = 3 } }(function() end)
      end)
      proc.info = real
      assert.is_false(ok)
      assert.matches("interrupted", tostring(err))
      assert.equals(0, leases(db))
      assert.equals(0, #worker_pids(proc.self().pid))
    end)

    it("journals the manifest package's lease before its temp dir exists", function()
      local mdir = dir .. "/src"
      assert(fs.mkdir_p(mdir))
      assert(fs.write(mdir .. "/lease_udfs.lua", "return {}"))
      db:define_manifest("lm", { files = { "lease_udfs.lua" }, base_dir = mdir })
      local json = require "geneva.json"
      local real, seen = fs.tmpdir, nil
      fs.tmpdir = function(prefix)
        if prefix == "geneva-pkg-" then      -- the package's lease must be on disk now
          seen = false
          for _, name in ipairs(backend.list(db.dir .. "/_geneva/leases") or {}) do
            local l = json.decode(backend.get(db.dir .. "/_geneva/leases/" .. name))
            if l.kind == "tmpdir" and l.name:match("^package ") then seen = true end
          end
        end
        return real(prefix)
      end
      local ok, err = pcall(function()
        geneva.context{ cluster = { type = "local", workers = 1 }, manifest = "lm" }(function() end)
      end)
      fs.tmpdir = real
      assert(ok, tostring(err))
      assert.is_true(seen)
      assert.equals(0, leases(db))
    end)

    it("stores ray and kuberay clusters; entering an unreachable ray one is unavailable, one without its kubeconfig invalid", function()
      db:define_cluster("ray", { type = "ray", address = "http://127.0.0.1:9" })   -- nothing listens there
      db:define_cluster("k8s", { type = "kuberay", namespace = "geneva", kubeconfig = dir .. "/no-such-kubeconfig",
        head_group = { image = "rayproject/ray:2.9.0", num_cpus = 1, memory = "2Gi" },
        worker_groups = { { name = "cpu", image = "rayproject/ray:2.9.0", num_cpus = 2,
                            memory = "4Gi", replicas = 1 } } })
      for name, code in pairs({ ray = "unavailable", k8s = "invalid_argument" }) do
        local ok, err = pcall(geneva.context{ cluster = name }, function() end)
        assert.is_false(ok)
        assert.equals(code, err.code, tostring(err))
      end
      assert.equals(0, leases(db))
      assert.equals(0, #worker_pids(proc.self().pid))
    end)

    it("lets fn's error go on with the traceback of the frame that raised it", function()
      local function raises_here() local t = nil; return t.field end
      local ok, tb = xpcall(function()
        geneva.local_cluster{ workers = 1 }(function() return raises_here() end)
      end, debug.traceback)
      assert.is_false(ok)
      assert.matches("attempt to index a nil value", tb)
      -- the handler ran where the error was raised, not at a re-raise: the
      -- traceback's first frame is raises_here
      local line = debug.getinfo(raises_here, "S").linedefined
      assert.matches("stack traceback:\n\t[^\n]*context_spec%.lua:" .. line .. ": in ", tb)
      assert.equals(0, #worker_pids(proc.self().pid))
    end)

    it("refuses bad options and a missing database", function()
      assert.has_error(function() geneva.context{ on_exit = "later" } end)
      assert.has_error(function() geneva.context{ clusterr = "x" } end)
      local ok, err = pcall(geneva.context{ cluster = "nope" }, function() end)
      assert.is_false(ok)
      assert.equals("not_found", err.code)
      local latest = require("geneva.context").latest_db()
      require("geneva.context").use_db(nil)
      ok, err = pcall(geneva.context{}, function() end)
      require("geneva.context").use_db(latest)
      assert.is_false(ok)
      assert.equals("invalid_argument", err.code)
    end)
  end)

  describe("leases in the database's journal", function()
    -- a driver whose host name and pid are another's: pid 1 in two pods
    local DRIVER = [[
      local host, uri = ...
      local proc = require "geneva.proc"
      local real = proc.self
      proc.self = function() local me = real(); me.hostname = host; me.pid = 1; return me end
      local db = require("geneva").connect(uri)
      local ledger = require "geneva.ledger"
      assert(ledger.owner().hostname == host and ledger.owner().pid == 1)
      local s = ledger.scope{ name = "driver", journal = db.dir .. "/_geneva/leases" }
      s:reserve("job", "job-of-" .. host):bind(function() end)
      print("reserved")
      io.stdout:flush()
      io.read("a")                 -- until the spec closes our stdin
      assert(s:close())
    ]]

    local function owners()
      local out = {}
      for _, name in ipairs(backend.list(db.dir .. "/_geneva/leases") or {}) do
        local l = require("geneva.json").decode(assert(backend.get(db.dir .. "/_geneva/leases/" .. name)))
        out[#out + 1] = l.owner.hostname .. " " .. l.name
      end
      table.sort(out)
      return out
    end

    it("two drivers with the same pid on two hosts keep a lease each, and remove only their own", function()
      local script = child.write(dir .. "/driver.lua", DRIVER)
      local drivers = {}
      for i, host in ipairs({ "pod-a", "pod-b" }) do
        drivers[i] = assert(proc.spawn { argv = { child.bin, script, host, testdb.uri(db) },
                                         stdin = "pipe", stdout = "pipe" })
        assert.equals("reserved", drivers[i]:read_line("stdout", 60))
      end
      assert.same({ "pod-a job-of-pod-a", "pod-b job-of-pod-b" }, owners())
      drivers[1]:close_stdin()
      assert.same({ "exited", 0 }, { drivers[1]:wait(60) })
      assert.same({ "pod-b job-of-pod-b" }, owners())      -- pod-a's teardown left pod-b's alone
      drivers[2]:close_stdin()
      assert.same({ "exited", 0 }, { drivers[2]:wait(60) })
      assert.same({}, owners())
      for _, p in ipairs(drivers) do p:close() end
    end)
  end)

  describe("teardown after signals and kill -9", function()
    local script = [[
      local geneva = require "geneva"
      local db = geneva.connect(arg[1])
      local tbl = db:open_table("docs")
      tbl:add_columns {
        slow = geneva.udf { data_type = "int64",      -- seconds: signals land mid-job
          fn = function(id) local x = 0 for k = 1, 300000 do x = x + k %% 3 end return id end },
        quick = geneva.udf { data_type = "int64",
          fn = function(id) local x = 0 for k = 1, 2000 do x = x + k %% 3 end return id end } }
      geneva.context{ cluster = { type = "local", workers = 2 } }(function()
        io.stdout:write("entered\n"); io.stdout:flush()
        %s
      end)
    ]]

    local function start(body)
      local path = dir .. "/job.lua"
      assert(fs.write(path, script:format(body)))
      local p = assert(proc.spawn{ argv = { child.bin, path, db.uri }, stdout = "pipe", stderr = "pipe",
                                   env_add = { XDG_STATE_HOME = dir .. "/state" } })
      assert.equals("entered", p:read_line("stdout", 30))
      return p
    end

    local function assert_clean(pid)
      assert.equals(0, #worker_pids(pid))
      assert.equals(0, leases(db))
    end

    -- sends p the signal; it must exit with code and leave nothing behind
    local function stop_clean(p, signal, code)
      local pid = p:pid()
      assert(proc.kill(pid, signal))
      local how, got = p:wait(20)
      p:close()
      assert.same({ "exited", code }, { how, got })
      assert_clean(pid)
    end

    for _, c in ipairs({ { "INT", 130 }, { "TERM", 143 } }) do
      it("SIG" .. c[1] .. " during a backfill tears everything down", function()
        local p = start('tbl:backfill("slow", { batch_size = 100 })')
        local pid = p:pid()
        wait_until("the job running on two workers", function()
          local rec = db:jobs()[1]
          return #worker_pids(pid) == 2 and rec and rec.status == "RUNNING"
        end)
        stop_clean(p, c[1], c[2])
        local rec = db:jobs()[1]
        assert.equals("CANCELLED", rec.status)
        assert.equals("interrupted", rec.error.code)
      end)

      it("SIG" .. c[1] .. " before any backfill tears everything down", function()
        local p = start('geneva.time.sleep(100)')
        stop_clean(p, c[1], c[2])
      end)

      it("SIG" .. c[1] .. " after a backfill tears everything down", function()
        local p = start('tbl:backfill("quick", { batch_size = 1000 }); io.stdout:write("done\\n"); io.stdout:flush(); geneva.time.sleep(100)')
        assert.equals("done", p:read_line("stdout", 60))
        stop_clean(p, c[1], c[2])
        assert.equals(3000, tbl:count_rows("quick IS NOT NULL"))
      end)
    end

    it("kill -9 of the driver, then geneva reap: everything is gone", function()
      local p = start('tbl:backfill("slow", { batch_size = 100 })')
      local pid = p:pid()
      -- two workers, their heartbeat dir, the job
      wait_until("two workers and four leases", function() return #worker_pids(pid) == 2 and leases(db) == 4 end)
      local kids = worker_pids(pid)
      assert(proc.kill(pid, "KILL"))
      p:wait(10)
      p:close()
      -- the leases name the dead driver as their owner
      local state = { XDG_STATE_HOME = dir .. "/state" }   -- this test's leases only
      local _, list = child.cli({ "reap", "--list", "--json", "--db", db.uri }, { env = state })
      local rows = require("geneva.json").decode(list)
      assert.equals(4, #rows)
      local hb
      for _, r in ipairs(rows) do
        assert.equals("dead", r.owner)
        if r.kind == "tmpdir" then hb = r.info.path end
      end
      assert.is_true(fs.exists(hb))              -- left behind by the kill
      local code, stdout = child.cli({ "reap", "--json", "--db", db.uri }, { env = state })
      assert.equals(0, code)
      local out = require("geneva.json").decode(stdout)
      assert.equals(4, out.reaped)
      assert.same({}, out.refused)               -- its own leases pass every check
      assert.is_false(fs.exists(hb))
      time.sleep(0.2)
      for _, k in ipairs(kids) do assert.is_false(proc.alive(k)) end   -- zombies count as gone
      assert.equals(0, leases(db))
      assert.same({}, fs.list(dir .. "/state/geneva/leases"))   -- the mirror too
    end)
  end)
end)
