-- The KubeRay runner (geneva.runner.kuberay) against the Kubernetes API
-- emulator (tests/fakes/kube_apiserver.py, whose KubeRay controller starts
-- a Ray dashboard emulator per RayCluster), over TLS on loopback: a backfill
-- end to end through the service proxy, kubectl as an independent client,
-- Warning events, and teardown on error, signals, kill -9 + reap and TTL.
local geneva = require "geneva"
local fs = require "geneva.fs"
local proc = require "geneva.proc"
local time = require "geneva.time"
local json = require "geneva.json"
local child = require "child"
local kube = require "kube_emulator"
local expect = require "expect"

local IMAGE = "rayproject/ray:2.52.0"

describe("kuberay runner", function()
  local root, k
  setup(function()
    root = child.tmpdir()
    k = kube.start(root .. "/kube", { "--ready-delay", "0.3" })
  end)
  teardown(function()
    if k then k:close() end
    child.rmtree(root)
  end)

  local dir, db
  before_each(function()
    dir = child.tmpdir()
    db = geneva.connect(dir .. "/db")
  end)
  after_each(function()
    -- whatever a test did: no RayCluster and no Ray dashboard afterwards
    expect.wait_until("no RayCluster", function() return #k:clusters() == 0 end, 30)
    expect.wait_until("no dashboard", function() return #k:live_dashboards() == 0 end, 30)
    child.rmtree(dir)
  end)

  local function spec(extra)
    local s = { type = "kuberay", kubeconfig = k.kubeconfig,
                head_group = { image = IMAGE, num_cpus = 0 },
                worker_groups = { { name = "cpu", image = IMAGE, num_cpus = 2, replicas = 1 } } }
    for kk, v in pairs(extra or {}) do s[kk] = v end
    return s
  end

  local function make_table(n, slow)
    local rows = {}
    for i = 1, n do rows[i] = { id = i } end
    local tbl = db:create_table("docs", rows, { fragment_size = 500 })
    tbl:add_columns { x = geneva.udf { data_type = "int64",
      fn = slow and require("udfs").slow or function(id) return id * 3 end } }
    return tbl
  end

  -- what the process writes on stderr while fn runs (what calls
  -- io.stderr:write; the runners say their warnings that way)
  local function stderr_of(fn)
    local real, lines = io.stderr, {}
    rawset(io, "stderr", { write = function(self, ...) lines[#lines + 1] = table.concat({ ... }) return self end })
    local ok, err = pcall(fn)
    rawset(io, "stderr", real)
    if not ok then error(err, 0) end
    return table.concat(lines)
  end

  it("runs a backfill end to end through the service proxy; kubectl sees the RayCluster; nothing is left", function()
    local tbl = make_table(2000)
    local rec, seen
    local t0 = time.monotonic()
    -- the dashboard answers 503 for a while: connecting is retried
    k:hook("POST", "/_emulator/config", { dashboard_lag = 1 })
    local err = stderr_of(function() geneva.context { cluster = spec(), db = db } (function()
      local names = k:clusters()
      assert.equal(1, #names)
      -- an independent client lists the same object
      local code, out = k:kubectl("get", "rayclusters", "-o", "json")
      assert.equal(0, code)
      local items = json.decode(out).items
      assert.equal(names[1], items[1].metadata.name)
      assert.equal("geneva", items[1].metadata.labels["app.kubernetes.io/managed-by"])
      seen = names[1]
      rec = tbl:backfill("x", { batch_size = 250 })
    end) end)
    k:hook("POST", "/_emulator/config", { dashboard_lag = 0 })
    assert.is_true(time.monotonic() - t0 < 60)
    assert.equal("DONE", rec.status)
    -- pods never see this host's files: said once, however often the
    -- dashboard was asked before it answered
    local _, warnings = err:gsub("warning: the database [^\n]* is a local path, and KubeRay's pods never see this host's files", "")
    assert.equal(1, warnings, err)
    -- the workers ran the geneva shipped as a package (ship_host is the
    -- default), not this host's by its path
    local runs = 0
    for _, line in ipairs(rec.events) do
      local exe = line:match("serving job [^\n]*, (/[^\n]*)%)")
      if exe then
        assert.is_truthy(exe:find("/py_modules_files/_ray_pkg_[^/]*/geneva_runtime/bin/geneva$"), exe)
        runs = runs + 1
      end
    end
    assert.is_true(runs >= 1, table.concat(rec.events, "\n"))
    assert.equal("kuberay", rec.runner.type)
    assert.equal(seen, rec.runner.raycluster)
    assert.equal(2000, tbl:count_rows("x = id * 3"))
    assert.same({}, k:clusters())
    assert.same({}, fs.list(dir .. "/db/_geneva/leases"))
  end)

  it("a spec KubeRay rejects: its Warning event fails the context within seconds, and the cluster goes", function()
    -- what the schema lets through and KubeRay's validation refuses (a
    -- `labels` start parameter), as a newer operator may refuse more
    local rc = require "geneva.kube.raycluster"
    local build = rc.build
    rc.build = function(...)
      local o = build(...)
      o.spec.workerGroupSpecs[1].rayStartParams.labels = "tier=a"
      return o
    end
    local t0 = time.monotonic()
    local ok, err = pcall(geneva.context { cluster = spec(), db = db }, function() end)
    rc.build = build
    assert.is_false(ok)
    assert.equal("invalid_argument", err.code)
    assert.matches("InvalidRayClusterSpec", err.message)
    assert.matches("labels", err.message)
    -- far below READY_TIMEOUT (600 s): the event ended the wait, not a timeout
    assert.is_true(time.monotonic() - t0 < 120, ("took %.1fs"):format(time.monotonic() - t0))
  end)

  it("a create whose answer was lost is adopted on retry (409, our lease), not doubled", function()
    local creates = k:state().counters["create rayclusters"] or 0
    k:hook("POST", "/_emulator/faults", { route = "create", action = "drop_after_accept", count = 1,
                                          resource = "rayclusters" })
    local tbl = make_table(500)
    local rec
    geneva.context { cluster = spec(), db = db } (function()
      assert.equal(1, #k:clusters())
      rec = tbl:backfill("x", { batch_size = 250 })
    end)
    assert.equal("DONE", rec.status)
    assert.is_true(rec.runner.adopted)
    assert.equal(creates + 2, k:state().counters["create rayclusters"])   -- the lost one and the retry
  end)

  it("an error inside the context deletes the RayCluster", function()
    local ok, err = pcall(geneva.context { cluster = spec(), db = db }, function()
      assert.equal(1, #k:clusters())
      error("boom")
    end)
    assert.is_false(ok)
    assert.matches("boom", tostring(err))
    assert.same({}, k:clusters())
  end)

  it("ship_host = false: the workers run this host's geneva by its path", function()
    local tbl = make_table(500)
    local rec
    geneva.context { cluster = spec{ ship_host = false }, db = db } (function()
      rec = tbl:backfill("x", { batch_size = 250 })
    end)
    assert.equal("DONE", rec.status)
    local exes = {}
    for _, line in ipairs(rec.events) do
      local exe = line:match("serving job [^\n]*, (/[^\n]*)%)")
      if exe then exes[exe] = true end
    end
    assert.same({ [require("geneva.runner").worker_exe()] = true }, exes)
  end)

  it("waits for HeadPodReady and a status of the current generation, not for state alone", function()
    -- state "ready" while the head pod is not, then a ready status of an
    -- older generation: the dashboard is not asked for before both pass
    k:hook("POST", "/_emulator/config", { head_ready_lag = 1, stale_status = 1 })
    local early = k:state().counters["proxy before ready"] or 0
    local tbl = make_table(500)
    local ok, rec = pcall(function()
      return geneva.context { cluster = spec(), db = db } (function() return tbl:backfill("x", { batch_size = 250 }) end)
    end)
    k:hook("POST", "/_emulator/config", { head_ready_lag = 0, stale_status = 0 })
    assert(ok, rec)
    assert.equal("DONE", rec.status)
    assert.equal(early, k:state().counters["proxy before ready"] or 0)
  end)

  it("is_ready: state, HeadPodReady when reported, observedGeneration when given", function()
    local kr = require "geneva.runner.kuberay"
    local function obj(st, gen) return { metadata = { generation = gen }, status = st } end
    local head = function(v) return { { type = "RayClusterProvisioned", status = "True" },
                                      { type = "HeadPodReady", status = v, reason = "R" } } end
    assert.is_true(kr.is_ready(obj({ state = "ready" })))                    -- an operator without conditions
    assert.is_true(kr.is_ready(obj({ state = "ready", conditions = { { type = "Other", status = "False" } } })))
    assert.is_true(kr.is_ready(obj({ state = "ready", conditions = head("True"), observedGeneration = 2 }, 2)))
    assert.is_false((kr.is_ready(obj({ state = "ready", conditions = head("False") }))))
    assert.is_false((kr.is_ready(obj({ state = "ready", conditions = head("True"), observedGeneration = 1 }, 2))))
    assert.is_false((kr.is_ready(obj({ conditions = head("True") }))))
    local _, why = kr.is_ready(obj({ state = "ready", conditions = head("Unknown") }))
    assert.matches("HeadPodReady Unknown", why)
  end)

  it("a context longer than its TTL pushes the expiry forward", function()
    local kc = require "geneva.kube.client"
    local c = kc.client(require("geneva.kube.config").load { kubeconfig = k.kubeconfig })
    local rc = require "geneva.kube.raycluster"
    local function annotations()
      local name = k:clusters()[1]
      return c:get(kc.RAYCLUSTERS, "default", name).metadata.annotations
    end
    geneva.context { cluster = spec{ ttl_seconds = 4 }, db = db } (function()
      local a = annotations()
      local created = time.parse_iso8601(a[rc.ANN_CREATED])
      assert.equal(created + 4, time.parse_iso8601(a[rc.ANN_EXPIRES]))
      -- a quarter of the TTL later, the context's next poll renews it
      time.sleep(1.2)
      require("geneva.runner").current():poll(0)
      assert.is_true(time.parse_iso8601(annotations()[rc.ANN_EXPIRES]) > created + 4)
    end)
  end)

  describe("a driver process", function()
    local SCRIPT = [[
local geneva = require "geneva"
local db = geneva.connect(arg[1])
local tbl = db:open_table("docs")
geneva.context { cluster = require("geneva.json").decode(arg[2]), db = db } (function()
  io.stdout:write("entered\n"); io.stdout:flush()
  tbl:backfill("x", { batch_size = 50 })
end)
]]
    local function start()
      make_table(4000, true)
      local path = dir .. "/driver.lua"
      assert(fs.write(path, SCRIPT))
      local p = assert(proc.spawn { argv = { child.bin, path, dir .. "/db", json.encode(spec()) },
        stdout = "pipe", stderr = "pipe", env_add = { XDG_STATE_HOME = dir .. "/state" } })
      assert.equal("entered", p:read_line("stdout", 60))
      expect.wait_until("a running job", function() return db:jobs()[1] and db:jobs()[1].status == "RUNNING" end, 30)
      return p
    end

    -- ... and its Ray jobs submitted (their leases written)
    local function ray_job_leases()
      local n = 0
      for _, f in ipairs(fs.list(dir .. "/db/_geneva/leases") or {}) do
        if f:match("^ray_job") then n = n + 1 end
      end
      return n
    end

    for _, c in ipairs({ { "INT", 130 }, { "TERM", 143 } }) do
      it("SIG" .. c[1] .. " mid-backfill: the RayCluster is deleted before the driver exits", function()
        local p = start()
        assert.equal(1, #k:clusters())
        assert(proc.kill(p:pid(), c[1]))
        local how, code = p:wait(60)
        p:close()
        assert.same({ "exited", c[2] }, { how, code })
        assert.same({}, k:clusters())
      end)
    end

    it("kill -9, then geneva reap: its Ray jobs (through the proxy) and its RayCluster go, no lease is left or refused", function()
      local p = start()
      local name = k:clusters()[1]
      expect.wait_until("its Ray jobs", function() return ray_job_leases() > 0 end, 30)
      assert(proc.kill(p:pid(), "KILL"))
      p:wait(10)
      p:close()
      assert.same({ name }, k:clusters())        -- left behind by the kill
      local code, out, err = child.cli({ "reap", "--json", "--db", dir .. "/db" },
        { env = { XDG_STATE_HOME = dir .. "/state" }, timeout = 120 })
      assert.equal(0, code, err)
      local r = json.decode(out)
      -- the RayCluster and every Ray job lease of the driver: none refused
      assert.same({}, r.refused, out)
      assert.same({}, r.failed, out)
      assert.is_true(r.reaped >= 2, out)
      assert.same({}, k:clusters())
      assert.same({}, fs.list(dir .. "/db/_geneva/leases"))
      assert.same({}, fs.list(dir .. "/state/geneva/leases"))
      -- and a second reap has nothing left to ask anyone
      code, out = child.cli({ "reap", "--json", "--db", dir .. "/db" },
        { env = { XDG_STATE_HOME = dir .. "/state" }, timeout = 120 })
      assert.equal(0, code)
      assert.same({ reaped = 0, skipped = 0, refused = {}, failed = {}, orphan_files = 0 }, json.decode(out))
    end)

    it("kill -9: a Ray job lease only in the db's journal is refused, its kubeconfig never followed", function()
      local p = start()
      expect.wait_until("its Ray jobs", function() return ray_job_leases() > 0 end, 30)
      assert(proc.kill(p:pid(), "KILL"))
      p:wait(10)
      p:close()
      -- as if planted in a shared db: this user's journal does not have it
      for _, f in ipairs(fs.list(dir .. "/state/geneva/leases")) do
        if f:match("^ray_job") then assert(os.remove(dir .. "/state/geneva/leases/" .. f)) end
      end
      local proxied = k:state().counters["proxy GET"] or 0
      local code, out = child.cli({ "reap", "--json", "--db", dir .. "/db" },
        { env = { XDG_STATE_HOME = dir .. "/state" }, timeout = 120 })
      assert.equal(0, code, out)
      local r = json.decode(out)
      assert.is_true(#r.refused >= 1, out)
      for _, why in ipairs(r.refused) do assert.matches("its kubeconfig is not followed", why) end
      assert.equal(proxied, k:state().counters["proxy GET"] or 0)
      assert.same({}, k:clusters())           -- the RayCluster's lease is this user's: reaped
    end)
  end)

  it("reap by label: a dead owner of this host loses its cluster, a live one keeps it past its TTL; --list shows them", function()
    local kc = require "geneva.kube.client"
    local rc = require "geneva.kube.raycluster"
    local c = kc.client(require("geneva.kube.config").load { kubeconfig = k.kubeconfig })
    local me = require("geneva.ledger").owner()
    -- this process under another start time: a pid that was reused
    local dead = rc.build(spec(), { namespace = "default", ttl_seconds = 3600, lease_id = "raycluster-1-3",
      owner = { hostname = me.hostname, boot_id = me.boot_id, pid = me.pid, start_time = me.start_time - 1 } })
    c:create(kc.RAYCLUSTERS, "default", dead)
    local alive = rc.build(spec(), { namespace = "default", ttl_seconds = 1, lease_id = "raycluster-1-4", owner = me })
    c:create(kc.RAYCLUSTERS, "default", alive)
    db:define_cluster("k8s", spec())
    local t_end = os.time() + 2
    expect.wait_until("the TTL to pass", function() return os.time() > t_end end, 10)
    local env = { env = { XDG_STATE_HOME = dir .. "/state" }, timeout = 120 }
    local code, out, err = child.cli({ "reap", "--list", "--json", "--db", dir .. "/db" }, env)
    assert.equal(0, code, err)
    local rows = {}
    for _, r in ipairs(json.decode(out)) do
      if r.journal == "label" then rows[r.name] = r end
    end
    local d, a = rows["default/" .. dead.metadata.name], rows["default/" .. alive.metadata.name]
    assert.same({ "raycluster-1-3", "raycluster", "active", "dead", "its owner, a process of this host, is gone" },
      { d.id, d.kind, d.state, d.owner, d.reap })
    assert.same({ "raycluster-1-4", "expired", "alive" }, { a.id, a.state, a.owner })
    assert.is_nil(a.reap)
    local names = k:clusters()
    table.sort(names)
    local want = { dead.metadata.name, alive.metadata.name }
    table.sort(want)
    assert.same(want, names)     -- --list changed nothing
    code, out, err = child.cli({ "reap", "--json", "--db", dir .. "/db" }, env)
    assert.equal(0, code, err)
    assert.equal(1, json.decode(out).reaped, out)
    assert.same({ alive.metadata.name }, k:clusters())
    c:delete(kc.RAYCLUSTERS, "default", alive.metadata.name)
  end)

  it("a RayCluster past its TTL whose lease was lost is reaped by its label", function()
    -- made by a driver whose lease file went with its machine: only the
    -- cluster's labels and annotations are left
    local kc = require "geneva.kube.client"
    local c = kc.client(require("geneva.kube.config").load { kubeconfig = k.kubeconfig })
    local obj = require("geneva.kube.raycluster").build(spec(), { namespace = "default", ttl_seconds = 1,
      owner = "gone-host/x/1/1", lease_id = "raycluster-1-1" })
    c:create(kc.RAYCLUSTERS, "default", obj)
    local keep = require("geneva.kube.raycluster").build(spec(), { namespace = "default", ttl_seconds = 3600,
      owner = "gone-host/x/1/1", lease_id = "raycluster-1-2" })
    c:create(kc.RAYCLUSTERS, "default", keep)
    db:define_cluster("k8s", spec())
    local t_end = os.time() + 2
    expect.wait_until("its TTL to pass", function() return os.time() > t_end end, 10)
    local code, out, err = child.cli({ "reap", "--json", "--db", dir .. "/db" },
      { env = { XDG_STATE_HOME = dir .. "/state" }, timeout = 120 })
    assert.equal(0, code, err)
    assert.equal(1, json.decode(out).reaped, out)
    assert.same({ keep.metadata.name }, k:clusters())
    c:delete(kc.RAYCLUSTERS, "default", keep.metadata.name)
  end)
  describe("with an exec plugin whose tokens the server takes for 3 s", function()
    local k2, kubeconfig
    setup(function()
      k2 = kube.start(root .. "/kube-exec", { "--ready-delay", "0.3", "--exec-ttl", "300", "--exec-server-ttl", "3" })
      -- the emulator's kubeconfig, on its exec context
      local text, n = assert(fs.read(k2.kubeconfig)):gsub('current%-context: "token"', 'current-context: "exec"')
      assert(n == 1, "no current-context in the emulator's kubeconfig")
      kubeconfig = root .. "/kube-exec/kubeconfig-exec"
      assert(fs.write(kubeconfig, text, { mode = 384 }))
    end)
    teardown(function() if k2 then k2:close() end end)

    it("a background job's driver renews the token as it expires; no token is kept anywhere", function()
      -- the UDF holds each task until the test opens the gate: the job
      -- outlives the token for sure
      local rows = {}
      for i = 1, 400 do rows[i] = { id = i, gate = dir .. "/gate" } end
      local tbl = db:create_table("docs", rows, { fragment_size = 100 })
      tbl:add_columns { x = geneva.udf { data_type = "int64", fn = function(id, gate)
        local f = io.open(gate)
        while not f do geneva.time.sleep(0.02) f = io.open(gate) end
        f:close()
        return id * 3
      end } }
      local rec
      geneva.context { cluster = spec{ kubeconfig = kubeconfig }, db = db } (function()
        local j = tbl:backfill_async("x", { batch_size = 100 })
        local ok, err = pcall(function()
          local claims = require("geneva.backfill.queue").dir(db.path, j.id) .. "/claims"
          expect.wait_until("a task claimed", function() return #(fs.list(claims) or {}) > 0 end, 60)
          -- the driver's proxied polls meet 401 and run the plugin again
          local st = k2:state()
          local refused, runs = st.counters.unauthorized or 0, st.exec_plugin_runs
          expect.wait_until("a token refused and renewed", function()
            local now = k2:state()
            return (now.counters.unauthorized or 0) > refused and now.exec_plugin_runs > runs
          end, 60)
        end)
        assert(fs.write(dir .. "/gate", ""))       -- whatever happened: the job can end
        assert(ok, err)
        rec = j:wait()
      end)
      assert.equal("DONE", rec.status)
      assert.equal(400, tbl:count_rows("x = id * 3"))
      assert.same({}, k2:clusters())
      -- no exec token (kx1.<user>...) in a record, a lease, a log, or --json
      local r = assert(proc.run { argv = { "grep", "-rl", "kx1\\.", dir } })
      assert.equal(1, r.code, r.stdout)       -- 1: no match
      local code, out = child.cli({ "jobs", "show", rec.id, "--json", "--db", dir .. "/db" })
      assert.equal(0, code, out)
      assert.is_nil(out:find("kx1.exec-user", 1, true))
    end)
  end)
end)
