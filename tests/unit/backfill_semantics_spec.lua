-- Specs for what a backfill computes (README, Using it): a row is missing when no memcheck
-- column file of the column's current UDF version holds it, or when it
-- failed under on_error = "null" (failed marks, kept in the column files and
-- listed in the job record). A NULL the UDF returned is a computed value. A
-- backfill with nothing to compute commits no version. Floats keep NaN and
-- infinities. Runs on a directory and on s3 (moto): storage: dir s3
local geneva = require "geneva"
local testdb = require "testdb"
local backend = require "geneva.store.backend"
local job = require "geneva.backfill.job"
local worker = require "geneva.backfill.worker"
local reader = require "geneva.store.reader"
local storage = require "geneva.store.versions"
local sqlite = require "geneva.sqlite"
local fs = require "geneva.fs"
local child = require "child"
local tables = require "tables"

-- tables of rows (id, text = "r<id>")
local make_table = tables.maker { rows = function(i) return { id = i, text = ("r%d"):format(i) } end }
local task_for = tables.task_for

local function version_files(tbl)
  return #backend.list(tbl.dir .. "/_versions")
end

-- Backfills column (opts) and checks there was nothing to do: DONE, nothing
-- planned, no commit, no new version. Returns the record.
local function backfill_noop(tbl, column, opts)
  local v, files = tbl:version(), version_files(tbl)
  local rec = tbl:backfill(column, opts)
  assert.equal("DONE", rec.status)
  assert.equal(0, rec.rows.planned)
  assert.equal(0, rec.tasks.planned)
  assert.equal(0, rec.commits)
  assert.equal(v, tbl:version())
  assert.equal(files, version_files(tbl))
  assert.equal(v, rec.version_end)
  return rec
end

