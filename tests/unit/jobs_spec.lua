-- Specs for job records: db:jobs filters, db:job, and the CLI
-- `geneva jobs list|show|logs|wait|cancel --db URI [--json]`, including
-- cancelling a job that another process is running and following its log.
-- Runs on a directory and on s3 (moto): see testdb.lua. storage: dir s3
local geneva = require "geneva"
local testdb = require "testdb"
local backend = require "geneva.store.backend"
local errors = require "geneva.errors"
local job = require "geneva.backfill.job"
local json = require "geneva.json"
local proc = require "geneva.proc"
local time = require "geneva.time"
local fs = require "geneva.fs"
local child = require "child"

local raises = require("expect").raises

local make_table = require("tables").maker { rows = function(i) return { id = i, text = ("t%d"):format(i) } end }

-- geneva jobs ARGS... -> exit code, stdout, stderr
local function cli(...) return child.cli { "jobs", ... } end

-- the JSON document a --json command printed
local function doc(out)
  local v, err = json.decode(out, { null_as_nil = true })
  assert.is_not_nil(v, ("not JSON (%s): %s"):format(tostring(err), out))
  return v
end

local function ids(recs)
  local out = {}
  for i, r in ipairs(recs) do out[i] = r.id end
  return out
end

local wait_until = require("expect").wait_until

