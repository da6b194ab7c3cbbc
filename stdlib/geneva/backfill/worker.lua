-- geneva.backfill.worker: what a worker process does with backfill tasks.
--
-- A task is one rowid window of one fragment: the worker selects the rows of
-- the window that still need computing (geneva.store.reader.missing, matching
-- `where`), runs the UDF over them in batches, and writes
-- `_staging/<column>/<udf_version>/f<frag>-<lo>-<hi>.db` (a temp file renamed
-- into place: a staged file is complete or absent) with the rows that failed
-- under on_error = "null" in its table `failed` (store.versions, "Failed marks"). Memory stays flat: rows
-- are streamed through a prepared statement, `chunk` rows at a time.
--
-- Modes (geneva.cli.worker): `--stdio` serves tasks over JSON lines (local
-- runner); `--task FILE` runs one task and writes FILE's result next to it.
local json = require "geneva.json"
local errors = require "geneva.errors"
local types = require "geneva.store.types"
local fs = require "geneva.fs"
local time = require "geneva.time"
local storage = require "geneva.store.versions"
local where_check = require "geneva.store.where"

local worker = {}

local CHUNK = 1024          -- rows handed to the UDF executor at a time
local PROGRESS_EVERY = 0.25 -- seconds between a task's reports of rows done (stdio workers)
-- Rows per INSERT statement of the staged output: a multi-row VALUES list
-- pays SQLite's per-statement cost (bind, step, reset, VDBE setup) once per
-- BLOCK rows; it more than halves the write cost. CHUNK is a multiple.
local BLOCK = 64
local MAX_FAILED_ROWIDS = require("geneva.backfill.job").MAX_FAILED_ROWIDS

local quote = require("geneva.sqlite").quote_ident

-- worker.staged_path(tbl_dir, column, udf_version, frag, lo, hi) -> path
function worker.staged_path(tbl_dir, column, udf_version, frag, lo, hi)
  return ("%s/_staging/%s/%s/f%d-%d-%d.db"):format(tbl_dir, column, udf_version, frag, lo, hi)
end

-- State kept across tasks: loaded UDFs (by version) and their executors, so
-- a stateful UDF's setup runs once per worker, and snapshots by version.
local State = {}
State.__index = State

function worker.state()
  return setmetatable({ executors = {}, snapshots = {} }, State)
end

local function spec_key(spec, column) return column .. "\0" .. (spec.version or json.canonical(spec)) end

function State:executor(spec, column)
  local key = spec_key(spec, column)
  local ex = self.executors[key]
  if not ex then
    local udf = require "geneva.udf"
    local u = udf.from_spec(spec)
    ex = { udf = u, ex = u:executor(column) }
    self.executors[key] = ex
  end
  return ex
end

-- Manifests are cached for the tasks of a job (one pinned version); a
-- long-lived worker sees a new version per job, so the cache is bounded.
local MAX_SNAPSHOTS = 4

function State:snapshot(tbl_dir, version)
  local key = tbl_dir .. "\0" .. version
  local m = self.snapshots[key]
  if not m then
    m = require("geneva.store.versions").read(tbl_dir, version)
    self.nsnapshots = (self.nsnapshots or 0) + 1
    if self.nsnapshots > MAX_SNAPSHOTS then self.snapshots, self.nsnapshots = {}, 1 end
    self.snapshots[key] = m
  end
  return m
end

-- A staged output that cannot be written (ulimit -f, a full disk, a
-- read-only table dir) is `unavailable`, naming the file; anything else
-- SQLite says about it is a bug (internal).
local IO_CODES = { SQLITE_IOERR = true, SQLITE_FULL = true, SQLITE_CANTOPEN = true,
                   SQLITE_READONLY = true, SQLITE_PERM = true }
local function output_failed(path, err, code)
  if code == "EINTR" then errors.throw("interrupted", "interrupted") end
  local e = errors.from(err)
  local kind = (e.code == "unavailable" or IO_CODES[code] or (code and code:match("^E%u+$")))
    and "unavailable" or "internal"
  errors.throw(kind, ("cannot write staged output '%s': %s"):format(path, e.message), { path = path })
end

