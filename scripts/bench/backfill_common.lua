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

return M
