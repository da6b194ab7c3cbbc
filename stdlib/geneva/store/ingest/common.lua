-- geneva.store.ingest.common: what the ingest sources share: chunk sizes,
-- column names and schemas, matching a source's columns to a table's, and
-- errors that say where ("file.csv:LINE: ..." for files, "row N: ..." for
-- Lua rows) with path, line or row, and column fields.
local errors = require "geneva.errors"
local types = require "geneva.store.types"

local C = {}

-- A chunk: the rows read, checked and written at a time. Memory is bounded
-- by one chunk and the fragment file being written, whatever the input's
-- size. Types not given are inferred from the first chunk.
C.CHUNK_ROWS = 65536
C.CHUNK_CELLS = 1048576          -- fewer rows for wide files
C.CHUNK_BYTES = 4 * 1024 * 1024  -- of input; fewer rows for long ones

-- SQLite's default SQLITE_MAX_COLUMN (Debian's build keeps it): a data file's
-- table holds at most this many columns, _rowid included.
C.MAX_COLUMNS = 2000

-- C.chunk_rows(ncols) -> rows per chunk for rows of ncols cells
function C.chunk_rows(ncols)
  return math.max(1, math.min(C.CHUNK_ROWS, C.CHUNK_CELLS // math.max(ncols, 1)))
end

-- C.fail(src, at, column, msg): raises invalid_argument for line `at` of
-- src's file ("path:LINE: msg"), or row `at` of Lua rows ("row N: msg").
function C.fail(src, at, column, msg)
  local fields = { column = column }
  local prefix
  if src.path then
    fields.path, fields.line = src.path, at
    prefix = ("%s:%d: "):format(src.path, at)
  else
    fields.row = at
    prefix = ("row %d: "):format(at)
  end
  errors.throw("invalid_argument", prefix .. msg, fields)
end

-- C.check_name(name [, what="column"]) -> name | raises invalid_argument.
-- Columns: letters, digits, _; not "_rowid", not starting with "__".
function C.check_name(name, what)
  what = what or "column"
  if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") or #name > 128
     or name:lower() == "_rowid" or name:sub(1, 2) == "__" then
    errors.throw("invalid_argument", ("invalid %s name %s (letters, digits and _, not starting with a digit or '__', not '_rowid')")
      :format(what, type(name) == "string" and ("'" .. name .. "'") or tostring(name)), { column = name })
  end
  return name
end

-- C.normalize_schema(s) -> array of {name=, data_type=} (from an array
-- of {name=, data_type=} or a map {name = type}; a map comes out sorted).
function C.normalize_schema(s)
  if s == nil then return {} end
  if type(s) ~= "table" then errors.throw("invalid_argument", "schema must be a table") end
  local out = {}
  if #s > 0 then
    for i, c in ipairs(s) do
      if type(c) ~= "table" then errors.throw("invalid_argument", ("schema[%d] must be a table {name=, data_type=}"):format(i)) end
      out[i] = { name = c.name or c[1], data_type = c.data_type or c.type or c[2] }
    end
  else
    for k, v in pairs(s) do out[#out + 1] = { name = k, data_type = v } end
    table.sort(out, function(a, b) return tostring(a.name) < tostring(b.name) end)
  end
  local seen = {}
  for _, c in ipairs(out) do
    C.check_name(c.name)
    local ok, why = types.parse(c.data_type)
    if not ok then errors.throw("invalid_argument", ("column '%s': %s"):format(c.name, why), { column = c.name }) end
    if seen[c.name:lower()] then
      errors.throw("invalid_argument", ("duplicate column '%s' in schema"):format(c.name), { column = c.name })
    end
    seen[c.name:lower()] = true
  end
  return out
end

-- C.claim_name(lower, name): checks a new column's name and adds it to
-- lower (lowercased names taken -> true); raises invalid_argument for a
-- bad name or one taken (names are case-insensitive).
function C.claim_name(lower, name)
  C.check_name(name)
  if lower[name:lower()] then
    errors.throw("invalid_argument", ("column '%s' clashes with another column (names are case-insensitive)"):format(name),
      { column = name })
  end
  lower[name:lower()] = true
end

--[[
C.stored(schema, path) -> stored, by_lower
The columns a data file holds (not virtual), as {name=, data_type=, t =
parsed type}, in schema order, and every column of schema by lowercased
name. Raises invalid_argument, naming path if given, when SQLite could not
hold that many columns.
]]
function C.stored(schema, path)
  local stored, by_lower = {}, {}
  for _, c in ipairs(schema) do
    local e = { name = c.name, data_type = c.data_type, virtual = c.virtual, t = types.parse(c.data_type) }
    by_lower[c.name:lower()] = e
    if not c.virtual then stored[#stored + 1] = e end
  end
  C.check_width(#stored, path)
  return stored, by_lower
end

-- C.check_width(n, path): raises invalid_argument, naming path if given,
-- when a data file cannot hold n columns
function C.check_width(n, path)
  if n > C.MAX_COLUMNS - 1 then
    errors.throw("invalid_argument", ("%s%d columns: SQLite allows at most %d columns per table (SQLITE_MAX_COLUMN), "
      .. "one of them our _rowid"):format(path and (path .. ": ") or "", n, C.MAX_COLUMNS), { path = path })
  end
end

-- C.lookup(src, by_lower, name, at) -> the stored column src's column
-- `name` fills | raises invalid_argument (unknown or virtual column; `at`
-- locates it, else the file or the first row).
function C.lookup(src, by_lower, name, at)
  local c = by_lower[name:lower()]
  if c and not c.virtual then return c end
  local msg = c and ("column '%s' is virtual (computed by backfill) and cannot be written"):format(name)
    or ("unknown column '%s'"):format(name)
  if at then C.fail(src, at, name, msg) end
  if src.path then errors.throw("invalid_argument", ("%s: %s"):format(src.path, msg), { path = src.path, column = name }) end
  errors.throw("invalid_argument", msg, { row = 1, column = name })
end

-- C.inferred_hint(src, c) -> " (... give opts.schema ...)" for a value that
-- does not fit a column whose type was inferred from src's first chunk
function C.inferred_hint(src, c)
  return (" (%s was inferred from the first %d rows; give opts.schema = {%s = \"string\"}, or the type it should have)")
    :format(c.data_type, src.sample_rows or 0, c.name)
end

return C
