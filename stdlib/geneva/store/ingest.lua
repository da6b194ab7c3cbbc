-- geneva.store.ingest: turning input rows into fragment data files, for
-- db:create_table and tbl:add.
--
-- Input is Lua rows ({col = value}, NULL as nil, geneva.null or sqlite.null),
-- a CSV file (RFC 4180, header row) or a JSONL file (one object per line).
-- Everything is read and checked before anything is written, so bad input
-- leaves the table as it was. Errors are geneva.Error invalid_argument, with
-- `path` and `line` for files ("file.csv:LINE: ...") and `column`.
local fs = require "geneva.fs"
local json = require "geneva.json"
local types = require "geneva.store.types"
local errors = require "geneva.errors"
local storage = require "geneva.store.versions"

local ingest = {}

ingest.DEFAULT_FRAGMENT_SIZE = 100000

-- SQLite's default SQLITE_MAX_COLUMN (Debian's build keeps it): a data file's
-- table holds at most this many columns, _rowid included.
ingest.MAX_COLUMNS = 2000

local qi = require("geneva.sqlite").quote_ident

-- ingest.check_name(name [, what="column"]) -> name | raises invalid_argument.
-- Columns: letters, digits, _; not "_rowid", not starting with "__".
function ingest.check_name(name, what)
  what = what or "column"
  if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") or #name > 128
     or name:lower() == "_rowid" or name:sub(1, 2) == "__" then
    errors.throw("invalid_argument", ("invalid %s name %s (letters, digits and _, not starting with a digit or '__', not '_rowid')")
      :format(what, type(name) == "string" and ("'" .. name .. "'") or tostring(name)), { column = name })
  end
  return name
end

-- Where a problem is: "file.csv:12: " for files, "row 12: " for Lua rows.
local function locate(batch, i, column)
  local fields = { column = column }
  local prefix
  if batch.path then
    fields.path, fields.line = batch.path, batch.lines and batch.lines[i] or i
    prefix = ("%s:%d: "):format(batch.path, fields.line)
  else
    fields.row = i
    prefix = ("row %d: "):format(i)
  end
  return prefix, fields
end

local function fail(batch, i, column, msg)
  local prefix, fields = locate(batch, i, column)
  errors.throw("invalid_argument", prefix .. msg, fields)
end

