-- memcheck
local sqlite = require "geneva.sqlite"
local child = require "child"

local null = sqlite.null

-- Wall-clock seconds with millisecond precision, from SQLite itself.
local clock_db = assert(sqlite.open(":memory:"))
local function now()
  return clock_db:value("SELECT (julianday('now') - 2440587.5) * 86400.0")
end

local function memdb()
  return assert(sqlite.open(":memory:"))
end

describe("geneva.sqlite", function()
  local dir
  setup(function() dir = child.tmpdir() end)
  teardown(function() child.rmtree(dir) end)

  describe(".open", function()
    it("opens :memory: and a file, and reports the file name", function()
      local db <close> = memdb()
      assert.is_nil(db:filename())
      assert.matches("^geneva.sqlite.Db ':memory:'", tostring(db))
      local path = dir .. "/open.db"
      local f <close> = assert(sqlite.open(path))
      assert.is_true(f:exec("CREATE TABLE t(x)"))
      assert.equal(path, f:filename())
      assert.is_true(child.exists(path))
    end)

    it("returns nil, msg, SQLITE_CANTOPEN for a missing directory or create=false", function()
      local db, msg, code, ext = sqlite.open(dir .. "/no/such/dir/x.db")
      assert.is_nil(db)
      assert.matches("unable to open database file", msg)
      assert.matches("no/such/dir/x.db", msg, 1, true)
      assert.equal("SQLITE_CANTOPEN", code)
      assert.matches("^SQLITE_CANTOPEN", ext)
      db, msg, code = sqlite.open(dir .. "/absent.db", { create = false })
      assert.is_nil(db)
      assert.equal("SQLITE_CANTOPEN", code)
      assert.is_false(child.exists(dir .. "/absent.db"))
    end)

    it("raises on bad arguments", function()
      assert.error_matches(function() sqlite.open() end, "bad argument #1 to 'open'")
      assert.error_matches(function() sqlite.open(":memory:", { bogus = 1 }) end,
        "unknown option 'bogus'")
      assert.error_matches(function() sqlite.open(":memory:", { busy_timeout_ms = -1 }) end,
        "busy_timeout_ms")
    end)

    it("switches a file to WAL with wal=true", function()
      local db <close> = assert(sqlite.open(dir .. "/wal.db", { wal = true }))
      assert.equal("wal", db:value("PRAGMA journal_mode"))
      local m, msg = sqlite.open(":memory:", { wal = true })
      assert.is_nil(m)
      assert.matches("cannot use WAL", msg)
    end)

    it("reopens a file read-only and refuses writes", function()
      local path = dir .. "/ro.db"
      local w = assert(sqlite.open(path))
      assert(w:exec("CREATE TABLE t(x); INSERT INTO t VALUES (42)"))
      w:close()
      local ro <close> = assert(sqlite.open(path, { readonly = true }))
      assert.is_true(ro:readonly())
      assert.equal(42, ro:value("SELECT x FROM t"))
      local ok, msg, code, ext = ro:exec("INSERT INTO t VALUES (1)")
      assert.is_nil(ok)
      assert.matches("readonly database", msg)
      assert.equal("SQLITE_READONLY", code)
      assert.matches("^SQLITE_READONLY", ext)
      local im <close> = assert(sqlite.open(path, { immutable = true }))
      assert.equal(42, im:value("SELECT x FROM t"))
      assert.equal("SQLITE_READONLY", select(3, im:exec("DELETE FROM t")))
    end)
  end)

  describe("types", function()
    local db
    before_each(function()
      db = memdb()
      assert(db:exec("CREATE TABLE v(x)"))
    end)
    after_each(function() db:close() end)

    local function roundtrip(value)
      local ins = db:prepare("INSERT INTO v VALUES (?)")
      ins:bind(1, value)
      assert.equal("done", ins:step())
      ins:close()
      local row = db:first("SELECT x, typeof(x) FROM v WHERE rowid = last_insert_rowid()")
      return row[1], row[2]
    end

    it("keeps 64-bit integers exact", function()
      for _, n in ipairs { 0, 1, -1, math.maxinteger, math.mininteger, 9007199254740993 } do
        local v, t = roundtrip(n)
        assert.equal("integer", t)
        assert.equal("integer", math.type(v))
        assert.equal(n, v)
      end
    end)

    it("keeps floats as REAL (even integral ones)", function()
      for _, x in ipairs { 0.1, -2.5, 1e308, 2.0, math.huge, -math.huge } do
        local v, t = roundtrip(x)
        assert.equal("real", t)
        assert.equal("float", math.type(v))
        assert.equal(x, v)
      end
    end)

    it("stores NaN as NULL (an SQLite rule)", function()
      local v, t = roundtrip(0 / 0)
      assert.equal("null", t)
      assert.equal(null, v)
    end)

    it("binds strings as TEXT, NUL bytes included", function()
      local s = "a\0b\0\255\0"
      local v, t = roundtrip(s)
      assert.equal("text", t)
      assert.equal(s, v)
      assert.equal(6, db:value("SELECT length(CAST(x AS BLOB)) FROM v"))
      assert.equal("", (roundtrip("")))
    end)

    it("binds sqlite.blob as BLOB and reads BLOBs back as strings", function()
      local b = "\0\1\2\0xyz\0" .. string.rep("\255", 1000)
      local v, t = roundtrip(sqlite.blob(b))
      assert.equal("blob", t)
      assert.equal(b, v)
      v, t = roundtrip(sqlite.blob(""))
      assert.equal("blob", t)
      assert.equal("", v)
      assert.is_true(sqlite.is_blob(sqlite.blob("x")))
      assert.is_false(sqlite.is_blob("x"))
      assert.equal("\0\255", db:value("SELECT x'00ff'"))
      assert.error_matches(function() sqlite.blob(1) end, "string expected")
    end)

    it("binds booleans as 0/1 and nil or sqlite.null as NULL", function()
      assert.same({ 1, "integer" }, { roundtrip(true) })
      assert.same({ 0, "integer" }, { roundtrip(false) })
      assert.equal("null", select(2, roundtrip(nil)))
      assert.equal("null", select(2, roundtrip(null)))
    end)

    it("binds geneva.json's null as NULL", function()
      local ok, json = pcall(require, "geneva.json")
      if not ok then return end
      assert.equal("null", select(2, roundtrip(json.null)))
    end)

    it("raises for values that cannot be bound", function()
      local st <close> = db:prepare("INSERT INTO v VALUES (?)")
      assert.error_matches(function() st:bind(1, {}) end, "cannot bind a table value to parameter 1")
      assert.error_matches(function() st:bind(1, print) end, "cannot bind a function")
      assert.error_matches(function() st:bind(1, io.stdout) end, "cannot bind a userdata")
    end)
  end)

  describe("NULL in rows", function()
    it("keeps row arrays hole-free with sqlite.null; nil elsewhere", function()
      local db <close> = memdb()
      local st <close> = db:prepare("SELECT NULL AS a, 2 AS b, NULL AS c")
      assert.equal("row", st:step())
      local row = st:row()
      assert.equal(3, #row)
      assert.equal(null, row[1])
      assert.equal(2, row[2])
      assert.equal(null, row[3])
      assert.same({ b = 2 }, st:named_row())
      assert.is_nil(st:get(1))
      assert.equal(2, st:get(2))
      assert.same({ n = 3, nil, 2, nil }, table.pack(st:values()))
      assert.same({ "a", "b", "c" }, st:columns())
      local reused = { "old", "old", "old", "old" }
      assert.equal(reused, st:row(reused))
      assert.same({ null, 2, null, "old" }, reused)
    end)
  end)

  describe(":prepare", function()
    it("returns nil and SQLite's message naming the SQL on a syntax error", function()
      local db <close> = memdb()
      local st, msg, code = db:prepare("SELEC 1 FROM nowhere")
      assert.is_nil(st)
      assert.equal('near "SELEC": syntax error (in "SELEC 1 FROM nowhere")', msg)
      assert.equal("SQLITE_ERROR", code)
      local long = "SELECT * FROM missing_table WHERE " .. string.rep("x = 1 AND\n  ", 20) .. "1"
      _, msg = db:prepare(long)
      assert.matches("^no such table: missing_table %(in \"SELECT %* FROM missing_table WHERE x = 1 AND x", msg)
      assert.matches('%.%.%."%)$', msg)
      assert.is_true(#msg < 160)
    end)

    it("raises for no statement or several", function()
      local db <close> = memdb()
      assert.error_matches(function() db:prepare("  -- nothing\n") end, "no SQL statement")
      assert.error_matches(function() db:prepare("SELECT 1; SELECT 2") end, "more than one SQL statement")
      local st <close> = db:prepare("SELECT 1; -- trailing comment\n")
      assert.equal("SELECT 1;", st:sql())
    end)
  end)

  describe("statements", function()
    local db
    before_each(function()
      db = memdb()
      assert(db:exec([[CREATE TABLE kv(k TEXT PRIMARY KEY, v);
                       INSERT INTO kv VALUES ('a', 1), ('b', 2), ('c', 3)]]))
    end)
    after_each(function() db:close() end)

    it("are reused with bind / step / reset", function()
      local st <close> = db:prepare("SELECT v FROM kv WHERE k = ?")
      for k, want in pairs { a = 1, b = 2, c = 3 } do
        st:bind(1, k)
        assert.equal("row", st:step())
        assert.equal(want, st:get(1))
        assert.equal("done", st:step())
        st:reset()
      end
      -- bind on a running statement resets it
      st:bind(1, "a")
      assert.equal("row", st:step())
      st:bind(1, "c")
      assert.equal("row", st:step())
      assert.equal(3, st:get(1))
      assert.equal(1, st:param_count())
      assert.error_matches(function() st:bind(2, 1) end, "out of range")
    end)

    it("bind by name with or without the prefix, and bind_all every way", function()
      local st <close> = db:prepare("SELECT :x + @y + $z")
      st:bind("x", 1):bind("@y", 10):bind("z", 100)
      assert.equal("row", st:step())
      assert.equal(111, st:get(1))
      assert.error_matches(function() st:bind("w", 1) end, "no parameter named 'w'")
      st:bind_all { x = 2, y = 20, z = 200 }
      assert.equal("row", st:step())
      assert.equal(222, st:get(1))
      st:bind_all { 3, 30, 300 }
      st:step()
      assert.equal(333, st:get(1))
      st:bind_all(4, 40, 400)
      st:step()
      assert.equal(444, st:get(1))
      assert.error_matches(function() st:bind_all { x = 1, y = 2 } end,
        "missing value for parameter '%$z'")
      assert.error_matches(function() st:bind_all(1, 2, 3, 4) end, "4 values for 3 parameters")
      st:bind_all { x = 1, y = 2, z = null }
      st:step()
      assert.is_nil(st:get(1))
    end)

    it("iterate with rows() and named_rows(), reusable", function()
      local st <close> = db:prepare("SELECT k, v FROM kv WHERE v >= ? ORDER BY k")
      local got = {}
      for row in st:rows(2) do got[#got + 1] = row[1] .. row[2] end
      assert.same({ "b2", "c3" }, got)
      got = {}
      for row in st:named_rows(3) do got[#got + 1] = row.k end
      assert.same({ "c" }, got)
      got = {}
      for row in st:rows() do got[#got + 1] = row[1] end   -- keeps the binding
      assert.same({ "c" }, got)
    end)

    it("step errors return nil, msg, code and leave the statement reusable", function()
      local st <close> = db:prepare("INSERT INTO kv VALUES (?, ?)")
      local r, msg, code, ext = st:bind_all("a", 9):step()
      assert.is_nil(r)
      assert.matches("UNIQUE constraint failed: kv.k", msg)
      assert.matches('(in "INSERT INTO kv VALUES (?, ?)")', msg, 1, true)
      assert.equal("SQLITE_CONSTRAINT", code)
      assert.equal("SQLITE_CONSTRAINT_PRIMARYKEY", ext)
      assert.equal("done", st:bind_all("d", 4):step())
      assert.equal(4, db:value("SELECT count(*) FROM kv"))
      assert.equal(1, db:changes())
      assert.equal(4, db:last_insert_rowid())
      assert.error_matches(function() st:row() end, "no current row")
    end)

    it("report NOT NULL and CHECK violations with extended codes", function()
      assert(db:exec("CREATE TABLE c(x NOT NULL CHECK (x > 0))"))
      local _, _, code, ext = db:exec("INSERT INTO c VALUES (?)", nil)
      assert.equal("SQLITE_CONSTRAINT", code)
      assert.equal("SQLITE_CONSTRAINT_NOTNULL", ext)
      _, _, code, ext = db:exec("INSERT INTO c VALUES (-1)")
      assert.equal("SQLITE_CONSTRAINT", code)
      assert.equal("SQLITE_CONSTRAINT_CHECK", ext)
    end)
  end)

  describe("conveniences", function()
    it("exec with parameters, first, first_named, value, rows", function()
      local db <close> = memdb()
      assert.is_true(db:exec("CREATE TABLE t(a, b); CREATE INDEX ta ON t(a)"))
      assert.is_true(db:exec("INSERT INTO t VALUES (?, ?)", 1, "one"))
      assert.is_true(db:exec("INSERT INTO t VALUES (:a, :b)", { a = 2, b = sqlite.blob("two") }))
      assert.same({ 1, "one" }, db:first("SELECT a, b FROM t WHERE a = ?", 1))
      assert.same({ a = 2, b = "two" }, db:first_named("SELECT * FROM t WHERE a = 2"))
      assert.is_nil(db:first("SELECT * FROM t WHERE a = 99"))
      assert.equal(2, db:value("SELECT count(*) FROM t"))
      assert.is_nil(db:value("SELECT NULL"))
      local _, msg, code = db:value("SELECT * FROM nope")
      assert.matches("no such table: nope", msg)
      assert.equal("SQLITE_ERROR", code)
      local sum = 0
      for row in db:rows("SELECT a FROM t") do sum = sum + row[1] end
      assert.equal(3, sum)
      assert.error_matches(function() for _ in db:rows("SELEC") do end end, "syntax error")
    end)

    it("exec stops at the first failing statement", function()
      local db <close> = memdb()
      local ok, msg = db:exec("CREATE TABLE a(x); INSERT INTO nope VALUES (1); CREATE TABLE b(x)")
      assert.is_nil(ok)
      assert.matches("no such table: nope", msg)
      assert.equal(1, db:value("SELECT count(*) FROM sqlite_master WHERE name = 'a'"))
      assert.equal(0, db:value("SELECT count(*) FROM sqlite_master WHERE name = 'b'"))
    end)

    it("attach and detach another file", function()
      local other = dir .. "/other.db"
      local o = assert(sqlite.open(other))
      assert(o:exec("CREATE TABLE col(_rowid INTEGER PRIMARY KEY, value); INSERT INTO col VALUES (1, 'x')"))
      o:close()
      local db <close> = memdb()
      assert.is_true(db:attach(other, "frag", { readonly = true }))
      assert.equal("x", db:value("SELECT value FROM frag.col WHERE _rowid = 1"))
      assert.equal("SQLITE_READONLY", select(3, db:exec("DELETE FROM frag.col")))
      assert.is_true(db:detach("frag"))
      assert.equal("SQLITE_ERROR", select(3, db:value("SELECT * FROM frag.col")))
      assert.is_true(db:attach(other, "imm", { immutable = true }))
      assert.equal(1, db:value("SELECT count(*) FROM imm.col"))
    end)
  end)

  describe("transactions", function()
    local db
    before_each(function()
      db = memdb()
      assert(db:exec("CREATE TABLE t(x UNIQUE)"))
    end)
    after_each(function() db:close() end)
    local function count() return db:value("SELECT count(*) FROM t") end

    it("commit and rollback", function()
      assert.is_true(db:begin())
      assert.is_true(db:in_transaction())
      db:exec("INSERT INTO t VALUES (1)")
      assert.is_true(db:commit())
      assert.is_false(db:in_transaction())
      assert.is_true(db:begin("immediate"))
      db:exec("INSERT INTO t VALUES (2)")
      assert.is_true(db:rollback())
      assert.equal(1, count())
      assert.is_true(db:begin("exclusive"))
      assert.is_true(db:rollback())
      assert.error_matches(function() db:begin("sometimes") end, "invalid mode 'sometimes'")
      local ok, msg = db:commit()
      assert.is_nil(ok)
      assert.matches("no transaction is active", msg)
    end)

    it("transaction(fn) commits and returns fn's results", function()
      local ok, a, b = db:transaction(function(d)
        d:exec("INSERT INTO t VALUES (1)")
        return "a", "b"
      end)
      assert.same({ true, "a", "b" }, { ok, a, b })
      assert.equal(1, count())
    end)

    it("transaction(fn) rolls back and re-raises when fn raises", function()
      local err = { reason = "boom" }
      local ok, e = pcall(db.transaction, db, function(d)
        d:exec("INSERT INTO t VALUES (1)")
        error(err)
      end)
      assert.is_false(ok)
      assert.equal(err, e)
      assert.equal(0, count())
      assert.is_false(db:in_transaction())
      assert.error_matches(function()
        db:transaction(function(d) d:exec("INSERT INTO t VALUES (1)"); error("plain") end)
      end, "plain")
      assert.equal(0, count())
    end)

    it("nests with savepoints", function()
      assert.is_true((db:transaction(function(d)
        d:exec("INSERT INTO t VALUES (1)")
        assert.is_false(pcall(d.transaction, d, function(d2)
          d2:exec("INSERT INTO t VALUES (2)")
          error("inner")
        end))
        assert.is_true(d:in_transaction())
        assert.is_true((d:transaction(function(d2) d2:exec("INSERT INTO t VALUES (3)") end)))
      end)))
      local got = {}
      for row in db:rows("SELECT x FROM t ORDER BY x") do got[#got + 1] = row[1] end
      assert.same({ 1, 3 }, got)
    end)
  end)

  describe("busy handling", function()
    it("a second writer waits busy_timeout_ms, then gets SQLITE_BUSY", function()
      local path = dir .. "/busy.db"
      local a <close> = assert(sqlite.open(path))
      assert(a:exec("CREATE TABLE t(x)"))
      local b <close> = assert(sqlite.open(path, { busy_timeout_ms = 300 }))
      assert.is_true(a:begin("immediate"))
      local t0 = now()
      local ok, msg, code = b:begin("immediate")
      local waited = now() - t0
      assert.is_nil(ok)
      assert.matches("database is locked", msg)
      assert.equal("SQLITE_BUSY", code)
      assert.is_true(waited >= 0.25, "waited " .. waited)
      -- with no timeout it fails without waiting; after the lock goes it succeeds
      assert.equal(300, b:busy_timeout(0))
      assert.equal(0, b:value("PRAGMA busy_timeout"))
      assert.equal("SQLITE_BUSY", select(3, b:exec("INSERT INTO t VALUES (1)")))
      assert.is_true(a:commit())
      assert.is_true(b:exec("INSERT INTO t VALUES (1)"))
    end)

    it("a loop left by break releases its read lock", function()
      local path = dir .. "/lock.db"
      local a <close> = assert(sqlite.open(path, { busy_timeout_ms = 0 }))
      assert(a:exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)"))
      local b <close> = assert(sqlite.open(path, { busy_timeout_ms = 0 }))
      for _ in b:rows("SELECT x FROM t") do break end
      assert.is_true(a:exec("INSERT INTO t VALUES (4)"))
      local st <close> = b:prepare("SELECT x FROM t")
      for _ in st:rows() do break end
      assert.is_true(a:exec("INSERT INTO t VALUES (5)"))
      -- a statement left on a row does hold it
      assert.equal("row", st:step())
      assert.equal("SQLITE_BUSY", select(3, a:exec("INSERT INTO t VALUES (6)")))
      st:reset()
      assert.is_true(a:exec("INSERT INTO t VALUES (6)"))
    end)
  end)

  describe(":insert_many", function()
    it("inserts 100k rows and reads them back", function()
      local db <close> = memdb()
      assert(db:exec("CREATE TABLE col(_rowid INTEGER PRIMARY KEY, value)"))
      local rows = {}
      for i = 1, 100000 do
        rows[i] = { i, i % 3 == 0 and null or ("v" .. i) }
      end
      assert.equal(100000, db:insert_many("INSERT INTO col VALUES (?, ?)", rows))
      assert.is_false(db:in_transaction())
      assert.equal(100000, db:value("SELECT count(*) FROM col"))
      assert.equal(33333, db:value("SELECT count(*) FROM col WHERE value IS NULL"))
      assert.equal("v99998", db:value("SELECT value FROM col WHERE _rowid = 99998"))
      local n = 0
      for row in db:rows("SELECT _rowid, value FROM col") do
        n = n + 1
        assert(row[1] == n)
      end
      assert.equal(100000, n)
    end)

    it("is atomic on its own and leaves the caller's transaction to the caller", function()
      local db <close> = memdb()
      assert(db:exec("CREATE TABLE t(x UNIQUE, y)"))
      local ok, msg, code, ext = db:insert_many("INSERT INTO t VALUES (?, ?)", { { 1 }, { 2 }, { 1 } })
      assert.is_nil(ok)
      assert.matches("UNIQUE constraint failed: t.x .* at row 3$", msg)
      assert.equal("SQLITE_CONSTRAINT", code)
      assert.equal("SQLITE_CONSTRAINT_UNIQUE", ext)
      assert.equal(0, db:value("SELECT count(*) FROM t"))
      assert(db:begin())
      assert.is_nil(db:insert_many("INSERT INTO t VALUES (?, ?)", { { 1 }, { 2 }, { 1 } }))
      assert.is_true(db:in_transaction())
      assert.equal(2, db:value("SELECT count(*) FROM t"))
      assert(db:rollback())
    end)

    it("raises on bad rows, naming them", function()
      local db <close> = memdb()
      assert(db:exec("CREATE TABLE t(x, y)"))
      assert.error_matches(function() db:insert_many("INSERT INTO t VALUES (?, ?)", { { 1 }, 5 }) end,
        "row 2 is not a table")
      assert.error_matches(function() db:insert_many("INSERT INTO t VALUES (?, ?)", { { 1, 2, 3 } }) end,
        "row 1 has 3 values for 2 parameters")
      assert.error_matches(function() db:insert_many("INSERT INTO t VALUES (?, ?)", { { 1, {} } }) end,
        "row 1: cannot bind a table value to parameter 2")
      assert.equal(0, db:value("SELECT count(*) FROM t"))
      assert.is_false(db:in_transaction())
      -- the statement-level form works in the caller's transaction
      local st <close> = db:prepare("INSERT INTO t VALUES (?, ?)")
      assert.equal(2, st:insert_many({ { 1, "a" }, { 2, sqlite.blob("b\0") } }))
      assert.equal("b\0", db:value("SELECT y FROM t WHERE x = 2"))
    end)

    it("insert_columns binds one array per parameter, holes as NULL", function()
      local db <close> = memdb()
      assert(db:exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v)"))
      local ids, vals = {}, {}
      for i = 1, 1000 do ids[i] = i; if i % 2 == 0 then vals[i] = i * 0.5 end end
      assert.equal(1000, db:insert_columns("INSERT INTO t VALUES (?, ?)", { ids, vals }))
      assert.equal(500, db:value("SELECT count(*) FROM t WHERE v IS NULL"))
      assert.equal(250.0, db:value("SELECT v FROM t WHERE id = 500"))
      assert.error_matches(function() db:insert_columns("INSERT INTO t VALUES (?, ?)", { ids }) end,
        "1 columns for 2 parameters")
    end)

    it("insert_packed binds packed rows (host/rowpack.h) from a position, and refuses malformed ones", function()
      local db <close> = memdb()
      assert(db:exec("CREATE TABLE t(a, b)"))
      local function text(tag, s) return string.pack("=B I4", tag, #s) .. s end
      -- rows: (1, 'x'), (2.5, NULL), (blob "\0y", -7)
      local rows = string.pack("=B j", 1, 1) .. text(3, "x")
        .. string.pack("=B n B", 2, 2.5, 0)
        .. text(4, "\0y") .. string.pack("=B j", 1, -7)
      local st <close> = db:prepare("INSERT INTO t VALUES (?, ?)")
      local pos = assert(st:insert_packed(rows, 1))
      assert.equal(#string.pack("=B j", 1, 1) + #text(3, "x") + 1, pos)
      assert.equal(#rows + 1, st:insert_packed(rows, 2, pos))
      local got = {}
      for r in db:rows("SELECT a, b FROM t ORDER BY rowid") do got[#got + 1] = r end
      assert.same({ { 1, "x" }, { 2.5, sqlite.null }, { "\0y", -7 } }, got)
      assert.equal("blob", db:value("SELECT typeof(a) FROM t WHERE rowid = 3"))
      assert.error_matches(function() st:insert_packed(rows:sub(1, -3), 3) end, "malformed rows at byte")
      assert.error_matches(function() st:insert_packed("\9", 1) end, "malformed rows at byte 1")
      assert.error_matches(function() st:insert_packed(rows, 1, #rows + 2) end, "out of range")
      -- as with insert_many, the rows before the bad one stay (the caller's transaction)
      assert.equal(5, db:value("SELECT count(*) FROM t"))
    end)

    it("fetch_columns reads chunks of rows into column arrays, NULL as sqlite.null", function()
      local db <close> = memdb()
      assert(db:exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v, b)"))
      local ids, vals, blobs = {}, {}, {}
      for i = 1, 2500 do
        ids[i] = i
        vals[i] = i % 5 == 0 and null or (i % 2 == 0 and i * 0.5 or ("s" .. i))
        blobs[i] = sqlite.blob("\0" .. i)
      end
      assert(db:insert_columns("INSERT INTO t VALUES (?, ?, ?)", { ids, vals, blobs }))
      local st <close> = db:prepare("SELECT id, v, b FROM t WHERE id > ? ORDER BY id")
      st:bind_all(0)
      local got, sizes = { {}, {}, {} }, {}
      repeat
        local cols = { {}, {}, {} }
        local n = assert(st:fetch_columns(cols, 1000))
        sizes[#sizes + 1] = n
        for k = 1, n do
          for j = 1, 3 do got[j][#got[j] + 1] = cols[j][k] end
        end
        assert.is_nil(cols[1][n + 1])           -- nothing past n
      until n < 1000
      assert.same({ 1000, 1000, 500 }, sizes)
      assert.same(ids, got[1])
      for i = 1, 2500 do
        assert.equal(vals[i], got[2][i])
        assert.equal("\0" .. i, got[3][i])
      end
      assert.equal(2500, #got[2])              -- NULLs are sqlite.null: no holes
      -- after the end, as with step(), the next call starts over
      local again = { {}, {}, {} }
      assert.equal(10, st:fetch_columns(again, 10))
      assert.equal(1, again[1][1])
      st:reset()
      local cols = { { "old" }, {}, {} }
      assert.equal(0, st:fetch_columns(cols, 0))
      assert.equal("old", cols[1][1])          -- max = 0 reads nothing
      assert.equal(2, st:fetch_columns(cols, 2))
      assert.same({ 1, 2 }, cols[1])
    end)

    it("fetch_columns raises on misuse and returns SQLite errors", function()
      local db <close> = memdb()
      local st <close> = db:prepare("SELECT 1, 2")
      assert.error_matches(function() st:fetch_columns({ {} }, 10) end, "column 2 is not a table")
      assert.error_matches(function() st:fetch_columns({ {}, {} }, -1) end, "must be >= 0")
      assert.error_matches(function() st:fetch_columns(nil, 1) end, "table expected")
      -- a runtime error (abs of the smallest integer overflows) comes back as nil, msg, code
      local bad <close> = db:prepare("SELECT abs(x) FROM (SELECT 1 AS x UNION ALL SELECT -9223372036854775807 - 1)")
      local cols = { {} }
      local n, msg, code = bad:fetch_columns(cols, 10)
      assert.is_nil(n)
      assert.matches("integer overflow", msg)
      assert.equal("SQLITE_ERROR", code)
      st:close()
      assert.error_matches(function() st:fetch_columns({ {}, {} }, 1) end, "attempt to use a closed")
    end)
  end)

  describe("lifetimes", function()
    it("close is idempotent; use after close raises; tostring says closed", function()
      local db = memdb()
      local st = db:prepare("SELECT 1")
      assert.is_true(st:close())
      assert.is_true(st:close())
      assert.equal("geneva.sqlite.Stmt (closed)", tostring(st))
      assert.error_matches(function() st:step() end, "attempt to use a closed geneva.sqlite.Stmt")
      assert.is_true(db:close())
      assert.is_true(db:close())
      assert.is_true(db:is_closed())
      assert.equal("geneva.sqlite.Db (closed)", tostring(db))
      assert.error_matches(function() db:exec("SELECT 1") end, "attempt to use a closed geneva.sqlite.Db")
      assert.error_matches(function() db:prepare("SELECT 1") end, "attempt to use a closed geneva.sqlite.Db")
    end)

    it("closing the db finalizes its statements; using them then raises", function()
      local db = memdb()
      local s1 = db:prepare("SELECT 1")
      local s2 = db:prepare("SELECT 2")
      assert.equal("row", s2:step())       -- one mid-row
      s1:close()
      db:close()
      assert.is_true(s2:is_closed())
      assert.error_matches(function() s2:row() end, "its geneva.sqlite.Db was closed")
      assert.error_matches(function() s2:step() end, "its geneva.sqlite.Db was closed")
      assert.is_true(s2:close())
    end)

    it("a statement keeps its db alive; both are collected when dropped", function()
      local weak = setmetatable({}, { __mode = "v" })
      local st
      do
        local db = memdb()
        weak.db = db
        st = db:prepare("SELECT 7")
      end
      collectgarbage(); collectgarbage()
      assert.is_not_nil(weak.db)
      assert.equal("row", st:step())
      assert.equal(7, st:get(1))
      weak.st = st
      st = nil
      collectgarbage(); collectgarbage()
      assert.is_nil(weak.st)
      assert.is_nil(weak.db)
    end)

    it("<close> closes db and statement", function()
      local db_ref, st_ref
      do
        local db <close> = memdb()
        local st <close> = db:prepare("SELECT 1")
        db_ref, st_ref = db, st
      end
      assert.is_true(db_ref:is_closed())
      assert.is_true(st_ref:is_closed())
      -- db:rows finalizes its statement when the loop ends
      local db <close> = memdb()
      local f, st, c, closing = db:rows("SELECT 1 UNION ALL SELECT 2")
      assert.equal(st, closing)
      for _ in f, st, c, closing do break end
      assert.is_true(st:is_closed())
      f, st, c, closing = db:rows("SELECT 1")
      assert.is_false(pcall(function() for _ in f, st, c, closing do error("x") end end))
      assert.is_true(st:is_closed())
    end)

    it("is tracked by the ledger, whose scope close tears it down", function()
      local ledger = require "geneva.ledger.core"
      local function count_sqlite()
        local n = 0
        for _, e in ipairs(ledger.list()) do if e.kind == "sqlite" then n = n + 1 end end
        return n
      end
      local base = count_sqlite()
      local db = memdb()
      assert.equal(base + 1, count_sqlite())
      db:close()
      assert.equal(base, count_sqlite())

      local scope = ledger.scope("sqlite-spec")
      local prev = scope:activate()
      local sdb = memdb()
      local st = sdb:prepare("SELECT 1")
      prev:activate()
      assert.is_true(scope:close())
      assert.is_true(sdb:is_closed())
      assert.is_true(st:is_closed())
      assert.error_matches(function() st:step() end, "its geneva.sqlite.Db was closed")
    end)
  end)

  describe("interrupts", function()
    it("a long query returns nil, 'interrupted', 'EINTR' after SIGINT", function()
      local mark = os.tmpname()
      os.remove(mark)
      -- a hook set on the main state does not fire in a coroutine, so the
      -- query runs in one and only the progress handler can stop it
      local code = ([[
        local sqlite = require "geneva.sqlite"
        local db = assert(sqlite.open(":memory:"))
        io.open(%q, "w"):close()
        coroutine.wrap(function()
          local r, msg, code = db:value("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
          io.stdout:write(tostring(r), " ", tostring(msg), " ", tostring(code), "\n")
          io.stdout:flush()
        end)()
      ]]):format(mark)
      local out = os.tmpname()
      local cmd = ("timeout 30 %s -e %s >%s 2>/dev/null & pid=$!; i=0; " ..
        "while [ ! -e %s ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; " ..
        "sleep 0.2; kill -INT $pid; wait $pid"):format(
        child.quote(child.bin), child.quote(code), out, child.quote(mark))
      os.execute(cmd)
      local got = child.read(out)
      os.remove(out)
      os.remove(mark)
      assert.equal("nil interrupted EINTR\n", got)   -- the query never ends by itself
    end)
  end)
end)
