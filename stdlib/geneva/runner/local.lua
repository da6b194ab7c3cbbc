-- geneva.runner.local: a pool of `geneva worker --stdio` processes on this
-- machine: what local contexts provision and the embedded default cluster.
-- It implements the runner interface of geneva.runner; besides, pool:pids()
-- lists its workers (monitoring, fault-injection tests).
--
-- Workers are processes owned by the ledger scope the pool was made in, so
-- they die with it; a worker that dies mid-task has its task retried on a
-- fresh worker, up to `max_attempts` times in all. Tasks carry .job: events
-- carry their task, and cancel(job) touches only that job's tasks.
local proc = require "geneva.proc"
local json = require "geneva.json"
local errors = require "geneva.errors"
local ledger = require "geneva.ledger"
local time = require "geneva.time"

local watchdog

local M = {}

local Pool = {}
Pool.__index = Pool
Pool.__name = "geneva.runner.local.Pool"

local protocol = require "geneva.backfill.protocol"

-- M.new{workers = n [, max_attempts = 3, scope = ledger scope, exe = path,
--        env_add = {NAME = value}, cwd = dir for the worker processes]}
function M.new(opts)
  local n = math.tointeger(opts.workers)
  local max = require("geneva.context.cluster").MAX_LOCAL_WORKERS
  if not n or n < 1 or n > max then
    errors.throw("invalid_argument", ("local cluster: workers must be an integer from 1 to %d, got %s")
      :format(max, tostring(opts.workers)))
  end
  local self = setmetatable({
    size = n, max_attempts = opts.max_attempts or 3,
    exe = opts.exe or require("geneva.runner").worker_exe(),
    scope = opts.scope or ledger.current(), env_add = opts.env_add,
    cwd = opts.cwd,
    workers = {}, queue = {}, qhead = 1, qtail = 0, running = {}, closed = false,
    spawned = 0,
  }, Pool)
  return self
end

-- A worker's lease is journalled (when the pool's scope has a journal)
-- before the process exists, then completed with its pid, so `geneva reap`
-- can kill what a kill -9 of the driver left behind.
-- A directory for the workers' heartbeat files (per-row watchdog), owned
-- and leased like the workers.
local function heartbeat_dir(self)
  if not self.hb_dir then
    local lease = self.scope:reserve("tmpdir", "worker heartbeats")
    local prev = self.scope:activate()
    local tmp = require("geneva.fs").tmpdir("geneva-hb-")
    prev:activate()
    lease:update{ path = tmp.path }
    lease:bind(function() tmp:close() end)
    self.hb_dir = tmp.path
  end
  return self.hb_dir
end

local function spawn_worker(self)
  local hb = ("%s/w%d"):format(heartbeat_dir(self), self.spawned + 1)
  local lease = self.scope:reserve("proc", "worker", { exe = self.exe })
  local prev = self.scope:activate()     -- the processes belong to the pool's scope
  -- workers resolve module UDFs as the driver does now (a recipe or script
  -- may have extended package.path), unless a manifest gave their path
  local env = { LUA_PATH = package.path, GENEVA_HEARTBEAT = hb }
  for k, v in pairs(self.env_add or {}) do env[k] = v end
  local p, err = proc.spawn{ argv = { self.exe, "worker", "--stdio" }, env_add = env,
                             cwd = self.cwd, stdin = "pipe", stdout = "pipe", stderr = "pipe" }
  prev:activate()
  if not p then
    lease:forget()
    errors.throw("unavailable", "cannot start a worker: " .. tostring(err))
  end
  local info = proc.info(p:pid())
  lease:update{ pid = p:pid(), pgid = p:pgid(), start_time = info and info.start_time }
  lease:bind(function() p:close() end)
  self.spawned = self.spawned + 1
  local w = { p = p, lease = lease, task = nil, id = self.spawned, heartbeat = hb }
  self.workers[#self.workers + 1] = w
  return w
end

-- M:start() spawns every worker now (a context does, so the first backfill
-- does not pay for it)
function Pool:start()
  while #self.workers < self.size do spawn_worker(self) end
  return self
end

function Pool:submit(task)
  assert(not self.closed, "attempt to use a closed local pool")
  task.attempts = task.attempts or 0
  self.qtail = self.qtail + 1
  self.queue[self.qtail] = task
end

function Pool:pending()
  local n = self.qtail - self.qhead + 1
  for _ in pairs(self.running) do n = n + 1 end
  return n
end

local function send(w, msg)
  local ok, err = w.p:write(json.encode(msg) .. "\n")
  return ok, err
end

local function dispatch(self)
  while self.qhead <= self.qtail do
    local idle
    for _, w in ipairs(self.workers) do
      if not w.task and not w.dead then idle = w break end
    end
    if not idle then
      if #self.workers >= self.size then return end
      idle = spawn_worker(self)
    end
    local task = self.queue[self.qhead]
    self.queue[self.qhead] = nil
    self.qhead = self.qhead + 1
    task.attempts = task.attempts + 1
    idle.task = task
    idle.started = time.monotonic()
    self.running[task.id] = idle
    if not send(idle, { op = "task", task = task }) then idle.dead = true end
  end
end

local function remove_worker(self, w)
  for i, x in ipairs(self.workers) do
    if x == w then table.remove(self.workers, i) break end
  end
  w.lease:release()   -- closes the process (kill, reap) and drops its lease
end

-- A dead worker's task goes back to the queue, or fails after max_attempts.
local function worker_died(self, w, events)
  local how, code = w.p:wait(1)
  local why = how == "signaled" and ("killed by signal %s"):format(code)
           or how == "exited" and ("exited with code %s"):format(code) or "stopped answering"
  local task = w.task
  remove_worker(self, w)
  if not task then return end
  self.running[task.id] = nil
  if task.attempts < self.max_attempts then
    events[#events + 1] = { kind = "log", job = task.job,
                            line = ("worker %d %s; retrying task %s"):format(w.id, why, task.id) }
    self:submit(task)
  else
    events[#events + 1] = { kind = "failed", task = task, error = errors.new("internal",
      ("task %s failed %d times: the last worker %s"):format(task.id, task.attempts, why)) }
  end
