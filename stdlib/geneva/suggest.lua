-- geneva.suggest: "did you mean" hints for a mistyped name (an option, a
-- field, a subcommand). The one place that decides what is near enough.
--   suggest.nearest(word, names) -> the name nearest to word, or nil
--   suggest.hint(word, names)    -> " (did you mean 'name'?)" or ""
--   suggest.unknown(word, names) -> that hint, or " (one of: a, b, c)"
--   suggest.check_options(what, opts, names)  raises invalid_argument
--                                   "<what>: unknown option 'x' (did you
--                                   mean 'y'?)" for a key not in names
-- names is a list of strings or a table keyed by them.
local M = {}

-- Edit distance with transpositions (optimal string alignment); 3 stands
-- for "more than 2", the most a hint allows.
local function distance(a, b)
  if math.abs(#a - #b) > 2 then return 3 end
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[#a][#b]
end

-- At most 2 edits away, and fewer than the word's length (so "x" does not
-- suggest "id"); ties go to the first in sort order.
function M.nearest(word, names)
  if type(word) ~= "string" or type(names) ~= "table" then return nil end
  local best, bd
  local function consider(name)
    if type(name) ~= "string" then return end
    local d = distance(word, name)
    if d <= 2 and d < #word and (not bd or d < bd or (d == bd and name < best)) then best, bd = name, d end
  end
  if type(names[1]) == "string" then
    for _, name in ipairs(names) do consider(name) end
  else
    for name in pairs(names) do consider(name) end
  end
  return best
end

function M.hint(word, names)
  local near = M.nearest(word, names)
  return near and (" (did you mean '%s'?)"):format(near) or ""
end

-- The names, sorted, as text: "a, b, c"
local function listed(names)
  local out = {}
  if type(names[1]) == "string" then
    for i, n in ipairs(names) do out[i] = n end
  else
    for n in pairs(names) do if type(n) == "string" then out[#out + 1] = n end end
  end
  table.sort(out)
  return table.concat(out, ", ")
end

function M.unknown(word, names)
  local near = M.nearest(word, names)
  if near then return (" (did you mean '%s'?)"):format(near) end
  return (" (one of: %s)"):format(listed(names))
end

-- Every options table of the API is checked here, so a typo always gets
-- the same answer (names may be a list or a set; a set's false values are
-- not names).
function M.check_options(what, opts, names)
  local set = names
  if type(names[1]) == "string" then
    set = {}
    for _, n in ipairs(names) do set[n] = true end
  end
  for k in pairs(opts) do
    if not set[k] then
      require("geneva.errors").throw("invalid_argument", ("%s: unknown option '%s'%s")
        :format(what, tostring(k), M.unknown(k, set)), { field = type(k) == "string" and k or nil })
    end
  end
end

return M
