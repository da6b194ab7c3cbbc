-- geneva.backfill.queue: backfill tasks through the job's own area in the
-- database, for workers that may not reach the driver (Ray workers on other
-- nodes): the driver publishes tasks there, workers claim them, heartbeat
-- and report there, and the driver collects the results.
--
--   <db>/_geneva/jobs/<job>/queue/
--     tasks/<key>.<attempt>.json    a task open for claims (the driver's)
--     claims/<key>.<attempt>.json   a worker's claim, published with link():
--                                   of racing workers exactly one wins
--     results/<key>.<attempt>.json  its outcome, shaped as the stdio
--                                   protocol's done/failed messages
--     workers/<id>.beat             touched every BEAT s by each worker
--     workers/<id>.progress         "<task file name> <rows done>" while a
--                                   task runs (progress bars); in an object
--                                   store it rides in the beat object instead
--     stop                          the driver's stop marker
--
-- <key> is the task's index within its job, <attempt> counts from 1. A task
-- is retried by publishing it again under attempt + 1 (its old task and
-- claim files removed) when its worker's heartbeat has not moved for `stale`
-- seconds of the driver's clock (so clock skew between hosts does not
-- matter), or when the runner knows the worker died (requeue_worker), up
-- to max_attempts in all. A late result of an earlier attempt is accepted
-- as long as the task has none yet: every published task ends in exactly
-- one done or failed event.
--
-- Workers (`geneva worker --queue DB JOB [--slot N] [--id ID]`, M.work) run
-- tasks until the job is final or the stop marker exists, then exit 0.
--
-- Everything read from the queue is untrusted (whoever can write the db can
-- write there): a worker takes from a task file only the window to compute
-- (fragment, lo, hi, version, column) and checks it; the table, the UDF and
-- `where` come from the job record and the table's own snapshot, as the
-- driver takes them. The driver checks a result's shape, its counts against
-- the task's window and that the staged file is the task's own path before
-- using any of it.
--
-- The queue lives wherever the database does (geneva.store.backend): in an
-- object store claims and results are conditional PUTs, heartbeats are
-- rewritten objects (a beat is a change of content), and both sides look
-- less often (REMOTE_POLL) to keep requests per task low.
local fs = require "geneva.fs"
local backend = require "geneva.store.backend"
local json = require "geneva.json"
local errors = require "geneva.errors"
local time = require "geneva.time"

local queue = {}

queue.BEAT = 1              -- seconds between a worker's heartbeats
queue.STALE = 10            -- seconds without a heartbeat before a claim is stale
queue.MAX_ATTEMPTS = 3      -- runs of one task in all
queue.JOB_CHECK = 0.5       -- seconds between an idle worker's looks at the job record
local MAX_FILE = 4 * 1024 * 1024   -- a queue file larger than this is refused
local MAX_IDLE_SLEEP = 0.2
local REMOTE_POLL = 0.25    -- seconds between a driver's looks at a queue in an object store
local REMOTE_IDLE_SLEEP = 1.0

local function valid_job_id(id)
  return type(id) == "string" and #id <= 128 and id:match("^[%w%-_]+$") ~= nil
end

local function valid_worker_id(id)
  return type(id) == "string" and #id >= 1 and #id <= 128 and id:match("^[%w%-_.]+$") ~= nil
    and id:sub(1, 1) ~= "."
end
queue.valid_worker_id = valid_worker_id

-- queue.dir(db_dir, job_id) -> the job's queue directory
function queue.dir(db_dir, job_id)
  return ("%s/_geneva/jobs/%s/queue"):format(db_dir, job_id)
end

-- "<key>.<attempt>.json" -> key, attempt (integers) | nil
local function parse_name(name)
  local k, a = name:match("^(%d+)%.(%d+)%.json$")
  if not k or #k > 12 or #a > 6 then return nil end
  return math.tointeger(tonumber(k)), math.tointeger(tonumber(a))
end
queue.parse_name = parse_name

local function is_int(v) return math.type(v) == "integer" end

local function read_json(path)
  local text, err, code = backend.get(path, { max = MAX_FILE })
  if not text then return nil, err, code end
  local ok, v = pcall(json.decode, text, { null_as_nil = true })
  if not ok or type(v) ~= "table" then return nil, "not a JSON object" end
  return v
end

