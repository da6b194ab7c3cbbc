-- An s3:// database through the Ray runner: the driver and the Ray workers
-- (on the dashboard emulator, two nodes) share nothing but the object
-- store. The workers' mirror is a cache directory of their own, so every
-- task input, staged output, claim, result and heartbeat goes through S3.
-- Run under tests/support/with_moto.lua (cmake does it). storage: s3 only
local geneva = require "geneva"
local backend = require "geneva.store.backend"
local fs = require "geneva.fs"
local child = require "child"
local emulator = require "ray_emulator"
local testdb = require "testdb"

describe("ray runner on an s3 database", function()
  local root, emu, worker_cache
  setup(function()
    assert.is_true(testdb.s3, "run this spec under tests/support/with_moto.lua")
    root = child.tmpdir()
    worker_cache = root .. "/worker-cache"
    emu = emulator.start(root .. "/ray", { "--nodes", "2", "--num-cpus", "2", "--stop-wait", "1" },
                         { GENEVA_CACHE_DIR = worker_cache })
  end)
  teardown(function()
    if emu then emu:close() end
    child.rmtree(root)
  end)

  it("backfills exactly with workers that see only the object store, then leaves nothing behind", function()
    local db = testdb.connect(root .. "/db")
    local N = 4000
    local rows = {}
    for i = 1, N do rows[i] = { id = i, text = ("w%d"):format(i) } end
    local tbl = db:create_table("docs", rows, { fragment_size = 1000 })
    tbl:add_columns { x = geneva.udf { data_type = "int64", fn = function(id, text)
      if id % 1000 == 0 then io.stderr:write("at ", id, "\n") end
      return id * 3 + #text
    end } }
    local rec
    geneva.ray_cluster{ address = emu.url, db = db }(function()
      local j = tbl:backfill_async("x", { batch_size = 250 })
      rec = j:wait()
      -- the log was uploaded: another process reads it from S3
      local code, out = child.cli { "jobs", "logs", j.id, "--db", db.uri }
      assert.equal(0, code)
      assert.matches("%[slot %d%] at 4000", out)
      assert.matches("DONE: 4000 rows computed", out)
    end)
    assert.equal("DONE", rec.status)
    assert.equal(N, rec.rows.committed)
    local bad = 0
    for _, r in ipairs(tbl:to_rows { columns = { "id", "text", "x" } }) do
      if r.x ~= r.id * 3 + #r.text then bad = bad + 1 end
    end
    assert.equal(0, bad)
    -- the workers read the table through their own cache, not the driver's
    local cached = 0
    for _, rel in ipairs(fs.walk(worker_cache) or {}) do
      if rel:match("/docs/data/d%-%x+%.db$") then cached = cached + 1 end
    end
    assert.equal(4, cached)
    -- nothing is left: no Ray job, no queue, no lease, no staged file
    assert.same({}, emu:state().jobs)
    assert.same({}, backend.list(db.dir .. "/_geneva/leases"))
    assert.same({}, backend.list(db.dir .. "/_geneva/jobs/" .. rec.id))
    assert.same({}, backend.list(db.dir .. "/docs/_staging/x"))
    -- a second process reads the same values from S3
    local code, out = child.cli { "-e", ([[
      local t = require("geneva").connect(%q):open_table("docs")
      print(t:count_rows("x = id * 3 + length(text)"))
    ]]):format(db.uri) }
    assert.equal(0, code)
    assert.equal(tostring(N) .. "\n", out)
  end)

  it("the bar moves within a task: the workers' rows done ride in their beat objects", function()
    local db = testdb.connect(root .. "/db-bar")
    local rows = {}
    for i = 1, 3000 do rows[i] = { id = i } end
    local tbl = db:create_table("slow", rows)
    tbl:add_columns { x = geneva.udf { data_type = "int64", fn = function(id)
      local t = os.clock() + 0.001 while os.clock() < t do end
      return id * 7
    end } }
    local script = child.write(root .. "/bar.lua", [[
local geneva = require "geneva"
local db = geneva.connect(arg[1])
local tbl = db:open_table("slow")
geneva.ray_cluster{ address = arg[2], db = db }(function()
  print(tbl:backfill("x", { batch_size = 3000 }).status)   -- one task
end)
]])
    local code, out, err = child.cli({ script, db.uri, emu.url }, { env = { GENEVA_PROGRESS = "1" } })
    assert.equal(0, code, err)
    assert.equal("DONE\n", out)
    local within = 0
    for frame in err:gmatch("[^\r\n]+") do
      local done = tonumber(frame:match("^x %[[#.]+%]%s+%d+%%%s+(%d+)/3000 rows"))
      if done and done > 0 and done < 3000 then within = within + 1 end
    end
    assert.is_true(within > 0, "the bar never showed rows inside the one task:\n" .. err)
    assert.same({}, emu:state().jobs)
  end)
end)
