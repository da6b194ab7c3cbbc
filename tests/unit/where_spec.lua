-- Specs for `where` (README, Types): one SQL expression over the table's memcheck
-- columns, the same rule for tbl:backfill, tbl:count_rows, tbl:to_rows and
-- tbl:search():where(). Anything that escapes the expression (a stray `)`,
-- a comment, a `;`, a subquery, a parameter) is invalid_argument naming the
-- where, and no error shows the SQL geneva wraps around it.
local geneva = require "geneva"
local errors = require "geneva.errors"
local worker = require "geneva.backfill.worker"
local child = require "child"

local raises = require("expect").raises

-- wheres that escape one expression, each with the reason it must give
local ESCAPES = {
  { "id < 0) OR (1", "parenthes" },
  { "id < 3 --", "comment" },
  { "id < 3 -- all", "comment" },
  { "/* hi */ id < 3", "comment" },
  { "id < 3; DELETE FROM data", ";" },
  { "id < 3;", ";" },
  { "(id < 3", "parenthes" },
  { "name = 'abc", "unterminated" },
  { '"id < 3', "unterminated" },
  { "id IN (SELECT _rowid FROM t)", "SELECT" },
  { "EXISTS (select 1)", "SELECT" },
  { "id IN sqlite_master", "IN" },
  { "id = ?", "parameter" },
  { "id = :x", "parameter" },
  { "", "empty" },
  { "   ", "empty" },
  { "content = 'caf\xe9'", "not valid UTF-8 (byte 15)" },
}

-- wheres that are one expression, with the rows they match among 1..10
local FINE = {
  { "content IS NOT NULL", 9 },
  { "id BETWEEN 3 AND 7", 5 },
  { "name = 'a''b'", 1 },
  { '"weird col" > 1', 10 },     -- SQLite reads an unknown "..." as a string
  { '"id" > 8', 2 },
  { "[id] > 8", 2 },
  { "`id` > 8", 2 },
  { "x IN (1,2)", 4 },
  { "x NOT IN (1, 2)", 6 },
  { "lower(s) LIKE 'a%'", 3 },
  { "name = ')' OR name = '(' OR name = 'x;--y'", 3 },
  { "content = '/* not a comment */'", 1 },
  { "(id < 3) OR (id > 8)", 4 },
  { "id < 3 OR\n id > 8", 4 },
}

local function rows()
  local names = { "a'b", ")", "(", "x;--y", "plain", "q", "r", "s", "t", "u" }
  local out = {}
  for i = 1, 10 do
    out[i] = { id = i, content = i ~= 4 and (i == 5 and "/* not a comment */" or ("c" .. i)) or nil,
               name = names[i], x = i % 5, s = i <= 3 and ("Ab" .. i) or "zz" }
  end
  return out
end

local SCHEMA = {
  { name = "id", data_type = "int64" }, { name = "content", data_type = "string" },
  { name = "name", data_type = "string" }, { name = "x", data_type = "int64" },
  { name = "s", data_type = "string" },
}

-- the error must name the where and show none of the SQL around it
local function check_message(e, prefix, where)
  local head = prefix .. ': where "' .. where .. '": '
  assert.equal(head, e.message:sub(1, #head), e.message)
  local rest = e.message:sub(#head + 1)
  assert.is_nil(rest:find("FROM t", 1, true), e.message)
  assert.is_nil(rest:find("__ver_", 1, true), e.message)
  assert.is_nil(rest:find("_rowid", 1, true), e.message)
  assert.is_nil(rest:find(" IS NOT ?", 1, true), e.message)
  assert.equal(where, e.where)
end

describe("where", function()
  local root, db, tbl
  before_each(function()
    root = child.tmpdir()
    db = geneva.connect(root .. "/db")
    tbl = db:create_table("docs", rows(), { schema = SCHEMA, fragment_size = 4 })
    tbl:add_columns { dbl = geneva.udf { data_type = "int64", fn = function(id) return 2 * id end } }
  end)
  after_each(function() child.rmtree(root) end)

  it("refuses what escapes one expression in backfill, naming the where; nothing runs", function()
    local v = tbl:version()
    for _, case in ipairs(ESCAPES) do
      local e = raises("invalid_argument", tbl.backfill, tbl, "dbl", { where = case[1] })
      check_message(e, "backfill", case[1])
      assert.matches(case[2], e.message, 1, true)
    end
    assert.equal(v, tbl:version())
    assert.equal(10, tbl:count_rows("dbl IS NULL"))
    assert.same({}, db:jobs())            -- refused before any job started
  end)

  it("refuses the same in count_rows, to_rows and search", function()
    for _, case in ipairs(ESCAPES) do
      local w = case[1]
      check_message(raises("invalid_argument", tbl.count_rows, tbl, w), "count_rows", w)
      check_message(raises("invalid_argument", tbl.to_rows, tbl, { where = w }), "to_rows", w)
      check_message(raises("invalid_argument", function() return tbl:search():where(w):to_rows() end), "search", w)
    end
  end)

  it("refuses the same on an empty table", function()
    local empty = db:create_table("empty", {}, { schema = SCHEMA })
    check_message(raises("invalid_argument", empty.count_rows, empty, "id < 0) OR (1"), "count_rows", "id < 0) OR (1")
    assert.equal(0, empty:count_rows("id BETWEEN 3 AND 7"))
  end)

  it("names SQLite's complaint without the SQL around the where", function()
    local e = raises("invalid_argument", tbl.backfill, tbl, "dbl", { where = "nope = 1" })
    check_message(e, "backfill", "nope = 1")
    assert.matches("no such column: nope", e.message, 1, true)
    e = raises("invalid_argument", tbl.to_rows, tbl, { where = "id >>> 2" })
    check_message(e, "to_rows", "id >>> 2")
    assert.matches("syntax error", e.message, 1, true)
    e = raises("invalid_argument", tbl.count_rows, tbl, "count(*) > 1")
    check_message(e, "count_rows", "count(*) > 1")
    assert.same({}, db:jobs())
  end)

  it("accepts single expressions with literals, quoted names, IN lists and functions", function()
    for _, case in ipairs(FINE) do
      assert.equal(case[2], tbl:count_rows(case[1]), case[1])
      assert.equal(case[2], #tbl:to_rows { where = case[1] }, case[1])
      assert.equal(case[2], #tbl:search():where(case[1]):to_rows(), case[1])
    end
    local rec = tbl:backfill("dbl", { where = "name = 'a''b' OR name = ')'" })
    assert.equal(2, rec.rows.computed)
    assert.equal(2, tbl:count_rows("dbl IS NOT NULL"))
    rec = tbl:backfill("dbl", { where = '"id" BETWEEN 3 AND 7' })
    assert.equal(5, rec.rows.computed)
    assert.same({ 2, 4, 6, 8, 10, 12, 14 }, (function()
      local o = {}
      for _, r in ipairs(tbl:to_rows { columns = { "dbl" }, where = "dbl IS NOT NULL" }) do o[#o + 1] = r.dbl end
      return o
    end)())
  end)

  it("is checked by a worker too (a task built by hand)", function()
    local task = require("tables").task_for(tbl, "dbl", 1, 4, "id < 0) OR (1")
    local ok, e = pcall(worker.run_task, worker.state(), task)
    assert.is_false(ok)
    assert.is_true(errors.is(e, "invalid_argument"), tostring(e))
    check_message(e, "backfill", "id < 0) OR (1")
  end)
end)
