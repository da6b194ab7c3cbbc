-- Specs for backfill correctness on the embedded local cluster: values equal
-- a direct Lua computation, only missing rows are computed, where,
-- appends, alter_columns, batch/stateful/vector UDFs, on_error and retries,
-- checkout of older versions, async jobs, and flat worker memory.
-- (Faults with real signals: backfill_faults_spec.lua; the CLI: jobs_spec.lua.)
-- Runs on a directory and on s3 (moto): see testdb.lua. storage: dir s3
local geneva = require "geneva"
local errors = require "geneva.errors"
local backfill = require "geneva.backfill"
local job = require "geneva.backfill.job"
local fs = require "geneva.fs"
local child = require "child"
local tables = require "tables"
local testdb = require "testdb"

local raises = require("expect").raises

-- The text of row i (varied lengths, some empty)
local function text_of(i) return ("r%d:"):format(i) .. ("ab"):rep(i % 11) end

-- Creates table `name` with rows (id, text) for ids 1..n
local make_table = tables.maker { rows = function(i) return { id = i, text = text_of(i) } end }

-- Rows of a table keyed by id
local function by_id(tbl, columns)
  local out = {}
  for _, r in ipairs(tbl:to_rows { columns = columns }) do
    assert.is_nil(out[r.id], "duplicate id " .. tostring(r.id))
    out[r.id] = r
  end
  return out
end