-- Publishes data at path only if nothing is there: a complete temp file
-- (not synced: a lost claim or result only means the task runs again)
-- linked into place. -> true | nil, msg, code ("EEXIST": someone was first)
local function publish_exclusive(path, data)
  if backend.is_remote(path) then return backend.put_if_absent(path, data) end
  local tmp = ("%s/.%s.%s.tmp"):format(path:match("^(.*)/"), path:match("([^/]*)$"), fs.random_hex(12))
  local ok, err, code = fs.write(tmp, data)
  if not ok then os.remove(tmp) return nil, err, code end
  ok, err, code = fs.link(tmp, path)
  os.remove(tmp)
  return ok, err, code
end

-- {====== The driver's side: the Dispatcher

local Dispatcher = {}
Dispatcher.__index = Dispatcher
Dispatcher.__name = "geneva.backfill.queue.Dispatcher"

--[[
queue.dispatcher(db_dir, job_id [, {max_attempts=3, stale=STALE}]) -> Dispatcher
Creates the job's queue directory. d:publish(task), d:poll([events]) ->
events, d:requeue_worker(id, why [, events]), d:cancel(), d:stop(),
d:open() -> tasks without an outcome, d:remove().
]]
function queue.dispatcher(db_dir, job_id, opts)
  opts = opts or {}
  if not valid_job_id(job_id) then errors.throw("invalid_argument", ("bad job id '%s'"):format(tostring(job_id))) end
  local dir = queue.dir(db_dir, job_id)
  for _, sub in ipairs({ "tasks", "claims", "results", "workers" }) do
    errors.io(fs.mkdir_p(dir .. "/" .. sub))
  end
  backend.delete(dir .. "/stop")
  return setmetatable({
    dir = dir, job = job_id, db_dir = db_dir, remote = backend.is_remote(dir), polled_at = 0,
    max_attempts = opts.max_attempts or queue.MAX_ATTEMPTS, stale = opts.stale or queue.STALE,
    entries = {}, by_name = {}, nopen = 0, beats = {}, checked_at = 0,
  }, Dispatcher)
end

local function key_of(self, task)
  local id = task.id
  local prefix = self.job .. "/"
  if type(id) == "string" and id:sub(1, #prefix) == prefix then
    local k = id:sub(#prefix + 1)
    if k:match("^%d+$") and #k <= 12 then return math.tointeger(tonumber(k)) end
  end
  errors.throw("invalid_argument", ("queue: task id '%s' is not '%s/<n>'"):format(tostring(id), self.job))
end

local function write_task(self, e)
  e.name = ("%d.%d.json"):format(e.key, e.attempt)
  e.state, e.worker, e.claimed_at = "queued", nil, nil
  local body = json.encode({ attempt = e.attempt, task = e.task })
  errors.io(backend.put(self.dir .. "/tasks/" .. e.name, body, { fsync = false }))
  self.by_name[e.name] = e
end

-- d:publish(task): task has .id = "<job>/<n>" (as the driver makes them)
function Dispatcher:publish(task)
  if self.cancelled then errors.throw("cancelled", "queue: job " .. self.job .. " was cancelled") end
  local key = key_of(self, task)
  local e = self.entries[key]
  if e and not e.done then errors.throw("invalid_argument", ("queue: task %s is already queued"):format(task.id)) end
  e = { key = key, task = task, attempt = (task.attempts or 0) + 1, done = false }
  self.entries[key] = e
  self.nopen = self.nopen + 1
  write_task(self, e)
end

-- d:open() -> the number of published tasks without an outcome yet
function Dispatcher:open() return self.nopen end

local function settle(self, e)
  e.done = true
  self.nopen = self.nopen - 1
  if e.name then
    backend.delete(self.dir .. "/tasks/" .. e.name)
    backend.delete(self.dir .. "/claims/" .. e.name)
    self.by_name[e.name] = nil
  end
end

local function log(self, events, line)
  events[#events + 1] = { kind = "log", job = self.job, line = line }
end

-- The task runs again under attempt + 1, or fails after max_attempts.
local function requeue(self, e, why, events)
  backend.delete(self.dir .. "/tasks/" .. e.name)
  backend.delete(self.dir .. "/claims/" .. e.name)
  self.by_name[e.name] = nil
  if e.attempt >= self.max_attempts then
    settle(self, e)
    events[#events + 1] = { kind = "failed", task = e.task, error = errors.new("internal",
      ("task %s failed %d times: the last time %s"):format(e.task.id, e.attempt, why)) }
    return
  end
  e.attempt = e.attempt + 1
  e.task.attempts = e.attempt - 1
  if self.cancelled then return end
  if e.rows then   -- the rows it reported start again
    e.rows = nil
    events[#events + 1] = { kind = "progress", task = e.task, rows = 0 }
  end
  write_task(self, e)
  log(self, events, ("retrying task %s (attempt %d): %s"):format(e.task.id, e.attempt, why))
end

-- Error tables from a result file: known codes, string messages, a few
-- scalar fields, nothing else.
local ERROR_FIELDS = { rowid = "integer", fragment = "integer", column = "string", timeout = "number",
                       path = "string", job_id = "string" }
local function clean_error(v, default)
  if type(v) ~= "table" then return errors.new(default, "a worker reported a failure without an error") end
  local code = errors.codes[v.code] and v.code or default
  local msg = type(v.message) == "string" and v.message or "(no message)"
  if #msg > 8000 then msg = msg:sub(1, 8000) .. "..." end
  local fields = {}
  for k, t in pairs(ERROR_FIELDS) do
    local x = v[k]
    if (t == "integer" and is_int(x)) or (t ~= "integer" and type(x) == t) then fields[k] = x end
  end
  return errors.new(code, msg, fields)
end

-- The staged output a worker may report for task t (backfill.worker's path)
local function staged_path(t)
  return require("geneva.backfill.worker").staged_path(t.table_dir, t.column, t.udf.version,
                                                        t.fragment, t.lo, t.hi)
end

-- A result file's message -> the event | nil, why
local function check_result(e, msg)
  local t = e.task
  if msg.task ~= t.id then return nil, "it names another task" end
  if msg.op == "failed" then
    return { kind = "failed", task = t, error = clean_error(msg.error, "udf_error") }
  elseif msg.op ~= "done" then
    return nil, "op is neither done nor failed"
  end
  local width = t.hi - t.lo + 1
  if not is_int(msg.computed) or not is_int(msg.failed) or msg.computed < 0 or msg.failed < 0
     or msg.computed + msg.failed > width then
    return nil, "its row counts do not fit the task's window"
  end
  -- compared from the table on: an object store's mirror is at another
  -- path on each machine; the driver then uses its own path of the file
  local own = staged_path(t)
  local tail = own:sub(#t.table_dir + 1)
  if msg.staged ~= nil and (type(msg.staged) ~= "string" or msg.staged:sub(-#tail) ~= tail) then
    return nil, "its staged file is not the task's output path"
  end
  if msg.staged == nil and msg.computed + msg.failed > 0 then
    return nil, "rows were computed but no staged file is named"
  end
  local res = { op = "done", task = t.id, computed = msg.computed, failed = msg.failed,
                staged = msg.staged and own, errors = {} }
  if msg.errors ~= nil then
    if type(msg.errors) ~= "table" then return nil, "errors is not a list" end
    for i = 1, math.min(#msg.errors, 20) do res.errors[i] = clean_error(msg.errors[i], "udf_error") end
  end
  if msg.failed_rowids ~= nil then
    if type(msg.failed_rowids) ~= "table" or #msg.failed_rowids > msg.failed then
      return nil, "failed_rowids is not a list of at most `failed` rowids"
    end
    local ids = {}
    for i, r in ipairs(msg.failed_rowids) do
      if not is_int(r) or r < t.lo or r > t.hi then return nil, "failed_rowids holds a rowid outside the window" end
      ids[i] = r
    end
    res.failed_rowids = ids
  end
  return { kind = "done", task = t, result = res }
end

local function collect_results(self, events)
  local dir = self.dir .. "/results/"
  for _, name in ipairs(backend.list(dir) or {}) do
    local key, attempt = parse_name(name)
    if key then
      local e = self.entries[key]
      if e and not e.done and attempt <= e.attempt then
        local msg, why = read_json(dir .. name)
        local ev
        if msg then ev, why = check_result(e, msg) end
        if ev then
          settle(self, e)
          events[#events + 1] = ev
        else
          log(self, events, ("task %s: a bad result file (%s) is ignored"):format(e.task.id, tostring(why)))
          if attempt == e.attempt then requeue(self, e, "its result was unusable", events) end
        end
      end
      backend.delete(dir .. name)
    end
  end
end

local function scan_claims(self)
  local dir = self.dir .. "/claims/"
  for _, name in ipairs(backend.list(dir) or {}) do
    local e = self.by_name[name]
    if e and not e.done and e.state == "queued" then
      local c = read_json(dir .. name)
      e.state = "claimed"
      e.claimed_at = time.monotonic()
      e.worker = c and valid_worker_id(c.worker) and c.worker or "?"
      e.slot = c and is_int(c.slot) and c.slot or nil
    end
  end
end

-- The driver's monotonic time at which worker id's beat file last changed
-- (first seen counts as a change: staleness is measured on our clock).
local function last_beat(self, id, now)
  local b = self.beats[id]
  local path = self.dir .. "/workers/" .. id .. ".beat"
  local mark = false
  if valid_worker_id(id) then
    if self.remote then
      mark = backend.get(path) or false
    else
      local st = fs.stat(path)
      mark = st and st.mtime_ns or false
    end
  end
  if not b then
    b = { mark = mark, seen = now }
    self.beats[id] = b
  elseif b.mark ~= mark then
    b.mark, b.seen = mark, now
  end
  return b.seen
end

-- The rows worker id reports done in the task file `name` | nil. Read
-- from its progress file, or in an object store from the beat object's
-- second line (last_beat read it): "<task file name> <rows>", untrusted.
local function reported_rows(self, id, name)
  local text
  if self.remote then
    local b = self.beats[id]
    text = b and type(b.mark) == "string" and b.mark:match("\n([^\n]*)$")
  elseif valid_worker_id(id) then
    local f = io.open(self.dir .. "/workers/" .. id .. ".progress")
    text = f and f:read(64)
    if f then f:close() end
  end
  local n, rows = (text or ""):match("^(%S+) (%d+)$")
  if n ~= name or #rows > 12 then return nil end
  return math.tointeger(tonumber(rows))
end

local function check_stale(self, events)
  local now = time.monotonic()
  if now - self.checked_at < 0.25 then return end
  self.checked_at = now
  for _, e in pairs(self.entries) do
    if not e.done and e.state == "claimed" then
      local seen = math.max(last_beat(self, e.worker, now), e.claimed_at)
      local rows = reported_rows(self, e.worker, e.name)
      if now - seen > self.stale then
        requeue(self, e, ("worker %s sent no heartbeat for %.0fs"):format(e.worker, now - seen), events)
      elseif rows and rows ~= e.rows and rows <= e.task.hi - e.task.lo + 1 then
        e.rows = rows
        events[#events + 1] = { kind = "progress", task = e.task, rows = rows }
      end
    end
  end
end

-- d:poll([events]) -> events: results that arrived ({kind="done", task=,
-- result=} | {kind="failed", task=, error=}), tasks retried or given up
-- after stale heartbeats ({kind="log"...} | failed)
function Dispatcher:poll(events)
  events = events or {}
  if self.cancelled then return events end
  if self.remote then
    local now = time.monotonic()
    if now - self.polled_at < REMOTE_POLL then return events end
    self.polled_at = now
  end
  collect_results(self, events)
  scan_claims(self)
  check_stale(self, events)
  return events
end

-- d:requeue_worker(id, why [, events]) -> events: the tasks worker id holds
-- run again (the runner knows it is gone: its Ray job ended).
function Dispatcher:requeue_worker(id, why, events)
  events = events or {}
  if self.cancelled then return events end
  if self.remote then
    local now = time.monotonic()
    if now - self.polled_at < REMOTE_POLL then return events end
    self.polled_at = now
  end
  collect_results(self, events)      -- what it finished before it went counts
  scan_claims(self)
  for _, e in pairs(self.entries) do
    if not e.done and e.state == "claimed" and e.worker == id then
      requeue(self, e, ("worker %s %s"):format(id, why), events)
    end
  end
  return events
end

-- d:claims() -> {worker id -> number of tasks it holds}
function Dispatcher:claims()
  scan_claims(self)
  local out = {}
  for _, e in pairs(self.entries) do
    if not e.done and e.state == "claimed" then out[e.worker] = (out[e.worker] or 0) + 1 end
  end
  return out
end

-- d:fail_open(err [, events]) -> events: every task without an outcome
-- fails with err (nothing can run them any more)
function Dispatcher:fail_open(err, events)
  events = events or {}
  for _, e in pairs(self.entries) do
    if not e.done then
      settle(self, e)
      events[#events + 1] = { kind = "failed", task = e.task, error = err }
    end
  end
  return events
end

-- d:stop(): the stop marker; workers exit once idle
function Dispatcher:stop()
  if self.remote or fs.exists(self.dir) then backend.put(self.dir .. "/stop", time.iso8601(), { fsync = false }) end
end

-- d:cancel(): stop marker, open tasks withdrawn, no more events
function Dispatcher:cancel()
  self.cancelled = true
  self:stop()
  for _, e in pairs(self.entries) do
    if not e.done then settle(self, e) end
  end
end

-- d:remove(): the queue directory goes (once its workers are gone)
function Dispatcher:remove()
  backend.delete_tree(self.dir)
  fs.remove(self.dir:match("^(.*)/queue$"))    -- the job's dir, when empty
end

-- }======

-- {====== The worker's side

local function say(id, fmt, ...)
  io.stderr:write(("geneva worker %s: " .. fmt .. "\n"):format(id, ...))
  io.stderr:flush()
end

local function bad_task(why) return nil, "a bad task file (" .. why .. ")" end

-- The task to run from a task file's contents: the window from the file
-- (checked), everything else from the job record and the table's snapshot.
local function trusted_task(ctx, name, doc)
  local key, attempt = parse_name(name)
  if type(doc) ~= "table" or doc.attempt ~= attempt then return bad_task("attempt does not match its name") end
  local t = doc.task
  if type(t) ~= "table" then return bad_task("no task") end
  if t.id ~= ctx.job .. "/" .. key or t.job ~= ctx.job then return bad_task("id or job does not match") end
  for _, f in ipairs({ "version", "fragment", "lo", "hi" }) do
    if not is_int(t[f]) or t[f] < 1 then return bad_task(f .. " is not a positive integer") end
  end
  if t.hi < t.lo or t.hi - t.lo >= 1 << 40 then return bad_task("empty or huge window") end
  if type(t.column) ~= "string" or t.column ~= ctx.rec.column then return bad_task("not the job's column") end
  if t.where ~= ctx.rec.options.where then return bad_task("where is not the job's") end
  local snapshot = ctx.state:snapshot(ctx.table_dir, t.version)
  local col = require("geneva.store.reader").find_column(snapshot, t.column)
  if not col or not col.udf or not col.udf_version then
    return bad_task(("column '%s' has no UDF at version %d"):format(t.column, t.version))
  end
  if type(t.udf) ~= "table" or t.udf.version ~= col.udf_version then
    return bad_task("its UDF is not the column's at that version")
  end
  local spec = {}
  for k, v in pairs(col.udf) do spec[k] = v end
  spec.version = col.udf_version
  local out = { id = t.id, job = ctx.job, table_dir = ctx.table_dir, version = t.version,
                fragment = t.fragment, lo = t.lo, hi = t.hi, rows = is_int(t.rows) and t.rows or nil,
                column = t.column, udf = spec, where = ctx.rec.options.where }
  if t.timed_out ~= nil then
    if type(t.timed_out) ~= "table" or #t.timed_out > 1000 then return bad_task("timed_out is not a list") end
    out.timed_out = {}
    for i, r in ipairs(t.timed_out) do
      if not is_int(r) or r < t.lo or r > t.hi then return bad_task("timed_out holds a bad rowid") end
      out.timed_out[i] = r
    end
  end
  return out
end

-- The claim: ours if the link succeeds. -> true | false (lost) | nil, err
local function claim(ctx, name)
  local body = json.encode({ worker = ctx.id, slot = ctx.slot, pid = ctx.pid, host = ctx.host,
                             at = time.iso8601() })
  local ok, err, code = publish_exclusive(ctx.dir .. "/claims/" .. name, body)
  if ok then return true end
  if code == "EEXIST" then return false end
  return nil, err
end

local function write_result(ctx, name, msg)
  local ok, err, code = publish_exclusive(ctx.dir .. "/results/" .. name, json.encode(msg))
  if not ok and code ~= "EEXIST" then
    errors.throw("unavailable", ("cannot write the result of task %s: %s"):format(msg.task, tostring(err)))
  end
end

-- Runs the claimed task `name`. Returns normally after writing its result
-- (done or failed); raises on an interrupt (the claim stays: the driver
-- retries the task elsewhere).
local function run_claimed(ctx, name)
  local worker = require "geneva.backfill.worker"
  local doc = read_json(ctx.dir .. "/tasks/" .. name)
  if not doc then
    -- withdrawn meanwhile (a retry under another attempt, a cancel)
    os.remove(ctx.dir .. "/claims/" .. name)
    return
  end
  local key = parse_name(name)
  local okt, task, why = pcall(trusted_task, ctx, name, doc)
  if not okt then task, why = nil, tostring(errors.from(task)) end
  if not task then
    say(ctx.id, "task file %s refused: %s", name, why)
    write_result(ctx, name, { op = "failed", task = ctx.job .. "/" .. key,
      error = errors.plain(errors.new("internal", ("worker %s refused task file %s: %s"):format(ctx.id, name, why))) })
    return
  end
  local t0 = time.monotonic()
  local ok, res = pcall(worker.run_task, ctx.state, task, function(rows)
    fs.write_atomic(ctx.progress, ("%s %d"):format(name, rows), { fsync = false })   -- lost: only the bar stills
  end)
  os.remove(ctx.progress)
  if ok then
    res.op, res.task = "done", task.id
    write_result(ctx, name, res)
    say(ctx.id, "task %s: %d rows in %.2fs", task.id, res.computed + res.failed, time.monotonic() - t0)
  else
    local e = errors.from(res, "udf_error")
    if e.code == "interrupted" then error(e, 0) end
    write_result(ctx, name, { op = "failed", task = task.id, error = errors.plain(e) })
    say(ctx.id, "task %s failed: %s", task.id, tostring(e))
  end
end

-- Tries the open tasks, from a per-worker offset so racing workers start
-- apart. -> true when it ran one
local function take_one(ctx)
  local names = backend.list(ctx.dir .. "/tasks") or {}
  if #names == 0 then return false end
  local claimed = {}
  for _, n in ipairs(backend.list(ctx.dir .. "/claims") or {}) do claimed[n] = true end
  local n = #names
  local start = (ctx.slot or 0) % n
  for i = 0, n - 1 do
    local name = names[(start + i) % n + 1]
    if not claimed[name] and parse_name(name) then
      local won, err = claim(ctx, name)
      if won == nil then errors.throw("unavailable", "cannot claim a task: " .. tostring(err)) end
      if won then
        run_claimed(ctx, name)
        return true
      end
    end
  end
  return false
end

-- A child process that touches the beat file every BEAT seconds while this
-- worker lives (PR_SET_PDEATHSIG ends it with us), so a worker busy in a
-- long UDF call still beats. In an object store the child is a geneva that
-- rewrites the beat object with a counter.
local BEAT_REMOTE = [[
local store = require("geneva.json").decode(os.getenv("GENEVA_BEAT_STORE"))
local path, every = os.getenv("GENEVA_BEAT_PATH"), tonumber(os.getenv("GENEVA_BEAT_EVERY"))
local progress = os.getenv("GENEVA_BEAT_PROGRESS")
require("geneva.backfill.worker").mount(store)
local backend, time = require "geneva.store.backend", require "geneva.time"
local n = 0
repeat
  n = n + 1
  local f = io.open(progress)
  local p = f and f:read("l")
  if f then f:close() end
  backend.put(path, tostring(n) .. (p and "\n" .. p or ""), { fsync = false })
until not time.sleep(every)
]]

local function start_heartbeat(ctx)
  local path = ("%s/workers/%s.beat"):format(ctx.dir, ctx.id)
  local argv, env
  if ctx.store then
    argv = { require("geneva.proc").exe(), "-e", BEAT_REMOTE }
    env = { GENEVA_BEAT_STORE = json.encode(ctx.store), GENEVA_BEAT_PATH = path,
            GENEVA_BEAT_EVERY = tostring(queue.BEAT), GENEVA_BEAT_PROGRESS = ctx.progress }
  else
    fs.write(path, tostring(ctx.pid))
    argv = { "/bin/sh", "-c", 'while touch -- "$1"; do sleep "$2"; done', "geneva-beat", path, tostring(queue.BEAT) }
  end
  local p, err = require("geneva.proc").spawn{
    argv = argv, env_add = env, stdin = "null", stdout = "null", stderr = "null", new_group = false }
  if not p then say(ctx.id, "no heartbeat (%s): its tasks may be retried elsewhere", tostring(err)) end
  return p
end

--[[
queue.work(db, job_id [, {slot = n, id = worker id, store = }]) -> exit code
The worker's loop (`geneva worker --queue`): claim, run and report tasks
until the job's record is final or the stop marker exists, then 0. db is
a directory, or an s3:// URI with store = the database's store description
(geneva.store.backend.s3.mount). A database or job it cannot find raises
unavailable, saying the database must be reachable at the same path (or
URI) from this node.
]]
function queue.work(db_dir, job_id, opts)
  opts = opts or {}
  local job = require "geneva.backfill.job"
  local proc = require "geneva.proc"
  if not valid_job_id(job_id) then errors.throw("invalid_argument", ("bad job id '%s'"):format(tostring(job_id))) end
  local me = proc.self()
  local id = opts.id or ("%s-%d"):format(me.hostname:gsub("[^%w%-_.]", "_"), me.pid)
  if not valid_worker_id(id) then errors.throw("invalid_argument", ("bad worker id '%s'"):format(tostring(id))) end
  local real
  local store = opts.store
  if store then
    if type(store) ~= "table" or store.uri ~= db_dir then
      errors.throw("invalid_argument", ("worker: the store description is not that of %s"):format(db_dir))
    end
    real = require("geneva.backfill.worker").mount(store)
  else
    real = fs.realpath(db_dir)
  end
  if not real or not (store or fs.exists(real .. "/_geneva")) then
    errors.throw("unavailable", ("database %s is not reachable from this node (%s): a local database path needs a file system shared at the same path with every worker node")
      :format(db_dir, me.hostname))
  end
  local rec, lerr = job.load(real, job_id)
  if not rec then
    errors.throw("unavailable", ("job %s is not in database %s as seen from this node (%s): %s")
      :format(job_id, db_dir, me.hostname, tostring(lerr)))
  end
  if type(rec.table) ~= "string" or not rec.table:match("^[%a_][%w_%-]*$") or rec.table:sub(1, 1) == "_"
     or type(rec.column) ~= "string" or type(rec.options) ~= "table" then
    errors.throw("internal", ("the record of job %s is malformed"):format(job_id))
  end
  local ctx = { job = job_id, id = id, slot = math.tointeger(opts.slot), pid = me.pid, host = me.hostname,
                dir = queue.dir(real, job_id), rec = rec, table_dir = real .. "/" .. rec.table, store = store,
                state = require("geneva.backfill.worker").state() }
  -- a local file in both cases: in an object store the mirror's copy, which
  -- the beat process uploads inside the beat object
  ctx.progress = ("%s/workers/%s.progress"):format(ctx.dir, id)
  if store then fs.mkdir_p(ctx.dir .. "/workers") end
  if not store and not fs.exists(ctx.dir .. "/tasks") then
    if job.FINAL[rec.status] then return 0 end
    errors.throw("unavailable", ("job %s has no task queue in %s"):format(job_id, db_dir))
  end
  local beat <close> = start_heartbeat(ctx)   -- luacheck: ignore 211 (to-be-closed)
  say(id, "serving job %s (slot %s, pid %d on %s, %s)", job_id, tostring(ctx.slot or "-"), me.pid, me.hostname,
      tostring(proc.exe()))
  local idle, checked, ran = 0.005, 0, 0
  while true do
    if backend.exists(ctx.dir .. "/stop") then break end
    if take_one(ctx) then
      ran = ran + 1
      idle = 0.005
    else
      local now = time.monotonic()
      if now - checked >= queue.JOB_CHECK then
        checked = now
        local r = job.load(real, job_id)
        if not r or job.FINAL[r.status] then break end
      end
      local ok = time.sleep(idle)
      if not ok then errors.throw("interrupted", "interrupted") end
      idle = math.min(idle * 2, store and REMOTE_IDLE_SLEEP or MAX_IDLE_SLEEP)
    end
  end
  say(id, "done: %d tasks", ran)
  return 0
end

-- }======

return queue
