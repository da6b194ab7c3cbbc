-- Specs for tables: geneva.connect, Db, Table, storage, reader, ingest. memcheck
-- Runs on a directory and on s3 (moto): see testdb.lua. storage: dir s3
local geneva = require "geneva"
local testdb = require "testdb"
local json = require "geneva.json"
local errors = require "geneva.errors"
local sqlite = require "geneva.sqlite"
local storage = require "geneva.store.versions"
local reader = require "geneva.store.reader"
local proc = require "geneva.proc"
local fs = require "geneva.fs"
local child = require "child"
local tables = require "tables"

local raises = require("expect").raises

-- A stand-in for geneva.udf objects: what the table layer relies on.
local function fake_udf(version, data_type, inputs)
  return {
    version = version, data_type = data_type or "int64", input_columns = inputs or { "content" },
    spec = function() return { fn = "fake", data_type = data_type or "int64", input_columns = inputs or { "content" } } end,
  }
end

-- Writes a staged column file col(_rowid, value) holding {rowid = value}
-- (a value of false stores NULL).
local function staged(dir, values)
  local path = ("%s/staged-%s.db"):format(dir, require("geneva.fs").random_hex(8))
  local db <close> = assert(sqlite.open(path))
  assert(db:exec("CREATE TABLE col(_rowid INTEGER PRIMARY KEY, value)"))
  local lo, hi
  for rowid, v in pairs(values) do
    if v == false then v = nil end
    assert(db:exec("INSERT INTO col VALUES (?, ?)", rowid, v))
    lo = math.min(lo or rowid, rowid)
    hi = math.max(hi or rowid, rowid)
  end
  return path, lo, hi
end

local function ids(rows, key)
  local out = {}
  for i, r in ipairs(rows) do out[i] = r[key or "id"] == nil and "nil" or r[key or "id"] end
  return out
end

local write = child.write

-- rows (id, content): "w<i> " one to four times
local make_docs = tables.maker { rows = function(i)
  return { id = i, content = ("w%d "):rep(i % 4 + 1):format(i, i, i, i) }
end }