describe("geneva.backfill", function()
  local root, db
  before_each(function()
    root = child.tmpdir()
    db = testdb.connect(root .. "/db")
  end)
  after_each(function() child.rmtree(root) end)

  it("computes every row of a 200k-row table exactly, then nothing more", function()
    local N = 200000
    local tbl = make_table(db, "big", N, { fragment_size = 50000 })
    tbl:add_columns { score = geneva.udf { data_type = "int64",
      fn = function(id, text) return id * 3 + #text - (id % 7) end } }
    local rec = tbl:backfill("score", { batch_size = 5000 })
    assert.equal("DONE", rec.status)
    assert.equal(N, rec.rows.planned)
    assert.equal(N, rec.rows.computed)
    assert.equal(N, rec.rows.committed)
    assert.equal(0, rec.rows.failed)
    assert.equal(40, rec.tasks.planned)
    assert.equal(40, rec.tasks.done)
    assert.is_true(rec.commits >= 1)
    local rows = tbl:to_rows { columns = { "id", "text", "score" } }
    assert.equal(N, #rows)
    local bad = 0
    for i, r in ipairs(rows) do
      -- rows come back in (fragment, rowid) order: row i is id i
      if r.id ~= i or r.score ~= i * 3 + #text_of(i) - (i % 7) or r.text ~= text_of(i) then bad = bad + 1 end
    end
    assert.equal(0, bad)
    assert.equal(0, tbl:count_rows("score IS NULL"))
    assert.same({}, tables.staged(tbl, "score", true))
    -- only missing rows: a second backfill plans nothing and commits nothing
    local v = tbl:version()
    local rec2 = tbl:backfill("score")
    assert.equal("DONE", rec2.status)
    assert.equal(0, rec2.rows.planned)
    assert.equal(0, rec2.rows.computed)
    assert.equal(0, rec2.tasks.planned)
    assert.equal(v, tbl:version())
  end)

  it("computes only the rows matching where, then the rest", function()
    local tbl = make_table(db, "docs", 3000, { fragment_size = 1000 })
    tbl:add_columns { dbl = geneva.udf { data_type = "int64", fn = function(id) return id * 2 end } }
    local rec = tbl:backfill("dbl", { where = "id % 3 = 0 AND text LIKE 'r%'", batch_size = 100 })
    assert.equal(1000, rec.rows.planned)
    assert.equal(1000, rec.rows.computed)
    assert.equal(1000, tbl:count_rows("dbl IS NOT NULL"))
    assert.equal(0, tbl:count_rows("dbl IS NOT NULL AND id % 3 <> 0"))
    -- where can name the target column itself
    rec = tbl:backfill("dbl", { where = "dbl IS NULL AND id <= 100", batch_size = 100 })
    assert.equal(67, rec.rows.planned)
    rec = tbl:backfill("dbl", { batch_size = 100 })
    assert.equal(3000 - 1000 - 67, rec.rows.planned)
    for id, r in pairs(by_id(tbl, { "id", "dbl" })) do assert.equal(id * 2, r.dbl) end
    -- a bad where is an invalid_argument naming the clause, before any job starts
    local jobs = #db:jobs()
    local e = raises("invalid_argument", tbl.backfill, tbl, "dbl", { where = "no_such_column = 1" })
    assert.matches('backfill: where "no_such_column = 1": no such column: no_such_column', e.message, 1, true)
    assert.equal(jobs, #db:jobs())
  end)

  it("keeps NULL results: the next backfill does not compute them again", function()
    local tbl = make_table(db, "docs", 1000, { fragment_size = 400 })
    -- odd ids give NULL, a computed value (more in backfill_semantics_spec.lua)
    tbl:add_columns { half = geneva.udf { data_type = "int64",
      fn = function(id) if id % 2 == 1 then return nil end return id // 2 end } }
    local rec = tbl:backfill("half", { batch_size = 64 })
    assert.equal(1000, rec.rows.planned)
    assert.equal(1000, rec.rows.computed)
    assert.equal(500, tbl:count_rows("half IS NULL"))
    rec = tbl:backfill("half", { batch_size = 64 })
    assert.equal(0, rec.rows.planned)
    assert.equal(0, tbl:count_rows("half IS NULL AND id % 2 = 0"))
  end)

  it("recomputes every row after alter_columns (stale by udf version)", function()
    local tbl = make_table(db, "docs", 2000, { fragment_size = 700 })
    tbl:add_columns { v = geneva.udf { data_type = "string", fn = function(id) return "one:" .. id end } }
    tbl:backfill("v", { batch_size = 250 })
    local old_version = tbl:schema().v.udf_version
    local before = tbl:version()
    tbl:alter_columns { { path = "v", udf = geneva.udf { data_type = "string",
      fn = function(id) return "two:" .. id end } } }
    assert.are_not.equal(old_version, tbl:schema().v.udf_version)
    -- altered but not yet backfilled: the old values are still there
    assert.equal(2000, tbl:count_rows("v LIKE 'one:%'"))
    local rec = tbl:backfill("v", { batch_size = 250, where = "id <= 500" })
    assert.equal(500, rec.rows.planned)
    assert.equal(500, tbl:count_rows("v LIKE 'two:%'"))
    rec = tbl:backfill("v", { batch_size = 250 })
    assert.equal(1500, rec.rows.planned)
    for id, r in pairs(by_id(tbl, { "id", "v" })) do assert.equal("two:" .. id, r.v) end
    assert.equal(0, tbl:backfill("v").rows.planned)
    -- the version before the alter still reads the old values
    local old = db:open_table("docs"):checkout(before)
    for id, r in pairs(by_id(old, { "id", "v" })) do assert.equal("one:" .. id, r.v) end
  end)

  it("computes only appended rows after add", function()
    local tbl = make_table(db, "docs", 1500, { fragment_size = 1000 })
    tbl:add_columns { len = geneva.udf { data_type = "int64", fn = function(text) return #text end } }
    assert.equal(1500, tbl:backfill("len", { batch_size = 200 }).rows.planned)
    local more = {}
    for i = 1501, 2750 do more[#more + 1] = { id = i, text = text_of(i) } end
    tbl:add(more)
    assert.equal(1250, tbl:count_rows("len IS NULL"))
    local rec = tbl:backfill("len", { batch_size = 200 })
    assert.equal(1250, rec.rows.planned)
    assert.equal(1250, rec.rows.computed)
    local rows = by_id(tbl, { "id", "text", "len" })
    for i = 1, 2750 do assert.equal(#text_of(i), rows[i].len) end
  end)

  it("runs batch UDFs with NULLs as geneva.null", function()
    local rows = {}
    for i = 1, 1200 do rows[i] = { id = i, x = (i % 5 ~= 0) and i * 0.5 or nil } end
    local tbl = db:create_table("nums", rows, { schema = { { name = "id", data_type = "int64" },
      { name = "x", data_type = "float64" } }, fragment_size = 500 })
    tbl:add_columns { y = geneva.udf { data_type = "float64", batch = true,
      fn = function(x)
        local out = {}
        for i = 1, x.n do
          if x[i] == geneva.null then out[i] = geneva.null else out[i] = x[i] * 4 end
        end
        return out
      end } }
    local rec = tbl:backfill("y", { batch_size = 100 })
    assert.equal(1200, rec.rows.computed)
    for id, r in pairs(by_id(tbl, { "id", "y" })) do
      if id % 5 == 0 then assert.is_nil(r.y) else assert.equal(id * 2.0, r.y) end
    end
  end)

  it("runs a stateful UDF's setup once per worker", function()
    local tbl = make_table(db, "docs", 4000, { fragment_size = 1000 })
    -- setup returns a random token; each row records (worker pid, token)
    tbl:add_columns { who = geneva.udf { data_type = "string",
      setup = function()
        local f = assert(io.open("/dev/urandom", "rb"))
        local b = f:read(8)
        f:close()
        local hex = b:gsub(".", function(c) return ("%02x"):format(c:byte()) end)
        return { token = hex, pid = require("geneva.proc").self().pid, calls = 0 }
      end,
      fn = function(state, id)
        state.calls = state.calls + 1
        return state.pid .. ":" .. state.token .. ":" .. id
      end } }
    assert.same({ "id" }, tbl:schema().who.udf.input_columns)
    local rec = tbl:backfill("who", { batch_size = 50 })   -- 80 tasks
    assert.equal(4000, rec.rows.computed)
    local tokens = {}
    for id, r in pairs(by_id(tbl, { "id", "who" })) do
      local pid, token, rid = r.who:match("^(%d+):(%x+):(%d+)$")
      assert.equal(id, tonumber(rid))
      tokens[pid] = tokens[pid] or {}
      tokens[pid][token] = true
    end
    local workers = 0
    for _, set in pairs(tokens) do
      workers = workers + 1
      local n = 0
      for _ in pairs(set) do n = n + 1 end
      assert.equal(1, n, "setup ran more than once in one worker")
    end
    assert.is_true(workers >= 1 and workers <= require("geneva.proc").cpu_count())
  end)

  it("stores float32[N] vectors", function()
    local tbl = make_table(db, "docs", 900, { fragment_size = 400 })
    tbl:add_columns { vec = geneva.udf { data_type = "float32[3]",
      fn = function(id) return { id, id / 4, -id } end } }
    tbl:backfill("vec", { batch_size = 128 })
    local rows = by_id(tbl, { "id", "vec" })
    for i = 1, 900 do assert.same({ i, i / 4, -i }, rows[i].vec) end
    -- a wrong length fails the job with a udf_error naming the column
    tbl:add_columns { bad = geneva.udf { data_type = "float32[3]", fn = function(id) return { id } end } }
    local e = raises("udf_error", tbl.backfill, tbl, "bad")
    assert.equal("bad", e.column)
  end)

  it("on_error = 'fail' fails the job, keeps what was committed", function()
    local tbl = make_table(db, "docs", 5000, { fragment_size = 2000 })
    tbl:add_columns { boom = geneva.udf { data_type = "int64",
      fn = function(id) if id == 3500 then error("no good " .. id) end return id + 1 end } }
    -- one task at a time, a commit after each: everything before the bad
    -- task's window is committed (frag 2 rowid 1500 lies in [1401, 1500])
    local ok, e = pcall(tbl.backfill, tbl, "boom", { batch_size = 100, concurrency = 1, commit_every = 1 })
    assert.is_false(ok)
    assert.is_true(errors.is(e, "udf_error"), tostring(e))
    assert.equal("boom", e.column)
    assert.equal(1500, e.rowid)
    assert.equal(2, e.fragment)
    assert.matches("no good 3500", e.message)
    assert.is_string(e.job_id)
    local rec = job.load(db.dir, e.job_id)
    assert.equal("FAILED", rec.status)
    assert.equal("udf_error", rec.error.code)
    assert.equal("boom", rec.error.column)
    assert.equal(1500, rec.error.rowid)
    assert.equal(3400, rec.rows.committed)
    assert.equal(3400, tbl:count_rows("boom IS NOT NULL"))
    assert.equal(0, tbl:count_rows("boom IS NOT NULL AND (id >= 3401 OR boom <> id + 1)"))
    -- the async form raises the same from wait()
    local j = tbl:backfill_async("boom", { batch_size = 100 })
    local ok2, e2 = pcall(j.wait, j)
    assert.is_false(ok2)
    assert.equal("udf_error", e2.code)
    assert.equal("FAILED", j:status())
    assert.equal(j.id, e2.job_id)
  end)

  it("on_error = 'null' leaves NULLs, counts rows.failed, and retries them next time", function()
    local tbl = make_table(db, "docs", 3000, { fragment_size = 1000 })
    tbl:add_columns { maybe = geneva.udf { data_type = "int64", on_error = "null",
      fn = function(id) if id % 100 == 0 then error("bad row") end return -id end } }
    local rec = tbl:backfill("maybe", { batch_size = 250 })
    assert.equal("DONE", rec.status)
    assert.equal(3000, rec.rows.planned)
    assert.equal(30, rec.rows.failed)
    assert.equal(2970, rec.rows.computed)
    assert.equal(30, tbl:count_rows("maybe IS NULL"))
    assert.equal(0, tbl:count_rows("maybe IS NULL AND id % 100 <> 0"))
    local found = false
    for _, line in ipairs(rec.events) do if line:match("bad row") then found = true end end
    assert.is_true(found, "row errors are logged in the record")
    rec = tbl:backfill("maybe")
    assert.equal(30, rec.rows.planned)
    assert.equal(30, rec.rows.failed)
  end)

  it("retries a failing row up to retries times", function()
    local tbl = make_table(db, "docs", 600, { fragment_size = 300 })
    -- fails twice for every row, then succeeds (counts per worker process)
    local flaky = function(id)
      local tries = rawget(_ENV, "tries")
      if not tries then tries = {} rawset(_ENV, "tries", tries) end
      tries[id] = (tries[id] or 0) + 1
      if tries[id] <= 2 then error("flaky " .. id) end
      return id * 10
    end
    tbl:add_columns { ok2 = geneva.udf { data_type = "int64", retries = 2, fn = flaky } }
    local rec = tbl:backfill("ok2", { batch_size = 100 })
    assert.equal(600, rec.rows.computed)
    assert.equal(0, rec.rows.failed)
    for id, r in pairs(by_id(tbl, { "id", "ok2" })) do assert.equal(id * 10, r.ok2) end
    -- one retry is not enough: every row fails (on_error = "null")
    tbl:add_columns { short = geneva.udf { data_type = "int64", retries = 1, on_error = "null", fn = flaky } }
    rec = tbl:backfill("short", { batch_size = 100 })
    assert.equal(600, rec.rows.failed)
    assert.equal(600, tbl:count_rows("short IS NULL"))
  end)

  it("leaves the version before a backfill reading NULLs", function()
    local tbl = make_table(db, "docs", 1200, { fragment_size = 500 })
    tbl:add_columns { sq = geneva.udf { data_type = "int64", fn = function(id) return id * id end } }
    local before = tbl:version()
    local rec = tbl:backfill("sq", { batch_size = 100, commit_every = 3 })
    assert.equal(before, rec.version_start)
    assert.is_true(tbl:version() > before)
    assert.equal(tbl:version(), rec.version_end)
    local old = db:open_table("docs"):checkout(before)
    assert.equal(1200, old:count_rows("sq IS NULL"))
    for _, r in ipairs(old:to_rows { columns = { "sq" } }) do assert.is_nil(r.sq) end
    assert.equal(0, tbl:count_rows("sq IS NULL"))
    -- a checked-out handle cannot backfill
    raises("invalid_argument", old.backfill, old, "sq")
    old:checkout_latest()
    assert.equal(1200, old:count_rows("sq = id * id"))
  end)

  it("rejects bad options and columns before starting", function()
    local tbl = make_table(db, "docs", 10)
    tbl:add_columns { c = geneva.udf { data_type = "int64", fn = function(id) return id end } }
    raises("not_found", tbl.backfill, tbl, "nope")
    raises("invalid_argument", tbl.backfill, tbl, "id")
    raises("invalid_argument", tbl.backfill, tbl, "c", { batch_size = 0 })
    raises("invalid_argument", tbl.backfill, tbl, "c", { commit_every = 1.5 })
    raises("invalid_argument", tbl.backfill, tbl, "c", { bogus = true })
    raises("invalid_argument", tbl.backfill, tbl, "c", { where = 42 })
    assert.same({}, db:jobs())
  end)

  describe("backfill_async", function()
    local slow = require("udfs").slow   -- id * 7, ~0.3 ms a row

    it("runs to DONE; wait() returns the record", function()
      local tbl = make_table(db, "docs", 2000, { fragment_size = 1000 })
      tbl:add_columns { s = geneva.udf { data_type = "int64", fn = slow } }
      local j = tbl:backfill_async("s", { batch_size = 100 })
      assert.is_string(j.id)
      -- PENDING until its driver process has planned it
      assert.is_truthy(({ PENDING = true, RUNNING = true })[j:status()])
      assert.is_truthy(({ PENDING = true, RUNNING = true })[job.load(db.dir, j.id).status])
      local rec = j:wait()
      assert.equal("DONE", rec.status)
      assert.equal(j.id, rec.id)
      assert.equal(2000, rec.rows.committed)
      assert.equal("DONE", j:status())
      assert.equal("DONE", j:record().status)
      assert.equal("DONE", job.load(db.dir, j.id).status)
      assert.is_table(j:logs())
      assert.matches("planned 2000 rows", j:logs()[1])
      for id, r in pairs(by_id(tbl, { "id", "s" })) do assert.equal(id * 7, r.s) end
    end)

    it("cancel() keeps what was committed; wait() raises cancelled", function()
      local tbl = make_table(db, "docs", 6000, { fragment_size = 2000 })
      tbl:add_columns { s = geneva.udf { data_type = "int64", fn = slow } }
      local j = tbl:backfill_async("s", { batch_size = 50, commit_every = 2 })
      local deadline = os.time() + 60
      while j:record().rows.committed == 0 do
        assert.is_true(os.time() < deadline, "no commit")
        j:status()
      end
      assert.is_true(j:cancel())
      assert.equal("CANCELLED", j:status())
      local ok, e = pcall(j.wait, j)
      assert.is_false(ok)
      assert.is_true(errors.is(e, "cancelled"), tostring(e))
      assert.equal(j.id, e.job_id)
      local rec = job.load(db.dir, j.id)
      assert.equal("CANCELLED", rec.status)
      assert.is_true(rec.rows.committed > 0 and rec.rows.committed < 6000)
      assert.equal(rec.rows.committed, tbl:count_rows("s IS NOT NULL"))
      assert.equal(0, tbl:count_rows("s IS NOT NULL AND s <> id * 7"))
      -- the next run picks up the rest (and the checkpoints cancel left)
      local rest = tbl:backfill("s", { batch_size = 500 })
      assert.is_true(rest.rows.planned + (rest.rows.recovered or 0) <= 6000 - rec.rows.committed)
      assert.equal(0, tbl:count_rows("s IS NULL OR s <> id * 7"))
    end)

    it("runs two async jobs on one runner without mixing their tasks", function()
      local tbl = make_table(db, "docs", 3000, { fragment_size = 1000 })
      tbl:add_columns { a = geneva.udf { data_type = "int64", fn = slow },
                        b = geneva.udf { data_type = "string", fn = function(text) return text:upper() end } }
      local ja = tbl:backfill_async("a", { batch_size = 100, commit_every = 1 })
      local jb = tbl:backfill_async("b", { batch_size = 100, commit_every = 1 })
      -- a second job on a busy column is refused
      local e = raises("conflict", tbl.backfill_async, tbl, "a")
      assert.equal(ja.id, e.job_id)
      while not (job.FINAL[ja:status()] and job.FINAL[jb:status()]) do end
      assert.equal(3000, ja:wait().rows.committed)
      assert.equal(3000, jb:wait().rows.committed)
      for id, r in pairs(by_id(tbl, { "id", "text", "a", "b" })) do
        assert.equal(id * 7, r.a)
        assert.equal(r.text:upper(), r.b)
      end
    end)

    it("cancelling one job leaves the other running", function()
      local tbl = make_table(db, "docs", 3000, { fragment_size = 1000 })
      tbl:add_columns { a = geneva.udf { data_type = "int64", fn = slow },
                        b = geneva.udf { data_type = "int64", fn = slow } }
      local ja = tbl:backfill_async("a", { batch_size = 50 })
      local jb = tbl:backfill_async("b", { batch_size = 50 })
      ja:status(); jb:status()
      ja:cancel()
      assert.equal("CANCELLED", ja:status())
      local rec = jb:wait()
      assert.equal("DONE", rec.status)
      assert.equal(3000, rec.rows.computed)
      assert.equal(0, tbl:count_rows("b IS NULL OR b <> id * 7"))
      -- db:job(id) finds a job of this process
      assert.equal("CANCELLED", db:job(ja.id):status())
    end)
  end)

  it("keeps worker memory flat as the table grows", function()
    -- a pool of our own, so no earlier job shaped its workers; under ASan
    -- freed memory sits in a quarantine: turn it off to see real growth
    local asan = os.getenv("ASAN_OPTIONS")
    local pool = require("geneva.runner.local").new { workers = 2, env_add = {
      ASAN_OPTIONS = (asan and asan ~= "" and asan .. ":" or "") .. "quarantine_size_mb=0" } }
    local frame = require("geneva.runner").push(pool)
    local function rss_after(name, n)
      local rows = {}
      for i = 1, n do rows[i] = { id = i } end
      local tbl = db:create_table(name, rows)
      rows = nil
      tbl:add_columns { v = geneva.udf { data_type = "string",
        fn = function(id) return ("value-%d"):format(id) end } }
      local rec = tbl:backfill("v", { batch_size = 20000 })   -- 2 tasks, then 20
      assert.equal(n, rec.rows.computed)
      assert.equal(0, tbl:count_rows("v IS NULL"))
      local max = 0
      for _, pid in ipairs(pool:pids()) do
        local status = fs.read("/proc/" .. pid .. "/status") or ""
        local kb = tonumber(status:match("VmRSS:%s*(%d+)")) or 0
        max = math.max(max, kb)
      end
      assert.is_true(max > 0, "no worker RSS")
      return max
    end
    local ok, err = pcall(function()
      local small = rss_after("small", 40000)
      local large = rss_after("large", 400000)
      -- 10x the rows: a little slack, far below 10x the memory
      assert.is_true(large < small * 1.3 + 8 * 1024,
        ("worker RSS grew from %d kB to %d kB"):format(small, large))
    end)
    require("geneva.runner").pop(frame)
    pool:close()
    if not ok then error(err, 0) end
  end)
end)
