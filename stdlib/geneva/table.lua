--- Tables: rows, versions, computed columns and their backfills.
--
-- A Table is a name and a directory; every call reads the version it needs
-- from disk (the latest, or the pinned one after @{Table:checkout}), so
-- handles in several processes see each other's commits. Every write
-- commits a new version (`create_table` commits version 1, each commit adds
-- 1) and re-applies itself on top of concurrent commits.
--
-- NULL is `nil` in rows. Types: `int64`, `float64`, `string`, `bool`,
-- `blob`, `float32[N]` (an array of N numbers).
--
-- Errors are raised @{geneva.errors.Error} tables: `invalid_argument` (bad
-- input, bad SQL in `where`, writes on a pinned handle), `not_found` (unknown
-- column, missing version or table), `conflict` (existing column, column
-- changed under a commit), `unavailable` (I/O).
-- @module geneva.table
local json = require "geneva.json"
local types = require "geneva.store.types"
local errors = require "geneva.errors"
local sqlite = require "geneva.sqlite"
local storage = require "geneva.store.versions"
local backend = require "geneva.store.backend"
local reader = require "geneva.store.reader"
local ingest = require "geneva.store.ingest"
local where_check = require "geneva.store.where"

local M = {}

local Table = {}
Table.__index = Table
Table.__name = "geneva.Table"
M.Table = Table

-- A query builder, tbl:search() (documented at the end of the file)
local Query = {}
Query.__index = Query
Query.__name = "geneva.Query"

local qi = sqlite.quote_ident
local find_column = reader.find_column
local find_fragment = storage.find_fragment

-- M.new(db, name, dir) -> Table (no I/O; db:open_table checks existence)
function M.new(db, name, dir)
  return setmetatable({ db = db, name = name, dir = dir }, Table)
end

--- A table handle, from @{geneva.db.Db:open_table} or
-- @{geneva.db.Db:create_table}. Fields: `name`, `db`.
-- It prints as `geneva.Table docs v3 (4 columns)`.
-- @type Table

