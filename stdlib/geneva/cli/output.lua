-- geneva.cli.output: what the subcommands print, in one style (kubectl's):
-- tables with a header row, ages and durations for people, and JSON or
-- YAML with a stable key order (sorted, the same in both) for machines.
local json = require "geneva.json"
local time = require "geneva.time"

local M = {}

-- M.json(v [, indent]) -> one JSON document, keys sorted (diffs and tests
-- of --json output stay stable), any bytes made text
function M.json(v, indent)
  return json.encode(v, { indent = indent and 2 or nil, sort_keys = true, invalid_utf8 = "replace" })
end

-- Marks the arrays of a JSON-decoded value for yaml.dump, so an empty one
-- prints as [] (as in the JSON), not {}.
local function seq_positions(v, pos)
  if type(v) ~= "table" then return pos end
  if json.is_array(v) then pos[v] = { kind = "seq" } end
  for _, x in pairs(v) do seq_positions(x, pos) end
  return pos
end

-- M.yaml(v) -> one YAML document: the same data as M.json gives (keys
-- sorted, any bytes made text, arrays and objects as there), in block style
function M.yaml(v)
  local doc = json.decode(M.json(v))
  local text, err = require("geneva.yaml").dump(doc, { order = seq_positions(doc, {}) })
  if not text then error(err, 0) end
  return text
end

-- M.document(v, format [, indent]) -> the text of v as "json" (--json, -o
-- json; indented when asked) or "yaml" (-o yaml), with its final newline
function M.document(v, format, indent)
  if format == "yaml" then return M.yaml(v) end
  return M.json(v, indent) .. "\n"
end

-- M.table(headers, rows [, no_header]) -> text: columns padded to their
-- widest cell, three spaces apart, the last one unpadded; "" when rows is
-- empty
function M.table(headers, rows, no_header)
  if #rows == 0 then return "" end
  local width = {}
  for i, h in ipairs(headers) do width[i] = #h end
  for _, r in ipairs(rows) do
    for i = 1, #headers do width[i] = math.max(width[i], utf8.len(r[i] or "") or #r[i]) end
  end
  local out = {}
  local function line(cells)
    local parts = {}
    for i = 1, #headers do
      local c = cells[i] or ""
      parts[i] = i < #headers and c .. (" "):rep(width[i] - (utf8.len(c) or #c)) or c
    end
    out[#out + 1] = table.concat(parts, "   "):gsub("%s+$", "")
  end
  if not no_header then line(headers) end
  for _, r in ipairs(rows) do line(r) end
  return table.concat(out, "\n") .. "\n"
end

-- M.duration(seconds) -> "0.04s", "4.2s", "12s", "3m05s", "2h10m", "3d4h"; "-" for nil
function M.duration(s)
  if type(s) ~= "number" or s ~= s then return "-" end
  if s < 0 then s = 0 end
  if s < 1 then return ("%.2fs"):format(s) end
  if s < 10 then return ("%.1fs"):format(s) end
  s = math.floor(s)
  if s < 60 then return ("%ds"):format(s) end
  if s < 3600 then return ("%dm%02ds"):format(s // 60, s % 60) end
  if s < 86400 then return ("%dh%02dm"):format(s // 3600, s % 3600 // 60) end
  return ("%dd%dh"):format(s // 86400, s % 86400 // 3600)
end

-- M.age(iso [, now]) -> how long ago an ISO 8601 time was, in one unit
-- ("45s", "12m", "5h", "3d"), as kubectl's AGE; "-" if unreadable
function M.age(iso, now)
  local t = type(iso) == "string" and time.parse_iso8601(iso)
  if not t then return "-" end
  local s = math.max(0, math.floor((now or time.now()) - t))
  if s < 60 then return ("%ds"):format(s) end
  if s < 3600 then return ("%dm"):format(s // 60) end
  if s < 86400 then return ("%dh"):format(s // 3600) end
  return ("%dd"):format(s // 86400)
end

-- M.seconds_between(iso_a, iso_b) -> b - a in seconds, or nil
function M.seconds_between(a, b)
  local ta = type(a) == "string" and time.parse_iso8601(a)
  local tb = type(b) == "string" and time.parse_iso8601(b)
  return ta and tb and tb - ta or nil
end

return M
