-- Shared by scripts/bench/backfill.lua (geneva) and backfill_loop.lua
-- (plain lua5.4): the deterministic data and the two UDFs, so every
-- contender computes the same thing over the same values.
local M = {}

local BASE = ("the quick brown fox jumps over the lazy dog 0123456789 "):rep(4)

-- M.text_of(i) -> the text of row id i (8..120 ASCII characters)
function M.text_of(i)
  local start = 1 + (i * 7) % 97
  return BASE:sub(start, start + 7 + (i * 13) % 113)
end

-- trivial: the string length
function M.trivial(text)
  return #text
end

-- heavy: ~2000 arithmetic operations per row (500 x mul, add, mod, loop step);
-- backfill_pool.py has the same loop
function M.heavy(text)
  local h = #text
  for k = 1, 500 do h = (h * 31 + k) % 1000003 end
  return h
end

-- A geneva table of n rows (id, text), built a million rows at a time.
function M.build_table(db, name, n)
  local schema = { { name = "id", data_type = "int64" }, { name = "text", data_type = "string" } }
  local tbl
  for lo = 1, n, 1000000 do
    local rows = {}
    for i = lo, math.min(n, lo + 999999) do rows[#rows + 1] = { id = i, text = M.text_of(i) } end
    if not tbl then tbl = db:create_table(name, rows, { schema = schema }) else tbl:add(rows) end
  end
  return tbl
end

-- Sum and count of a column over every fragment of the latest version.
function M.column_sum(tbl, col)
  local reader = require "geneva.store.reader"
  local m = tbl:_snapshot()
  local sum, nonnull = 0, 0
  for _, f in ipairs(m.fragments) do
    local r <close> = reader.open(tbl.dir, m, f, { columns = { col } })
    local row = assert(r:first(('SELECT total("%s"), count("%s") FROM t'):format(col, col)))
    sum, nonnull = sum + math.tointeger(row[1]), nonnull + row[2]
  end
  return sum, nonnull
end

return M
