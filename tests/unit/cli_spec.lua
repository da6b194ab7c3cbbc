-- Errors a user can act on (issue 12): how `geneva` reports a script's memcheck
-- error (the code, the message and the line of the user's script; a full
-- traceback for internal errors, GENEVA_TRACE=1 and --trace), mistyped
-- commands, and "did you mean" for every table of options
-- (geneva.suggest).
local geneva = require "geneva"
local suggest = require "geneva.suggest"
local child = require "child"

local raises = require("expect").raises

describe("geneva.suggest", function()
  it("finds the nearest name within 2 edits, in a list or a set", function()
    assert.equal("jobs", suggest.nearest("job", { "cluster", "jobs", "recipe" }))
    assert.equal("batch_size", suggest.nearest("bach_size", { batch_size = true, where = true }))
    assert.equal("where", suggest.nearest("whree", { batch_size = true, where = true }))   -- a transposition
    assert.is_nil(suggest.nearest("frobnicate", { "jobs", "reap" }))
    assert.is_nil(suggest.nearest("x", { "id" }))        -- as many edits as letters: no hint
    assert.is_nil(suggest.nearest(42, { "jobs" }))
    assert.equal(" (did you mean 'reap'?)", suggest.hint("rep", { "reap", "run" }))
    assert.equal("", suggest.hint("zzzzzz", { "reap" }))
  end)
end)

