-- memcheck
local fs = require "geneva.fs"
local child = require "child"

local q = child.quote

-- Starts `geneva -e code` in the background; returns the pipe to its stdout.
local function spawn(code)
  return assert(io.popen(("%s -e %s"):format(q(child.bin), q(code)), "r"))
end

local function sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  p:close()
  return out
end

-- Waits (up to 10 s) until path exists.
local function wait_for(path)
  for _ = 1, 1000 do
    if fs.exists(path) then return true end
    os.execute("sleep 0.01")
  end
  return false
end

describe("geneva.fs", function()
  local dir
  before_each(function() dir = child.tmpdir() end)
  after_each(function() child.rmtree(dir) end)

  describe("directories", function()
    it("mkdir_p creates parents and accepts existing dirs", function()
      assert.is_true(fs.mkdir_p(dir .. "/a/b//c/"))
      assert.equals("dir", fs.stat(dir .. "/a/b/c").type)
      assert.is_true(fs.mkdir_p(dir .. "/a/b"))
      assert.is_true(fs.write(dir .. "/f", "x"))
      local ok, msg, code = fs.mkdir_p(dir .. "/f/g")
      assert.is_nil(ok)
      assert.equals("ENOTDIR", code)
      assert.matches("/f'", msg)
      assert.is_true(fs.mkdir_p(dir .. "/m", tonumber("700", 8)))
      assert.equals(tonumber("700", 8), fs.stat(dir .. "/m").mode)
    end)

    it("list gives sorted names without . and ..", function()
      for _, n in ipairs { "b", "a.txt", "a", "C", ".hidden" } do fs.write(dir .. "/" .. n, "") end
      assert.same({ ".hidden", "C", "a", "a.txt", "b" }, fs.list(dir))
      local ok, msg, code = fs.list(dir .. "/missing")
      assert.is_nil(ok)
      assert.equals("ENOENT", code)
      assert.matches("missing", msg)
    end)

    it("walk lists files recursively, sorted, without following symlinked dirs", function()
      assert(fs.mkdir_p(dir .. "/t/a/b"))
      assert(fs.mkdir_p(dir .. "/outside/deep"))
      fs.write(dir .. "/outside/deep/secret", "s")
      fs.write(dir .. "/t/a/b/z", "")
      fs.write(dir .. "/t/a.txt", "")
      fs.write(dir .. "/t/a/y", "")
      assert(fs.symlink(dir .. "/outside", dir .. "/t/link"))
      assert.same({ "a.txt", "a/b/z", "a/y", "link" }, fs.walk(dir .. "/t"))
      assert.same({ "a", "a.txt", "a/b", "a/b/z", "a/y", "link" },
        fs.walk(dir .. "/t", { dirs = true }))
      local ok, _, code = fs.walk(dir .. "/nope")
      assert.is_nil(ok)
      assert.equals("ENOENT", code)
    end)

    it("glob matches with braces and ** across levels", function()
      assert(fs.mkdir_p(dir .. "/src/x/y"))
      for _, f in ipairs { "src/a.lua", "src/x/b.lua", "src/x/y/c.lua", "src/x/y/d.c",
                           "src/top.c", "readme" } do
        fs.write(dir .. "/" .. f, "")
      end
      assert(fs.mkdir_p(dir .. "/src/.git"))
      fs.write(dir .. "/src/.git/e.lua", "")
      local d = dir .. "/"
      assert.same({ d .. "src/a.lua" }, fs.glob(dir .. "/src/*.lua"))
      assert.same({ d .. "src/a.lua", d .. "src/top.c" }, fs.glob(dir .. "/src/*.{lua,c}"))
      assert.same({ d .. "src/a.lua", d .. "src/x/b.lua", d .. "src/x/y/c.lua" },
        fs.glob(dir .. "/src/**/*.lua"))
      assert.same({ d .. "src/a.lua", d .. "src/top.c", d .. "src/x/b.lua",
                    d .. "src/x/y/c.lua", d .. "src/x/y/d.c" },
        fs.glob(dir .. "/src/**/*.{lua,c}"))
      assert.same({ d .. "src/x/y/c.lua", d .. "src/x/y/d.c" }, fs.glob(dir .. "/*/**/y/*"))
      assert.same({ d .. "src/x/b.lua", d .. "src/x/y", d .. "src/x/y/c.lua",
                    d .. "src/x/y/d.c" }, fs.glob(dir .. "/src/x/**"))
      assert.same({}, fs.glob(dir .. "/nothing/**/*.lua"))
      -- relative patterns give relative paths
      local out = sh(("cd %s && %s -e %s"):format(q(dir), q(child.bin), q(
        [[io.write(table.concat(require("geneva.fs").glob("**/y/*.{c,lua}"), " "))]])))
      assert.equals("src/x/y/c.lua src/x/y/d.c", out)
      assert.same({}, fs.glob(dir .. "/*.zzz"))
      assert.has_error(function() fs.glob(42) end)
    end)

    it("core.sort raises on a table whose __len lies (no buffer overflow)", function()
      local core = require "geneva.fs.core"
      -- 2^61 * sizeof(str_ref) wraps to 0 bytes in size_t
      local t = setmetatable({ "b", "a", "c" }, { __len = function() return 1 << 61 end })
      assert.has_error(function() core.sort(t) end, "bad argument #1 to 'sort' (too many elements)")
      assert.same({ "a", "b", "c" }, core.sort({ "b", "c", "a" }))
    end)
  end)

  describe("stat", function()
    it("reports type, size, mode, times and identity", function()
      local p = dir .. "/f"
      assert(fs.write(p, "hello", { mode = tonumber("640", 8) }))
      assert(fs.utime(p, 1000000000.25, 1700000000.5))
      local st = fs.stat(p)
      assert.equals("file", st.type)
      assert.equals(5, st.size)
      assert.equals(tonumber("640", 8) & ~tonumber(sh("umask"), 8) & tonumber("640", 8), st.mode)
      assert.equals(1700000000.5, st.mtime)
      assert.equals(1700000000500000000, st.mtime_ns)
      assert.is_true(math.type(st.ctime_ns) == "integer" and st.ctime_ns > 0)
      assert.is_true(st.ino > 0 and st.nlink == 1)
      assert.equals("number", type(st.dev))
      assert.equals("number", type(st.uid))
      assert(fs.link(p, dir .. "/g"))
      local st2 = fs.stat(dir .. "/g")
      assert.equals(st.ino, st2.ino)
      assert.equals(2, st2.nlink)
      assert.equals("dir", fs.stat(dir).type)
    end)

    it("follows symlinks unless follow=false", function()
      fs.write(dir .. "/target", "abc")
      assert(fs.symlink("target", dir .. "/ln"))
      assert.equals("file", fs.stat(dir .. "/ln").type)
      assert.equals("link", fs.stat(dir .. "/ln", { follow = false }).type)
      assert(fs.symlink("nowhere", dir .. "/dangling"))
      assert.is_false(fs.exists(dir .. "/dangling"))
      assert.is_true(fs.exists(dir .. "/ln"))
    end)

    it("returns nil, msg, ENOENT for a missing path", function()
      local ok, msg, code = fs.stat(dir .. "/missing")
      assert.is_nil(ok)
      assert.equals("ENOENT", code)
      assert.matches("stat '.*/missing': No such file", msg)
      assert.is_false(fs.exists(dir .. "/missing"))
    end)
  end)

  describe("files", function()
    it("write, append and read round trip binary data", function()
      local data = ("\0\1\255abc"):rep(100000)
      assert.is_true(fs.write(dir .. "/b", data))
      assert.equals(data, fs.read(dir .. "/b"))
      assert.is_true(fs.append(dir .. "/b", "tail"))
      assert.equals(data .. "tail", fs.read(dir .. "/b"))
      assert.is_true(fs.write(dir .. "/b", "short", { fsync = true }))
      assert.equals("short", fs.read(dir .. "/b"))
      assert.equals("", (fs.write(dir .. "/e", "") and fs.read(dir .. "/e")))
    end)

    it("fails cleanly on missing files and directories", function()
      local ok, msg, code = fs.read(dir .. "/missing")
      assert.is_nil(ok)
      assert.equals("ENOENT", code)
      assert.matches("read '.*/missing'", msg)
      ok, msg, code = fs.write(dir .. "/no/such/dir/f", "x")
      assert.is_nil(ok)
      assert.equals("ENOENT", code)
      assert.matches("no/such/dir/f", msg)
      ok, _, code = fs.write_atomic(dir .. "/no/f", "x")
      assert.equals("ENOENT", code)
      ok, _, code = fs.create_exclusive(dir .. "/no/f", "x")
      assert.equals("ENOENT", code)
      ok, _, code = fs.read(dir)
      assert.equals("EISDIR", code)
      assert.equals("EISDIR", select(3, fs.copy(dir, dir .. "/copy")))
      assert.equals("ENOENT", select(3, fs.append(dir .. "/no/f", "x")))
      assert.has_error(function() fs.write(dir .. "/x", {}) end)
      assert.has_error(function() fs.write(dir .. "/x", "d", "not a table") end)
    end)

    it("write_atomic replaces contents and leaves no temp files", function()
      assert.is_true(fs.write_atomic(dir .. "/v.json", "one"))
      local ino = fs.stat(dir .. "/v.json").ino
      assert.is_true(fs.write_atomic(dir .. "/v.json", "two", { fsync = false }))
      assert.equals("two", fs.read(dir .. "/v.json"))
      assert.not_equals(ino, fs.stat(dir .. "/v.json").ino)
      assert.same({ "v.json" }, fs.list(dir))
    end)

    it("create_exclusive publishes once and reports EEXIST after", function()
      assert.is_true(fs.mkdir_p(dir .. "/_versions"))
      local p = dir .. "/_versions/1.json"
      assert.is_true(fs.create_exclusive(p, '{"v":1}'))
      local ok, msg, code = fs.create_exclusive(p, '{"v":"other"}')
      assert.is_nil(ok)
      assert.equals("EEXIST", code)
      assert.matches("1.json", msg)
      assert.equals('{"v":1}', fs.read(p))
      assert.same({ "1.json" }, fs.list(dir .. "/_versions"))
    end)

    it("create_exclusive: of racing processes exactly one wins, with a whole file", function()
      local target, go = dir .. "/2.json", dir .. "/go"
      local code = [[
        local fs = require "geneva.fs"
        local target, go, me = %q, %q, %q
        while not fs.exists(go) do end
        local ok, _, code = fs.create_exclusive(target, (me .. "|"):rep(50000))
        io.write(ok and "won" or code)
      ]]
      local pipes = {}
      for i = 1, 6 do pipes[i] = spawn(code:format(target, go, "w" .. i)) end
      os.execute("sleep 0.2")
      fs.write(go, "")
      local wins, lost, winner = 0, 0, nil
      for i, p in ipairs(pipes) do
        local out = p:read("a")
        p:close()
        if out == "won" then wins, winner = wins + 1, "w" .. i
        elseif out == "EEXIST" then lost = lost + 1 end
      end
      assert.equals(1, wins)
      assert.equals(5, lost)
      assert.equals((winner .. "|"):rep(50000), fs.read(target))
      assert.same({ "2.json", "go" }, fs.list(dir))
    end)

    it("link, rename, copy, remove and realpath", function()
      fs.write(dir .. "/a", "data")
      assert.is_true(fs.link(dir .. "/a", dir .. "/b"))
      local _, _, code = fs.link(dir .. "/a", dir .. "/b")
      assert.equals("EEXIST", code)
      assert.is_true(fs.rename(dir .. "/b", dir .. "/c"))
      assert.is_false(fs.exists(dir .. "/b"))
      local big = ("0123456789"):rep(300000)
      fs.write(dir .. "/big", big, { mode = tonumber("755", 8) })
      assert.equals(#big, fs.copy(dir .. "/big", dir .. "/big2"))
      assert.equals(big, fs.read(dir .. "/big2"))
      assert.equals(fs.stat(dir .. "/big").mode, fs.stat(dir .. "/big2").mode)
      _, _, code = fs.copy(dir .. "/missing", dir .. "/x")
      assert.equals("ENOENT", code)
      assert.is_false(fs.exists(dir .. "/x"))
      assert.is_true(fs.remove(dir .. "/c"))
      fs.mkdir_p(dir .. "/empty")
      assert.is_true(fs.remove(dir .. "/empty"))
      fs.mkdir_p(dir .. "/full/x")
      _, _, code = fs.remove(dir .. "/full")
      assert.equals("ENOTEMPTY", code)
      _, _, code = fs.remove(dir .. "/missing")
      assert.equals("ENOENT", code)
      _, _, code = fs.rename(dir .. "/missing", dir .. "/z")
      assert.equals("ENOENT", code)
      local real = fs.realpath(dir .. "/full/x/..")
      assert.equals(fs.realpath(dir) .. "/full", real)
      assert.equals("ENOENT", select(3, fs.realpath(dir .. "/missing")))
      assert.is_true(fs.fsync_dir(dir))
      assert.equals("ENOENT", select(3, fs.fsync_dir(dir .. "/missing")))
    end)

    it("remove_tree removes a tree but never what a symlink points to", function()
      assert(fs.mkdir_p(dir .. "/outside/sub"))
      fs.write(dir .. "/outside/keep", "k")
      fs.write(dir .. "/outside/sub/keep2", "k")
      assert(fs.mkdir_p(dir .. "/tree/a/b/c"))
      fs.write(dir .. "/tree/a/b/c/f", "x")
      fs.write(dir .. "/tree/a/.hidden", "x")
      assert(fs.symlink(dir .. "/outside", dir .. "/tree/a/dirlink"))
      assert(fs.symlink(dir .. "/outside/keep", dir .. "/tree/filelink"))
      assert(fs.symlink(dir .. "/outside", dir .. "/toplink"))
      assert.is_true(fs.remove_tree(dir .. "/tree"))
      assert.is_false(fs.exists(dir .. "/tree"))
      assert.equals("k", fs.read(dir .. "/outside/keep"))
      assert.equals("k", fs.read(dir .. "/outside/sub/keep2"))
      -- a symlink given as the root (even with a trailing slash) is unlinked only
      assert.is_true(fs.remove_tree(dir .. "/toplink/"))
      assert.is_nil(fs.stat(dir .. "/toplink", { follow = false }))
      assert.same({ "keep", "sub", "sub/keep2" }, fs.walk(dir .. "/outside", { dirs = true }))
      local ok, _, code = fs.remove_tree(dir .. "/missing")
      assert.is_nil(ok)
      assert.equals("ENOENT", code)
      ok, _, code = fs.remove_tree("/")
      assert.equals("EINVAL", code)
    end)
  end)

  describe("sha256", function()
    local empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    local abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

    it("hashes strings (known vectors)", function()
      assert.equals(empty, fs.sha256(""))
      assert.equals(abc, fs.sha256("abc"))
      assert.equals("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        fs.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    end)

    it("hashes files like sha256sum, across chunk boundaries", function()
      local parts = {}
      for i = 1, 3 * 1024 * 1024 // 64 + 7 do parts[i] = ("%063d\n"):format(i) end
      local data = table.concat(parts)
      local p = dir .. "/blob"
      fs.write(p, data)
      local hex, size = fs.sha256_file(p)
      assert.equals(sh("sha256sum " .. q(p)):match("^(%x+)"), hex)
      assert.equals(#data, size)
      assert.equals(fs.sha256(data), hex)
      fs.write(dir .. "/empty", "")
      assert.equals(empty, (fs.sha256_file(dir .. "/empty")))
      local ok, msg, code = fs.sha256_file(dir .. "/missing")
      assert.is_nil(ok)
      assert.equals("ENOENT", code)
      assert.matches("missing", msg)
    end)

    it("hashes incrementally", function()
      local h = fs.sha256_new()
      assert.equals(empty, h:hex())
      assert.equals(h, h:update("a"):update("b"))
      h:update("c")
      assert.equals(abc, h:hex())
      assert.equals(abc, h:hex())        -- hex does not finalize
      fs.write(dir .. "/f", "def")
      local self, n = h:update_file(dir .. "/f")
      assert.equals(h, self)
      assert.equals(3, n)
      assert.equals(fs.sha256("abcdef"), h:hex())
      assert.equals("ENOENT", select(3, h:update_file(dir .. "/missing")))
      assert.matches("geneva.fs.Sha256", tostring(h))
      assert.is_true(h:close())
      assert.is_true(h:close())
      assert.equals("geneva.fs.Sha256 (closed)", tostring(h))
      assert.has_error(function() h:hex() end, "attempt to use a closed geneva.fs.Sha256")
      do local h2 <close> = fs.sha256_new(); h2:update("x") end
      local weak = setmetatable({ fs.sha256_new() }, { __mode = "v" })
      collectgarbage(); collectgarbage()
      assert.is_nil(weak[1])
    end)
  end)

  describe("tmpdir", function()
    it("creates a private dir, removed with its contents on close", function()
      local t = fs.tmpdir("spec-")
      local p = t.path
      assert.matches("/spec%-[^/]+$", p)
      assert.equals("dir", fs.stat(p).type)
      assert.equals(tonumber("700", 8), fs.stat(p).mode)
      assert(fs.mkdir_p(p .. "/a/b"))
      fs.write(p .. "/a/b/f", "x")
      assert.matches("geneva.fs.TempDir '" .. p:gsub("%p", "%%%0") .. "'", tostring(t))
      assert.is_true(t:close())
      assert.is_false(fs.exists(p))
      assert.is_true(t:close())          -- idempotent
      assert.equals("geneva.fs.TempDir (closed)", tostring(t))
      assert.has_error(function() return t.path end, "attempt to use a closed geneva.fs.TempDir")
      assert.has_error(function() fs.tmpdir("a/b") end)
    end)

    it("honours $TMPDIR", function()
      local status, out = child.run([[io.write(require("geneva.fs").tmpdir().path)]],
        { TMPDIR = dir })
      assert.equals(0, status)
      assert.equals(dir .. "/", out:sub(1, #dir + 1))
      assert.is_false(fs.exists(out))
    end)

    it("is removed on <close>, on GC and on ledger scope close", function()
      local p
      do
        local t <close> = fs.tmpdir()
        p = t.path
        fs.write(p .. "/f", "x")
      end
      assert.is_false(fs.exists(p))
      local weak = setmetatable({ fs.tmpdir() }, { __mode = "v" })
      p = weak[1].path
      collectgarbage(); collectgarbage()
      assert.is_nil(weak[1])
      assert.is_false(fs.exists(p))
      local ledger = require "geneva.ledger"
      local s = ledger.scope { name = "fs-spec" }
      local t
      ledger.with(s, function()
        t = fs.tmpdir()
        p = t.path
        assert.is_true(fs.exists(p))
      end)   -- closes the scope
      assert.is_false(fs.exists(p))
      assert.equals("geneva.fs.TempDir (closed)", tostring(t))
      assert.is_true(t:close())
    end)

    it("is removed at host exit when the script never closes it", function()
      local status, out = child.run([[
        local t = require("geneva.fs").tmpdir()
        require("geneva.fs").write(t.path .. "/f", "x")
        io.write(t.path)
        _G.keep = t
      ]])
      assert.equals(0, status)
      assert.matches("^/", out)
      assert.is_false(fs.exists(out))
      status, out = child.run([[
        local t = require("geneva.fs").tmpdir()
        io.write(t.path)
        os.exit(3)
      ]])
      assert.equals(3, status)
      assert.is_false(fs.exists(out))
    end)

    it("is removed when the host is killed by SIGTERM", function()
      local lock = fs.lock(dir .. "/held")
      local code = ([[
        local fs = require "geneva.fs"
        local t = fs.tmpdir()
        io.write(t.path, "\n") io.stdout:flush()
        fs.lock(%q)   -- blocks (the parent holds it) until the signal
        io.write("not reached\n")
      ]]):format(dir .. "/held")
      local p = assert(io.popen(("sh -c %s"):format(q("echo $$; exec " .. q(child.bin) .. " -e " .. q(code) .. " 2>/dev/null"))))
      local pid = p:read("l")
      local path = p:read("l")
      assert.is_true(fs.exists(path))
      os.execute("kill -TERM " .. pid)
      local rest = p:read("a")
      local _, _, status = p:close()
      assert.equals(128 + 15, status)
      assert.equals("", rest)
      assert.is_false(fs.exists(path))
      lock:unlock()
    end)
  end)

  describe("lock", function()
    it("excludes a second holder, in this process and in another", function()
      local p = dir .. "/lease.lock"
      local l = fs.lock(p)
      assert.matches("geneva.fs.Lock", tostring(l))
      assert.equals(p, l:path())
      local ok, msg, code = fs.lock(p, { wait = false })
      assert.is_nil(ok)
      assert.equals("EWOULDBLOCK", code)
      assert.matches("lease.lock", msg)
      assert.equals("EWOULDBLOCK", select(3, fs.lock(p, { timeout = 0.05 })))
      local status, out = child.run(([[
        local ok, msg, code = require("geneva.fs").lock(%q, {wait = false})
        io.write(ok and "locked" or code)
      ]]):format(p))
      assert.equals(0, status)
      assert.equals("EWOULDBLOCK", out)
      -- a waiting child gets it once we let go
      local pipe = spawn(([[
        local fs = require "geneva.fs"
        fs.write(%q, "")
        local l, msg = fs.lock(%q, {timeout = 20})
        io.write(l and "got it" or msg)
      ]]):format(dir .. "/waiting", p))
      assert.is_true(wait_for(dir .. "/waiting"))
      os.execute("sleep 0.1")
      assert.is_true(l:unlock())
      assert.equals("got it", pipe:read("a"))
      pipe:close()
      assert.is_true(l:unlock())         -- idempotent
      assert.is_false(l:is_locked())
      assert.equals("geneva.fs.Lock (closed)", tostring(l))
      assert.has_error(function() l:path() end, "attempt to use a closed geneva.fs.Lock")
    end)

    it("allows shared holders together, and is released by <close> and GC", function()
      local p = dir .. "/shared.lock"
      local a = fs.lock(p, { exclusive = false })
      local b = fs.lock(p, { exclusive = false, wait = false })
      assert.is_truthy(b)
      assert.equals("EWOULDBLOCK", select(3, fs.lock(p, { wait = false })))
      a:close()
      b:close()
      do local c <close> = fs.lock(p) end
      local weak = setmetatable({ fs.lock(p) }, { __mode = "v" })
      collectgarbage(); collectgarbage()
      assert.is_nil(weak[1])
      local d = fs.lock(p, { wait = false })
      assert.is_truthy(d)
      d:close()
      assert.equals("ENOENT", select(3, fs.lock(dir .. "/no/such/lock")))
    end)
  end)

  describe("read_regular", function()
    it("reads small regular files only: no symlink, FIFO, directory or big file", function()
      assert(fs.write(dir .. "/f", "hello"))
      assert.equals("hello", fs.read_regular(dir .. "/f", 5))
      assert.equals("EFBIG", select(3, fs.read_regular(dir .. "/f", 4)))
      assert(fs.symlink(dir .. "/f", dir .. "/l"))
      assert.equals("ELOOP", select(3, fs.read_regular(dir .. "/l", 100)))
      assert(os.execute("mkfifo " .. q(dir .. "/fifo")))
      assert.equals("EINVAL", select(3, fs.read_regular(dir .. "/fifo", 100)))   -- no hang
      assert.equals("EINVAL", select(3, fs.read_regular(dir, 100)))
      assert.equals("ENOENT", select(3, fs.read_regular(dir .. "/none", 100)))
      assert.has_error(function() fs.read_regular(dir .. "/f", -1) end)
    end)
  end)

  describe("process helpers", function()
    it("getcwd, home and state_dir", function()
      assert.equals(sh("pwd"):gsub("\n$", ""), fs.getcwd())
      assert.equals(os.getenv("HOME"), fs.home())
      local status, out = child.run([[io.write(require("geneva.fs").state_dir())]],
        { XDG_STATE_HOME = dir .. "/state" })
      assert.equals(0, status)
      assert.equals(dir .. "/state/geneva", out)
      assert.equals("dir", fs.stat(out).type)
      status, out = child.run([[io.write(require("geneva.fs").state_dir())]],
        { XDG_STATE_HOME = "", HOME = dir .. "/home" })
      assert.equals(0, status)
      assert.equals(dir .. "/home/.local/state/geneva", out)
    end)
  end)
end)
