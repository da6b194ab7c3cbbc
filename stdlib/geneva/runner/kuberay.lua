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
time it expires (ttl_seconds), which the live context pushes forward (a
merge PATCH every ttl/4, from its polls and a background job's) so that a
context longer than its TTL keeps its cluster. A create whose answer was
lost meets 409 AlreadyExists on retry: the object is adopted when its
annotations name our lease, never otherwise. `geneva reap` deletes a dead
driver's cluster when the API server shows it with that lease
(M.reap_verify), and M.reap_expired deletes our-labelled clusters whose
owner on this host is dead, or whose TTL has passed, even when their lease
file was lost.

The way back (M.ref): a lease, a background job's handoff and a Ray job's
lease name the kubeconfig (the spec's file, or the files merged from
KUBECONFIG or ~/.kube/config), its context, the namespace, the cluster and
its head service: never a credential. M.client_from_ref loads the config
again, so an exec plugin's token or a rotated token file is fresh wherever
it is used; reap follows such a reference only from this user's journal.

Readiness: status.state "ready" and, from an operator that reports
conditions, HeadPodReady True (state stays "ready" once reached, while the
head pod may restart); a status older than the spec (observedGeneration
below metadata.generation) is not believed. KubeRay accepts an invalid spec
and only records a Warning event, so Warning events about the cluster
(InvalidRayClusterSpec, InvalidRayClusterMetadata, FailedCreate...) fail
provisioning at once. The dashboard then answers 503 through the proxy
while it starts: connecting retries until READY_TIMEOUT.

Workers: the pods never see this host's files, so the worker runtime is
shipped as a package (ship_host, default true here; false when the image
has geneva at this host's path), and a database on a local path gets a
warning: only s3:// (or a volume mounted at the same path) reaches them.
]]
local errors = require "geneva.errors"
local json = require "geneva.json"
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

-- The client for a spec: kubeconfig as the spec says, else KUBECONFIG /
-- ~/.kube/config / in-cluster
local function client_for(kubeconfig, namespace)
  local cfg = require("geneva.kube.config").load { kubeconfig = kubeconfig, namespace = namespace }
  return kube().client(cfg)
end

-- {====== References: how to reach a cluster again, without a secret

--[[
M.ref(spec, cfg, ns, name [, service]) -> {kubeconfig | files | in_cluster,
context, namespace, raycluster, service, server}: what rebuilds the client
(M.client_from_ref) and the dashboard's proxy URL (M.proxy_transport).
]]
function M.ref(spec, cfg, ns, name, service)
  local r = { context = cfg.context, namespace = ns, raycluster = name, service = service, server = cfg.server }
  if cfg.source == "in-cluster" then
    r.in_cluster = true
  elseif spec.kubeconfig then
    r.kubeconfig = spec.kubeconfig
  else
    -- what KUBECONFIG or ~/.kube/config was then: reap may run elsewhere
    r.files = json.array{ table.unpack(cfg.files or {}) }
  end
  return r
end

local function is_str(v) return type(v) == "string" and v ~= "" and not v:find("[%c]") end

--[[
M.client_from_ref(ref) -> Client | raises invalid_argument
The config a reference names, loaded again (an exec plugin runs again, a
token file is read again). A reference comes from a lease or a handoff:
every field is checked; callers follow one only from this user's own
journal or process.
]]
function M.client_from_ref(ref)
  if type(ref) ~= "table" then errors.throw("invalid_argument", "a Kubernetes reference is not a table") end
  local function bad(f) errors.throw("invalid_argument", ("a Kubernetes reference's %s is not valid"):format(f)) end
  if not is_str(ref.namespace) then bad("namespace") end
  if not is_str(ref.context) then bad("context") end
  local opts = { namespace = ref.namespace }
  if ref.in_cluster == true then
    opts.in_cluster = true
  elseif ref.kubeconfig ~= nil then
    if not is_str(ref.kubeconfig) then bad("kubeconfig") end
    opts.kubeconfig, opts.context, opts.in_cluster = ref.kubeconfig, ref.context, false
  elseif type(ref.files) == "table" and #ref.files > 0 then
    for _, f in ipairs(ref.files) do
      if not is_str(f) or f:find(":", 1, true) then bad("files") end
    end
    local list = table.concat(ref.files, ":")
    opts.context, opts.in_cluster = ref.context, false
    opts.getenv = function(n) if n == "KUBECONFIG" then return list end return os.getenv(n) end
  else
    bad("kubeconfig")
  end
  return kube().client(require("geneva.kube.config").load(opts))
end

--[[
M.proxy_transport(ref [, client]) -> transport for geneva.runner.ray: the
dashboard through the API server's service proxy.
  address     the proxy URL, built from the config's server (never from a
              lease's text: credentials go only where the kubeconfig says)
  opts()      the API server's TLS and credentials, fresh for each request
  refresh()   after a 401 from the API server: run the exec plugin again,
              read the token file again
  ref         the reference (no secret), for leases and handoffs
]]
function M.proxy_transport(ref, c)
  c = c or M.client_from_ref(ref)
  if not is_str(ref.service) then errors.throw("invalid_argument", "a Kubernetes reference names no head service") end
  local address = c:service_proxy_url(ref.namespace, ref.service, "dashboard", ""):gsub("/+$", "")
  return { address = address, client = c, ref = ref,
           opts = function() return c:transport_opts() end,
           refresh = function() c:credential(true) end }
end

-- }======