describe("geneva tables", function()
  local root, db
  before_each(function()
    root = child.tmpdir()
    db = testdb.connect(root .. "/db")
  end)
  after_each(function() child.rmtree(root) end)

  local function docs(n, opts) return make_docs(db, "docs", n, opts) end

  describe("geneva.connect", function()
    it("creates the directory and remembers the latest db", function()
      assert.is_true(fs.exists(db.path))     -- the directory, or an s3 db's mirror
      assert.equal(db, geneva._latest_db)
      local db2 = geneva.connect(root .. "/other")
      assert.equal(db2, geneva._latest_db)
      assert.equal(db2, require("geneva.db").latest())
    end)

    it("rejects URIs it cannot serve, and bad s3 URIs and options before any request", function()
      raises("invalid_argument", geneva.connect, "gs://bucket/x")
      raises("invalid_argument", geneva.connect, "s3://Not_A_Bucket/x")
      raises("invalid_argument", geneva.connect, "s3://bucket/../x")
      local e = raises("invalid_argument", geneva.connect, "s3://bucket/x", { regoin = "eu-west-1" })
      assert.matches("unknown option 'regoin'", e.message)
      raises("invalid_argument", geneva.connect, "s3://bucket/x", { path_style = "yes" })
      raises("invalid_argument", geneva.connect, 42)
    end)
  end)

  describe("Db", function()
    it("creates, lists, opens and drops tables", function()
      docs(3)
      db:create_table("a_first", { { x = 1 } })
      assert.same({ "a_first", "docs" }, db:table_names())
      local t = db:open_table("docs")
      assert.equal("docs", t.name)
      assert.equal(db, t.db)
      assert.equal(db.path .. "/docs", t.dir)
      assert.equal(1, t:version())
      assert.equal(3, t:count_rows())
      assert.is_true(db:drop_table("docs"))
      assert.same({ "a_first" }, db:table_names())
      raises("not_found", db.open_table, db, "docs")
    end)

    it("uses conflict, not_found and invalid_argument codes", function()
      docs(1)
      local e = raises("conflict", db.create_table, db, "docs", { { id = 1 } })
      assert.equal("conflict: table 'docs' already exists", tostring(e))
      raises("not_found", db.open_table, db, "nope")
      raises("not_found", db.drop_table, db, "nope")
      raises("invalid_argument", db.create_table, db, "_hidden", { { id = 1 } })
      raises("invalid_argument", db.create_table, db, "a/b", { { id = 1 } })
      raises("invalid_argument", db.create_table, db, "t", { { ["bad name"] = 1 } })
      raises("invalid_argument", db.create_table, db, "t", { { id = 1 } }, { bogus = 1 })
      raises("invalid_argument", db.create_table, db, "t", {})          -- no columns at all
      assert.same({ "docs" }, db:table_names())
    end)

    it("overwrites with mode = 'overwrite', as the table's next version", function()
      local old = docs(5)
      local before = old:version()
      local t = db:create_table("docs", { { z = "x" } }, { mode = "overwrite" })
      assert.equal(before + 1, t:version())
      assert.same({ { z = "x" } }, t:to_rows())
      assert.equal("overwrite", storage.latest(t.dir).operation)
      -- the old rows stay readable at their version until cleanup
      assert.equal(5, t:checkout(before):count_rows())
      t:checkout_latest()
      -- fragment ids go on (checkpoints name fragments by id)
      local old_ids = {}
      for _, f in ipairs(storage.read(t.dir, before).fragments) do old_ids[f.id] = true end
      for _, f in ipairs(storage.latest(t.dir).fragments) do assert.is_nil(old_ids[f.id]) end
      -- and a cleanup then frees the old files
      local r = t:cleanup_old_versions { older_than = 0, grace = 0 }
      assert.is_true(r.files_removed > 0)
      assert.same({ { z = "x" } }, t:to_rows())
    end)

    it("creates an empty table from a schema", function()
      local t = db:create_table("e", {}, { schema = { { name = "b", data_type = "string" }, { name = "a", data_type = "int64" } } })
      assert.equal(0, t:count_rows())
      assert.same({}, t:to_rows())
      assert.equal(0, t:count_rows("a > 1"))
      raises("invalid_argument", t.count_rows, t, "nope = 1")
      t:add { { a = 1, b = "x" } }
      assert.same({ { a = 1, b = "x" } }, t:to_rows())
    end)
  end)

  describe("schema", function()
    it("orders columns by opts.schema, else sorted names", function()
      local t = db:create_table("s", { { zeta = 1, alpha = "a", mid = true } })
      local s = t:schema()
      assert.same({ "alpha", "mid", "zeta" }, { s[1].name, s[2].name, s[3].name })
      assert.equal("bool", s.mid.data_type)
      assert.equal("int64", s.zeta.data_type)
      assert.is_false(s.zeta.virtual)
      local t2 = db:create_table("s2", { { zeta = 1, alpha = "a", mid = 1.5 } },
        { schema = { { name = "zeta", data_type = "float64" }, { name = "mid", data_type = "float64" } } })
      s = t2:schema()
      assert.same({ "zeta", "mid", "alpha" }, { s[1].name, s[2].name, s[3].name })
      assert.equal("float64", s.zeta.data_type)
      assert.equal(1.0, t2:to_rows()[1].zeta)
      assert.equal("float", math.type(t2:to_rows()[1].zeta))
    end)

    it("infers int64 + float64 as float64 and refuses mixed kinds", function()
      local t = db:create_table("m", { { x = 1 }, { x = 2.5 } })
      assert.equal("float64", t:schema().x.data_type)
      local e = raises("invalid_argument", db.create_table, db, "m2", { { x = 1 }, { x = "s" } })
      assert.matches("row 2", e.message)
      assert.equal("x", e.column)
    end)

    it("a version file that is valid JSON with wrong fields is a clear error naming the file and field", function()
      local t = docs(3)
      local backend = require "geneva.store.backend"
      local path = t.dir .. "/_versions/2.json"
      local m = t:_snapshot()
      m.version, m.fragments[1].rows = 2, "three"
      assert(backend.put_if_absent(path, json.encode(m)))
      local e = raises("internal", t.count_rows, t)
      assert.matches("_versions/2%.json: corrupt version file: fragments%[1%]%.rows is not a count", e.message)
      m.fragments[1].rows, m.fragments[1].data = 3, "../../etc/passwd"
      assert(backend.put(path, json.encode(m)))
      e = raises("internal", t.count_rows, t)
      assert.matches("fragments%[1%]%.data is not a data file name", e.message)
    end)

    it("rejects Lua rows with holes or non-index keys instead of losing rows", function()
      local e = raises("invalid_argument", db.create_table, db, "holes", { [1] = { id = 1 }, [3] = { id = 3 } })
      assert.matches("without holes: it has key 3 beyond its 1 rows", e.message)
      e = raises("invalid_argument", db.create_table, db, "keyed", { { id = 1 }, extra = { id = 2 } })
      assert.matches("key 'extra'", e.message)
      local t = docs(2)
      raises("invalid_argument", t.add, t, { [2] = { id = 9, content = "x" } })
      assert.equal(2, t:count_rows())
      assert.is_false(db:table_names()[1] == "holes")
    end)

    it("rejects values that do not fit the given type, naming row and column", function()
      local e = raises("invalid_argument", db.create_table, db, "m", { { x = 1 }, { x = "2" } },
        { schema = { x = "int64" } })
      assert.matches("^row 2: column 'x': expected int64", e.message)
      assert.same({}, db:table_names())
    end)
  end)

  describe("types", function()
    it("round-trips every type, NULLs, 64-bit ints and vectors", function()
      local big = math.maxinteger
      local rows = {
        { i = big, f = 1 / 3, s = "héllo\0x", b = true, blob = "\0\1\2\255", v = { 1.5, -2, 0.25 } },
        { i = math.mininteger, f = -0.0, s = "", b = false, blob = "", v = { 0, 0, 0 } },
        { i = 123456789012345678 },                            -- all other NULL
      }
      local t = db:create_table("types", rows, { schema = {
        { name = "i", data_type = "int64" }, { name = "f", data_type = "float64" },
        { name = "s", data_type = "string" }, { name = "b", data_type = "bool" },
        { name = "blob", data_type = "blob" }, { name = "v", data_type = "float32[3]" } } })
      local out = t:to_rows()
      assert.same(rows, out)
      assert.equal("integer", math.type(out[1].i))
      assert.equal(big, out[1].i)
      assert.equal(123456789012345678, out[3].i)
      assert.is_nil(out[3].v)
      -- on disk: vectors are little-endian float32 blobs, bools 0/1
      local m = t:_snapshot()
      local f <close> = assert(sqlite.open(t.dir .. "/" .. m.fragments[1].data, { readonly = true }))
      assert.equal(string.pack("<fff", 1.5, -2, 0.25), f:value("SELECT v FROM data WHERE _rowid = 1"))
      assert.equal("blob", f:value("SELECT typeof(v) FROM data WHERE _rowid = 1"))
      assert.equal("blob", f:value("SELECT typeof(blob) FROM data WHERE _rowid = 1"))
      assert.equal(1, f:value("SELECT b FROM data WHERE _rowid = 1"))
    end)

    it("infers vectors from arrays of numbers and accepts geneva.null", function()
      local t = db:create_table("v", { { v = { 1, 2 } }, { v = geneva.null } })
      assert.equal("float32[2]", t:schema().v.data_type)
      assert.same({ { v = { 1, 2 } }, {} }, t:to_rows())
      raises("invalid_argument", t.add, t, { { v = { 1, 2, 3 } } })
      raises("invalid_argument", t.add, t, { { nope = 1 } })
    end)
  end)

  describe("Table reads", function()
    it("adds fragments of fragment_size rows", function()
      local t = docs(5, { fragment_size = 2 })
      assert.equal(3, #t:_snapshot().fragments)
      local rows = {}
      for i = 6, 12 do rows[#rows + 1] = { id = i, content = "x" } end
      t:add(rows)
      local m = t:_snapshot()
      assert.equal(2, m.version)
      assert.equal("add", m.operation)
      assert.same({ 2, 2, 1, 2, 2, 2, 1 }, (function()
        local o = {} for i, f in ipairs(m.fragments) do o[i] = f.rows end return o end)())
      assert.same({ 1, 2, 3, 4, 5, 6, 7 }, (function()
        local o = {} for i, f in ipairs(m.fragments) do o[i] = f.id end return o end)())
      assert.equal(12, t:count_rows())
      assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, ids(t:to_rows()))
    end)

    it("counts and lists with where, columns and limit in (fragment, rowid) order", function()
      local t = docs(10, { fragment_size = 3 })
      assert.equal(5, t:count_rows("id % 2 = 0"))
      assert.equal(0, t:count_rows("id > 100"))
      assert.same({ 2, 4, 6, 8, 10 }, ids(t:to_rows { where = "id % 2 = 0" }))
      assert.same({ 2, 4, 6 }, ids(t:to_rows { where = "id % 2 = 0", limit = 3 }))
      assert.same({}, t:to_rows { limit = 0 })
      local r = t:to_rows { columns = { "content" }, where = "id = 7" }
      assert.same({ { content = "w7 w7 w7 w7 " } }, r)
      r = t:to_rows { columns = { "_rowid", "id" }, where = "id >= 3 AND id <= 4" }
      assert.same({ { _rowid = 3, id = 3 }, { _rowid = 1, id = 4 } }, r)
    end)

    it("names bad where clauses and unknown columns", function()
      local t = docs(3)
      local e = raises("invalid_argument", t.to_rows, t, { where = "id >>> 2" })
      assert.matches('to_rows: where "id >>> 2": ', e.message, 1, true)
      e = raises("invalid_argument", t.count_rows, t, "nope = 1")
      assert.matches("no such column: nope", e.message)
      raises("invalid_argument", t.to_rows, t, { columns = { "nope" } })
      raises("invalid_argument", t.to_rows, t, { limit = -1 })
      raises("invalid_argument", t.count_rows, t, 42)
    end)

    it("has a search builder", function()
      local t = docs(10, { fragment_size = 4 })
      local q = t:search():where("id > 3"):select { "id" }:limit(2)
      assert.same({ { id = 4 }, { id = 5 } }, q:to_rows())
      assert.equal(7, t:search():where("id > 3"):count_rows())
      assert.equal(10, #t:search():to_rows())
    end)
  end)

  describe("versions", function()
    it("pins a checkout read-only and keeps old versions readable", function()
      local t = docs(4, { fragment_size = 2 })
      t:add { { id = 5, content = "x" } }
      t:add { { id = 6, content = "y" } }
      assert.equal(3, t:version())
      assert.same({ 1, 2, 3 }, t:versions())
      local old = db:open_table("docs"):checkout(1)
      assert.equal(1, old:version())
      assert.equal(4, old:count_rows())
      assert.same({ 1, 2, 3, 4 }, ids(old:to_rows()))
      local e = raises("invalid_argument", old.add, old, { { id = 9 } })
      assert.matches("checked out at version 1", e.message)
      raises("invalid_argument", old.add_columns, old, { w = fake_udf("v1") })
      raises("invalid_argument", old.drop_columns, old, { "content" })
      raises("invalid_argument", old.compact, old)
      raises("not_found", t.checkout, t, 99)
      assert.equal(old, old:checkout_latest())
      assert.equal(3, old:version())
      assert.equal(6, old:count_rows())
    end)

    it("writes integer versions and arrays in the version files", function()
      local t = docs(1)
      local backend = require "geneva.store.backend"
      local text = assert(backend.get(t.dir .. "/_versions/1.json"))
      assert.matches('"version": ?1[,\n]', text)
      assert.matches('"columns": ?{}', text)
      assert.same({ 1 }, storage.versions(t.dir))
      assert(backend.put(t.dir .. "/_versions/.tmp-junk", "x"))
      assert.same({ 1 }, storage.versions(t.dir))
    end)
  end)

  describe("columns", function()
    it("adds virtual columns that read NULL until values are committed", function()
      local t = docs(5, { fragment_size = 3 })
      t:add_columns { words = fake_udf("v1") }
      local s = t:schema()
      assert.equal("words", s[3].name)
      assert.is_true(s.words.virtual)
      assert.equal("int64", s.words.data_type)
      assert.equal("fake", s.words.udf.fn)
      assert.equal("v1", s.words.udf_version)
      assert.equal(5, t:count_rows("words IS NULL"))
      local path, lo, hi = staged(root, { [1] = 10, [3] = 30 })
      local v, n = t:_commit_column_files("words", "v1", { { fragment = 1, path = path, lo = lo, hi = hi } })
      assert.equal(3, v)
      assert.equal(1, n)
      assert.is_false(fs.exists(path))
      assert.same({ 10, "nil", 30, "nil", "nil" }, ids(t:to_rows(), "words"))
      assert.equal(2, t:count_rows("words IS NOT NULL"))
      assert.same({ 3 }, ids(t:to_rows { columns = { "id" }, where = "words > 20" }))
      -- the reader exposes the winning file's udf_version
      local m = t:_snapshot()
      local r <close> = reader.open(t.dir, m, m.fragments[1], { columns = { "words" } })
      local vers = {}
      for row in r:rows('SELECT "__ver_words" FROM t ORDER BY _rowid') do vers[#vers + 1] = row[1] end
      assert.same({ "v1", sqlite.null, "v1" }, vers)
    end)

    it("stores a real geneva.udf's spec and version", function()
      local t = docs(2)
      local u = geneva.udf { data_type = "int64", fn = function(content) return #content end }
      t:add_columns { n = u }
      local c = t:schema().n
      assert.equal(u.version, c.udf_version)
      assert.same({ "content" }, c.udf.input_columns)
      assert.equal("int64", c.data_type)
      -- reopened from disk the same
      assert.same(c, db:open_table("docs"):schema().n)
    end)

    it("validates add_columns", function()
      local t = docs(2)
      raises("conflict", t.add_columns, t, { id = fake_udf("v1") })
      raises("conflict", t.add_columns, t, { ID = fake_udf("v1") })
      raises("invalid_argument", t.add_columns, t, { ["bad-name"] = fake_udf("v1") })
      raises("invalid_argument", t.add_columns, t, { w = fake_udf("v1", "int64", { "nope" }) })
      raises("invalid_argument", t.add_columns, t, { w = fake_udf("v1", "int64", { "w" }) })
      raises("invalid_argument", t.add_columns, t, { w = fake_udf("v1", "int8") })
      raises("invalid_argument", t.add_columns, t, { w = 42 })
      assert.equal(1, t:version())
    end)

    it("lets the newest file win, even with NULL", function()
      local t = docs(3)
      t:add_columns { words = fake_udf("v1") }
      local p1 = staged(root, { [1] = 1, [2] = 2, [3] = 3 })
      local p2 = staged(root, { [2] = false, [3] = 33 })
      t:_commit_column_files("words", "v1", { { fragment = 1, path = p1, lo = 1, hi = 3 } })
      t:_commit_column_files("words", "v1", { { fragment = 1, path = p2, lo = 2, hi = 3 } })
      assert.same({ 1, "nil", 33 }, ids(t:to_rows(), "words"))
      assert.equal(1, t:count_rows("words IS NULL"))
    end)

    it("alters a column: values stay, the udf_version changes", function()
      local t = docs(2)
      t:add_columns { words = fake_udf("v1") }
      t:_commit_column_files("words", "v1", { { fragment = 1, path = staged(root, { [1] = 7, [2] = 8 }), lo = 1, hi = 2 } })
      t:alter_columns { { path = "words", udf = fake_udf("v2") } }
      assert.equal("v2", t:schema().words.udf_version)
      assert.same({ 7, 8 }, ids(t:to_rows(), "words"))
      -- rows are now stale: their file's version is not the column's
      assert.equal(2, t:count_rows("\"__ver_words\" IS NOT 'v2'"))
      -- a commit for the old version is refused, and the staged file stays
      local p = staged(root, { [1] = 1 })
      local e = raises("conflict", t._commit_column_files, t, "words", "v1", { { fragment = 1, path = p, lo = 1, hi = 1 } })
      assert.matches("altered", e.message)
      assert.is_true(fs.exists(p))
      raises("not_found", t.alter_columns, t, { { path = "nope", udf = fake_udf("v3") } })
      raises("invalid_argument", t.alter_columns, t, { { path = "id", udf = fake_udf("v3") } })
      raises("invalid_argument", t.alter_columns, t, { { path = "words", udf = fake_udf("v3", "string") } })
    end)

    it("alters columns given as add_columns takes them, and refuses an empty or mixed list, committing nothing", function()
      local t = docs(2)
      t:add_columns { words = fake_udf("v1"), chars = fake_udf("c1") }
      local v = t:version()
      t:alter_columns { words = fake_udf("v2"), chars = fake_udf("c2") }     -- the map form
      assert.equal(v + 1, t:version())
      assert.equal("v2", t:schema().words.udf_version)
      assert.equal("c2", t:schema().chars.udf_version)
      t:alter_columns { path = "words", udf = fake_udf("v3") }              -- one entry
      assert.equal("v3", t:schema().words.udf_version)
      v = t:version()
      local e = raises("invalid_argument", t.alter_columns, t, {})
      assert.matches("alter_columns: no column to alter (expected { {path = column, udf = udf}, ... } or "
        .. "{column = udf, ...})", e.message, 1, true)
      e = raises("invalid_argument", t.alter_columns, t, { { path = "words", udf = fake_udf("v4") }, chars = fake_udf("c4") })
      assert.matches("not both; 'chars' is neither", e.message, 1, true)
      raises("invalid_argument", t.alter_columns, t, { words = 42 })
      raises("not_found", t.alter_columns, t, { nope = fake_udf("v4") })
      assert.equal(v, t:version())
      assert.equal("v3", t:schema().words.udf_version)
    end)

    it("drops columns", function()
      local t = docs(2)
      t:add_columns { words = fake_udf("v1") }
      t:_commit_column_files("words", "v1", { { fragment = 1, path = staged(root, { [1] = 7 }), lo = 1, hi = 1 } })
      raises("invalid_argument", t.drop_columns, t, { "content" })   -- words reads it
      raises("not_found", t.drop_columns, t, { "nope" })
      t:drop_columns { "words" }
      assert.same({ "content", "id" }, { t:schema()[1].name, t:schema()[2].name })
      assert.is_nil(t:schema().words)
      assert.same({ { id = 1, content = "w1 w1 " }, { id = 2, content = "w2 w2 w2 " } }, t:to_rows())
      raises("invalid_argument", t.to_rows, t, { columns = { "words" } })
      -- a commit for the dropped column is a conflict
      local p = staged(root, { [1] = 1 })
      raises("conflict", t._commit_column_files, t, "words", "v1", { { fragment = 1, path = p, lo = 1, hi = 1 } })
      -- re-adding starts empty
      t:add_columns { words = fake_udf("v1", "int64", { "id" }) }
      assert.equal(2, t:count_rows("words IS NULL"))
      t:drop_columns "content"
      raises("invalid_argument", t.drop_columns, t, { "id" })      -- last stored column
      assert.same({ { id = 1 }, { id = 2 } }, t:to_rows())
    end)

    it("skips files of fragments that do not exist", function()
      local t = docs(2)
      t:add_columns { words = fake_udf("v1") }
      local p = staged(root, { [1] = 1 })
      local v, n = t:_commit_column_files("words", "v1", { { fragment = 42, path = p, lo = 1, hi = 1 } })
      assert.equal(0, n)
      assert.equal(2, v)
      assert.is_true(fs.exists(p))
    end)

    it("reads more column files than SQLite can attach, folds at commit and compacts", function()
      local t = docs(12, { fragment_size = 6 })
      t:add_columns { a = fake_udf("va"), b = fake_udf("vb") }
      -- 8 files for a (the most a commit leaves) and 5 for b in fragment 1
      for k = 1, 8 do
        t:_commit_column_files("a", "va", { { fragment = 1, path = staged(root, { [k % 5 + 2] = k * 100, [1] = k }), lo = 1, hi = 6 } })
      end
      for k = 1, 5 do
        t:_commit_column_files("b", "vb", { { fragment = 1, path = staged(root, { [k] = -k }), lo = k, hi = k } })
      end
      local m = t:_snapshot()
      assert.equal(8, #m.fragments[1].columns.a)
      assert.equal(5, #m.fragments[1].columns.b)
      local expect_a = { 8, 500, 600, 700, 800, 400 }    -- rowid 1: k=8 wins; others by k % 5 + 2
      local rows = t:to_rows { columns = { "a", "b" }, where = "id <= 6" }
      assert.same(expect_a, ids(rows, "a"))
      assert.same({ -1, -2, -3, -4, -5, "nil" }, ids(rows, "b"))
      local before = t:version()
      -- a 9th file for a: the commit folds the list
      t:_commit_column_files("a", "va", { { fragment = 1, path = staged(root, { [2] = false }), lo = 2, hi = 2 } })
      m = t:_snapshot()
      assert.equal(1, #m.fragments[1].columns.a)
      expect_a[2] = "nil"
      assert.same(expect_a, ids(t:to_rows { columns = { "a" }, where = "id <= 6" }, "a"))
      -- compact folds b; older versions still read the same
      t:compact()
      m = t:_snapshot()
      assert.equal(1, #m.fragments[1].columns.b)
      assert.equal("compact", m.operation)
      assert.same({ -1, -2, -3, -4, -5, "nil" }, ids(t:to_rows { columns = { "b" }, where = "id <= 6" }, "b"))
      local old = db:open_table("docs"):checkout(before)
      assert.same({ 8, 500, 600, 700, 800, 400 }, ids(old:to_rows { columns = { "a" }, where = "id <= 6" }, "a"))
      assert.same({ -1, -2, -3, -4, -5, "nil" }, ids(old:to_rows { columns = { "b" }, where = "id <= 6" }, "b"))
      local v = t:version()
      t:compact()                                          -- nothing left to fold
      assert.equal(v, t:version())
    end)

    it("reader folds one column's list when it holds more files than SQLite attaches", function()
      local t = docs(20)
      t:add_columns { a = fake_udf("va") }
      local m = t:_snapshot()
      local list = {}
      for k = 1, 14 do      -- file k holds rowid k (= k) and rowid 20 (= k, or NULL for the last)
        local path = staged(root, { [k] = k, [20] = k < 14 and k or false })
        list[k] = { file = storage.publish_file(t.dir, path, "c"), udf_version = "v" .. k, lo = k, hi = 20 }
      end
      m.fragments[1].columns.a = list
      local r <close> = reader.open(t.dir, m, m.fragments[1], { columns = { "id", "a" } })
      local got = {}
      for row in r:rows('SELECT _rowid, a, "__ver_a" FROM t ORDER BY _rowid') do got[#got + 1] = row end
      assert.equal(20, #got)
      for k = 1, 14 do assert.same({ k, k, "v" .. k }, { got[k][1], got[k][2], got[k][3] }) end
      assert.same({ 15, sqlite.null, sqlite.null }, got[15])
      assert.same({ 20, sqlite.null, "v14" }, got[20])     -- the newest file's NULL wins
      raises("invalid_argument", reader.open, t.dir, m, m.fragments[1], { columns = { "nope" } })
    end)

    it("keeps per-row udf versions when compacting mixed files", function()
      local t = docs(3)
      t:add_columns { w = fake_udf("v1") }
      t:_commit_column_files("w", "v1", { { fragment = 1, path = staged(root, { [1] = 1, [2] = 2, [3] = 3 }), lo = 1, hi = 3 } })
      t:alter_columns { { path = "w", udf = fake_udf("v2") } }
      t:_commit_column_files("w", "v2", { { fragment = 1, path = staged(root, { [2] = 20 }), lo = 2, hi = 2 } })
      t:compact()
      assert.same({ 1, 20, 3 }, ids(t:to_rows(), "w"))
      assert.equal(2, t:count_rows("\"__ver_w\" = 'v1'"))
      assert.equal(1, t:count_rows("\"__ver_w\" = 'v2'"))
    end)
  end)

  describe("files", function()
    it("creates tables from CSV with quoting and inferred or given types", function()
      local path = root .. "/in.csv"
      write(path, 'id,name,score,ok\r\n1,"Smith, J",1.5,true\r\n2,"say ""hi""\nthere",,false\n3,plain,2,\n')
      local t = db:create_table("c", { from = path })
      local s = t:schema()
      assert.same({ "id", "name", "score", "ok" }, { s[1].name, s[2].name, s[3].name, s[4].name })
      assert.same({ "int64", "string", "float64", "bool" }, { s[1].data_type, s[2].data_type, s[3].data_type, s[4].data_type })
      assert.same({
        { id = 1, name = "Smith, J", score = 1.5, ok = true },
        { id = 2, name = 'say "hi"\nthere', ok = false },
        { id = 3, name = "plain", score = 2.0 },
      }, t:to_rows())
      local t2 = db:create_table("c2", { from = path }, { schema = { id = "string" } })
      assert.equal("string", t2:schema().id.data_type)
      assert.equal("1", t2:to_rows()[1].id)
      t:add { from = path }
      assert.equal(6, t:count_rows())
    end)

    it("reports malformed CSV with file:line and creates nothing", function()
      local path = root .. "/bad.csv"
      write(path, 'id,name\n1,a\n2,b"c\n4,d\n')
      local e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.equal(3, e.line)
      assert.equal(path, e.path)
      assert.matches(path .. ":3: ", e.message, 1, true)
      assert.matches("^invalid_argument: .*:3: quote", tostring(e))
      write(path, 'id,name\n1,a\n2,b\n3,c\n4,d,e\n')
      e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.equal(5, e.line)
      assert.matches(":5: expected 2 fields, got 3", e.message)
      write(path, 'id,name\n1,"a\n2,b\n')
      e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.matches("unterminated", e.message)
      write(path, 'id,name\n1,a\nx,b\n')
      e = raises("invalid_argument", db.create_table, db, "bad", { from = path }, { schema = { id = "int64" } })
      assert.equal(3, e.line)
      assert.matches(":3: column 'id': expected int64", e.message)
      assert.same({}, db:table_names())
      assert.is_false(fs.exists(db.path .. "/bad"))
    end)

    it("creates tables from JSONL and reports bad lines", function()
      local path = root .. "/in.jsonl"
      write(path, '{"id": 1, "tags": "a", "v": [1, 2]}\n\n{"id": 12345678901234567, "tags": null, "v": [3, 4]}\n')
      local t = db:create_table("j", { from = path })
      assert.same({ { id = 1, tags = "a", v = { 1, 2 } }, { id = 12345678901234567, v = { 3, 4 } } }, t:to_rows())
      write(path, '{"id": 1}\n{"id": 2,,}\n')
      local e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.equal(2, e.line)
      assert.matches(path .. ":2: bad JSON", e.message, 1, true)
      write(path, '{"id": 1}\n[1]\n')
      e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.equal(2, e.line)
      write(path, '{"id": 1}\n{"id": 2}\n{"id": "three"}\n')
      e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.equal(3, e.line)
      -- a bad append changes nothing
      write(path, '{"id": 5, "tags": "x", "v": [1, 2]}\n{"id": 6, "tags": "y", "v": [1]}\n')
      e = raises("invalid_argument", t.add, t, { from = path })
      assert.equal(2, e.line)
      assert.equal(1, t:version())
      assert.same({ "j" }, db:table_names())
      raises("not_found", db.create_table, db, "bad", { from = root .. "/missing.csv" })
      raises("invalid_argument", db.create_table, db, "bad", { from = root .. "/x.parquet" })
    end)
  end)

  describe("cleanup_old_versions", function()
    local backend = require "geneva.store.backend"
    local function data_files(t)
      local n = 0
      for _, name in ipairs(backend.list(t.dir .. "/data")) do
        if name:match("%.db$") then n = n + 1 end
      end
      return n
    end

    it("removes old versions and the files only they, crashed commits or failed folds left; reads stay exact", function()
      local t = docs(6, { fragment_size = 2 })
      t:add_columns { words = fake_udf("v1") }
      for k = 1, 4 do      -- four commits of column files, then a compact
        local path, lo, hi = staged(root, { [1] = 10 * k, [2] = 20 * k })
        t:_commit_column_files("words", "v1", { { fragment = 1, path = path, lo = lo, hi = hi } })
      end
      t:compact()
      -- what a kill -9 mid-commit and a fold on a full disk leave behind
      assert(backend.put(t.dir .. "/data/c-00000000deadbeef.db", "orphan"))
      assert(backend.put(t.dir .. "/data/.tmp-0000000000000001.db", "half a fold"))
      local before_rows = t:to_rows()
      local before_files = data_files(t)
      local latest = t:version()
      -- young orphans survive the grace period (a commit may be in flight)
      local r = t:cleanup_old_versions { older_than = 0 }
      assert.equal(latest - 1, r.versions_removed)
      assert.same({ latest }, t:versions())
      assert.is_true(backend.exists(t.dir .. "/data/c-00000000deadbeef.db"))
      local after_versions = data_files(t)
      assert.is_true(after_versions < before_files, ("%d -> %d files"):format(before_files, after_versions))
      -- past it, they go
      r = t:cleanup_old_versions { older_than = 0, grace = 0 }
      assert.equal(2, r.files_removed)
      assert.is_false(backend.exists(t.dir .. "/data/c-00000000deadbeef.db"))
      assert.is_false(backend.exists(t.dir .. "/data/.tmp-0000000000000001.db"))
      assert.same(before_rows, geneva.connect(db.uri):open_table("docs"):to_rows())
      raises("not_found", t.checkout, t, 1)
      -- a second run finds nothing; bad options are refused
      r = t:cleanup_old_versions { older_than = 0, grace = 0 }
      assert.same({ 0, 0 }, { r.versions_removed, r.files_removed })
      raises("invalid_argument", t.cleanup_old_versions, t, { older = 1 })
      raises("invalid_argument", t.cleanup_old_versions, t, { grace = "1h" })
    end)

    it("geneva tables list|show|cleanup", function()
      local t = docs(6, { fragment_size = 2 })
      t:add_columns { words = fake_udf("v1") }
      local path, lo, hi = staged(root, { [1] = 10, [2] = 20 })
      t:_commit_column_files("words", "v1", { { fragment = 1, path = path, lo = lo, hi = hi } })
      local code, out = child.cli { "tables", "list", "--db", db.uri }
      assert.equal(0, code)
      assert.matches("NAME%s+ROWS%s+VERSION%s+FRAGMENTS", out)
      assert.matches("docs%s+6%s+3%s+3", out)
      code, out = child.cli { "tables", "show", "docs", "--db", db.uri, "--json" }
      assert.equal(0, code)
      local s = json.decode(out)
      assert.equal(6, s.rows)
      assert.equal("words", s.columns[3].name)
      assert.equal(2, s.columns[3].filled)
      code, out = child.cli { "tables", "cleanup", "docs", "--db", db.uri, "--older-than", "0", "--json" }
      assert.equal(0, code)
      assert.equal(2, json.decode(out).versions_removed)
      assert.same({ 3 }, t:versions())
      assert.equal(2, (child.cli { "tables", "cleanup", "docs", "--db", db.uri, "--older-than", "soon" }))
      -- -o yaml: the --json data; -o wide: more columns
      local _, as_json = child.cli { "tables", "show", "docs", "--db", db.uri, "--json" }
      local _, as_yaml = child.cli { "tables", "show", "docs", "--db", db.uri, "-o", "yaml" }
      assert.equal(json.canonical(json.decode(as_json)),
        json.canonical(json.decode(json.encode(require("geneva.yaml").load(as_yaml)))))
      assert.matches("^columns:\n", as_yaml)
      code, out = child.cli { "tables", "list", "--db", db.uri, "-o", "wide" }
      assert.equal(0, code)
      assert.matches("NAME%s+ROWS%s+VERSION%s+FRAGMENTS%s+CHANGED%s+VERSIONS%s+COLUMNS%s+FILES\n", out)
      assert.matches("docs%s+6%s+3%s+3%s+%S+%s+1%s+2 %+ 1%s+4\n", out)
      code, out = child.cli { "tables", "show", "docs", "--db", db.uri, "-o", "wide" }
      assert.equal(0, code)
      assert.matches("COLUMN%s+TYPE%s+KIND%s+FILLED%s+UDF VERSION%s+FILES\n", out)
      assert.matches("words%s+int64%s+udf %S+%s+2 %(33%%%)%s+v1%s+1\n", out)
      assert.equal(1, (child.cli { "tables", "show", "nope", "--db", db.uri }))
    end)
  end)

  describe("compact", function()
    local backend = require "geneva.store.backend"
    -- the files the latest version reads: data files and column files
    local function referenced(t)
      local n = 0
      for _, f in ipairs(t:_snapshot().fragments) do
        n = n + 1
        for _, list in pairs(f.columns) do n = n + #list end
      end
      return n
    end
    local function on_disk(t)
      local n = 0
      for _, name in ipairs(backend.list(t.dir .. "/data") or {}) do
        if name:match("%.db$") then n = n + 1 end
      end
      return n
    end
    local COLS = { "id", "content", "x", "v", "words", "half" }

    -- a table grown by many small appends, each few followed by backfills
    local function grown(appends, opts)
      local t = db:create_table("g", { { id = 1, content = "a b", x = 0 / 0, v = { 1, 2 } } },
        { schema = { { name = "id", data_type = "int64" }, { name = "content", data_type = "string" },
                     { name = "x", data_type = "float64" }, { name = "v", data_type = "float32[2]" } },
          fragment_size = opts and opts.fragment_size })
      t:add_columns {
        words = geneva.udf { data_type = "int64", fn = function(content)
          return content and select(2, content:gsub("%S+", "")) end },
        half = geneva.udf { data_type = "float64", on_error = "null", fn = function(id)
          if id % 7 == 0 then error("seven") end return id / 2 end } }
      for k = 1, appends do
        local rows = {}
        for i = 1, 5 do
          local id = k * 5 + i
          rows[i] = { id = id, content = id % 4 ~= 0 and ("w "):rep(id % 3 + 1) or nil,
                      x = id % 5 == 0 and -0.0 or id + 0.25, v = { id, -id } }
        end
        t:add(rows)
        if k % 4 == 0 then t:backfill("words", { batch_size = 3 }) t:backfill("half") end
      end
      -- a new version of words: its old values stay until recomputed
      t:alter_columns { { path = "words", udf = geneva.udf { data_type = "int64", fn = function(content)
        return content and #content end } } }
      t:backfill("words", { where = "id <= 40" })
      return t
    end

    it("merges many small fragments into few files; the data reads the same, then cleanup frees the disk", function()
      local t = grown(16)
      local before = t:to_rows { columns = COLS }
      local failed = t:count_rows('"__failed_half"')
      local v1 = t:count_rows('"__ver_words" = ' .. storage.quote_literal(t:schema().words.udf_version))
      local refs, disk, version = referenced(t), on_disk(t), t:version()
      assert.is_true(failed > 0 and v1 > 0 and v1 < #before)
      t:compact()
      assert.equal(version + 1, t:version())
      local m = t:_snapshot()
      assert.equal("compact", m.operation)
      assert.equal(1, #m.fragments)                              -- 81 rows fit in one fragment
      -- one data file, words in two files (two UDF versions), half in one
      assert.equal(4, referenced(t))
      assert.is_true(refs > 30, ("%d files before"):format(refs))
      -- the same rows, values (NaN, zeros, vectors, NULLs), UDF versions and failed marks
      local after = t:to_rows { columns = COLS }
      assert.equal(#before, #after)
      for i = 1, #before do
        for _, c in ipairs(COLS) do
          local a, b = before[i][c], after[i][c]
          if type(a) == "number" and a ~= a then assert.is_true(b ~= b)
          elseif a == 0 then assert.equal(1 / a, 1 / b)          -- a zero keeps its sign
          elseif type(a) == "table" then assert.same(a, b)
          else assert.equal(a, b, ("row %d column %s"):format(i, c)) end
        end
      end
      assert.equal(failed, t:count_rows('"__failed_half"'))
      assert.equal(v1, t:count_rows('"__ver_words" = ' .. storage.quote_literal(t:schema().words.udf_version)))
      -- nothing computed is missing again; what was missing still is
      assert.equal(#before - v1, t:backfill("words").rows.planned)
      assert.equal(failed, t:backfill("half").rows.planned)
      -- older versions read their own files; cleanup removes them
      local old = db:open_table("g"):checkout(version):to_rows { columns = { "id", "words" } }
      assert.same(ids(before, "words"), ids(old, "words"))
      assert.is_true(on_disk(t) > disk)
      t:compact()
      local r = t:cleanup_old_versions { older_than = 0, grace = 0 }
      assert.is_true(r.files_removed > disk - 10, ("%d files removed of %d"):format(r.files_removed, disk))
      assert.equal(referenced(t), on_disk(t))
      assert.is_true(on_disk(t) <= 4)
      assert.equal(#before, t:count_rows())
    end)

    it("keeps fragments within fragment_size, leaves full ones and checkpointed ones alone", function()
      local t = grown(9, { fragment_size = 12 })                 -- 1 + 9 appends of 5 rows
      local before = t:to_rows { columns = COLS }
      -- a checkpoint of fragment 3 (a run that died): it stays as it is
      local worker = require "geneva.backfill.worker"
      t:alter_columns { { path = "half", udf = geneva.udf { data_type = "float64", fn = function(id) return -id end } } }
      worker.run_task(worker.state(), (tables.task_for(t, "half", 1, 5, nil, 3)))
      local ids0 = {}
      for _, f in ipairs(t:_snapshot().fragments) do ids0[#ids0 + 1] = f.id .. ":" .. f.rows end
      assert.equal("1:1 2:5 3:5 4:5 5:5 6:5 7:5 8:5 9:5 10:5", table.concat(ids0, " "))
      t:compact()
      local got = {}
      for _, f in ipairs(t:_snapshot().fragments) do got[#got + 1] = f.id .. ":" .. f.rows end
      -- [1,2] (6 rows), 3 (checkpointed), [4,5] and [6,7] and [8,9] (10 rows), 10 alone
      assert.equal("11:6 3:5 12:10 13:10 14:10 10:5", table.concat(got, " "))
      local after = t:to_rows { columns = { "id", "content", "words" } }
      assert.same(#before, #after)
      for i = 1, #before do assert.same({ before[i].id, before[i].words }, { after[i].id, after[i].words }) end
      -- the resumed run commits its checkpoint
      local rec = t:backfill("half")
      assert.equal(5, rec.rows.recovered)
      assert.equal(0, t:count_rows("half IS NULL OR half <> -id"))
    end)
  end)

  describe("concurrency", function()
    it("keeps what a commit published when a step after publishing fails", function()
      local t = docs(4, { fragment_size = 2 })
      t:add_columns { words = fake_udf("v1") }
      -- the version file is created, then a step after it fails (the
      -- directory's fsync; on S3 a lost answer)
      local backend = require "geneva.store.backend"
      local real = backend.put_if_absent
      backend.put_if_absent = function(path, ...)
        local ok, msg, code = real(path, ...)
        if ok and path:match("/_versions/%d+%.json$") then return nil, path .. ": fsync: I/O error", "EIO" end
        return ok, msg, code
      end
      local ok, err = pcall(function()
        t:add { { id = 5, content = "a b" }, { id = 6, content = "c" } }
        local path, lo, hi = staged(root, { [1] = 10, [2] = 20 })
        t:_commit_column_files("words", "v1", { { fragment = 1, path = path, lo = lo, hi = hi } })
      end)
      backend.put_if_absent = real
      -- whether or not the calls reported the failure, every published
      -- version must still read: its files were not rolled back
      local latest = geneva.connect(db.uri):open_table("docs")
      for v = 1, latest:version() do
        local tv = geneva.connect(db.uri):open_table("docs"):checkout(v)
        local rok, rerr = pcall(tv.to_rows, tv)
        assert(rok, ("version %d unreadable (%s) after: %s"):format(v, tostring(rerr), tostring(err)))
      end
      assert.equal(6, latest:count_rows())
      assert.same({ 10, 20 }, ids(latest:to_rows { where = "id <= 2" }, "words"))
      assert.is_true(ok, tostring(err))
    end)

    it("a commit from a snapshot read before another commit goes round again, losing neither", function()
      local t = docs(4, { fragment_size = 2 })
      local base = storage.latest(t.dir)             -- the latest, read now
      t:add { { id = 5, content = "late" } }          -- someone commits meanwhile
      local seen = {}
      local res = storage.commit(t.dir, "test", function(m, attempt)
        seen[#seen + 1] = { attempt, m.version }
        m.note = "mine"
        return m
      end, { base = base })
      assert.same({ { 1, base.version }, { 2, base.version + 1 } }, seen)
      assert.equal(base.version + 2, res.version)
      local now = storage.latest(t.dir)
      assert.equal("mine", now.note)
      assert.equal(5, t:count_rows())                 -- the other commit's row is still there
      assert.is_nil(base.note)                        -- the caller's snapshot is not changed
      -- a base read too long ago is not trusted: the latest is read first
      local old = storage.latest(t.dir)
      t:add { { id = 6, content = "later" } }
      storage.BASE_MAX_AGE, seen = 0, {}
      local ok, err = pcall(storage.commit, t.dir, "test", function(m, attempt)
        seen[#seen + 1] = { attempt, m.version }
        return m
      end, { base = old })
      storage.BASE_MAX_AGE = 10
      assert(ok, err)
      assert.same({ { 1, old.version + 1 } }, seen)
    end)

    it("lands every commit of two processes, with dense versions", function()
      local t = docs(4, { fragment_size = 2 })
      t:add_columns { a = fake_udf("va"), b = fake_udf("vb") }
      local code = [[
        local who, dbdir, n, tmp = ...
        local geneva = require "geneva"
        local sqlite = require "geneva.sqlite"
        local t = geneva.connect(dbdir):open_table("docs")
        for k = 1, n do
          t:add { { id = 1000 * (who == "a" and 1 or 2) + k, content = who } }
          local path = ("%s/%s-%d.db"):format(tmp, who, k)
          local db = assert(sqlite.open(path))
          assert(db:exec("CREATE TABLE col(_rowid INTEGER PRIMARY KEY, value)"))
          assert(db:exec("INSERT INTO col VALUES (?, ?)", k % 2 + 1, k))
          db:close()
          t:_commit_column_files(who, "v" .. who, { { fragment = 1 + (k % 2), path = path, lo = 1, hi = 2 } })
        end
      ]]
      local n = 20
      local procs = {}
      for _, who in ipairs { "a", "b" } do
        local src = ("assert(load(%q))(%q, %q, %d, %q)"):format(code, who, db.uri, n, root)
        procs[who] = assert(proc.spawn { argv = { child.bin, "-e", src }, stderr = "pipe" })
      end
      for who, p in pairs(procs) do
        local status, c = p:wait(120)
        local err = p:read_all("stderr", 5)
        assert.equal("exited", status, err)
        assert.equal(0, c, who .. ": " .. tostring(err))
        p:close()
      end
      local vs = t:versions()
      assert.equal(2 + 4 * n, #vs)
      for i, v in ipairs(vs) do assert.equal(i, v) end
      assert.equal(4 + 2 * n, t:count_rows())
      assert.equal(n, t:count_rows("content = 'a'"))
      assert.equal(n, t:count_rows("content = 'b'"))
      local m = t:_snapshot()
      local files = 0
      for _, f in ipairs(m.fragments) do
        for _, list in pairs(f.columns) do files = files + #list end
      end
      assert.is_true(files >= 2)    -- lists may have been folded, but values are there
      -- the last value committed for each rowid wins: even k go to
      -- fragment 1 rowid 1, odd k to fragment 2 rowid 2
      local r = t:to_rows { columns = { "a", "b" }, where = "id <= 4" }
      assert.same({ n, "nil", "nil", n - 1 }, ids(r, "a"))
      assert.same({ n, "nil", "nil", n - 1 }, ids(r, "b"))
    end)
  end)

  describe("geneva.store.types", function()
    local types = require "geneva.store.types"
    it("wraps blobs and vectors for binding and reads them back", function()
      local vt = assert(types.parse("float32[2]"))
      local w = types.to_sql(vt, { 1, 2 })
      assert.is_true(sqlite.is_blob(w))
      assert.equal(string.pack("<ff", 1, 2), w.blob)
      assert.same({ 1, 2 }, types.from_sql(vt, w.blob))
      assert.is_true(sqlite.is_blob(types.to_sql(types.parse("blob"), "x")))
      assert.equal(1, types.to_sql(types.parse("bool"), true))
      assert.is_nil(types.parse("float32[0]"))
    end)

    it("infers CSV types from the facts of a column's cells", function()
      local function facts(f)
        f.values = f.values or 2
        f.ints, f.floats, f.bools = f.ints or 0, f.floats or 0, f.bools or 0
        return f
      end
      assert.equal("int64", types.infer_csv(facts { ints = 2, floats = 2 }))
      assert.equal("float64", types.infer_csv(facts { ints = 1, floats = 2 }))
      assert.equal("bool", types.infer_csv(facts { bools = 2 }))
      assert.equal("string", types.infer_csv(facts { ints = 1 }))
      assert.equal("string", types.infer_csv(facts { values = 0 }))
      -- a leading zero ("007") makes an id or a code: text
      assert.equal("string", types.infer_csv(facts { ints = 2, floats = 2, zero = 1, zero_value = "007" }))
      -- an integer beyond int64 is refused, not rounded to float64
      assert.same({ nil, 2, "integer 99999999999999999999 is beyond the int64 range" },
        { types.infer_csv(facts { ints = 2, floats = 2, big = 2, big_value = "99999999999999999999" }) })
      assert.same({ nil, 2, "integer 99999999999999999999 is beyond the int64 range" },
        { types.infer_csv(facts { ints = 1, floats = 2, big = 2, big_value = "99999999999999999999" }) })
      assert.is_nil(types.parse_cell(types.parse("float64"), "-0x1p4"))
      assert.is_true(types.is_null(geneva.null))
      assert.is_true(types.is_null(sqlite.null))
      assert.is_false(types.is_null(false))
    end)
  end)

  describe("errors", function()
    it("formats as '<code>: <message>' and carries fields", function()
      local e = errors.new("not_found", "no such thing", { path = "/x" })
      assert.equal("not_found: no such thing", tostring(e))
      assert.equal("/x", e.path)
      assert.equal(errors.Error, geneva.Error)
      assert.is_true(errors.is(e, "not_found"))
    end)
  end)
end)
