-- geneva.kube.raycluster: the RayCluster (ray.io/v1) object for a kuberay
-- cluster spec (field names as in KubeRay's
-- ray-operator/apis/ray/v1/raycluster_types.go).
--
-- What the object carries, and why:
--   * head group: container 0 "ray-head" with the named ports gcs-server
--     6379, dashboard 8265 and client 10001 (KubeRay copies declared ports
--     into the head service by name: the service proxy reaches
--     <name>-head-svc:dashboard only if `dashboard` is declared);
--   * worker groups: groupName, replicas, minReplicas, maxReplicas (all
--     set: KubeRay's validation wants min <= max when autoscaling is off);
--   * resources: requests == limits (a Guaranteed pod: Ray sizes itself
--     from limits, the scheduler from requests), cpu, memory and
--     `nvidia.com/gpu` for GPUs;
--   * rayStartParams: strings only (a map[string]string in the CRD; a
--     number would fail the schema), dashboard-host 0.0.0.0 on the head,
--     num-cpus/num-gpus from the group;
--   * env: literal values; {from_env=} references resolved now, at submit
--     time, from opts.env_resolved (the object then holds their values: send
--     it, never store it); {from_secret=, key=} as valueFrom.secretKeyRef,
--     which the kubelet resolves (geneva never sees the value);
--   * metadata: the labels and annotations below, so that `geneva reap` can
--     list ours (label selector M.MANAGED_SELECTOR) and tell, from the lease
--     and the TTL, which ones are leftovers.
--
-- Labels (selectable; values are label-safe):
--   app.kubernetes.io/managed-by = geneva
--   geneva.lancedb.com/lease     = <lease id>
-- Annotations (free text):
--   geneva.lancedb.com/owner       = hostname/boot_id/pid/start_time of the driver
--   geneva.lancedb.com/lease       = <lease id>
--   geneva.lancedb.com/ttl-seconds = <ttl>
--   geneva.lancedb.com/expires-at  = creation time + ttl, RFC 3339 UTC
--   geneva.lancedb.com/created-at  = RFC 3339 UTC
local json = require "geneva.json"
local errors = require "geneva.errors"
local sv = require "geneva.context.spec"

local M = {}

M.LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
M.MANAGER = "geneva"
M.LABEL_LEASE = "geneva.lancedb.com/lease"
M.ANN_OWNER = "geneva.lancedb.com/owner"
M.ANN_LEASE = "geneva.lancedb.com/lease"
M.ANN_TTL = "geneva.lancedb.com/ttl-seconds"
M.ANN_EXPIRES = "geneva.lancedb.com/expires-at"
M.ANN_CREATED = "geneva.lancedb.com/created-at"
M.MANAGED_SELECTOR = M.LABEL_MANAGED_BY .. "=" .. M.MANAGER
M.DEFAULT_TTL = 24 * 3600     -- seconds, when neither opts nor the spec give one
M.MAX_NAME = 53               -- KubeRay: longer names get an InvalidRayClusterMetadata event
M.DASHBOARD_PORT = 8265
M.HEAD_PORTS = { { name = "gcs-server", containerPort = 6379 },
                 { name = "dashboard", containerPort = 8265 },
                 { name = "client", containerPort = 10001 } }

local function bad(field, msg)
  errors.throw("invalid_argument", ("raycluster: %s: %s"):format(field, msg), { field = field })
end

-- A DNS-1035 label (what KubeRay checks the name against): starts with a
-- letter, lowercase letters, digits and '-', ends with a letter or digit.
local function is_dns1035(s, max)
  return type(s) == "string" and #s >= 1 and #s <= max
    and s:match("^[a-z]$") ~= nil or (type(s) == "string" and #s <= max and s:match("^[a-z][a-z0-9%-]*[a-z0-9]$") ~= nil)
end

-- M.name([prefix]) -> "geneva-<prefix>-<8 hex>" cut to MAX_NAME, a DNS-1035 label
function M.name(prefix)
  local hex = require("geneva.fs").random_hex(8)
  local p = tostring(prefix or ""):lower():gsub("[^a-z0-9%-]", "-"):gsub("%-+", "-"):gsub("^%-", ""):gsub("%-$", "")
  local base = p ~= "" and ("geneva-" .. p) or "geneva"
  base = base:sub(1, M.MAX_NAME - #hex - 1):gsub("%-+$", "")
  return base .. "-" .. hex
end

-- A Kubernetes CPU quantity for a number of CPUs: "2", "500m"
local function cpu_quantity(n)
  if math.type(n) == "integer" or n == math.floor(n) then return ("%d"):format(math.tointeger(n) or math.floor(n)) end
  return ("%dm"):format(math.ceil(n * 1000 - 1e-9))
end

-- "rayproject/ray:2.52.0-py311-gpu" -> "2.52.0"
local function ray_version_of(image)
  local tag = tostring(image):match(":([^:/@]+)$") or tostring(image):match(":([^:/@]+)@")
  return tag and tag:match("^(%d+%.%d+%.%d+)") or nil
end

local function owner_text(o)
  if type(o) == "string" then return o end
  return ("%s/%s/%s/%s"):format(tostring(o.hostname), tostring(o.boot_id), tostring(o.pid), tostring(o.start_time))
end

local function resolver(env_resolved)
  if env_resolved == nil then return os.getenv end
  if type(env_resolved) == "function" then return env_resolved end
  if type(env_resolved) == "table" then return function(k) return env_resolved[k] end end
  bad("opts.env_resolved", "expected a table NAME -> value or a function(NAME) -> value")
end

-- The container env list for a group's env (sorted by name: stable output)
local function env_list(env, path, getenv)
  local names = {}
  for k in pairs(env or {}) do names[#names + 1] = k end
  table.sort(names)
  local out = json.array()
  for _, k in ipairs(names) do
    local v = env[k]
    if type(v) == "table" and v.from_secret then
      out[#out + 1] = { name = k, valueFrom = { secretKeyRef = { name = v.from_secret, key = v.key } } }
    elseif type(v) == "table" then
      local val = getenv(v.from_env)
      if val == nil then
        errors.throw("invalid_argument", ("%s.%s: environment variable %s is not set"):format(path, k, v.from_env),
          { field = path .. "." .. k })
      end
      out[#out + 1] = { name = k, value = tostring(val) }
    else
      out[#out + 1] = { name = k, value = tostring(v) }
    end
  end
  return out
end

local function copy_map(t)
  local o = json.object()
  for k, v in pairs(t or {}) do o[k] = v end
  return o
end

local function tolerations(list)
  local out = json.array()
  for i, t in ipairs(list or {}) do
    out[i] = { key = t.key, operator = t.operator, value = t.value, effect = t.effect,
               tolerationSeconds = t.toleration_seconds }
  end
  return out
end

-- The pod template of a group: container `cname`, resources, scheduling
local function template(g, cname, image, path, getenv, ports)
  local requests = json.object()
  if g.num_cpus then requests.cpu = cpu_quantity(g.num_cpus) end
  if g.memory then requests.memory = tostring(g.memory) end
  if g.num_gpus and g.num_gpus > 0 then requests["nvidia.com/gpu"] = tostring(g.num_gpus) end
  local container = { name = cname, image = image,
                      resources = { requests = requests, limits = copy_map(requests) } }
  if ports then container.ports = json.array(ports) end
  if g.env and next(g.env) then container.env = env_list(g.env, path .. ".env", getenv) end
  local spec = { containers = json.array { container } }
  if g.node_selector and next(g.node_selector) then spec.nodeSelector = copy_map(g.node_selector) end
  if g.tolerations and #g.tolerations > 0 then spec.tolerations = tolerations(g.tolerations) end
  if g.service_account then spec.serviceAccountName = g.service_account end
  local meta = json.object()
  if g.labels and next(g.labels) then meta.labels = copy_map(g.labels) end
  return { metadata = meta, spec = spec }
end

local function start_params(g, head)
  local p = json.object()
  if head then p["dashboard-host"] = "0.0.0.0" end
  -- Ray takes whole CPUs: a fraction of a CPU is one Ray CPU (KubeRay
  -- rounds the limit up the same way)
  if g.num_cpus then p["num-cpus"] = tostring(math.ceil(g.num_cpus - 1e-9)) end
  if g.num_gpus then p["num-gpus"] = tostring(g.num_gpus) end
  return p
end

local OPTS = { name = true, name_prefix = true, namespace = true, owner = true, lease_id = true,
               ttl_seconds = true, env_resolved = true, now = true, ray_version = true }

--[[
M.build(spec, opts) -> object (a Lua table ready for json.encode) | raises invalid_argument
spec: a kuberay cluster spec (validated here again with
geneva.context.cluster.validate). opts:
  name          the RayCluster's name (a DNS-1035 label of at most 53);
                default M.name(name_prefix)
  name_prefix   for the generated name (e.g. the cluster's registry name)
  namespace     required unless spec.namespace (the config's namespace)
  owner         required: the lease owner {hostname, boot_id, pid, start_time} or its text
  lease_id      required: the lease's id (a label value)
  ttl_seconds   default spec.ttl_seconds, else M.DEFAULT_TTL
  env_resolved  {NAME = value} or function(NAME) -> value for {from_env=}
                references (default os.getenv)
  ray_version   default: from the head image's tag, when it is a version
  now           epoch seconds (tests; default time.now())
]]
function M.build(spec, opts)
  if type(opts) ~= "table" then bad("opts", "expected a table {name=, namespace=, owner=, lease_id=, ...}") end
  for k in pairs(opts) do
    if not OPTS[k] then bad("opts." .. tostring(k), "unknown option" .. require("geneva.suggest").hint(k, OPTS)) end
  end
  if type(spec) ~= "table" then bad("spec", "expected a kuberay cluster spec table") end
  local s = {}
  for k, v in pairs(spec) do s[k] = v end
  s.type = s.type or "kuberay"
  if s.type ~= "kuberay" then bad("spec.type", ("expected 'kuberay', got %s"):format(sv.show(s.type))) end
  spec = require("geneva.context.cluster").validate(s, "spec")
  local head = spec.head_group
  if not head then bad("spec.head_group", "missing (the head group: at least its image)") end
  if not head.image then bad("spec.head_group.image", "missing (the Ray image, e.g. rayproject/ray:2.52.0)") end
  local workers = spec.worker_groups
  if not workers then bad("spec.worker_groups", "missing (at least one worker group)") end

  local name = opts.name or M.name(opts.name_prefix)
  if not is_dns1035(name, M.MAX_NAME) then
    bad("opts.name", ("%s is not a DNS-1035 label of at most %d characters (lowercase letters, digits and '-', starting with a letter)")
      :format(sv.show(name), M.MAX_NAME))
  end
  local ns = opts.namespace or spec.namespace
  if ns == nil then bad("opts.namespace", "missing (and the spec has no namespace)") end
  sv.dns_label("raycluster: opts.namespace", ns)
  if opts.owner == nil or (type(opts.owner) ~= "string" and type(opts.owner) ~= "table") then
    bad("opts.owner", "missing (the lease owner {hostname, boot_id, pid, start_time})")
  end
  if type(opts.lease_id) ~= "string" or opts.lease_id == "" then bad("opts.lease_id", "missing (the lease's id)") end
  sv.label_value("raycluster: opts.lease_id", opts.lease_id)
  local ttl = opts.ttl_seconds or spec.ttl_seconds or M.DEFAULT_TTL
  if math.type(ttl) ~= "integer" or ttl <= 0 then bad("opts.ttl_seconds", "expected a positive integer of seconds") end
  local getenv = resolver(opts.env_resolved)
  local time = require "geneva.time"
  local now = opts.now or time.now()

  local labels = json.object { [M.LABEL_MANAGED_BY] = M.MANAGER, [M.LABEL_LEASE] = opts.lease_id }
  local annotations = json.object {
    [M.ANN_OWNER] = owner_text(opts.owner), [M.ANN_LEASE] = opts.lease_id,
    [M.ANN_TTL] = tostring(ttl), [M.ANN_EXPIRES] = time.iso8601(now + ttl, 0),
    [M.ANN_CREATED] = time.iso8601(now, 0),
  }

  local head_spec = {
    serviceType = "ClusterIP",
    rayStartParams = start_params(head, true),
    template = template(head, "ray-head", head.image, "spec.head_group", getenv, M.HEAD_PORTS),
  }
  local groups = json.array()
  for i, g in ipairs(workers) do
    local path = ("spec.worker_groups[%d]"):format(i)
    local replicas = g.replicas or g.min_replicas or 1
    local min = g.min_replicas or replicas
    local max = g.max_replicas or math.max(replicas, min)
    if replicas < min or replicas > max then
      bad(path .. ".replicas", ("%d is outside min_replicas..max_replicas (%d..%d)"):format(replicas, min, max))
    end
    if max > 2147483647 then bad(path .. ".max_replicas", "at most 2147483647") end
    groups[i] = {
      groupName = g.name, replicas = replicas, minReplicas = min, maxReplicas = max,
      rayStartParams = start_params(g, false),
      template = template(g, "ray-worker", g.image or head.image, path, getenv),
    }
  end

  local obj = {
    apiVersion = "ray.io/v1", kind = "RayCluster",
    metadata = { name = name, namespace = ns, labels = labels, annotations = annotations },
    spec = { headGroupSpec = head_spec, workerGroupSpecs = groups },
  }
  local rv = opts.ray_version or ray_version_of(head.image)
  if rv then obj.spec.rayVersion = rv end
  return obj
end

-- M.head_service(obj_or_name) -> "<name>-head-svc", the service the
-- operator makes (status.head.serviceName, when set, is the truth)
function M.head_service(o)
  if type(o) == "table" then
    local st = o.status
    if type(st) == "table" and type(st.head) == "table" and type(st.head.serviceName) == "string"
        and st.head.serviceName ~= "" then
      return st.head.serviceName
    end
    o = o.metadata and o.metadata.name
  end
  return tostring(o) .. "-head-svc"
end

return M
