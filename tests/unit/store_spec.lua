-- Specs for the helpers the store and backfill modules share: SQL memcheck
-- identifier quoting (geneva.sqlite.quote_ident) and fragment lookup
-- (geneva.store.versions.find_fragment). Each exists once.
local sqlite = require "geneva.sqlite"
local storage = require "geneva.store.versions"

local src = os.getenv("GENEVA_SOURCE_DIR") or "."

describe("shared store helpers", function()
  it("sqlite.quote_ident quotes any name as one identifier", function()
    assert.equal('"a"', sqlite.quote_ident("a"))
    assert.equal('"weird col"', sqlite.quote_ident("weird col"))
    assert.equal('"say ""hi"""', sqlite.quote_ident('say "hi"'))
    local db <close> = assert(sqlite.open(":memory:"))
    local name = 'x"; DROP TABLE t; --'
    assert.is_true(db:exec(("CREATE TABLE t(%s)"):format(sqlite.quote_ident(name))))
    assert.is_true(db:exec(("INSERT INTO t(%s) VALUES (7)"):format(sqlite.quote_ident(name))))
    assert.equal(7, db:value(("SELECT %s FROM t"):format(sqlite.quote_ident(name))))
  end)

  it("versions.find_fragment finds a fragment of a snapshot by id", function()
    local m = { fragments = { { id = 1, rows = 3 }, { id = 4, rows = 2 } } }
    assert.equal(m.fragments[2], storage.find_fragment(m, 4))
    assert.is_nil(storage.find_fragment(m, 2))
  end)

  it("no module keeps a copy of its own", function()
    local copies = {}
    local p = io.popen(("find %q/stdlib -name '*.lua'"):format(src))
    for path in p:lines() do
      local f = assert(io.open(path))
      local text = f:read("a")
      f:close()
      local rel = path:sub(#src + 2)
      if rel ~= "stdlib/geneva/sqlite.lua" and text:find([[gsub('"', '""')]], 1, true) then
        copies[#copies + 1] = rel .. ": identifier quoting"
      end
      if rel ~= "stdlib/geneva/store/versions.lua" and text:find("function find_fragment", 1, true) then
        copies[#copies + 1] = rel .. ": find_fragment"
      end
    end
    p:close()
    table.sort(copies)
    assert.same({}, copies)
  end)
end)