describe("geneva jobs", function()
  local root, db
  before_each(function()
    root = child.tmpdir()
    db = testdb.connect(root .. "/db")
  end)
  after_each(function() child.rmtree(root) end)

  -- four jobs: a.x DONE, a.y FAILED, b.x DONE, b.z CANCELLED (newest)
  local function history()
    local a = make_table(db, "a", 300, { fragment_size = 100 })
    local b = make_table(db, "b", 300, { fragment_size = 100 })
    local x = geneva.udf { data_type = "int64", fn = function(id) return id + 1 end }
    a:add_columns { x = x, y = geneva.udf { data_type = "int64", fn = function(id)
      if id == 42 then error("no 42") end return id end } }
    -- z is slow: its background job must still be running when cancelled
    b:add_columns { x = x, z = geneva.udf { data_type = "int64", fn = function(id)
      local t = os.clock() + 0.005 while os.clock() < t do end return id end } }
    local done_a = a:backfill("x", { batch_size = 50 })
    local ok, failed = pcall(a.backfill, a, "y", { batch_size = 50 })
    assert.is_false(ok)
    local done_b = b:backfill("x", { batch_size = 50 })
    local j = b:backfill_async("z")
    j:cancel()
    assert.equal("CANCELLED", j:status())
    return { done_a = done_a.id, failed_a = failed.job_id, done_b = done_b.id, cancelled_b = j.id }
  end

  describe("db:jobs", function()
    it("lists records newest first, filtered by table and status", function()
      assert.same({}, db:jobs())
      local h = history()
      assert.same({ h.cancelled_b, h.done_b, h.failed_a, h.done_a }, ids(db:jobs()))
      assert.same({ h.failed_a, h.done_a }, ids(db:jobs { table = "a" }))
      assert.same({ h.failed_a }, ids(db:jobs { status = "FAILED" }))
      assert.same({ h.done_b, h.done_a }, ids(db:jobs { status = "DONE" }))
      assert.same({ h.cancelled_b }, ids(db:jobs { table = "b", status = "CANCELLED" }))
      assert.same({}, ids(db:jobs { table = "a", status = "CANCELLED" }))
      assert.same({}, db:jobs { table = "nope" })
      raises("invalid_argument", db.jobs, db, { status = "BOGUS" })
      -- records carry counts, timings, the error
      local f = db:jobs { status = "FAILED" }[1]
      assert.equal("a", f.table)
      assert.equal("y", f.column)
      assert.equal("udf_error", f.error.code)
      assert.equal(42, f.error.rowid)
      assert.is_string(f.created_at)
      assert.is_string(f.finished_at)
      assert.is_number(f.seconds)
      local d = db:jobs { status = "DONE", table = "a" }[1]
      assert.same({ planned = 300, computed = 300, committed = 300, failed = 0 }, d.rows)
    end)

    it("db:job(id) reads a record; not_found otherwise", function()
      local h = history()
      local j = db:job(h.done_a)
      assert.equal(h.done_a, j.id)
      assert.equal("DONE", j:status())
      assert.equal(300, j:wait().rows.committed)
      local e = raises("udf_error", db:job(h.failed_a).wait, db:job(h.failed_a))
      assert.equal(h.failed_a, e.job_id)
      raises("not_found", db.job, db, "20200101-000000-deadbeef")
      raises("invalid_argument", db.job, db, "../etc")
    end)
  end)

  describe("geneva jobs (CLI)", function()
    it("list --json prints an array, filtered", function()
      local code, out = cli("list", "--db", db.uri, "--json")
      assert.equal(0, code)
      assert.equal("[]", out:match("^%s*(.-)%s*$"))
      local h = history()
      code, out = cli("list", "--db", db.uri, "--json")
      assert.equal(0, code)
      local arr = doc(out)
      assert.same({ h.cancelled_b, h.done_b, h.failed_a, h.done_a }, ids(arr))
      assert.equal("CANCELLED", arr[1].status)
      assert.equal("b", arr[1].table)
      assert.equal(300, arr[4].rows.committed)
      code, out = cli("list", "--db", db.uri, "--json", "--table", "a", "--status", "failed")
      assert.equal(0, code)
      assert.same({ h.failed_a }, ids(doc(out)))
      -- the text form: a header row, then one line per job
      code, out = cli("list", "--db", db.uri)
      assert.equal(0, code)
      local lines = {}
      for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equal("ID STATUS TABLE COLUMN PROGRESS AGE DURATION", (lines[1]:gsub("%s+", " ")))
      assert.equal(5, #lines)
      for i = 2, 5 do assert.truthy(lines[i]:match("^%d+%-%d+%-%x+%s+%u+%s+%a+%s+%a+%s+%d+/%d+%s+%d+[smhd]%s+[%d.]+[smhd]"), lines[i]) end
      assert.matches("^" .. h.done_a:gsub("%-", "%%-") .. "%s+DONE%s+a%s+x%s+300/300%s", lines[5])
    end)

    it("list says so when there are no jobs; progress never shows more than planned", function()
      local code, out, err = cli("list", "--db", db.uri)
      assert.equal(0, code)
      assert.equal("", out)
      assert.equal("No jobs found.\n", err)
      -- a resumed run folds checkpoints: committed can exceed what it planned
      local id = job.new_id()
      job.save(db.dir, { id = id, kind = "backfill", status = "DONE", table = "t", column = "c",
        created_at = time.iso8601(), started_at = time.iso8601(), finished_at = time.iso8601(), seconds = 75,
        rows = { planned = 10, computed = 10, committed = 40, failed = 0 } })
      code, out = cli("list", "--db", db.uri)
      assert.equal(0, code)
      assert.matches("DONE%s+t%s+c%s+10/10%s+%d+s%s+1m15s\n", out)
      code, out = cli("show", id, "--db", db.uri)
      assert.equal(0, code)
      assert.matches("Progress: +10/10 rows committed", out)
    end)

    it("progress of a resumed run counts its checkpoints in the total, never past it", function()
      local worker = require "geneva.backfill.worker"
      local tbl = make_table(db, "r", 500, { fragment_size = 500 })
      tbl:add_columns { neg = geneva.udf { data_type = "int64", fn = function(id) return -id end } }
      -- an earlier run staged rows 1..100 and died: this run commits them first
      worker.run_task(worker.state(), (require("tables").task_for(tbl, "neg", 1, 100)))
      local rec = tbl:backfill("neg", { batch_size = 100 })
      assert.same({ 100, 400, 500 }, { rec.rows.recovered, rec.rows.planned, rec.rows.committed })
      local code, out = cli("list", "--db", db.uri)
      assert.equal(0, code)
      assert.matches("DONE%s+r%s+neg%s+500/500%s", out)
      code, out = cli("show", rec.id, "--db", db.uri)
      assert.equal(0, code)
      assert.matches("Progress: +500/500 rows committed %(400 computed, 0 failed, 100 recovered from checkpoints%)", out)
    end)

    it("show is for people without --json; --json keys are sorted", function()
      local h = history()
      local code, out = cli("show", h.failed_a, "--db", db.uri)
      assert.equal(0, code)
      assert.matches("^ID: +" .. h.failed_a:gsub("%-", "%%-") .. "\nStatus: +FAILED\nTable: +a\nColumn: +y\n", out)
      assert.matches("\nError: +udf_error: [^\n]*no 42", out)
      assert.matches("\nDuration: +[%d.]+s\n", out)
      assert.matches("\nEvents:\n  ", out)
      -- the keys of the first object in a JSON text, in the order printed
      local function first_keys(text)
        local keys, depth, i = {}, 0, 1
        while i <= #text do
          local c = text:sub(i, i)
          if c == '"' then
            local j = i + 1
            while text:sub(j, j) ~= '"' do j = j + (text:sub(j, j) == "\\" and 2 or 1) end
            if depth == 1 + (text:match("^%s*%[") and 1 or 0) and text:match("^%s*:", j + 1) then
              keys[#keys + 1] = text:sub(i + 1, j - 1)
            end
            i = j
          elseif c == "{" or c == "[" then depth = depth + 1
          elseif c == "}" or c == "]" then
            depth = depth - 1
            if #keys > 0 and depth <= (text:match("^%s*%[") and 1 or 0) then break end
          end
          i = i + 1
        end
        return keys
      end
      for _, argv in ipairs { { "show", h.done_a, "--db", db.uri, "--json" }, { "list", "--db", db.uri, "--json" } } do
        code, out = cli(table.unpack(argv))
        assert.equal(0, code)
        local keys = first_keys(out)
        local sorted = { table.unpack(keys) }
        table.sort(sorted)
        assert.is_true(#keys > 10, out)
        assert.same(sorted, keys)
        assert.equal("column", keys[1])
      end
    end)

    it("-o json is --json, -o yaml the same data and key order, -o wide more columns", function()
      local yaml = require "geneva.yaml"
      local h = history()
      for _, verb in ipairs { { "list" }, { "show", h.failed_a }, { "wait", h.done_a } } do
        local function run(...)
          local argv = { table.unpack(verb) }
          table.move({ "--db", db.uri, ... }, 1, 2 + select("#", ...), #argv + 1, argv)
          return cli(table.unpack(argv))
        end
        local c1, as_json = run("--json")
        local c2, as_o = run("-o", "json")
        local c3, as_yaml = run("--output=yaml")
        assert.same({ c1, as_json }, { c2, as_o })
        assert.equal(c1, c3)
        -- the same data
        local from_yaml = assert(yaml.load(as_yaml))
        assert.equal(json.canonical(doc(as_json)), json.canonical(json.decode(json.encode(from_yaml),
          { null_as_nil = true })))
        -- and the same key order: the first record's top-level keys, sorted
        local first = verb[1] == "list" and as_yaml:match("^%- (.-)\n%- ") or as_yaml
        local top = {}
        for line in (verb[1] == "list" and ("  " .. first) or first):gmatch("[^\n]+") do
          local k = line:match(verb[1] == "list" and "^  ([%w_]+):" or "^([%w_]+):")
          if k then top[#top + 1] = k end
        end
        local sorted = { table.unpack(top) }
        table.sort(sorted)
        assert.is_true(#top > 10, as_yaml)
        assert.same(sorted, top)
      end
      -- errors follow the format
      local code, out = cli("show", "20200101-000000-deadbeef", "--db", db.uri, "-o", "yaml")
      assert.equal(1, code)
      assert.equal("not_found", assert(yaml.load(out)).error.code)
      -- wide: the same rows with more columns
      local _, narrow = cli("list", "--db", db.uri)
      local _, wide = cli("list", "--db", db.uri, "-o", "wide")
      assert.matches("^ID +STATUS +TABLE +COLUMN +PROGRESS +AGE +DURATION +COMPUTED +FAILED +TASKS +RUNNER +VERSIONS +ERROR\n", wide)
      local n1, n2 = select(2, narrow:gsub("\n", "")), select(2, wide:gsub("\n", ""))
      assert.equal(n1, n2)
      assert.matches(h.failed_a:gsub("%-", "%%-") .. " +FAILED +a +y .* udf_error\n", wide)
      assert.matches(h.done_a:gsub("%-", "%%-") .. " +DONE +a +x +300/300 .- +300 +0 +6/6 +local/%d+ +%d+%->%d+ *\n", wide)
      -- bad formats and contradictions are usage errors
      local c, _, err = cli("list", "--db", db.uri, "-o", "jsn")
      assert.equal(2, c)
      assert.matches("unknown output format 'jsn' (did you mean 'json'?)", err, 1, true)
      c, _, err = cli("list", "--db", db.uri, "-o", "table")
      assert.equal(2, c)
      assert.matches("unknown output format 'table' (one of: json, wide, yaml)", err, 1, true)
      assert.equal(2, (cli("list", "--db", db.uri, "--json", "-o", "yaml")))
      assert.equal(2, (cli("list", "--db", db.uri, "-w", "-o", "json")))
      assert.equal(2, (cli("logs", h.done_a, "--db", db.uri, "-o", "yaml")))
    end)

    it("wait prints the end and exits 0 only for DONE", function()
      local h = history()
      local code, out = cli("wait", h.done_a, "--db", db.uri)
      assert.equal(0, code)
      assert.equal(h.done_a .. " DONE\n", out)
      code, out = cli("wait", h.failed_a, "--db", db.uri)
      assert.equal(1, code)
      assert.matches("^" .. h.failed_a:gsub("%-", "%%-") .. " FAILED: udf_error: ", out)
      code, out = cli("wait", h.cancelled_b, "--db", db.uri, "--json")
      assert.equal(1, code)
      assert.equal("CANCELLED", doc(out).status)
      code, out = cli("wait", "20200101-000000-deadbeef", "--db", db.uri, "--json")
      assert.equal(1, code)
      assert.equal("not_found", doc(out).error.code)
      -- a job still running: wait returns at its end
      local tbl = make_table(db, "w", 2000, { fragment_size = 500 })
      tbl:add_columns { s = geneva.udf { data_type = "int64", fn = function(id)
        local t = os.clock() + 0.0005 while os.clock() < t do end return id end } }
      local p = child.start(root, "driver", [[
local geneva = require "geneva"
geneva.connect(arg[1]):open_table("w"):backfill("s", { batch_size = 250 })
]], db.uri)
      local id = wait_until("a running job", function()
        local recs = db:jobs { status = "RUNNING" }
        return recs[1] and recs[1].id
      end)
      code, out = cli("wait", id, "--db", db.uri)
      assert.equal(0, code)
      assert.equal(id .. " DONE\n", out)
      assert.equal("exited", (p:wait(30)))
      p:close()
    end)

    it("show --json prints one object; errors are JSON with exit 1", function()
      local h = history()
      local code, out = cli("show", h.failed_a, "--db", db.uri, "--json")
      assert.equal(0, code)
      local rec = doc(out)
      assert.equal(h.failed_a, rec.id)
      assert.equal("FAILED", rec.status)
      assert.equal("udf_error", rec.error.code)
      -- the database as another machine names it: its URI on s3, not this
      -- machine's mirror; a directory's absolute path
      assert.equal(testdb.s3 and db.uri or db.path, rec.db)
      code, out = cli("show", h.cancelled_b, "--db", db.uri, "--json")   -- written by its own driver
      assert.equal(0, code)
      assert.equal(testdb.s3 and db.uri or db.path, doc(out).db)
      code, out = cli("show", "20200101-000000-deadbeef", "--db", db.uri, "--json")
      assert.equal(1, code)
      local e = doc(out).error
      assert.equal("not_found", e.code)
      assert.is_string(e.message)
      code, out = cli("show", "bad/id", "--db", db.uri, "--json")
      assert.equal(1, code)
      assert.equal("invalid_argument", doc(out).error.code)
      code, out = cli("list", "--db", root .. "/missing", "--json")
      assert.equal(1, code)
      assert.equal("not_found", doc(out).error.code)
      -- a mistyped URI is no database either, on s3 as in a directory
      local typo = testdb.s3 and (db.uri .. "-typo") or (root .. "/dbx")
      local stderr
      code, out, stderr = cli("list", "--db", typo)
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("not_found: no database at '" .. typo:gsub("%p", "%%%0") .. "'", stderr)
      code, out, stderr = cli("show", "20200101-000000-deadbeef", "--db", db.uri)
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("not_found", stderr)
    end)

    it("keep records and --json valid UTF-8 when a UDF fails with any bytes", function()
      local a = make_table(db, "a", 100, { fragment_size = 50 })
      a:add_columns {
        y = geneva.udf { data_type = "int64", fn = function(id)
          if id == 42 then error("no \xff\xfe 42") end return id end },
        w = geneva.udf { data_type = "int64", fn = function() return "caf\xe9" end },
        n = geneva.udf { data_type = "int64", fn = function() return 0 / 0 end },
      }
      local ok, e = pcall(a.backfill, a, "y", { batch_size = 50 })
      assert.is_false(ok)
      assert.equal("udf_error", e.code)
      assert.matches("no \u{FFFD}\u{FFFD} 42", e.message, 1, true)
      ok, e = pcall(a.backfill, a, "w", { batch_size = 50 })
      assert.is_false(ok)
      assert.equal("udf_error", e.code)
      assert.equal("caf\u{FFFD}", e.value)
      -- a NaN for an int64 column is the UDF's error too, not a worker that died
      ok, e = pcall(a.backfill, a, "n", { batch_size = 50 })
      assert.is_false(ok)
      assert.equal("udf_error", e.code)
      assert.matches("nan", e.value)
      local code, out = cli("list", "--db", db.uri, "--json")
      assert.equal(0, code)
      assert.truthy(utf8.len(out), "--json output is not UTF-8")
      assert.same({ "FAILED", "FAILED", "FAILED" }, { doc(out)[1].status, doc(out)[2].status, doc(out)[3].status })
      -- a where that is not UTF-8 could not be recorded faithfully: refused
      ok, e = pcall(a.backfill, a, "y", { where = "text = 't\xe9'" })
      assert.is_false(ok)
      assert.equal("invalid_argument", e.code)
      assert.matches("not valid UTF-8", e.message, 1, true)
    end)

    it("bad usage exits 2", function()
      for _, argv in ipairs {
        {}, { "--db", db.uri }, { "frob", "--db", db.uri }, { "list" }, { "list", "--db" },
        { "list", "--db", db.uri, "--bogus" }, { "show", "--db", db.uri, "--json" },
        { "cancel", "--db", db.uri }, { "list", "--db", db.uri, "--status", "sideways" },
        { "list", "--db", db.uri, "--json=yes" },
        -- bad syntax is exit 2 even when the database is missing too
        { "frob", "--db", db.dir .. "/nope" }, { "show", "--db", db.dir .. "/nope", "--json" },
        { "list", "--db", db.dir .. "/nope", "--status", "sideways" },
        { "show", "x", "y", "--db", db.uri },
      } do
        local code, out, err = cli(table.unpack(argv))
        assert.equal(2, code, table.concat(argv, " ") .. ": " .. out .. err)
        assert.matches("usage:", err)
      end
      local code, out = cli("--help")
      assert.equal(0, code)
      assert.matches("geneva jobs list", out)
    end)

    it("list --watch prints a job again as it progresses, until stopped", function()
      local tbl = make_table(db, "w", 2000, { fragment_size = 500 })
      tbl:add_columns { s = geneva.udf { data_type = "int64", fn = function(id)
        local t = os.clock() + 0.001 while os.clock() < t do end return id end } }
      local p = child.start(root, "driver", [[
local geneva = require "geneva"
geneva.connect(arg[1]):open_table("w"):backfill("s", { batch_size = 250, concurrency = 1 })
]], db.uri)
      local id = wait_until("a running job", function()
        local recs = db:jobs { status = "RUNNING" }
        return recs[1] and recs[1].id
      end)
      -- the watcher runs until stopped: stop it once the job has ended and
      -- its last line is out, however long a loaded machine takes for that
      local q = id:gsub("%-", "%%-")
      local outfile = root .. "/watch.out"
      local w = assert(proc.spawn { argv = { child.bin, "jobs", "list", "-w", "--db", db.uri },
                                    stdin = "null", stdout = outfile, stderr = root .. "/watch.err" })
      assert.equal("exited", (p:wait(60)))
      p:close()
      wait_until("the watcher prints DONE", function()
        return (child.read(outfile) or ""):match(q .. "%s+DONE")
      end)
      assert.equal("running", w:status())  -- still watching
      w:terminate(10)
      w:close()
      local out = child.read(outfile)
      local _, headers = out:gsub("ID%s+STATUS", "")
      assert.equal(1, headers)
      assert.matches(q .. "%s+RUNNING%s", out)
      assert.matches(q .. "%s+DONE%s+w%s+s%s+2000/2000%s", out)
      local code = cli("show", id, "--db", db.uri, "--watch")
      assert.equal(2, code)
    end)

    it("cancel of a finished job is an error and changes nothing", function()
      local h = history()
      local code, out = cli("cancel", h.done_a, "--db", db.uri, "--json")
      assert.equal(1, code)
      assert.equal("conflict", doc(out).error.code)
      assert.matches("already finished %(DONE%)", doc(out).error.message)
      local err
      code, out, err = cli("cancel", h.done_a, "--db", db.uri)
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("^geneva: conflict: job [^ ]+ is already finished %(DONE%)\n$", err)
      assert.equal("DONE", job.load(db.dir, h.done_a).status)
      assert.is_false(backend.exists(db.dir .. "/_geneva/jobs/" .. h.done_a .. ".cancel"))
      code, out = cli("cancel", "20200101-000000-deadbeef", "--db", db.uri, "--json")
      assert.equal(1, code)
      assert.equal("not_found", doc(out).error.code)
    end)

    it("a job whose driver is gone reads FAILED/abandoned; cancel marks it CANCELLED", function()
      -- a record owned by a process that has exited
      local r = assert(proc.run { argv = { "true" } })
      assert.is_true(r.ok)
      local me = proc.self()
      local id = job.new_id()
      job.save(db.dir, { id = id, kind = "backfill", status = "RUNNING", table = "t", column = "c",
        created_at = time.iso8601(), rows = { planned = 10, computed = 3, committed = 0, failed = 0 },
        owner = { hostname = me.hostname, boot_id = me.boot_id, pid = me.pid, start_time = me.start_time - 1 } })
      local code, out = cli("show", id, "--db", db.uri, "--json")
      assert.equal(0, code)
      local rec = doc(out)
      assert.equal("FAILED", rec.status)
      assert.equal("abandoned", rec.error.code)
      assert.same({ id }, ids(db:jobs { status = "FAILED" }))
      assert.has_error(function() db:job(id):wait() end)
      code, out = cli("cancel", id, "--db", db.uri, "--json")
      assert.equal(0, code)
      assert.equal("CANCELLED", doc(out).status)
      assert.equal("CANCELLED", job.load(db.dir, id).status)
      code, out = cli("list", "--db", db.uri)
      assert.equal(0, code)
      assert.matches(id:gsub("%-", "%%-") .. "%s+CANCELLED", out)
    end)

    -- How fast it stops is measured by scripts/bench/cancel, not asserted here:
    -- a loaded CI machine makes any bound either loose or flaky.
    it("cancel stops a job running in another process before it ends", function()
      local tbl = make_table(db, "docs", 20000, { fragment_size = 5000 })
      tbl:add_columns { s = geneva.udf { data_type = "int64", fn = require("udfs").slower } }
      local p, output = child.start(root, "driver", [[
local geneva = require "geneva"
local tbl = geneva.connect(arg[1]):open_table("docs")
local ok, e = pcall(tbl.backfill, tbl, "s", { batch_size = 100, commit_every = 2 })
print(ok and "DONE" or ("ERROR " .. tostring(e.code)))
]], db.uri)
      local v0 = tbl:version()
      local id = wait_until("a running job with commits", function()
        local recs = db:jobs { status = "RUNNING" }
        return recs[1] and tbl:version() > v0 + 1 and recs[1].id
      end)
      -- another process's job: a Job object reading its record
      local j = db:job(id)
      assert.equal("RUNNING", j:status())
      local code, out = cli("cancel", id, "--db", db.uri, "--json")
      assert.equal(0, code)
      assert.equal(id, doc(out).id)
      local how, status = p:wait(60)
      assert.equal("exited", how)
      assert.equal(0, status)
      p:close()
      assert.matches("ERROR cancelled", (output()))
      local rec = job.load(db.dir, id)
      assert.equal("CANCELLED", rec.status)
      assert.equal("cancelled", rec.error.code)
      assert.is_true(rec.rows.committed > 0 and rec.rows.committed < 20000)
      assert.equal(rec.rows.committed, tbl:count_rows("s IS NOT NULL"))
      assert.equal(0, tbl:count_rows("s IS NOT NULL AND s <> id * 7"))
      assert.is_false(backend.exists(db.dir .. "/_geneva/jobs/" .. id .. ".cancel"))
      local ok, e = pcall(j.wait, j)
      assert.is_false(ok)
      assert.equal("cancelled", e.code)
      assert.equal(id, e.job_id)
    end)

    it("logs: the workers' output tagged by worker, the driver's events, and the end", function()
      local tbl = make_table(db, "docs", 400, { fragment_size = 100 })
      tbl:add_columns { p = geneva.udf { data_type = "int64", fn = function(id)
        if id % 100 == 1 then io.stderr:write("saw row ", id, "\n") end
        return id
      end } }
      local rec = tbl:backfill("p", { batch_size = 100 })
      local j = db:job(rec.id)
      local lines = j:logs()
      local text = table.concat(lines, "\n")
      for _, id in ipairs({ 1, 101, 201, 301 }) do
        assert.matches("%d%d:%d%d:%d%d %[worker %d+%] saw row " .. id .. "\n", text .. "\n")
      end
      assert.matches("planned 400 rows in 4 tasks", text)
      assert.matches("DONE: 400 rows computed, 0 failed", lines[#lines])
      -- the CLI prints the same lines
      local code, out = cli("logs", rec.id, "--db", db.uri)
      assert.equal(0, code)
      assert.equal(text .. "\n", out)
      local err
      code, out, err = cli("logs", "nope", "--db", db.uri)
      assert.equal(1, code)
      assert.matches("no job 'nope'", err)
    end)

    it("logs -f follows a job running in another process to its end, then exits with its outcome", function()
      local tbl = make_table(db, "docs", 4000, { fragment_size = 1000 })
      tbl:add_columns { s = geneva.udf { data_type = "int64", fn = function(id)
        if id % 500 == 0 then io.stderr:write("at ", id, "\n") end
        local t = os.clock() + 0.0005 while os.clock() < t do end
        return id
      end } }
      local p = child.start(root, "driver", [[
local geneva = require "geneva"
local tbl = geneva.connect(arg[1]):open_table("docs")
tbl:backfill("s", { batch_size = 500, concurrency = 2 })
]], db.uri)
      local id = wait_until("a running job", function()
        local recs = db:jobs { status = "RUNNING" }
        return recs[1] and recs[1].id
      end)
      local code, out = cli("logs", id, "-f", "--db", db.uri)
      assert.equal(0, code)
      assert.equal("exited", (p:wait(30)))
      p:close()
      for i = 500, 4000, 500 do assert.matches("%] at " .. i .. "\n", out) end
      assert.matches("DONE: 4000 rows computed", out)
      -- follow through the Job object: a finished job gives its whole log at once
      local seen = {}
      local lines = db:job(id):logs { follow = true, on_line = function(l) seen[#seen + 1] = l end }
      assert.same(lines, seen)
      assert.equal(out, table.concat(lines, "\n") .. "\n")
      local e = raises("invalid_argument", function() db:job(id):logs { folow = true } end)
      assert.matches("unknown option 'folow'", e.message)
    end)

    it("the whole log is readable before the record reads final (what a follower stops at)", function()
      -- on s3 a short job's log is uploaded only at its end: a record
      -- saved final first let `logs -f` stop before the log existed
      local tbl = make_table(db, "docs", 40, { fragment_size = 10 })
      tbl:add_columns { s = geneva.udf { data_type = "int64", fn = function(id) return id end } }
      local seen
      local save_final = job.save_final
      job.save_final = function(dir, rec)
        if not seen then seen = job.read_log(dir, rec.id) or false end
        return save_final(dir, rec)
      end
      local ok, err = pcall(tbl.backfill, tbl, "s", { batch_size = 10 })
      job.save_final = save_final
      assert(ok, err)
      assert.is_table(seen, "no log when the record was saved final")
      assert.matches("^%d%d:%d%d:%d%d DONE: 40 rows computed", seen[#seen])
    end)

    it("a log that exists but cannot be read is an error, not the record's events", function()
      local tbl = make_table(db, "docs", 20, { fragment_size = 10 })
      tbl:add_columns { s = geneva.udf { data_type = "int64", fn = function(id) return id end } }
      local id = tbl:backfill("s").id
      local get = backend.get
      backend.get = function() return nil, "connection reset", "EIO" end
      local ok, e = pcall(job.read_log, db.dir, id)
      backend.get = get
      assert.is_false(ok)
      assert.equal("unavailable", errors.from(e).code)
      assert.equal("cannot read the log of job " .. id .. ": connection reset", errors.from(e).message)
      -- read on from an offset: the rest only (a ranged GET on s3), nothing past the end
      local all, size = job.read_log(db.dir, id)
      local first = #all[1] + 1
      local rest, at = job.read_log(db.dir, id, first)
      assert.same({ table.unpack(all, 2) }, rest)
      assert.equal(size, at)
      assert.same({ {}, size }, { job.read_log(db.dir, id, size) })
      assert.same({ {}, size + 10 }, { job.read_log(db.dir, id, size + 10) })
      assert.is_nil(job.read_log(db.dir, "20990101-000000-00000000"))
    end)
  end)
end)
