--[[
geneva.store.ingest.csv: the source of a CSV file (RFC 4180 with a header
row), parsed and converted a chunk at a time by geneva.csv.core into packed
rows that stmt:insert_packed writes: no Lua value per cell.

Cells: an empty unquoted field is NULL, a quoted "" the empty string; in a
column that is not a string (or blob) column both are NULL, as no number
or bool is empty. A new table's column types not given in opts.schema are
inferred from the first chunk (geneva.store.types.infer_csv); a later cell
that does not fit (text in an int64 column, "007" in a column inferred
int64) is an error naming its line and column.
]]
local core = require "geneva.csv.core"
local errors = require "geneva.errors"
local fs = require "geneva.fs"
local types = require "geneva.store.types"
local common = require "geneva.store.ingest.common"

local M = {}

local Csv = {}
Csv.__index = Csv

-- How each type is read; a float32[N] column takes only NULL
local KIND = { int64 = "int64", float64 = "float64", bool = "bool", string = "string", blob = "blob" }

local function read_error(self, err)
  if err.code == "EINTR" then errors.throw("interrupted", "interrupted") end
  if err.field then return self:cell_error(err) end
  if err.code then
    errors.throw("unavailable", ("%s:%d: %s"):format(self.path, err.line, err.message), { path = self.path, line = err.line })
  end
  common.fail(self, err.line, nil, err.message)
end

-- M.open(path) -> Source (geneva.store.ingest): reads and checks the
-- header. Raises not_found, invalid_argument.
function M.open(path)
  local r, msg, code = core.open(path)
  if not r then errors.throw(code == "ENOENT" and "not_found" or "invalid_argument", msg, { path = path }) end
  local self = setmetatable({ kind = "csv", path = path, r = r }, Csv)
  local ok, err = pcall(function()
    local header, line = r:record()
    if not header and line then read_error(self, line) end
    if not header then common.fail(self, 1, nil, "empty CSV file (a header row is needed)") end
    local seen = {}
    for _, name in ipairs(header) do
      local cok, cerr = pcall(common.check_name, name)
      if not cok then common.fail(self, line, name, cerr.message) end
      if seen[name:lower()] then common.fail(self, line, name, ("duplicate column '%s' in the header"):format(name)) end
      seen[name:lower()] = true
    end
    self.header = header
    local st = fs.stat(path)
    self.size = st and st.size
  end)
  if not ok then
    r:close()
    error(err, 0)
  end
  return self
end

-- Infers the types of the header's columns that given lacks from the first
-- chunk, read as text and kept (converted) for the first next().
function Csv:plan(given)
  local have, count = {}, #given
  for _, c in ipairs(given) do have[c.name] = true end
  for _, name in ipairs(self.header) do
    if not have[name] then count = count + 1 end
  end
  local schema = {}
  for i, c in ipairs(given) do schema[i] = { name = c.name, data_type = c.data_type } end
  common.check_width(count, self.path)      -- before reading rows
  local ncols = #self.header
  local text = {}
  for j = 1, ncols do text[j] = "string" end
  local rows, n = self.r:read(text, nil, common.chunk_rows(ncols), common.CHUNK_BYTES)
  if not rows then read_error(self, n) end
  local facts = core.classify(rows, n, ncols)
  local lower, inferred = {}, {}
  for _, c in ipairs(given) do lower[c.name:lower()] = true end
  for j, name in ipairs(self.header) do
    if not have[name] then
      common.claim_name(lower, name)
      local t, at, why = types.infer_csv(facts[j])
      if not t then
        common.fail(self, self.r:line(at), name, ("column '%s': %s (give opts.schema float64 or string to keep it)")
          :format(name, why))
      end
      schema[#schema + 1] = { name = name, data_type = t }
      inferred[name] = true
    end
  end
  self.sample_rows = n
  self:bind(schema, inferred)
  if n > 0 then
    local conv, err = self.r:convert(rows, n, self.kinds, self.strict)
    if not conv then self:cell_error(err) end
    self.pending = { packed = conv, n = n }
  end
  return schema
end

function Csv:bind(schema, inferred)
  local _, by_lower = common.stored(schema, self.path)
  self.inferred = inferred or {}
  self.kinds, self.strict, self.names, self.columns = {}, {}, {}, {}
  for j, name in ipairs(self.header) do
    local c = common.lookup(self, by_lower, name)
    self.columns[j], self.names[j] = c, c.name
    self.kinds[j] = KIND[c.t.kind] or "none"
    self.strict[j] = self.inferred[c.name] or false
  end
end

-- Raises for the cell that did not fit its column (err from the reader)
function Csv:cell_error(err)
  local c = self.columns[err.field]
  local v = err.value
  local _, why = types.parse_cell(c.t, v)
  if not why then      -- it fits the type, but not what inference would have made of it
    if v:match("^[+-]?0%d") then
      why = ("%s has a leading zero, which makes a column text, not %s"):format(types.describe(v), c.data_type)
    else
      why = ("integer %s is beyond the int64 range"):format(#v <= 60 and v or types.describe(v))
    end
  end
  common.fail(self, err.line, c.name, ("column '%s': %s%s"):format(c.name, why,
    self.strict[err.field] and common.inferred_hint(self, c) or ""))
end

function Csv:next(max_rows)
  if self.pending then
    local p = self.pending
    self.pending = nil
    return p
  end
  local rows, n = self.r:read(self.kinds, self.strict, math.min(max_rows, common.chunk_rows(#self.header)),
                              common.CHUNK_BYTES)
  if not rows then read_error(self, n) end
  if n == 0 then return nil end
  return { packed = rows, n = n }
end

function Csv:position() return self.r:offset(), self.size end

function Csv:close() self.r:close() end
Csv.__close = Csv.close

return M