-- A UDF failing for ids divisible by `every` until the file `fixed` exists
-- (a closure's upvalues do not travel to workers: the path is a constant).
local function flaky_udf(every, fixed)
  local fn = load(([[return function(id)
    if id %% %d == 0 then
      local f = io.open(%q)
      if not f then error("bad row " .. id) end
      f:close()
    end
    return -id
  end]]):format(every, fixed))()
  return geneva.udf { data_type = "int64", on_error = "null", fn = fn, input_columns = { "id" } }
end

-- rec.rows.failed_rowids as a sorted array of "frag:rowid"
local function listed(rec)
  local out = {}
  for frag, ids in pairs(rec.rows.failed_rowids or {}) do
    for _, r in ipairs(ids) do out[#out + 1] = ("%s:%d"):format(frag, r) end
  end
  table.sort(out)
  return out
end

local function expected_failures(n, frag_size, every)
  local out = {}
  for id = every, n, every do
    out[#out + 1] = ("%d:%d"):format((id - 1) // frag_size + 1, (id - 1) % frag_size + 1)
  end
  table.sort(out)
  return out
end

-- A staged column file in the format before failed marks existed:
-- col(_rowid, value) only. values: {[rowid] = value | false for NULL}.
local function old_style_file(dir, values)
  local path = dir .. "/old-" .. fs.random_hex(8) .. ".db"
  local db <close> = assert(sqlite.open(path))
  assert(db:exec("CREATE TABLE col(_rowid INTEGER PRIMARY KEY, value)"))
  for rowid, v in pairs(values) do
    assert(db:exec("INSERT INTO col VALUES (?, ?)", rowid, v == false and sqlite.null or v))
  end
  return path
end

describe("what a backfill computes", function()
  local root, db
  before_each(function()
    root = child.tmpdir()
    db = testdb.connect(root .. "/db")
  end)
  after_each(function() child.rmtree(root) end)

  it("takes a NULL the UDF returned as computed: the next run plans nothing and commits nothing", function()
    local tbl = make_table(db, "docs", 1000, { fragment_size = 400 })
    tbl:add_columns { half = geneva.udf { data_type = "int64",
      fn = function(id) if id % 2 == 1 then return nil end return id // 2 end } }
    local rec = tbl:backfill("half", { batch_size = 64 })
    assert.equal(1000, rec.rows.computed)
    assert.equal(0, rec.rows.failed)
    assert.equal(500, tbl:count_rows("half IS NULL"))
    backfill_noop(tbl, "half", { batch_size = 64 })
  end)

  it("records rows failed under on_error = 'null' by rowid, recomputes exactly those, then stops", function()
    local fixed = root .. "/fixed"
    local tbl = make_table(db, "docs", 3000, { fragment_size = 1000 })
    tbl:add_columns { maybe = flaky_udf(100, fixed) }
    local rec = tbl:backfill("maybe", { batch_size = 250 })
    assert.equal("DONE", rec.status)
    assert.equal(30, rec.rows.failed)
    assert.equal(2970, rec.rows.computed)
    assert.same(expected_failures(3000, 1000, 100), listed(rec))
    assert.is_falsy(rec.rows.failed_rowids_truncated)
    -- the same in the saved record, and in the column files
    assert.same(expected_failures(3000, 1000, 100), listed(job.load(db.dir, rec.id)))
    assert.equal(30, tbl:count_rows('"__failed_maybe"'))
    assert.equal(0, tbl:count_rows('"__failed_maybe" AND id % 100 <> 0'))
    assert.equal(30, tbl:count_rows("maybe IS NULL"))
    -- still failing: planned again, recorded again
    rec = tbl:backfill("maybe", { batch_size = 250 })
    assert.equal(30, rec.rows.planned)
    assert.equal(30, rec.rows.failed)
    assert.same(expected_failures(3000, 1000, 100), listed(rec))
    -- fixed: computed, no longer failed, and then nothing is left
    assert(io.open(fixed, "w")):close()
    rec = tbl:backfill("maybe", { batch_size = 250 })
    assert.equal(30, rec.rows.planned)
    assert.equal(30, rec.rows.computed)
    assert.equal(0, rec.rows.failed)
    assert.same({}, listed(rec))
    assert.equal(0, tbl:count_rows('"__failed_maybe"'))
    assert.equal(3000, tbl:count_rows("maybe = -id"))
    backfill_noop(tbl, "maybe")
  end)

  it("narrows the failed rows by where, and plans appended fragments whole", function()
    local tbl = make_table(db, "docs", 2000, { fragment_size = 1000 })
    tbl:add_columns { maybe = flaky_udf(10, root .. "/never") }
    assert.equal(200, tbl:backfill("maybe", { batch_size = 300 }).rows.failed)
    assert.equal(20, tbl:backfill("maybe", { where = "id <= 200" }).rows.planned)
    local more = {}
    for i = 2001, 2500 do more[#more + 1] = { id = i, text = "x" } end
    tbl:add(more)
    local rec = tbl:backfill("maybe", { batch_size = 300 })
    assert.equal(200 + 500, rec.rows.planned)
    assert.equal(200 + 50, rec.rows.failed)
  end)

  it("caps the rowids listed in the record; the count stays exact", function()
    local tbl = make_table(db, "docs", 3000, { fragment_size = 1000 })
    tbl:add_columns { bad = flaky_udf(1, root .. "/never") }
    local rec = tbl:backfill("bad", { batch_size = 500 })
    assert.equal(3000, rec.rows.failed)
    assert.equal(1000, #listed(rec))
    assert.is_true(rec.rows.failed_rowids_truncated)
    assert.equal(3000, tbl:count_rows('"__failed_bad"'))
  end)

  it("keeps failed marks when commits fold file lists, when the reader folds, and through compact", function()
    local tbl = make_table(db, "docs", 2000, { fragment_size = 1000 })
    local never = root .. "/never"
    tbl:add_columns { a = flaky_udf(7, never), b = flaky_udf(11, never), c = flaky_udf(13, never) }
    -- 10 files per fragment for c: more than a commit leaves, so it folds
    tbl:backfill("c", { batch_size = 100, commit_every = 100 })
    local m = tbl:_snapshot()
    assert.is_true(#m.fragments[1].columns.c < 10)
    assert.equal(2000 // 13, tbl:count_rows('"__failed_c"'))
    -- 8 files each for a and b (no fold): reading both attaches more files
    -- than SQLite can, so the reader folds one list
    tbl:backfill("a", { batch_size = 125, commit_every = 100 })
    tbl:backfill("b", { batch_size = 125, commit_every = 100 })
    m = tbl:_snapshot()
    assert.equal(8, #m.fragments[1].columns.a)
    assert.equal(8, #m.fragments[1].columns.b)
    local n = 0
    for _, f in ipairs(m.fragments) do
      local r <close> = reader.open(tbl.dir, m, f, { columns = { "a", "b" } })
      for row in r:rows('SELECT count(*) FROM t WHERE "__failed_a" OR "__failed_b"') do n = n + row[1] end
    end
    local want = 0
    for id = 1, 2000 do if id % 7 == 0 or id % 11 == 0 then want = want + 1 end end
    assert.equal(want, n)
    assert.equal(want, tbl:count_rows('"__failed_a" OR "__failed_b"'))
    tbl:compact()
    m = tbl:_snapshot()
    assert.equal(1, #m.fragments[1].columns.a)
    assert.equal(1, #m.fragments[1].columns.b)
    assert.equal(2000 // 7, tbl:count_rows('"__failed_a"'))
    assert.equal(2000 // 11, tbl:count_rows('"__failed_b"'))
    assert.equal(2000 // 13, tbl:count_rows('"__failed_c"'))
    assert.equal(2000 // 11, tbl:backfill("b").rows.planned)
  end)

  it("reads column files written before failed marks as holding no failures", function()
    local tbl = make_table(db, "docs", 6, { fragment_size = 6 })
    tbl:add_columns { w = geneva.udf { data_type = "int64", fn = function(id) return id * 10 end } }
    local ver = tbl:schema().w.udf_version
    -- rows 1..3 computed by an old writer, row 2 a NULL
    tbl:_commit_column_files("w", ver, { { fragment = 1, lo = 1, hi = 3,
      path = old_style_file(root, { [1] = 10, [2] = false, [3] = 30 }) } })
    assert.equal(0, tbl:count_rows('"__failed_w"'))
    local rec = tbl:backfill("w")
    assert.equal(3, rec.rows.planned)
    local got = {}
    for _, r in ipairs(tbl:to_rows { columns = { "id", "w" } }) do got[r.id] = r.w end
    assert.same({ [1] = 10, [3] = 30, [4] = 40, [5] = 50, [6] = 60 }, got)
  end)

  it("a worker stages its failed rows in the column file and reports them", function()
    local tbl = make_table(db, "docs", 300, { fragment_size = 300 })
    tbl:add_columns { maybe = flaky_udf(50, root .. "/never") }
    local res = worker.run_task(worker.state(), (task_for(tbl, "maybe", 1, 300)))
    assert.equal(6, res.failed)
    assert.same({ 50, 100, 150, 200, 250, 300 }, res.failed_rowids)
    local f <close> = assert(sqlite.open(res.staged, { readonly = true }))
    local ids = {}
    for row in f:rows("SELECT _rowid FROM failed ORDER BY _rowid") do ids[#ids + 1] = row[1] end
    assert.same({ 50, 100, 150, 200, 250, 300 }, ids)
    assert.equal(300, f:value("SELECT count(*) FROM col"))
  end)

  it("commits the checkpoints of an interrupted run with their failed marks", function()
    local tbl = make_table(db, "docs", 300, { fragment_size = 300 })
    tbl:add_columns { maybe = flaky_udf(50, root .. "/never") }
    -- a run that staged one window and died
    worker.run_task(worker.state(), (task_for(tbl, "maybe", 1, 100)))
    local rec = tbl:backfill("maybe", { batch_size = 100 })
    assert.equal(100, rec.rows.recovered)
    -- the checkpoint's failed rows (50, 100) are missing again: planned too
    assert.equal(202, rec.rows.planned)
    assert.equal(6, rec.rows.failed)
    assert.same({ "1:100", "1:150", "1:200", "1:250", "1:300", "1:50" }, listed(rec))
    assert.equal(6, tbl:count_rows('"__failed_maybe"'))
  end)

  describe("memory = bytes on local workers", function()
    local MiB = 1024 * 1024
    -- a UDF building a string of `mib(id)` MiB (string.rep allocates it at once)
    local function alloc_udf(mib_of_id, opts)
      local o = { data_type = "int64", memory = 50 * MiB, input_columns = { "id" }, name = "alloc",
        fn = load(("return function(id) return #string.rep('x', (%s) * 1048576) end"):format(mib_of_id))() }
      for k, v in pairs(opts or {}) do o[k] = v end
      return geneva.udf(o)
    end

    it("fails a UDF that allocates past it with a udf_error naming it; the worker survives; commits stay", function()
      local tbl = make_table(db, "docs", 200, { fragment_size = 200 })
      tbl:add_columns {
        fits = alloc_udf("id % 4 == 0 and 20 or 1"),                 -- 20 MiB (40 at the peak) under 50
        huge = alloc_udf("id == 150 and 200 or 1"),                  -- 200 MiB at rowid 150
        nulls = alloc_udf("id % 50 == 0 and 200 or 1", { on_error = "null", retries = 1 }),
      }
      geneva.local_cluster { workers = 1 } (function()
        local pool = require("geneva.runner").current()
        local pids = pool:pids()
        assert.equal(1, #pids)
        local rec = tbl:backfill("fits", { batch_size = 50 })
        assert.equal(200, rec.rows.computed)
        assert.equal(0, tbl:count_rows("fits <> (CASE WHEN id % 4 = 0 THEN 20 ELSE 1 END) * 1048576"))
        local ok, e = pcall(tbl.backfill, tbl, "huge", { batch_size = 50, commit_every = 1 })
        assert.is_false(ok)
        assert.equal("udf_error", e.code)
        assert.matches("UDF 'alloc' %(column 'huge'%) went over its memory limit at rowid 150 "
          .. "%(memory = 52428800 bytes, 50 MiB%) %(fragment 1%)", e.message)
        local failed = db:job(e.job_id):record()
        assert.equal("FAILED", failed.status)
        assert.equal(52428800, failed.error.memory)
        -- the windows before it were committed and stay
        assert.equal(failed.rows.committed, tbl:count_rows("huge IS NOT NULL"))
        assert.equal(0, tbl:count_rows("huge IS NOT NULL AND huge <> 1048576"))
        -- on_error = "null": those rows fail (after their retry), the others
        -- are computed, all in the same worker process: it survives its
        -- UDF going over the limit (a failed job's busy workers are
        -- replaced, as with any failure: no pid check across that one)
        local spawned, alive = pool.spawned, #pool:pids()
        rec = tbl:backfill("nulls", { batch_size = 50 })
        assert.equal("DONE", rec.status)
        assert.same({ 196, 4 }, { rec.rows.computed, rec.rows.failed })
        assert.same({ "1:100", "1:150", "1:200", "1:50" }, listed(rec))
        assert.equal(4, tbl:count_rows('"__failed_nulls"'))
        assert.equal(spawned + (alive == 0 and 1 or 0), pool.spawned)
        assert.equal(1, #pool:pids())
      end)
    end)
  end)

  describe("with nothing to compute", function()
    -- stages window lo..hi of fragment 1 of column as an interrupted run would
    local function stage(tbl, column, lo, hi)
      return worker.run_task(worker.state(), (task_for(tbl, column, lo, hi))).staged
    end

    -- a table of n rows in one fragment with a column neg = -id
    local function neg_table(n)
      local tbl = make_table(db, "docs", n, { fragment_size = n })
      tbl:add_columns { neg = geneva.udf { data_type = "int64", fn = function(id) return -id end } }
      return tbl
    end

    it("drops checkpoints whose rows were all computed since, and commits no version", function()
      local tbl = neg_table(500)
      local staged = stage(tbl, "neg", 1, 100)
      local copy = assert(backend.get(staged))
      local rec = tbl:backfill("neg", { batch_size = 100 })
      assert.equal(100, rec.rows.recovered)
      assert.equal(400, rec.rows.planned)
      -- the same checkpoint again (a late worker of a cancelled run)
      assert(backend.put(staged, copy))
      rec = backfill_noop(tbl, "neg", { batch_size = 100 })
      assert.is_falsy(rec.rows.recovered)
      assert.is_false(backend.exists(staged))
      assert.equal(500, tbl:count_rows("neg = -id"))
    end)

    it("commits a checkpoint when some of its rows are still missing", function()
      local tbl = neg_table(500)
      local staged = stage(tbl, "neg", 1, 100)
      -- rows 1..50 computed and committed since; 51..100 are only in the checkpoint
      local half = stage(tbl, "neg", 1, 50)
      tbl:_commit_column_files("neg", tbl:schema().neg.udf_version, { { fragment = 1, path = half, lo = 1, hi = 50 } })
      local rec = tbl:backfill("neg", { batch_size = 100 })
      assert.equal(100, rec.rows.recovered)
      assert.equal(400, rec.rows.planned)
      assert.is_false(backend.exists(staged))
      assert.equal(500, tbl:count_rows("neg = -id"))
    end)

    it("publishes no version when the fragments of a commit vanished meanwhile", function()
      local tbl = neg_table(10)
      local staged = stage(tbl, "neg", 1, 10)
      local v = tbl:version()
      -- another writer removes the fragment between the move and the commit
      local commit = storage.commit
      storage.commit = function(dir, op, mutate, opts)
        return commit(dir, op, function(m, ...)
          m.fragments = {}
          return mutate(m, ...)
        end, opts)
      end
      local ok, got_v, n = pcall(tbl._commit_column_files, tbl, "neg", tbl:schema().neg.udf_version,
        { { fragment = 1, path = staged, lo = 1, hi = 10 } })
      storage.commit = commit
      assert.is_true(ok, tostring(got_v))
      assert.equal(0, n)
      assert.equal(v, got_v)
      assert.equal(v, tbl:version())
      assert.is_true(backend.exists(staged))          -- back where it was
    end)
  end)

  describe("floats", function()
    local nan = 0 / 0
    local bits = function(x) return string.pack("<d", x) end
    -- the float64 the UDF returns for id (NaN of both signs, infinities, -0.0)
    local function special(id)
      local nan_ = 0 / 0
      local v = ({ nan_, -nan_, 1 / 0, -1 / 0, -0.0, 2.5 })[id % 6 + 1]
      if id == 6 then return nil end
      return v
    end
    local function expected(id)
      if id == 6 then return nil end
      return ({ nan, -nan, 1 / 0, -1 / 0, -0.0, 2.5 })[id % 6 + 1]
    end

    it("keeps NaN, infinities and -0.0 through backfill, to_rows, search and UDF inputs", function()
      local tbl = make_table(db, "docs", 12, { fragment_size = 5 })
      tbl:add_columns {
        f = geneva.udf { data_type = "float64", fn = special },
        v = geneva.udf { data_type = "float32[2]", fn = function(id) return { 0 / 0, id == 2 and 1 / 0 or id } end },
      }
      local rec = tbl:backfill("f")
      assert.equal(12, rec.rows.computed)
      tbl:backfill("v")
      -- a UDF reading f sees what was returned
      tbl:add_columns { g = geneva.udf { data_type = "string", fn = function(f)
        if f == nil then return "nil" end
        return ("%s %s"):format(math.type(f), string.pack("<d", f):byte(8) >= 128 and "neg" or "pos")
      end } }
      tbl:backfill("g")
      for _, rows in ipairs { tbl:to_rows(), tbl:search():where("id > 0"):to_rows() } do
        assert.equal(12, #rows)
        for _, r in ipairs(rows) do
          local want = expected(r.id)
          if want == nil then
            assert.is_nil(r.f)
            assert.equal("nil", r.g)
          else
            assert.equal("float", math.type(r.f))
            assert.equal(bits(want), bits(r.f), "id " .. r.id)
            assert.equal(("float %s"):format(bits(want):byte(8) >= 128 and "neg" or "pos"), r.g)
          end
          assert.is_true(r.v[1] ~= r.v[1], "vector NaN")
          assert.equal(r.id == 2 and 1 / 0 or r.id, r.v[2])
        end
      end
      -- a NaN is a value, not NULL: computed, and not computed again
      assert.equal(1, tbl:count_rows("f IS NULL"))
      assert.equal(3, tbl:count_rows("typeof(f) = 'blob'"))          -- NaN, in SQL (ids 1, 7, 12)
      assert.equal(8, tbl:count_rows("typeof(f) = 'real'"))
      backfill_noop(tbl, "f")
    end)

    it("keeps NaN in stored columns and through compact", function()
      local tbl = db:create_table("nums", { { id = 1, x = nan }, { id = 2, x = 1.5 }, { id = 3, x = -nan } },
        { schema = { { name = "id", data_type = "int64" }, { name = "x", data_type = "float64" } } })
      local rows = tbl:to_rows()
      assert.equal(bits(nan), bits(rows[1].x))
      assert.equal(1.5, rows[2].x)
      assert.equal(bits(-nan), bits(rows[3].x))
      tbl:add_columns { y = geneva.udf { data_type = "float64", fn = function(x) return x end } }
      tbl:backfill("y", { batch_size = 1 })
      tbl:compact()
      rows = tbl:to_rows()
      assert.equal(bits(nan), bits(rows[1].y))
      assert.equal(bits(-nan), bits(rows[3].y))
    end)
  end)
end)