-- {====== Waiting and deleting

local function warning_of(c, ns, name)
  for _, ev in ipairs(c:events(ns, name, { type = "Warning" })) do
    if M.FATAL_EVENTS[ev.reason] then return ev end
  end
end

--[[
M.is_ready(obj) -> true | false, what it waits for
state "ready"; the HeadPodReady condition True when the operator reports
conditions (KubeRay 1.2 and later: state stays "ready" once reached, the
head pod may not be); and a status written for the current spec
(status.observedGeneration >= metadata.generation, when both are given).
]]
function M.is_ready(o)
  local st = type(o.status) == "table" and o.status or {}
  local md = type(o.metadata) == "table" and o.metadata or {}
  local gen, seen = math.tointeger(md.generation), math.tointeger(st.observedGeneration)
  if gen and seen and seen < gen then
    return false, ("its status is of generation %d, the spec's is %d"):format(seen, gen)
  end
  if st.state ~= "ready" then return false, ("state %s"):format(clean(st.state or "none yet", 40)) end
  if type(st.conditions) == "table" then
    for _, cnd in ipairs(st.conditions) do
      if type(cnd) == "table" and cnd.type == "HeadPodReady" then
        if cnd.status == "True" then return true end
        return false, ("state ready, HeadPodReady %s (%s)"):format(clean(cnd.status, 10), clean(cnd.reason or "", 60))
      end
    end
  end
  return true     -- an operator without conditions (or without HeadPodReady): state decides
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
    local ready, why = M.is_ready(o)
    if ready then return o end
    return nil, why
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

for _, m in ipairs({ "cancel", "job_done", "drain" }) do
  Runner[m] = function(self, ...) return self.ray[m](self.ray, ...) end
end

--[[
The expiry annotation, pushed forward every ttl/4 while the context (or a
background job's driver) polls: a context that runs longer than its TTL
keeps its cluster. A failed PATCH is said once on stderr and tried again a
quarter later; it never fails a job.
]]
local function renew(self)
  if not self.ttl or self.closed or time.monotonic() < self.next_renew then return end
  self.next_renew = time.monotonic() + math.max(1, self.ttl / 4)
  local ok, err = pcall(self.kc.patch, self.kc, kube().RAYCLUSTERS, self.ns, self.name,
    { metadata = { annotations = { [rc().ANN_EXPIRES] = time.iso8601(time.now() + self.ttl, 0) } } },
    { timeout = 10 })
  if ok then
    self.renewed = (self.renewed or 0) + 1
  elseif not self.renew_warned then
    self.renew_warned = true
    io.stderr:write(("geneva: warning: cannot renew the expiry of RayCluster %s/%s (%s): once it passes, `geneva reap` may delete it\n")
      :format(self.ns, self.name, clean(tostring(errors.from(err)), 300)))
  end
end

function Runner:submit(...)
  renew(self)
  return self.ray:submit(...)
end

function Runner:poll(...)
  renew(self)
  return self.ray:poll(...)
end

function Runner:describe()
  local d = self.ray:describe()
  d.type, d.namespace, d.raycluster, d.server = "kuberay", self.ns, self.name, self.server
  d.adopted = self.adopted
  return d
end

-- A background job's driver runs Ray submissions of its own on this
-- cluster; the cluster stays this process's (its context's) to delete.
-- The handoff names the kubeconfig (in ray.kube), never a credential: the
-- driver loads it again, and its tokens renew as they expire.
function Runner:handoff()
  return { type = "kuberay", ray = self.ray:handoff(), namespace = self.ns, raycluster = self.name,
           server = self.server, ttl = self.ttl }
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
  local ttl = spec.ttl_seconds or rc().DEFAULT_TTL
  local scope = ledger.scope{ name = "kuberay " .. ns .. "/" .. name, parent = env.scope,
                              journal = ray.journals(db.path or db.dir), durable = true }
  local self = setmetatable({ scope = scope, ns = ns, name = name, server = c.cfg.server, kc = c, ttl = ttl,
                              next_renew = time.monotonic() + math.max(1, ttl / 4) }, Runner)
  local ok, err = pcall(function()
    local info = M.ref(spec, c.cfg, ns, name)
    info.name = name
    local res = scope:reserve("raycluster", ns .. "/" .. name, info)
    local lease = res:lease()
    local lease_id = lease and lease.id or name
    local me = ledger.owner()
    -- bound before the create: an interrupt mid-create still deletes it
    res:bind(function()
      local done, why = delete_and_confirm(c, ns, name)
      if not done then error(("RayCluster %s/%s is not deleted: %s"):format(ns, name, why), 0) end
    end)
    local obj = rc().build(spec, { name = name, namespace = ns, owner = owner_string(me), lease_id = lease_id,
                                   ttl_seconds = ttl })
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
    local transport = M.proxy_transport(M.ref(spec, c.cfg, ns, name, rc().head_service(ready)), c)
    -- the pods never see this host's files: the worker runtime goes as a
    -- package unless the spec says the image has it (ship_host = false)
    local ray_spec = { type = "ray", address = transport.address, env = nil, token_env = spec.token_env,
                       token_file = spec.token_file, transport = transport, ship_host = spec.ship_host ~= false,
                       remote_nodes = "KubeRay's pods" }
    -- the dashboard answers 503 through the proxy until it is up
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

-- M.attach(handoff, scope) -> Runner on the cluster provision() made: the
-- kubeconfig of the handoff's reference is loaded again here
function M.attach(h, scope)
  if type(h) ~= "table" or type(h.ray) ~= "table" or type(h.ray.kube) ~= "table" then
    errors.throw("invalid_argument", "kuberay handoff: no ray handoff with a Kubernetes reference")
  end
  local transport = M.proxy_transport(h.ray.kube)
  local ttl = math.tointeger(h.ttl)
  return setmetatable({ ray = ray.attach(h.ray, scope, { transport = transport }), ns = h.namespace,
                        name = h.raycluster, server = h.server, kc = transport.client,
                        ttl = ttl and ttl > 0 and ttl or nil, next_renew = 0 }, Attached)
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
  local ok, c
  if info.kubeconfig == nil and info.files == nil and info.in_cluster == nil then
    ok, c = pcall(client_for, nil, info.namespace)      -- a lease written before references
  else
    ok, c = pcall(M.client_from_ref, info)
  end
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

-- The owner annotation "host/boot_id/pid/start_time" -> "alive" | "dead" |
-- "other-host" | "unknown" (unreadable), as geneva.context.reap judges a
-- lease's owner: only a process of this host (and this boot) can be
-- looked at.
local function owner_state(text)
  if type(text) ~= "string" then return "unknown" end
  local host, boot, pid, start = text:match("^([^/]+)/([^/]*)/(%d+)/(%d+)$")
  pid, start = math.tointeger(tonumber(pid)), math.tointeger(tonumber(start))
  if not host or not pid or not start or pid <= 1 then return "unknown" end
  return ledger.owner_state { hostname = host, boot_id = boot, pid = pid, start_time = start }
end

--[[
M.list_labelled(spec [, now]) -> array of {namespace, name, owner,
owner_state, lease, expires (epoch | nil), expired (bool), reap (nil |
why it would be deleted)}: our RayClusters (label
app.kubernetes.io/managed-by=geneva) in the spec's namespace. A cluster is
to be reaped when its owner was a process of this host that is gone, or,
when its owner is elsewhere (or unreadable), once its expires-at has
passed; a live owner of this host keeps its cluster whatever the time.
]]
function M.list_labelled(spec, now)
  now = now or os.time()
  local c = client_for(spec.kubeconfig, spec.namespace)
  local ns = c.cfg.namespace
  local out = {}
  for _, o in ipairs(c:list(kube().RAYCLUSTERS, ns, { label_selector = rc().MANAGED_SELECTOR })) do
    local md = type(o.metadata) == "table" and o.metadata or {}
    local ann = type(md.annotations) == "table" and md.annotations or {}
    if type(md.name) == "string" then
      local expires = type(ann[rc().ANN_EXPIRES]) == "string" and time.parse_iso8601(ann[rc().ANN_EXPIRES]) or nil
      local e = { namespace = ns, name = md.name, owner = type(ann[rc().ANN_OWNER]) == "string" and clean(ann[rc().ANN_OWNER], 200) or nil,
                  owner_state = owner_state(ann[rc().ANN_OWNER]),
                  lease = type(ann[rc().ANN_LEASE]) == "string" and clean(ann[rc().ANN_LEASE], 100) or nil,
                  expires = expires, expired = expires ~= nil and expires < now }
      if e.owner_state == "dead" then
        e.reap = "its owner, a process of this host, is gone"
      elseif e.owner_state ~= "alive" and e.expired then
        e.reap = "past its TTL"
      end
      out[#out + 1] = e
    end
  end
  return out, c
end

--[[
M.reap_expired(spec [, now]) -> {deleted = {names}, kept = n, failed = {msgs}}
Our RayClusters in the spec's namespace that M.list_labelled says to reap:
deleted, whether or not a lease names them (a lease file can be lost with
a machine). deleted holds "ns/name (why)".
]]
function M.reap_expired(spec, now)
  local list, c = M.list_labelled(spec, now)
  local out = { deleted = {}, kept = 0, failed = {} }
  for _, e in ipairs(list) do
    if e.reap then
      local ok, why = delete_and_confirm(c, e.namespace, e.name)
      if ok then out.deleted[#out.deleted + 1] = ("%s/%s (%s)"):format(e.namespace, e.name, e.reap)
      else out.failed[#out.failed + 1] = ("%s/%s: %s"):format(e.namespace, e.name, why) end
    else
      out.kept = out.kept + 1
    end
  end
  return out
end

-- }======

return M
