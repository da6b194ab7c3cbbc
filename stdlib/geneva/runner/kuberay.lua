--[[
geneva.runner.kuberay: Ray on Kubernetes for one context. provision()
creates a RayCluster (ray.io/v1, built by geneva.kube.raycluster) through
the Kubernetes API (geneva.kube.client: kubeconfig, exec plugins, the
in-cluster account), waits until it is ready, and runs the backfills on it
with the Ray runner, unchanged, through the API server's service proxy:
no kubectl, no port-forward. close() stops the Ray jobs, then deletes the
RayCluster (propagation Background: its pods and services go with it) and
waits until it is gone.

  {type = "kuberay", namespace =, head_group = {...}, worker_groups = {...},
   kubeconfig =, ttl_seconds =, token_env | token_file}

Lifetimes: the RayCluster is leased (kind "raycluster", in a durable scope
journalled in the db and this user's state dir) before it is created, and
carries the lease's id and owner in its labels and annotations, with the
time it expires (ttl_seconds). A create whose answer was lost meets 409
AlreadyExists on retry: the object is adopted when its annotations name
our lease, never otherwise. `geneva reap` deletes a dead driver's cluster
when the API server shows it with that lease (M.reap_verify), and
M.reap_expired deletes our-labelled clusters whose TTL has passed even when
their lease file was lost.

Readiness: status.state "ready" with a head service name; KubeRay accepts
an invalid spec and only records a Warning event, so Warning events about
the cluster (InvalidRayClusterSpec, InvalidRayClusterMetadata,
FailedCreate...) fail provisioning at once. The dashboard then answers 503
through the proxy while it starts: connecting retries until READY_TIMEOUT.
]]
local errors = require "geneva.errors"
local ledger = require "geneva.ledger"
local time = require "geneva.time"
local ray = require "geneva.runner.ray"

local M = {}

M.READY_TIMEOUT = 600     -- seconds for the cluster and its dashboard to come up
M.DELETE_TIMEOUT = 120    -- seconds for a deleted cluster to be gone
M.FATAL_EVENTS = { InvalidRayClusterSpec = true, InvalidRayClusterMetadata = true,
                   InvalidRayClusterStatus = true, FailedCreate = true,
                   FailedToCreateHeadPod = true, FailedToCreateWorkerPod = true }

local clean = errors.clean

local function kube() return require "geneva.kube.client" end
local function rc() return require "geneva.kube.raycluster" end

local function owner_string(o)
  return ("%s/%s/%s/%s"):format(tostring(o.hostname), tostring(o.boot_id), tostring(o.pid), tostring(o.start_time))
end

-- The client for a spec (or a lease's info): kubeconfig as the spec says,
-- else KUBECONFIG / ~/.kube/config / in-cluster
local function client_for(kubeconfig, namespace)
  local cfg = require("geneva.kube.config").load { kubeconfig = kubeconfig, namespace = namespace }
  return kube().client(cfg)
end

-- {====== Waiting and deleting

local function warning_of(c, ns, name)
  for _, ev in ipairs(c:events(ns, name, { type = "Warning" })) do
    if M.FATAL_EVENTS[ev.reason] then return ev end
  end
end

-- Until the cluster is ready (its object) | raises at a fatal Warning event
local function wait_ready(c, ns, name, deadline)
  return c:poll(function()
    local ev = warning_of(c, ns, name)
    if ev then
      errors.throw("invalid_argument", ("RayCluster %s/%s: Kubernetes reported %s: %s")
        :format(ns, name, clean(ev.reason, 60), clean(ev.message, 1000)))
    end
    local o = c:get(kube().RAYCLUSTERS, ns, name, { missing_ok = true })
    if not o then errors.throw("unavailable", ("RayCluster %s/%s disappeared while starting"):format(ns, name)) end
    local st = type(o.status) == "table" and o.status or {}
    if st.state == "ready" then return o end
    return nil, ("state %s"):format(clean(st.state or "none yet", 40))
  end, { timeout = math.max(1, deadline - time.monotonic()), interval = 0.2, max_interval = 2,
         what = ("RayCluster %s/%s to be ready"):format(ns, name) })
end

-- Deletes the cluster (never Orphan) and waits until it is gone -> true | false, why
local function delete_and_confirm(c, ns, name)
  local ok, err = pcall(c.delete, c, kube().RAYCLUSTERS, ns, name, { propagation = "Background" })
  if not ok then return false, tostring(errors.from(err)) end
  local gone, gerr = pcall(c.poll, c, function()
    if c:get(kube().RAYCLUSTERS, ns, name, { missing_ok = true }) == nil then return true end
  end, { timeout = M.DELETE_TIMEOUT, interval = 0.1, max_interval = 1,
         what = ("RayCluster %s/%s to be deleted"):format(ns, name) })
  if not gone then return false, tostring(errors.from(gerr)) end
  return true
end

-- }======

-- {====== The runner: the Ray runner on the cluster, and the cluster

local Runner = {}
Runner.__index = Runner

for _, m in ipairs({ "submit", "poll", "cancel", "job_done", "drain" }) do
  Runner[m] = function(self, ...) return self.ray[m](self.ray, ...) end
end

function Runner:describe()
  local d = self.ray:describe()
  d.type, d.namespace, d.raycluster, d.server = "kuberay", self.ns, self.name, self.server
  d.adopted = self.adopted
  return d
end

-- A background job's driver runs Ray submissions of its own on this
-- cluster; the cluster stays this process's (its context's) to delete.
function Runner:handoff()
  return { type = "kuberay", ray = self.ray:handoff(), namespace = self.ns, raycluster = self.name,
           server = self.server }
end

function Runner:close()
  if self.closed then return true end
  self.closed = true
  local ok, err = pcall(self.ray.close, self.ray)
  local sok, errs = self.scope:close()      -- the RayCluster's lease: delete, confirm
  if not ok then error(err, 0) end
  if not sok then errors.throw("unavailable", "kuberay runner teardown: " .. table.concat(errs, "; ")) end
  return true
end
Runner.__close = Runner.close

-- An attached runner (a background job's driver) has no cluster of its own
local Attached = setmetatable({}, { __index = Runner })
Attached.__index = Attached
function Attached:close()
  if self.closed then return true end
  self.closed = true
  return self.ray:close()
end

--[[
M.provision(spec, {scope=, db=, manifest=}) -> Runner
Creates the RayCluster, waits for it (and its dashboard through the
service proxy), and connects the Ray runner to it. Whatever it made is
owned by env.scope: an error or an interrupt deletes it.
]]
function M.provision(spec, env)
  local db = env.db
  if not db then errors.throw("invalid_argument", "kuberay clusters need a database: their workers take tasks from it") end
  local deadline = time.monotonic() + M.READY_TIMEOUT
  local c = client_for(spec.kubeconfig, spec.namespace)
  local ns = c.cfg.namespace
  local name = rc().name()
  local scope = ledger.scope{ name = "kuberay " .. ns .. "/" .. name, parent = env.scope,
                              journal = ray.journals(db.path or db.dir), durable = true }
  local self = setmetatable({ scope = scope, ns = ns, name = name, server = c.cfg.server }, Runner)
  local ok, err = pcall(function()
    local res = scope:reserve("raycluster", ns .. "/" .. name, {
      server = c.cfg.server, namespace = ns, name = name, kubeconfig = spec.kubeconfig,
      context = c.cfg.context })
    local lease = res:lease()
    local lease_id = lease and lease.id or name
    local me = ledger.owner()
    -- bound before the create: an interrupt mid-create still deletes it
    res:bind(function()
      local done, why = delete_and_confirm(c, ns, name)
      if not done then error(("RayCluster %s/%s is not deleted: %s"):format(ns, name, why), 0) end
    end)
    local obj = rc().build(spec, { name = name, namespace = ns, owner = owner_string(me), lease_id = lease_id })
    -- POST is not repeated by the transport: a create whose answer was lost
    -- is sent again here, and its 409 AlreadyExists adopts the object only
    -- when it carries our lease (never someone else's cluster)
    for attempt = 1, 3 do
      local cok, cerr = pcall(c.create, c, kube().RAYCLUSTERS, ns, obj)
      if cok then break end
      local e = errors.from(cerr)
      if e.code == "conflict" then
        local got = c:get(kube().RAYCLUSTERS, ns, name, { missing_ok = true })
        local ann = got and type(got.metadata) == "table" and got.metadata.annotations or {}
        if not got or ann[rc().ANN_LEASE] ~= lease_id or ann[rc().ANN_OWNER] ~= owner_string(me) then error(e, 0) end
        self.adopted = true
        break
      end
      if e.code ~= "unavailable" or attempt == 3 then error(e, 0) end
      if not time.sleep(0.5 * attempt) then errors.throw("interrupted", "interrupted") end
    end
    local ready = wait_ready(c, ns, name, deadline)
    local address = c:service_proxy_url(ns, rc().head_service(ready), "dashboard", ""):gsub("/+$", "")
    -- the dashboard answers 503 through the proxy until it is up
    local ray_spec = { type = "ray", address = address, env = nil, token_env = spec.token_env,
                       token_file = spec.token_file, transport = function() return c:transport_opts() end }
    local last
    while true do
      local rok, r = pcall(ray.provision, ray_spec, { scope = scope, db = db, manifest = env.manifest })
      if rok then self.ray = r break end
      last = errors.from(r)
      if last.code ~= "unavailable" or time.monotonic() > deadline then error(last, 0) end
      if not time.sleep(0.5) then errors.throw("interrupted", "interrupted") end
    end
  end)
  if not ok then
    -- what was made goes now, with the error that stopped us
    local closed, errs = scope:close()
    local e = errors.from(err)
    if not closed then e.message = e.message .. "; teardown: " .. table.concat(errs, "; ") end
    error(e, 0)
  end
  return self
end

-- M.attach(handoff, scope) -> Runner on the cluster provision() made
function M.attach(h, scope)
  if type(h) ~= "table" or type(h.ray) ~= "table" then
    errors.throw("invalid_argument", "kuberay handoff: no ray handoff")
  end
  return setmetatable({ ray = ray.attach(h.ray, scope), ns = h.namespace, name = h.raycluster,
                        server = h.server }, Attached)
end

-- }======

-- {====== Reap (geneva.context.reap kind "raycluster")

--[[
M.reap_verify(info, ctx) -> "gone" | "present", target | nil, why
Ours only when the API server shows the RayCluster with this lease's id
and owner in its annotations. The kubeconfig named by a lease is followed
only from this user's own journal (ctx.trusted).
]]
function M.reap_verify(info, ctx)
  if type(info.namespace) ~= "string" or type(info.name) ~= "string" then return nil, "it names no RayCluster" end
  if not ctx.trusted then
    return nil, "a RayCluster lease only in the db's journal: its kubeconfig is not followed"
  end
  if info.kubeconfig ~= nil and type(info.kubeconfig) ~= "string" then return nil, "bad kubeconfig reference" end
  local ok, c = pcall(client_for, info.kubeconfig, info.namespace)
  if not ok then return nil, ("cannot reach its Kubernetes API: %s"):format(clean(tostring(errors.from(c)))) end
  local gok, o = pcall(c.get, c, kube().RAYCLUSTERS, info.namespace, info.name, { missing_ok = true })
  if not gok then return nil, clean(tostring(errors.from(o))) end
  if o == nil then return "gone" end
  local ann = type(o.metadata) == "table" and type(o.metadata.annotations) == "table" and o.metadata.annotations or {}
  if ann[rc().ANN_LEASE] ~= ctx.lease.id or ann[rc().ANN_OWNER] ~= owner_string(ctx.lease.owner) then
    return nil, ("RayCluster %s/%s does not carry this lease's annotations: not ours, left alone")
      :format(info.namespace, info.name)
  end
  return "present", { c = c, ns = info.namespace, name = info.name }
end

function M.reap_teardown(t)
  return delete_and_confirm(t.c, t.ns, t.name)
end

--[[
M.reap_expired(spec [, now]) -> {deleted = {names}, kept = n}
Our RayClusters (label app.kubernetes.io/managed-by=geneva) in the spec's
namespace whose expires-at annotation has passed: deleted, whether or not
a lease names them (a lease file can be lost with a machine).
]]
function M.reap_expired(spec, now)
  now = now or os.time()
  local c = client_for(spec.kubeconfig, spec.namespace)
  local ns = c.cfg.namespace
  local out = { deleted = {}, kept = 0, failed = {} }
  for _, o in ipairs(c:list(kube().RAYCLUSTERS, ns, { label_selector = rc().MANAGED_SELECTOR })) do
    local md = type(o.metadata) == "table" and o.metadata or {}
    local ann = type(md.annotations) == "table" and md.annotations or {}
    local expires = type(ann[rc().ANN_EXPIRES]) == "string" and time.parse_iso8601(ann[rc().ANN_EXPIRES])
    if type(md.name) == "string" and expires and expires < now then
      local ok, why = delete_and_confirm(c, ns, md.name)
      if ok then out.deleted[#out.deleted + 1] = ns .. "/" .. md.name
      else out.failed[#out.failed + 1] = ("%s/%s: %s"):format(ns, md.name, why) end
    else
      out.kept = out.kept + 1
    end
  end
  return out
end

-- }======

return M
