-- geneva.runner: the one interface between what plans work (contexts, the
-- backfill driver) and what runs it (a cluster type). Contexts and drivers
-- reach runners only through this module; a new cluster type is a module
-- `geneva.runner.<type>` and a line in `runner.types`.
--
-- A runner module implements:
--   M.provision(spec, env) -> Runner     at context enter (or for the
--       embedded default). spec: a validated cluster spec; env = {scope =
--       the ledger scope that owns everything it creates, db = Db | nil,
--       manifest = manifest record | nil}. Raises; whatever it created
--       before raising is owned by env.scope and goes with it.
--   M.attach(handoff, scope) -> Runner   in another process (a background
--       job's driver): a runner on what provision() made, from
--       runner:handoff(). Owned by scope.
-- A Runner implements:
--   r:submit(task)            queue a task: a table with a unique .id and
--                             .job (the job id it belongs to)
--   r:poll(timeout) -> events dispatch, wait up to timeout s, return
--       {kind="done", task=, result=} | {kind="failed", task=, error=}
--       | {kind="log", line=, job=}
--       | {kind="progress", task=, rows=} (optional: rows done so far
--         within a running task, for progress bars only)
--   r:cancel(job_id)          drop the job's queued tasks, stop its running
--                             ones (other jobs' tasks are untouched)
--   r:describe() -> table     plain and secret-free: {type=, workers=, ...}
--                             (job records, `geneva jobs`, logs)
--   r:handoff() -> table      what attach() needs; may hold resolved
--                             secrets, so it travels over a pipe, never to disk
--   r:close()                 tear down all it made (idempotent)
--   r:drain(job_id) -> events optional: log events still on their way
--                             (pulled now), before the driver ends the job
--   r:job_done(job_id)        optional: the driver says the job has ended
--                             (its workers may go)
local errors = require "geneva.errors"
local ledger = require "geneva.ledger"

local runner = {}

-- cluster type -> module
runner.types = {
  ["local"] = "geneva.runner.local",
  ray = "geneva.runner.ray",
  kuberay = "geneva.runner.kuberay",
}

local function module_of(kind)
  local name = runner.types[kind]
  if not name then
    errors.throw("unavailable", ("clusters of type '%s' are not available in this build yet"):format(tostring(kind)))
  end
  return require(name)
end

-- runner.provision(spec, env) -> Runner (see above)
function runner.provision(spec, env)
  return module_of(spec.type).provision(spec, env)
end

-- runner.attach(handoff, scope) -> Runner
function runner.attach(handoff, scope)
  if type(handoff) ~= "table" then errors.throw("invalid_argument", "runner.attach: expected a handoff table") end
  return module_of(handoff.type).attach(handoff, scope)
end

-- runner.worker_exe() -> the program started as workers and background
-- drivers: a `geneva`, never a copy of an embedding application. The host
-- resolves it (host/worker_exe.c); raises unavailable, saying
-- how to set it, when there is none.
function runner.worker_exe()
  local exe, err = require("geneva.host.core").worker_exe()
  if not exe then errors.throw("unavailable", "cannot start workers: " .. err) end
  return exe
end

-- {====== Which runner a backfill uses

-- Contexts push a frame when entered and pop it when they exit; a backfill
-- runs on the innermost frame's runner and is listed in its jobs (a context
-- waits for them at exit). Outside any context: the embedded default.
local frames = {}

-- runner.push(r) -> frame {runner = r, jobs = {}}
function runner.push(r)
  local f = { runner = r, jobs = {} }
  frames[#frames + 1] = f
  return f
end

-- runner.pop(frame): removes it wherever it is (contexts may exit out of order)
function runner.pop(frame)
  for i = #frames, 1, -1 do
    if frames[i] == frame then table.remove(frames, i) return end
  end
end

local default

-- runner.default() -> the embedded local cluster (workers = cores), owned
-- by the host (a scope under the root); workers start on first use and are
-- reused. Leased like any other resource, in this user's journal, so
-- `geneva reap` finds what a kill -9 left.
function runner.default()
  if not default or default.closed then
    local journal = ledger.user_journal()
    local scope = ledger.scope{ name = "embedded local cluster", parent = ledger.root(),
                                journal = journal and { journal } }
    local cpus = require("geneva.context.cluster").default_local_workers()
    default = runner.provision({ type = "local", workers = cpus }, { scope = scope, lazy = true })
  end
  return default
end

-- runner.current() -> Runner, frame|nil
function runner.current()
  local f = frames[#frames]
  if f and not f.runner.closed then return f.runner, f end
  return runner.default(), nil
end

-- }======

return runner
