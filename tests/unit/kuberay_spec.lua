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

  it("runs a backfill end to end through the service proxy; kubectl sees the RayCluster; nothing is left", function()
    local tbl = make_table(2000)
    local rec, seen
    local t0 = time.monotonic()
    geneva.context { cluster = spec(), db = db } (function()
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
    end)
    assert.is_true(time.monotonic() - t0 < 60)
    assert.equal("DONE", rec.status)
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

    it("kill -9, then geneva reap: the RayCluster of its lease is deleted", function()
      local p = start()
      local name = k:clusters()[1]
      assert(proc.kill(p:pid(), "KILL"))
      p:wait(10)
      p:close()
      assert.same({ name }, k:clusters())        -- left behind by the kill
      local code, out, err = child.cli({ "reap", "--json", "--db", dir .. "/db" },
        { env = { XDG_STATE_HOME = dir .. "/state" }, timeout = 120 })
      assert.equal(0, code, err)
      assert.is_true(json.decode(out).reaped >= 1, out)
      assert.same({}, k:clusters())
    end)
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
end)
