-- The backfill progress bar (issue 12): it moves within a task (workers
-- report rows done as they go), shows %, rows/s and ETA, and is off with
-- GENEVA_PROGRESS=0 or --no-progress. GENEVA_PROGRESS=1 draws it into a
-- file, which is how these specs read it.
local child = require "child"

local SCRIPT = [[
local geneva = require "geneva"
local db = geneva.connect(arg[1])
local rows = {}
for i = 1, 20000 do rows[i] = { id = i } end
local tbl = db:create_table("docs", rows)
tbl:add_columns { x = geneva.udf { data_type = "int64", fn = function(id)
  local t = os.clock() + 0.00005
  while os.clock() < t do end
  return id * 7
end } }
geneva.context { cluster = { type = "local", workers = 1 } } (function()
  -- one task of all 20000 rows
  print(tbl:backfill("x", { batch_size = 20000 }).status)
end)
]]

describe("the progress bar", function()
  local dir
  before_each(function() dir = child.tmpdir() end)
  after_each(function() child.rmtree(dir) end)

  local runs = 0
  local function run(env, ...)
    local script = child.write(dir .. "/job.lua", SCRIPT)
    local args = { ... }
    runs = runs + 1
    args[#args + 1] = script
    args[#args + 1] = dir .. "/db" .. runs
    return child.cli(args, { env = env })
  end

  it("moves within a task and shows %, rows/s and ETA", function()
    local code, out, err = run({ GENEVA_PROGRESS = "1" })
    assert.equal(0, code, err)
    assert.equal("DONE\n", out)
    local within, last = 0, nil
    for frame in err:gmatch("[^\r\n]+") do
      local pct, done, total = frame:match("^x %[[#.]+%]%s+(%d+)%%%s+(%d+)/(%d+) rows%s+[%d.]+[kM]? rows/s")
      if pct then
        done, total = tonumber(done), tonumber(total)
        assert.equal(20000, total)
        assert.equal(done * 100 // total, tonumber(pct))
        if done > 0 and done < total then
          within = within + 1
          assert.matches("ETA %d+[hms]", frame)
        end
        last = frame
      end
    end
    assert.is_true(within > 0, "the bar never showed rows inside the one task:\n" .. err)
    -- the last frame: 100 %, without an ETA, then a newline
    assert.matches("100%%%s+20000/20000 rows", last)
    assert.is_nil(last:match("ETA"))
    assert.matches("\n$", err)
  end)

  it("is off with GENEVA_PROGRESS=0 and with --no-progress", function()
    local code, _, err = run({ GENEVA_PROGRESS = "0" })
    assert.equal(0, code)
    assert.is_nil(err:match("rows/s"))
    code, _, err = run({ GENEVA_PROGRESS = "1" }, "--no-progress")
    assert.equal(0, code)
    assert.is_nil(err:match("rows/s"))
  end)

  it("is off when stderr is not a terminal", function()
    local code, _, err = run({})
    assert.equal(0, code)
    assert.equal("", err)
  end)
end)
