-- geneva.store.ingest.jsonl: the source of a JSONL file (one JSON object
-- per line; blank lines skipped), read a chunk of lines at a time.
--
-- Columns keep the order in which their keys first appear. A new table's
-- columns and types come from the first chunk; a key first seen later is
-- an error naming its line (give opts.schema with it). null members are
-- NULL. A nested object or array is an error (arrays of numbers are
-- float32[N] vectors), as are a repeated key and an integer beyond int64.
local errors = require "geneva.errors"
local json = require "geneva.json"
local common = require "geneva.store.ingest.common"
local values = require "geneva.store.ingest.values"

local J = {}

local Jsonl = {}
Jsonl.__index = Jsonl

local DECODE = { null_as_nil = true, exact_integers = true, unique_keys = true, key_order = true }

-- J.open(path) -> Source (geneva.store.ingest). Raises not_found or
-- invalid_argument when the file cannot be read.
function J.open(path)
  local f, msg, errno = io.open(path, "rb")
  if not f then
    errors.throw(errno == 2 and "not_found" or "invalid_argument", ("cannot open '%s': %s"):format(path, msg),
      { path = path })
  end
  local size = f:seek("end")
  f:seek("set")
  return setmetatable({ kind = "jsonl", path = path, f = f, size = size, pos = 0, line = 0,
                        order = {}, seen = {} }, Jsonl)
end

-- Whether v (a decoded table) is an array of numbers: a float32[N] vector
local function vector_like(v)
  if not json.is_array(v) or #v == 0 then return false end
  for i = 1, #v do
    if type(v[i]) ~= "number" then return false end
  end
  return true
end

local function nested(self, line, key, v)
  common.fail(self, line, key, ("column '%s': nested JSON %s are not supported (arrays of numbers are, as float32[N] "
    .. "vectors): flatten it into columns, or store it as a string column holding its JSON text"):format(key,
    json.is_array(v) and "arrays" or "objects"))
end

-- The cell's column: before planning any key (kept in first-seen order),
-- after it a column of the table (case-insensitive)
local function column_of(self, key, line)
  if not self.by_key then
    if not self.seen[key] then
      self.seen[key] = true
      self.order[#self.order + 1] = key
    end
    return key
  end
  local c = self.by_key[key]
  if c then return c end
  if self.planned and not self.by_lower[key:lower()] then
    common.fail(self, line, key, ("column '%s' first appears here, after the first %d rows that set the table's "
      .. "columns (give it in opts.schema)"):format(key, self.sample_rows))
  end
  c = common.lookup(self, self.by_lower, key, line).name
  self.by_key[key] = c
  return c
end

-- Reads up to max_rows objects (fewer past max_bytes): a batch, empty at
-- the end of the file.
function Jsonl:read(max_rows, max_bytes)
  local cells, lines, n, bytes = {}, {}, 0, 0
  local f = self.f
  while n < max_rows and bytes < max_bytes do
    local l = f:read("L")
    if not l then break end
    self.line = self.line + 1
    self.pos = self.pos + #l
    bytes = bytes + #l
    if l:find("%S") then
      local line = self.line
      local v, keys = json.decode(l, DECODE)
      if v == nil then
        -- each line is its own document: "at line 1" would mislead
        local what = keys:gsub("^json: ", ""):gsub(" at line 1, column (%d+) %(byte %d+%)$", " at column %1")
        if not (what:find("^duplicate key") or what:find("^integer .* int64 range")) then what = "bad JSON: " .. what end
        common.fail(self, line, nil, what)
      end
      if type(v) ~= "table" or json.is_array(v) then common.fail(self, line, nil, "expected a JSON object") end
      n = n + 1
      lines[n] = line
      for _, key in ipairs(keys) do
        local x = v[key]
        if x ~= nil then
          if type(x) == "table" and not vector_like(x) then nested(self, line, key, x) end
          local name = column_of(self, key, line)
          local col = cells[name]
          if not col then
            col = {}
            cells[name] = col
          elseif col[n] ~= nil then
            common.fail(self, line, key, ("column '%s' given twice (names are case-insensitive)"):format(key))
          end
          col[n] = x
        elseif not self.by_key then
          column_of(self, key, line)       -- a null member names a column too
        end
      end
    end
  end
  return { cells = cells, lines = lines, n = n }
end

function Jsonl:plan(given)
  local batch = self:read(common.CHUNK_ROWS, common.CHUNK_BYTES)
  self.sample_rows = batch.n
  local schema, inferred = values.plan(self, batch, given, self.order)
  self:bind(schema, inferred)
  self.planned = true
  local cells = {}
  for key, col in pairs(batch.cells) do cells[column_of(self, key, batch.lines[1])] = col end
  batch.cells = cells
  self.pending = batch
  return schema
end

function Jsonl:bind(schema, inferred)
  self.stored, self.by_lower = common.stored(schema, self.path)
  self.by_key, self.inferred = {}, inferred or {}
  self.names = {}
  for j, c in ipairs(self.stored) do self.names[j] = c.name end
end

function Jsonl:next(max_rows)
  local batch = self.pending or self:read(math.min(max_rows, common.CHUNK_ROWS), common.CHUNK_BYTES)
  self.pending = nil
  if batch.n == 0 then return nil end
  return { cols = values.convert(self, batch, self.stored), n = batch.n }
end

function Jsonl:position() return self.pos, self.size end

function Jsonl:close()
  if self.f then self.f:close() end
  self.f = nil
end
Jsonl.__close = Jsonl.close

return J
