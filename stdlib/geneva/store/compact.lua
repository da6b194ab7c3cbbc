-- geneva.store.compact: what tbl:compact() writes (docs/internals.md,
-- "Compaction"). Many small appends leave many small fragments, each a data
-- file plus column files per backfill: compaction rewrites runs of
-- consecutive small fragments as one fragment (one data file, one column
-- file per virtual column and UDF version), so the latest version reads
-- far fewer files; the old files stay for older versions until
-- tbl:cleanup_old_versions removes them.
--
--   compact.plan(m [, {skip = {[fragment id] = true}}]) -> groups: arrays of
--       two or more consecutive fragments of m whose rows together fit in
--       m.fragment_size (skip: fragments to leave alone)
--   compact.merge(tbl_dir, m, group) -> fragment, made: the group as one new
--       fragment {rows, data, columns} without an id (files published and
--       synced, not referenced; made lists them)
--   compact.staged_fragments(tbl_dir) -> {[fragment id] = true}: fragments
--       a backfill checkpoint (a staged output in _staging) belongs to
--
-- A merged fragment keeps the rows in order (rowids renumbered 1..rows, as
-- every fragment's), the stored values as they are (copied by SQLite, so
-- NaN BLOBs and types stay), and for each virtual column exactly what the
-- reader would have read: the winning value, its udf_version and its
-- failed mark (storage.fold_into).
local json = require "geneva.json"
local errors = require "geneva.errors"
local fs = require "geneva.fs"
local sqlite = require "geneva.sqlite"
local storage = require "geneva.store.versions"
local types = require "geneva.store.types"
local backend = require "geneva.store.backend"

local compact = {}

local qi = sqlite.quote_ident
local check = errors.io

local DEFAULT_FRAGMENT_SIZE = 100000   -- geneva.store.ingest's

-- Whether a fragment can be merged: every column file it has belongs to a
-- virtual column of the schema (a stored column never has any; this keeps
-- an unexpected snapshot as it is).
local function mergeable(m, f, skip)
  if skip[f.id] then return false end
  for name, list in pairs(f.columns or {}) do
    if #list > 0 then
      local c
      for _, x in ipairs(m.schema) do if x.name == name then c = x end end
      if not c or not c.virtual then return false end
    end
  end
  return true
end

function compact.plan(m, opts)
  local skip = opts and opts.skip or {}
  local size = m.fragment_size or DEFAULT_FRAGMENT_SIZE
  local groups, cur, rows = {}, {}, 0
  local function close()
    if #cur >= 2 then groups[#groups + 1] = cur end
    cur, rows = {}, 0
  end
  for _, f in ipairs(m.fragments) do
    if not mergeable(m, f, skip) or f.rows >= size then
      close()
    else
      if rows + f.rows > size then close() end
      cur[#cur + 1] = f
      rows = rows + f.rows
    end
  end
  close()
  return groups
end

function compact.staged_fragments(tbl_dir)
  local out = {}
  -- _staging/<column>/<udf_version>/f<fragment>-<lo>-<hi>.db (backfill.worker)
  for _, name in ipairs(backend.list(tbl_dir .. "/_staging") or {}) do
    for _, v in ipairs(backend.list(tbl_dir .. "/_staging/" .. name) or {}) do
      for _, file in ipairs(backend.list(tbl_dir .. "/_staging/" .. name .. "/" .. v) or {}) do
        local id = file:match("^f(%d+)%-%d+%-%d+%.db")
        if id then out[math.tointeger(tonumber(id))] = true end
      end
    end
  end
  return out
end

-- Copies fragment f's stored columns into main.data at rowid offset off.
local function copy_data(db, tbl_dir, stored, f, off)
  check(db:attach(storage.data_file(tbl_dir, f.data), "d", { immutable = true }))
  local ok, err = pcall(function()
    local in_data = {}
    for row in db:rows("PRAGMA d.table_info(data)") do in_data[row[2]:lower()] = true end
    local names, vals = {}, {}
    for i, c in ipairs(stored) do
      names[i] = qi(c.name)
      vals[i] = in_data[c.name:lower()] and qi(c.name) or "NULL"   -- a column the file predates
    end
    check(db:exec(("INSERT INTO main.data(_rowid%s) SELECT _rowid + %d%s FROM d.data ORDER BY _rowid")
      :format(#names > 0 and ", " .. table.concat(names, ", ") or "", off,
              #vals > 0 and ", " .. table.concat(vals, ", ") or "")))
  end)
  db:detach("d")
  if not ok then error(err, 0) end
end

function compact.merge(tbl_dir, m, group)
  local stored, virtual = {}, {}
  for _, c in ipairs(m.schema) do
    if c.virtual then virtual[#virtual + 1] = c else stored[#stored + 1] = c end
  end
  local tmp = storage.temp_data_path(tbl_dir)
  local db = storage.open_new_file(tmp)
  local made, closed = {}, false
  local ok, res = pcall(function()
    local defs = { "_rowid INTEGER PRIMARY KEY" }
    for _, c in ipairs(stored) do defs[#defs + 1] = qi(c.name) .. " " .. types.parse(c.data_type).sql end
    check(db:exec(("CREATE TABLE data(%s)"):format(table.concat(defs, ", "))))
    local folds = {}       -- virtual column index -> temp table name
    local off = 0
    for _, f in ipairs(group) do
      copy_data(db, tbl_dir, stored, f, off)
      for i, c in ipairs(virtual) do
        local list = (f.columns or {})[c.name]
        if list and #list > 0 then
          if not folds[i] then
            folds[i] = "v" .. i
            check(db:exec(("CREATE TEMP TABLE %s(_rowid INTEGER PRIMARY KEY, value, ver TEXT, failed INTEGER)")
              :format(folds[i])))
          end
          storage.fold_into(db, tbl_dir, list, "f")
          check(db:exec(("INSERT INTO temp.%s SELECT _rowid + %d, value, ver, failed FROM temp.f; DROP TABLE temp.f")
            :format(folds[i], off)))
        end
      end
      off = off + f.rows
    end
    local columns = json.object()
    for i, c in ipairs(virtual) do
      if folds[i] then
        local list, files = storage.write_fold(db, tbl_dir, folds[i])
        table.move(files, 1, #files, #made + 1, made)
        columns[c.name] = json.array(list)
      end
    end
    closed = true
    storage.finish_file(db)
    local data = storage.publish_file(tbl_dir, tmp, "d")
    made[#made + 1] = data
    storage.sync_data_dir(tbl_dir)
    return { rows = off, data = data, columns = columns }
  end)
  if not ok then
    if not closed then db:close() end
    fs.remove(tmp)
    storage.remove_files(tbl_dir, made)
    error(res, 0)
  end
  return res, made
end

return compact
