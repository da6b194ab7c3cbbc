-- geneva.kube.client against a stub API server (tests/support/kube_stub.py):
-- requests, credentials (token, token file, client certificate over TLS,
-- exec plugins), retries, Status errors and warnings.
local kube = require "geneva.kube.client"
local config = require "geneva.kube.config"
local errors = require "geneva.errors"
local json = require "geneva.json"
local ks = require "kube_stub"

local SECRET = "tok-SECRET-0123456789abcdef"

local function raises(code, pattern, fn)
  local ok, e = pcall(fn)
  assert.is_false(ok, "expected an error")
  assert.is_true(errors.is(e, code), "expected a " .. code .. " error, got " .. tostring(e))
  if pattern then assert.matches(pattern, e.message) end
  return e
end

-- A client whose sleeps are recorded, not slept
local function client_for(cfg)
  local slept = {}
  local c = kube.client(cfg, { sleep = function(s) slept[#slept + 1] = s return true end })
  return c, slept
end

local function rc_obj(name, labels, extra_spec)
  local spec = { headGroupSpec = { rayStartParams = json.object(), template = { spec = { containers = json.array() } } } }
  for k, v in pairs(extra_spec or {}) do spec[k] = v end
  return { apiVersion = "ray.io/v1", kind = "RayCluster",
           metadata = { name = name, labels = labels or json.object() }, spec = spec }
end

describe("geneva.kube.client", function()
  local dir, pki

  setup(function()
    dir = ks.mktemp_dir()
    pki = ks.make_pki(dir)
  end)
  teardown(function() ks.rm_rf(dir) end)

  local function kubeconfig(name, server, user, cluster_extra)
    local cluster = { server = server }
    for k, v in pairs(cluster_extra or {}) do cluster[k] = v end
    local f = ks.write(dir .. "/" .. name, ks.kubeconfig { current = "ctx-" .. name,
      clusters = { c = cluster }, users = { ["user-" .. name] = user },
      contexts = { ["ctx-" .. name] = { cluster = "c", user = "user-" .. name, namespace = "ml" } } })
    return config.load { kubeconfig = f }
  end

  describe("with a bearer token", function()
    local srv, c, slept
    setup(function()
      ks.write(dir .. "/tokens", SECRET .. "\n")
      srv = ks.start("--tokens '" .. dir .. "/tokens'")
    end)
    teardown(function() srv.stop() end)
    before_each(function()
      srv.reset()
      c, slept = client_for(kubeconfig("token.yaml", srv.base, { token = SECRET }))
    end)

    it("creates, gets, lists and deletes RayClusters with JSON", function()
      local created, warnings = c:create(kube.RAYCLUSTERS, "ml", rc_obj("rc-a", { app = "x" }))
      assert.equal("rc-a", created.metadata.name)
      assert.equal("ml", created.metadata.namespace)
      assert.same({}, warnings)
      c:create(kube.RAYCLUSTERS, "ml", rc_obj("rc-b", { app = "y" }))
      assert.equal("uid-rc-a", c:get(kube.RAYCLUSTERS, "ml", "rc-a").metadata.uid)
      local items = c:list(kube.RAYCLUSTERS, "ml", { label_selector = "app=y" })
      assert.equal(1, #items)
      assert.equal("rc-b", items[1].metadata.name)
      assert.equal(2, #c:list(kube.RAYCLUSTERS, "ml"))
      assert.is_true(c:delete(kube.RAYCLUSTERS, "ml", "rc-a"))
      assert.is_false(c:delete(kube.RAYCLUSTERS, "ml", "rc-a"))   -- already gone
      assert.is_nil(c:get(kube.RAYCLUSTERS, "ml", "rc-a", { missing_ok = true }))
      local reqs = srv.requests()
      assert.equal("POST", reqs[1].method)
      assert.equal("/apis/ray.io/v1/namespaces/ml/rayclusters", reqs[1].path)
      assert.equal("application/json", reqs[1].content_type)
      assert.equal("application/json", reqs[1].accept)
      assert.equal(SECRET, reqs[1].token)
      assert.equal("app=y", reqs[4].query.labelSelector)
      local del = json.decode(reqs[6].body)
      assert.equal("Background", del.propagationPolicy)
      assert.equal("DeleteOptions", del.kind)
      assert.equal(c.requests, #reqs)
    end)

    it("never deletes with Orphan, and can ask for Foreground", function()
      c:create(kube.RAYCLUSTERS, "ml", rc_obj("rc-f"))
      assert.has_error(function() c:delete(kube.RAYCLUSTERS, "ml", "rc-f", { propagation = "Orphan" }) end)
      assert.is_true(c:delete(kube.RAYCLUSTERS, "ml", "rc-f", { propagation = "Foreground" }))
      local reqs = srv.requests()
      assert.equal("Foreground", json.decode(reqs[#reqs].body).propagationPolicy)
    end)

    it("follows list pages", function()
      for i = 1, 5 do c:create(kube.RAYCLUSTERS, "ml", rc_obj("p" .. i)) end
      local items = c:list(kube.RAYCLUSTERS, "ml", { limit = 2 })
      assert.equal(5, #items)
      local reqs = srv.requests()
      assert.equal("4", reqs[#reqs].query.continue)
    end)

    it("collects Warning headers (fields the apiserver pruned)", function()
      local obj, warnings = c:create(kube.RAYCLUSTERS, "ml", rc_obj("rc-w", nil, { bogus = 1, extra = "x" }))
      assert.same({ 'unknown field "spec.bogus"', 'unknown field "spec.extra"' }, warnings)
      assert.is_nil(obj.spec.bogus)
      assert.same(warnings, c.warnings)
      assert.same({ "a, b", 'say "hi"' }, kube.parse_warnings('299 - "a, b", 299 k8s "say \\"hi\\"" "Tue, 15 Nov 1994 08:12:31 GMT"'))
    end)

    it("maps Status errors with their message and reason", function()
      c:create(kube.RAYCLUSTERS, "ml", rc_obj("dup"))
      local e = raises("conflict", 'already exists', function() c:create(kube.RAYCLUSTERS, "ml", rc_obj("dup")) end)
      assert.equal("AlreadyExists", e.reason)
      assert.equal(409, e.status)
      e = raises("not_found", 'rayclusters.ray.io "nope" not found', function() c:get(kube.RAYCLUSTERS, "ml", "nope") end)
      assert.equal("NotFound", e.reason)
      e = raises("invalid_argument", "422 Invalid", function() c:create(kube.RAYCLUSTERS, "ml", rc_obj("Bad_Name")) end)
      assert.matches("metadata%.name: Invalid value", e.message)
      assert.equal("FieldValueInvalid", e.causes[1].reason)
      local cases = { [400] = "invalid_argument", [403] = "invalid_argument", [404] = "not_found",
                      [409] = "conflict", [410] = "conflict", [422] = "invalid_argument",
                      [500] = "unavailable", [502] = "unavailable", [504] = "unavailable" }
      for code, want in pairs(cases) do
        local st, data, _, _, body = c:request("GET", "/status/" .. code, { query = { reason = "R" .. code, message = "m" .. code } })
        assert.equal(code, st)
        local err = kube.status_error(st, data, body, "GET thing", { context = "ctx", user = "usr", server = "srv" })
        assert.equal(want, err.code, "status " .. code)
        assert.equal("R" .. code, err.reason)
        assert.matches("m" .. code, err.message)
      end
      -- an answer that is not a Status: its first line
      local st, data, _, _, body = c:request("GET", "/text/502")
      assert.is_nil(data)
      assert.matches("502 : plain text failure$", kube.status_error(st, data, body, "GET x").message)
    end)

    it("names the context and user when credentials are rejected, never the token", function()
      local bad, _ = client_for(kubeconfig("badtoken.yaml", srv.base, { token = "wrong-" .. SECRET }))
      local e = raises("invalid_argument", 'rejected the credentials of context "ctx%-badtoken%.yaml" %(user "user%-badtoken%.yaml"%)',
        function() bad:get(kube.RAYCLUSTERS, "ml", "x") end)
      assert.equal(401, e.status)
      assert.is_nil(e.message:find(SECRET, 1, true))
      -- a server that echoes the token gets it scrubbed
      local st, data, _, _, body = c:request("GET", "/status/403", { query = { message = "you sent " .. SECRET, reason = "Forbidden" } })
      local ok, err = pcall(c.fail, c, st, data, body, "GET secret")
      assert.is_false(ok)
      assert.matches("credentials", err.message)
      assert.is_nil(err.message:find(SECRET, 1, true))
      assert.matches("you sent %*%*%*", err.message)
    end)

    it("retries 429 after Retry-After, POSTs included, and gives up after a bound", function()
      srv.throttle(2, 429, 1)
      local created = c:create(kube.RAYCLUSTERS, "ml", rc_obj("after-429"))
      assert.equal("after-429", created.metadata.name)
      assert.same({ 1, 1 }, slept)
      srv.throttle(1, 503, 3)
      assert.is_table(c:get(kube.RAYCLUSTERS, "ml", "after-429"))
      assert.same({ 1, 1, 3 }, slept)
      srv.throttle(1, 429, 3600)                 -- a long Retry-After is cut
      c:get(kube.RAYCLUSTERS, "ml", "after-429")
      assert.equal(kube.MAX_RETRY_AFTER, slept[4])
      srv.throttle(100, 429)
      local e = raises("unavailable", "429 TooManyRequests", function() c:get(kube.RAYCLUSTERS, "ml", "after-429") end)
      assert.equal(429, e.status)
      assert.equal(4 + kube.RETRY_ATTEMPTS - 1, #slept)
      srv.reset()
    end)

    it("lists events about an object, Warnings first to last", function()
      srv.event { involvedObject = { name = "rc-e" }, type = "Normal", reason = "Created", lastTimestamp = "2026-01-01T00:00:01Z" }
      srv.event { involvedObject = { name = "rc-e" }, type = "Warning", reason = "InvalidRayClusterSpec",
                  message = "bad", lastTimestamp = "2026-01-01T00:00:02Z" }
      srv.event { involvedObject = { name = "other" }, type = "Warning", reason = "X" }
      local evs = c:events("ml", "rc-e")
      assert.equal(2, #evs)
      evs = c:events("ml", "rc-e", { type = "Warning" })
      assert.equal(1, #evs)
      assert.equal("InvalidRayClusterSpec", evs[1].reason)
      local reqs = srv.requests()
      assert.equal("/api/v1/namespaces/ml/events", reqs[#reqs].path)
      assert.equal("involvedObject.name=rc-e", reqs[#reqs].query.fieldSelector)
    end)

    it("builds service proxy paths and reaches them", function()
      assert.equal("/api/v1/namespaces/ml/services/rc-head-svc:dashboard/proxy/api/version",
        c:service_proxy_path("ml", "rc-head-svc", "dashboard", "/api/version"))
      assert.equal(srv.base .. "/api/v1/namespaces/ml/services/rc-head-svc:dashboard/proxy/api/jobs/",
        c:service_proxy_url("ml", "rc-head-svc", "dashboard", "api/jobs/"))
      local st, data = c:request("POST", c:service_proxy_path("ml", "rc-head-svc", "dashboard", "api/jobs/"),
        { json = { entrypoint = "x" } })
      assert.equal(200, st)
      assert.equal("rc-head-svc:dashboard", data.service)
      assert.equal("api/jobs/", data.path)
      assert.has_error(function() c:service_proxy_path("ml", "..", "dashboard") end)
      local o = c:transport_opts()
      assert.equal(SECRET, o.bearer_token)
    end)

    it("polls with backoff until a value, and times out naming what it waited for", function()
      local n = 0
      local v = c:poll(function() n = n + 1 if n == 3 then return "ready" end return nil, "state " .. n end,
        { interval = 0.5, factor = 2, max_interval = 1.5 })
      assert.equal("ready", v)
      assert.same({ 0.5, 1 }, slept)
      local real = kube.client(c.cfg)
      local e = raises("unavailable", "timed out after 0.2s waiting for the cluster %(state x%)", function()
        real:poll(function() return nil, "state x" end, { timeout = 0.2, interval = 0.05, what = "the cluster" })
      end)
      assert.is_nil(e.message:find(SECRET, 1, true))
    end)

    it("fails with unavailable, naming the server and context, when nothing answers", function()
      local dead = client_for(kubeconfig("dead.yaml", "http://127.0.0.1:9", { token = SECRET }))
      local e = raises("unavailable", 'cannot reach the Kubernetes API server http://127.0.0.1:9 %(context "ctx%-dead%.yaml"%)',
        function() dead:get(kube.RAYCLUSTERS, "ml", "x") end)
      assert.is_nil(e.message:find(SECRET, 1, true))
    end)
  end)

  describe("with a token file", function()
    local srv
    setup(function()
      ks.write(dir .. "/tf-valid", "new-token\n")
      srv = ks.start("--tokens '" .. dir .. "/tf-valid'")
    end)
    teardown(function() srv.stop() end)

    it("re-reads the file after a 401", function()
      ks.write(dir .. "/tf-token", "old-token\n")
      local c = client_for(kubeconfig("tf.yaml", srv.base, { tokenFile = "tf-token" }))
      raises("invalid_argument", "rejected the credentials", function() c:list(kube.RAYCLUSTERS, "ml") end)
      ks.write(dir .. "/tf-token", "new-token\n")     -- rotated
      assert.same({}, c:list(kube.RAYCLUSTERS, "ml"))
      local reqs = srv.requests()
      assert.equal("old-token", reqs[#reqs - 1].token)
      assert.equal("new-token", reqs[#reqs].token)
    end)
  end)

  describe("with an exec plugin", function()
    local state, srv
    before_each(function()
      state = ks.mktemp_dir()
      srv = ks.start("--tokens '" .. state .. "/tokens'")
    end)
    after_each(function()
      srv.stop()
      ks.rm_rf(state)
    end)

    local function exec_client(expires_in, extra)
      local env = json.array { { name = "PLUGIN_STATE", value = state } }
      if expires_in then env[#env + 1] = { name = "EXPIRES_IN", value = tostring(expires_in) } end
      for k, v in pairs(extra or {}) do env[#env + 1] = { name = k, value = v } end
      return client_for(kubeconfig("exec.yaml", srv.base, { exec = {
        apiVersion = "client.authentication.k8s.io/v1", command = "python3", args = { ks.PLUGIN },
        interactiveMode = "Never", env = env } }))
    end
    local function runs() return tonumber(ks.read(state .. "/count")) end

    it("caches the token until it expires, and re-runs the plugin once on a 401", function()
      local c = exec_client(3600)
      c:list(kube.RAYCLUSTERS, "ml")
      c:list(kube.RAYCLUSTERS, "ml")
      assert.equal(1, runs())
      ks.write(state .. "/tokens", "revoked\n")       -- the server stops accepting exec-token-1
      c:list(kube.RAYCLUSTERS, "ml")
      assert.equal(2, runs())
      local reqs = srv.requests()
      assert.same({ "exec-token-1", "exec-token-1", "exec-token-1", "exec-token-2" },
        { reqs[1].token, reqs[2].token, reqs[3].token, reqs[4].token })
      c:list(kube.RAYCLUSTERS, "ml")
      assert.equal(2, runs())
    end)

    it("runs the plugin again once the token has expired", function()
      local c = exec_client(-5)
      c:list(kube.RAYCLUSTERS, "ml")
      c:list(kube.RAYCLUSTERS, "ml")
      assert.equal(2, runs())
      assert.equal("exec-token-2", srv.requests()[2].token)
    end)

    it("gives up after one refresh, with a clear error and no token in it", function()
      local c = exec_client(3600)
      c:list(kube.RAYCLUSTERS, "ml")
      -- tokens the plugin writes are no longer what the server reads
      srv.stop()
      srv = ks.start("--tokens '" .. state .. "/elsewhere'")
      c.cfg.server = srv.base
      local e = raises("invalid_argument", 'rejected the credentials of context "ctx%-exec%.yaml" %(user "user%-exec%.yaml"%)',
        function() c:list(kube.RAYCLUSTERS, "ml") end)
      assert.equal(2, runs())
      assert.is_nil(e.message:find("exec-token", 1, true))
    end)

    it("reports a failing plugin as invalid_argument", function()
      local c = exec_client(nil, { MODE = "fail" })
      raises("invalid_argument", "exited with status 3", function() c:list(kube.RAYCLUSTERS, "ml") end)
    end)
  end)

  describe("over TLS", function()
    local srv
    setup(function()
      ks.write(dir .. "/tls-tokens", SECRET .. "\n")
      srv = ks.start(("--tls '%s' '%s' --client-ca '%s' --tokens '%s'")
        :format(pki.server_cert, pki.server_key, pki.ca, dir .. "/tls-tokens"))
    end)
    teardown(function() srv.stop() end)

    local ca_data = function() return { ["certificate-authority-data"] = ks.b64(ks.read(pki.ca)) } end

    it("authenticates with a client certificate from kubeconfig data", function()
      local c = client_for(kubeconfig("mtls.yaml", srv.base, {
        ["client-certificate-data"] = ks.b64(ks.read(pki.client_cert)),
        ["client-key-data"] = ks.b64(ks.read(pki.client_key)) }, ca_data()))
      assert.same({}, c:list(kube.RAYCLUSTERS, "ml"))
      local reqs = srv.requests()
      assert.equal("geneva-client", reqs[#reqs].cert)
      assert.equal(json.null, reqs[#reqs].token)   -- no bearer token sent
    end)

    it("authenticates with client certificate files, and with an exec plugin's certificate", function()
      local c = client_for(kubeconfig("mtls-files.yaml", srv.base,
        { ["client-certificate"] = pki.client_cert, ["client-key"] = pki.client_key },
        { ["certificate-authority"] = pki.ca }))
      assert.same({}, c:list(kube.RAYCLUSTERS, "ml"))
      local state = ks.mktemp_dir()
      c = client_for(kubeconfig("mtls-exec.yaml", srv.base, { exec = {
        apiVersion = "client.authentication.k8s.io/v1", command = "python3", args = { ks.PLUGIN },
        interactiveMode = "Never", env = { { name = "PLUGIN_STATE", value = state }, { name = "MODE", value = "cert" },
          { name = "CERT_FILE", value = pki.client_cert }, { name = "KEY_FILE", value = pki.client_key } } } }, ca_data()))
      assert.same({}, c:list(kube.RAYCLUSTERS, "ml"))
      ks.rm_rf(state)
      assert.equal("geneva-client", srv.requests()[#srv.requests()].cert)
    end)

    it("uses a token over TLS, and refuses a server its CA did not sign", function()
      local c = client_for(kubeconfig("tls-token.yaml", srv.base, { token = SECRET }, ca_data()))
      assert.same({}, c:list(kube.RAYCLUSTERS, "ml"))
      local wrong = client_for(kubeconfig("tls-wrong.yaml", srv.base, { token = SECRET },
        { ["certificate-authority-data"] = ks.b64(ks.read(pki.other_ca)) }))
      local e = raises("unavailable", "cannot reach", function() wrong:list(kube.RAYCLUSTERS, "ml") end)
      assert.is_nil(e.message:find(SECRET, 1, true))
      local anon = client_for(kubeconfig("tls-anon.yaml", srv.base, {}, ca_data()))
      raises("invalid_argument", "rejected the credentials", function() anon:list(kube.RAYCLUSTERS, "ml") end)
    end)
  end)
end)
