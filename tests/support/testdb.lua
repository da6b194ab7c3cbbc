-- The database a spec runs on: a directory, or, when the spec runs under
-- tests/support/with_moto.lua (GENEVA_TEST_STORE=s3; ctest's "<name>.s3"
-- tests), an s3:// database on moto under a fresh prefix. Specs that say
-- `storage: dir s3` on their first line are run both ways (cmake/tests.cmake).
--
--   local testdb = require "testdb"
--   local db = testdb.connect(dir)     -- dir: where a directory db goes
--   testdb.uri(db)                     -- what another process connects to
--   testdb.s3                          -- true when on s3
local geneva = require "geneva"

local testdb = { s3 = os.getenv("GENEVA_TEST_STORE") == "s3" }

local n = 0

-- testdb.uri_for(dir) -> the URI a spec's database at dir has: dir itself,
-- or s3://<bucket>/<prefix> with a prefix unique to this process and dir
function testdb.uri_for(dir)
  if not testdb.s3 then return dir end
  n = n + 1
  local tag = dir:gsub("[^%w]", ""):sub(-24)
  return ("s3://%s/t%d-%d-%s"):format(os.getenv("GENEVA_TEST_S3_BUCKET") or "geneva-test",
    require("geneva.proc").self().pid, n, tag)
end

-- testdb.connect(dir [, opts]) -> Db
function testdb.connect(dir, opts)
  return geneva.connect(testdb.uri_for(dir), opts)
end

-- testdb.uri(db) -> what another process passes to geneva.connect
function testdb.uri(db) return db.uri end

return testdb