-- Opens the staged output file (a temp name until finish()).
local function open_output(path)
  local ok, err, code = fs.mkdir_p(path:match("^(.*)/[^/]*$"))
  if not ok then output_failed(path, err, code) end
  local tmp = path .. ".tmp-" .. require("geneva.proc").self().pid
  os.remove(tmp)
  local okd, out = pcall(storage.open_new_file, tmp)
  if not okd then
    os.remove(tmp)
    output_failed(path, out)
  end
  local function try(v, msg, c)
    if not v then
      out:close()
      os.remove(tmp)
      output_failed(path, msg, c)
    end
    return v
  end
  try(out:exec("CREATE TABLE col(_rowid INTEGER PRIMARY KEY, value)"))
  try(out:exec("BEGIN"))
  local ins = try(out:prepare("INSERT INTO col(_rowid, value) VALUES (?, ?)"))
  local many = try(out:prepare("INSERT INTO col(_rowid, value) VALUES " .. ("(?, ?), "):rep(BLOCK - 1) .. "(?, ?)"))
  return { db = out, ins = ins, many = many, buf = {}, tmp = tmp, path = path }
end

local function step_done(o, st)
  local r, err, code = st:step()
  if r ~= "done" then output_failed(o.path, err, code) end
end

-- Appends rows (rowids[i], values[i]) for i = 1..n to the output: whole
-- blocks through the multi-row statement, the rest one by one. values hold
-- what binds (geneva.null for NULL, blob wrappers).
local function write_rows(o, rowids, values, n)
  local buf, many = o.buf, o.many
  local i = 1
  while i + BLOCK - 1 <= n do
    local k = 0
    for r = i, i + BLOCK - 1 do
      buf[k + 1], buf[k + 2] = rowids[r], values[r]
      k = k + 2
    end
    many:bind_all(buf)
    step_done(o, many)
    i = i + BLOCK
  end
  for r = i, n do
    o.ins:bind_all(rowids[r], values[r])
    step_done(o, o.ins)
  end
end

-- Publishes the output (keep) with its failed marks (a table `failed` of
-- the rowids that failed under on_error = "null", only when some did), or
-- drops it; on a failure the temp file goes too, so a failed task leaves
-- nothing in _staging.
local function close_output(o, keep, failed_rowids)
  o.ins:close()
  o.many:close()
  if not keep then
    o.db:close()
    os.remove(o.tmp)
    return
  end
  local ok, err, code = true, nil, nil
  if #failed_rowids > 0 then
    ok, err, code = o.db:exec("CREATE TABLE failed(_rowid INTEGER PRIMARY KEY)")
    if ok then ok, err, code = o.db:insert_columns("INSERT INTO failed(_rowid) VALUES (?)", { failed_rowids }) end
  end
  if ok then ok, err, code = o.db:exec("COMMIT") end
  if not ok then
    o.db:close()
    os.remove(o.tmp)
    output_failed(o.path, err, code)
  end
  local fok, ferr = pcall(storage.finish_file, o.db)   -- durable before the driver may commit it
  if not fok then
    os.remove(o.tmp)
    output_failed(o.path, ferr)
  end
  ok, err, code = fs.rename(o.tmp, o.path)
  if not ok then
    os.remove(o.tmp)
    output_failed(o.path, err, code)
  end
  -- in an object store, the staged file is there for the driver (and for
  -- a resume) once uploaded
  ok, err, code = require("geneva.store.backend").upload(o.path)
  if not ok then
    os.remove(o.path)
    output_failed(o.path, err, code)
  end
end

-- {====== Per-row watchdog (UDFs with a timeout)

local hb_file
local function heartbeat_file()
  local path = os.getenv("GENEVA_HEARTBEAT")
  if not path then return nil end
  if not hb_file then hb_file = io.open(path, "w") end
  return hb_file
end

-- "<rowid> <monotonic seconds>": the row this worker is computing, and since when
local function beat(f, rowid)
  f:seek("set", 0)
  f:write(("%d %.3f\n"):format(rowid, require("geneva.time").monotonic()))
  f:flush()
end

-- The row a previous attempt was killed on: on_error decides, no second run.
local function timed_out_row(spec, task, rowid)
  local e = errors.new("udf_error", ("UDF '%s' (column '%s') timed out after %gs at fragment %d rowid %d; its worker was killed")
    :format(spec.name or "?", task.column, spec.timeout, task.fragment, rowid),
    { column = task.column, rowid = rowid, fragment = task.fragment, timeout = spec.timeout })
  if spec.on_error ~= "null" then error(e, 0) end
  return { n = 1, values = { json.null }, failed = { { index = 1, rowid = rowid, error = e } } }
end

-- }======

-- worker.mount(store) -> root: an s3 database's mirror, mounted as the
-- driver described it (store: db.store, secret-free)
function worker.mount(store)
  if type(store) ~= "table" or type(store.uri) ~= "string" then
    errors.throw("internal", "a task's store is not {uri=, ...}")
  end
  local o = { probe = false }
  for _, k in ipairs({ "endpoint", "region", "profile", "path_style" }) do o[k] = store[k] end
  return (require("geneva.store.backend.s3").mount(store.uri, o))
