-- Specs for geneva.backfill.worker's task execution (the backfill hot path): every memcheck
-- data type in and out, NULLs, chunk and insert-block boundaries, on_error,
-- and staged files that are complete or absent. Runs tasks in-process with
-- worker.run_task; backfill_spec.lua covers the same path through workers.
local geneva = require "geneva"
local errors = require "geneva.errors"
local worker = require "geneva.backfill.worker"
local sqlite = require "geneva.sqlite"
local fs = require "geneva.fs"
local child = require "child"

local N = 2500          -- more than two 1024-row chunks; not a multiple of 64

-- row i of the typed table; every column is NULL on its own residue mod 7
local function row_of(i)
  local function nul(k) return i % 7 == k end
  return {
    id = i,
    i = not nul(1) and i * 3 - 4000 or nil,
    f = not nul(2) and (i % 3 == 0 and i + 0.0 or i / 8) or nil,
    b = not nul(3) and (i % 2 == 0) or nil,
    s = not nul(4) and ("s" .. ("x"):rep(i % 50)) or nil,
    bl = not nul(5) and ("\0\1" .. i) or nil,
    v = not nul(6) and { i, i / 2, -i } or nil,
  }
end

local SCHEMA = {
  { name = "id", data_type = "int64" }, { name = "i", data_type = "int64" },
  { name = "f", data_type = "float64" }, { name = "b", data_type = "bool" },
  { name = "s", data_type = "string" }, { name = "bl", data_type = "blob" },
  { name = "v", data_type = "float32[3]" },
}

-- A task for column of tbl over rows lo..hi of fragment 1
local task_for = require("tables").task_for

-- The staged file's rows as {rowid = value} (NULL as sqlite.null)
local function staged(path)
  local db <close> = assert(sqlite.open(path, { readonly = true }))
  local out, n = {}, 0
  for row in db:rows("SELECT _rowid, value FROM col ORDER BY _rowid") do
    out[row[1]] = row[2]
    n = n + 1
  end
  return out, n
end