end

local function handle_line(self, w, line, events)
  local msg = protocol.parse(line)
  if not msg then
    events[#events + 1] = { kind = "log", line = ("[worker %d] %s"):format(w.id, line), job = w.task and w.task.job }
    return
  end
  local task = w.task
  if not task or msg.task ~= task.id then return end
  if msg.op == "progress" then
    if math.type(msg.rows) == "integer" then events[#events + 1] = { kind = "progress", task = task, rows = msg.rows } end
    return
  end
  if msg.op ~= "done" and msg.op ~= "failed" then return end
  w.task = nil
  self.running[task.id] = nil
  if msg.op == "done" then
    events[#events + 1] = { kind = "done", task = task, result = msg }
  else
    events[#events + 1] = { kind = "failed", task = task, error = errors.from(msg.error, "udf_error") }
  end
end

-- A task whose UDF has a timeout: if its worker has been on one row longer
-- than that (stuck in C code, where the in-process hook cannot reach), kill
-- the worker and retry the task with the row marked timed out, so on_error
-- decides its fate instead of a second hang. Not counted as an attempt.
local GRACE = 1.0
watchdog = function(self, events)
  local now = time.monotonic()
  for _, w in ipairs(self.workers) do
    local task = w.task
    local limit = task and task.udf and task.udf.timeout
    if limit and now - w.started > limit + GRACE then
      local f = io.open(w.heartbeat)
      local text = f and f:read("a") or ""
      if f then f:close() end
      local rowid, since = text:match("^(%d+) ([%d.]+)")
      rowid, since = math.tointeger(tonumber(rowid)), tonumber(since)
      if rowid and since >= w.started and now - since > limit + GRACE then
        task.timed_out = task.timed_out or {}
        task.timed_out[#task.timed_out + 1] = rowid
        task.attempts = task.attempts - 1
        w.task = nil
        self.running[task.id] = nil
        remove_worker(self, w)
        events[#events + 1] = { kind = "log", job = task.job,
          line = ("task %s: rowid %d ran over its %gs timeout; worker killed, row left to on_error")
            :format(task.id, rowid, limit) }
        self:submit(task)
        return watchdog(self, events)    -- self.workers changed
      end
    end
  end
end

function Pool:poll(timeout)
  local events = {}
  dispatch(self)
  local gone = {}      -- collected first: worker_died edits self.workers
  for _, w in ipairs(self.workers) do
    if w.dead then gone[#gone + 1] = w end
  end
  for _, w in ipairs(gone) do worker_died(self, w, events) end
  if #events > 0 then return events end
  local watch = {}
  for _, w in ipairs(self.workers) do
    watch[#watch + 1] = { w.p, "stdout", w = w }
    watch[#watch + 1] = { w.p, "stderr", w = w }
  end
  if #watch == 0 then return events end
  local ready, err, code = proc.poll(watch, timeout or 0)
  if not ready then errors.io(nil, "poll: " .. tostring(err), code) end
  local dead = {}
  for _, e in ipairs(ready) do
    local w, which = e.w, e[2]
    while not dead[w] do
      local line, _, rcode = w.p:read_line(which, 0)
      if line then
        if which == "stdout" then handle_line(self, w, line, events)
        else
          events[#events + 1] = { kind = "log", line = ("[worker %d] %s"):format(w.id, line), job = w.task and w.task.job }
        end
      else
        if rcode == "EOF" and which == "stdout" then dead[w] = true end
        break
      end
    end
  end
  for w in pairs(dead) do worker_died(self, w, events) end
  watchdog(self, events)
  dispatch(self)
  return events
end

-- pool:cancel([job]): queued tasks are dropped and busy workers killed
-- (fresh ones start on the next submit); with job, only that job's tasks.
function Pool:cancel(job)
  if job == nil then
    self.queue, self.qhead, self.qtail = {}, 1, 0
  else
    local q = {}
    for i = self.qhead, self.qtail do
      local t = self.queue[i]
      if t.job ~= job then q[#q + 1] = t end
    end
    self.queue, self.qhead, self.qtail = q, 1, #q
  end
  local doomed = {}
  for id, w in pairs(self.running) do
    if job == nil or w.task.job == job then doomed[id] = w end
  end
  for id, w in pairs(doomed) do
    self.running[id] = nil
    w.task = nil
    remove_worker(self, w)
  end
end

-- pool:pids([busy_only]) -> array of the pids of the live workers (those
-- running a task with busy_only). For monitoring and fault-injection tests.
function Pool:pids(busy_only)
  local out = {}
  for _, w in ipairs(self.workers) do
    if not w.dead and (w.task or not busy_only) then out[#out + 1] = w.p:pid() end
  end
  return out
end

function Pool:close()
  if self.closed then return true end
  self.closed = true
  for _, w in ipairs(self.workers) do
    if not w.task then send(w, { op = "exit" }) end
  end
  for _, w in ipairs(self.workers) do w.lease:release() end
  self.workers, self.running = {}, {}
  return true
end

Pool.__close = Pool.close

-- pool:describe() -> {type = "local", workers = n, busy = n}
function Pool:describe()
  local busy = 0
  for _ in pairs(self.running) do busy = busy + 1 end
  return { type = "local", workers = self.size, busy = busy, closed = self.closed or nil }
end

-- pool:handoff() -> what M.attach needs for a pool like this one in another
-- process (env_add may hold resolved secrets: it travels over a pipe)
function Pool:handoff()
  return { type = "local", workers = self.size, env_add = self.env_add, cwd = self.cwd }
end

-- {====== Provisioning (the runner interface)

-- A manifest's package for the workers: its modules and files' root go
-- first on their package.path, its env is set, and they run inside it
-- (unpacked by the context, which the driver's package.path uses too, else
-- here, owned by scope as every resource of the context).
local function manifest_env(scope, db, rec, dir)
  local manifest = require "geneva.context.manifest"
  dir = dir or manifest.unpack(scope, db, rec)
  local env = {}
  if rec.spec and rec.spec.env then
    for k, v in pairs(require("geneva.context.cluster").resolve_env(rec.spec.env)) do env[k] = v end
  end
  env.LUA_PATH = manifest.lua_path(dir) .. (os.getenv("LUA_PATH") or ";")
  return env, dir
end

-- M.provision(spec, {scope=, db=, manifest=, package_dir=, lazy=}) -> Pool.
-- The workers start now (so the first backfill does not wait for them)
-- unless lazy.
function M.provision(spec, env)
  local add, cwd
  if env.manifest then add, cwd = manifest_env(env.scope, env.db, env.manifest, env.package_dir) end
  if spec.env then
    add = add or {}
    for k, v in pairs(require("geneva.context.cluster").resolve_env(spec.env)) do add[k] = v end
  end
  local pool = M.new{ workers = spec.workers or require("geneva.context.cluster").default_local_workers(), scope = env.scope,
                      env_add = add, cwd = cwd }
  if not env.lazy then pool:start() end
  return pool
end

-- M.attach(handoff, scope) -> Pool: the same workers' setup in this process
-- (the manifest dir is the provisioning context's, alive while it is);
-- workers start on first use.
function M.attach(h, scope)
  return M.new{ workers = h.workers, scope = scope, env_add = h.env_add, cwd = h.cwd }
end

-- }======

return M