end

-- worker.run_task(state, task) -> result {computed=, failed=, staged=, errors=,
-- failed_rowids=} (failed_rowids: the first job.MAX_FAILED_ROWIDS rowids that
-- failed; the staged file has them all)
-- | raises an Error (udf_error for on_error="fail", others for bad tasks).
-- task: {table_dir, version, fragment, lo, hi, column, udf (spec with
-- .version), where}. on_rows(rows done so far), when given, is called at
-- most every PROGRESS_EVERY seconds while the task runs (progress bars).
function worker.run_task(state, task, on_rows)
  assert(on_rows == nil or type(on_rows) == "function", "run_task: on_rows must be a function")
  local reader = require "geneva.store.reader"
  if task.store then worker.mount(task.store) end
  local snapshot = state:snapshot(task.table_dir, task.version)
  local frag = storage.find_fragment(snapshot, task.fragment)
  if not frag then
    errors.throw("not_found", ("fragment %d is not in version %d"):format(task.fragment, task.version))
  end
  local spec = task.udf
  local col = require("geneva.store.reader").find_column(snapshot, task.column)
  if not col then errors.throw("not_found", ("no column '%s'"):format(task.column)) end
  local out_type = assert(types.parse(col.data_type))
  local inputs = spec.input_columns
  local in_types = {}
  for i, name in ipairs(inputs) do
    local c = require("geneva.store.reader").find_column(snapshot, name)
    if not c then errors.throw("invalid_argument", ("UDF input column '%s' does not exist"):format(name)) end
    in_types[i] = assert(types.parse(c.data_type))
  end
  -- tasks come from a driver that checked where; a task file may not have
  where_check.check(task.where, snapshot, "backfill")
  local wanted = { task.column }
  for _, name in ipairs(inputs) do wanted[#wanted + 1] = name end
  -- and what `where` mentions (the reader ignores repeated names)
  if task.where then
    for _, name in ipairs(reader.columns_in(snapshot, task.where)) do wanted[#wanted + 1] = name end
  end
  local r <close> = reader.open(task.table_dir, snapshot, frag, { columns = wanted })
  local sel = {}
  for i, name in ipairs(inputs) do sel[i] = quote(name) end
  local sql = ("SELECT _rowid%s FROM t WHERE _rowid BETWEEN ? AND ? AND %s%s ORDER BY _rowid")
    :format(#sel > 0 and ", " .. table.concat(sel, ", ") or "", reader.missing(task.column, spec.version, frag),
            task.where and (" AND (" .. task.where .. ")") or "")
  local stmt <close>, err = r:prepare(sql)
  if not stmt then
    if task.where then where_check.fail("backfill", task.where, err) end
    errors.throw("internal", err)
  end
  stmt:bind_all({ task.lo, task.hi })

  local ex = state:executor(spec, task.column).ex
  local null = json.null
  local out = open_output(worker.staged_path(task.table_dir, task.column, spec.version,
                                             task.fragment, task.lo, task.hi))
  local computed, failed, first_errors, failed_rowids = 0, 0, {}, {}
  -- Per chunk, not per row: one fetch_columns call fills the column arrays
  -- straight from SQLite, one ex:run, and write_rows binds BLOCK rows per
  -- call. Only the types whose SQLite form differs from the Lua one are
  -- converted (bind_value stores booleans as 0/1 itself).
  local conv = {}
  for i = 1, #inputs do
    local k = in_types[i].kind
    if k == "bool" or k == "vector" or k == "float64" then conv[#conv + 1] = i end
  end
  local wrap = out_type.kind == "blob" or out_type.kind == "vector"
  local float64 = out_type.kind == "float64"     -- NaN is stored as a BLOB (types.to_sql)
  local from_sql, to_sql = types.from_sql, types.to_sql
  -- A UDF with a timeout runs one row per chunk and says which row it is on
  -- (heartbeat), so the runner can kill a worker stuck inside C code and
  -- hand the row to on_error when it retries the task (task.timed_out).
  local chunk = spec.timeout and 1 or CHUNK
  local clock, next_report = time.monotonic, time.monotonic() + PROGRESS_EVERY
  local hb = spec.timeout and heartbeat_file()
  local timed_out = {}
  for _, id in ipairs(task.timed_out or {}) do timed_out[id] = true end
  local ok, perr = pcall(function()
    local ncols = #inputs
    while true do
      local rowids = {}
      local arrays = { rowids }          -- fresh each chunk: batch UDFs get them
      for i = 1, ncols do arrays[i + 1] = {} end
      local n, serr, scode = stmt:fetch_columns(arrays, chunk)
      if not n then
        if scode == "EINTR" then errors.throw("interrupted", "interrupted") end
        errors.throw("internal", ("reading fragment %d: %s"):format(task.fragment, serr))
      end
      if n == 0 then break end
      local columns = {}
      for i = 1, ncols do columns[inputs[i]] = arrays[i + 1] end
      for _, i in ipairs(conv) do
        local arr, t = arrays[i + 1], in_types[i]
        for k = 1, n do
          local v = arr[k]
          if v ~= null then
            v = from_sql(t, v)
            arr[k] = v == nil and null or v
          end
        end
      end
      local res
      if timed_out[rowids[1]] and n == 1 then
        res = timed_out_row(spec, task, rowids[1])
      else
        if hb then beat(hb, rowids[1]) end
        res = ex:run({ n = n, rowids = rowids, columns = columns })
      end
      local values = res.values
      if wrap then
        local w = {}
        for i = 1, n do
          local v = values[i]
          w[i] = v == null and null or to_sql(out_type, v)
        end
        values = w
      elseif float64 then
        for i = 1, n do
          local v = values[i]
          if v ~= v then values[i] = to_sql(out_type, v) end
        end
      end
      write_rows(out, rowids, values, n)
      computed = computed + n - #res.failed
      failed = failed + #res.failed
      if on_rows and clock() >= next_report then
        next_report = clock() + PROGRESS_EVERY
        on_rows(computed + failed)
      end
      for _, f in ipairs(res.failed) do
        failed_rowids[#failed_rowids + 1] = rowids[f.index]
        if #first_errors < 5 then first_errors[#first_errors + 1] = errors.plain(errors.from(f.error, "udf_error")) end
      end
      if n < chunk then break end
    end
  end)
  stmt:close()      -- the input is done with (r and stmt are to-be-closed for the error paths)
  r:close()
  local rows = computed + failed
  close_output(out, ok and rows > 0, failed_rowids)
  if not ok then error(errors.from(perr, "udf_error"), 0) end
  local listed = failed_rowids
  if #listed > MAX_FAILED_ROWIDS then listed = table.move(failed_rowids, 1, MAX_FAILED_ROWIDS, 1, {}) end
  return {
    computed = computed, failed = failed, errors = first_errors, failed_rowids = listed,
    staged = rows > 0 and out.path or nil,
  }
end

-- {====== --stdio: serve tasks to the local runner over JSON lines

local MARK = "\30GENEVA "   -- protocol lines start with RS + tag; others are logs

local function send(msg)
  io.stdout:write(MARK, json.encode(msg), "\n")
  io.stdout:flush()
end
worker.MARK = MARK

-- UDF output must not corrupt the protocol: print and io.write go to stderr
local function redirect_output()
  io.output(io.stderr)
  _G.print = function(...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    io.stderr:write(table.concat(parts, "\t"), "\n")
  end
end

function worker.stdio_main()
  redirect_output()
  local state = worker.state()
  send({ op = "ready", pid = require("geneva.proc").self().pid })
  for line in io.stdin:lines() do
    local msg, err = json.decode(line, { null_as_nil = true })
    if not msg then
      send({ op = "failed", error = { code = "internal", message = "bad message: " .. err } })
    elseif msg.op == "exit" then
      return 0
    elseif msg.op == "task" then
      local id = msg.task.id
      local ok, res = pcall(worker.run_task, state, msg.task, function(rows)
        send({ op = "progress", task = id, rows = rows })
      end)
      if ok then
        res.op, res.task = "done", msg.task.id
        send(res)
      else
        local e = errors.from(res, "udf_error")
        if e.code == "interrupted" then return 130 end
        send({ op = "failed", task = msg.task.id, error = errors.plain(e) })
      end
    end
  end
  return 0   -- stdin closed: the driver is gone
end

-- }======

-- --task FILE: one task, result JSON written to FILE .. ".result"
function worker.task_main(path)
  redirect_output()
  local text = assert(fs.read(path))
  local task = assert(json.decode(text, { null_as_nil = true }))
  local ok, res = pcall(worker.run_task, worker.state(), task)
  local out = ok and { op = "done", task = task.id, computed = res.computed, failed = res.failed,
                       staged = res.staged, errors = res.errors, failed_rowids = res.failed_rowids }
                 or { op = "failed", task = task.id, error = errors.plain(errors.from(res, "udf_error")) }
  assert(fs.write_atomic(path .. ".result", json.encode(out)))
  return ok and 0 or 1
end

return worker
