-- Runs a command with an S3 server for it: `geneva with_moto.lua CMD ARGS...`
-- starts moto (tests/support/moto.lua, signatures checked), creates the
-- bucket GENEVA_TEST_S3_BUCKET (default "geneva-test"), and runs CMD with
-- the standard AWS variables pointing at moto, GENEVA_TEST_STORE=s3 and a
-- cache directory of its own; exits with CMD's status. The specs that take
-- their databases from tests/support/testdb.lua then run on s3:// ones,
-- and so do the processes they start.
local src = os.getenv("GENEVA_SOURCE_DIR") or "."
package.path = src .. "/tests/support/?.lua;" .. package.path
local proc = require "geneva.proc"
local fs = require "geneva.fs"

local m = require("moto").start()
local bucket = os.getenv("GENEVA_TEST_S3_BUCKET") or "geneva-test"
m:bucket(bucket)
local cache = fs.tmpdir("geneva-cache-")
local env = m:env()
env.GENEVA_TEST_STORE = "s3"
env.GENEVA_TEST_S3_BUCKET = bucket
env.GENEVA_CACHE_DIR = cache.path
local argv = {}
for i = 1, #arg do argv[i] = arg[i] end
local p = assert(proc.spawn { argv = argv, env_add = env })
local how, code = p:wait()
p:close()
m:stop()
cache:close()
os.exit(how == "exited" and code or 128 + (tonumber(code) or 1))
