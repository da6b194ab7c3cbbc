-- geneva.store.reader: one fragment of one table version as a SQLite view
-- (docs/internals.md "The reader").
--
-- reader.open gives an in-memory geneva.sqlite Db where the TEMP VIEW `t`
-- has `_rowid`, each requested column by name, and for each virtual column
-- c a `"__ver_c"` with the udf_version of the file its value came from (NULL
-- when no column file holds the row) and a `"__failed_c"`, 1 when that file
-- marks the row failed (geneva.store.versions, "Failed marks"), else 0.
-- The fragment's data file and column
-- files are attached read-only; per rowid the newest column file wins, even
-- when its value is NULL. SQLite attaches at most 10 files (Debian builds it
-- with SQLITE_MAX_ATTACHED=10, which sqlite3_limit cannot raise), so
-- when a fragment needs more, the longest column lists are first folded into
-- TEMP tables (INSERT OR REPLACE in list order keeps "newest wins").
local sqlite = require "geneva.sqlite"
local errors = require "geneva.errors"
local storage = require "geneva.store.versions"

local reader = {}

reader.MAX_ATTACHED = 10   -- Debian's SQLITE_MAX_ATTACHED

local qi = sqlite.quote_ident
reader.quote_ident = qi      -- the same function, for older callers
local ql = storage.quote_literal

local check = errors.io

-- reader.find_column(snapshot, name) -> schema entry | nil (case-insensitive,
-- as SQLite identifiers are)
function reader.find_column(m, name)
  local lname = name:lower()
  for _, c in ipairs(m.schema) do
    if c.name:lower() == lname then return c end
  end
end

-- reader.columns_in(snapshot, sql) -> array of the schema's column names
-- that sql (a where) mentions: geneva.store.where.columns.
reader.columns_in = require("geneva.store.where").columns

--[[
reader.missing(column, udf_version [, fragment]) -> SQL condition over t:
the rows a backfill of column computes. Missing = never computed by this
UDF version (no column file holds the row, or the winning file's
udf_version differs) or failed under on_error = "null" (a failed mark in
the winning file). A NULL the UDF returned is a computed value. (perf) With
fragment and no file of column in it, every row is missing: "1", no test
per row. The version is a literal, so SQLite folds what it can.
]]
function reader.missing(column, udf_version, frag)
  if frag and #((frag.columns or {})[column] or {}) == 0 then return "1" end
  return ("(%s IS NOT %s OR %s)"):format(qi("__ver_" .. column), ql(udf_version), qi("__failed_" .. column))
end

--[[
reader.open(tbl_dir, snapshot, fragment [, {columns = {...}, reserve = n}]) -> Db
columns defaults to every column of the schema; an unknown name raises
invalid_argument. reserve keeps n attach slots free for the caller. Raises unavailable when a file cannot be opened. The
caller owns the Db (close it, or `local db <close> = reader.open(...)`).
]]
function reader.open(tbl_dir, m, frag, opts)
  local names = opts and opts.columns
  if not names then
    names = {}
    for i, c in ipairs(m.schema) do names[i] = c.name end
  end
  local cols, seen = {}, {}
  for _, name in ipairs(names) do
    local c = type(name) == "string" and reader.find_column(m, name)
    if not c then
      errors.throw("invalid_argument", ("unknown column '%s'"):format(tostring(name)), { column = name })
    end
    if not seen[c.name] then
      seen[c.name] = true
      cols[#cols + 1] = c
    end
  end

  local db = check(sqlite.open(":memory:"))
  local ok, err = pcall(function()
    check(db:exec("PRAGMA temp_store=MEMORY"))
    check(db:attach(storage.data_file(tbl_dir, frag.data), "d", { immutable = true }))
    local in_data = {}
    for row in db:rows("PRAGMA d.table_info(data)") do in_data[row[2]:lower()] = true end

    -- how each column is read: attached files or a fold table
    local lists, total = {}, 0
    for i, c in ipairs(cols) do
      lists[i] = (frag.columns and frag.columns[c.name]) or {}
      total = total + #lists[i]
    end
    local folded = {}
    local budget = reader.MAX_ATTACHED - 1 - (opts and opts.reserve or 0)
    while total > budget do
      local best
      for i in ipairs(cols) do
        if not folded[i] and #lists[i] > 0 and (not best or #lists[i] > #lists[best]) then best = i end
      end
      folded[best] = "fold_" .. best
      storage.fold_into(db, tbl_dir, lists[best], folded[best])
      total = total - #lists[best]
    end

    local sel, joins, nalias = { "base._rowid AS _rowid" }, {}, 0
    for i, c in ipairs(cols) do
      local base = (not c.virtual and in_data[c.name:lower()]) and ("base." .. qi(c.name)) or "NULL"
      local value, ver, failed
      if folded[i] then
        nalias = nalias + 1
        local j = "j" .. nalias
        joins[#joins + 1] = ("LEFT JOIN temp.%s AS %s ON %s._rowid = base._rowid"):format(folded[i], j, j)
        value = ("CASE WHEN %s._rowid IS NOT NULL THEN %s.value ELSE %s END"):format(j, j, base)
        ver, failed = j .. ".ver", ("coalesce(%s.failed, 0)"):format(j)
      elseif #lists[i] > 0 then
        local vcase, wcase, fcase, marks = {}, {}, {}, false
        for k = #lists[i], 1, -1 do        -- newest first
          local e = lists[i][k]
          nalias = nalias + 1
          local alias, j = "c" .. nalias, "j" .. nalias
          check(db:attach(storage.data_file(tbl_dir, e.file), alias, { immutable = true }))
          joins[#joins + 1] = ("LEFT JOIN %s.col AS %s ON %s._rowid = base._rowid"):format(alias, j, j)
          vcase[#vcase + 1] = ("WHEN %s._rowid IS NOT NULL THEN %s.value"):format(j, j)
          wcase[#wcase + 1] = ("WHEN %s._rowid IS NOT NULL THEN %s"):format(j,
            e.udf_version and ql(e.udf_version) or "NULL")
          -- (perf) a file without failures joins nothing more
          if c.virtual and storage.has_failed_marks(db, alias) then
            local fj = "f" .. nalias
            joins[#joins + 1] = ("LEFT JOIN %s.failed AS %s ON %s._rowid = base._rowid"):format(alias, fj, fj)
            fcase[#fcase + 1] = ("WHEN %s._rowid IS NOT NULL THEN %s._rowid IS NOT NULL"):format(j, fj)
            marks = true
          else
            fcase[#fcase + 1] = ("WHEN %s._rowid IS NOT NULL THEN 0"):format(j)
          end
        end
        value = ("CASE %s ELSE %s END"):format(table.concat(vcase, " "), base)
        ver = ("CASE %s ELSE NULL END"):format(table.concat(wcase, " "))
        failed = marks and ("CASE %s ELSE 0 END"):format(table.concat(fcase, " ")) or "0"
      else
        value, ver, failed = base, "NULL", "0"
      end
      sel[#sel + 1] = value .. " AS " .. qi(c.name)
      if c.virtual then
        sel[#sel + 1] = ver .. " AS " .. qi("__ver_" .. c.name)
        sel[#sel + 1] = failed .. " AS " .. qi("__failed_" .. c.name)
      end
    end
    check(db:exec(("CREATE TEMP VIEW t AS SELECT %s FROM d.data AS base %s")
      :format(table.concat(sel, ", "), table.concat(joins, " "))))
  end)
  if not ok then
    db:close()
    error(err, 0)
  end
  return db
end

return reader
