-- geneva.s3 against moto on loopback with signatures checked
-- (tests/support/moto.lua), boto3 as the independent client, and a fault
-- proxy (tests/support/fault_proxy.py). No memcheck label: valgrind plus
-- a Python server is too slow.
local moto = require "moto"
local s3 = require "geneva.s3"
local errors = require "geneva.errors"
local fs = require "geneva.fs"
local proc = require "geneva.proc"
local child = require "child"

local BIN = os.getenv("GENEVA_BIN") or "geneva"

-- every string reachable from v (an Error, with its fields)
local function strings_of(v, out, seen)
  out, seen = out or {}, seen or {}
  if type(v) == "string" then out[#out + 1] = v
  elseif type(v) == "table" and not seen[v] then
    seen[v] = true
    for k, x in pairs(v) do strings_of(k, out, seen); strings_of(x, out, seen) end
  end
  return out
end

local function raises(code, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  assert.is_true(errors.is(err, code), "expected " .. code .. ", got " .. tostring(err))
  return err
end

local function write_random(path, n)
  assert(os.execute(("head -c %d /dev/urandom > %s"):format(n, child.quote(path))))
end

describe("geneva.s3", function()
  local m, c, dir
  local fast = { attempts = 6, base_delay = 0.01, max_delay = 0.05 }

  setup(function()
    m = moto.start()
    m:bucket("spec")
    c = m:client { bucket = "spec", retry = fast }
    dir = child.tmpdir()
  end)

  teardown(function()
    if c then c:close() end
    if m then m:stop() end
    if dir then child.rmtree(dir) end
  end)

  describe("objects", function()
    it("put, get (with a range), head, delete", function()
      local key = "t/obj 1.txt"
      local info = c:put(key, "hello world")
      assert.matches('^"%x+"$', info.etag)
      assert.equal("hello world", (c:get(key)))
      assert.equal("world", (c:get(key, { range = { 6, 10 } })))
      assert.equal("hello", (c:get(key, { range = "bytes=0-4" })))
      assert.equal("world", (c:get(key, { range = { 6 } })))
      -- a range from the end on is empty (416), not an error
      local body, got = c:get(key, { range = { 11 } })
      assert.same({ "", 416 }, { body, got.status })
      local h = c:head(key)
      assert.equal(11, h.size)
      assert.equal(info.etag, h.etag)
      assert.is_true(c:delete(key))
      local none, err = c:head(key)
      assert.is_nil(none)
      assert.is_true(errors.is(err, "not_found"))
      err = raises("not_found", c.get, c, key)
      assert.equal("NoSuchKey", err.s3_code)
      assert.matches("s3://spec/t/obj 1.txt", err.message, 1, true)
      assert.is_true(c:delete(key))   -- deleting a missing key is fine
    end)

    it("keeps keys with reserved and non-ASCII bytes exact (boto3 agrees)", function()
      local keys = { "odd/a+b$c%41", "odd/\u{e9}t\u{e9} 2013", "odd/x//y/./z/../w" }
      for _, k in ipairs(keys) do c:put(k, k) end
      local listed = m:python("for o in s3.list_objects_v2(Bucket='spec', Prefix='odd/')['Contents']: " ..
        "sys.stdout.buffer.write(o['Key'].encode() + b'\\n')")
      local want = {}
      for _, k in ipairs(keys) do want[#want + 1] = k end
      table.sort(want)
      assert.equal(table.concat(want, "\n") .. "\n", listed)
      for _, k in ipairs(keys) do assert.equal(k, (c:get(k))) end
    end)

    it("get_file streams to a temp file and renames it; a failure leaves nothing", function()
      c:put("t/file.bin", ("x"):rep(100000))
      local path = dir .. "/got.bin"
      local info = c:get_file("t/file.bin", path)
      assert.equal(100000, info.size)
      assert.equal(("x"):rep(100000), fs.read(path))
      raises("not_found", c.get_file, c, "t/missing", dir .. "/missing.bin")
      assert.is_false(fs.exists(dir .. "/missing.bin"))
      for _, name in ipairs(fs.list(dir)) do assert.not_matches("%.part%-", name) end
    end)

    it("If-None-Match: a second create is a conflict (412)", function()
      c:put("t/once", "first", { if_none_match = true })
      local err = raises("conflict", c.put, c, "t/once", "second", { if_none_match = true })
      assert.equal(412, err.status)
      assert.equal("PreconditionFailed", err.s3_code)
      assert.equal("first", (c:get("t/once")))
      assert.is_true(c:probe_conditional_writes("t/_probe"))
      assert.is_nil((c:head("t/_probe")))
    end)

    it("two processes racing to create the same 20 keys: each created exactly once", function()
      local code = [[
        local s3 = require "geneva.s3"
        local c = s3.client { bucket = "spec" }
        local won = {}
        for i = 1, 20 do
          local ok, err = pcall(c.put, c, "race/k" .. i, arg[1], { if_none_match = true })
          if ok then won[#won + 1] = i
          elseif err.code ~= "conflict" then error(err) end
        end
        print(table.concat(won, " "))
      ]]
      local script = child.write(dir .. "/race.lua", code)
      local env = m:env()
      local ps = {}
      for _, who in ipairs { "A", "B" } do
        ps[who] = assert(proc.spawn { argv = { BIN, script, who }, stdout = "pipe", stderr = "pipe",
                                      stdin = "null", env_add = env })
      end
      local winners = {}
      for who, p in pairs(ps) do
        local out = p:read_all("stdout", 60)
        local err = p:read_all("stderr", 5)
        assert.equal(0, select(2, p:wait(30)), err)
        p:close()
        for i in out:gmatch("%d+") do
          assert.is_nil(winners[tonumber(i)], "key " .. i .. " created twice")
          winners[tonumber(i)] = who
        end
      end
      for i = 1, 20 do
        assert.is_not_nil(winners[i], "key " .. i .. " never created")
        assert.equal(winners[i], (c:get("race/k" .. i)))
      end
    end)
  end)

  describe("list", function()
    it("pages through ListObjectsV2 and groups by delimiter", function()
      for i = 1, 12 do c:put(("l/%02d"):format(i), tostring(i)) end
      c:put("l/sub/a", "a")
      c:put("l/sub/b", "b")
      local objects, prefixes, pages = c:list("l/", { max_keys = 5 })
      assert.equal(14, #objects)
      assert.equal(3, pages)
      assert.equal("l/01", objects[1].key)
      assert.equal("l/sub/b", objects[14].key)
      assert.equal(1, objects[1].size)
      objects, prefixes = c:list("l/", { delimiter = "/", max_keys = 4 })
      assert.equal(12, #objects)
      assert.same({ "l/sub/" }, prefixes)
      assert.equal(0, #c:list("nothing/here/"))
    end)
  end)

  describe("put_file", function()
    it("uploads 50 MB in parts; boto3 reads back the same size and hash", function()
      local path = dir .. "/big.bin"
      write_random(path, 50 * 1024 * 1024 + 123)
      local want = assert(fs.sha256_file(path))
      local big = m:client { bucket = "spec", multipart_threshold = 8 * 1024 * 1024,
                             part_size = 8 * 1024 * 1024, retry = fast }
      local info = big:put_file("big/file.bin", path)
      big:close()
      assert.equal(7, info.parts)
      assert.equal(50 * 1024 * 1024 + 123, info.size)
      local out = m:python("import hashlib\n" ..
        "o = s3.get_object(Bucket='spec', Key='big/file.bin')\n" ..
        "print(o['ContentLength'], hashlib.sha256(o['Body'].read()).hexdigest())")
      assert.equal(("%d %s\n"):format(50 * 1024 * 1024 + 123, want), out)
      assert.same({}, c:list_multipart_uploads("big/"))
    end)

    it("a small file is one PUT, with If-None-Match honoured", function()
      local path = dir .. "/small.bin"
      write_random(path, 1000)
      local info = c:put_file("pf/small", path, { if_none_match = true })
      assert.equal(0, info.parts)
      assert.equal(fs.read(path), (c:get("pf/small")))
      raises("conflict", c.put_file, c, "pf/small", path, { if_none_match = true })
      raises("not_found", c.put_file, c, "pf/x", dir .. "/no-such-file")
    end)

    it("a failure mid-upload aborts it: no incomplete upload is left", function()
      local proxy = m:proxy()
      local path = dir .. "/mid.bin"
      write_random(path, 16 * 1024 * 1024)
      local pc = m:client { bucket = "spec", endpoint = proxy.endpoint, multipart_threshold = 5 * 1024 * 1024,
                            part_size = 5 * 1024 * 1024, retry = { attempts = 2, base_delay = 0.01, max_delay = 0.01 } }
      proxy:faults { match = "partNumber=3", sequence = { "500", "500", "500" } }
      local err = raises("unavailable", pc.put_file, pc, "mid/file.bin", path)
      assert.matches("InternalError", err.message)
      pc:close()
      proxy:stop()
      assert.same({}, c:list_multipart_uploads("mid/"))
      assert.equal("0\n", m:python("print(len(s3.list_multipart_uploads(Bucket='spec').get('Uploads', [])))"))
      assert.is_nil((c:head("mid/file.bin")))
    end)

    it("abort_stale_uploads removes uploads left by others", function()
      m:python("s3.create_multipart_upload(Bucket='spec', Key='stale/x')")
      assert.equal(1, #c:list_multipart_uploads("stale/"))
      -- moto dates every upload 2010-11-10T20:48:33Z: judge age by a clock
      local initiated = require("geneva.time").parse_iso8601(c:list_multipart_uploads("stale/")[1].initiated)
      local young = m:client { bucket = "spec", clock = function() return initiated + 60 end }
      assert.equal(0, young:abort_stale_uploads("stale/", 3600))
      assert.equal(1, young:abort_stale_uploads("stale/", 30))
      young:close()
      assert.same({}, c:list_multipart_uploads("stale/"))
    end)
  end)

  describe("faults", function()
    it("retries 503 SlowDown, resets and slow answers, and loses nothing", function()
      local proxy = m:proxy()
      local pc = m:client { bucket = "spec", endpoint = proxy.endpoint,
                            retry = { attempts = 8, base_delay = 0.01, max_delay = 0.05 } }
      proxy:faults { seed = 7, rates = { ["503"] = 0.2, reset = 0.1, slow = 0.05 }, slow_seconds = 0.2 }
      for i = 1, 25 do pc:put("f/" .. i, ("v" .. i):rep(i)) end
      for i = 1, 25 do assert.equal(("v" .. i):rep(i), (pc:get("f/" .. i))) end
      assert.equal(25, #pc:list("f/", { max_keys = 7 }))
      local st = proxy:state()
      assert.is_true((st.injected["503"] or 0) > 0 and (st.injected.reset or 0) > 0, st.log[1])
      assert.is_true(pc.stats.retries >= (st.injected["503"] or 0))
      -- a store that accepts the second conditional create fails the probe
      proxy:faults { rates = {}, match = "PUT", sequence = { "pass", "ok200" } }
      local honoured, why = pc:probe_conditional_writes("f/_probe")
      assert.is_false(honoured)
      assert.matches("ignored", why)
      pc:close()
      proxy:stop()
    end)

    it("gives up after the attempts with a clear unavailable error", function()
      local proxy = m:proxy()
      local pc = m:client { bucket = "spec", endpoint = proxy.endpoint,
                            retry = { attempts = 3, base_delay = 0.01, max_delay = 0.01 } }
      proxy:faults { sequence = { "503", "503", "503" } }
      local err = raises("unavailable", pc.get, pc, "f/1")
      assert.equal("SlowDown", err.s3_code)
      -- libcurl silently repeats a request once when a reused connection
      -- turns out dead: 3 attempts can meet up to 6 resets
      proxy:faults { sequence = { "reset", "reset", "reset", "reset", "reset", "reset" } }
      err = raises("unavailable", pc.get, pc, "f/1")
      assert.matches("after 3 attempts", err.message)
      pc:close()
      proxy:stop()
    end)
  end)

  describe("credentials and errors", function()
    it("a wrong secret key: SignatureDoesNotMatch, and the secret appears nowhere", function()
      local secret = "WRONG" .. m.secret_key:sub(6)
      local bad = m:client { bucket = "spec", credentials = { access_key = m.access_key, secret_key = secret } }
      local err = raises("invalid_argument", bad.get, bad, "t/once")
      assert.equal("SignatureDoesNotMatch", err.s3_code)
      assert.matches(m.access_key, err.message, 1, true)
      for _, s in ipairs(strings_of(err)) do
        assert.is_nil(s:find(secret, 1, true))
        assert.is_nil(s:find("Signature=", 1, true))
      end
      local ok, tb = xpcall(bad.get, debug.traceback, bad, "t/once")
      assert.is_false(ok)
      assert.is_nil(tostring(tb):find(secret, 1, true))
      for _, s in ipairs(strings_of(bad)) do assert.is_nil(s:find(secret, 1, true)) end
      assert.is_nil(tostring(bad):find(secret, 1, true))
      bad:close()
      local unknown = m:client { bucket = "spec", credentials = { access_key = "AKIANOSUCHKEY0000000", secret_key = secret } }
      err = raises("invalid_argument", unknown.get, unknown, "t/once")
      assert.equal("InvalidAccessKeyId", err.s3_code)
      unknown:close()
    end)

    it("a missing bucket: NoSuchBucket naming it", function()
      local nb = m:client { bucket = "no-such-bucket" }
      local err = raises("not_found", nb.put, nb, "k", "v")
      assert.equal("NoSuchBucket", err.s3_code)
      assert.truthy(err.message:find("no-such-bucket", 1, true))
      nb:close()
    end)

    it("takes the keys from a shared credentials file and profile", function()
      local file = dir .. "/credentials"
      fs.write(file, ("[default]\naws_access_key_id = AKIADEFAULT000000000\naws_secret_access_key = nope\n\n" ..
        "# ours\n[geneva]\naws_access_key_id = %s\naws_secret_access_key = %s\n"):format(m.access_key, m.secret_key))
      local env = { AWS_SHARED_CREDENTIALS_FILE = file, AWS_PROFILE = "geneva", AWS_ENDPOINT_URL = m.endpoint }
      local fc = s3.client { bucket = "spec", getenv = function(n) return env[n] end }
      assert.is_true(fc.path_style)
      assert.matches("profile 'geneva'", fc.credentials_source)
      assert.equal("first", (fc:get("t/once")))
      fc:close()
      local other = s3.client { bucket = "spec", profile = "default", getenv = function(n) return env[n] end }
      raises("invalid_argument", other.get, other, "t/once")
      other:close()
      local err = raises("invalid_argument", s3.client, { bucket = "spec", profile = "nope",
        getenv = function(n) return env[n] end })
      assert.matches("no profile 'nope'", err.message)
      -- the environment comes first, unless a profile is named
      env.AWS_ACCESS_KEY_ID, env.AWS_SECRET_ACCESS_KEY = "AKIAENV0000000000000", "envsecret"
      assert.equal("environment", s3.client { bucket = "spec", getenv = function(n) return env[n] end }.credentials_source)
    end)

    it("sends and signs the session token", function()
      local st = m:python("import boto3\nsts = boto3.client('sts', endpoint_url=s3.meta.endpoint_url, " ..
        "region_name='us-east-1', aws_access_key_id=s3._request_signer._credentials.access_key, " ..
        "aws_secret_access_key=s3._request_signer._credentials.secret_key)\n" ..
        "c = sts.get_session_token()['Credentials']\nprint(c['AccessKeyId'], c['SecretAccessKey'], c['SessionToken'])")
      local ak, sk, tok = st:match("^(%S+) (%S+) (%S+)")
      assert.is_not_nil(tok)
      -- an echo server shows what goes on the wire (bucket "echo": path /echo/...)
      local httpd = assert(proc.spawn { argv = { "python3", (os.getenv("GENEVA_SOURCE_DIR") or ".") ..
        "/tests/support/httpd.py" }, stdin = "pipe", stdout = "pipe" })
      local port = assert(httpd:read_line("stdout", 20)):match("^(%d+)")
      local ec = s3.client { bucket = "echo", endpoint = "http://127.0.0.1:" .. port,
        credentials = { access_key = ak, secret_key = sk, session_token = tok } }
      local doc = require("geneva.json").decode((ec:get("k")))
      ec:close()
      httpd:close_stdin(); httpd:wait(5); httpd:close()
      assert.equal(tok, doc.headers["x-amz-security-token"])
      assert.matches("SignedHeaders=[^,]*x%-amz%-security%-token", doc.headers.authorization)
      assert.equal("/echo/k", doc.path)
    end)
  end)

  describe("untrusted answers", function()
    local xml = require "geneva.s3.xml"
    it("the XML reader takes S3's documents and refuses the rest without raising", function()
      local root = assert(xml.parse('<?xml version="1.0"?>\n<Error><Code>NoSuchKey</Code>' ..
        '<Message>a &lt;b&gt; &amp; &#233;<![CDATA[<x>]]></Message><Key/></Error>'))
      assert.equal("Error", root.name)
      assert.equal("NoSuchKey", xml.text(root, "Code"))
      assert.equal("a <b> & \u{e9}<x>", xml.text(root, "Message"))
      assert.equal("", xml.text(root, "Key"))
      for _, bad in ipairs { "", "<a>", "<a></b>", "<a/><b/>", "text", "<a>&bogus;</a>",
                             '<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>', ("<a>"):rep(40) .. ("</a>"):rep(40) } do
        local r, msg = xml.parse(bad)
        assert.is_nil(r, bad)
        assert.is_string(msg)
      end
    end)

    it("a server error message is cut short and cleaned of control bytes", function()
      local e = require("geneva.s3.request").parse_error("<Error><Code>SlowDown</Code><Message>" ..
        ("x\n"):rep(500) .. "</Message></Error>")
      assert.equal("SlowDown", e.code)
      assert.is_true(#e.message <= 303)
      assert.is_nil(e.message:find("\n"))
    end)
  end)

  describe("defaults (those of the AWS SDKs)", function()
    local creds = { access_key = "AKIAX", secret_key = "s" }
    it("endpoint, region and addressing", function()
      local env = {}
      local function mk(o)
        o.bucket, o.credentials, o.getenv = o.bucket or "b-1", creds, function(n) return env[n] end
        return s3.client(o)
      end
      local a = mk {}
      assert.equal("us-east-1", a.region)
      assert.equal("https://s3.us-east-1.amazonaws.com", a.endpoint)
      assert.is_false(a.path_style)
      assert.equal("https://b-1.s3.us-east-1.amazonaws.com/a/b%20c", (a:_url("b-1", "a/b c")))
      env.AWS_DEFAULT_REGION = "eu-west-1"
      assert.equal("eu-west-1", mk {}.region)
      env.AWS_REGION = "eu-central-1"
      assert.equal("eu-central-1", mk {}.region)
      env.AWS_ENDPOINT_URL = "http://127.0.0.1:9000"
      env.AWS_ENDPOINT_URL_S3 = "http://localhost:9001/"
      local b = mk {}
      assert.equal("http://localhost:9001", b.endpoint)
      assert.is_true(b.path_style)
      assert.equal("http://localhost:9001/b-1/k", (b:_url("b-1", "k")))
      assert.is_false(mk { path_style = false }.path_style)
      assert.is_true(mk { bucket = "has.dot", endpoint = "https://s3.example.com", path_style = nil }.path_style)
      assert.equal("b", (s3.parse_uri("s3://b-1/x/y"):sub(1, 1)))
      assert.same({ "bkt", "pre/fix/" }, { s3.parse_uri("s3://bkt/pre/fix/") })
      assert.same({ "bkt", "" }, { s3.parse_uri("s3://bkt") })
      raises("invalid_argument", s3.parse_uri, "file:///x")
      raises("invalid_argument", s3.parse_uri, "s3://Bad_Bucket/x")
      raises("invalid_argument", mk, { endpoint = "ftp://x" })
    end)
  end)
end)
