-- Specs for ingest (geneva.store.ingest): CSV and JSONL files streamed into
-- tables a chunk at a time, with real files. storage: dir s3
local testdb = require "testdb"
local backend = require "geneva.store.backend"
local fs = require "geneva.fs"
local child = require "child"

local raises = require("expect").raises
local write = child.write

-- Writes path with a header and n lines, line(i) giving line i (buffered)
local function write_lines(path, header, n, line)
  local f = assert(io.open(path, "wb"))
  if header then f:write(header, "\n") end
  local buf = {}
  for i = 1, n do
    buf[#buf + 1] = line(i)
    if #buf == 5000 then
      f:write(table.concat(buf, "\n"), "\n")
      buf = {}
    end
  end
  if #buf > 0 then f:write(table.concat(buf, "\n"), "\n") end
  f:close()
  return path
end

local function schema_of(t)
  local out = {}
  for _, c in ipairs(t:schema()) do out[#out + 1] = c.name .. ":" .. c.data_type end
  return table.concat(out, " ")
end

-- the data files a table directory holds (published, or left as temp files)
local function data_files(dir)
  return #(backend.list(dir .. "/data") or {})
end

describe("ingest", function()
  local root, db
  before_each(function()
    root = child.tmpdir()
    db = testdb.connect(root .. "/db")
  end)
  after_each(function() child.rmtree(root) end)

  describe("CSV cells", function()
    it("leading zeros make text; an empty unquoted field is NULL, a quoted \"\" the empty string", function()
      local path = write(root .. "/a.csv",
        'id,code,note,n,flag\n1,007,"",5,true\n2,012,,"",false\n3,"100",x,,\n')
      local t = db:create_table("a", { from = path })
      assert.equal("id:int64 code:string note:string n:int64 flag:bool", schema_of(t))
      assert.same({
        { id = 1, code = "007", note = "", n = 5, flag = true },
        { id = 2, code = "012", flag = false },              -- "" in an int64 column: NULL
        { id = 3, code = "100", note = "x" },
      }, t:to_rows())
      assert.equal(1, t:count_rows("note IS NULL"))
      assert.equal(1, t:count_rows("note = ''"))
      -- asked for int64, the codes are numbers
      local t2 = db:create_table("a2", { from = path }, { schema = { code = "int64" } })
      assert.same({ 7, 12, 100 }, { t2:to_rows()[1].code, t2:to_rows()[2].code, t2:to_rows()[3].code })
      -- a float column with a leading zero is text too
      write(path, "x\n0.5\n00.5\n")
      assert.equal("x:string", schema_of(db:create_table("a3", { from = path })))
    end)

    it("an integer beyond int64 is an error naming file, line and column, never a float", function()
      local path = write(root .. "/big.csv", "id,n\n1,5\n2,99999999999999999999\n")
      local e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.same({ path, 3, "n" }, { e.path, e.line, e.column })
      assert.matches(path .. ":3: column 'n': integer 99999999999999999999 is beyond the int64 range", e.message, 1, true)
      e = raises("invalid_argument", db.create_table, db, "bad", { from = path }, { schema = { n = "int64" } })
      assert.matches(path .. ":3: column 'n': integer 99999999999999999999 is beyond the int64 range", e.message, 1, true)
      write(path, "id,n\n1,x\n2,99999999999999999999\n")                   -- among text it is text
      assert.equal("99999999999999999999", db:create_table("s", { from = path }):to_rows()[2].n)
      -- in a column of floats too: it would be rounded without a word
      write(path, "id,x\n1,1.5\n2,12345678901234567890\n")
      e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.same({ path, 3, "x" }, { e.path, e.line, e.column })
      assert.matches("integer 12345678901234567890 is beyond the int64 range", e.message, 1, true)
      -- asked for: a float64 column takes it
      assert.equal(12345678901234567890.0, db:create_table("f", { from = path }, { schema = { x = "float64" } })
        :to_rows()[2].x)
      assert.same({ "f", "s" }, db:table_names())
    end)

    it("a bad cell is shown cut short on one line, however long it is", function()
      local cell = '"' .. ("x\n"):rep(50000) .. '"'                  -- 100 KB over 50001 lines
      local path = write(root .. "/long.csv", "id,n\n1,5\n2," .. cell .. "\n")
      local e = raises("invalid_argument", db.create_table, db, "bad", { from = path },
        { schema = { n = "int64" } })
      assert.is_true(#e.message < 300, e.message)
      assert.matches('expected int64, got "x\\nx\\n', e.message, 1, true)
      assert.matches("... (100000 bytes)", e.message, 1, true)
      assert.is_nil(e.message:find("\n", 1, true))
    end)

    it("5000 columns: an error naming the file, before any row is read", function()
      local names, cells = {}, {}
      for i = 1, 5000 do names[i], cells[i] = "c" .. i, tostring(i) end
      local path = write(root .. "/wide.csv", table.concat(names, ",") .. "\n" .. table.concat(cells, ",") .. "\n")
      local e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.equal(path, e.path)
      assert.matches(path .. ": 5000 columns: SQLite allows at most 2000 columns per table", e.message, 1, true)
      for i = 2000, 5000 do names[i], cells[i] = nil, nil end                   -- 1999 + _rowid fit
      write(path, table.concat(names, ",") .. "\n" .. table.concat(cells, ",") .. "\n")
      local t = db:create_table("wide", { from = path })
      assert.equal(1, t:count_rows())
      assert.equal(1999, t:to_rows()[1].c1999)
    end)
  end)

  describe("CSV records", function()
    it("reads CRLF, lone CR, a BOM, blank lines, quoted newlines and long cells, and counts lines right", function()
      local big = ("x"):rep(3 * 1024 * 1024)                 -- longer than a read: the record spans refills
      local path = write(root .. "/r.csv", '\239\187\191id,t\r\n1,"a\nb"\r\n\n2,' .. big .. '\r3,"say ""hi"""\n\n4,')
      local t = db:create_table("r", { from = path })
      assert.equal("id:int64 t:string", schema_of(t))
      local rows = t:to_rows()
      assert.same({ 1, 2, 3, 4 }, { rows[1].id, rows[2].id, rows[3].id, rows[4].id })
      assert.same({ "a\nb", big, 'say "hi"' }, { rows[1].t, rows[2].t, rows[3].t })
      assert.is_nil(rows[4].t)                                -- "4," ends the file: an empty last field
      -- lines count the newlines inside quotes and the blank lines
      write(path, 'id,t\n1,"a\nb\nc"\n\n2,x\n3,y,z\n')
      local e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.same({ path, 7 }, { e.path, e.line })
      assert.equal(path .. ":7: expected 2 fields, got 3", e.message)
      write(path, 'id,t\n1,"a\nb"\n2,"open\n3,x\n')
      e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.equal(path .. ":4: unterminated quoted field", e.message)
      write(path, 'id,t\n1,"a"b\n')
      e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.equal(path .. ":2: unexpected character after a closing quote", e.message)
      write(path, "")
      e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.equal(path .. ":1: empty CSV file (a header row is needed)", e.message)
      write(path, "id,Id\n")
      e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.equal(path .. ":1: duplicate column 'Id' in the header", e.message)
      assert.same({ "r" }, db:table_names())
    end)

    it("reads a 16 MiB cell from a pipe, which gives 64 KiB a read", function()
      local fifo = root .. "/in.fifo"
      assert.is_true(os.execute("mkfifo " .. child.quote(fifo)))
      local proc = require "geneva.proc"
      local w = assert(proc.spawn { argv = { "sh", "-c",
        [[{ printf 'id,t\n1,'; head -c 16777216 /dev/zero | tr '\0' x; printf '\n2,y\n'; } > "$1"]], "_", fifo } })
      local t = db:create_table("p", { from = fifo, format = "csv" })
      assert.equal("exited", (w:wait(30)))
      w:close()
      local rows = t:to_rows { columns = { "id", "t" } }
      assert.same({ 1, 2 }, { rows[1].id, rows[2].id })
      assert.equal(16777216, #rows[1].t)
      assert.is_nil(rows[1].t:find("[^x]"))
      assert.equal("y", rows[2].t)
    end)

    it("stops a line of a million fields at once, in the header or after it", function()
      -- a hostile file: the field count is checked as the line is parsed,
      -- not after gigabytes of field entries
      local path = write(root .. "/w.csv", "a,b\n1,2\n" .. (","):rep(1000000) .. "\n")
      local e = raises("invalid_argument", db.create_table, db, "w", { from = path })
      assert.equal(path .. ":3: too many fields on one line", e.message)
      write(path, (","):rep(1000000) .. "\n1\n")
      e = raises("invalid_argument", db.create_table, db, "w", { from = path })
      assert.equal(path .. ":1: too many fields on one line", e.message)
      write(path, "a,b\n1,2,3,4\n")     -- a few too many: counted, as before
      e = raises("invalid_argument", db.create_table, db, "w", { from = path })
      assert.equal(path .. ":2: too many fields on one line", e.message)
      assert.same({}, db:table_names())
    end)
  end)

  describe("JSONL", function()
    it("keeps the order in which keys first appear", function()
      local path = write(root .. "/a.jsonl", '{"b": 1, "a": "x", "c": null}\n\n{"a": "y", "b": 2, "d": true, "v": [1, 2]}\n')
      local t = db:create_table("j", { from = path })
      assert.equal("b:int64 a:string c:string d:bool v:float32[2]", schema_of(t))
      assert.same({ { b = 1, a = "x" }, { b = 2, a = "y", d = true, v = { 1, 2 } } }, t:to_rows())
    end)

    it("says nested values are not supported and what to do instead, naming the line", function()
      local path = write(root .. "/n.jsonl", '{"id": 1, "meta": "{}"}\n{"id": 2, "meta": {"k": 1}}\n')
      local e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.same({ path, 2, "meta" }, { e.path, e.line, e.column })
      assert.matches(path .. ":2: column 'meta': nested JSON objects are not supported", e.message, 1, true)
      assert.matches("store it as a string column holding its JSON text", e.message, 1, true)
      write(path, '{"id": 1, "tags": ["a", "b"]}\n')
      e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.matches(":1: column 'tags': nested JSON arrays are not supported", e.message, 1, true)
      write(path, '{"id": 1, "tags": []}\n')
      raises("invalid_argument", db.create_table, db, "bad", { from = path })
      -- its JSON text as a string is fine
      write(path, '{"id": 1, "meta": "{\\"k\\": 1}"}\n')
      assert.equal('{"k": 1}', db:create_table("ok", { from = path }):to_rows()[1].meta)
    end)

    it("refuses integers beyond int64 and repeated keys, naming the line", function()
      local path = write(root .. "/big.jsonl", '{"id": 1}\n\n{"id": -9223372036854775809}\n')
      local e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.same({ path, 3 }, { e.path, e.line })
      assert.equal(path .. ":3: integer -9223372036854775809 is beyond the int64 range at column 8", e.message)
      write(path, '{"id": 1, "tag": "a"}\n{"id": 2, "tag": null, "tag": "b"}\n')
      e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.equal(path .. ":2: duplicate key 'tag' at column 24", e.message)
      write(path, '{"id": 1, "Tag": "a", "tag": "b"}\n')
      e = raises("invalid_argument", db.create_table, db, "bad", { from = path })
      assert.matches("clashes with another column %(names are case%-insensitive%)", e.message)
      assert.same({}, db:table_names())
    end)
  end)

  describe("streamed", function()
    -- 70,000 rows: more than the first chunk (65,536) that types come from
    local N = 70000
    local function zip(i) return tostring(10000 + i % 89999) end

    it("a later row that contradicts an inferred type is an error naming line and column; nothing is left", function()
      local csv = root .. "/late.csv"
      write_lines(csv, "id,zip", N, function(i) return i .. "," .. (i == N and "00123" or zip(i)) end)
      local e = raises("invalid_argument", db.create_table, db, "late", { from = csv })
      assert.same({ csv, N + 1, "zip" }, { e.path, e.line, e.column })
      assert.matches(('%s:%d: column \'zip\': "00123" has a leading zero'):format(csv, N + 1), e.message, 1, true)
      assert.matches("int64 was inferred from the first 65536 rows; give opts.schema = {zip = \"string\"}",
        e.message, 1, true)
      write_lines(csv, "id,zip", N, function(i) return (i == N and "abc" or i) .. "," .. zip(i) end)
      e = raises("invalid_argument", db.create_table, db, "late", { from = csv })
      assert.same({ csv, N + 1, "id" }, { e.path, e.line, e.column })
      assert.matches('column \'id\': expected int64, got "abc" (int64 was inferred', e.message, 1, true)
      assert.same({}, db:table_names())
      assert.is_false(backend.exists(db.path .. "/late/_versions/1.json"))
      assert.equal(0, data_files(db.path .. "/late"))
      -- told, it reads
      local t = db:create_table("late", { from = csv }, { schema = { id = "string" } })
      assert.equal(N, t:count_rows())
      assert.equal(zip(N), tostring(t:search():where("id = 'abc'"):to_rows()[1].zip))

      local jsonl = root .. "/late.jsonl"
      write_lines(jsonl, nil, N, function(i) return ('{"id": %d%s}'):format(i, i == N and ', "extra": 1' or "") end)
      e = raises("invalid_argument", db.create_table, db, "j", { from = jsonl })
      assert.same({ jsonl, N, "extra" }, { e.path, e.line, e.column })
      assert.matches("column 'extra' first appears here, after the first 65536 rows", e.message, 1, true)
      write_lines(jsonl, nil, N, function(i) return ('{"id": %s}'):format(i == N and '"x"' or i) end)
      e = raises("invalid_argument", db.create_table, db, "j", { from = jsonl })
      assert.same({ jsonl, N, "id" }, { e.path, e.line, e.column })
      assert.matches('column \'id\': expected int64, got "x" (int64 was inferred from the first 65536 rows',
        e.message, 1, true)
      assert.same({ "late" }, db:table_names())
    end)

    it("a bad row late in an appended file commits nothing and leaves no file", function()
      local t = db:create_table("t", { { id = 0, zip = "1" } })
      local before = data_files(t.dir)
      local csv = write_lines(root .. "/add.csv", "id,zip", N, function(i) return (i == N and "x" or i) .. "," .. zip(i) end)
      local e = raises("invalid_argument", t.add, t, { from = csv })
      assert.same({ csv, N + 1, "id" }, { e.path, e.line, e.column })
      assert.matches(":%d+: column 'id': expected int64, got \"x\"$", e.message)
      assert.equal(1, t:version())
      assert.equal(1, t:count_rows())
      assert.equal(before, data_files(t.dir))
    end)

    it("an overwrite that fails leaves the old table as it was", function()
      local t = db:create_table("t", { { id = 1, zip = "a" } })
      local csv = write_lines(root .. "/ow.csv", "id,zip", N, function(i) return (i == N and "x" or i) .. "," .. zip(i) end)
      local files = data_files(t.dir)
      raises("invalid_argument", db.create_table, db, "t", { from = csv }, { mode = "overwrite" })
      assert.same({ { id = 1, zip = "a" } }, t:to_rows())
      assert.equal(1, t:version())
      assert.equal(files, data_files(t.dir))        -- what it wrote went with it
      write_lines(csv, "id,zip", N, function(i) return i .. "," .. zip(i) end)
      t = db:create_table("t", { from = csv }, { mode = "overwrite" })
      assert.equal(N, t:count_rows())
      assert.equal(2, t:version())
      assert.equal("id:int64 zip:int64", schema_of(t))
    end)

    it("reads 200,000 CSV rows and 100,000 JSONL rows exactly, in one version each", function()
      local n = 200000
      local function row(i)
        return { id = i, name = "u" .. (i * 7919 % 1000003), score = (i % 1000) / 8, ok = i % 3 == 0,
                 code = ("%05d"):format(i % 100000) }
      end
      local csv = write_lines(root .. "/rows.csv", "id,name,score,ok,code", n, function(i)
        local r = row(i)
        return ("%d,%s,%s,%s,%s"):format(r.id, r.name, r.score, r.ok, r.code)
      end)
      local t = db:create_table("rows", { from = csv })
      assert.equal("id:int64 name:string score:float64 ok:bool code:string", schema_of(t))
      assert.equal(n, t:count_rows())
      assert.equal(1, t:version())
      assert.equal(2, #t:_snapshot().fragments)            -- 100,000 rows each
      local ids = { 1, 2, 65535, 65536, 65537, 99999, 100000, 100001, 131072, 199999, 200000 }
      local got = t:search():where("id IN (" .. table.concat(ids, ",") .. ")"):to_rows()
      assert.equal(#ids, #got)
      for k, r in ipairs(got) do assert.same(row(ids[k]), r) end
      assert.equal(n // 3, t:count_rows("ok"))
      -- each code twice: 00042, 01000 and 00000..00009
      assert.equal(24, t:count_rows("code = '00042' OR code = '01000' OR code LIKE '0000_'"))
      -- appended: one more version
      t:add { from = csv }
      assert.equal(2 * n, t:count_rows())
      assert.equal(2, t:version())
      assert.equal(4, #t:_snapshot().fragments)

      local jn = 100000
      local jsonl = write_lines(root .. "/rows.jsonl", nil, jn, function(i)
        local r = row(i)
        return ('{"id": %d, "name": "%s", "score": %s, "ok": %s, "code": "%s"}'):format(r.id, r.name,
          r.score == math.floor(r.score) and ("%.1f"):format(r.score) or r.score, r.ok, r.code)
      end)
      local j = db:create_table("jrows", { from = jsonl }, { fragment_size = 30000 })
      assert.equal("id:int64 name:string score:float64 ok:bool code:string", schema_of(j))
      assert.equal(jn, j:count_rows())
      assert.equal(4, #j:_snapshot().fragments)
      got = j:search():where("id IN (1, 30000, 30001, 65536, 65537, 100000)"):to_rows()
      for k, id in ipairs { 1, 30000, 30001, 65536, 65537, 100000 } do assert.same(row(id), got[k]) end
    end)

    it("keeps memory bounded by a chunk, not the file (peak RSS of the process)", function()
      -- a sanitizer's own memory, or an upload path, would blur the figure
      if testdb.s3 or os.getenv("GENEVA_SANITIZE") == "1" then return end
      -- 200,000 rows of ~115 bytes (23 MB): reading it whole, as ingest
      -- once did, peaked at ~150 MB; streamed it stays near 40 MB
      local csv = write_lines(root .. "/mem.csv", "id,name,score,text", 200000, function(i)
        return ("%d,n%d,%d.5,%s"):format(i, i * 7 % 100003, i % 1000, ("t%07d"):format(i):rep(12))
      end)
      local code = ([[
        local db = require("geneva").connect(%q)
        local t = db:create_table("mem", { from = %q })
        local f = io.open("/proc/self/status")
        local kb = f:read("a"):match("VmHWM:%%s*(%%d+) kB")
        f:close()
        print(t:count_rows(), kb)
      ]]):format(db.path, csv)
      local status, out, err = child.run(code)
      assert.equal(0, status, err)
      local rows, kb = out:match("^(%d+)%s+(%d+)")
      assert.equal("200000", rows)
      assert.is_true(tonumber(kb) < 100 * 1024, ("peak RSS %d kB, expected < 100 MB"):format(tonumber(kb)))
    end)
  end)

  describe("progress", function()
    it("draws a bar on stderr with GENEVA_PROGRESS=1, none when stderr is not a terminal or with 0", function()
      if testdb.s3 then return end
      local csv = write_lines(root .. "/p.csv", "id", 1000, tostring)
      local function code(name)
        return ("require('geneva').connect(%q):create_table(%q, { from = %q })"):format(db.path, name, csv)
      end
      local status, _, err = child.run(code("t1"), { GENEVA_PROGRESS = "1" })
      assert.equal(0, status, err)
      assert.matches("p%.csv %[#+%] 100%%  0%.0/0%.0 MB  1000 rows  [%d.kM]+ rows/s\27%[K\n$", err)
      status, _, err = child.run(code("t2"), {})
      assert.equal(0, status, err)
      assert.equal("", err)
      status, _, err = child.run(code("t3"), { GENEVA_PROGRESS = "0" })
      assert.equal(0, status, err)
      assert.equal("", err)
    end)
  end)
end)
