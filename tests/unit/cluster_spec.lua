-- Specs for cluster specs: validation, secrets as references, the registry memcheck
-- (db:define_cluster & co.) and `geneva cluster` on the command line.
local geneva = require "geneva"
local cluster = require "geneva.context.cluster"
local sv = require "geneva.context.spec"
local errors = require "geneva.errors"
local json = require "geneva.json"
local fs = require "geneva.fs"
local child = require "child"

local raises = require("expect").raises

local function invalid(spec, message)
  local err = raises("invalid_argument", cluster.validate, spec)
  assert.equal(message, err.message)
  return err
end

-- runs `geneva ARGS...`; returns exit code, stdout, stderr
local cli = child.cli

local GOOD = {
  type = "kuberay", namespace = "geneva", kubeconfig = "~/.kube/config", ttl_seconds = 3600,
  token_env = "RAY_TOKEN",
  head_group = { image = "rayproject/ray:2.52.0", num_cpus = 4, memory = "8Gi",
    service_account = "geneva-sa", node_selector = { ["geneva.lancedb.com/ray-head"] = "true" } },
  worker_groups = {
    { name = "cpu", image = "rayproject/ray:2.52.0", num_cpus = 2, memory = "4Gi",
      replicas = 2, min_replicas = 0, max_replicas = 4,
      labels = { ["app.kubernetes.io/name"] = "geneva", team = "ml" },
      env = { HF_TOKEN = { from_env = "HF_TOKEN" }, MODE = "fast", N = 3 } },
    { name = "gpu", num_gpus = 1, memory = "1.5G",
      tolerations = { { key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" },
                      { key = "spot", operator = "Equal", value = "true", effect = "NoExecute", toleration_seconds = 60 } } },
  },
}

describe("geneva.context.cluster", function()
  describe("validate", function()
    it("accepts the three types and returns a normalized copy", function()
      local l = cluster.validate{ type = "local", workers = 2 }
      assert.same({ type = "local", workers = 2 }, l)
      local r = cluster.validate{ type = "ray", address = "https://ray.example:8265/", ship_host = true,
        env = { A = 1.0 }, token_file = "/run/secrets/ray" }
      assert.equal("1", r.env.A)
      local k = cluster.validate(GOOD)
      assert.equal("8Gi", k.head_group.memory)
      assert.equal("3", k.worker_groups[1].env.N)
      assert.same({ from_env = "HF_TOKEN" }, k.worker_groups[1].env.HF_TOKEN)
      assert.is_true(json.is_array(k.worker_groups))
      assert.is_true(json.is_array(k.worker_groups[2].tolerations))
      -- a copy: changing it leaves the input alone
      k.worker_groups[1].name = "x"
      assert.equal("cpu", GOOD.worker_groups[1].name)
    end)

    it("names the field and the problem", function()
      invalid({ type = "local", workers = "2" }, 'workers: expected a positive integer, got "2"')
      invalid({ type = "local", workers = 0 }, "workers: expected a positive integer, got 0")
      invalid({ type = "local", wokers = 2 }, "unknown field 'wokers' (did you mean 'workers'?)")
      invalid({ type = "local", workers = 1000000 },
        "workers: 1000000 is more than the 1024 worker processes a local cluster may have")
      assert.equal(1024, cluster.validate{ type = "local", workers = 1024 }.workers)
      invalid({ type = "local", colour = 2 }, "unknown field 'colour'")
      invalid({ workers = 2 }, "type: missing (one of 'local', 'ray', 'kuberay')")
      invalid({ type = "slurm" }, "type: expected 'local', 'ray' or 'kuberay', got \"slurm\"")
      invalid("local", 'expected a cluster spec table, got "local"')
      invalid({ type = "ray" }, "address: missing (required for type 'ray')")
      invalid({ type = "ray", address = "h:8265" }, "address: 'h:8265': expected the http(s) URL of a Ray dashboard, e.g. http://head:8265")
      invalid({ type = "ray", address = "ray://h:10001" },
        "address: 'ray://h:10001': expected the http(s) URL of the Ray dashboard, e.g. http://head:8265 (ray:// client addresses are not used)")
      invalid({ type = "ray", address = "http://h:99999" }, "address: 'http://h:99999': bad host or port")
      invalid({ type = "ray", address = "http://h", ship_host = "yes" }, 'ship_host: expected true or false, got "yes"')
      invalid({ type = "ray", address = "http://h", token_env = "A", token_file = "/f" },
        "token_env and token_file are exclusive: give one")
      invalid({ type = "ray", address = "http://h", token_env = "not a name" },
        'token_env: expected the name of an environment variable, got "not a name"')
      invalid({ type = "kuberay", namespace = "Geneva" },
        'namespace: expected a DNS-1123 label (lowercase letters, digits and \'-\', at most 63), got "Geneva"')
      invalid({ type = "kuberay", ttl_seconds = -1 }, "ttl_seconds: expected a positive integer, got -1")
      invalid({ type = "kuberay", kubeconfig = 1 }, "kubeconfig: expected a non-empty string, got 1")
    end)

    it("checks groups field by field", function()
      local function kr(g) return { type = "kuberay", worker_groups = { g } } end
      invalid(kr{ name = "cpu", memory = "4GG" },
        "worker_groups[1].memory: bad quantity '4GG' (expected a Kubernetes quantity such as 4Gi or 500M)")
      invalid(kr{ name = "cpu", memory = "100m" },
        "worker_groups[1].memory: bad quantity '100m': 'm' means 0.1 byte (did you mean 100Mi?)")
      invalid(kr{ name = "cpu", memory = 0 }, "worker_groups[1].memory: expected a positive number of bytes, got 0")
      invalid(kr{ name = "cpu", memory = 4.5 }, "worker_groups[1].memory: expected a Kubernetes quantity such as 4Gi or 500M, got 4.5")
      invalid(kr{ name = "cpu", imge = "x" }, "worker_groups[1]: unknown field 'imge' (did you mean 'image'?)")
      invalid(kr{ memory = "1Gi" }, "worker_groups[1].name: missing (every worker group needs a name)")
      invalid(kr{ name = "CPU" }, 'worker_groups[1].name: expected a DNS-1123 label (lowercase letters, digits and \'-\', at most 63), got "CPU"')
      invalid(kr{ name = "cpu", num_cpus = -1 }, "worker_groups[1].num_cpus: expected a non-negative number, got -1")
      invalid(kr{ name = "cpu", num_gpus = 0.5 }, "worker_groups[1].num_gpus: expected a non-negative integer, got 0.5")
      invalid(kr{ name = "cpu", image = "my image" }, 'worker_groups[1].image: expected a container image reference, got "my image"')
      invalid(kr{ name = "cpu", replicas = 5, max_replicas = 4 },
        "worker_groups[1].replicas: 5 is outside min_replicas..max_replicas (0..4)")
      invalid(kr{ name = "cpu", min_replicas = 3, max_replicas = 2 }, "worker_groups[1]: min_replicas (3) > max_replicas (2)")
      invalid(kr{ name = "cpu", service_account = "Bad_SA" },
        'worker_groups[1].service_account: expected a DNS-1123 subdomain (lowercase letters, digits, \'-\' and \'.\'), got "Bad_SA"')
      invalid(kr{ name = "cpu", labels = { ["-bad"] = "x" } },
        "worker_groups[1].labels.-bad: bad label key '-bad' (at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit, optionally prefixed by 'dns.domain/')")
      invalid(kr{ name = "cpu", labels = { ["Bad_Prefix/x"] = "y" } },
        "worker_groups[1].labels.Bad_Prefix/x: bad label key 'Bad_Prefix/x': prefix 'Bad_Prefix' is not a DNS subdomain")
      invalid(kr{ name = "cpu", labels = { team = ("v"):rep(64) } },
        ("worker_groups[1].labels.team: bad label value '%s' (at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit)"):format(("v"):rep(64)))
      invalid(kr{ name = "cpu", node_selector = { zone = 1 } }, "worker_groups[1].node_selector.zone: expected a string, got 1")
      invalid(kr{ name = "cpu", tolerations = { { key = "a", operator = "Maybe" } } },
        "worker_groups[1].tolerations[1].operator: expected 'Equal' or 'Exists', got \"Maybe\"")
      invalid(kr{ name = "cpu", tolerations = { { key = "a", operator = "Exists", value = "v" } } },
        "worker_groups[1].tolerations[1]: operator 'Exists' takes no value")
      invalid(kr{ name = "cpu", tolerations = { { operator = "Equal", value = "v" } } },
        "worker_groups[1].tolerations[1]: an empty key needs operator 'Exists'")
      invalid(kr{ name = "cpu", tolerations = { { key = "a", effect = "NoSchedule", toleration_seconds = 5 } } },
        "worker_groups[1].tolerations[1]: toleration_seconds applies only to effect 'NoExecute'")
      invalid(kr{ name = "cpu", tolerations = { { key = "a", effect = "Never" } } },
        "worker_groups[1].tolerations[1].effect: expected 'NoSchedule', 'PreferNoSchedule' or 'NoExecute', got \"Never\"")
      invalid(kr{ name = "cpu", tolerations = { key = "a" } },
        "worker_groups[1].tolerations: expected a list of tolerations (a list), got a table")
      invalid({ type = "kuberay", worker_groups = { { name = "a" }, { name = "a" } } },
        "worker_groups[2].name: duplicate worker group name 'a' (also worker_groups[1])")
      invalid({ type = "kuberay", worker_groups = {} }, "worker_groups: expected at least one worker group")
      invalid({ type = "kuberay", head_group = { name = "head" } }, "head_group: unknown field 'name'")
      invalid({ type = "kuberay", head_group = { replicas = 1 } }, "head_group: unknown field 'replicas'")
    end)

    it("parses Kubernetes quantities", function()
      assert.equal(512 * 2^20, (sv.parse_quantity("512Mi")))
      assert.equal(4 * 2^30, (sv.parse_quantity("4Gi")))
      assert.equal(1.5e9, (sv.parse_quantity("1.5G")))
      assert.equal(1e9, (sv.parse_quantity("1e9")))
      assert.equal(0.1, (sv.parse_quantity("100m")))
      assert.is_nil((sv.parse_quantity("4GG")))
      assert.is_nil((sv.parse_quantity("Gi")))
      assert.is_nil((sv.parse_quantity(".")))
      assert.equal("1e9", cluster.validate{ type = "kuberay", head_group = { memory = "1e9" } }.head_group.memory)
      assert.equal(1048576, cluster.validate{ type = "kuberay", head_group = { memory = 1048576 } }.head_group.memory)
    end)

    it("prefixes paths with `where`", function()
      local err = raises("invalid_argument", cluster.validate, { type = "local", workers = -1 }, "clusters.dev")
      assert.equal("clusters.dev.workers: expected a positive integer, got -1", err.message)
      assert.equal("clusters.dev.workers", err.field)
    end)
  end)

  describe("secrets", function()
    it("refuses plain-string secrets and accepts references", function()
      local hint = "secrets are references: use token_env/token_file or {from_env=...}"
      invalid({ type = "ray", address = "http://h", token = "abc" }, "token: " .. hint)
      invalid({ type = "ray", address = "http://h", password = "abc" }, "password: " .. hint)
      invalid({ type = "ray", address = "http://h", client_secret = "abc" }, "client_secret: " .. hint)
      invalid({ type = "ray", address = "http://h", env = { GITHUB_TOKEN = "ghp_x" } }, "env.GITHUB_TOKEN: " .. hint)
      invalid({ type = "ray", address = "http://h", env = { AWS_SECRET_ACCESS_KEY = "x" } }, "env.AWS_SECRET_ACCESS_KEY: " .. hint)
      invalid({ type = "ray", address = "http://user:pw@h:8265" }, "address: " .. hint .. " (no credentials in the URL)")
      invalid({ type = "kuberay", head_group = { env = { PGPASSWORD = "x" } } }, "head_group.env.PGPASSWORD: " .. hint)
      invalid({ type = "ray", address = "http://h", env = { T = { from_env = "X", extra = 1 } } },
        'env.T: expected a value or a secret reference {from_env = "NAME"}, got a table')
      invalid({ type = "ray", address = "http://h", env = { T = { from_env = "1X" } } },
        'env.T.from_env: bad environment variable name "1X"')
      invalid({ type = "ray", address = "http://h", env = { ["A=B"] = "x" } }, 'env.A=B: bad environment variable name "A=B"')
      -- not secrets: words that merely contain "token"
      local ok = cluster.validate{ type = "ray", address = "http://h",
        env = { TOKENIZERS_PARALLELISM = false, GITHUB_TOKEN = { from_env = "GH" } } }
      assert.equal("false", ok.env.TOKENIZERS_PARALLELISM)
    end)

    it("knows secrets by whole words and telling parts, in any case style", function()
      local hint = "secrets are references: use token_env/token_file or {from_env=...}"
      for _, name in ipairs { "DB_PASS", "AWS_ACCESS_KEY_ID", "PRIVATE_KEY", "AUTH", "MYSQL_PWD",
                              "apiKey", "dbPassword", "SESSION_COOKIE", "HMAC_SIGNATURE", "SENTRY_DSN",
                              "BASIC_AUTH_HEADER", "ssh-key", "SIGNING.KEY", "DBPASSWORD", "MYSECRETKEY",
                              "AWSACCESSKEY", "GH_TOKENS", "JWT", "SERVICE_CREDS" } do
        assert.is_true(sv.is_secret_key(name), name)
        invalid({ type = "ray", address = "http://h", env = { [name] = "v" } }, "env." .. name .. ": " .. hint)
      end
      for _, name in ipairs { "KEYBOARD_LAYOUT", "TOKENIZERS_PARALLELISM", "AUTHOR", "MONKEY_MODE",
                              "BYPASS_CACHE", "PASSENGERS", "HOME", "LANG", "SSL_CERT_FILE", "OMP_NUM_THREADS" } do
        assert.is_false(sv.is_secret_key(name), name)
      end
      -- a number is refused under such a name, a boolean is no secret
      invalid({ type = "ray", address = "http://h", env = { DB_PASS = 1234 } }, "env.DB_PASS: " .. hint)
      local ok = cluster.validate{ type = "ray", address = "http://h", env = { AUTH = true, KEYBOARD_LAYOUT = "us",
        DATABASE_URL = "postgres://db.example:5432/app" } }
      assert.equal("true", ok.env.AUTH)
      -- whatever the name, a URL carrying a password is refused
      invalid({ type = "ray", address = "http://h", env = { DATABASE_URL = "postgres://app:hunter2@db:5432/app" } },
        "env.DATABASE_URL: " .. hint .. " (no credentials in the URL)")
    end)

    it("resolves references at use time, never storing values", function()
      local env = { A = "1", T = { from_env = "GENEVA_SPEC_SECRET" } }
      local looked = {}
      local got = cluster.resolve_env(env, function(n) looked[#looked + 1] = n return "s3cr3t" end)
      assert.same({ A = "1", T = "s3cr3t" }, got)
      assert.same({ "GENEVA_SPEC_SECRET" }, looked)
      assert.same({ from_env = "GENEVA_SPEC_SECRET" }, env.T)
      local err = raises("invalid_argument", cluster.resolve_env, env, function() return nil end)
      assert.equal("env.T: environment variable GENEVA_SPEC_SECRET is not set", err.message)
      assert.equal("tok", cluster.resolve_token({ token_env = "X" }, function() return "tok" end))
      assert.is_nil(cluster.resolve_token({}))
      local f = os.tmpname()
      child.rmtree(f)
      local h = assert(io.open(f, "w")) h:write("file-token\n") h:close()
      assert.equal("file-token", cluster.resolve_token{ token_file = f })
      os.remove(f)
      err = raises("invalid_argument", cluster.resolve_token, { token_env = "GENEVA_SURELY_UNSET_VAR" })
      assert.equal("token_env: environment variable GENEVA_SURELY_UNSET_VAR is not set", err.message)
      raises("invalid_argument", cluster.resolve_token, { token_file = f })
    end)
  end)

  describe("registry", function()
    local dir, db
    before_each(function()
      dir = child.tmpdir()
      db = geneva.connect(dir .. "/db")
    end)
    after_each(function() child.rmtree(dir) end)

    it("round trips definitions", function()
      assert.same({}, db:list_clusters())
      local norm = db:define_cluster("gpu", GOOD)
      assert.same(norm, db:get_cluster("gpu"))
      db:define_cluster("dev", { type = "local", workers = 2 })
      local list = db:list_clusters()
      assert.equal(2, #list)
      assert.equal("dev", list[1].name)
      assert.equal("local", list[1].type)
      assert.same({ type = "local", workers = 2 }, list[1].spec)
      assert.equal("gpu", list[2].name)
      assert.equal("kuberay", list[2].type)
      -- define replaces
      db:define_cluster("dev", { type = "local", workers = 3 })
      assert.equal(3, db:get_cluster("dev").workers)
      assert.is_true(db:delete_cluster("dev"))
      local spec, err = db:get_cluster("dev")
      assert.is_nil(spec)
      assert.is_true(errors.is(err, "not_found"))
      assert.equal(1, #db:list_clusters())
      -- survives a new connection
      assert.same(norm, geneva.connect(dir .. "/db"):get_cluster("gpu"))
    end)

    it("stores records atomically and rewrites them only on change", function()
      db:define_cluster("dev", { type = "local", workers = 2 })
      local path = dir .. "/db/_geneva/clusters/dev.json"
      local rec = assert(json.decode(child.read(path)))
      assert.equal("dev", rec.name)
      assert.equal("local", rec.type)
      assert.is_string(rec.created_at)
      local st = fs.stat(path)
      db:define_cluster("dev", { type = "local", workers = 2 })
      local st2 = fs.stat(path)
      assert.equal(st.ino, st2.ino)
      assert.equal(st.mtime_ns, st2.mtime_ns)
      db:define_cluster("dev", { type = "local", workers = 4 })
      local rec2 = assert(json.decode(child.read(path)))
      assert.equal(rec.created_at, rec2.created_at)
      assert.equal(4, rec2.spec.workers)
      assert.same({ "dev.json" }, fs.list(dir .. "/db/_geneva/clusters"))   -- no temp files left
    end)

    it("keeps only secret references on disk", function()
      local old = os.getenv("GENEVA_SPEC_TOKEN_VALUE")
      assert.is_nil(old)
      db:define_cluster("r", { type = "ray", address = "http://127.0.0.1:8265", token_env = "RAY_TOKEN",
        env = { TOKEN = { from_env = "X" }, MODE = "a" } })
      local raw = child.read(dir .. "/db/_geneva/clusters/r.json")
      local rec = assert(json.decode(raw))
      assert.same({ from_env = "X" }, rec.spec.env.TOKEN)
      assert.equal("RAY_TOKEN", rec.spec.token_env)
      assert.is_nil(raw:find("s3cr3t", 1, true))
    end)

    it("stores records with literal env values 0600, others with the default mode", function()
      local function mode(name) return fs.stat(dir .. "/db/_geneva/clusters/" .. name .. ".json").mode & 511 end
      db:define_cluster("lit", { type = "ray", address = "http://h", env = { MODE = "a" } })
      assert.equal(384, mode("lit"))                                -- 0600
      db:define_cluster("deep", { type = "kuberay", head_group = { env = { MODE = "a" } } })
      assert.equal(384, mode("deep"))
      db:define_cluster("refs", { type = "ray", address = "http://h", env = { T = { from_env = "X" } } })
      local p = assert(io.popen("umask"))
      local umask = tonumber(p:read("l"), 8)
      p:close()
      assert.equal(438 & ~umask, mode("refs"))                     -- 0666 less the umask
      db:define_cluster("lit", { type = "ray", address = "http://h" })   -- redefined without literals
      assert.equal(mode("refs"), mode("lit"))
      db:define_manifest("m", { env = { MODE = "a" } })
      assert.equal(384, fs.stat(dir .. "/db/_geneva/manifests/m.json").mode & 511)
    end)

    it("rejects bad names and bad specs without writing", function()
      local e = raises("invalid_argument", db.define_cluster, db, "../evil", { type = "local" })
      assert.matches("invalid cluster name '../evil'", e.message, 1, true)
      raises("invalid_argument", db.define_cluster, db, "", { type = "local" })
      raises("invalid_argument", db.define_cluster, db, ".hidden", { type = "local" })
      raises("invalid_argument", db.define_cluster, db, "ok", { type = "local", workers = 0 })
      assert.is_false(fs.exists(dir .. "/db/_geneva/clusters/ok.json"))
      -- probes return, never raise
      local spec, err = db:get_cluster("../evil")
      assert.is_nil(spec)
      assert.equal("not_found", err.code)
      spec, err = db:get_cluster(42)
      assert.is_nil(spec)
      assert.equal("not_found", err.code)
      raises("not_found", db.delete_cluster, db, "nope")
    end)
  end)

  describe("geneva cluster", function()
    local dir, uri
    before_each(function()
      dir = child.tmpdir()
      uri = dir .. "/db"
      local db = geneva.connect(uri)
      db:define_cluster("gpu", GOOD)
      db:define_cluster("dev", { type = "local", workers = 2, env = { TOKEN = { from_env = "X" } } })
    end)
    after_each(function() child.rmtree(dir) end)

    it("lists, shows and deletes with --json", function()
      local code, out = cli { "cluster", "list", "--json", "--db", uri }
      assert.equal(0, code)
      local list = assert(json.decode(out))
      assert.equal(2, #list)
      assert.equal("dev", list[1].name)
      assert.same({ from_env = "X" }, list[1].spec.env.TOKEN)
      -- a secret stored by an older version is never printed
      local path = uri .. "/_geneva/clusters/dev.json"
      local raw = child.read(path)
      child.write(path, (raw:gsub('"env": {', '"env": {\n      "DB_PASS": "hunter2",', 1)))
      for _, argv in ipairs { { "list", "--json" }, { "show", "dev", "--json" }, { "show", "dev" }, { "list" },
                              { "list", "-o", "yaml" }, { "show", "dev", "-o", "yaml" }, { "list", "-o", "wide" } } do
        code, out = cli { "cluster", "--db", uri, table.unpack(argv) }
        assert.equal(0, code)
        assert.is_nil(out:find("hunter2", 1, true), table.concat(argv, " "))
      end
      code, out = cli { "cluster", "show", "dev", "--json", "--db", uri }
      assert.equal("<redacted>", assert(json.decode(out)).spec.env.DB_PASS)
      code, out = cli { "cluster", "show", "gpu", "--db", uri, "--json" }
      assert.equal(0, code)
      local rec = assert(json.decode(out))
      assert.equal("kuberay", rec.type)
      assert.equal("cpu", rec.spec.worker_groups[1].name)
      code, out = cli { "cluster", "delete", "dev", "--db", uri, "--json" }
      assert.equal(0, code)
      assert.equal("dev", assert(json.decode(out)).deleted)
      code, out = cli { "cluster", "show", "dev", "--db", uri, "--json" }
      assert.equal(1, code)
      assert.equal("not_found", assert(json.decode(out)).error.code)
      code = cli { "cluster", "delete", "dev", "--db", uri }
      assert.equal(1, code)
    end)

    it("prints text, help and usage errors", function()
      local code, out = cli { "cluster", "list", "--db", uri, "-o", "wide" }
      assert.equal(0, code)
      assert.matches("^NAME%s+TYPE%s+SPEC%s+AGE%s+ENV%s+CREATED%s+UPDATED\n", out)
      assert.matches("dev%s+local%s+workers=2%s+%d+s%s+TOKEN%s+%d%d%d%d%-", out)
      code, out = cli { "cluster", "show", "dev", "--db", uri, "-o", "yaml" }
      assert.equal(0, code)
      local y = assert(require("geneva.yaml").load(out))
      assert.same({ from_env = "X" }, y.spec.env.TOKEN)
      assert.matches("^created_at: ", out)
      code, out = cli { "cluster", "list", "--db", uri }
      assert.equal(0, code)
      assert.matches("^NAME%s+TYPE%s+SPEC%s+AGE\n", out)
      assert.matches("dev%s+local%s+workers=2%s+%d+s\n", out)
      assert.matches("gpu%s+kuberay%s+namespace=geneva workers=cpu=2,gpu=0", out)
      code, out = cli { "cluster", "show", "gpu", "--db", uri }
      assert.equal(0, code)
      assert.matches("cluster gpu %(kuberay%)", out)
      -- the spec reads as YAML, not JSON
      assert.matches("\nnamespace: geneva\n", out)
      assert.is_nil(out:find("{", 1, true))
      code, out = cli { "cluster", "--help" }
      assert.equal(0, code)
      assert.matches("usage: geneva cluster list", out)
      local err
      code, _, err = cli { "cluster", "list" }
      assert.equal(2, code)
      assert.matches("missing %-%-db URI", err)
      code = cli { "cluster", "frob", "--db", uri }
      assert.equal(2, code)
      code = cli { "cluster", "show", "--db", uri }
      assert.equal(2, code)
      code = cli { "cluster", "list", "--db", uri, "--bogus" }
      assert.equal(2, code)
      code, out = cli { "cluster", "list", "--json", "--db", dir .. "/missing" }
      assert.equal(1, code)
      assert.equal("not_found", assert(json.decode(out)).error.code)
    end)
  end)
end)
