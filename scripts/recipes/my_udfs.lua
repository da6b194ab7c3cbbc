-- UDFs for the example recipes in this directory (module = my_udfs).
local M = {}

-- words(content) -> number of whitespace-separated words; NULL stays NULL
function M.words(content)
  if content == nil then return nil end
  return select(2, content:gsub("%S+", ""))
end

-- shout(content) -> content in upper case with `suffix` appended (a batch
-- of one column: the executor hands arrays with .n)
function M.shout(content)
  if content == nil then return nil end
  return content:upper() .. "!"
end

-- chars(content) -> length in bytes
function M.chars(content)
  if content == nil then return nil end
  return #content
end

return M
