-- geneva.kube.config: kubeconfig files, contexts, credentials, in-cluster memcheck
local config = require "geneva.kube.config"
local errors = require "geneva.errors"
local json = require "geneva.json"
local ks = require "kube_stub"

local SECRET_TOKEN = "s3cr3t-token-value-0123456789"

local function raises(code, pattern, fn)
  local ok, e = pcall(fn)
  assert.is_false(ok, "expected an error")
  assert.is_true(errors.is(e, code), "expected a " .. code .. " error, got " .. tostring(e))
  if pattern then assert.matches(pattern, e.message) end
  return e
end

describe("geneva.kube.config", function()
  local dir, pki

  setup(function()
    dir = ks.mktemp_dir()
    pki = ks.make_pki(dir)
  end)

  teardown(function() ks.rm_rf(dir) end)

  local function file(name, text) return ks.write(dir .. "/" .. name, text) end

  describe("KUBECONFIG", function()
    local f1, f2
    setup(function()
      os.execute("mkdir -p '" .. dir .. "/two'")
      f1 = file("one.yaml", ks.kubeconfig {
        current = "a",
        clusters = { c1 = { server = "https://one.example:6443/" } },
        users = { u1 = { token = SECRET_TOKEN } },
        contexts = { a = { cluster = "c1", user = "u1", namespace = "ml" } },
      })
      ks.write(dir .. "/two/tok2.txt", "  token-two\n")
      f2 = file("two/two.yaml", ks.kubeconfig {
        current = "b",
        clusters = { c1 = { server = "https://ignored.example" }, c2 = { server = "https://two.example" } },
        users = { u1 = { token = "ignored" }, u2 = { tokenFile = "tok2.txt" } },
        contexts = { a = { cluster = "c2", user = "u2" }, b = { cluster = "c2", user = "u2" },
                     mixed = { cluster = "c1", user = "u2" } },
      })
    end)

    local function load(o)
      o = o or {}
      o.getenv = o.getenv or ks.env { KUBECONFIG = f1 .. "::" .. dir .. "/missing.yaml:" .. f2 .. ":" .. f1 }
      return config.load(o)
    end

    it("merges files: the first to define a name wins, current-context from the first that sets it", function()
      local c = load()
      assert.equal("kubeconfig", c.source)
      assert.same({ f1, f2 }, c.files)           -- duplicates and missing files dropped
      assert.equal("a", c.context)
      assert.equal("c1", c.cluster)
      assert.equal("u1", c.user)
      assert.equal("https://one.example:6443", c.server)
      assert.equal("ml", c.namespace)
      assert.equal("token", c.auth.kind)
      assert.equal(SECRET_TOKEN, c.secret.token)
      -- a name only the second file defines, mixing entries of both files
      c = load { context = "mixed" }
      assert.equal("https://one.example:6443", c.server)
      assert.equal("token_file", c.auth.kind)
      assert.equal(dir .. "/two/tok2.txt", c.auth.path)   -- relative to its own file
      assert.equal("token-two", c.secret.token)
      assert.equal("default", c.namespace)
    end)

    it("takes current-context from a later file when the first sets none", function()
      local f0 = file("zero.yaml", ks.kubeconfig { clusters = { c0 = { server = "http://zero" } } })
      local c = config.load { getenv = ks.env { KUBECONFIG = f0 .. ":" .. f2 } }
      assert.equal("b", c.context)
      assert.equal("https://two.example", c.server)
    end)

    it("uses a named context, and the spec's namespace over the context's", function()
      local c = load { context = "b", namespace = "team" }
      assert.equal("b", c.context)
      assert.equal("team", c.namespace)
    end)

    it("reads ~/.kube/config without KUBECONFIG, and an explicit file alone", function()
      os.execute("mkdir -p '" .. dir .. "/home/.kube'")
      ks.write(dir .. "/home/.kube/config", ks.read(f2))
      ks.write(dir .. "/home/.kube/tok2.txt", "token-two")
      local c = config.load { getenv = ks.env { HOME = dir .. "/home" } }
      assert.equal("b", c.context)
      c = config.load { kubeconfig = f1, getenv = ks.env { KUBECONFIG = f2 } }
      assert.equal("a", c.context)
      assert.same({ f1 }, c.files)
    end)

    it("never shows a secret in tostring or describe", function()
      local c = load()
      local text = tostring(c) .. json.encode(c:describe())
      assert.is_nil(text:find(SECRET_TOKEN, 1, true))
      assert.matches('context "a"', tostring(c))
      local d = c:describe()
      assert.equal("token", d.auth)
      assert.equal("https://one.example:6443", d.server)
    end)
  end)

  describe("TLS material", function()
    it("decodes *-data into PEM blobs and reads files relative to the kubeconfig", function()
      local ca, cert, key = ks.read(pki.ca), ks.read(pki.client_cert), ks.read(pki.client_key)
      local f = file("data.yaml", ks.kubeconfig {
        current = "x",
        clusters = { c = { server = "https://127.0.0.1:1", ["certificate-authority-data"] = ks.b64(ca) } },
        users = { u = { ["client-certificate-data"] = ks.b64(cert), ["client-key-data"] = ks.b64(key) } },
        contexts = { x = { cluster = "c", user = "u" } },
      })
      local c = config.load { kubeconfig = f }
      assert.equal(ca, c.tls.ca_pem)
      assert.equal(cert, c.tls.client_cert_pem)
      assert.equal(key, c.secret.client_key_pem)
      assert.is_nil(c.tls.client_key_pem)      -- the key is a secret, kept apart
      assert.is_nil(json.encode(c:describe()):find("PRIVATE", 1, true))
      f = file("files.yaml", ks.kubeconfig {
        current = "x",
        clusters = { c = { server = "https://127.0.0.1:1", ["certificate-authority"] = "ca.pem" } },
        users = { u = { ["client-certificate"] = pki.client_cert, ["client-key"] = "client_key.pem" } },
        contexts = { x = { cluster = "c", user = "u" } },
      })
      c = config.load { kubeconfig = f }
      assert.equal(ca, c.tls.ca_pem)
      assert.equal(key, c.secret.client_key_pem)
      assert.equal("client certificate", c:describe().auth)
    end)

    it("turns insecure-skip-tls-verify into verify = false", function()
      local f = file("insecure.yaml", [[
apiVersion: v1
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}
contexts:
- {name: x, context: {cluster: c}}
current-context: x
]])
      local c = config.load { kubeconfig = f }
      assert.is_false(c.tls.verify)
      assert.equal("none", c.auth.kind)
    end)
  end)

  describe("bad kubeconfigs name the file and the field", function()
    local function kc(name, t) return file(name, ks.kubeconfig(t)) end
    local ok_cluster = { server = "https://127.0.0.1:1" }

    it("a missing context", function()
      local f = kc("nocontext.yaml", { current = "gone", clusters = { c = ok_cluster },
                                       contexts = { there = { cluster = "c" } } })
      local e = raises("invalid_argument", "current%-context", function() config.load { kubeconfig = f } end)
      assert.matches(f, e.message, 1, true)
      assert.matches('"gone" is not defined', e.message)
      e = raises("invalid_argument", "context \"ther\" is not defined", function()
        config.load { kubeconfig = f, context = "ther" }
      end)
      assert.matches("did you mean 'there'", e.message)
      f = kc("nocurrent.yaml", { clusters = { c = ok_cluster }, contexts = { there = { cluster = "c" } } })
      raises("invalid_argument", "no current%-context", function() config.load { kubeconfig = f } end)
    end)

    it("an unknown cluster or user, a context without a cluster, a cluster without a server", function()
      local f = kc("unknown.yaml", { current = "x", clusters = { c = ok_cluster },
        contexts = { x = { cluster = "nope", user = "u" }, y = { cluster = "c", user = "nobody" }, z = { user = "u" } },
        users = { u = {} }, })
      local e = raises("invalid_argument", 'contexts%[name="x"%]%.context%.cluster: cluster "nope" is not defined',
        function() config.load { kubeconfig = f } end)
      assert.matches(f, e.message, 1, true)
      raises("invalid_argument", 'user "nobody" is not defined', function() config.load { kubeconfig = f, context = "y" } end)
      raises("invalid_argument", "context%.cluster: missing", function() config.load { kubeconfig = f, context = "z" } end)
      f = kc("noserver.yaml", { current = "x", clusters = { c = {} }, contexts = { x = { cluster = "c" } } })
      raises("invalid_argument", 'clusters%[name="c"%]%.cluster%.server: missing', function() config.load { kubeconfig = f } end)
    end)

    it("bad base64, without echoing the data", function()
      local bad = "not*base64" .. SECRET_TOKEN
      local f = kc("b64.yaml", { current = "x", clusters = { c = ok_cluster }, contexts = { x = { cluster = "c", user = "u" } },
        users = { u = { ["client-certificate-data"] = ks.b64("x"), ["client-key-data"] = bad } } })
      local e = raises("invalid_argument", 'users%[name="u"%]%.user%.client%-key%-data: bad base64',
        function() config.load { kubeconfig = f } end)
      assert.matches(f, e.message, 1, true)
      assert.is_nil(e.message:find(SECRET_TOKEN, 1, true))
      f = kc("b64ca.yaml", { current = "x", contexts = { x = { cluster = "c" } },
        clusters = { c = { server = "https://h", ["certificate-authority-data"] = "abc" } } })
      raises("invalid_argument", "certificate%-authority%-data: bad base64", function() config.load { kubeconfig = f } end)
    end)

    it("an unreadable file: the kubeconfig itself, or a file it names", function()
      raises("invalid_argument", "cannot read " .. dir .. "/absent.yaml", function()
        config.load { kubeconfig = dir .. "/absent.yaml" }
      end)
      os.execute("mkdir -p '" .. dir .. "/adir'")
      raises("invalid_argument", "cannot read " .. dir .. "/adir", function() config.load { kubeconfig = dir .. "/adir" } end)
      -- through KUBECONFIG: a missing file is skipped, an unreadable one is not
      raises("invalid_argument", "cannot read", function()
        config.load { getenv = ks.env { KUBECONFIG = dir .. "/adir" } }
      end)
      local f = kc("cafile.yaml", { current = "x", contexts = { x = { cluster = "c" } },
        clusters = { c = { server = "https://h", ["certificate-authority"] = "no-such-ca.pem" } } })
      local e = raises("invalid_argument", "certificate%-authority: cannot read " .. dir .. "/no%-such%-ca.pem",
        function() config.load { kubeconfig = f } end)
      assert.matches(f, e.message, 1, true)
      f = kc("tokfile.yaml", { current = "x", contexts = { x = { cluster = "c", user = "u" } }, clusters = { c = ok_cluster },
        users = { u = { tokenFile = "missing-token" } } })
      raises("invalid_argument", "tokenFile: cannot read", function() config.load { kubeconfig = f } end)
    end)

    it("a YAML error, at file:line:col", function()
      local f = file("broken.yaml", "apiVersion: v1\nclusters:\n- name: c\n  cluster: {server: [\n")
      local e = raises("invalid_argument", nil, function() config.load { kubeconfig = f } end)
      assert.matches(f .. ":%d+:%d+: ", e.message)
      f = file("dup.yaml", "apiVersion: v1\nkind: Config\nkind: Config\n")
      raises("invalid_argument", "dup%.yaml:3:1: ", function() config.load { kubeconfig = f } end)
    end)

    it("wrong types, unsupported fields, conflicting fields", function()
      local f = file("types.yaml", "clusters: {a: 1}\n")
      raises("invalid_argument", "clusters: expected a list", function() config.load { kubeconfig = f } end)
      f = kc("conflict.yaml", { current = "x", contexts = { x = { cluster = "c" } },
        clusters = { c = { server = "https://h", ["certificate-authority"] = pki.ca, ["certificate-authority-data"] = "eA==" } } })
      raises("invalid_argument", "both given", function() config.load { kubeconfig = f } end)
      f = kc("provider.yaml", { current = "x", contexts = { x = { cluster = "c", user = "u" } }, clusters = { c = ok_cluster },
        users = { u = { ["auth-provider"] = { name = "oidc" } } } })
      raises("invalid_argument", "auth%-provider: not supported", function() config.load { kubeconfig = f } end)
      f = kc("halfcert.yaml", { current = "x", contexts = { x = { cluster = "c", user = "u" } }, clusters = { c = ok_cluster },
        users = { u = { ["client-certificate"] = pki.client_cert } } })
      raises("invalid_argument", "needs a client%-key", function() config.load { kubeconfig = f } end)
      f = kc("badserver.yaml", { current = "x", contexts = { x = { cluster = "c" } }, clusters = { c = { server = "ftp://x" } } })
      raises("invalid_argument", "server: expected an http%(s%) URL", function() config.load { kubeconfig = f } end)
    end)

    it("nothing to load at all", function()
      raises("invalid_argument", "no Kubernetes configuration", function()
        config.load { getenv = ks.env { HOME = dir .. "/nohome" } }
      end)
    end)
  end)

  describe("in-cluster", function()
    local sa
    setup(function()
      sa = dir .. "/sa"
      os.execute("mkdir -p '" .. sa .. "'")
      ks.write(sa .. "/token", SECRET_TOKEN .. "\n")
      ks.write(sa .. "/ca.crt", ks.read(pki.ca))
      ks.write(sa .. "/namespace", "jobs\n")
    end)

    it("uses the service account when no kubeconfig has a context", function()
      local env = ks.env { KUBERNETES_SERVICE_HOST = "10.0.0.1", KUBERNETES_SERVICE_PORT = "443",
                           HOME = dir .. "/nohome", GENEVA_KUBE_SA_DIR = sa }
      local c = config.load { getenv = env }
      assert.equal("in-cluster", c.source)
      assert.equal("https://10.0.0.1:443", c.server)
      assert.equal("jobs", c.namespace)
      assert.equal("token_file", c.auth.kind)
      assert.equal(SECRET_TOKEN, c.secret.token)
      assert.equal(ks.read(pki.ca), c.tls.ca_pem)
      assert.is_nil(json.encode(c:describe()):find(SECRET_TOKEN, 1, true))
      -- the spec's namespace wins; an IPv6 host is bracketed; opts.sa_dir too
      c = config.load { getenv = ks.env { KUBERNETES_SERVICE_HOST = "fd00::1", KUBERNETES_SERVICE_PORT = "6443" },
                        in_cluster = true, sa_dir = sa, namespace = "mine" }
      assert.equal("https://[fd00::1]:6443", c.server)
      assert.equal("mine", c.namespace)
    end)

    it("prefers a kubeconfig with a context, unless told otherwise", function()
      local f = file("ic.yaml", ks.kubeconfig { current = "x", clusters = { c = { server = "https://kc" } },
                                                contexts = { x = { cluster = "c" } } })
      local env = ks.env { KUBERNETES_SERVICE_HOST = "10.0.0.1", KUBERNETES_SERVICE_PORT = "443",
                           KUBECONFIG = f, GENEVA_KUBE_SA_DIR = sa }
      assert.equal("https://kc", config.load { getenv = env }.server)
      assert.equal("in-cluster", config.load { getenv = env, in_cluster = true }.source)
    end)

    it("fails clearly outside a pod or without the token", function()
      raises("invalid_argument", "not in a pod", function()
        config.load { getenv = ks.env {}, in_cluster = true }
      end)
      raises("invalid_argument", "cannot read " .. dir .. "/nosa/token", function()
        config.load { getenv = ks.env { KUBERNETES_SERVICE_HOST = "h", KUBERNETES_SERVICE_PORT = "1" },
                      in_cluster = true, sa_dir = dir .. "/nosa" }
      end)
    end)
  end)

  describe("exec plugins", function()
    local state
    before_each(function()
      state = ks.mktemp_dir()
    end)
    after_each(function() ks.rm_rf(state) end)

    local function exec_cfg(exec, name)
      local f = file(name or "exec.yaml", ks.kubeconfig { current = "x",
        clusters = { c = { server = "https://127.0.0.1:1", ["certificate-authority-data"] = ks.b64(ks.read(pki.ca)) } },
        contexts = { x = { cluster = "c", user = "u" } }, users = { u = { exec = exec } } })
      return config.load { kubeconfig = f }
    end

    local function plugin(extra_env, over)
      local e = { apiVersion = "client.authentication.k8s.io/v1", command = "python3",
                  args = { ks.PLUGIN, "--flag", "value" }, interactiveMode = "Never",
                  env = json.array { { name = "PLUGIN_STATE", value = state } } }
      for k, v in pairs(extra_env or {}) do e.env[#e.env + 1] = { name = k, value = v } end
      for k, v in pairs(over or {}) do e[k] = v end
      return e
    end

    it("runs the plugin with args, env and KUBERNETES_EXEC_INFO, and reads its token and expiry", function()
      local c = exec_cfg(plugin({ EXPIRES_IN = "3600" }, { provideClusterInfo = true }))
      assert.equal("exec", c.auth.kind)
      assert.equal("exec python3", c:describe().auth)
      local cred = config.run_exec(c)
      assert.equal("exec-token-1", cred.token)
      assert.is_true(math.abs(cred.expires - (os.time() + 3600)) < 120)
      assert.same({ "--flag", "value" }, json.decode(ks.read(state .. "/argv")))
      local info = json.decode(ks.read(state .. "/info"))
      assert.equal("client.authentication.k8s.io/v1", info.apiVersion)
      assert.equal("ExecCredential", info.kind)
      assert.is_false(info.spec.interactive)
      assert.equal("https://127.0.0.1:1", info.spec.cluster.server)
      assert.equal(ks.b64(ks.read(pki.ca)), info.spec.cluster["certificate-authority-data"])
    end)

    it("accepts v1beta1 without interactiveMode, and a client certificate", function()
      local c = exec_cfg(plugin({ MODE = "cert", CERT_FILE = pki.client_cert, KEY_FILE = pki.client_key },
        { apiVersion = "client.authentication.k8s.io/v1beta1", interactiveMode = json.null }))
      local cred = config.run_exec(c)
      assert.equal(ks.read(pki.client_cert), cred.client_cert_pem)
      assert.equal(ks.read(pki.client_key), cred.client_key_pem)
      assert.is_nil(cred.expires)
      local info = json.decode(ks.read(state .. "/info"))
      assert.equal("client.authentication.k8s.io/v1beta1", info.apiVersion)
      assert.is_nil(info.spec.cluster)
    end)

    it("checks the exec stanza", function()
      raises("invalid_argument", "exec%.interactiveMode: missing", function()
        exec_cfg(plugin(nil, { interactiveMode = json.null }))
      end)
      raises("invalid_argument", "exec%.apiVersion: .*v1alpha1.* is not supported", function()
        exec_cfg(plugin(nil, { apiVersion = "client.authentication.k8s.io/v1alpha1" }))
      end)
      raises("invalid_argument", "interactiveMode: Always needs a terminal", function()
        exec_cfg(plugin(nil, { interactiveMode = "Always" }))
      end)
      raises("invalid_argument", "exec%.command: missing", function() exec_cfg(plugin(nil, { command = json.null })) end)
    end)

    it("reports a failing, missing or misbehaving plugin clearly", function()
      local e = raises("invalid_argument", "exited with status 3: plugin: no credentials here", function()
        config.run_exec(exec_cfg(plugin { MODE = "fail" }))
      end)
      assert.matches('users%[name="u"%]%.user%.exec', e.message)
      e = raises("invalid_argument", "cannot run the exec plugin", function()
        config.run_exec(exec_cfg(plugin(nil, { command = "geneva-no-such-plugin", installHint = "install it with: apt install x" })))
      end)
      assert.matches("install it with: apt install x", e.message)
      raises("invalid_argument", "apiVersion .*v1alpha1.*, not client.authentication.k8s.io/v1", function()
        config.run_exec(exec_cfg(plugin { MODE = "badversion" }))
      end)
      raises("invalid_argument", "not JSON", function() config.run_exec(exec_cfg(plugin { MODE = "garbage" })) end)
      raises("invalid_argument", "no token", function() config.run_exec(exec_cfg(plugin { MODE = "empty" })) end)
    end)

    it("resolves a command with a '/' against the kubeconfig's directory", function()
      os.execute("cp '" .. ks.PLUGIN .. "' '" .. dir .. "/plugin.py' && chmod +x '" .. dir .. "/plugin.py'")
      local c = exec_cfg(plugin(nil, { command = "./plugin.py", args = json.array() }), "relexec.yaml")
      assert.equal(dir .. "/./plugin.py", c.auth.exec.command)
      assert.equal("exec-token-1", config.run_exec(c).token)
    end)
  end)

  it("decodes base64 as Go does (padding required, line breaks skipped)", function()
    assert.equal("hello", config._b64decode("aGVsbG8="))
    assert.equal("hello", config._b64decode("aGVs\nbG8="))
    assert.equal("", config._b64decode(""))
    assert.is_nil(config._b64decode("aGVsbG8"))
    assert.is_nil(config._b64decode("aG=sbG8="))
    assert.is_nil(config._b64decode("a!Vs"))
  end)
end)
