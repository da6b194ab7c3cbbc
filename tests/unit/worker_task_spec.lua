-- `geneva worker --task FILE`: the one-task mode a Ray runner launches. memcheck
local geneva = require "geneva"
local fs = require "geneva.fs"
local json = require "geneva.json"
local child = require "child"
local tables = require "tables"

describe("geneva worker --task", function()
  local dir, tbl
  before_each(function()
    dir = child.tmpdir()
    local db = geneva.connect(dir)
    tbl = tables.make(db, "docs", 500, { rows = function(i) return { id = i, content = ("x"):rep(i % 9) } end,
      columns = { len = geneva.udf { data_type = "int64", fn = function(content) return #content end },
                  bad = geneva.udf { data_type = "int64", fn = function(id) return "nope" end } } })
  end)
  after_each(function() child.rmtree(dir) end)

  local function task_for(column, lo, hi)
    local m = tbl:_snapshot()
    local col
    for _, c in ipairs(m.schema) do if c.name == column then col = c end end
    local spec = col.udf
    spec.version = col.udf_version
    return { id = "t1", table_dir = tbl.dir, version = m.version, fragment = m.fragments[1].id,
             lo = lo, hi = hi, column = column, udf = spec }, col.udf_version
  end

  local function run(task)
    local path = dir .. "/task.json"
    assert(fs.write(path, json.encode(task)))
    local code = child.cli { "worker", "--task", path }
    return code, json.decode(assert(fs.read(path .. ".result")), { null_as_nil = true })
  end

  it("computes its window, stages it, and the driver can commit it", function()
    local task, version = task_for("len", 101, 300)
    local code, res = run(task)
    assert.equals(0, code)
    assert.same({ "done", "t1", 200, 0 }, { res.op, res.task, res.computed, res.failed })
    assert.is_true(fs.exists(res.staged))
    tbl:_commit_column_files("len", version,
      { { fragment = task.fragment, lo = 101, hi = 300, path = res.staged } })
    local rows = tbl:to_rows{ columns = { "id", "len" } }
    for _, r in ipairs(rows) do
      if r.id >= 101 and r.id <= 300 then assert.equals(r.id % 9, r.len)
      else assert.is_nil(r.len) end
    end
  end)

  it("reports a failing UDF in the result file and exits 1", function()
    local code, res = run((task_for("bad", 1, 100)))
    assert.equals(1, code)
    assert.equals("failed", res.op)
    assert.equals("udf_error", res.error.code)
    assert.matches("expected int64", res.error.message)
  end)
end)
