-- The main example (what `bash scripts/setup.sh` runs after installing):
-- a table, a computed column, and a backfill on the embedded local cluster,
-- then the same inside a context that provisions workers and tears them
-- down. Run it again and nothing is recomputed.
--   geneva scripts/examples/main.lua [DB_URI]
local geneva = require "geneva"

local dir = arg[1] or (os.getenv("TMPDIR") or "/tmp") .. "/geneva-example"
local db = geneva.connect(dir)

local ok, tbl = pcall(db.open_table, db, "docs")
if not ok then
  do
    local rows = {}
    for i = 1, 50000 do
      rows[i] = { id = i, content = i % 10 ~= 0 and ("lorem ipsum dolor "):rep(i % 4 + 1) or nil }
    end
    tbl = db:create_table("docs", rows, { schema = { { name = "id", data_type = "int64" },
                                                      { name = "content", data_type = "string" } } })
    tbl:add_columns { words = geneva.udf { data_type = "int64",
      fn = function(content) return select(2, content:gsub("%S+", "")) end } }
    tbl:add_columns { id_squared = geneva.udf { data_type = "int64", fn = function(id) return id * id end } }
  end
end

-- Outside any context: the embedded local cluster (one worker per core).
local rec = tbl:backfill("words", { where = "content IS NOT NULL" })
print(("words: %d rows computed, %d committed in %.2fs (job %s)"):format(
  rec.rows.computed, rec.rows.committed, rec.seconds, rec.id))

-- Inside a context: two workers, started at enter and gone at exit, even if
-- the function raises or the process gets Ctrl-C.
geneva.local_cluster{ workers = 2 }(function()
  local r = tbl:backfill("id_squared")
  print(("id_squared: %d rows computed inside a local context"):format(r.rows.computed))
end)

for _, row in ipairs(tbl:search():where("id <= 3"):select{ "id", "words", "id_squared" }:to_rows()) do
  print(("  id=%d words=%s id_squared=%d"):format(row.id, tostring(row.words), row.id_squared))
end
print(("table version %d, %d rows with words; db at %s"):format(tbl:version(),
  tbl:count_rows("words IS NOT NULL"), dir))
