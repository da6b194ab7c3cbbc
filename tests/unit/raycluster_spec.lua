-- geneva.kube.raycluster: the RayCluster object built from a kuberay spec memcheck
local rc = require "geneva.kube.raycluster"
local json = require "geneva.json"
local errors = require "geneva.errors"

local OWNER = { hostname = "host-a", boot_id = "boot-1", pid = 42, start_time = 7 }

local function spec(over)
  local s = {
    type = "kuberay", namespace = "ml",
    head_group = { image = "rayproject/ray:2.52.0-py311", num_cpus = 2, memory = "8Gi",
                   labels = { team = "search" }, service_account = "ray-sa" },
    worker_groups = {
      { name = "cpu", num_cpus = 4, memory = "16Gi", replicas = 2, min_replicas = 1, max_replicas = 5,
        node_selector = { ["cloud.google.com/gke-nodepool"] = "cpu" } },
      { name = "gpu", image = "rayproject/ray:2.52.0-gpu", num_cpus = 0.5, num_gpus = 2, memory = 1073741824,
        tolerations = { { key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" } } },
    },
  }
  for k, v in pairs(over or {}) do s[k] = v end
  return s
end

local function without_namespace()
  local s = spec()
  s.namespace = nil
  return s
end

local function build(s, o)
  local opts = { owner = OWNER, lease_id = "kuberay-42-3", now = 1700000000 }
  for k, v in pairs(o or {}) do opts[k] = v end
  return rc.build(s, opts)
end

local function raises(code, pattern, fn)
  local ok, e = pcall(fn)
  assert.is_false(ok, "expected an error")
  assert.is_true(errors.is(e, code), "expected a " .. code .. " error, got " .. tostring(e))
  if pattern then assert.matches(pattern, e.message) end
  return e
end

-- Every value of every rayStartParams must be a string (map[string]string)
local function all_strings(t)
  for k, v in pairs(t) do
    assert.is_string(k)
    assert.is_string(v, "rayStartParams." .. k .. " is a " .. type(v))
  end
end

describe("geneva.kube.raycluster", function()
  describe(".build", function()
    it("makes a ray.io/v1 RayCluster with KubeRay's field names", function()
      local o = build(spec())
      assert.equal("ray.io/v1", o.apiVersion)
      assert.equal("RayCluster", o.kind)
      assert.equal("ml", o.metadata.namespace)
      assert.equal("2.52.0", o.spec.rayVersion)
      local h = o.spec.headGroupSpec
      assert.equal("ClusterIP", h.serviceType)
      assert.is_table(h.template.spec.containers[1])
      assert.equal(2, #o.spec.workerGroupSpecs)
      local g = o.spec.workerGroupSpecs[1]
      assert.equal("cpu", g.groupName)
      assert.equal(2, g.replicas)
      assert.equal(1, g.minReplicas)
      assert.equal(5, g.maxReplicas)
      assert.equal(math.type(g.replicas), "integer")
      -- it survives a JSON round trip as integers and objects
      local back = json.decode(json.encode(o))
      assert.equal(5, back.spec.workerGroupSpecs[1].maxReplicas)
    end)

    it("defaults replicas from min and max, and a worker group's image from the head's", function()
      local o = build(spec())
      local g = o.spec.workerGroupSpecs[2]
      assert.equal(1, g.replicas)
      assert.equal(1, g.minReplicas)
      assert.equal(1, g.maxReplicas)
      assert.equal("rayproject/ray:2.52.0-gpu", g.template.spec.containers[1].image)
      local s = spec()
      s.worker_groups[2].image = nil
      o = build(s)
      assert.equal("rayproject/ray:2.52.0-py311", o.spec.workerGroupSpecs[2].template.spec.containers[1].image)
    end)

    it("sets requests equal to limits, with nvidia.com/gpu for GPUs", function()
      local o = build(spec())
      local head = o.spec.headGroupSpec.template.spec.containers[1].resources
      assert.same({ cpu = "2", memory = "8Gi" }, head.requests)
      assert.same(head.requests, head.limits)
      local gpu = o.spec.workerGroupSpecs[2].template.spec.containers[1].resources
      assert.same({ cpu = "500m", memory = "1073741824", ["nvidia.com/gpu"] = "2" }, gpu.requests)
      assert.same(gpu.requests, gpu.limits)
      assert.is_nil(o.spec.workerGroupSpecs[1].template.spec.containers[1].resources.requests["nvidia.com/gpu"])
    end)

    it("gives rayStartParams as strings only, dashboard-host 0.0.0.0 on the head", function()
      local o = build(spec())
      local hp = o.spec.headGroupSpec.rayStartParams
      all_strings(hp)
      assert.equal("0.0.0.0", hp["dashboard-host"])
      assert.equal("2", hp["num-cpus"])
      for _, g in ipairs(o.spec.workerGroupSpecs) do all_strings(g.rayStartParams) end
      assert.equal("4", o.spec.workerGroupSpecs[1].rayStartParams["num-cpus"])
      -- half a CPU is one Ray CPU; GPUs as a count
      assert.equal("1", o.spec.workerGroupSpecs[2].rayStartParams["num-cpus"])
      assert.equal("2", o.spec.workerGroupSpecs[2].rayStartParams["num-gpus"])
      assert.is_nil(o.spec.workerGroupSpecs[1].rayStartParams["dashboard-host"])
      -- an empty map still encodes as an object
      local s = spec()
      s.worker_groups[1].num_cpus = nil
      local enc = json.encode(build(s).spec.workerGroupSpecs[1].rayStartParams)
      assert.equal("{}", enc)
    end)

    it("declares the dashboard port 8265 (and gcs-server, client) on the head only", function()
      local o = build(spec())
      local ports = {}
      for _, p in ipairs(o.spec.headGroupSpec.template.spec.containers[1].ports) do ports[p.name] = p.containerPort end
      assert.same({ dashboard = 8265, ["gcs-server"] = 6379, client = 10001 }, ports)
      assert.is_nil(o.spec.workerGroupSpecs[1].template.spec.containers[1].ports)
    end)

    it("carries node selectors, tolerations, labels and the service account", function()
      local o = build(spec())
      local hs = o.spec.headGroupSpec.template
      assert.equal("ray-sa", hs.spec.serviceAccountName)
      assert.same({ team = "search" }, hs.metadata.labels)
      local w1 = o.spec.workerGroupSpecs[1].template.spec
      assert.same({ ["cloud.google.com/gke-nodepool"] = "cpu" }, w1.nodeSelector)
      local w2 = o.spec.workerGroupSpecs[2].template.spec
      assert.same({ { key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" } }, w2.tolerations)
      local s = spec()
      s.worker_groups[2].tolerations = { { key = "k", operator = "Equal", value = "v", effect = "NoExecute", toleration_seconds = 30 } }
      w2 = build(s).spec.workerGroupSpecs[2].template.spec
      assert.equal(30, w2.tolerations[1].tolerationSeconds)
      assert.is_nil(w2.tolerations[1].toleration_seconds)
    end)

    it("labels and annotates the owner, the lease and the TTL expiry", function()
      local o = build(spec({ ttl_seconds = 3600 }))
      local m = o.metadata
      assert.equal("geneva", m.labels["app.kubernetes.io/managed-by"])
      assert.equal("kuberay-42-3", m.labels[rc.LABEL_LEASE])
      assert.equal("host-a/boot-1/42/7", m.annotations[rc.ANN_OWNER])
      assert.equal("kuberay-42-3", m.annotations[rc.ANN_LEASE])
      assert.equal("3600", m.annotations[rc.ANN_TTL])
      assert.equal("2023-11-14T22:13:20Z", m.annotations[rc.ANN_CREATED])
      assert.equal("2023-11-14T23:13:20Z", m.annotations[rc.ANN_EXPIRES])
      assert.equal("app.kubernetes.io/managed-by=geneva", rc.MANAGED_SELECTOR)
      -- opts.ttl_seconds beats the spec's; the default is a day
      assert.equal("60", build(spec({ ttl_seconds = 3600 }), { ttl_seconds = 60 }).metadata.annotations[rc.ANN_TTL])
      assert.equal(tostring(rc.DEFAULT_TTL), build(spec()).metadata.annotations[rc.ANN_TTL])
    end)

    it("generates DNS-1035 names of at most 53 characters", function()
      local seen = {}
      for _ = 1, 20 do
        local n = build(spec()).metadata.name
        assert.matches("^geneva%-%x+$", n)
        assert.is_nil(seen[n])
        seen[n] = true
      end
      local n = build(spec(), { name_prefix = "My_Cluster.GPU" .. ("x"):rep(80) }).metadata.name
      assert.is_true(#n <= 53)
      assert.matches("^geneva%-my%-cluster%-gpux+%-%x+$", n)
      assert.equal("mine", build(spec(), { name = "mine" }).metadata.name)
    end)

    it("uses the namespace given over the spec's", function()
      assert.equal("other", build(spec(), { namespace = "other" }).metadata.namespace)
      assert.equal("other", build(without_namespace(), { namespace = "other" }).metadata.namespace)
    end)

    describe("env", function()
      local s = spec()
      s.worker_groups[1].env = {
        PLAIN = "x", NUM = 3,
        FROM_ENV = { from_env = "GENEVA_TEST_RC_VALUE" },
        DB_PASSWORD = { from_secret = "db-creds", key = "password" },
      }

      it("references a Kubernetes secret as valueFrom.secretKeyRef", function()
        local env = build(s, { env_resolved = { GENEVA_TEST_RC_VALUE = "v1" } })
          .spec.workerGroupSpecs[1].template.spec.containers[1].env
        local byname = {}
        for _, e in ipairs(env) do byname[e.name] = e end
        assert.same({ name = "DB_PASSWORD", valueFrom = { secretKeyRef = { name = "db-creds", key = "password" } } },
          byname.DB_PASSWORD)
        assert.equal("x", byname.PLAIN.value)
        assert.equal("3", byname.NUM.value)
        -- sorted by name: the same spec gives the same bytes
        assert.equal("DB_PASSWORD", env[1].name)
      end)

      it("resolves {from_env=} at build time, from a table or a function", function()
        local env = build(s, { env_resolved = { GENEVA_TEST_RC_VALUE = "resolved-now" } })
          .spec.workerGroupSpecs[1].template.spec.containers[1].env
        local v
        for _, e in ipairs(env) do if e.name == "FROM_ENV" then v = e.value end end
        assert.equal("resolved-now", v)
        env = build(s, { env_resolved = function(k) return k == "GENEVA_TEST_RC_VALUE" and "fn" or nil end })
          .spec.workerGroupSpecs[1].template.spec.containers[1].env
        for _, e in ipairs(env) do if e.name == "FROM_ENV" then v = e.value end end
        assert.equal("fn", v)
      end)

      it("names the variable, never a value, when a reference is unset", function()
        local e = raises("invalid_argument", "GENEVA_TEST_RC_VALUE is not set", function()
          build(s, { env_resolved = {} })
        end)
        assert.matches("spec.worker_groups%[1%]%.env%.FROM_ENV", e.message)
      end)

      it("refuses a bad secret reference and secret references outside kuberay", function()
        local bad = spec()
        bad.head_group.env = { X = { from_secret = "Bad_Name", key = "k" } }
        raises("invalid_argument", "from_secret", function() build(bad) end)
        bad.head_group.env = { X = { from_secret = "ok", key = "k", extra = 1 } }
        raises("invalid_argument", "head_group.env.X", function() build(bad) end)
        local cluster = require "geneva.context.cluster"
        raises("invalid_argument", "env.X", function()
          cluster.validate { type = "local", env = { X = { from_secret = "s", key = "k" } } }
        end)
      end)
    end)

    describe("refuses bad input", function()
      it("a spec that does not validate, with the field path", function()
        raises("invalid_argument", "spec%.head_group%.memory", function()
          build(spec({ head_group = { image = "i", memory = "100m" } }))
        end)
        raises("invalid_argument", "spec.type: expected 'kuberay'", function() build(spec({ type = "ray" })) end)
        raises("invalid_argument", "unknown field 'worker_group'", function()
          build(spec({ worker_group = {} }))
        end)
      end)

      it("a missing head image or worker groups", function()
        raises("invalid_argument", "spec%.head_group%.image: missing", function()
          build(spec({ head_group = { num_cpus = 1 } }))
        end)
        local s = spec()
        s.worker_groups = nil
        raises("invalid_argument", "spec%.worker_groups: missing", function() build(s) end)
      end)

      it("bad options", function()
        raises("invalid_argument", "opts%.name", function() build(spec(), { name = "1abc" }) end)
        raises("invalid_argument", "opts%.name", function() build(spec(), { name = ("a"):rep(54) }) end)
        raises("invalid_argument", "opts%.name", function() build(spec(), { name = "Upper" }) end)
        raises("invalid_argument", "opts%.owner: missing", function() build(spec(), { owner = false }) end)
        raises("invalid_argument", "opts%.lease_id", function() build(spec(), { lease_id = "a b" }) end)
        raises("invalid_argument", "opts%.ttl_seconds", function() build(spec(), { ttl_seconds = -1 }) end)
        raises("invalid_argument", "opts%.namespace", function() build(without_namespace()) end)
        raises("invalid_argument", "opts%.namespace", function() build(spec(), { namespace = "Not_OK" }) end)
        raises("invalid_argument", "did you mean 'lease_id'", function() build(spec(), { lease_ids = "x" }) end)
      end)

      it("replicas outside min..max", function()
        local s = spec()
        s.worker_groups[1] = { name = "cpu", replicas = 1, min_replicas = 2 }
        raises("invalid_argument", "replicas", function() build(s) end)
      end)
    end)
  end)

  describe(".head_service", function()
    it("is <name>-head-svc unless the status names it", function()
      assert.equal("rc-head-svc", rc.head_service("rc"))
      assert.equal("rc-head-svc", rc.head_service({ metadata = { name = "rc" } }))
      assert.equal("custom", rc.head_service({ metadata = { name = "rc" }, status = { head = { serviceName = "custom" } } }))
    end)
  end)
end)
