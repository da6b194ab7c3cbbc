-- geneva.http: the libcurl binding against a loopback server
-- (tests/support/httpd.py). No memcheck label: valgrind plus a Python server
-- is too slow.
local core = require "geneva.http.core"
local http = require "geneva.http"
local cjson = require "cjson.safe"

local SRC = os.getenv("GENEVA_SOURCE_DIR") or "."
local BIN = os.getenv("GENEVA_BIN") or "geneva"

-- {====== Helpers

local function sh(cmd)
  local f = assert(io.popen(cmd))
  local out = f:read("a")
  local ok, _, rc = f:close()
  return out, ok and 0 or rc
end

local function nap(s) os.execute("sleep " .. s) end

local function mktemp_dir()
  return (assert(sh("mktemp -d"):match("%S+")))
end

local function read_file(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

-- n bytes where byte i (from 0) is i % 251, as /bytes?n= serves them
local function pattern(n)
  local t = {}
  for i = 0, 250 do t[#t + 1] = string.char(i) end
  local cycle = table.concat(t)
  return cycle:rep(n // 251 + 1):sub(1, n)
end

-- Starts httpd.py with args; returns {port, url(path), base, stop()}. The
-- server's stdin is our pipe, so it exits when stop() closes it (or when we
-- die), or after its own max lifetime.
local function start_server(args)
  local portfile = os.tmpname()
  local h = assert(io.popen(("exec python3 %s/tests/support/httpd.py %s > %s")
    :format(SRC, args or "", portfile), "w"))
  local port
  for _ = 1, 400 do
    local line = read_file(portfile):match("^(%d+)\n")
    if line then port = tonumber(line) break end
    nap(0.025)
  end
  os.remove(portfile)
  if not port then h:close() error("the test server did not start") end
  local scheme = args and args:find("--tls", 1, true) and "https" or "http"
  local base = ("%s://127.0.0.1:%d"):format(scheme, port)
  return {
    port = port, base = base,
    url = function(path) return base .. path end,
    stop = function() h:close() end,
  }
end

local function echo_of(body)
  local doc = assert(cjson.decode(body))
  return doc
end

-- }======

describe("geneva.http", function()
  local srv, dir

  setup(function()
    srv = start_server()
    dir = mktemp_dir()
  end)

  teardown(function()
    srv.stop()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("is not linked into the executable (libcurl is dlopen'd)", function()
    local out = sh("ldd '" .. BIN .. "' 2>&1")
    assert.is_nil(out:find("libcurl", 1, true))
    local v, tls = core.version()
    assert.matches("^%d+%.%d+", v)
    assert.is_string(tls)
  end)

  describe("core.request", function()
    it("GETs with headers given as a map and as lines", function()
      local status, headers, body, info = core.request {
        url = srv.url("/echo?a=1&b=two"),
        headers = { ["X-One"] = "1", ["X-Num"] = 42, "X-Two: two", "X-Three: 3" },
      }
      assert.equal(200, status)
      assert.equal("application/json", headers["content-type"])
      assert.is_nil(headers["Content-Type"])
      local doc = echo_of(body)
      assert.equal("GET", doc.method)
      assert.same({ a = "1", b = "two" }, doc.query)
      assert.equal("1", doc.headers["x-one"])
      assert.equal("42", doc.headers["x-num"])
      assert.equal("two", doc.headers["x-two"])
      assert.equal("3", doc.headers["x-three"])
      assert.matches("^geneva/", doc.headers["user-agent"])
      assert.equal("*/*", doc.headers.accept)
      assert.equal("HTTP/1.1 200 OK", info.status_line)
      assert.equal("1.1", info.http_version)
      assert.equal(srv.url("/echo?a=1&b=two"), info.url)
      assert.equal(#body, info.bytes)
      assert.equal(0, info.redirects)
      assert.is_number(info.time)
    end)

    for _, m in ipairs { "POST", "PUT", "DELETE", "PATCH", "REPORT" } do
      it("round-trips a body with " .. m, function()
        local payload = "line 1\nbinary \0\1\2 end"
        local status, _, body = core.request {
          url = srv.url("/echo"), method = m, body = payload,
          headers = { ["X-Method"] = m },
        }
        assert.equal(200, status)
        local doc = echo_of(body)
        assert.equal(m, doc.method)
        assert.equal(payload, doc.body)
        assert.equal(#payload, doc.body_length)
        assert.equal(m, doc.headers["x-method"])
        -- no form-urlencoded default for a raw body
        assert.is_nil(doc.headers["content-type"])
      end)
    end

    it("sends POST without a body as Content-Length: 0, keeps a given Content-Type", function()
      local _, _, body = core.request { url = srv.url("/echo"), method = "POST",
        headers = { ["Content-Type"] = "text/plain" } }
      local doc = echo_of(body)
      assert.equal("0", doc.headers["content-length"])
      assert.equal("text/plain", doc.headers["content-type"])
      assert.equal("", doc.body)
    end)

    it("drops a default header given as false, sends an empty one given as ''", function()
      local _, _, body = core.request { url = srv.url("/echo"),
        headers = { Accept = false, ["User-Agent"] = "agent/1", ["X-Empty"] = "" } }
      local doc = echo_of(body)
      assert.is_nil(doc.headers.accept)
      assert.equal("agent/1", doc.headers["user-agent"])
      assert.equal("", doc.headers["x-empty"])
    end)

    it("DELETE without a body sends none", function()
      local _, _, body = core.request { url = srv.url("/echo"), method = "DELETE" }
      local doc = echo_of(body)
      assert.equal("DELETE", doc.method)
      assert.equal(0, doc.body_length)
    end)

    it("HEAD returns headers and an empty body", function()
      local status, headers, body = core.request { url = srv.url("/bytes?n=1000"), method = "HEAD" }
      assert.equal(200, status)
      assert.equal("1000", headers["content-length"])
      assert.equal("", body)
    end)

    it("streams body_file up and output_file down (a few MB)", function()
      local n = 3 * 1024 * 1024 + 17
      local src = dir .. "/up.bin"
      write_file(src, pattern(n))
      local status, _, body = core.request { url = srv.url("/echo"), method = "PUT", body_file = src }
      assert.equal(200, status)
      local doc = echo_of(body)
      assert.equal(n, doc.body_length)
      assert.is_nil(doc.body)   -- too big to echo: compare digests
      assert.equal(sh("sha256sum '" .. src .. "'"):match("^%x+"), doc.body_sha256)

      local dst = dir .. "/down.bin"
      local st, headers, b, info = core.request { url = srv.url("/bytes?n=" .. n), output_file = dst }
      assert.equal(200, st)
      assert.is_nil(b)
      assert.equal(tostring(n), headers["content-length"])
      assert.equal(n, info.bytes)
      assert.equal(pattern(n), read_file(dst))
    end)

    it("sends a range of body_file (body_file_offset, body_file_length)", function()
      local n = 2 * 1024 * 1024 + 5
      local src = dir .. "/range.bin"
      local data = pattern(n)
      write_file(src, data)
      local function put(opts)
        opts.url, opts.method, opts.body_file = srv.url("/echo"), "PUT", src
        local status, _, body = core.request(opts)
        assert.equal(200, status)
        return echo_of(body)
      end
      local doc = put { body_file_offset = 1024 * 1024 + 3, body_file_length = 70000 }
      assert.equal(70000, doc.body_length)
      assert.equal("70000", doc.headers["content-length"])
      local sha = require("geneva.crypto").sha256
      assert.equal(sha(data:sub(1024 * 1024 + 4, 1024 * 1024 + 3 + 70000), "hex"), doc.body_sha256)
      doc = put { body_file_offset = n - 10 }             -- to the end
      assert.equal(sha(data:sub(-10), "hex"), doc.body_sha256)
      doc = put { body_file_offset = n, body_file_length = 0 }
      assert.equal(0, doc.body_length)
      local ok, msg, code = core.request { url = srv.url("/echo"), method = "PUT", body_file = src,
        body_file_offset = n - 1, body_file_length = 2 }
      assert.is_nil(ok)
      assert.equal("EINVAL", code)
      assert.matches("past its end", msg)
    end)

    it("path_as_is keeps /./ and /../ in the path (signed URLs)", function()
      local status, _, body = core.request { url = srv.url("/echo/a/./b/../c"), path_as_is = true }
      assert.equal(200, status)
      assert.equal("/echo/a/./b/../c", echo_of(body).path)
      status, _, body = core.request { url = srv.url("/echo/a/./b/../c") }
      assert.equal("/echo/a/c", echo_of(body).path)
    end)

    it("reports a missing body_file or an unwritable output_file", function()
      local ok, msg, code = core.request { url = srv.url("/echo"), method = "POST",
        body_file = dir .. "/nope" }
      assert.is_nil(ok)
      assert.equal("ENOENT", code)
      assert.matches("cannot open '.*/nope'", msg)
      ok, msg, code = core.request { url = srv.url("/echo"), output_file = dir .. "/no/such/dir" }
      assert.is_nil(ok)
      assert.equal("ENOENT", code)
    end)

    it("returns 404 and 500 as statuses, not failures", function()
      for _, code in ipairs { 404, 500, 503 } do
        local status, headers, body = core.request { url = srv.url("/status/" .. code) }
        assert.equal(code, status)
        assert.equal("text/plain", headers["content-type"])
        assert.equal("status " .. code .. "\n", body)
      end
    end)

    it("joins repeated headers with ', '", function()
      local _, headers = core.request { url = srv.url("/multi") }
      assert.equal("a, b", headers["x-multi"])
    end)

    it("follows redirects only when asked", function()
      local status, headers, _, info = core.request { url = srv.url("/redirect?to=/echo") }
      assert.equal(302, status)
      assert.equal("/echo", headers.location)
      assert.equal(0, info.redirects)
      status, headers, _, info = core.request { url = srv.url("/redirect?to=/status/201"),
        follow_redirects = true }
      assert.equal(201, status)
      assert.is_nil(headers.location)   -- the headers of the last response only
      assert.equal(1, info.redirects)
      assert.equal(srv.url("/status/201"), info.url)
    end)

    it("fails with CURLE_COULDNT_CONNECT, redacting the URL", function()
      local ok, msg, code = core.request {
        url = "http://user:hunter2@127.0.0.1:1/x?access_token=abc123&page=2#frag",
        bearer_token = "tok-SEKRIT", connect_timeout = 5,
      }
      assert.is_nil(ok)
      assert.equal("CURLE_COULDNT_CONNECT", code)
      assert.matches("GET http://***@127.0.0.1:1/x?access_token=***&page=2)", msg, 1, true)
      assert.is_nil(msg:find("hunter2", 1, true))
      assert.is_nil(msg:find("abc123", 1, true))
      assert.is_nil(msg:find("SEKRIT", 1, true))
      assert.is_nil(msg:find("frag", 1, true))
    end)

    it("times out with CURLE_OPERATION_TIMEDOUT", function()
      -- the server would answer after 5 s: a timeout error shows it fired
      local ok, msg, code = core.request { url = srv.url("/slow?seconds=5"), timeout = 0.4,
        bearer_token = "tok-SEKRIT" }
      assert.is_nil(ok)
      assert.equal("CURLE_OPERATION_TIMEDOUT", code)
      assert.matches("timed out", msg)
      assert.is_nil(msg:find("SEKRIT", 1, true))
    end)

    it("caps the response with max_response_bytes", function()
      for _, q in ipairs { "", "&chunked=1" } do   -- known and unknown length
        local out = dir .. "/capped"
        local ok, msg, code = core.request { url = srv.url("/bytes?n=200000" .. q),
          max_response_bytes = 1000, output_file = out }
        assert.is_nil(ok)
        assert.equal("CURLE_FILESIZE_EXCEEDED", code)
        assert.matches("larger than 1000 bytes", msg)
        assert.is_nil(io.open(out))   -- no partial file left behind
      end
      local status, _, body = core.request { url = srv.url("/bytes?n=1000"), max_response_bytes = 1000 }
      assert.equal(200, status)
      assert.equal(1000, #body)
    end)

    it("gives up on a server that never answers (stall_timeout, 60 s by default in the face)", function()
      -- accepts the connection, reads nothing, answers nothing
      local h = assert(io.popen("exec python3 -c 'import socket,time,sys\n" ..
        "s=socket.socket();s.bind((\"127.0.0.1\",0));s.listen(4)\n" ..
        "print(s.getsockname()[1],flush=True);c=s.accept();time.sleep(5)'", "r"))
      local port = math.tointeger(tonumber(h:read("l")))
      -- the server hangs up after 5 s: only the stall timeout gives TIMEDOUT
      local ok, msg, code = core.request { url = ("http://127.0.0.1:%d/"):format(port), stall_timeout = 1 }
      assert.is_nil(ok)
      assert.equal("CURLE_OPERATION_TIMEDOUT", code, msg)
      assert.equal(60, http.stall_timeout)
      local saved = http.stall_timeout
      http.stall_timeout = 1         -- the face's default applies when none is given
      ok, msg, code = http.request { url = ("http://127.0.0.1:%d/"):format(port) }
      http.stall_timeout = saved
      assert.is_nil(ok)
      assert.equal("CURLE_OPERATION_TIMEDOUT", code, msg)
      h:close()
    end)

    it("keeps bodies in memory only up to max_response_bytes (a default in the face); output_file streams any size", function()
      assert.equal(256 * 1024 * 1024, http.max_response_bytes)
      local saved = http.max_response_bytes
      http.max_response_bytes = 1000
      local ok, msg, code = http.request { url = srv.url("/bytes?n=5000") }
      local out = dir .. "/streamed"
      local status = http.request { url = srv.url("/bytes?n=5000"), output_file = out }
      http.max_response_bytes = saved
      assert.is_nil(ok)
      assert.equal("CURLE_FILESIZE_EXCEEDED", code)
      assert.matches("larger than 1000 bytes %(max_response_bytes; output_file streams", msg)
      assert.equal(200, status)
      assert.equal(5000, #read_file(out))
    end)

    it("sends the bearer token", function()
      local _, _, body = core.request { url = srv.url("/echo"), bearer_token = "tok-SEKRIT" }
      assert.equal("Bearer tok-SEKRIT", echo_of(body).headers.authorization)
    end)

    it("raises on misuse", function()
      local function raises(opts, pat)
        local ok, err = pcall(core.request, opts)
        assert.is_false(ok)
        assert.matches(pat, err)
        return err
      end
      raises(nil, "table expected")
      raises({}, "'url'")
      raises({ url = srv.url("/"), bogus = 1 }, "unknown option")
      raises({ url = srv.url("/"), method = "GET /x" }, "'method'")
      raises({ url = srv.url("/"), headers = { ["X-A"] = "a\r\nX-Injected: 1" } }, "CR, LF")
      raises({ url = srv.url("/"), headers = { "no colon" } }, "Name: value")
      raises({ url = srv.url("/"), headers = { ["X-T"] = {} } }, "strings, numbers or false")
      raises({ url = srv.url("/"), headers = "X-A: 1" }, "table expected")
      raises({ url = srv.url("/"), headers = { ["Bad Name"] = "x" } }, "header name")
      raises({ url = srv.url("/"), body = "x", body_file = "/etc/hostname" }, "body_file")
      raises({ url = srv.url("/"), body_file_offset = 3 }, "needs 'body_file'")
      raises({ url = srv.url("/"), body_file = "/etc/hostname", body_file_length = -1 }, "body_file_length")
      raises({ url = srv.url("/"), timeout = -1 }, "'timeout'")
      raises({ url = srv.url("/"), verify = "yes" }, "'verify'")
      raises({ url = srv.url("/"), max_response_bytes = 1.5 }, "max_response_bytes")
      raises({ url = "http://a\0b" }, "zero byte")
      local err = raises({ url = srv.url("/"), bearer_token = "tok-SEKRIT\nX: 1" }, "bearer_token")
      assert.is_nil(err:find("SEKRIT", 1, true))
    end)

    it("reports a malformed URL as a failure", function()
      local ok, _, code = core.request { url = "ftp://127.0.0.1/" }
      assert.is_nil(ok)
      assert.equal("CURLE_UNSUPPORTED_PROTOCOL", code)
    end)
  end)

  describe("TLS", function()
    local tls, cert, key, client_cert, client_key, mtls

    setup(function()
      cert, key = dir .. "/cert.pem", dir .. "/key.pem"
      client_cert, client_key = dir .. "/client.pem", dir .. "/client-key.pem"
      local gen = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=%s %s"
        .. " -keyout '%s' -out '%s' 2>&1"
      local out, rc = sh(gen:format("127.0.0.1", "-addext subjectAltName=IP:127.0.0.1", key, cert))
      assert(rc == 0, out)
      out, rc = sh(gen:format("geneva-client", "", client_key, client_cert))
      assert(rc == 0, out)
      tls = start_server(("--tls '%s' '%s'"):format(cert, key))
      mtls = start_server(("--tls '%s' '%s' --client-ca '%s'"):format(cert, key, client_cert))
    end)

    teardown(function()
      if tls then tls.stop() end
      if mtls then mtls.stop() end
    end)

    it("fails verification without the CA", function()
      local ok, msg, code = core.request { url = tls.url("/echo"), connect_timeout = 5 }
      assert.is_nil(ok)
      assert.equal("CURLE_PEER_FAILED_VERIFICATION", code)
      assert.matches("https://127.0.0.1:%d+/echo", msg)
    end)

    it("verifies with ca_file, with ca_pem, and skips with verify=false", function()
      for _, extra in ipairs { { ca_file = cert }, { ca_pem = read_file(cert) }, { verify = false } } do
        local opts = { url = tls.url("/echo?x=1"), method = "POST", body = "over tls" }
        for k, v in pairs(extra) do opts[k] = v end
        local status, _, body = core.request(opts)
        assert.equal(200, status)
        assert.equal("over tls", echo_of(body).body)
      end
    end)

    it("rejects a wrong CA", function()
      local ok, _, code = core.request { url = tls.url("/echo"), ca_file = client_cert }
      assert.is_nil(ok)
      assert.equal("CURLE_PEER_FAILED_VERIFICATION", code)
    end)

    it("presents client certificates from files and from PEM strings", function()
      local ok = core.request { url = mtls.url("/echo"), ca_file = cert }
      assert.is_nil(ok)   -- the server requires a client certificate
      local status, _, body = core.request { url = mtls.url("/echo"), ca_file = cert,
        client_cert = client_cert, client_key = client_key }
      assert.equal(200, status)
      assert.equal("geneva-client", echo_of(body).client_cert)
      status, _, body = core.request { url = mtls.url("/echo"), ca_pem = read_file(cert),
        client_cert_pem = read_file(client_cert), client_key_pem = read_file(client_key) }
      assert.equal(200, status)
      assert.equal("geneva-client", echo_of(body).client_cert)
    end)

    it("reports an unreadable client key", function()
      local ok, _, code = core.request { url = mtls.url("/echo"), ca_file = cert,
        client_cert = client_cert, client_key = dir .. "/missing.pem" }
      assert.is_nil(ok)
      assert.matches("^CURLE_SSL_", code)
    end)
  end)

  describe("session", function()
    it("reuses its connection", function()
      local s <close> = core.session()
      local ports, conns = {}, {}
      for i = 1, 3 do
        local status, _, body, info = s:request { url = srv.url("/echo"), method = "POST",
          body = "n" .. i }
        assert.equal(200, status)
        local doc = echo_of(body)
        assert.equal("n" .. i, doc.body)
        ports[i], conns[i] = doc.client_port, info.new_connections
      end
      assert.equal(ports[1], ports[2])
      assert.equal(ports[1], ports[3])
      assert.same({ 1, 0, 0 }, conns)
      -- options do not leak from one request into the next
      local status, _, body = s:request { url = srv.url("/echo") }
      assert.equal(200, status)
      local doc = echo_of(body)
      assert.equal("GET", doc.method)
      assert.is_nil(doc.headers.authorization)
    end)

    it("survives failures and keeps working", function()
      local s <close> = core.session()
      local ok, _, code = s:request { url = srv.url("/slow?seconds=3"), timeout = 0.2 }
      assert.is_nil(ok)
      assert.equal("CURLE_OPERATION_TIMEDOUT", code)
      assert.equal(404, (s:request { url = srv.url("/nothing") }))
    end)

    it("closes idempotently and refuses use after close", function()
      local s = core.session()
      assert.matches("^geneva.http.Session %(0x", tostring(s))
      assert.is_false(s:is_closed())
      assert.is_true(s:close())
      assert.is_true(s:close())
      assert.is_true(s:is_closed())
      assert.equal("geneva.http.Session (closed)", tostring(s))
      assert.has_error(function() s:request { url = srv.url("/echo") } end,
        "attempt to use a closed http session")
    end)

    it("closes at the end of a <close> scope", function()
      local keep
      do
        local s <close> = core.session()
        keep = s
        assert.equal(200, (s:request { url = srv.url("/echo") }))
      end
      assert.is_true(keep:is_closed())
    end)

    it("is collected when unreferenced", function()
      local weak = setmetatable({}, { __mode = "v" })
      do
        local s = core.session()
        s:request { url = srv.url("/echo") }
        weak[1] = s
      end
      collectgarbage()
      collectgarbage()
      assert.is_nil(weak[1])
    end)

    it("is tracked in the ledger and torn down with its scope", function()
      local ledger = require "geneva.ledger.core"
      local function count()
        local n = 0
        for _, r in ipairs(ledger.list()) do
          if r.kind == "http_session" then n = n + 1 end
        end
        return n
      end
      local before = count()
      local s = core.session()
      assert.equal(before + 1, count())
      s:close()
      assert.equal(before, count())

      local scope = ledger.scope("http-test")
      local prev = scope:activate()
      local t = core.session()
      prev:activate()
      assert.equal(before + 1, count())
      assert.is_true(scope:close())
      assert.is_true(t:is_closed())
      assert.equal(before, count())
      assert.is_true(t:close())
    end)
  end)

  describe("interrupts", function()
    it("make a blocking request return nil, 'interrupted', 'EINTR'", function()
      local script = dir .. "/interrupt.lua"
      -- the hook that raises "interrupted" is set on the main thread, so the
      -- request runs in a coroutine to let us print what it returned
      write_file(script, ([[
        local core = require "geneva.http.core"
        os.execute("(sleep 0.5; kill -INT $PPID) &")
        local t0 = os.time()
        coroutine.wrap(function()
          local a, b, c = core.request { url = %q, timeout = 30 }
          io.stdout:write(tostring(a), " ", tostring(b), " ", tostring(c), " ",
            os.time() - t0, "\n")
          io.stdout:flush()
        end)()
        print("not reached")
      ]]):format(srv.url("/slow?seconds=10")))
      local out, rc = sh(("'%s' '%s' 2>/dev/null"):format(BIN, script))
      assert.equal(130, rc)
      local a, b, c, secs = out:match("^(%S+) (%S+) (%S+) (%d+)\n$")
      assert.equal("nil", a)
      assert.equal("interrupted", b)
      assert.equal("EINTR", c)      -- the server answers only after 10 s
      assert.is_not_nil(tonumber(secs))
    end)
  end)

  it("explains a missing libcurl", function()
    local out, rc = sh(("GENEVA_LIBCURL=/nonexistent/libcurl.so.4 '%s' -e %q 2>&1")
      :format(BIN, "require 'geneva.http.core'"))
    assert.not_equal(0, rc)
    assert.matches("cannot load /nonexistent/libcurl.so.4: .* %(install libcurl4%)", out)
  end)

  describe("Lua face", function()
    it("has get/post/put/delete helpers and query tables", function()
      local status, _, body = http.get(srv.url("/echo"), { query = { b = "x y&z", a = { 1, 2 } } })
      assert.equal(200, status)
      local doc = echo_of(body)
      assert.equal("GET", doc.method)
      assert.equal("x y&z", doc.query.b)
      for _, f in ipairs { { http.post, "POST" }, { http.put, "PUT" } } do
        status, _, body = f[1](srv.url("/echo"), "payload", { headers = { ["X-A"] = "1" } })
        doc = echo_of(body)
        assert.equal(f[2], doc.method)
        assert.equal("payload", doc.body)
        assert.equal("1", doc.headers["x-a"])
      end
      status, _, body = http.delete(srv.url("/echo"))
      assert.equal("DELETE", echo_of(body).method)
      assert.equal("a=1&a=2&b=x%20y%26z", http.encode_query { b = "x y&z", a = { 1, 2 } })
    end)

    it("uses a session passed as opts.session", function()
      local s <close> = http.session()
      local _, _, b1 = http.get(srv.url("/echo"), { session = s })
      local _, _, b2, info = http.get(srv.url("/echo"), { session = s })
      assert.equal(echo_of(b1).client_port, echo_of(b2).client_port)
      assert.equal(0, info.new_connections)
    end)

    it("encodes and decodes JSON", function()
      local status, data, headers, info = http.json { url = srv.url("/echo"),
        json = { name = "job", n = 3 } }
      assert.equal(200, status)
      assert.equal("application/json", headers["content-type"])
      assert.equal("POST", data.method)
      assert.equal("application/json", data.headers["content-type"])
      assert.equal("application/json", data.headers.accept)
      assert.same({ name = "job", n = 3 }, cjson.decode(data.body))
      assert.is_string(info.body)
      -- an error status with a non-JSON body is still an answer
      status, data, _, info = http.json { url = srv.url("/status/500") }
      assert.equal(500, status)
      assert.is_nil(data)
      assert.equal("status 500\n", info.body)
      -- a 2xx that is not JSON is a failure
      local ok, msg, code = http.json { url = srv.url("/bytes?n=10") }
      assert.is_nil(ok)
      assert.equal("JSON_PARSE", code)
      assert.matches("invalid JSON", msg)
    end)

    it("keeps integers exact and [] apart from {} both ways (geneva.json, not cjson)", function()
      local json = require "geneva.json"
      local big = 9007199254740993           -- 2^53 + 1: a double cannot hold it
      local status, data = http.json { url = srv.url("/echo"),
        json = { n = big, list = json.array(), obj = json.object() } }
      assert.equal(200, status)
      assert.equal("integer", math.type(data.body_length))
      assert.equal("integer", math.type(data.client_port))
      assert.matches('"n":9007199254740993', data.body, 1, true)
      assert.matches('"list":[]', data.body, 1, true)
      assert.matches('"obj":{}', data.body, 1, true)
      local sent = json.decode(data.body)
      assert.equal(big, sent.n)
      assert.equal("integer", math.type(sent.n))
    end)

    it("retries idempotent requests on 502/503/504 with growing backoff", function()
      local sleeps = {}
      local function sleep(s) sleeps[#sleeps + 1] = s return true end
      local status = http.request { url = srv.url("/status/503"),
        retry = { attempts = 3, base_delay = 0.1 }, sleep = sleep }
      assert.equal(503, status)
      assert.equal(2, #sleeps)
      assert.is_true(sleeps[1] >= 0.05 and sleeps[1] <= 0.1)
      assert.is_true(sleeps[2] >= 0.1 and sleeps[2] <= 0.2)

      sleeps = {}
      assert.equal(404, (http.request { url = srv.url("/status/404"), retry = true, sleep = sleep }))
      assert.equal(0, #sleeps)   -- not retriable
      assert.equal(503, (http.request { url = srv.url("/status/503"), method = "POST",
        retry = true, sleep = sleep }))
      assert.equal(0, #sleeps)   -- not idempotent
      assert.equal(503, (http.request { url = srv.url("/status/503"), method = "POST",
        retry = { attempts = 2, any_method = true }, sleep = sleep }))
      assert.equal(1, #sleeps)
    end)

    it("retries transport failures and says how often it tried", function()
      local sleeps = 0
      local ok, msg, code = http.get("http://127.0.0.1:1/", { retry = { attempts = 3 },
        sleep = function() sleeps = sleeps + 1 return true end })
      assert.is_nil(ok)
      assert.equal("CURLE_COULDNT_CONNECT", code)
      assert.matches("after 3 attempts", msg)
      assert.equal(2, sleeps)
      -- an interrupted sleep ends the loop
      ok, msg, code = http.get("http://127.0.0.1:1/", { retry = true,
        sleep = function() return nil, "interrupted", "EINTR" end })
      assert.is_nil(ok)
      assert.equal("EINTR", code)
    end)
  end)
end)
