-- geneva.backfill.planner: what a backfill has to compute (docs/internals.md).
--
-- recover_staged: staged outputs of other UDF versions are garbage; those of
-- this version are checkpoints of an earlier run, committed first (unless
-- none of their rows is still missing).
-- plan_tasks: the rows that are missing (reader.missing: not computed by the
-- column's current UDF version, or failed) and match `where`, cut into
-- tasks over fixed rowid windows [k*bs+1, (k+1)*bs] of each fragment.
local errors = require "geneva.errors"
local reader = require "geneva.store.reader"
local where_check = require "geneva.store.where"
local storage = require "geneva.store.versions"
local backend = require "geneva.store.backend"

local planner = {}

-- Rows in a staged output file (0 if it cannot be read: the commit will say)
local function staged_rows(path)
  local db <close> = require("geneva.sqlite").open(backend.fetch(path) or path, { readonly = true })
  if not db then return 0 end
  local ok, n = pcall(db.value, db, "SELECT count(*) FROM col")
  return ok and math.tointeger(n) or 0
end

-- Does the staged file f hold a row still missing in snapshot? A checkpoint
-- whose rows were all computed since (a late worker of a cancelled run)
-- would only add a version. Unreadable files count as useful: the commit
-- reports them.
local function still_missing(tbl, snapshot, column, udf_version, f)
  local frag = storage.find_fragment(snapshot, f.fragment)
  if not frag then return true end             -- the commit skips it
  local r <close> = reader.open(tbl.dir, snapshot, frag, { columns = { column }, reserve = 1 })
  local path = backend.fetch(f.path)
  if not path or not r:attach(path, "s", { immutable = true }) then return true end
  local v = r:value(("SELECT EXISTS (SELECT 1 FROM s.col JOIN t USING (_rowid) WHERE %s)")
    :format(reader.missing(column, udf_version, frag)))
  return v ~= 0
end

-- Staged outputs: other UDF versions are garbage; this version's files are
-- checkpoints of an earlier run, committed first when resuming (those with
-- nothing still missing are dropped: no version for them).
function planner.recover_staged(tbl, column, udf_version, resume, rec)
  local base = tbl.dir .. "/_staging/" .. column
  local files = {}
  for _, v in ipairs(backend.list(base) or {}) do
    local dir = base .. "/" .. v
    if v ~= udf_version then
      backend.delete_tree(dir)
    else
      for _, name in ipairs(backend.list(dir) or {}) do
        local f, lo, hi = name:match("^f(%d+)%-(%d+)%-(%d+)%.db$")
        if f and resume then
          files[#files + 1] = { fragment = math.tointeger(tonumber(f)), lo = math.tointeger(tonumber(lo)),
                                hi = math.tointeger(tonumber(hi)), path = dir .. "/" .. name }
        else
          backend.delete(dir .. "/" .. name)   -- a partial temp file, or not resuming
        end
      end
    end
  end
  if #files > 0 then
    local snapshot, useful = tbl:_snapshot(), {}
    for _, f in ipairs(files) do
      if still_missing(tbl, snapshot, column, udf_version, f) then useful[#useful + 1] = f
      else backend.delete(f.path) end
    end
    if #useful < #files then
      rec.events[#rec.events + 1] = ("dropped %d checkpoint(s) of an earlier run: their rows were computed since")
        :format(#files - #useful)
    end
    files = useful
  end
  if #files > 0 then
    local rows = 0
    for _, f in ipairs(files) do rows = rows + staged_rows(f.path) end
    local _, n = tbl:_commit_column_files(column, udf_version, files)
    rec.rows.recovered, rec.tasks.recovered = rows, n
    rec.rows.committed = rec.rows.committed + rows
    rec.events[#rec.events + 1] = ("resumed: committed %d checkpoint(s) of an earlier run (%d rows)"):format(n, rows)
  end
end

-- (perf) A fragment where no file holds the column and there is no `where`:
-- every row is missing (no file, so no version and no failed mark), so its windows follow from its row count (rowids run
-- 1..rows) without the scan below, which reads every row (~0.2 s per 1M rows
-- before any worker can start). Appends them to tasks; returns the rows.
local function all_windows(tasks, frag, batch_size)
  for lo = 1, frag.rows, batch_size do
    tasks[#tasks + 1] = { fragment = frag.id, lo = lo, hi = lo + batch_size - 1,
                          rows = math.min(frag.rows, lo + batch_size - 1) - lo + 1 }
  end
  return frag.rows
end

-- Tasks over fixed windows [k*bs+1, (k+1)*bs] of each fragment's rowids.
function planner.plan_tasks(tbl, snapshot, column, udf_version, where, batch_size)
  local tasks, planned = {}, 0
  -- (perf) the scan reads only the column and what `where` mentions
  local cols = { column }
  if where then
    for _, name in ipairs(reader.columns_in(snapshot, where)) do cols[#cols + 1] = name end
  end
  for _, frag in ipairs(snapshot.fragments) do
    if not where and #((frag.columns or {})[column] or {}) == 0 then
      planned = planned + all_windows(tasks, frag, batch_size)
    else
      local sql = ("SELECT (_rowid - 1) / %d AS w, count(*) FROM t WHERE %s%s GROUP BY w ORDER BY w")
        :format(batch_size, reader.missing(column, udf_version, frag), where and (" AND (" .. where .. ")") or "")
      local r <close> = reader.open(tbl.dir, snapshot, frag, { columns = cols })
      local stmt <close>, err = r:prepare(sql)
      if not stmt then
        if where then where_check.fail("backfill", where, err) end
        errors.throw("internal", err)
      end
      for row in stmt:rows() do
        local w, n = row[1], row[2]
        tasks[#tasks + 1] = { fragment = frag.id, lo = w * batch_size + 1, hi = (w + 1) * batch_size, rows = n }
        planned = planned + n
      end
    end
  end
  return tasks, planned
end

return planner
