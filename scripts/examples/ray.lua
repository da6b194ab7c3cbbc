-- A backfill on an existing Ray cluster, through its dashboard's REST API:
-- one Ray job per worker slot, each a `geneva worker --queue` taking tasks
-- from the job's queue in the database; all of them stopped and deleted
-- when the context exits.
--   geneva scripts/examples/ray.lua DASHBOARD_URL [DB_DIR]
-- The Ray workers open DB_DIR by its path: it must be on a file system they
-- share at the same path (a cluster on this machine, such as the emulator
-- in tests/fakes/, or a shared mount).
local geneva = require "geneva"

local address = arg[1] or "http://127.0.0.1:8265"
local dir = arg[2] or (os.getenv("TMPDIR") or "/tmp") .. "/geneva-ray-example"
local db = geneva.connect(dir)

local ok, tbl = pcall(db.open_table, db, "docs")
if not ok then
  local rows = {}
  for i = 1, 20000 do rows[i] = { id = i, content = ("lorem ipsum dolor "):rep(i % 4 + 1) } end
  tbl = db:create_table("docs", rows)
  tbl:add_columns { words = geneva.udf { data_type = "int64", num_cpus = 1,
    fn = function(content) return select(2, content:gsub("%S+", "")) end } }
end

geneva.ray_cluster{ address = address }(function()
  local rec = tbl:backfill("words", { batch_size = 2500 })
  local submissions = 0
  for _, line in ipairs(rec.events) do
    if line:match("^ray: submitted ") then submissions = submissions + 1 end
  end
  print(("words: %d rows computed on Ray %s by %d worker submissions in %.2fs (job %s)")
    :format(rec.rows.computed, rec.runner.ray_version, submissions, rec.seconds, rec.id))
end)
print(("rows with words = 3: %d"):format(tbl:count_rows("words = 3")))
