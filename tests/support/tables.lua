-- Test tables: making them, and checking what a backfill left in them.
local assert = require "luassert"   -- busted's assert lives in the spec's env only
local fs = require "geneva.fs"

local tables = {}

-- tables.make(db, name, n [, opts]) -> Table
-- Creates table `name` with n rows: opts.rows(i) gives row i (default
-- {id = i}); opts.columns, when given, is added with tbl:add_columns; the
-- other opts (fragment_size, schema, ...) go to db:create_table.
function tables.make(db, name, n, opts)
  local create, row, columns = nil, function(i) return { id = i } end, nil
  for k, v in pairs(opts or {}) do
    if k == "rows" then row = v
    elseif k == "columns" then columns = v
    else create = create or {}; create[k] = v end
  end
  local rows = {}
  for i = 1, n do rows[i] = row(i) end
  local tbl = db:create_table(name, rows, create)
  if columns then tbl:add_columns(columns) end
  return tbl
end

-- tables.maker(defaults) -> function(db, name, n [, opts]): tables.make
-- with defaults under opts (a spec's own kind of rows, say).
function tables.maker(defaults)
  return function(db, name, n, opts)
    local o = {}
    for k, v in pairs(defaults) do o[k] = v end
    for k, v in pairs(opts or {}) do o[k] = v end
    return tables.make(db, name, n, o)
  end
end

-- tables.staged(tbl, column [, all]) -> paths of the column's staged outputs
-- (checkpoints f<frag>-<lo>-<hi>.db); with all, of every file there.
function tables.staged(tbl, column, all)
  local backend = require "geneva.store.backend"   -- in an object store: what was uploaded
  local out = {}
  local base = tbl.dir .. "/_staging/" .. column
  for _, v in ipairs(backend.list(base) or {}) do
    for _, f in ipairs(backend.list(base .. "/" .. v) or {}) do
      if all or f:match("^f%d+%-%d+%-%d+%.db$") then
        out[#out + 1] = assert(backend.fetch(base .. "/" .. v .. "/" .. f))
      end
    end
  end
  return out
end

-- tables.check_exact(tbl, n, col, f): column col holds f(id, text) for ids
-- 1..n, each id exactly once.
function tables.check_exact(tbl, n, col, f)
  local rows = tbl:to_rows { columns = { "id", "text", col } }
  assert.equal(n, #rows)
  local seen, bad = {}, 0
  for _, r in ipairs(rows) do
    assert.is_nil(seen[r.id], "duplicate row " .. tostring(r.id))
    seen[r.id] = true
    if r[col] ~= f(r.id, r.text) then bad = bad + 1 end
  end
  for i = 1, n do assert.is_true(seen[i], "lost row " .. i) end
  assert.equal(0, bad, ("%d wrong values in %s"):format(bad, col))
end

-- tables.task_for(tbl, column, lo, hi [, where [, fragment]]) -> task,
-- udf_version: the worker task (geneva.backfill.worker.run_task) for rowids
-- lo..hi of a fragment (default: the first) of tbl's latest version
function tables.task_for(tbl, column, lo, hi, where, fragment)
  local m = tbl:_snapshot()
  local c = require("geneva.store.reader").find_column(m, column)
  assert(c, "no column " .. column)
  local spec = c.udf
  spec.version = c.udf_version
  return { id = "t", table_dir = tbl.dir, version = m.version, fragment = fragment or m.fragments[1].id,
           lo = lo, hi = hi, column = column, udf = spec, where = where }, c.udf_version
end

return tables
