-- geneva.pretty (how the REPL prints values) and geneva.repl.complete (its
-- Tab key): bounded output, objects as one line, names from real values.
local geneva = require "geneva"
local pretty = require "geneva.pretty"
local repl = require "geneva.repl"
local child = require "child"

describe("geneva.pretty", function()
  local dir, db, tbl

  setup(function()
    dir = child.tmpdir()
    db = geneva.connect(dir .. "/db")
    local rows = {}
    for i = 1, 5000 do rows[i] = { id = i, content = ("w "):rep(i % 4) } end
    tbl = db:create_table("docs", rows)
    tbl:add_columns { words = geneva.udf { data_type = "int64",
      fn = function(content) return content and select(2, content:gsub("%S+", "")) end } }
  end)

  teardown(function() child.rmtree(dir) end)

  it("prints scalars as Lua would read them", function()
    assert.equal('"a\\\nb"', pretty.format("a\nb"))   -- %q
    assert.equal("1.0", pretty.format(1.0))
    assert.equal("3", pretty.format(3))
    assert.equal("nil", pretty.format(nil))
    assert.equal("{}", pretty.format({}))
  end)

  it("puts a table of scalars that fits on one line", function()
    assert.equal('{id = 1, x = "a"}', pretty.format({ x = "a", id = 1 }))
    assert.equal("{\n  id = 1,\n  tags = {\"a\", \"b\"},\n}", pretty.format({ id = 1, tags = { "a", "b" } }))
    assert.equal("{[true] = 1, [1.5] = 2}", pretty.format({ [1.5] = 2, [true] = 1 }))
  end)

  it("truncates long arrays, saying how many are left out", function()
    local out = pretty.format(tbl:to_rows())
    assert.matches("… 4990 more\n}$", out)
    local _, lines = out:gsub("\n", "")
    assert.equal(12, lines)             -- "{", 10 rows, the count; "}" has no newline
    assert.matches('^{\n  {content = "w ", id = 1}', out)
  end)

  it("truncates maps with many keys", function()
    local t = {}
    for i = 1, 50 do t["k" .. i] = { i } end
    local out = pretty.format(t, { max_keys = 5 })
    assert.matches("… 45 more keys\n}$", out)
  end)

  it("limits the depth of nested tables", function()
    local out = pretty.format({ a = { b = { c = { d = { e = 1 } } } } })
    assert.matches("d = {…}", out, 1, true)
    assert.not_matches("e = 1", out, 1, true)
    assert.matches("{…}", pretty.format({ { { 1 } } }, { max_depth = 1 }), 1, true)
  end)

  it("marks cycles", function()
    local t = { name = "x" }
    t.self = t
    assert.matches("self = <cycle>", pretty.format(t), 1, true)
  end)

  it("cuts long strings inside tables, on a character boundary", function()
    local out = pretty.format({ s = ("é"):rep(100) })
    assert.matches('… (200 bytes)', out, 1, true)
    assert.truthy(utf8.len(out), "valid UTF-8")
    assert.equal(('"%s"'):format(("x"):rep(300)), pretty.format(("x"):rep(300)))   -- a result itself: whole
  end)

  it("prints a table, a db, a job and a udf as one line each", function()
    assert.equal("<geneva.Table docs v2 (3 columns)>", pretty.format(tbl))
    assert.equal(("<geneva.Db '%s'>"):format(db.path), pretty.format(db))
    local u = tbl:schema().words
    assert.is_table(u.udf)
    local f = geneva.udf { data_type = "int64", name = "len", fn = function(content) return #content end }
    assert.matches("^<geneva.Udf len %-> int64 %(%x+%)>$", pretty.format(f))
    local j = tbl:backfill_async("words")
    assert.matches("^<geneva.Job %S+ %u+ docs.words %d+/%d+ rows>$", pretty.format(j))
    j:wait()
    assert.matches("^<geneva.Job %S+ DONE docs.words 5000/5000 rows>$", pretty.format(j))
    assert.equal("<geneva.Table docs v3 (3 columns)>", pretty.format(tbl))
    assert.equal("<geneva.Table docs v2 (pinned, 3 columns)>", pretty.format(db:open_table("docs"):checkout(2)))
    assert.equal("<geneva.Error not_found: gone>", pretty.format(require("geneva.errors").new("not_found", "gone")))
  end)

  it("prints job records as a line each, and geneva.null as geneva.null", function()
    local j = tbl:backfill_async("words")
    j:wait()
    local out = pretty.format(db:jobs())
    -- newest first; the earlier backfill computed the rows, this one none
    assert.matches("^{\n  <geneva.JobRecord " .. j.id:gsub("%-", "%%-") .. " DONE docs.words %d+/%d+ rows, %d+[smhd] ago>,\n", out)
    assert.matches("\n  <geneva.JobRecord %S+ DONE docs.words 5000/5000 rows, %d+[smhd] ago>,\n", out)
    local _, lines = out:gsub("\n", "")
    assert.equal(#db:jobs() + 1, lines)
    assert.not_matches("created_at", out, 1, true)
    -- still plain data: fields, and JSON
    local rec = db:jobs()[1]
    assert.equal(j.id, rec.id)
    assert.equal(0, rec.rows.committed)
    assert.equal(5000, db:jobs()[2].rows.committed)
    assert.equal(j.id, require("geneva.json").decode(require("geneva.json").encode(rec)).id)
    -- a record of its own (job:record()) prints whole
    assert.matches("created_at = ", pretty.format(j:record()), 1, true)
    assert.equal("geneva.null", tostring(geneva.null))
    assert.equal("geneva.null", pretty.format(geneva.null))
    assert.equal("{1, geneva.null, 3}", pretty.format({ 1, geneva.null, 3 }))
    assert.equal("{x = geneva.null}", pretty.format({ x = geneva.null }))
  end)

  it("prints a schema once per column, a UDF by its name and version, not its bytecode", function()
    local out = pretty.format(tbl:schema())
    local sc = tbl:schema()
    assert.equal(3, #sc)
    assert.equal(sc[1], sc.content)     -- still indexed by name
    assert.matches("^geneva.Schema %(3 columns%)\n", out)
    local _, n = out:gsub("\n", "")
    assert.equal(3, n)
    assert.matches("words%s+int64%s+udf %S+ " .. sc.words.udf_version:sub(1, 12), out)
    assert.not_matches(sc.words.udf.code, out, 1, true)
    -- the same array without its metatable: each entry once, no bytecode
    local plain = setmetatable(sc, nil)
    out = pretty.format(plain)
    local _, names = out:gsub('name = "words"', "")
    assert.equal(1, names)
  end)

  it("prints a Query with its clauses", function()
    assert.equal("<geneva.Query docs where id > 3 limit 2>", pretty.format(tbl:search():where("id > 3"):limit(2)))
  end)

  it("survives an object whose __tostring raises", function()
    local T = { __name = "my.Thing", __tostring = function() error("broken") end }
    assert.matches("^<my.Thing %(.*broken%)>$", pretty.format(setmetatable({}, T)))
  end)
end)

describe("geneva.repl.complete", function()
  local saved = {}
  setup(function()
    saved.geneva, saved.tbl = rawget(_G, "geneva"), rawget(_G, "tbl")
    _G.geneva = geneva
    local dir = child.tmpdir()
    saved.dir = dir
    _G.tbl = geneva.connect(dir):create_table("t", { { id = 1 } })
  end)
  teardown(function()
    _G.geneva, _G.tbl = saved.geneva, saved.tbl
    child.rmtree(saved.dir)
  end)

  it("completes fields of a module, submodules loaded on first use included", function()
    assert.same({ "geneva.connect", "geneva.context" }, repl.complete("geneva.co"))
    local all = repl.complete("geneva.")
    for _, want in ipairs { "geneva.udf", "geneva.recipe", "geneva.fs", "geneva.null", "geneva.local_cluster" } do
      assert.truthy(table.concat(all, " "):find(want, 1, true), want)
    end
  end)

  it("completes methods after ':' from the metatable's __index", function()
    assert.same({ "tbl:backfill", "tbl:backfill_async" }, repl.complete("tbl:ba"))
    local m = table.concat(repl.complete("tbl:"), " ")
    assert.not_matches("tbl:name", m, 1, true)      -- a field, not a method
    assert.not_matches("_snapshot", m, 1, true)     -- private unless asked
    assert.same({ "tbl:_snapshot" }, repl.complete("tbl:_sn"))
  end)

  it("completes globals and keywords", function()
    assert.same({ "print" }, repl.complete("pri"))
    assert.same({ "while" }, repl.complete("whi"))
    assert.same({ "string.format" }, repl.complete("string.form"))
  end)

  it("offers nothing for unknown or odd words", function()
    assert.same({}, repl.complete("nosuch.x"))
    assert.same({}, repl.complete("geneva..c"))
    assert.same({}, repl.complete("1abc"))
    assert.same({}, repl.complete("print.x"))      -- a function has no fields
  end)
end)
