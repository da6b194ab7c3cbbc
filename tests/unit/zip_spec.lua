-- memcheck
local zip = require "geneva.zip"
local lcore = require "geneva.ledger.core"
local child = require "child"

local q = child.quote

local function write(p, s, mode)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
  if mode then assert(os.execute(("chmod %s %s"):format(mode, q(p)))) end
end

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local s = p:read("a")
  p:close()
  return (s:gsub("%s+$", ""))
end

local function listdir(d) return sh("cd " .. q(d) .. " && find . -mindepth 1 | sort") end

-- Writes an archive with raw names/attributes, as a hostile tool would.
-- specs: list of {name, data, attr (external attributes, optional)}
local function evil_zip(path, specs)
  local lines = { "import sys, zipfile", "z = zipfile.ZipFile(sys.argv[1], 'w')" }
  for _, s in ipairs(specs) do
    lines[#lines + 1] = ("i = zipfile.ZipInfo(%q); i.create_system = 3; i.external_attr = %d; z.writestr(i, %q)")
      :format(s[1], s[3] or (420 << 16), s[2] or "x")
  end
  lines[#lines + 1] = "z.close()"
  local py = os.tmpname()
  write(py, table.concat(lines, "\n") .. "\n")
  assert(os.execute(("python3 %s %s"):format(q(py), q(path))))
  os.remove(py)
end

describe("geneva.zip", function()
  local dir

  before_each(function()
    dir = child.tmpdir()
    write(dir .. "/hello.txt", "hello, world\n")
    write(dir .. "/run.sh", "#!/bin/sh\necho hi\n", "755")
    write(dir .. "/big.bin", string.rep("geneva ", 100000))
  end)

  after_each(function() child.rmtree(dir) end)

  local function sample(order)
    local e = {
      { name = "lib/hello.txt", path = dir .. "/hello.txt" },
      { name = "bin/run.sh", path = dir .. "/run.sh", mode = "exec" },
      { name = "big.bin", path = dir .. "/big.bin" },
      { name = "inline/data.lua", data = "return 42\n" },
    }
    if order == "reversed" then
      local r = {}
      for i = #e, 1, -1 do r[#r + 1] = e[i] end
      return r
    end
    return e
  end

  describe("create and open", function()
    it("round-trips names, sizes, crcs, modes and bytes, sorted by name", function()
      local out = dir .. "/a.zip"
      assert.is_true(zip.create(out, sample()))
      local a = assert(zip.open(out))
      local l = a:list()
      local names = {}
      for i, e in ipairs(l) do names[i] = e.name end
      assert.same({ "big.bin", "bin/run.sh", "inline/data.lua", "lib/hello.txt" }, names)
      assert.equals(700000, l[1].size)
      assert.is_true(l[1].compressed_size < 10000)
      assert.equals(13, l[4].size)
      assert.equals(420, l[4].mode)            -- 0644
      assert.equals(493, l[2].mode)            -- 0755
      assert.is_false(l[4].is_dir)
      assert.is_false(l[4].is_symlink)
      assert.equals(0xf4247453, l[4].crc)   -- zlib.crc32("hello, world\n")
      assert.equals("hello, world\n", a:read("lib/hello.txt"))
      assert.equals("return 42\n", a:read("inline/data.lua"))
      assert.equals(string.rep("geneva ", 100000), a:read("big.bin"))
      local none, msg, code = a:read("missing.txt")
      assert.is_nil(none)
      assert.equals("ZIP_ER_NOENT", code)
      assert.matches("no entry 'missing.txt'", msg, 1, true)
      a:close()
    end)

    it("writes archives that unzip -t accepts, with no extra fields and the 1980 time", function()
      local out = dir .. "/a.zip"
      assert.is_true(zip.create(out, sample()))
      assert.is_true(os.execute("unzip -tq " .. q(out) .. " >/dev/null"))
      local info = sh("unzip -Z -v " .. q(out))
      assert.not_matches("length of extra field:%s+[1-9]", info)
      assert.matches("1980 Jan 1 00:00:00", info, 1, true)
      -- the local headers too (unzip -Z shows the central directory only)
      assert.equals("0 0 0 0", sh(("python3 -c %s %s"):format(q(
        "import sys,zipfile,struct\n" ..
        "f=open(sys.argv[1],'rb');z=zipfile.ZipFile(f)\n" ..
        "r=[]\n" ..
        "for i in z.infolist():\n" ..
        " f.seek(i.header_offset+28);r.append(str(struct.unpack('<H',f.read(2))[0]))\n" ..
        "print(' '.join(r))"), q(out))))
    end)

    it("stores with method 'store' and accepts every level", function()
      local out = dir .. "/s.zip"
      assert.is_true(zip.create(out, sample(), { method = "store" }))
      local a <close> = assert(zip.open(out))
      local l = a:list()
      assert.equals(l[1].size, l[1].compressed_size)
      for level = 1, 9 do
        assert.is_true(zip.create(out, sample(), { level = level }))
        assert.is_true(os.execute("unzip -tq " .. q(out) .. " >/dev/null"))
      end
    end)

    it("writes a valid empty archive", function()
      local out = dir .. "/e.zip"
      assert.is_true(zip.create(out, {}))
      local a <close> = assert(zip.open(out))
      assert.same({}, a:list())
    end)

    it("replaces an existing archive atomically and leaves no temp file", function()
      local out = dir .. "/a.zip"
      write(out, "old")
      assert.is_true(zip.create(out, sample()))
      assert.equals("hello, world\n", assert(zip.open(out)):read("lib/hello.txt"))
      assert.not_matches("tmp", listdir(dir))
    end)
  end)

  describe("determinism", function()
    local function bytes(out, entries, opts)
      assert.is_true(zip.create(out, entries, opts))
      return child.read(out)
    end

    it("gives the same bytes whatever the input order, mtimes and source modes", function()
      local one = bytes(dir .. "/1.zip", sample())
      local two = bytes(dir .. "/2.zip", sample("reversed"))
      assert.equals(one, two)
      assert.is_true(os.execute(("touch -d '2001-02-03 04:05:06' %s/hello.txt %s/big.bin && chmod 600 %s/hello.txt")
        :format(q(dir), q(dir), q(dir))))
      assert.equals(one, bytes(dir .. "/3.zip", sample()))
      assert.equals(sh("sha256sum < " .. q(dir .. "/1.zip")), sh("sha256sum < " .. q(dir .. "/3.zip")))
    end)

    it("gives the same bytes under different time zones", function()
      local code = ([[
        local zip = require "geneva.zip"
        local d = %q
        assert(zip.create(os.getenv("OUT"), {
          { name = "lib/hello.txt", path = d .. "/hello.txt" },
          { name = "bin/run.sh", path = d .. "/run.sh", mode = 0755 },
          { name = "inline/data.lua", data = "return 42\n" },
        }))
      ]]):format(dir)
      local sums = {}
      for i, tz in ipairs({ "UTC", "America/New_York", "Asia/Kolkata" }) do
        local out = ("%s/tz%d.zip"):format(dir, i)
        local status, _, err = child.run(code, { TZ = tz, OUT = out })
        assert.equals(0, status, err)
        sums[i] = sh("sha256sum < " .. q(out))
      end
      assert.equals(sums[1], sums[2])
      assert.equals(sums[1], sums[3])
    end)
  end)

  describe(":extract", function()
    it("extracts files with their executable bit", function()
      local out = dir .. "/a.zip"
      assert.is_true(zip.create(out, sample()))
      local a <close> = assert(zip.open(out))
      assert.is_true(a:extract(dir .. "/x"))
      assert.equals("hello, world\n", child.read(dir .. "/x/lib/hello.txt"))
      assert.equals("755", sh("stat -c %a " .. q(dir .. "/x/bin/run.sh")))
      assert.equals("644", sh("stat -c %a " .. q(dir .. "/x/lib/hello.txt")))
      assert.equals("return 42\n", child.read(dir .. "/x/inline/data.lua"))
      -- extracting again over the same tree works
      assert.is_true(a:extract(dir .. "/x"))
      assert.is_true(zip.extract(out, dir .. "/y"))
      assert.equals("./big.bin\n./bin\n./bin/run.sh\n./inline\n./inline/data.lua\n./lib\n./lib/hello.txt",
        listdir(dir .. "/y"))
    end)

    it("extracts archives made by other tools, directory entries included", function()
      local out = dir .. "/py.zip"
      evil_zip(out, { { "./", "", (0x41ed << 16) | 0x10 }, { "d/", "", (0x41ed << 16) | 0x10 },
        { "d/f.txt", "ok" }, { "./e//g.txt", "ok2" } })
      local a <close> = assert(zip.open(out))
      assert.is_true(a:list()[2].is_dir)
      assert.is_false(a:list()[3].is_dir)
      assert.is_true(a:extract(dir .. "/x"))
      assert.equals("ok", child.read(dir .. "/x/d/f.txt"))
      assert.equals("ok2", child.read(dir .. "/x/e/g.txt"))
      assert.equals("./d\n./d/f.txt\n./e\n./e/g.txt", listdir(dir .. "/x"))
    end)

    local function refuses(specs, entry, why)
      local out = dir .. "/evil.zip"
      evil_zip(out, specs)
      local target = dir .. "/target"
      local a <close> = assert(zip.open(out))
      local ok, msg, code = a:extract(target)
      assert.is_nil(ok)
      assert.equals("ZIP_UNSAFE", code)
      assert.matches(("unsafe entry '%s' in %s: %s"):format(entry, out, why), msg, 1, true)
      return target
    end

    it("refuses '..' before writing anything", function()
      local target = refuses({ { "ok.txt" }, { "../escaped.txt" } }, "../escaped.txt",
        "path escapes the target directory")
      assert.is_false(child.exists(dir .. "/escaped.txt"))
      assert.is_false(child.exists(target .. "/ok.txt"))
      refuses({ { "a/../../escaped.txt" } }, "a/../../escaped.txt", "path escapes")
      assert.is_false(child.exists(dir .. "/escaped.txt"))
    end)

    it("refuses absolute names", function()
      local abs = dir .. "/abs-escaped.txt"
      refuses({ { abs } }, abs, "absolute path")
      assert.is_false(child.exists(abs))
    end)

    it("refuses symlink entries", function()
      local target = refuses({ { "link", "/etc/passwd", (0xa1ff << 16) }, { "link/x" } },
        "link", "symbolic links are not extracted")
      assert.is_false(child.exists(target .. "/link"))
    end)

    it("does not write through symlinks already in the target", function()
      local out, target, outside = dir .. "/a.zip", dir .. "/t", dir .. "/outside"
      assert(os.execute(("mkdir -p %s %s && ln -s %s %s/sub && ln -s %s/victim %s/file")
        :format(q(target), q(outside), q(outside), q(target), q(outside), q(target))))
      write(outside .. "/victim", "precious")
      assert.is_true(zip.create(out, { { name = "sub/x", data = "evil" } }))
      local a <close> = assert(zip.open(out))
      local ok, msg, code = a:extract(target)
      assert.is_nil(ok)
      assert.equals("ZIP_UNSAFE", code)
      assert.matches("unsafe entry 'sub/x'", msg, 1, true)
      assert.is_false(child.exists(outside .. "/x"))
      assert.is_true(zip.create(out, { { name = "file", data = "evil" } }))
      local b <close> = assert(zip.open(out))
      ok, msg, code = b:extract(target)
      assert.is_nil(ok)
      assert.equals("ZIP_UNSAFE", code)
      assert.matches("unsafe entry 'file'", msg, 1, true)
      assert.equals("precious", child.read(outside .. "/victim"))
      assert.equals("./victim", listdir(outside))
    end)
  end)

  describe("bombs", function()
    local MiB = 1024 * 1024

    -- an archive whose headers (local and central) claim `claim` bytes for
    -- an entry that inflates to `real` zeros, as a hostile tool would write
    local function lying_zip(path, real, claim)
      local py = os.tmpname()
      write(py, ([[
import struct, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("zeros.bin", bytes(%d))
b = bytearray(open(sys.argv[1], "rb").read())
for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
    i = b.find(sig)
    struct.pack_into("<I", b, i + off, %d)
open(sys.argv[1], "wb").write(b)
]]):format(real, claim))
      assert(os.execute(("python3 %s %s"):format(q(py), q(path))))
      os.remove(py)
    end

    local function refused(out, target, opts, pattern)
      local a <close> = assert(zip.open(out))
      local ok, msg, code = a:extract(target, opts)
      assert.is_nil(ok)
      assert.equals("ZIP_LIMIT", code)
      assert.matches(pattern, msg)
      assert.matches(out, msg, 1, true)                 -- names the archive
      return msg
    end

    it("refuses declared sizes past max_ratio or max_size before writing anything", function()
      local out, target = dir .. "/bomb.zip", dir .. "/t"
      assert.is_true(zip.create(out, { { name = "a.txt", data = "fine" },
        { name = "zeros.bin", data = string.rep("\0", 4 * MiB) } }, { level = 9 }))
      assert.is_true(#child.read(out) < 10000)
      refused(out, target, nil, "entry 'zeros.bin' in .* inflates 4194304 bytes from %d+, more than 100:1 %(max_ratio%)")
      assert.is_false(child.exists(target .. "/a.txt"))
      assert.is_true(zip.extract(out, target, { max_ratio = 10000 }))   -- overridable
      assert.equals(4 * MiB, #child.read(target .. "/zeros.bin"))

      local entries = {}
      for i = 1, 3 do entries[i] = { name = "z" .. i, data = string.rep("\0", MiB) } end
      assert.is_true(zip.create(out, entries))
      refused(out, dir .. "/t2", { max_size = 2 * MiB, max_ratio = math.huge },
        "declares more than 2097152 bytes %(max_size%)")
      assert.is_false(child.exists(dir .. "/t2"))
      local a <close> = assert(zip.open(out))
      local v, msg, code = a:read("z1", { max_size = MiB - 1, max_ratio = math.huge })
      assert.is_nil(v)
      assert.equals("ZIP_LIMIT", code)
      assert.matches("max_size", msg)
      assert.equals(MiB, #a:read("z1", { max_ratio = math.huge }))
      -- small entries are let through whatever their ratio
      assert.is_true(zip.create(out, { { name = "z", data = string.rep("\0", 100000) } }))
      assert.is_true(zip.extract(out, dir .. "/t3"))
    end)

    it("counts the bytes really inflated: declared sizes can lie", function()
      local out = dir .. "/liar.zip"
      lying_zip(out, 8 * MiB, 1000)
      assert.equals(1000, (zip.open(out)):list()[1].size)
      local target = dir .. "/t"
      refused(out, target, { max_size = MiB, max_ratio = math.huge }, "unpacks to more than 1048576 bytes %(max_size%)")
      assert.equals("", listdir(target))                 -- the partial file is removed
      refused(out, dir .. "/t2", nil, "entry 'zeros.bin' in .* inflates %d+ bytes from %d+, more than 100:1")
      assert.equals("", listdir(dir .. "/t2"))
    end)

    it("checks its options", function()
      local out = dir .. "/ok.zip"
      assert.is_true(zip.create(out, { { name = "a", data = "a" } }))
      local a <close> = assert(zip.open(out))
      assert.has_error(function() a:extract(dir .. "/t", { max_size = 0 }) end, "bad argument #2 to 'extract' (max_size must be a positive integer (bytes))")
      assert.has_error(function() a:extract(dir .. "/t", { max_ratio = 0.5 }) end)
      assert.has_error(function() a:read("a", { max_size = "1" }) end)
    end)
  end)

  describe("bad input", function()
    it("reports a missing source file", function()
      local out = dir .. "/a.zip"
      write(out, "old")
      local ok, msg, code = zip.create(out, { { name = "x", path = dir .. "/nope" } })
      assert.is_nil(ok)
      assert.equals("ENOENT", code)
      assert.matches(dir .. "/nope: No such file", msg, 1, true)
      assert.equals("old", child.read(out))       -- untouched
      assert.not_matches("tmp", listdir(dir))
    end)

    it("rejects duplicate, absolute, '..' and empty names, naming the entry", function()
      local function bad(entries, pattern, want)
        local ok, msg, code = zip.create(dir .. "/a.zip", entries)
        assert.is_nil(ok)
        assert.equals(want or "ZIP_BAD_NAME", code)
        assert.matches(pattern, msg, 1, true)
      end
      bad({ { name = "a", data = "1" }, { name = "b", data = "" }, { name = "a", data = "2" } },
        "duplicate entry name 'a' (entries #1 and #3)", "ZIP_DUPLICATE")
      bad({ { name = "/etc/x", data = "" } }, "bad entry name '/etc/x' (entry #1): absolute name")
      bad({ { name = "ok", data = "" }, { name = "a/../b", data = "" } }, "'a/../b' (entry #2): '..' path component")
      bad({ { name = "", data = "" } }, "bad entry name '' (entry #1): empty name")
      bad({ { name = "a//b", data = "" } }, "empty path component")
      assert.is_false(child.exists(dir .. "/a.zip"))
    end)

    it("raises on misuse", function()
      local out = dir .. "/a.zip"
      assert.has_error(function() zip.create(nil, {}) end)
      assert.has_error(function() zip.create(out, "x") end)
      assert.has_error(function() zip.create(out, { "x" }) end)
      assert.has_error(function() zip.create(out, { { name = "a" } }) end)
      assert.has_error(function() zip.create(out, { { name = "a", data = "", path = "/x" } }) end)
      assert.has_error(function() zip.create(out, { { name = 1, data = "" } }) end)
      assert.has_error(function() zip.create(out, { { name = "a", data = "", mode = "rwx" } }) end)
      assert.has_error(function() zip.create(out, {}, { level = 0 }) end)
      assert.has_error(function() zip.create(out, {}, { method = "bzip2" }) end)
    end)

    it("stops on SIGINT and removes the temp file", function()
      assert(os.execute(("head -c 16777216 /dev/urandom > %s/rand.bin"):format(q(dir))))
      local code = ([[
        local zip = require "geneva.zip"
        local entries = {}
        for i = 1, 12 do entries[i] = { name = "r" .. i, path = %q } end
        os.execute("(sleep 0.2; kill -INT $PPID) &")
        local ok, msg, code = zip.create(%q, entries, { level = 9 })
        print(ok, msg, code)   -- not reached: the host raises the interrupt
      ]]):format(dir .. "/rand.bin", dir .. "/r.zip")
      local status, out, err = child.run(code)
      assert.equals(130, status, err)
      assert.equals("", out)
      assert.matches("interrupted", err)
      assert.equals("./big.bin\n./hello.txt\n./rand.bin\n./run.sh", listdir(dir))
    end)

    it("reports archives that are missing or not zips", function()
      local a, msg, code = zip.open(dir .. "/hello.txt")
      assert.is_nil(a)
      assert.equals("ZIP_ER_NOZIP", code)
      assert.matches("hello.txt: Not a zip archive", msg, 1, true)
      a, msg, code = zip.open(dir .. "/none.zip")
      assert.is_nil(a)
      assert.equals("ENOENT", code)
      assert.matches("none.zip: No such file", msg, 1, true)
    end)
  end)

  describe("lifetime", function()
    local out
    before_each(function()
      out = dir .. "/a.zip"
      assert.is_true(zip.create(out, sample()))
    end)

    it("closes idempotently and refuses use after close", function()
      local a = assert(zip.open(out))
      assert.matches("^geneva.zip.Archive %(", tostring(a))
      assert.is_true(a:close())
      assert.is_true(a:close())
      assert.is_true(a:is_closed())
      assert.equals("geneva.zip.Archive (closed)", tostring(a))
      for _, m in ipairs({ "list", "read", "extract" }) do
        assert.has_error(function() a[m](a, "x") end, "attempt to use a closed geneva.zip.Archive")
      end
    end)

    it("closes at the end of a <close> scope", function()
      local keep
      do
        local a <close> = assert(zip.open(out))
        keep = a
        assert.is_false(a:is_closed())
      end
      assert.is_true(keep:is_closed())
    end)

    it("is collected when unreferenced", function()
      local weak = setmetatable({}, { __mode = "v" })
      weak[1] = assert(zip.open(out))
      collectgarbage()
      collectgarbage()
      assert.is_nil(weak[1])
    end)

    it("is tracked by the ledger and closed with its scope", function()
      local function zips()
        local n = 0
        for _, r in ipairs(lcore.list()) do if r.kind == "zip" then n = n + 1 end end
        return n
      end
      local before = zips()
      local s = lcore.scope("zip-test")
      local prev = s:activate()
      local a = assert(zip.open(out))
      prev:activate()
      assert.equals(before + 1, zips())
      assert.is_true(s:close())
      assert.is_true(a:is_closed())
      assert.equals(before, zips())
      assert.is_true(a:close())
    end)
  end)
end)