-- {====== Readers: a batch is {names = {...} | nil, cells = {name -> array},
-- n = rows, kind = "lua"|"csv"|"jsonl", path =, lines = {row -> line}}

-- ingest.from_rows(rows) -> batch. Raises invalid_argument for a row that is
-- not a table or a key that is not a string.
function ingest.from_rows(rows)
  if type(rows) ~= "table" then
    errors.throw("invalid_argument", "rows must be an array of tables, got " .. type(rows))
  end
  local cells, n = {}, #rows
  -- an array with holes ({[1]=..., [3]=...}) would lose rows past the
  -- hole without a word: every key must be one of 1..#rows
  local keys = 0
  for k in pairs(rows) do
    keys = keys + 1
    if math.type(k) ~= "integer" or k < 1 or k > n then
      errors.throw("invalid_argument", ("rows must be an array 1..n without holes: it has key %s beyond its %d rows")
        :format(type(k) == "string" and ("'" .. k .. "'") or tostring(k), n))
    end
  end
  local batch = { cells = cells, n = n, kind = "lua" }
  for i = 1, n do
    local row = rows[i]
    if type(row) ~= "table" then fail(batch, i, nil, "expected a table, got " .. type(row)) end
    for k, v in pairs(row) do
      local col = cells[k]
      if not col then
        if type(k) ~= "string" then fail(batch, i, nil, "column names must be strings, got " .. tostring(k)) end
        col = {}
        cells[k] = col
      end
      col[i] = v
    end
  end
  return batch
end

local function read_text(path)
  local text, msg, code = fs.read(path)
  if not text then
    errors.throw(code == "ENOENT" and "not_found" or "invalid_argument", msg, { path = path })
  end
  return text
end

-- Parses one CSV record at pos. Returns fields, next pos, next line, quoted
-- (whether any field was quoted) | nil, message, line of the problem.
local function csv_record(text, pos, line)
  local fields, quoted, n = {}, false, #text
  while true do
    if text:byte(pos) == 34 then                          -- "quoted"
      quoted = true
      local buf, p = {}, pos + 1
      while true do
        local q = text:find('"', p, true)
        if not q then return nil, "unterminated quoted field", line end
        local seg = text:sub(p, q - 1)
        local _, nl = seg:gsub("\n", "")
        line = line + nl
        buf[#buf + 1] = seg
        if text:byte(q + 1) == 34 then
          buf[#buf + 1] = '"'
          p = q + 2
        else
          pos = q + 1
          break
        end
      end
      fields[#fields + 1] = table.concat(buf)
      local c = text:byte(pos)
      if c == 44 then pos = pos + 1
      elseif c == 10 then return fields, pos + 1, line + 1, quoted
      elseif c == 13 and text:byte(pos + 1) == 10 then return fields, pos + 2, line + 1, quoted
      elseif c == nil then return fields, pos, line, quoted
      else return nil, "unexpected character after a closing quote", line end
    else                                                  -- unquoted
      local e = text:find("[,\r\n]", pos)
      local s = text:sub(pos, (e or n + 1) - 1)
      if s:find('"', 1, true) then return nil, "quote inside an unquoted field", line end
      fields[#fields + 1] = s
      if not e then return fields, n + 1, line, quoted end
      local c = text:byte(e)
      if c == 44 then pos = e + 1
      elseif c == 10 then return fields, e + 1, line + 1, quoted
      elseif text:byte(e + 1) == 10 then return fields, e + 2, line + 1, quoted
      else return fields, e + 1, line + 1, quoted end
    end
  end
end

-- ingest.read_csv(path) -> batch (cells are strings; "" is NULL). Blank
-- lines are skipped. Raises invalid_argument with path and line.
function ingest.read_csv(path)
  local text = read_text(path)
  local batch = { kind = "csv", path = path, lines = {}, n = 0 }
  local pos, line = 1, 1
  if text:sub(1, 3) == "\239\187\191" then pos = 4 end    -- UTF-8 BOM
  local header, cols
  local n = #text
  while pos <= n do
    local start = line
    local fields, p2, l2, quoted = csv_record(text, pos, line)
    if not fields then
      errors.throw("invalid_argument", ("%s:%d: %s"):format(path, l2, p2), { path = path, line = l2 })
    end
    pos, line = p2, l2
    if #fields == 1 and fields[1] == "" and not quoted then
      -- blank line
    elseif not header then
      header, cols = fields, {}
      local seen = {}
      for j, name in ipairs(header) do
        local ok, err = pcall(ingest.check_name, name)
        if not ok then
          errors.throw("invalid_argument", ("%s:%d: %s"):format(path, start, err.message), { path = path, line = start })
        end
        if seen[name:lower()] then
          errors.throw("invalid_argument", ("%s:%d: duplicate column '%s' in the header"):format(path, start, name),
            { path = path, line = start, column = name })
        end
        seen[name:lower()] = true
        cols[j] = {}
      end
    else
      if #fields ~= #header then
        errors.throw("invalid_argument", ("%s:%d: expected %d fields, got %d"):format(path, start, #header, #fields),
          { path = path, line = start })
      end
      local i = batch.n + 1
      batch.n = i
      batch.lines[i] = start
      for j = 1, #fields do cols[j][i] = fields[j] end
    end
  end
  if not header then
    errors.throw("invalid_argument", ("%s:1: empty CSV file (a header row is needed)"):format(path), { path = path, line = 1 })
  end
  batch.names, batch.cells = header, {}
  for j, name in ipairs(header) do batch.cells[name] = cols[j] end
  return batch
end

-- ingest.read_jsonl(path) -> batch of Lua rows (null members are NULL).
-- Blank lines are skipped. Raises invalid_argument with path and line.
function ingest.read_jsonl(path)
  local text = read_text(path)
  local rows, lines = {}, {}
  local line = 0
  for l in (text .. (text:sub(-1) == "\n" and "" or "\n")):gmatch("([^\n]*)\n") do
    line = line + 1
    if l:find("%S") then
      -- a repeated key or an integer beyond int64 would pass as the last
      -- value or a rounded float: both fail here instead
      local v, err = json.decode(l, { null_as_nil = true, exact_integers = true, unique_keys = true })
      if v == nil then
        -- each line is its own document: "at line 1" would mislead
        local what = err:gsub("^json: ", ""):gsub(" at line 1, column (%d+) %(byte %d+%)$", " at column %1")
        if not (what:find("^duplicate key") or what:find("^integer .* int64 range")) then what = "bad JSON: " .. what end
        errors.throw("invalid_argument", ("%s:%d: %s"):format(path, line, what), { path = path, line = line })
      end
      if type(v) ~= "table" or json.is_array(v) then
        errors.throw("invalid_argument", ("%s:%d: expected a JSON object"):format(path, line), { path = path, line = line })
      end
      rows[#rows + 1] = v
      lines[#rows] = line
    end
  end
  local batch = ingest.from_rows(rows)
  batch.kind, batch.path, batch.lines = "jsonl", path, lines
  return batch
end

-- ingest.load(source) -> batch from Lua rows or {from = "x.csv"|"x.jsonl"}
function ingest.load(source)
  if type(source) == "table" and source.from ~= nil then
    local path = source.from
    if type(path) ~= "string" then errors.throw("invalid_argument", "from must be a file path") end
    local fmt = source.format or path:match("%.(%w+)$")
    fmt = fmt and fmt:lower()
    if fmt == "csv" then return ingest.read_csv(path) end
    if fmt == "jsonl" or fmt == "ndjson" then return ingest.read_jsonl(path) end
    errors.throw("invalid_argument", ("cannot tell the format of '%s' (use .csv or .jsonl, or format=)"):format(path),
      { path = path })
  end
  return ingest.from_rows(source or {})
end

-- }======

-- {====== Schema

-- ingest.normalize_schema(s) -> array of {name=, data_type=} (from an array
-- of {name=, data_type=} or a map {name = type}; a map comes out sorted).
function ingest.normalize_schema(s)
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
    ingest.check_name(c.name)
    local ok, why = types.parse(c.data_type)
    if not ok then errors.throw("invalid_argument", ("column '%s': %s"):format(c.name, why), { column = c.name }) end
    if seen[c.name:lower()] then
      errors.throw("invalid_argument", ("duplicate column '%s' in schema"):format(c.name), { column = c.name })
    end
    seen[c.name:lower()] = true
  end
  return out
end

-- The type of a column of Lua values: int64 and float64 mix to float64.
local function infer_values(batch, name, col)
  local found, first
  for i = 1, batch.n do
    local v = col[i]
    if v ~= nil and not types.is_null(v) then
      local t, why = types.infer_value(v)
      if not t then fail(batch, i, name, ("column '%s': %s"):format(name, why)) end
      if not found then
        found, first = t, i
      elseif t ~= found then
        if (t == "float64" and found == "int64") or (t == "int64" and found == "float64") then
          found = "float64"
        else
          fail(batch, i, name, ("column '%s' holds %s here but %s in %s (give opts.schema)")
            :format(name, t, found, batch.path and ("line " .. batch.lines[first]) or ("row " .. first)))
        end
      end
    end
  end
  return found or "string"
end

--[[
ingest.resolve_schema(batch, given) -> array of {name=, data_type=}
The columns of a new table: given (normalize_schema output) first, in its
order; then the batch's other columns in CSV header order, else sorted.
Types not given are inferred (CSV cells with types.infer, values by kind).
]]
function ingest.resolve_schema(batch, given)
  local out, have = {}, {}
  for _, c in ipairs(given) do
    out[#out + 1] = { name = c.name, data_type = c.data_type }
    have[c.name] = true
  end
  local rest = {}
  if batch.names then
    for _, name in ipairs(batch.names) do if not have[name] then rest[#rest + 1] = name end end
  else
    for name in pairs(batch.cells) do if not have[name] then rest[#rest + 1] = name end end
    table.sort(rest)
  end
  local lower = {}
  for _, c in ipairs(out) do lower[c.name:lower()] = true end
  for _, name in ipairs(rest) do
    ingest.check_name(name)
    if lower[name:lower()] then
      errors.throw("invalid_argument", ("column '%s' clashes with another column (names are case-insensitive)"):format(name),
        { column = name })
    end
    lower[name:lower()] = true
    local col = batch.cells[name]
    local t
    if batch.kind == "csv" then
      local sample = {}
      for i = 1, batch.n do sample[i] = col[i] end
      local at, why
      t, at, why = types.infer(sample)
      if not t then
        fail(batch, at, name, ("column '%s': %s (give opts.schema float64 or string to keep it)"):format(name, why))
      end
    else
      t = infer_values(batch, name, col)
    end
    out[#out + 1] = { name = name, data_type = t }
  end
  if #out == 0 then
    errors.throw("invalid_argument", "no columns: give rows or opts.schema")
  end
  return out
end

-- }======

-- {====== Writing

local math_type = math.type

--[[
ingest.to_columns(batch, schema) -> cols, names, sqltypes
For the schema's stored (non-virtual) columns: one array of SQLite-ready
values each (cols[j][i], nil for NULL), their names and declared types. Batch columns
unknown to the schema, or virtual, raise invalid_argument; so does a value
that does not fit its column's type. Reuses the batch's arrays.
]]
function ingest.to_columns(batch, schema)
  local by_lower = {}
  for _, c in ipairs(schema) do by_lower[c.name:lower()] = c end
  for name in pairs(batch.cells) do
    local c = by_lower[name:lower()]
    if not c then
      local _, fields = locate(batch, 1, name)
      errors.throw("invalid_argument", ("%sunknown column '%s'"):format(batch.path and (batch.path .. ": ") or "", name), fields)
    end
    if c.virtual then
      local _, fields = locate(batch, 1, name)
      errors.throw("invalid_argument", ("column '%s' is virtual (computed by backfill) and cannot be written"):format(name), fields)
    end
  end
  local stored = 0
  for _, c in ipairs(schema) do if not c.virtual then stored = stored + 1 end end
  if stored > ingest.MAX_COLUMNS - 1 then
    local where = batch.path and (batch.path .. ": ") or ""
    errors.throw("invalid_argument", ("%s%d columns: SQLite allows at most %d columns per table (SQLITE_MAX_COLUMN), "
      .. "one of them our _rowid"):format(where, stored, ingest.MAX_COLUMNS), { path = batch.path })
  end
  local cells = {}
  for name, col in pairs(batch.cells) do cells[by_lower[name:lower()].name] = col end
  local cols, names, sqltypes, n = {}, {}, {}, batch.n
  for _, c in ipairs(schema) do
    if not c.virtual then
      local t = types.parse(c.data_type)
      local col = cells[c.name] or {}
      local k = t.kind
      if batch.kind == "csv" then
        for i = 1, n do
          local s = col[i]
          if s ~= nil then
            local v, why = types.parse_cell(t, s)
            if v == nil and why then fail(batch, i, c.name, ("column '%s': %s"):format(c.name, why)) end
            col[i] = types.to_sql(t, v)
          end
        end
      else
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
              if w == nil then fail(batch, i, c.name, ("column '%s': %s"):format(c.name, why)) end
              col[i] = types.to_sql(t, w)
            end
          end
        end
      end
      cols[#cols + 1] = col
      names[#names + 1] = c.name
      sqltypes[#sqltypes + 1] = t.sql
    end
  end
  return cols, names, sqltypes
end

--[[
ingest.write_fragments(tbl_dir, cols, names, sqltypes, n, fragment_size) -> array of
{data = "data/d-....db", rows = k}: one finished, synced data file per
fragment_size rows (nothing referenced yet: commit them or remove them).
Raises unavailable; files already written are removed first.
]]
function ingest.write_fragments(tbl_dir, cols, names, sqltypes, n, fragment_size)
  local out = {}
  local ok, err = pcall(function()
    local defs, qs, qn = { "_rowid INTEGER PRIMARY KEY" }, {}, {}
    for j, name in ipairs(names) do
      qn[j] = qi(name)
      qs[j] = "?"
      defs[j + 1] = qn[j] .. " " .. sqltypes[j]
    end
    for lo = 1, n, fragment_size do
      local hi = math.min(n, lo + fragment_size - 1)
      local tmp = storage.temp_data_path(tbl_dir)
      local db = storage.open_new_file(tmp)
      local okw, werr = pcall(function()
        storage.check(db:exec(("CREATE TABLE data(%s)"):format(table.concat(defs, ", "))))
        local slices = {}
        for j = 1, #cols do
          slices[j] = (lo == 1 and hi == n) and cols[j] or table.move(cols[j], lo, hi, 1, {})
        end
        storage.check(db:insert_columns(("INSERT INTO data(%s) VALUES (%s)")
          :format(table.concat(qn, ", "), table.concat(qs, ", ")), slices, hi - lo + 1))
        storage.finish_file(db)
      end)
      if not okw then
        db:close()
        fs.remove(tmp)
        error(werr, 0)
      end
      out[#out + 1] = { data = storage.publish_file(tbl_dir, tmp, "d"), rows = hi - lo + 1 }
    end
    if #out > 0 then storage.sync_data_dir(tbl_dir) end
  end)
  if not ok then
    for _, f in ipairs(out) do fs.remove(tbl_dir .. "/" .. f.data) end
    error(err, 0)
  end
  return out
end

-- }======

return ingest
