-- s3:// databases beyond the parametrised specs: faults between geneva and
-- the store (a proxy injecting 503s, resets before and after the server
-- acted, slow answers), bad credentials and buckets, a store that ignores
-- conditional writes, and the size cap of the local cache.
-- Run under tests/support/with_moto.lua (cmake does it). storage: s3 only
local geneva = require "geneva"
local fs = require "geneva.fs"
local child = require "child"
local testdb = require "testdb"
local moto = require "moto"
local expect = require "expect"

local BUCKET = os.getenv("GENEVA_TEST_S3_BUCKET") or "geneva-test"

local function rows(n)
  local out = {}
  for i = 1, n do out[i] = { id = i, text = ("w%d"):format(i) } end
  return out
end

describe("s3 databases", function()
  local m, root
  setup(function()
    m = assert(moto.from_env(), "run this spec under tests/support/with_moto.lua")
  end)
  before_each(function() root = child.tmpdir() end)
  after_each(function() child.rmtree(root) end)

  it("a backfill and concurrent appends through 503s and resets: exact, nothing lost, nothing doubled", function()
    local proxy = m:proxy()
    local ok, err = pcall(function()
      proxy:faults { rates = { ["503"] = 0.08, reset = 0.04, reset_after = 0.04 }, seed = 7 }
      local uri = testdb.uri_for(root)
      local db = geneva.connect(uri, { endpoint = proxy.endpoint })
      local tbl = db:create_table("docs", rows(3000), { fragment_size = 500 })
      tbl:add_columns { x = geneva.udf { data_type = "int64", fn = function(id) return id * 5 end } }
      local rec = tbl:backfill("x", { batch_size = 250, commit_every = 2 })
      assert.equal("DONE", rec.status)
      -- appends from two processes at once, through the same faults
      local code = [[
        local who, uri, ep = ...
        local t = require("geneva").connect(uri, { endpoint = ep }):open_table("docs")
        for k = 1, 10 do t:add { { id = 10000 * who + k, text = "p" .. who } } end
      ]]
      local procs = {}
      for who = 1, 2 do
        procs[who] = assert(require("geneva.proc").spawn { argv = { child.bin, "-e",
          ("assert(load(%q))(%d, %q, %q)"):format(code, who, uri, proxy.endpoint) }, stderr = "pipe" })
      end
      for _, p in ipairs(procs) do
        local how, c = p:wait(120)
        local perr = p:read_all("stderr", 5)
        assert.same({ "exited", 0 }, { how, c }, perr)
        p:close()
      end
      local st = proxy:state()
      assert.is_true((st.injected["503"] or 0) + (st.injected.reset or 0) + (st.injected.reset_after or 0) > 10,
        "few faults were injected: " .. require("geneva.json").encode(st.injected))
      -- read back without the proxy: every row once, every value right
      proxy:faults { rates = {} }
      local t = geneva.connect(uri):open_table("docs")
      assert.equal(3020, t:count_rows())
      assert.equal(10, t:count_rows("text = 'p1'"))
      assert.equal(10, t:count_rows("text = 'p2'"))
      assert.equal(3000, t:count_rows("x = id * 5"))
      local vs = t:versions()
      for i, v in ipairs(vs) do assert.equal(i, v) end
    end)
    proxy:stop()
    assert(ok, err)
  end)

  it("a wrong secret key, a missing bucket: clear errors, and no secret anywhere", function()
    local secret = "wrong-" .. m.secret_key
    local code, out, err = child.cli({ "-e", ("require('geneva').connect(%q)"):format("s3://" .. BUCKET .. "/x") },
      { env = { AWS_SECRET_ACCESS_KEY = secret } })
    assert.equal(1, code)
    assert.matches("SignatureDoesNotMatch", err)
    assert.is_nil((out .. err):find(secret, 1, true), "the secret is shown")
    assert.is_nil((out .. err):find(m.secret_key, 1, true), "a secret is shown")
    code, out, err = child.cli { "jobs", "list", "--db", "s3://no-such-bucket-geneva/db" }
    assert.equal(1, code)
    assert.matches("NoSuchBucket", err)
    assert.matches("no%-such%-bucket%-geneva", err)
    assert.is_nil((out .. err):find(m.secret_key, 1, true), "the secret is shown")
  end)

  it("a store that ignores If-None-Match is read-only, loudly", function()
    local proxy = m:proxy()
    local ok, err = pcall(function()
      local uri = testdb.uri_for(root)
      geneva.connect(uri):create_table("docs", rows(10))
      -- connect's probe (DELETE, two conditional PUTs, DELETE): the proxy
      -- answers its PUTs 200 itself, as a store ignoring the header does
      proxy:faults { match = ".probe-", sequence = { "pass", "ok200", "ok200", "pass" } }
      local code, _, stderr = child.cli { "-e", ([[
        local db = require("geneva").connect(%q, { endpoint = %q })
        print(db:open_table("docs"):count_rows())
        db:open_table("docs"):add { { id = 11, text = "x" } }
      ]]):format(uri, proxy.endpoint) }
      assert.equal(1, code)
      assert.matches("ignores If%-None%-Match", stderr)
      assert.matches("does not write there", stderr)
      assert.equal(10, geneva.connect(uri):open_table("docs"):count_rows())
      -- deletes are writes too: a drop, or a job record's removal, is refused
      proxy:faults { match = ".probe-", sequence = { "pass", "ok200", "ok200", "pass" } }
      code, _, stderr = child.cli { "-e", ([[
        local db = require("geneva").connect(%q, { endpoint = %q })
        local ok, err = pcall(db.drop_table, db, "docs")
        io.stderr:write(tostring(err), "\n")
        local backend = require "geneva.store.backend"
        local gone, why = pcall(backend.delete, db.path .. "/docs/_versions/1.json")
        io.stderr:write(tostring(why), "\n")
        os.exit((ok or gone) and 3 or 1)
      ]]):format(uri, proxy.endpoint) }
      assert.equal(1, code, stderr)
      assert.matches("does not write there", stderr)
      assert.equal(10, geneva.connect(uri):open_table("docs"):count_rows())
    end)
    proxy:stop()
    assert(ok, err)
  end)

  describe("the backfill start lock", function()
    local backend = require "geneva.store.backend"
    local json = require "geneva.json"
    local proc = require "geneva.proc"

    it("held by a process on this host that is gone: broken at once, not after STALE_LOCK", function()
      local db = testdb.connect(root .. "/db")
      local path = db.dir .. "/_geneva/jobs/.start.lock"
      local p = assert(proc.spawn { argv = { "true" } })
      local me = proc.self()
      local dead = { hostname = me.hostname, boot_id = me.boot_id, pid = p:pid(),
                     start_time = proc.info(p:pid()).start_time }
      p:wait(5) p:close()
      assert(backend.put(path, json.encode { token = "gone-1", at = os.time(), owner = dead }))
      local lock = assert(backend.lock(path, { timeout = 2 }))
      lock:close()
      assert.is_false(backend.exists(path))
      -- a live holder (this process) is waited for, then refused
      assert(backend.put(path, json.encode { token = "alive-1", at = os.time(), owner = require("geneva.ledger").owner() }))
      local l2, msg, code = backend.lock(path, { timeout = 0.3 })
      assert.is_nil(l2)
      assert.equal("EWOULDBLOCK", code, msg)
      assert.matches("locked by alive%-1", msg)
      backend.delete(path)
    end)

    it("is removed when SIGTERM unwinds the process that holds it", function()
      local db = testdb.connect(root .. "/db")
      local path = db.dir .. "/_geneva/jobs/.start.lock"
      local p = assert(proc.spawn { argv = { child.bin, "-e", ([[
        local backend = require "geneva.store.backend"
        require("geneva").connect(%q)
        local lock <close> = assert(backend.lock(%q))
        io.stdout:write("held\n") io.stdout:flush()
        require("geneva.time").sleep(60)
      ]]):format(db.uri, path) }, stdout = "pipe" })
      assert.equal("held", p:read_line("stdout", 30))
      assert.is_true(backend.exists(path))
      assert.is_true(proc.kill(p:pid(), "TERM"))
      assert.same({ "exited", 143 }, { p:wait(30) })
      p:close()
      assert.is_false(backend.exists(path))
    end)
  end)

  it("read-only credentials (GetObject, ListBucket) read a database and are told they cannot write", function()
    local uri = testdb.uri_for(root)
    local db = geneva.connect(uri)
    local tbl = db:create_table("docs", rows(10))
    tbl:add_columns { x = geneva.udf { data_type = "int64", fn = function(id) return id * 2 end } }
    local id = tbl:backfill("x").id
    local ro = { AWS_ACCESS_KEY_ID = m.read_only.access_key, AWS_SECRET_ACCESS_KEY = m.read_only.secret_key }
    -- moto enforces the read-only user's policy: its writes are AccessDenied
    local c = m:client { bucket = BUCKET, credentials = m.read_only }
    assert.equal("AccessDenied", expect.raises("invalid_argument", c.put, c, "ro-probe", "x").s3_code)
    c:close()
    local code, out, err = child.cli({ "jobs", "list", "--db", uri }, { env = ro })
    assert.equal(0, code, err)
    assert.matches(id, out, 1, true)
    assert.equal("", err)                  -- no warning for reading
    code, out, err = child.cli({ "tables", "show", "docs", "--db", uri, "--json" }, { env = ro })
    assert.equal(0, code, err)
    assert.matches('"x"', out)
    code, out, err = child.cli({ "-e", ([[
      local t = require("geneva").connect(%q):open_table("docs")
      print(t:count_rows("x = id * 2"))
      t:add { { id = 11, text = "w11" } }
    ]]):format(uri) }, { env = ro })
    assert.equal(1, code)
    assert.equal("10\n", out)
    assert.matches("cannot write", err)
    assert.matches("AccessDenied", err)
    assert.is_nil(err:find(m.read_only.secret_key, 1, true), "the secret is shown")
    assert.equal(10, db:open_table("docs"):count_rows())
  end)

  it("connects to one URI with two profiles in one process, each with its own credentials", function()
    local uri = testdb.uri_for(root)
    local creds = root .. "/credentials"
    assert(fs.write(creds, ("[rw]\naws_access_key_id = %s\naws_secret_access_key = %s\n\n"
      .. "[ro]\naws_access_key_id = %s\naws_secret_access_key = %s\n\n"
      .. "[bogus]\naws_access_key_id = AKIANOSUCHKEY0000000\naws_secret_access_key = nope\n")
      :format(m.access_key, m.secret_key, m.read_only.access_key, m.read_only.secret_key)))
    -- the environment holds the read-write keys too: a named profile wins
    local code, out, err = child.cli({ "-e", ([[
      local geneva = require "geneva"
      local rw = geneva.connect(%q, { profile = "rw" })
      rw:create_table("docs", { { id = 1 } })
      local ro = geneva.connect(%q, { profile = "ro" })
      print(ro:open_table("docs"):count_rows())
      print(pcall(function() ro:open_table("docs"):add { { id = 2 } } end))
      rw:open_table("docs"):add { { id = 3 } }      -- rw kept its own credentials
      print(rw:open_table("docs"):count_rows())
      print(pcall(geneva.connect, %q, { profile = "bogus" }))
    ]]):format(uri, uri, uri) }, { env = { AWS_SHARED_CREDENTIALS_FILE = creds } })
    assert.equal(0, code, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal("1", lines[1])
    assert.matches("^false\t.*profile 'ro'.*cannot write", lines[2])
    assert.equal("2", lines[3])
    assert.matches("^false\t.*InvalidAccessKeyId.*profile 'bogus'", lines[4])
    assert.is_nil(out:find(m.secret_key, 1, true), "a secret is shown")
  end)

  it("a connect that cannot read names the listing it tried, not a write probe", function()
    local code, _, err = child.cli { "jobs", "list", "--db", "s3://no-such-bucket-geneva/db" }
    assert.equal(1, code)
    assert.matches("LIST s3://no%-such%-bucket%-geneva/db/", err)
    assert.is_nil(err:find("probe", 1, true), err)
    -- a user without ListBucket: denied on the listing, with the URI
    code, _, err = child.cli({ "-e", ("require('geneva').connect(%q)"):format(testdb.uri_for(root)) },
      { env = { AWS_ACCESS_KEY_ID = "AKIANOSUCHKEY0000000" } })
    assert.equal(1, code)
    assert.matches("LIST s3://" .. BUCKET:gsub("%-", "%%-"), err)
    assert.matches("InvalidAccessKeyId", err)
  end)

  it("keeps its cache of data files under GENEVA_CACHE_MAX_BYTES, reading right", function()
    local uri = testdb.uri_for(root)
    local tbl = geneva.connect(uri):create_table("docs", rows(20000), { fragment_size = 2000 })
    local st = fs.stat(require("geneva.store.backend").fetch(tbl.dir .. "/" .. tbl:_snapshot().fragments[1].data))
    local cache = root .. "/cache"
    local cap = st.size * 3
    local code, out, err = child.cli({ "-e", ([[
      local t = require("geneva").connect(%q):open_table("docs")
      print(t:count_rows("text = 'w' || id"))
    ]]):format(uri) }, { env = { GENEVA_CACHE_DIR = cache, GENEVA_CACHE_MAX_BYTES = tostring(cap) } })
    assert.equal(0, code, err)
    assert.equal("20000\n", out)
    local total, files = 0, 0
    for _, e in ipairs(assert(fs.walk(cache))) do
      local path = e
      if path:match("%.db$") then
        files = files + 1
        total = total + fs.stat(cache .. "/" .. path).size
      end
    end
    assert.is_true(files > 0)
    assert.is_true(total <= cap, ("%d bytes cached over a cap of %d"):format(total, cap))
    expect.raises("invalid_argument", geneva.connect, "s3://" .. BUCKET .. "/a/../b")
  end)

  it("a recipe with db: s3://... defines its cluster and manifest in the bucket and runs its job", function()
    local uri = testdb.uri_for(root)
    geneva.connect(uri):create_table("docs", rows(3000), { fragment_size = 1000 })
    assert(fs.write(root .. "/my_udfs.lua", "return { len = function(text) return #text end }\n"))
    assert(fs.write(root .. "/r.yaml", [[
db: ${db}
clusters:  { two: { type: local, workers: 2 } }
manifests: { udfs: { modules: [my_udfs] } }
jobs:
  len:
    table: docs
    column: len
    udf: { module: my_udfs, function: len, data_type: int64 }
    cluster: two
    manifest: udfs
]]))
    local code, out, err = child.cli({ "recipe", "run", "r.yaml", "--set", "db=" .. uri },
      { cwd = root, env = { LUA_PATH = root .. "/?.lua;;" } })
    assert.equal(0, code, out .. err)
    local db = geneva.connect(uri)
    assert.equal(3000, db:open_table("docs"):count_rows("len = length(text)"))
    assert.equal("two", db:list_clusters()[1].name)
    assert.equal("udfs", db:list_manifests()[1].name)
    -- what the recipe stored is in the bucket, not only in this machine's mirror
    code, out = child.cli({ "cluster", "list", "--db", uri, "--json" },
      { env = { GENEVA_CACHE_DIR = root .. "/other-cache" } })
    assert.equal(0, code)
    assert.matches('"two"', out)
  end)
end)
