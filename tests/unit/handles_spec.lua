-- memcheck
-- Every userdata handle of the bindings behaves the same (host/handle.h):
-- idempotent close(), is_closed(), __close, __gc, "<type> (closed)" from
-- tostring, a clear error on use after close (never a crash), and the
-- ledger tears an open handle down with its scope.
local fs = require "geneva.fs.core"
local http = require "geneva.http.core"
local proc = require "geneva.proc.core"
local sqlite = require "geneva.sqlite.core"
local zip = require "geneva.zip"
local ledger = require "geneva.ledger.core"
local child = require "child"

local function esc(s) return (s:gsub("%p", "%%%0")) end

local dir = child.tmpdir()

local function count(kind)
  local n = 0
  for _, r in ipairs(ledger.list()) do
    if r.kind == kind then n = n + 1 end
  end
  return n
end

-- name: metatable name; what: the name in the use-after-close error;
-- kind: ledger kind (nil: not tracked); new(): an open handle;
-- use(h): a method call that must raise once h is closed.
local types = {
  { name = "geneva.fs.Sha256", new = function() return fs.sha256_new() end,
    use = function(h) return h:hex() end },
  { name = "geneva.fs.TempDir", kind = "tmpdir", new = function() return fs.tmpdir("handles-") end,
    use = function(h) return h.path end },
  { name = "geneva.fs.Lock", kind = "lock",
    new = function() return assert(fs.lock(dir .. "/lock", true, false)) end,
    use = function(h) return h:path() end },
  { name = "geneva.http.Session", what = "http session", kind = "http_session",
    new = function() return http.session() end,
    use = function(h) return h:request { url = "http://127.0.0.1:9/" } end },
  { name = "geneva.proc.Process", kind = "proc",
    new = function() return assert(proc.spawn { argv = { "sleep", "30" } }) end,
    use = function(h) return h:pid() end },
  { name = "geneva.sqlite.Db", kind = "sqlite",
    new = function() return assert(sqlite.open(":memory:", false, true)) end,
    use = function(h) return h:exec("SELECT 1") end },
  { name = "geneva.sqlite.Stmt",
    new = function()
      local db = assert(sqlite.open(":memory:", false, true))
      return assert(db:prepare("SELECT 1"))
    end,
    use = function(h) return h:step() end },
  { name = "geneva.csv.Reader", kind = "csv",
    new = function()
      local path = dir .. "/a.csv"
      local f = assert(io.open(path, "w"))
      f:write("a,b\n1,2\n")
      f:close()
      return assert(require("geneva.csv.core").open(path))
    end,
    use = function(h) return h:record() end },
  { name = "geneva.zip.Archive", kind = "zip",
    new = function()
      local path = dir .. "/a.zip"
      assert(zip.create(path, { { name = "x.txt", data = "x" } }))
      return assert(zip.open(path))
    end,
    use = function(h) return h:list() end },
}

describe("handles", function()
  teardown(function() child.rmtree(dir) end)

  for _, t in ipairs(types) do
    describe(t.name, function()
      it("has a metatable named after the type and checks self", function()
        local h = t.new()
        assert.equal(t.name, getmetatable(h).__name)
        assert.error_matches(function() h.close(42) end, esc(t.name) .. " expected, got number")
        assert.error_matches(function() h.is_closed({}) end, esc(t.name) .. " expected, got table")
        h:close()
      end)

      it("closes idempotently; is_closed and tostring say so; use after close raises", function()
        local h = t.new()
        assert.is_false(h:is_closed())
        assert.matches("^" .. esc(t.name) .. " .", tostring(h))
        assert.is_not_equal(t.name .. " (closed)", tostring(h))
        assert.is_true(h:close())
        assert.is_true(h:is_closed())
        assert.is_true(h:close())
        assert.is_true(h:is_closed())
        assert.equal(t.name .. " (closed)", tostring(h))
        assert.has_error(function() t.use(h) end, "attempt to use a closed " .. (t.what or t.name))
        assert.has_error(function() t.use(h) end, "attempt to use a closed " .. (t.what or t.name))
      end)

      it("closes at the end of a <close> scope, also when it raises", function()
        local keep
        do
          local h <close> = t.new()
          keep = h
        end
        assert.is_true(keep:is_closed())
        local ok = pcall(function()
          local h <close> = t.new()
          keep = h
          error("boom")
        end)
        assert.is_false(ok)
        assert.is_true(keep:is_closed())
        assert.is_true(keep:close())
      end)

      it("is collected when unreferenced", function()
        local weak = setmetatable({ t.new() }, { __mode = "v" })
        collectgarbage()
        collectgarbage()
        assert.is_nil(weak[1])
      end)

      if t.kind then
        it("is tracked in the ledger while open and torn down with its scope", function()
          local before = count(t.kind)
          local h = t.new()
          assert.equal(before + 1, count(t.kind))
          h:close()
          assert.equal(before, count(t.kind))

          local scope = ledger.scope("handles-" .. t.kind)
          local prev = scope:activate()
          local ok, made = pcall(t.new)
          prev:activate()
          assert(ok, made)
          assert.equal(before + 1, count(t.kind))
          assert.is_true(scope:close())
          assert.equal(before, count(t.kind))
          assert.is_true(made:is_closed())
          assert.equal(t.name .. " (closed)", tostring(made))
          assert.has_error(function() t.use(made) end, "attempt to use a closed " .. (t.what or t.name))
          assert.is_true(made:close())
        end)
      end
    end)
  end

  describe("geneva.sqlite.Stmt of a closed Db", function()
    it("is closed with the Db and says why", function()
      local db = assert(sqlite.open(":memory:", false, true))
      local st = assert(db:prepare("SELECT 1"))
      assert.is_true(db:close())
      assert.is_true(st:is_closed())
      assert.equal("geneva.sqlite.Stmt (closed)", tostring(st))
      assert.has_error(function() st:step() end,
        "attempt to use a closed geneva.sqlite.Stmt (its geneva.sqlite.Db was closed)")
      assert.is_true(st:finalize())
    end)
  end)

  describe("geneva.fs.Lock", function()
    it("unlock is close under another name; is_locked is not is_closed", function()
      local l = assert(fs.lock(dir .. "/lock2"))
      assert.is_true(l:is_locked())
      assert.is_true(l:unlock())
      assert.is_false(l:is_locked())
      assert.is_true(l:is_closed())
      assert.is_true(l:close())
    end)
  end)
end)
