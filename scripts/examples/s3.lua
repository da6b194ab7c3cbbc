-- A database on object storage: tables, versions, backfills, job records
-- and leases all live in the bucket; this machine keeps only a cache of the
-- (immutable) data files.
--   geneva scripts/examples/s3.lua [s3://bucket/prefix]
-- Credentials, endpoint and region come from the standard AWS variables
-- (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
-- AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_REGION) or the shared
-- credentials file; tests/support/with_moto.lua sets them for a local moto.
local geneva = require "geneva"

local uri = arg[1] or ("s3://%s/geneva-example"):format(os.getenv("GENEVA_TEST_S3_BUCKET") or "geneva-example")
local db = geneva.connect(uri)      -- or geneva.connect(uri, { endpoint = ..., region = ..., profile = ... })

local rows = {}
for i = 1, 20000 do rows[i] = { id = i, content = ("lorem ipsum dolor "):rep(i % 4 + 1) } end
local tbl = db:create_table("docs", rows, { mode = "overwrite" })
tbl:add_columns { words = geneva.udf { data_type = "int64",
  fn = function(content) return select(2, content:gsub("%S+", "")) end } }

geneva.local_cluster{ workers = 2 }(function()
  local rec = tbl:backfill("words", { batch_size = 2500 })
  print(("%s: %d rows computed in %d commits, table at version %d")
    :format(uri, rec.rows.computed, rec.commits, tbl:version()))
end)
print(("rows with 3 words: %d"):format(tbl:count_rows("words = 3")))
