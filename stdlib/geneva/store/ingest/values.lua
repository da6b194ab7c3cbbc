-- geneva.store.ingest.values: cells that are Lua values (Lua rows, and
-- JSONL lines once decoded): a batch of them by column, their inferred
-- types, their conversion to what SQLite binds; and the source of Lua rows.
--
-- A batch is {cells = {name -> array}, n = rows, lines = {i -> line} | nil};
-- src (the source: path, sample_rows, inferred) says where a row is.
local errors = require "geneva.errors"
local types = require "geneva.store.types"
local common = require "geneva.store.ingest.common"

local V = {}

local math_type = math.type

local function where(batch, i) return batch.lines and batch.lines[i] or i end

-- V.infer(src, batch, name) -> type of column name's values: int64 and
-- float64 mix to float64; other mixes raise invalid_argument; no values:
-- string.
function V.infer(src, batch, name)
  local col = batch.cells[name] or {}
  local found, first
  for i = 1, batch.n do
    local v = col[i]
    if v ~= nil and not types.is_null(v) then
      local t, why = types.infer_value(v)
      if not t then common.fail(src, where(batch, i), name, ("column '%s': %s"):format(name, why)) end
      if not found then
        found, first = t, i
      elseif t ~= found then
        if (t == "float64" and found == "int64") or (t == "int64" and found == "float64") then
          found = "float64"
        else
          common.fail(src, where(batch, i), name, ("column '%s' holds %s here but %s in %s (give opts.schema)")
            :format(name, t, found, (src.path and "line " or "row ") .. where(batch, first)))
        end
      end
    end
  end
  return found or "string"
end

--[[
V.plan(src, batch, given, names) -> schema, inferred
A new table's columns: given (normalize_schema output) first, in its
order, then the batch's other columns in the order of names; the types not
given inferred from batch (inferred: name -> true for those).
]]
function V.plan(src, batch, given, names)
  local schema, lower, inferred, have = {}, {}, {}, {}
  for _, c in ipairs(given) do
    schema[#schema + 1] = { name = c.name, data_type = c.data_type }
    lower[c.name:lower()], have[c.name] = true, true
  end
  for _, name in ipairs(names) do
    if not have[name] then
      common.claim_name(lower, name)
      schema[#schema + 1] = { name = name, data_type = V.infer(src, batch, name) }
      inferred[name] = true
    end
  end
  if #schema == 0 then errors.throw("invalid_argument", "no columns: give rows or opts.schema") end
  return schema, inferred
end

--[[
V.convert(src, batch, stored) -> cols: one array per stored column (in
order) of SQLite-ready values (nil for NULL), batch.cells being keyed by
stored names. Raises invalid_argument for a value that does not fit its
column's type. Reuses the batch's arrays.
]]
function V.convert(src, batch, stored)
  local cols, n = {}, batch.n
  for j, c in ipairs(stored) do
    local t = c.t
    local k = t.kind
    local col = batch.cells[c.name] or {}
    local fast = (k == "int64" and "integer") or (k == "string" and "string") or nil
    for i = 1, n do
      local v = col[i]
      if v ~= nil then
        -- fast paths first: a 1M-row load spends its time here
        if fast == "integer" and math_type(v) == "integer" then         -- luacheck: ignore
        elseif fast == "string" and type(v) == "string" then            -- luacheck: ignore
        elseif k == "float64" and math_type(v) == "float" and v == v then  -- luacheck: ignore (not NaN)
        elseif types.is_null(v) then
          col[i] = nil
        else
          local w, why = types.check(t, v)
          if w == nil then
            common.fail(src, where(batch, i), c.name, ("column '%s': %s%s"):format(c.name, why,
              src.inferred and src.inferred[c.name] and common.inferred_hint(src, c) or ""))
          end
          col[i] = types.to_sql(t, w)
        end
      end
    end
    cols[j] = col
  end
  return cols
end

-- V.from_rows(rows) -> batch. Raises invalid_argument for a row that is
-- not a table or a key that is not a string.
function V.from_rows(rows)
  if type(rows) ~= "table" then
    errors.throw("invalid_argument", "rows must be an array of tables, got " .. type(rows))
  end
  local cells, n = {}, #rows
  -- an array with holes ({[1]=..., [3]=...}) would lose rows past the
  -- hole without a word: every key must be one of 1..#rows
  for k in pairs(rows) do
    if math_type(k) ~= "integer" or k < 1 or k > n then
      errors.throw("invalid_argument", ("rows must be an array 1..n without holes: it has key %s beyond its %d rows")
        :format(type(k) == "string" and ("'" .. k .. "'") or tostring(k), n))
    end
  end
  local batch = { cells = cells, n = n }
  for i = 1, n do
    local row = rows[i]
    if type(row) ~= "table" then common.fail({}, i, nil, "expected a table, got " .. type(row)) end
    for k, v in pairs(row) do
      local col = cells[k]
      if not col then
        if type(k) ~= "string" then common.fail({}, i, nil, "column names must be strings, got " .. tostring(k)) end
        col = {}
        cells[k] = col
      end
      col[i] = v
    end
  end
  return batch
end

-- {====== The source of Lua rows: one chunk, all in memory already

local Rows = {}
Rows.__index = Rows

-- V.open_rows(rows) -> Source (geneva.store.ingest)
function V.open_rows(rows)
  return setmetatable({ kind = "lua", batch = V.from_rows(rows or {}) }, Rows)
end

function Rows:plan(given)
  local names = {}
  for name in pairs(self.batch.cells) do names[#names + 1] = name end
  table.sort(names)
  local schema, inferred = V.plan(self, self.batch, given, names)
  self:bind(schema, inferred)
  return schema
end

function Rows:bind(schema, inferred)
  local stored, by_lower = common.stored(schema)
  local cells = {}
  for name, col in pairs(self.batch.cells) do
    local c = common.lookup(self, by_lower, name)
    if cells[c.name] then
      errors.throw("invalid_argument", ("column '%s' given twice (names are case-insensitive)"):format(name), { column = name })
    end
    cells[c.name] = col
  end
  self.batch.cells = cells
  self.stored, self.inferred = stored, inferred or {}
  self.names = {}
  for j, c in ipairs(stored) do self.names[j] = c.name end
end

function Rows:next()
  if self.done or self.batch.n == 0 then return nil end
  self.done = true
  return { cols = V.convert(self, self.batch, self.stored), n = self.batch.n }
end

function Rows.position() return nil end
function Rows.close() end
Rows.__close = Rows.close

-- }======

return V