-- the name alone when its version cannot be read (dropped meanwhile)
function Table:__tostring()
  local ok, m = pcall(function() return self._pinned and storage.read(self.dir, self._pinned)
                                          or storage.latest(self.dir) end)
  if not ok or not m then return ("geneva.Table %s"):format(self.name) end
  return ("geneva.Table %s v%d (%s%d columns)"):format(self.name, m.version or self._pinned or 0,
    self._pinned and "pinned, " or "", #m.schema)
end

local function invalid(msg, fields) errors.throw("invalid_argument", msg, fields) end

-- The snapshot a read uses: the pinned version, else the latest.
local function current(self)
  if self._pinned then return storage.read(self.dir, self._pinned) end
  local m = storage.latest(self.dir)
  if not m then errors.throw("not_found", ("table '%s' does not exist"):format(self.name), { path = self.dir }) end
  return m
end

local function writable(self, what)
  if self._pinned then
    invalid(("cannot %s: table '%s' is checked out at version %d (read-only); call checkout_latest() first")
      :format(what, self.name, self._pinned))
  end
end

local function commit(self, operation, mutate, opts)
  return storage.commit(self.dir, operation, mutate, opts)
end

-- tbl:_snapshot([version]) -> snapshot (a fresh decoded copy: the caller may
-- keep or change it). Without version: the pinned one, else the latest.
function Table:_snapshot(version)
  if version then return storage.read(self.dir, version) end
  return current(self)
end

--- The table's version: the pinned one after @{checkout}, else the latest.
-- @treturn integer
-- @raise `not_found` when the table was dropped
function Table:version()
  if self._pinned then return self._pinned end
  local v = storage.latest_version(self.dir)
  if not v then errors.throw("not_found", ("table '%s' does not exist"):format(self.name), { path = self.dir }) end
  return v
end

--- Every version still kept, oldest first.
-- @treturn {integer,...}
function Table:versions()
  return storage.versions(self.dir)
end

--- Pins the handle at an older version: reads see that version, writes are
-- refused until @{checkout_latest}.
-- @int version a version number from @{versions}
-- @treturn Table the handle itself
-- @raise `not_found` when there is no such version; `invalid_argument` when
-- it is not an integer
-- @usage local v = tbl:version()
-- tbl:backfill("words")
-- print(tbl:checkout(v):count_rows("words IS NOT NULL"))   -- as before the backfill
-- tbl:checkout_latest()
function Table:checkout(version)
  if math.type(version) ~= "integer" then
    local i = math.tointeger(version)
    if not i then invalid("checkout: version must be an integer, got " .. tostring(version)) end
    version = i
  end
  storage.read(self.dir, version)   -- raises not_found
  self._pinned = version
  return self
end

--- Unpins the handle: reads see the latest version again, writes work.
-- @treturn Table the handle itself
function Table:checkout_latest()
  self._pinned = nil
  return self
end

-- Copies a JSON-decoded value into plain tables (no json metatables).
local function plain(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = plain(x) end
  return t
end

-- A schema prints as one line per column; a UDF as its name and version.
local Schema = { __name = "geneva.Schema" }
function Schema.__tostring(sc)
  local lines, w = { ("geneva.Schema (%d columns)"):format(#sc) }, 0
  for _, c in ipairs(sc) do w = math.max(w, #c.name) end
  for _, c in ipairs(sc) do
    local udf = c.udf and ("  udf %s %s"):format(tostring(c.udf.module and (c.udf.module .. "." .. tostring(c.udf["function"]))
      or c.udf.name), tostring(c.udf_version):sub(1, 12)) or (c.virtual and "  virtual" or "")
    lines[#lines + 1] = ("  %-" .. w .. "s  %s%s"):format(c.name, c.data_type, udf)
  end
  return table.concat(lines, "\n")
end

--- The columns, in order.
-- An array of `{name=, data_type=, virtual=, udf=, udf_version=}` (`udf`:
-- a virtual column's UDF spec, `udf_version` its version), also indexed by
-- name. It prints as one line per column.
-- @treturn table
-- @usage for _, c in ipairs(tbl:schema()) do print(c.name, c.data_type, c.virtual) end
-- print(tbl:schema().words.udf_version)
function Table:schema()
  local m = current(self)
  local out = setmetatable({}, Schema)
  for i, c in ipairs(m.schema) do
    local e = { name = c.name, data_type = c.data_type, virtual = c.virtual == true,
                udf = plain(c.udf), udf_version = c.udf_version }
    out[i] = e
    out[c.name] = e
  end
  return out
end

-- {====== Reading

-- Prepares sql on db; a failure blames the where clause when there is one.
local function prepare(db, sql, where, what)
  local st, msg, code = db:prepare(sql)
  if st then return st end
  if where then where_check.fail(what, where, msg) end
  errors.throw("internal", msg, { cause = code })
end

-- Columns a reader must expose for `names` plus what `where` mentions.
local function reader_columns(m, names, where)
  if not where then return names end
  local out, seen = {}, {}
  for _, n in ipairs(names) do out[#out + 1] = n seen[n:lower()] = true end
  for _, n in ipairs(reader.columns_in(m, where)) do
    if not seen[n:lower()] then out[#out + 1] = n seen[n:lower()] = true end
  end
  return out
end

--- Counts rows.
--
-- A `where` (here, in @{to_rows}, @{search} and backfills) is one SQL
-- expression over the table's columns, as SQLite reads it: comments, `;`, a
-- stray `)`, subqueries, `IN <table>` and parameters are refused.
-- @string[opt] where e.g. `"content IS NOT NULL AND id > 10"`
-- @treturn integer
-- @raise `invalid_argument` for a bad `where`
function Table:count_rows(where)
  local m = current(self)
  where_check.check(where, m, "count_rows")
  local total = 0
  if not where then
    for _, f in ipairs(m.fragments) do total = total + f.rows end
    return total
  end
  local cols = reader_columns(m, {}, where)
  for _, f in ipairs(m.fragments) do
    local db <close> = reader.open(self.dir, m, f, { columns = cols })
    local st <close> = prepare(db, ("SELECT count(*) FROM t WHERE (%s)"):format(where), where, "count_rows")
    local r, msg = st:step()
    if not r then where_check.fail("count_rows", where, msg) end
    total = total + st:get(1)
  end
  return total
end

-- Resolves requested column names against the schema (case-insensitive);
-- "_rowid" is allowed. Raises invalid_argument for unknown names.
local function resolve_columns(m, names)
  if names == nil then
    local out = {}
    for i, c in ipairs(m.schema) do out[i] = c.name end
    return out
  end
  if type(names) == "string" then names = { names } end
  if type(names) ~= "table" then invalid("columns must be an array of column names") end
  local out = {}
  for _, n in ipairs(names) do
    if n == "_rowid" then
      out[#out + 1] = n
    else
      local c = type(n) == "string" and find_column(m, n)
      if not c then invalid(("unknown column '%s'"):format(tostring(n)), { column = n }) end
      out[#out + 1] = c.name
    end
  end
  return out
end

-- to_rows(tbl, opts, what): Table:to_rows and Query:to_rows; `what` names
-- the caller in errors.
local function to_rows(self, opts, what)
  opts = opts or {}
  if type(opts) ~= "table" then invalid("to_rows: options must be a table") end
  require("geneva.suggest").check_options(what, opts, { "columns", "where", "limit" })
  local where, limit = opts.where, opts.limit
  if limit ~= nil and (math.type(limit) ~= "integer" or limit < 0) then
    invalid("to_rows: limit must be a non-negative integer")
  end
  local m = current(self)
  local names = resolve_columns(m, opts.columns)
  where_check.check(where, m, what)

  local stored, fix = {}, {}
  for _, n in ipairs(names) do
    if n ~= "_rowid" then
      stored[#stored + 1] = n
      local c = find_column(m, n)
      local t = types.parse(c.data_type)
      if t.kind == "bool" or t.kind == "vector" or t.kind == "float64" then fix[#fix + 1] = { n, t } end
    end
  end
  local sel = {}
  for i, n in ipairs(names) do sel[i] = qi(n) end
  if #sel == 0 then sel[1] = "_rowid AS __r" end
  local cols = reader_columns(m, stored, where)

  local out, n = {}, 0
  for _, f in ipairs(m.fragments) do
    if limit and n >= limit then break end
    local sql = ("SELECT %s FROM t%s ORDER BY _rowid%s"):format(table.concat(sel, ", "),
      where and (" WHERE (" .. where .. ")") or "", limit and (" LIMIT " .. (limit - n)) or "")
    local db <close> = reader.open(self.dir, m, f, { columns = cols })
    local st <close> = prepare(db, sql, where, what)
    while true do
      local r, msg = st:step()
      if not r then
        if where then where_check.fail(what, where, msg) end
        errors.throw("unavailable", msg)
      end
      if r == "done" then break end
      local row = st:named_row()
      row.__r = nil
      for _, fx in ipairs(fix) do
        local v = row[fx[1]]
        if v ~= nil then row[fx[1]] = types.from_sql(fx[2], v) end
      end
      n = n + 1
      out[n] = row
    end
  end
  return out
end

--- Reads rows into Lua, in (fragment, rowid) order.
-- Values come back typed: `nil` for NULL, booleans, `float32[N]` as arrays
-- of numbers, 64-bit integers exact.
-- @tab[opt] opts `columns` (names; `"_rowid"`, the row's number in its
-- fragment, allowed), `where` (as @{count_rows}), `limit`
-- @treturn {table,...} records `{column = value}`
-- @raise `invalid_argument` for an unknown column, a bad `where` or limit
-- @usage for _, r in ipairs(tbl:to_rows { columns = { "id", "words" }, where = "words > 3", limit = 5 }) do
--   print(r.id, r.words)
-- end
function Table:to_rows(opts) return to_rows(self, opts, "to_rows") end

--- A query builder over this table.
-- @treturn Query
-- @usage tbl:search():where("id < 10"):select { "id" }:to_rows()
function Table:search()
  return setmetatable({ tbl = self }, Query)
end

-- }======

-- {====== Writing

--- Appends rows (new fragments of at most the table's fragment size) in
-- one version. Nothing is committed when any row is bad. Computed columns
-- of the new rows are NULL until a backfill computes them. Files stream a
-- chunk at a time and are read by the table's column types, with the
-- rules of @{geneva.db.Db:create_table}.
-- @tparam {table,...}|table rows an array of records, or
-- `{from = "file.csv" | "file.jsonl"}`
-- @treturn Table the handle itself
-- @raise `invalid_argument` naming the row or `file:line`; on a pinned handle too
-- @usage tbl:add { { id = 1001, content = "more text" } }
function Table:add(rows)
  writable(self, "add rows")
  local src <close> = ingest.open(rows)
  local m = current(self)
  src:bind(m.schema)
  local w = ingest.writer(self.dir, m.schema, src.names, m.fragment_size or ingest.DEFAULT_FRAGMENT_SIZE)
  local ok, err = pcall(function()
    ingest.copy(src, w)
    local frags = w:finish()
    if #frags == 0 then return end
    commit(self, "add", function(cur)
      local next_id = cur.next_fragment_id or 1
      for _, f in ipairs(frags) do
        cur.fragments[#cur.fragments + 1] = { id = next_id, rows = f.rows, data = f.data, columns = json.object() }
        next_id = next_id + 1
      end
      cur.next_fragment_id = next_id
      return cur
    end, { base = m })
  end)
  if not ok then
    w:abort()
    error(err, 0)
  end
  return self
end

-- Checks a UDF object; returns its spec and input column names.
local function udf_parts(name, u)
  if type(u) ~= "table" or type(u.spec) ~= "function" then
    invalid(("column '%s': expected a geneva.udf, got %s"):format(name, type(u)), { column = name })
  end
  local spec = u:spec()
  if type(spec) ~= "table" then invalid(("column '%s': udf:spec() must return a table"):format(name), { column = name }) end
  local ok, err = pcall(json.encode, spec)
  if not ok then invalid(("column '%s': the udf spec is not serializable: %s"):format(name, tostring(err)), { column = name }) end
  if type(u.version) ~= "string" then invalid(("column '%s': the udf has no version"):format(name), { column = name }) end
  local dt = u.data_type or spec.data_type
  local t, why = types.parse(dt)
  if not t then invalid(("column '%s': %s"):format(name, why), { column = name }) end
  local inputs = u.input_columns or spec.input_columns or {}
  return spec, inputs, dt
end

-- Raises unless every input exists in m and none is the column itself.
local function check_inputs(m, name, inputs)
  for _, inp in ipairs(inputs) do
    if type(inp) ~= "string" or inp:lower() == name:lower() then
      invalid(("column '%s' cannot be an input of its own udf"):format(name), { column = name })
    end
    if not find_column(m, inp) then
      invalid(("column '%s': udf input column '%s' does not exist"):format(name, inp), { column = inp })
    end
  end
end

--- Adds computed (virtual) columns, NULL until @{backfill} computes them.
-- A column's type is its UDF's `data_type`; the UDF's input columns must
-- exist.
-- @tparam {[string]=geneva.udf.Udf} map column name to UDF
-- @treturn Table the handle itself
-- @raise `conflict` when a column of that name exists; `invalid_argument`
-- for a bad name, or an input column that does not exist or is the column
-- itself
-- @usage tbl:add_columns { words = geneva.udf { data_type = "int64",
--   fn = function(content) return content and select(2, content:gsub("%S+", "")) end } }
function Table:add_columns(map)
  writable(self, "add columns")
  if type(map) ~= "table" then invalid("add_columns: expected a table {name = udf}") end
  local names = {}
  for name, u in pairs(map) do
    ingest.check_name(name)
    names[#names + 1] = { name = name, udf = u }
  end
  table.sort(names, function(a, b) return a.name < b.name end)
  if #names == 0 then return self end
  for _, e in ipairs(names) do e.spec, e.inputs, e.data_type = udf_parts(e.name, e.udf) end
  commit(self, "add_columns", function(m)
    for _, e in ipairs(names) do
      if find_column(m, e.name) then
        errors.throw("conflict", ("column '%s' already exists"):format(e.name), { column = e.name })
      end
      check_inputs(m, e.name, e.inputs)
      m.schema[#m.schema + 1] = { name = e.name, data_type = e.data_type, virtual = true,
                                  udf = e.spec, udf_version = e.udf.version }
      for _, f in ipairs(m.fragments) do f.columns[e.name] = nil end
    end
    return m
  end)
  return self
end

--- Gives virtual columns new UDFs.
-- The values already computed stay, but as their UDF version now differs,
-- the next @{backfill} recomputes them. The data type must stay the same
-- (drop and re-add the column to change it).
-- @tparam {table,...}|table list `{ {path = "column", udf = new_udf}, ... }`,
-- one such entry, or `{column = new_udf, ...}` as @{add_columns} takes
-- @treturn Table the handle itself
-- @raise `not_found` for an unknown column; `invalid_argument` for a stored
-- column, another data type, a missing input column, or no column at all
-- (nothing is committed then)
-- @usage tbl:alter_columns { words = geneva.udf { data_type = "int64",
--   fn = function(content) return content and #content // 6 end } }
-- tbl:backfill("words")    -- recomputes every row
function Table:alter_columns(list)
  writable(self, "alter columns")
  local form = "{ {path = column, udf = udf}, ... } or {column = udf, ...}"
  if type(list) ~= "table" then invalid(("alter_columns: expected %s, got %s"):format(form, type(list))) end
  if type(list.path) == "string" or type(list.name) == "string" then list = { list } end
  if #list == 0 and next(list) ~= nil then
    -- the map form, as add_columns takes it; string keys only
    local entries = {}
    for k, u in pairs(list) do
      if type(k) ~= "string" then
        invalid(("alter_columns: expected %s; key %s is neither"):format(form, tostring(k)))
      end
      entries[#entries + 1] = { path = k, udf = u }
    end
    table.sort(entries, function(a, b) return a.path < b.path end)
    list = entries
  else
    for k in pairs(list) do
      if math.type(k) ~= "integer" or k < 1 or k > #list then
        invalid(("alter_columns: expected %s, not both; '%s' is neither"):format(form, tostring(k)))
      end
    end
  end
  if #list == 0 then invalid(("alter_columns: no column to alter (expected %s)"):format(form)) end
  local changes = {}
  for i, a in ipairs(list) do
    local path = type(a) == "table" and (a.path or a.name)
    if type(path) ~= "string" then invalid(("alter_columns: entry %d needs path = column name"):format(i)) end
    if a.udf == nil then invalid(("alter_columns: entry %d ('%s') needs udf ="):format(i, path), { column = path }) end
    local spec, inputs, dt = udf_parts(path, a.udf)
    changes[i] = { path = path, udf = a.udf, spec = spec, inputs = inputs, data_type = dt }
  end
  commit(self, "alter_columns", function(m)
    for _, a in ipairs(changes) do
      local c = find_column(m, a.path)
      if not c then errors.throw("not_found", ("unknown column '%s'"):format(a.path), { column = a.path }) end
      if not c.virtual then
        invalid(("column '%s' is stored, not virtual: only virtual columns have a udf"):format(c.name), { column = c.name })
      end
      if a.data_type ~= c.data_type then
        invalid(("column '%s' is %s; the new udf returns %s (drop and re-add the column to change its type)")
          :format(c.name, c.data_type, a.data_type), { column = c.name })
      end
      check_inputs(m, c.name, a.inputs)
      c.udf, c.udf_version = a.spec, a.udf.version
    end
    return m
  end)
  return self
end

--- Drops columns.
-- @tparam {string,...}|string list names, or one name
-- @treturn Table the handle itself
-- @raise `not_found` for an unknown column; `invalid_argument` when a UDF
-- still reads it or no stored column would remain
function Table:drop_columns(list)
  writable(self, "drop columns")
  if type(list) == "string" then list = { list } end
  if type(list) ~= "table" or #list == 0 then invalid("drop_columns: expected an array of column names") end
  commit(self, "drop_columns", function(m)
    local drop = {}
    for _, name in ipairs(list) do
      local c = type(name) == "string" and find_column(m, name)
      if not c then errors.throw("not_found", ("unknown column '%s'"):format(tostring(name)), { column = name }) end
      drop[c.name] = true
    end
    local keep, stored = json.array(), 0
    for _, c in ipairs(m.schema) do
      if not drop[c.name] then
        keep[#keep + 1] = c
        if not c.virtual then stored = stored + 1 end
      end
    end
    if stored == 0 then invalid("cannot drop every stored column of a table") end
    for _, c in ipairs(keep) do
      for _, inp in ipairs(c.udf and c.udf.input_columns or {}) do
        for d in pairs(drop) do
          if d:lower() == tostring(inp):lower() then
            invalid(("cannot drop '%s': the udf of column '%s' reads it"):format(d, c.name), { column = d })
          end
        end
      end
    end
    m.schema = keep
    for _, f in ipairs(m.fragments) do
      for d in pairs(drop) do f.columns[d] = nil end
    end
    return m
  end)
  return self
end

-- Runs commit(mutate) where mutate may fold file lists (creating files):
-- fold(list) is cached by list, and files an unused attempt made are removed,
-- as are the files of `made` (made before the commit) it does not reference.
-- opts go to storage.commit.
local function commit_with_folds(self, operation, body, made, opts)
  local cache = {}
  made = made or {}
  local function fold(list)
    local key = {}
    for i, e in ipairs(list) do key[i] = e.file .. "@" .. tostring(e.udf_version) end
    key = table.concat(key, "|")
    if not cache[key] then
      cache[key] = storage.fold_column_files(self.dir, list)
      for _, e in ipairs(cache[key]) do made[e.file] = true end
    end
    local out = json.array()
    for i, e in ipairs(cache[key]) do out[i] = { file = e.file, udf_version = e.udf_version, lo = e.lo, hi = e.hi } end
    return out
  end
  local ok, res = pcall(commit, self, operation, function(m) return body(m, fold) end, opts)
  -- files folded for an attempt that lost, or never used
  local used = {}
  if ok and res then
    for _, f in ipairs(res.fragments) do
      for _, list in pairs(f.columns) do
        for _, e in ipairs(list) do used[e.file] = true end
      end
    end
  end
  local orphans = {}
  for file in pairs(made) do if not used[file] then orphans[#orphans + 1] = file end end
  storage.remove_files(self.dir, orphans)
  if not ok then error(res, 0) end
  return res
end

--- Removes old versions and the files no kept version uses.
-- Versions older than `older_than` go (never the latest), with their files
-- and the orphans of crashed commits, failed folds and killed workers
-- (older than `grace`, so no commit in flight loses its file). After
-- @{compact}, this is what brings the file count down. `geneva tables
-- cleanup` is its command-line twin.
-- @tab[opt] opts `older_than` (seconds, default 7 days), `grace` (seconds,
-- default 1 hour)
-- @treturn table `{versions_removed=, files_removed=, bytes_removed=}`
-- @raise `invalid_argument` for a bad option or on a pinned handle
-- @usage tbl:cleanup_old_versions { older_than = 0 }   -- keep only the latest version
function Table:cleanup_old_versions(opts)
  writable(self, "clean up")
  if opts ~= nil and type(opts) ~= "table" then invalid("cleanup_old_versions: options must be a table") end
  opts = opts or {}
  require("geneva.suggest").check_options("cleanup_old_versions", opts, { "older_than", "grace" })
  for k, v in pairs(opts) do
    if type(v) ~= "number" or v < 0 then invalid(("cleanup_old_versions: %s must be a number of seconds"):format(k)) end
  end
  return storage.cleanup(self.dir, { older_than = opts.older_than or 7 * 86400, grace = opts.grace })
end

-- Whether a backfill of this table is under way (its driver alive): its
-- tasks name fragments, which compaction must not merge away.
local function backfill_running(self)
  local job = require "geneva.backfill.job"
  for _, st in ipairs({ "RUNNING", "PENDING" }) do
    if #job.list(self.db.dir, { table = self.name, status = st }) > 0 then return true end
  end
  return false
end

--- Rewrites the latest version in fewer files, as a new version. Runs of
-- consecutive fragments that fit in one `fragment_size` become one fragment
-- (one data file, one column file per virtual column; rowids renumbered
-- within it); every other fragment's column files are folded into one per
-- column. Values, UDF versions and failed marks read as before. Fragments
-- are not merged while a backfill of the table runs, nor when a checkpoint
-- in `_staging` belongs to them. Older versions still read their own files
-- (@{Table:cleanup_old_versions} removes them); nothing is committed when
-- there is nothing to do.
-- @function Table:compact
-- @treturn Table the handle itself
-- @raise `invalid_argument` for any argument: it takes no options
function Table:compact(...)
  if select("#", ...) > 0 then
    local opts = ...
    if type(opts) ~= "table" then invalid("compact: it takes no arguments") end
    require("geneva.suggest").check_options("compact (it takes no options)", opts, {})
  end
  writable(self, "compact")
  local compact = require "geneva.store.compact"
  local m0 = current(self)
  local groups = {}
  if not backfill_running(self) then
    groups = compact.plan(m0, { skip = compact.staged_fragments(self.dir) })
  end
  local any = #groups > 0
  for _, f in ipairs(m0.fragments) do
    for _, list in pairs(f.columns) do if #list > 1 then any = true end end
  end
  if not any then return self end
  -- the merges read only immutable files of m0: done before the commit,
  -- which takes a group only if its fragments are still exactly as in m0
  local made, first = {}, {}
  local ok, err = pcall(function()
    for _, g in ipairs(groups) do
      local files
      g.fragment, files = compact.merge(self.dir, m0, g)
      table.move(files, 1, #files, #made + 1, made)
      first[g[1].id] = g
    end
  end)
  if not ok then
    storage.remove_files(self.dir, made)
    error(err, 0)
  end
  local schema0 = json.canonical(m0.schema)
  local function same(a, b) return json.canonical(a) == json.canonical(b) end
  commit_with_folds(self, "compact", function(m, fold)
    local out, changed, next_id = json.array(), false, m.next_fragment_id
    if not next_id then
      next_id = 1
      for _, f in ipairs(m.fragments) do next_id = math.max(next_id, f.id + 1) end
    end
    local merge_ok = json.canonical(m.schema) == schema0
    local i = 1
    while i <= #m.fragments do
      local f, g = m.fragments[i], first[m.fragments[i].id]
      local fits = merge_ok and g ~= nil
      for k = 1, g and #g or 0 do
        local cur = m.fragments[i + k - 1]
        fits = fits and cur ~= nil and cur.id == g[k].id and same(cur, g[k])
      end
      if fits then
        local nf = { id = next_id, rows = g.fragment.rows, data = g.fragment.data, columns = json.object() }
        for name, list in pairs(g.fragment.columns) do nf.columns[name] = json.array({ table.unpack(list) }) end
        next_id = next_id + 1
        out[#out + 1] = nf
        i = i + #g
        changed = true
      else
        for name, list in pairs(f.columns) do
          if #list > 1 then
            f.columns[name] = fold(list)
            changed = true
          end
        end
        out[#out + 1] = f
        i = i + 1
      end
    end
    if not changed then return false end     -- every group changed meanwhile: no version
    m.fragments, m.next_fragment_id = out, next_id
    return m
  end, made)
  return self
end

--[[
tbl:_commit_column_files(column, udf_version, files) -> version, committed
For the backfill driver. files: array of {fragment = id, path = staged file
holding col(_rowid INTEGER PRIMARY KEY, value) [and failed marks], lo =, hi =}. Publishes each
into data/ and appends it to its fragment's list for column in a new version
(re-applied over concurrent commits); a list longer than
storage.MAX_COLUMN_FILES is folded. Files of fragments that no longer exist
are skipped (left where they are). Raises conflict when column is gone, not
virtual, or its udf_version is no longer udf_version. A staged file is
removed only once its commit has landed. Returns the new version and how many files it
committed (the latest version, 0 and no commit when none applied).
]]
--- Computes a virtual column's missing values and waits for the end.
--
-- Missing rows are those never computed by the column's current UDF
-- version (new rows, a new or altered UDF) and those that failed under
-- `on_error = "null"`. A NULL the UDF returns is a computed value: a second
-- run with nothing missing computes and commits nothing. It commits every
-- few tasks, and a re-run after a crash picks up the checkpoints of the
-- one that died. It runs in the current context's workers, else on the
-- embedded local cluster (workers = cores). On a terminal it draws a
-- progress bar on stderr.
-- @string column a virtual column
-- @tab[opt] opts `where` (narrows the rows; as @{count_rows}), `batch_size`
-- (rows per task), `concurrency` (worker slots), `commit_every` (tasks per
-- commit), `resume` (default true: reuse checkpoints of an unfinished job)
-- @treturn table the finished job's record (as @{geneva.backfill.job.Job:record})
-- @raise the job's error when it ends FAILED (e.g. `udf_error` with
-- `column`, `rowid`, `value`) or CANCELLED (`cancelled`); `not_found` for an
-- unknown column; `invalid_argument` for a stored column or a bad `where`;
-- `conflict` while another job backfills the same column
-- @usage local rec = tbl:backfill("words", { where = "content IS NOT NULL", batch_size = 10000 })
-- print(rec.rows.computed, rec.rows.failed)
function Table:backfill(column, opts)
  return require("geneva.backfill").run(self, column, opts)
end

--- Starts a backfill in the background and returns at once.
-- The job's driver runs in a process of its own: it progresses while the
-- script sleeps, computes or sits at the REPL prompt; `geneva jobs
-- show|logs|wait|cancel` see it from another shell. It belongs to the
-- current context (whose exit waits for it), else to the host, and is
-- stopped with its owner (Ctrl-C, `kill`).
-- @string column
-- @tab[opt] opts as @{backfill}
-- @treturn geneva.backfill.job.Job
-- @raise as @{backfill} for errors found before the job starts
-- @usage local job = tbl:backfill_async("words")
-- -- ... other work ...
-- job:wait()
function Table:backfill_async(column, opts)
  return require("geneva.backfill").start_async(self, column, opts)
end

function Table:_commit_column_files(column, udf_version, files)
  writable(self, "commit column files")
  if type(column) ~= "string" or type(udf_version) ~= "string" or type(files) ~= "table" then
    invalid("_commit_column_files(column, udf_version, files): bad arguments")
  end
  local function check_column(m)
    local c = find_column(m, column)
    if not c or not c.virtual then
      errors.throw("conflict", ("column '%s' no longer exists (dropped during the backfill?)"):format(column), { column = column })
    end
    if c.udf_version ~= udf_version then
      errors.throw("conflict", ("column '%s' was altered during the backfill (its udf version changed)"):format(column),
        { column = column })
    end
    return c
  end
  local m0 = current(self)
  local cname = check_column(m0).name
  local moved = {}
  local ok, err = pcall(function()
    for i, f in ipairs(files) do
      if type(f) ~= "table" or math.type(f.fragment) ~= "integer" or type(f.path) ~= "string" then
        invalid(("_commit_column_files: files[%d] needs fragment (integer) and path"):format(i))
      end
      if find_fragment(m0, f.fragment) then
        local rel = storage.publish_file(self.dir, f.path, "c", { keep_source = true })
        moved[#moved + 1] = { fragment = f.fragment, file = rel, from = f.path, lo = f.lo, hi = f.hi }
      end
    end
    if #moved > 0 then storage.sync_data_dir(self.dir) end
  end)
  -- until the commit lands the staged files stay: a failure drops only
  -- the published copies
  local function unpublish()
    for _, e in ipairs(moved) do backend.delete(self.dir .. "/" .. e.file) end
  end
  if not ok then
    unpublish()
    error(err, 0)
  end
  if #moved == 0 then return self:version(), 0 end
  local applied = {}
  local res
  ok, res = pcall(commit_with_folds, self, "backfill", function(m, fold)
    check_column(m)
    applied = {}
    for _, e in ipairs(moved) do
      local f = find_fragment(m, e.fragment)
      if f then
        applied[e.file] = true
        local list = f.columns[cname] or json.array()
        list[#list + 1] = { file = e.file, udf_version = udf_version, lo = e.lo, hi = e.hi }
        f.columns[cname] = list
      end
    end
    if next(applied) == nil then return false end    -- their fragments are gone: no version
    for _, f in ipairs(m.fragments) do
      local list = f.columns[cname]
      if list and #list > storage.MAX_COLUMN_FILES then f.columns[cname] = fold(list) end
    end
    return m
  end, nil, { base = m0 })
  if not ok then
    unpublish()
    error(res, 0)
  end
  -- files whose fragment vanished meanwhile stay staged only; files folded
  -- into a new one at once were never referenced by any version
  local used, committed = {}, 0
  for _, f in ipairs(res and res.fragments or {}) do
    for _, e in ipairs(f.columns[cname] or {}) do used[e.file] = true end
  end
  for _, e in ipairs(moved) do
    if not applied[e.file] then
      backend.delete(self.dir .. "/" .. e.file)
    else
      committed = committed + 1
      if not used[e.file] then backend.delete(self.dir .. "/" .. e.file) end
      backend.delete(e.from)
    end
  end
  return res and res.version or self:version(), committed
end

-- }======

--- A query: `tbl:search():where(sql):select{...}:limit(n):to_rows()`.
-- Each call returns the query itself; nothing is read until
-- @{Query:to_rows} or @{Query:count_rows}.
-- @type Query

function Query:__tostring()
  return ("geneva.Query %s%s%s%s"):format(self.tbl.name,
    self._where and (" where " .. self._where) or "",
    self._columns and (" select " .. table.concat(self._columns, ", ")) or "",
    self._limit and (" limit " .. tostring(self._limit)) or "")
end

--- Keeps the rows for which `sql` holds.
-- @string sql one SQL expression over the table's columns (as in @{Table:count_rows})
-- @treturn Query
-- @raise `invalid_argument` for anything that is not one expression, or an unknown column
function Query:where(sql)
  self._where = where_check.check(sql, current(self.tbl), "search")
  return self
end

--- Which columns the rows get (default: all).
-- @tparam {string,...} cols column names (`"_rowid"` allowed)
-- @treturn Query
function Query:select(cols)
  self._columns = cols
  return self
end

--- At most `n` rows.
-- @int n
-- @treturn Query
function Query:limit(n)
  self._limit = n
  return self
end

--- Runs the query.
-- @treturn {table,...} rows, as @{Table:to_rows}
-- @raise `invalid_argument` for an unknown column or a bad limit
-- @usage local long = tbl:search():where("words > 100"):select { "id", "words" }:limit(10):to_rows()
function Query:to_rows()
  return to_rows(self.tbl, { columns = self._columns, where = self._where, limit = self._limit }, "search")
end

--- Counts the rows the query's `where` keeps (its select and limit aside).
-- @treturn integer
function Query:count_rows()
  return self.tbl:count_rows(self._where)
end

return M