local function leftovers(dir)
  local out = {}
  for _, p in ipairs(fs.walk(dir) or {}) do
    local path = type(p) == "table" and p.path or p
    if path:find("%.tmp%-") then out[#out + 1] = path end
  end
  return out
end

describe("geneva.backfill.worker", function()
  local root, db, tbl
  before_each(function()
    root = child.tmpdir()
    db = geneva.connect(root .. "/db")
    local rows = {}
    for i = 1, N do rows[i] = row_of(i) end
    tbl = db:create_table("typed", rows, { schema = SCHEMA })
  end)
  after_each(function() child.rmtree(root) end)

  it("passes every type through, NULLs as nil, across chunks and insert blocks", function()
    tbl:add_columns {
      o_i = geneva.udf { data_type = "int64", fn = function(i) return i end },
      o_f = geneva.udf { data_type = "float64", fn = function(f) return f end },
      o_b = geneva.udf { data_type = "bool", fn = function(b) return b end },
      o_s = geneva.udf { data_type = "string", fn = function(s) return s end },
      o_bl = geneva.udf { data_type = "blob", fn = function(bl) return bl end },
      o_v = geneva.udf { data_type = "float32[3]", fn = function(v) return v end },
      -- types as the UDF sees them, NULL as nil
      seen = geneva.udf { data_type = "string", fn = function(i, f, b, s, bl, v)
        local function t(x) return x == nil and "nil" or math.type(x) or type(x) end
        return table.concat({ t(i), t(f), t(b), t(s), t(bl), t(v), v and #v or 0 }, ",")
      end },
    }
    local state = worker.state()
    for _, col in ipairs { "o_i", "o_f", "o_b", "o_s", "o_bl", "o_v", "seen" } do
      local res = worker.run_task(state, (task_for(tbl, col, 1, 100000)))
      assert.same({ N, 0 }, { res.computed, res.failed })
      assert.is_true(fs.exists(res.staged))
      local got, n = staged(res.staged)
      assert.equal(N, n)
      for i = 1, N do
        local r, g = row_of(i), got[i]
        if col == "o_i" then assert.equal(r.i == nil and sqlite.null or r.i, g)
        elseif col == "o_f" then
          if r.f == nil then assert.equal(sqlite.null, g)
          else assert.equal("float", math.type(g)); assert.equal(r.f, g) end
        elseif col == "o_b" then assert.equal(r.b == nil and sqlite.null or (r.b and 1 or 0), g)
        elseif col == "o_s" then assert.equal(r.s == nil and sqlite.null or r.s, g)
        elseif col == "o_bl" then assert.equal(r.bl == nil and sqlite.null or r.bl, g)
        elseif col == "o_v" then
          assert.equal(r.v == nil and sqlite.null or string.pack("<fff", table.unpack(r.v)), g)
        else
          assert.equal(("%s,%s,%s,%s,%s,%s,%d"):format(r.i and "integer" or "nil", r.f and "float" or "nil",
            r.b ~= nil and "boolean" or "nil", r.s and "string" or "nil", r.bl and "string" or "nil",
            r.v and "table" or "nil", r.v and 3 or 0), g)
        end
      end
    end
    assert.same({}, leftovers(tbl.dir))
  end)

  it("computes only the window, the rows still missing, and those matching where", function()
    tbl:add_columns { twice = geneva.udf { data_type = "int64", fn = function(id) return 2 * id end } }
    local res = worker.run_task(worker.state(), (task_for(tbl, "twice", 1001, 2000, "id % 3 = 0")))
    local got, n = staged(res.staged)
    assert.equal(333, n)
    assert.equal(333, res.computed)
    for id, v in pairs(got) do
      assert.is_true(id >= 1001 and id <= 2000 and id % 3 == 0)
      assert.equal(2 * id, v)
    end
    -- a window with nothing to compute stages nothing
    local none = worker.run_task(worker.state(), (task_for(tbl, "twice", 1, 1000, "id < 0")))
    assert.same({ 0, 0 }, { none.computed, none.failed })
    assert.is_nil(none.staged)
    assert.same({}, leftovers(tbl.dir))
  end)

  it("on_error = 'null' stages NULLs and reports the failures", function()
    tbl:add_columns { half = geneva.udf { data_type = "int64", on_error = "null",
      fn = function(id) if id % 10 == 0 then error("no tens") end return id // 2 end } }
    local res = worker.run_task(worker.state(), (task_for(tbl, "half", 1, 100000)))
    assert.same({ N - N // 10, N // 10 }, { res.computed, res.failed })
    assert.equal(5, #res.errors)               -- the first few, for the job's events
    assert.matches("no tens", res.errors[1].message)
    local got, n = staged(res.staged)
    assert.equal(N, n)
    for i = 1, N do assert.equal(i % 10 == 0 and sqlite.null or i // 2, got[i]) end
  end)

  it("on_error = 'fail' raises the row's udf_error and leaves no file, staged or temp", function()
    tbl:add_columns { bad = geneva.udf { data_type = "int64",
      fn = function(id) if id == 2000 then error("boom") end return id end } }
    local t = task_for(tbl, "bad", 1, 100000)
    local ok, err = pcall(worker.run_task, worker.state(), t)
    assert.is_false(ok)
    assert.is_true(errors.is(err, "udf_error"), tostring(err))
    assert.equal(2000, err.rowid)
    assert.matches("boom", err.message)
    assert.is_false(fs.exists(worker.staged_path(tbl.dir, "bad", t.udf.version, t.fragment, 1, 100000)))
    assert.same({}, leftovers(tbl.dir))
    -- a value of the wrong type is a udf_error too
    tbl:add_columns { wrong = geneva.udf { data_type = "int64", fn = function(s) return s end } }
    ok, err = pcall(worker.run_task, worker.state(), (task_for(tbl, "wrong", 1, 100000)))
    assert.is_false(ok)
    assert.is_true(errors.is(err, "udf_error"), tostring(err))
  end)

  it("runs batch UDFs over each chunk with geneva.null for NULL", function()
    tbl:add_columns { lens = geneva.udf { data_type = "int64", batch = true, input_columns = { "s" },
      fn = function(s)
        local out = {}
        for k = 1, s.n do out[k] = s[k] ~= geneva.null and #s[k] or geneva.null end
        return out
      end } }
    local res = worker.run_task(worker.state(), (task_for(tbl, "lens", 1, 100000)))
    local got = staged(res.staged)
    for i = 1, N do
      local s = row_of(i).s
      assert.equal(s and #s or sqlite.null, got[i])
    end
  end)
end)
