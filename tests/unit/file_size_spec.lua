-- A driver (or its workers) over `ulimit -f`: a write past the limit must be memcheck
-- an ordinary error (EFBIG, "File too large"), not SIGXFSZ killing the
-- process: the job ends FAILED with an `unavailable` error naming the file,
-- the context tears down (no leases, no temp dirs), and what was committed
-- before stays readable.
local geneva = require "geneva"
local fs = require "geneva.fs"
local json = require "geneva.json"
local proc = require "geneva.proc"
local child = require "child"

local script = [[
local geneva = require "geneva"
local db = geneva.connect(arg[1])
local tbl = db:open_table("docs")
geneva.context{ cluster = { type = "local", workers = 2 } }(function()
  tbl:backfill("words", { batch_size = 100 })
end)
print("done")
]]

describe("writes over ulimit -f", function()
  local dir, db_dir, tbl
  before_each(function()
    dir = child.tmpdir()
    db_dir = dir .. "/db"
    local db = geneva.connect(db_dir)
    local rows = {}
    for i = 1, 3000 do rows[i] = { id = i, content = ("w "):rep(i % 4 + 1) } end
    tbl = db:create_table("docs", rows)
    -- ~20 KB per 100-row task output; ~600 KB for the whole column
    tbl:add_columns { words = geneva.udf { data_type = "string",
      fn = function(content) return content:rep(20) end } }
    assert(fs.write(dir .. "/job.lua", script))
    assert(fs.mkdir_p(dir .. "/tmp"))
  end)
  after_each(function() child.rmtree(dir) end)

  -- runs the job under `ulimit -f blocks` (512-byte blocks)
  local function run_limited(blocks)
    local cmd = ("ulimit -f %d; exec %s %s %s"):format(blocks, child.quote(child.bin),
      child.quote(dir .. "/job.lua"), child.quote(db_dir))
    return assert(proc.run{ argv = { "sh", "-c", cmd }, timeout = 120,
      env_add = { XDG_STATE_HOME = dir .. "/state", TMPDIR = dir .. "/tmp" } })
  end

  local function the_job()
    local names = fs.list(db_dir .. "/_geneva/jobs") or {}
    local recs = {}
    for _, n in ipairs(names) do
      if n:match("%.json$") then recs[#recs + 1] = json.decode(child.read(db_dir .. "/_geneva/jobs/" .. n)) end
    end
    assert.equals(1, #recs)
    return recs[1]
  end

  local function assert_torn_down()
    assert.same({}, fs.list(db_dir .. "/_geneva/leases") or {})
    assert.same({}, fs.list(dir .. "/state/geneva/leases") or {})
    assert.same({}, fs.list(dir .. "/tmp"))                        -- heartbeat dirs
    for _, f in ipairs(fs.list(tbl.dir .. "/data")) do
      assert.is_nil(f:match("^%."), "temp file left in data/: " .. f)
    end
  end

  -- the latest version holds what was committed, and a run without the
  -- limit finishes the job (from the checkpoints left in _staging)
  local function assert_intact()
    local t = geneva.connect(db_dir):open_table("docs")
    assert.equals(3000, t:count_rows())
    local done = t:count_rows("words IS NOT NULL")
    for _, r in ipairs(t:to_rows{ columns = { "content", "words" }, where = "words IS NOT NULL" }) do
      assert.equals(r.content:rep(20), r.words)
    end
    local r = assert(proc.run{ argv = { child.bin, dir .. "/job.lua", db_dir }, timeout = 120,
      env_add = { XDG_STATE_HOME = dir .. "/state", TMPDIR = dir .. "/tmp" } })
    assert.equals(0, r.code, r.stderr)
    t = geneva.connect(db_dir):open_table("docs")
    assert.equals(3000, t:count_rows("words IS NOT NULL"))
    for _, f in ipairs(fs.walk(tbl.dir) or {}) do
      assert.is_nil(f:match("%.tmp"), "temp file left: " .. f)
    end
    return done
  end

  it("in the driver: a clean unavailable error, teardown, a final job record", function()
    -- task outputs fit, the driver's fold of a fragment's column files does not
    local r = run_limited(64)
    assert.same({ "exited", 1 }, { r.status, r.code }, r.stderr)
    assert.matches("unavailable: [^\n]*File too large", r.stderr)
    assert.matches(tbl.dir, r.stderr, 1, true)                    -- names the file
    local rec = the_job()
    assert.equals("FAILED", rec.status)
    assert.equals("unavailable", rec.error.code)
    assert.matches("File too large", rec.error.message)
    assert_torn_down()
    assert_intact()
  end)

  it("geneva ignores SIGXFSZ, but the processes it spawns get the default back", function()
    local r = assert(proc.run{ argv = { "sh", "-c", ("ulimit -f 1; head -c 4096 /dev/zero > %s; echo $?")
      :format(child.quote(dir .. "/big")) } })
    assert.equals("153\n", r.stdout)            -- head died of SIGXFSZ, as outside geneva
    r = assert(proc.run{ argv = { "sh", "-c", ("ulimit -f 1; exec %s -e %s"):format(child.quote(child.bin),
      child.quote([[local ok, err, c = require("geneva.fs").write(os.getenv("F"), ("x"):rep(4096))
                    io.write(tostring(c), " ", tostring(err))]])) }, env_add = { F = dir .. "/big3" } })
    assert.same({ "exited", 0 }, { r.status, r.code })
    assert.matches("^EFBIG .*big3.*File too large", r.stdout)
  end)

  it("in the workers: the job fails with their unavailable error", function()
    local r = run_limited(16)              -- not even one task output fits
    assert.same({ "exited", 1 }, { r.status, r.code }, r.stderr)
    assert.matches("unavailable: [^\n]*staged output[^\n]*File too large", r.stderr)
    local rec = the_job()
    assert.equals("FAILED", rec.status)
    assert.equals("unavailable", rec.error.code)
    assert_torn_down()
    assert.equals(0, assert_intact())
  end)
end)