describe("geneva reporting errors", function()
  local dir
  before_each(function() dir = child.tmpdir() end)
  after_each(function() child.rmtree(dir) end)

  -- runs `geneva [flags] job.lua` over the given script in dir
  local function run(script, flags, env)
    child.write(dir .. "/job.lua", script)
    local argv = { table.unpack(flags or {}) }
    argv[#argv + 1] = "job.lua"
    return child.cli(argv, { cwd = dir, env = env or { GENEVA_TRACE = "" } })
  end

  local MISSING = [[
local geneva = require "geneva"
local db = geneva.connect("./db")
db:open_table("nope")
]]

  it("an ordinary error: code, message and the line of the script, no traceback", function()
    local code, out, err = run(MISSING)
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("^geneva: not_found: table 'nope' does not exist in [^\n]*\n  at job%.lua:3\n$", err)
  end)

  it("points at the script's line when the error comes through a context", function()
    local code, _, err = run([[
local geneva = require "geneva"
local db = geneva.connect("./db")
local t = db:create_table("t", { { id = 1 } })
geneva.local_cluster { workers = 1 } (function()
  t:backfill("missing")
end)
]])
    assert.equal(1, code)
    assert.matches("^geneva: not_found: [^\n]*missing[^\n]*\n  at job%.lua:%d\n$", err)
    assert.is_nil(err:find("stdlib/", 1, true))
  end)

  it("a UDF's error names the script's line too", function()
    local code, _, err = run([[
local geneva = require "geneva"
local t = geneva.connect("./db"):create_table("t", { { id = 1 }, { id = 2 } })
t:add_columns { y = geneva.udf { data_type = "int64", fn = function(id) error("no " .. id) end } }
t:backfill("y")
]])
    assert.equal(1, code)
    assert.matches("^geneva: udf_error: [^\n]*no 1[^\n]*\n  at job%.lua:4\n$", err)
  end)

  it("full tracebacks with --trace, GENEVA_TRACE=1, and for other errors", function()
    local code, _, err = run(MISSING, { "--trace" })
    assert.equal(1, code)
    assert.matches("^geneva: not_found: [^\n]*\nstack traceback:\n", err)
    assert.matches("job%.lua:3: in main chunk", err)
    code, _, err = run(MISSING, {}, { GENEVA_TRACE = "1" })
    assert.equal(1, code)
    assert.matches("stack traceback:", err)
    -- Lua's own errors and internal ones are ours to debug: a traceback
    code, _, err = run("local t = nil\nreturn t.x\n")
    assert.equal(1, code)
    assert.matches("job%.lua:2: attempt to index a nil value", err)
    assert.matches("stack traceback:", err)
    code, _, err = run('error(require("geneva.errors").new("internal", "a bug"))\n')
    assert.equal(1, code)
    assert.matches("^geneva: internal: a bug\nstack traceback:", err)
  end)

  it("the -e chunk is a place too", function()
    local code, _, err = child.cli({ "-e", 'require("geneva").connect("./db"):open_table("nope")' },
      { cwd = dir, env = { GENEVA_TRACE = "" } })
    assert.equal(1, code)
    assert.matches("\n  at %(command line%):1\n$", err)
  end)
end)

describe("--db", function()
  it("takes a file:// URI as geneva.connect does", function()
    local dir = child.tmpdir()
    local db = geneva.connect("file://" .. dir .. "/data")
    db:create_table("docs", { { id = 1 } })
    local code, out, err = child.cli { "jobs", "list", "--db", "file://" .. dir .. "/data" }
    assert.equal(0, code, err)
    assert.equal("", out)
    assert.equal("No jobs found.\n", err)
    code, out, err = child.cli { "tables", "list", "--db", "file://" .. dir .. "/data" }
    assert.equal(0, code, err)
    assert.matches("\ndocs%s+1%s", out)
    -- a directory that is not there is still not found, named as given
    code, _, err = child.cli { "jobs", "list", "--db", "file://" .. dir .. "/nothere" }
    assert.equal(1, code)
    assert.equal(("geneva: not_found: no database at 'file://%s/nothere'\n"):format(dir), err)
    code, _, err = child.cli { "jobs", "list", "--db", "http://" .. dir }
    assert.equal(1, code)
    assert.matches("^geneva: invalid_argument: .*a database is a directory or s3://bucket/prefix\n$", err)
    child.rmtree(dir)
  end)
end)

describe("geneva COMMAND typos", function()
  it("a mistyped command exits 2 with a suggestion", function()
    local code, out, err = child.cli { "job", "list" }
    assert.equal(2, code)
    assert.equal("", out)
    assert.matches("^geneva: unknown command 'job' %(did you mean 'jobs'%?%)\n", err)
    code, _, err = child.cli { "recpie", "run", "x.yaml" }
    assert.equal(2, code)
    assert.matches("did you mean 'recipe'", err)
  end)

  it("a word far from every command, or an existing file, is a script", function()
    local code, _, err = child.cli { "frobnicate" }
    assert.equal(1, code)
    assert.matches("cannot open frobnicate", err)
    local dir = child.tmpdir()
    child.write(dir .. "/job", "print('a script named job')\n")
    local out
    code, out = child.cli({ "job" }, { cwd = dir })
    child.rmtree(dir)
    assert.equal(0, code)
    assert.equal("a script named job\n", out)
  end)

  it("mistyped actions and options of a command", function()
    local code, _, err = child.cli { "jobs", "lsit", "--db", "." }
    assert.equal(2, code)
    assert.matches("unknown action 'lsit' %(did you mean 'list'%?%)", err)
    code, _, err = child.cli { "jobs", "list", "--jsno", "--db", "." }
    assert.equal(2, code)
    assert.matches("unknown option '%-%-jsno' %(did you mean '%-%-json'%?%)", err)
    code, _, err = child.cli { "recipe", "rn", "x.yaml" }
    assert.equal(2, code)
    assert.matches("did you mean 'run'", err)
  end)
end)

describe("did you mean, in option tables", function()
  local dir, db
  before_each(function()
    dir = child.tmpdir()
    db = geneva.connect(dir .. "/db")
  end)
  after_each(function() child.rmtree(dir) end)

  it("backfill, create_table, udf, context and cluster options", function()
    local t = db:create_table("t", { { id = 1 } })
    t:add_columns { y = geneva.udf { data_type = "int64", fn = function(id) return id end } }
    local e = raises("invalid_argument", t.backfill, t, "y", { bach_size = 10 })
    assert.matches("unknown option 'bach_size' (did you mean 'batch_size'?)", e.message, 1, true)
    e = raises("invalid_argument", db.create_table, db, "u", { { id = 1 } }, { fragmentsize = 10 })
    assert.matches("unknown option 'fragmentsize' (did you mean 'fragment_size'?)", e.message, 1, true)
    e = raises("invalid_argument", geneva.udf, { data_typ = "int64", fn = function(id) return id end })
    assert.matches("data_typ: unknown option (did you mean 'data_type'?)", e.message, 1, true)
    e = raises("invalid_argument", geneva.context, { clsuter = "x" })
    assert.matches("unknown option 'clsuter' (did you mean 'cluster'?)", e.message, 1, true)
    e = raises("invalid_argument", db.define_cluster, db, "c", { type = "local", workerz = 2 })
    assert.matches("unknown field 'workerz' (did you mean 'workers'?)", e.message, 1, true)
  end)

  it("table reads, cleanup, job lists and logs, connect: every options table", function()
    local t = db:create_table("t", { { id = 1 } })
    local function says(msg, f, ...)
      local e = raises("invalid_argument", f, ...)
      assert.matches(msg, e.message, 1, true)
    end
    says("to_rows: unknown option 'colums' (did you mean 'columns'?)", t.to_rows, t, { colums = { "id" } })
    says("to_rows: unknown option 'lmit' (did you mean 'limit'?)", t.to_rows, t, { lmit = 1 })
    says("to_rows: unknown option 'order_by' (one of: columns, limit, where)", t.to_rows, t, { order_by = "id" })
    says("cleanup_old_versions: unknown option 'older_then' (did you mean 'older_than'?)",
      t.cleanup_old_versions, t, { older_then = 1 })
    says("jobs: unknown option 'tabel' (did you mean 'table'?)", db.jobs, db, { tabel = "t" })
    says("jobs: unknown status 'done' (did you mean 'DONE'?)", db.jobs, db, { status = "done" })
    says("jobs: unknown status 'DOEN' (did you mean 'DONE'?)", db.jobs, db, { status = "DOEN" })
    says("connect (s3 database): unknown option 'regoin' (did you mean 'region'?)",
      geneva.connect, "s3://bucket/x", { regoin = "eu-west-1" })
    says("connect: option 'endpoint' is for s3:// databases; a directory database takes none",
      geneva.connect, dir .. "/db2", { endpoint = "http://127.0.0.1:9000" })
    t:add_columns { y = geneva.udf { data_type = "int64", fn = function(id) return id end } }
    local j = t:backfill_async("y")
    j:wait()
    says("job:logs: unknown option 'folow' (did you mean 'follow'?)", j.logs, j, { folow = true })
    says("job:logs: unknown option 'tail' (one of: follow, on_line)", j.logs, j, { tail = 5 })
    says("backfill: unknown option 'wehre' (did you mean 'where'?)", t.backfill, t, "y", { wehre = "id > 0" })
  end)

  it("local_cluster, udf:call, compact, file sources, recipe.run, pretty.format: no option passes unchecked", function()
    local t = db:create_table("t", { { id = 1 } })
    local function says(msg, f, ...)
      local e = raises("invalid_argument", f, ...)
      assert.matches(msg, e.message, 1, true)
    end
    says("local_cluster: unknown option 'workrs' (did you mean 'workers'?)", geneva.local_cluster, { workrs = 2 })
    says("local_cluster: unknown option 'size' (one of: db, manifest, name, on_exit, workers)",
      geneva.local_cluster, { size = 2 })
    says("context: unknown option 'size' (one of: cluster, db, manifest, name, on_exit)", geneva.context, { size = 2 })
    local u = geneva.udf { data_type = "int64", fn = function(id) return id end }
    says("'idd' is not an input column of UDF '" .. u.name .. "' (did you mean 'id'?)", u.call, u, { idd = 1 })
    says("'zzz' is not an input column of UDF '" .. u.name .. "' (one of: id)", u.call, u, { zzz = 1 })
    -- compact takes none: a table of options is refused, and nothing is committed
    local v = t:version()
    says("compact (it takes no options): unknown option 'dry'", t.compact, t, { dry = true })
    says("compact: it takes no arguments", t.compact, t, true)
    assert.equal(v, t:version())
    local csv = dir .. "/x.csv"
    local f = assert(io.open(csv, "w")); f:write("id\n1\n"); f:close()
    says("file source: unknown option 'fromat' (did you mean 'format'?)", db.create_table, db, "x",
      { from = csv, fromat = "csv" })
    says("file source: unknown option 'schema'", t.add, t, { from = csv, schema = { id = "int64" } })
    local yaml = dir .. "/r.yaml"
    f = assert(io.open(yaml, "w")); f:write("db: ./db\n"); f:close()
    local recipe = require "geneva.recipe"
    says("recipe.run: unknown option 'on_reslt' (did you mean 'on_result'?)", recipe.run, recipe.load(yaml), nil,
      { on_reslt = print })
    says("pretty.format: unknown option 'max_item' (did you mean 'max_items'?)", require("geneva.pretty").format,
      { 1 }, { max_item = 2 })
  end)
end)
