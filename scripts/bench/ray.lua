-- scripts/bench/ray's body, run by geneva (see the launcher for usage).
--   geneva ray.lua ROWS WORKERS REPEAT
-- Builds one table, starts the Ray dashboard emulator (tests/fakes) with
-- WORKERS CPUs, and backfills the same trivial UDF (string length) through
-- the local runner and through the Ray runner, with the default batch size
-- and with small tasks (so the per-task overhead shows). Prints rows/s,
-- the ratio, the per-task overhead, submissions per backfill, and the time
-- from context enter to the first task running and from exit until every
-- Ray submission is stopped and deleted. Checks every result's sum.
local geneva = require "geneva"
local fs = require "geneva.fs"
local proc = require "geneva.proc"
local runner = require "geneva.runner"
local clock = geneva.time.monotonic

local here = arg[0]:match("^(.*)/") or "."
local src = here .. "/../.."
local common = dofile(here .. "/backfill_common.lua")
local N = math.tointeger(tonumber(arg[1]))
local W = math.tointeger(tonumber(arg[2] or "2"))
local REPEAT = math.tointeger(tonumber(arg[3] or "1"))
local SMALL = 5000            -- rows per task in the small-task runs

local tmp = fs.tmpdir("geneva-bench-")
local dir = tmp.path

local function say(fmt, ...) io.stderr:write(fmt:format(...), "\n") end

local build_table = common.build_table

local column_sum = common.column_sum

local expected = 0
for i = 1, N do expected = expected + #common.text_of(i) end

local runs = 0
local function new_column(tbl)
  runs = runs + 1
  local col = ("c%d"):format(runs)
  tbl:add_columns{ [col] = geneva.udf{ data_type = "int64", fn = common.trivial, input_columns = { "text" } } }
  return col
end

local function check(tbl, col, rec)
  local sum, nonnull = column_sum(tbl, col)
  assert(nonnull == N and rec.rows.computed == N, ("%s: %d of %d rows computed"):format(col, nonnull, N))
  assert(sum == expected, ("%s: sum %d, want %d"):format(col, sum, expected))
end

-- {====== contenders

local function run_local(tbl, batch)
  local col = new_column(tbl)
  local t0 = clock()
  local pool <close> = require("geneva.runner.local").new{ workers = W }
  local frame = runner.push(pool)
  local rec = tbl:backfill(col, { batch_size = batch })
  local dt = clock() - t0
  runner.pop(frame)
  check(tbl, col, rec)
  return { secs = dt, tasks = rec.tasks.done }
end

-- The Ray runner on the emulator, timed in phases: enter (connect), enter ->
-- first task claimed by a Ray worker, the backfill, exit (every submission
-- stopped, deleted, confirmed gone).
local function run_ray(db, tbl, url, batch)
  local col = new_column(tbl)
  local t0 = clock()
  local ctx = geneva.ray_cluster{ address = url, db = db }
  ctx:enter()
  local t_enter = clock() - t0
  local r = runner.current()
  local first_claim, job_id
  local submit, poll = r.submit, r.poll
  r.submit = function(self, task) job_id = job_id or task.job return submit(self, task) end
  r.poll = function(self, timeout)
    local ev = poll(self, timeout)
    if not first_claim and job_id then
      local claims = fs.list(require("geneva.backfill.queue").dir(db.path, job_id) .. "/claims")
      if claims and #claims > 0 then first_claim = clock() end
    end
    return ev
  end
  local ok, rec = pcall(tbl.backfill, tbl, col, { batch_size = batch })
  local t_done = clock()
  r.submit, r.poll = nil, nil
  ctx:exit()
  local t_exit = clock() - t_done
  if not ok then error(rec, 0) end
  check(tbl, col, rec)
  local submissions = 0
  for _, line in ipairs(rec.events) do
    if line:match("^ray: submitted ") then submissions = submissions + 1 end
  end
  return { secs = t_done - t0 - t_enter, enter = t_enter, first = (first_claim or t_done) - t0, exit = t_exit,
           submissions = submissions, tasks = rec.tasks.done }
end

-- }======

local function best(f, ...)
  local b
  for _ = 1, REPEAT do
    local r = f(...)
    if not b or r.secs < b.secs then b = r end
  end
  return b
end

local function fmt_rate(r)
  if r >= 1e6 then return ("%.2fM"):format(r / 1e6) end
  return ("%.0fk"):format(r / 1e3)
end

local function start_emulator()
  local p = assert(proc.spawn{ argv = { "python3", src .. "/tests/fakes/ray_dashboard.py", "--num-cpus", tostring(W),
                                        "--stop-wait", "1", "--max-life", "3600", "--state-dir", dir .. "/ray" },
                               stdin = "pipe", stdout = "pipe", stderr = dir .. "/emulator.err" })
  local line = p:read_line("stdout", 30)
  local url = line and line:match("^listening (http://%S+)")
  assert(url, "the emulator did not start: " .. tostring(line))
  return p, url
end

local function main()
  say("building %d rows in %s ...", N, dir)
  local db = geneva.connect(dir .. "/db")
  local tbl = build_table(db, "docs", N)
  local emu <close>, url = start_emulator()
  say("emulator at %s (%d CPUs)", url, W)
  print(("backfill of a trivial UDF (string length) over %d rows, %d workers, best of %d"):format(N, W, REPEAT))
  print(("%-50s %10s %10s %8s %12s"):format("", "rows/s", "seconds", "tasks", "submissions"))
  local out = {}
  for _, batch in ipairs({ 50000, SMALL }) do
    local l = best(run_local, tbl, batch)
    local r = best(run_ray, db, tbl, url, batch)
    local label = batch == 50000 and "default tasks (50000 rows)" or ("small tasks (%d rows)"):format(batch)
    print(("%-50s %10s %10.3f %8d %12s"):format("local runner, " .. label, fmt_rate(N / l.secs), l.secs, l.tasks, "-"))
    print(("%-50s %10s %10.3f %8d %12d"):format("ray runner (emulator), " .. label, fmt_rate(N / r.secs), r.secs,
      r.tasks, r.submissions))
    -- the extra wall time per task, spread over the workers that ran them
    local per_task = (r.secs - l.secs) * W / r.tasks
    print(("  ray / local: %.2fx; extra per task: %.1f ms (worker time)"):format(l.secs / r.secs, per_task * 1000))
    print(("  context enter %.0f ms, enter -> first task claimed %.0f ms, exit -> every submission stopped and deleted %.0f ms")
      :format(r.enter * 1000, r.first * 1000, r.exit * 1000))
    out[#out + 1] = { batch = batch, l = l, r = r }
  end
end

local ok, err = pcall(main)
tmp:close()
if not ok then error(err, 0) end
