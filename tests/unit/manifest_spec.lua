-- Specs for manifests and packaging: module resolution, globs, the memcheck
-- content-addressed zip and its stat cache, ship_host records, the size
-- cap, and `geneva manifest` on the command line.
local geneva = require "geneva"
local manifest = require "geneva.context.manifest"
local errors = require "geneva.errors"
local json = require "geneva.json"
local zip = require "geneva.zip"
local fs = require "geneva.fs"
local child = require "child"

local q = child.quote

local raises = require("expect").raises

local write = child.write

-- runs `geneva ARGS...`; returns exit code, stdout, stderr
local cli = child.cli

-- (ino, mtime_ns, ctime_ns, size) of each path, to prove nothing was written
local function snapshot(paths)
  local s = {}
  for _, p in ipairs(paths) do
    local st = fs.stat(p)
    s[p] = st and { st.ino, st.mtime_ns, st.ctime_ns, st.size } or false
  end
  return s
end

local function names_in(zpath)
  local a <close> = assert(zip.open(zpath))
  local out = {}
  for _, e in ipairs(a:list()) do out[#out + 1] = e.name end
  return out
end

describe("geneva.context.manifest", function()
  local dir, proj, db, old_path, old_cwd, old_racy

  before_each(function()
    dir = child.tmpdir()
    proj = dir .. "/proj"
    write(proj .. "/mods/feats.lua", "return { words = function(s) return #s end }\n")
    write(proj .. "/mods/pkg/init.lua", "return { name = 'pkg' }\n")
    write(proj .. "/mods/pkg/util.lua", "return 1\n")
    write(proj .. "/data/vocab.txt", ("word\n"):rep(1000))
    write(proj .. "/data/sub/model.bin", ("\0\1\2\3"):rep(5000))
    write(proj .. "/data/.secret", "hidden\n")
    write(proj .. "/conf/a.yaml", "a: 1\n")
    write(proj .. "/conf/deep/b.yaml", "b: 2\n")
    old_path = package.path
    package.path = proj .. "/mods/?.lua;" .. proj .. "/mods/?/init.lua;" .. package.path
    old_cwd = assert(fs.getcwd())
    old_racy = manifest.RACY_NS
    db = geneva.connect(dir .. "/db")
  end)

  after_each(function()
    package.path = old_path
    manifest.RACY_NS = old_racy
    child.rmtree(dir)
  end)

  local function spec(extra)
    local s = { modules = { "feats", "pkg", "pkg.util" }, files = { "data", "conf/**/*.yaml" }, base_dir = proj }
    for k, v in pairs(extra or {}) do s[k] = v end
    return s
  end

  local function zpath(rec) return dir .. "/db/" .. rec.package end

  describe("packaging", function()
    it("resolves modules as require does and expands globs", function()
      local rec = db:define_manifest("dev", spec())
      local paths = {}
      for _, f in ipairs(rec.files) do paths[#paths + 1] = f.path end
      assert.same({ "conf/a.yaml", "conf/deep/b.yaml", "data/sub/model.bin", "data/vocab.txt",
                    "lua/feats.lua", "lua/pkg/init.lua", "lua/pkg/util.lua" }, paths)
      assert.same(paths, names_in(zpath(rec)))
      assert.equal(7, rec.file_count)
      local total = 0
      for _, f in ipairs({ "conf/a.yaml", "conf/deep/b.yaml", "data/sub/model.bin", "data/vocab.txt",
                           "mods/feats.lua", "mods/pkg/init.lua", "mods/pkg/util.lua" }) do
        total = total + fs.stat(proj .. "/" .. f).size
      end
      assert.equal(total, rec.content_size)
      assert.equal(fs.sha256_file(proj .. "/data/vocab.txt"), rec.files[4].sha256)
      -- the zip unpacks to what a worker requires
      local out = dir .. "/unpacked"
      assert(zip.extract(zpath(rec), out))
      assert.equal(child.read(proj .. "/mods/pkg/init.lua"), child.read(out .. "/lua/pkg/init.lua"))
      -- unzip(1) accepts the archive
      assert.is_true(os.execute("unzip -tq " .. q(zpath(rec)) .. " >/dev/null"))
    end)

    it("names what cannot be resolved", function()
      local e = raises("invalid_argument", db.define_manifest, db, "x", { modules = { "feats", "no_such_mod" } })
      assert.equal("modules[2]: module 'no_such_mod' not found on package.path", e.message)   -- one line
      e = raises("invalid_argument", db.define_manifest, db, "x", { files = { "*.nothing" }, base_dir = proj })
      assert.equal(("files[1]: '*.nothing' matches no file (relative to %s)"):format(fs.realpath(proj)), e.message)
      e = raises("invalid_argument", db.define_manifest, db, "x", { files = { "../etc/passwd" } })
      assert.equal("files[1]: '../etc/passwd' leaves the base directory: set base_dir", e.message)
      e = raises("invalid_argument", db.define_manifest, db, "x", { files = { "/etc/passwd" } })
      assert.equal("files[1]: '/etc/passwd' is absolute: files are relative to base_dir (set base_dir)", e.message)
      e = raises("invalid_argument", db.define_manifest, db, "x", { modules = { "a..b" } })
      assert.equal("modules[1]: bad module name 'a..b'", e.message)
      e = raises("invalid_argument", db.define_manifest, db, "x", { modluse = { "feats" } })
      assert.equal("unknown field 'modluse' (did you mean 'modules'?)", e.message)
      e = raises("invalid_argument", db.define_manifest, db, "x", { rocks = { "lpeg" } })
      assert.matches("^rocks: not supported yet", e.message)
      e = raises("invalid_argument", db.define_manifest, db, "x", { modules = { "feats" }, name = "y" })
      assert.equal("name: 'y' differs from the manifest's name 'x'", e.message)
      e = raises("invalid_argument", db.define_manifest, db, "x", { env = { DB_PASSWORD = "hunter2" } })
      assert.equal("env.DB_PASSWORD: secrets are references: use token_env/token_file or {from_env=...}", e.message)
      raises("invalid_argument", db.define_manifest, db, "bad/name", { modules = { "feats" } })
      -- nothing was recorded by the failures
      assert.same({}, db:list_manifests())
    end)

    it("refuses two sources for one path", function()
      write(proj .. "/lua/feats.lua", "return 'other'\n")
      local e = raises("invalid_argument", db.define_manifest, db, "x",
        { modules = { "feats" }, files = { "lua/*.lua" }, base_dir = proj })
      assert.matches("^files%[1%]: 'lua/feats.lua' would be packaged twice", e.message)
      -- the same file through two patterns is fine
      local rec = db:define_manifest("y", { files = { "data/*.txt", "data/vocab.*" }, base_dir = proj })
      assert.equal(1, rec.file_count)
    end)

    it("takes '.', '**' and directory patterns, skipping hidden files", function()
      local function paths(files)
        local rec = db:define_manifest("p", { files = files, base_dir = proj .. "/data" })
        local out = {}
        for _, f in ipairs(rec.files) do out[#out + 1] = f.path end
        return out
      end
      assert.same({ "sub/model.bin", "vocab.txt" }, paths{ "." })
      assert.same({ "sub/model.bin", "vocab.txt" }, paths{ "**" })
      assert.same({ "sub/model.bin" }, paths{ "**/*.bin" })
      assert.same({ "sub/model.bin" }, paths{ "./sub" })
      assert.same({ "sub/model.bin", "vocab.txt" }, paths{ "*.txt", "sub/." })
    end)

    it("globs relative to the current directory without base_dir", function()
      local _, out = child.cli({ "-e", ([[
        local db = require("geneva").connect(%q)
        local rec = db:define_manifest("cwd", { files = { "conf/*.yaml" } })
        io.write(rec.files[1].path)
      ]]):format(dir .. "/db") }, { cwd = proj })
      assert.equal("conf/a.yaml", out)
    end)

    it("is deterministic: same inputs, same checksum and bytes; one byte changes it", function()
      local a = db:define_manifest("dev", spec())
      local db2 = geneva.connect(dir .. "/db2")
      local b = db2:define_manifest("other", spec())
      assert.equal(a.checksum, b.checksum)
      assert.equal(child.read(zpath(a)), child.read(dir .. "/db2/" .. b.package))
      assert.matches("^%x+$", a.checksum)
      assert.equal(64, #a.checksum)
      assert.equal("_geneva/packages/" .. a.checksum .. ".zip", a.package)
      assert.equal(fs.stat(zpath(a)).size, a.size)
      -- one byte
      local data = child.read(proj .. "/data/vocab.txt")
      write(proj .. "/data/vocab.txt", data:sub(1, -2) .. "X")
      local c = db:define_manifest("dev", spec())
      assert.not_equal(a.checksum, c.checksum)
      assert.is_true(fs.exists(zpath(c)))
      assert.is_true(fs.exists(zpath(a)))   -- packages are kept: others may share them
      assert.equal(a.created_at, c.created_at)
      assert.is_true(os.execute("unzip -tq " .. q(zpath(c)) .. " >/dev/null"))
    end)

    it("writes nothing when re-defined unchanged or after a touch", function()
      manifest.RACY_NS = 0   -- let the cache take files created just now
      local rec = db:define_manifest("dev", spec())
      local watched = { zpath(rec), dir .. "/db/_geneva/manifests/dev.json",
                        dir .. "/db/_geneva/packages/stat-cache.json" }
      assert.is_true(fs.exists(watched[3]))
      local before = snapshot(watched)
      local listing = fs.list(dir .. "/db/_geneva/packages")
      local again = db:define_manifest("dev", spec())
      assert.equal(rec.checksum, again.checksum)
      assert.same(before, snapshot(watched))
      -- touch every file: new mtimes and ctimes, same bytes
      for _, f in ipairs({ "data/vocab.txt", "data/sub/model.bin", "mods/feats.lua", "conf/a.yaml" }) do
        assert(fs.utime(proj .. "/" .. f, 1e9, 1e9))
      end
      local touched = db:define_manifest("dev", spec())
      assert.equal(rec.checksum, touched.checksum)
      assert.same(before, snapshot(watched))
      assert.same(listing, fs.list(dir .. "/db/_geneva/packages"))
      -- with the default racy window, fresh files are hashed, not cached, and still nothing is written
      manifest.RACY_NS = old_racy
      write(proj .. "/data/new.txt", "fresh\n")
      local fresh = db:define_manifest("dev", spec())
      local watched2 = { zpath(fresh), dir .. "/db/_geneva/manifests/dev.json", watched[3] }
      local before2 = snapshot(watched2)
      db:define_manifest("dev", spec())
      assert.same(before2, snapshot(watched2))
    end)

    it("does not re-hash files whose stat is unchanged", function()
      manifest.RACY_NS = 0
      local rec = db:define_manifest("dev", spec())
      local cpath = dir .. "/db/_geneva/packages/stat-cache.json"
      local cache = assert(json.decode(child.read(cpath)))
      local key = fs.realpath(proj .. "/data") .. "/vocab.txt"
      assert.equal(rec.files[4].sha256, cache.entries[key][6])
      -- a lie in the cache is believed while the stat matches...
      cache.entries[key][6] = ("0"):rep(64)
      write(cpath, json.encode(cache))
      local lied = db:define_manifest("dev", spec())
      assert.equal(("0"):rep(64), lied.files[4].sha256)
      -- ...and dropped as soon as the file's stat changes
      assert(fs.utime(proj .. "/data/vocab.txt", 1e9, 1e9))
      local fixed = db:define_manifest("dev", spec())
      assert.equal(rec.checksum, fixed.checksum)
    end)

    it("keeps a copy in local_zip_output_dir", function()
      local out = dir .. "/zips"
      local rec = db:define_manifest("dev", spec{ local_zip_output_dir = out })
      assert.equal(child.read(zpath(rec)), child.read(out .. "/" .. rec.checksum .. ".zip"))
      assert.equal(out, rec.spec.local_zip_output_dir)
    end)

    it("stores env with secret references only", function()
      local rec = db:define_manifest("dev", spec{ env = { MODE = "fast", TOKEN = { from_env = "X" } } })
      assert.same({ MODE = "fast", TOKEN = { from_env = "X" } }, rec.spec.env)
      local raw = child.read(dir .. "/db/_geneva/manifests/dev.json")
      assert.same({ from_env = "X" }, assert(json.decode(raw)).spec.env.TOKEN)
    end)
  end)

  describe("ship_host", function()
    it("bundles the binary and records what it needs", function()
      local rec = db:define_manifest("host", { modules = { "feats" }, ship_host = true })
      local h = rec.host
      assert.equal("linux", h.os)
      local p = io.popen("uname -m")
      assert.equal(p:read("l"), h.arch)
      p:close()
      assert.matches("^%d+%.%d+", h.glibc_min)
      assert.truthy(table.concat(h.libs, " "):find("libc.so.6", 1, true))
      assert.truthy(table.concat(h.libs, " "):find("liblua5.4.so.0", 1, true))
      local a <close> = assert(zip.open(zpath(rec)))
      local modes = {}
      for _, e in ipairs(a:list()) do modes[e.name] = e.mode end
      assert.truthy(modes["bin/geneva"])
      assert.equal(493, modes["bin/geneva"] & 511)   -- 0755
      for _, so in ipairs(h.bundled) do
        assert.truthy(modes["lib/" .. so], so)
        assert.is_nil(so:match("^libc%.so"))
      end
      assert.equal(fs.sha256_file(require("geneva.proc").exe()),
        (function() for _, f in ipairs(rec.files) do if f.path == "bin/geneva" then return f.sha256 end end end)())
      -- this host passes its own check
      assert.is_true(manifest.check_host(rec))
      -- others do not, with a clear message
      local e = raises("unavailable", manifest.check_host, rec, { os = "linux", arch = "aarch64", glibc = "2.40" })
      assert.equal(("package 'host' built for linux/%s glibc %s; this worker is linux/aarch64 glibc 2.40")
        :format(h.arch, h.glibc_min), e.message)
      e = raises("unavailable", manifest.check_host, rec, { os = "linux", arch = h.arch, glibc = "2.1" })
      assert.matches("this worker is linux/" .. h.arch .. " glibc 2.1$", e.message)
      -- packages without ship_host run anywhere
      assert.is_true(manifest.check_host({ name = "plain" }, { os = "linux", arch = "s390x" }))
      -- glibc_min covers the binary and every bundled library
      local elf = require "geneva.context.elf"
      local own = elf.glibc_min(assert(elf.parse(child.read(require("geneva.proc").exe()))))
      assert.is_true(elf.version_cmp(h.glibc_min, own) >= 0)
    end)

    it("parses ELF files defensively", function()
      local elf = require "geneva.context.elf"
      local info = assert(elf.parse(child.read(require("geneva.proc").exe())))
      assert.truthy(#info.needed > 0)
      assert.is_nil((elf.parse("not an elf")))
      local none, msg = elf.parse("\127ELF\2\1" .. ("x"):rep(30))
      assert.is_nil(none)
      assert.matches("^malformed ELF file", msg)
      assert.equal(1, elf.version_cmp("2.34", "2.4"))
      assert.equal(0, elf.version_cmp("2.3", "2.3.0"))
      assert.equal("2.36", elf.max_glibc{ "GLIBC_2.2.5", "GLIBC_2.36", "GLIBC_PRIVATE", "GLIBC_2.4" })
    end)

    it("reads the local host", function()
      local host = manifest.local_host()
      assert.equal("linux", host.os)
      assert.matches("^%d+%.%d+", host.glibc)
      local p = io.popen("getconf GNU_LIBC_VERSION")
      local v = p:read("l")
      p:close()
      assert.equal(v:match("(%d+%.%d+)"), host.glibc)
    end)
  end)

  describe("check_size", function()
    it("refuses packages over 100 MiB for ray and kuberay", function()
      local big = { name = "big", size = 101 * 1048576 }
      local e = raises("invalid_argument", manifest.check_size, big, "ray")
      assert.matches("^manifest 'big': package is 101.0 MiB, over Ray's 100 MiB upload limit", e.message)
      raises("invalid_argument", manifest.check_size, big, "kuberay")
      assert.equal(big, manifest.check_size(big, "local"))
      local ok = { name = "ok", size = 100 * 1048576 }
      assert.equal(ok, manifest.check_size(ok, "ray"))
    end)
  end)

  describe("registry and CLI", function()
    it("round trips, probes and deletes", function()
      local rec = db:define_manifest("dev", spec())
      assert.same(rec, db:get_manifest("dev"))
      db:define_manifest("alt", { modules = { "feats" } })
      local list = db:list_manifests()
      assert.equal(2, #list)
      assert.equal("alt", list[1].name)
      assert.equal("dev", list[2].name)
      local none, err = db:get_manifest("nope")
      assert.is_nil(none)
      assert.equal("not_found", err.code)
      none, err = db:get_manifest("../x")
      assert.is_nil(none)
      assert.equal("not_found", err.code)
      assert.is_true(db:delete_manifest("alt"))
      raises("not_found", db.delete_manifest, db, "alt")
      assert.equal(1, #db:list_manifests())
    end)

    it("geneva manifest list|show|delete", function()
      local rec = db:define_manifest("dev", spec())
      local uri = dir .. "/db"
      local code, out = cli { "manifest", "show", "dev", "--json", "--db", uri }
      assert.equal(0, code)
      local shown = assert(json.decode(out))
      assert.equal(rec.checksum, shown.checksum)
      assert.equal(7, #shown.files)
      assert.equal("lua/feats.lua", shown.files[5].path)
      assert.is_number(shown.files[5].size)
      assert.equal(64, #shown.files[5].sha256)
      code, out = cli { "manifest", "show", "dev", "--db", uri }
      assert.equal(0, code)
      assert.truthy(out:find("checksum " .. rec.checksum, 1, true))
      assert.truthy(out:find("data/sub/model.bin", 1, true))
      code, out = cli { "manifest", "list", "--json", "--db", uri }
      assert.equal(0, code)
      local list = assert(json.decode(out))
      assert.equal(1, #list)
      assert.equal(rec.checksum, list[1].checksum)
      code, out = cli { "manifest", "list", "--db", uri }
      assert.equal(0, code)
      assert.matches("^NAME%s+CHECKSUM%s+FILES%s+SIZE%s+AGE\ndev%s+" .. rec.checksum:sub(1, 12), out)
      code, out = cli { "manifest", "show", "nope", "--json", "--db", uri }
      assert.equal(1, code)
      assert.equal("not_found", assert(json.decode(out)).error.code)
      code = cli { "manifest", "show", "--db", uri }
      assert.equal(2, code)
      code, out = cli { "manifest", "--help" }
      assert.equal(0, code)
      assert.matches("usage: geneva manifest", out)
      code = cli { "manifest", "delete", "dev", "--db", uri }
      assert.equal(0, code)
      assert.is_nil((db:get_manifest("dev")))
    end)
  end)
end)
