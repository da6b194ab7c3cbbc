-- geneva.pretty: readable rendering of Lua values for the REPL and logs.
-- Tables print nested with sorted keys; cycles and depth are bounded.
local pretty = {}

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function scalar(v)
  if type(v) == "string" then return string.format("%q", v) end
  if math.type(v) == "float" and v == math.floor(v) and v == v and v ~= math.huge
      and v ~= -math.huge then
    return string.format("%.1f", v)
  end
  return tostring(v)
end

local function render(v, indent, depth, seen, opts, out)
  if type(v) ~= "table" then out[#out + 1] = scalar(v); return end
  local mt = getmetatable(v)
  if mt and mt.__tostring then out[#out + 1] = tostring(v); return end
  if seen[v] then out[#out + 1] = "<cycle>"; return end
  if depth >= opts.max_depth then out[#out + 1] = "{...}"; return end
  local n = #v
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  if n == 0 and #keys == 0 then out[#out + 1] = "{}"; return end
  table.sort(keys, key_order)
  seen[v] = true
  local pad = string.rep("  ", indent + 1)
  out[#out + 1] = "{\n"
  for i = 1, n do
    out[#out + 1] = pad
    render(v[i], indent + 1, depth + 1, seen, opts, out)
    out[#out + 1] = ",\n"
  end
  for _, k in ipairs(keys) do
    out[#out + 1] = pad
    if is_identifier(k) then out[#out + 1] = k
    else out[#out + 1] = "["; out[#out + 1] = scalar(k); out[#out + 1] = "]" end
    out[#out + 1] = " = "
    render(v[k], indent + 1, depth + 1, seen, opts, out)
    out[#out + 1] = ",\n"
  end
  out[#out + 1] = string.rep("  ", indent) .. "}"
  seen[v] = nil
end

-- pretty.format(v [, {max_depth = 8}]) -> string
function pretty.format(v, opts)
  opts = opts or {}
  opts.max_depth = opts.max_depth or 8
  local out = {}
  render(v, 0, 0, {}, opts, out)
  return table.concat(out)
end

-- pretty.print(...) writes each value formatted, tab-separated
function pretty.print(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = pretty.format((select(i, ...))) end
  io.stdout:write(table.concat(parts, "\t"), "\n")
end

return pretty
