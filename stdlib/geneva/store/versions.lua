-- geneva.store.versions: one table's files (docs/internals.md "On disk"),
-- in a directory or an object store: every read and write goes through
-- geneva.store.backend, by the path the file has in a directory.
--
--   <tbl>/_versions/<N>.json   the version log (dotfiles there are temp files)
--   <tbl>/data/*.db            immutable SQLite files (fragment data, columns)
--   <tbl>/_staging/...         worker outputs (owned by geneva.backfill)
--
-- A snapshot is the decoded JSON of one version. Commits are optimistic:
-- storage.commit re-reads the latest version and re-applies the caller's
-- mutation when another writer published N+1 first (a conditional create:
-- link() in a directory, `If-None-Match: *` on S3, gives EEXIST), so
-- concurrent appends and column commits all land, densely numbered.
--
-- Errors are geneva.Error tables (raised): not_found for a missing version,
-- conflict when retries run out, unavailable for I/O failures.
local fs = require "geneva.fs"
local backend = require "geneva.store.backend"
local json = require "geneva.json"
local sqlite = require "geneva.sqlite"
local time = require "geneva.time"
local errors = require "geneva.errors"

local storage = {}

storage.FORMAT = 1
storage.MAX_COLUMN_FILES = 8      -- per (fragment, column) after a commit
storage.COMMIT_RETRIES = 64

local function join(a, b) return a .. "/" .. b end
storage.join = join


local check = errors.io
storage.check = check

-- storage.versions(tbl_dir) -> sorted array of version numbers (empty if
-- the directory or its log does not exist). Raises unavailable otherwise.
function storage.versions(tbl_dir)
  local names = check(backend.list(join(tbl_dir, "_versions")))
  local out = {}
  for _, name in ipairs(names) do
    local n = name:match("^(%d+)%.json$")
    n = n and math.tointeger(tonumber(n))
    if n then out[#out + 1] = n end
  end
  table.sort(out)
  return out
end

-- storage.latest_version(tbl_dir) -> N | nil when the table has no version
function storage.latest_version(tbl_dir)
  local v = storage.versions(tbl_dir)
  return v[#v]
end

local function version_path(tbl_dir, n)
  return ("%s/_versions/%d.json"):format(tbl_dir, n)
end

-- When each snapshot was read (monotonic s), for storage.commit's base
local read_at = setmetatable({}, { __mode = "k" })

-- storage.read(tbl_dir, n) -> snapshot (a fresh table the caller may
-- modify). Raises not_found for a missing version, internal for bad JSON.
function storage.read(tbl_dir, n)
  local path = version_path(tbl_dir, n)
  local text, msg, code = backend.get(path)
  if not text then
    if code == "ENOENT" then errors.throw("not_found", ("version %s does not exist"):format(tostring(n)), { path = path }) end
    check(nil, msg, code)
  end
  local m, err = json.decode(text, { null_as_nil = true })
  if type(m) ~= "table" then
    errors.throw("internal", ("%s: corrupt version file: %s"):format(path, tostring(err)), { path = path })
  end
  local why = storage.check_snapshot(m)
  if why then errors.throw("internal", ("%s: corrupt version file: %s"):format(path, why), { path = path }) end
  read_at[m] = time.monotonic()
  return m
end

-- storage.check_snapshot(m) -> nil | why: the fields readers rely on have
-- their types (a version file is shared, untrusted input: valid JSON with
-- wrong fields must be a clear error, not an arithmetic error deep inside)
function storage.check_snapshot(m)
  local function int(v) return math.type(v) == "integer" end
  if type(m.schema) ~= "table" then return "schema is not a list" end
  for i, c in ipairs(m.schema) do
    if type(c) ~= "table" or type(c.name) ~= "string" or type(c.data_type) ~= "string" then
      return ("schema[%d] is not {name, data_type}"):format(i)
    end
  end
  if type(m.fragments) ~= "table" then return "fragments is not a list" end
  for i, f in ipairs(m.fragments) do
    if type(f) ~= "table" then return ("fragments[%d] is not an object"):format(i) end
    if not int(f.id) or f.id < 1 then return ("fragments[%d].id is not a positive integer"):format(i) end
    if not int(f.rows) or f.rows < 0 then return ("fragments[%d].rows is not a count"):format(i) end
    if type(f.data) ~= "string" or not f.data:match("^data/[%w%-_.]+%.db$") then
      return ("fragments[%d].data is not a data file name"):format(i)
    end
    if f.columns ~= nil and type(f.columns) ~= "table" then return ("fragments[%d].columns is not an object"):format(i) end
    for name, list in pairs(f.columns or {}) do
      if type(list) ~= "table" then return ("fragments[%d].columns.%s is not a list"):format(i, tostring(name)) end
      for j, e in ipairs(list) do
        if type(e) ~= "table" or type(e.file) ~= "string" or not e.file:match("^data/[%w%-_.]+%.db$") then
          return ("fragments[%d].columns.%s[%d].file is not a data file name"):format(i, tostring(name), j)
        end
      end
    end
  end
  if m.next_fragment_id ~= nil and not int(m.next_fragment_id) then return "next_fragment_id is not an integer" end
  return nil
end

-- storage.latest(tbl_dir) -> snapshot, N | nil when there is no version
function storage.latest(tbl_dir)
  local n = storage.latest_version(tbl_dir)
  if not n then return nil end
  return storage.read(tbl_dir, n), n
end

-- storage.find_fragment(snapshot, id) -> the fragment entry with that id | nil
function storage.find_fragment(m, id)
  for _, f in ipairs(m.fragments) do
    if f.id == id then return f end
  end
end

-- Marks the arrays of a snapshot so that empty ones encode as [] again.
local function mark_arrays(m)
  m.schema = json.array(setmetatable(m.schema or {}, nil))
  m.fragments = json.array(setmetatable(m.fragments or {}, nil))
  for _, f in ipairs(m.fragments) do
    f.columns = json.object(setmetatable(f.columns or {}, nil))
    for name, list in pairs(f.columns) do
      f.columns[name] = json.array(setmetatable(list, nil))
    end
  end
  return m
end

-- Writes snapshot m as version n; true | false on EEXIST. Raises otherwise.
local function publish(tbl_dir, n, m)
  m.format, m.version = storage.FORMAT, n
  m.created_at = time.iso8601(time.now(), 6)
  local path = version_path(tbl_dir, n)
  local text = json.encode(mark_arrays(m), { indent = 1, sort_keys = true })
  local ok, msg, code = backend.put_if_absent(path, text)
  if ok then return true end
  if code == "EEXIST" then return false end
  -- A step after the create can fail (the directory's fsync, a lost
  -- answer): our file is then in place and readers see the version, so it
  -- is committed, and the caller must not roll back the files it references.
  if backend.get(path) == text then
    backend.sync_dir(join(tbl_dir, "_versions"))
    return true
  end
  check(nil, msg, code)
end

-- storage.init(tbl_dir, snapshot) -> snapshot: publishes version 1 of a new
-- table. Raises conflict when a version 1 exists already.
function storage.init(tbl_dir, m)
  check(fs.mkdir_p(join(tbl_dir, "_versions")))
  check(fs.mkdir_p(join(tbl_dir, "data")))
  m.operation = m.operation or "create"
  if not publish(tbl_dir, 1, m) then
    errors.throw("conflict", ("table '%s' already exists"):format(tostring(m.table)), { path = tbl_dir })
  end
  return m
end

--[[
storage.commit(tbl_dir, operation, mutate [, opts]) -> new snapshot | nil
mutate(latest) gets a fresh copy of the latest snapshot and returns the new
one (it may modify and return its argument), or false when there is nothing
to commit (then nothing is published and commit returns nil), or raises. When another writer
publishes the same version first, the latest is read again and mutate runs
again: it must be safe to repeat (see also opts.on_retry). Retries are
bounded (opts.retries, default storage.COMMIT_RETRIES) with jittered
exponential backoff; running out raises conflict. Errors raised by mutate
propagate as they are. opts.base, a snapshot the caller read at most
BASE_MAX_AGE seconds ago (storage.read/latest), stands in for the first
read: a copy of it is mutated, and if it is no longer the latest its
version's successor exists and the commit goes round again (on s3 this
saves a LIST and a GET). The age bound keeps the window in which a
cleanup with a tiny older_than could remove that successor as short as a
commit's own.
]]
storage.BASE_MAX_AGE = 10

function storage.commit(tbl_dir, operation, mutate, opts)
  opts = opts or {}
  local retries = opts.retries or storage.COMMIT_RETRIES
  for attempt = 1, retries do
    local cur, n
    local base = opts.base
    if attempt == 1 and base and read_at[base] and time.monotonic() - read_at[base] < storage.BASE_MAX_AGE then
      cur, n = json.decode(json.encode(mark_arrays(base)), { null_as_nil = true }), base.version
    else
      cur, n = storage.latest(tbl_dir)
    end
    if not cur then errors.throw("not_found", ("no table at '%s'"):format(tbl_dir), { path = tbl_dir }) end
    local new = mutate(cur, attempt)
    if new == false then return nil end
    if type(new) ~= "table" then
      errors.throw("internal", "storage.commit: mutate must return the new snapshot")
    end
    new.operation = operation
    if publish(tbl_dir, n + 1, new) then return new end
    -- someone else published n + 1: back off a little, then re-apply
    local delay = math.min(0.25, 0.002 * (1.6 ^ attempt)) * (0.5 + math.random())
    local ok = time.sleep(delay)
    if not ok then errors.throw("interrupted", "interrupted while committing") end
  end
  errors.throw("conflict", ("could not commit to '%s' after %d attempts (too many concurrent writers)")
    :format(tbl_dir, retries), { path = tbl_dir })
end

-- {====== Data files

-- storage.temp_data_path(tbl_dir) -> absolute path of a fresh dotfile in
-- data/ (a file being built; never referenced by a snapshot)
function storage.temp_data_path(tbl_dir)
  check(fs.mkdir_p(join(tbl_dir, "data")))     -- an object store's mirror may not have it yet
  return ("%s/data/.tmp-%s.db"):format(tbl_dir, fs.random_hex(16))
end

-- storage.open_new_file(path) -> sqlite Db set up for a fast bulk load of a
-- private, new file: no journal, no syncs, big cache. Raises unavailable.
-- Finish it with storage.finish_file.
function storage.open_new_file(path)
  local db, msg, code = sqlite.open(path, { create = true })
  check(db, msg, code)
  local ok
  ok, msg, code = db:exec("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; "
    .. "PRAGMA locking_mode=EXCLUSIVE; PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY")
  if not ok then db:close() check(nil, msg, code) end
  return db
end

-- storage.finish_file(db) -> true: makes what db wrote durable (one synced
-- commit: SQLite fsyncs the whole file when synchronous is on) and closes
-- it. Raises unavailable (db is closed either way).
function storage.finish_file(db)
  local ok, msg, code = db:exec("PRAGMA synchronous=FULL; PRAGMA user_version=1")
  db:close()
  return check(ok, msg, code)
end

--[[
storage.publish_file(tbl_dir, src, prefix [, {keep_source = false}]) -> "data/<prefix>-<hex>.db"
Makes a finished file a data file under a fresh name, never replacing one
(EEXIST picks another name). src is a local temp file, removed once
published, or with keep_source a staged file, which stays until its commit
has landed (the caller removes it), so a failed commit loses nothing.
]]
function storage.publish_file(tbl_dir, src, prefix, opts)
  check(backend.fetch(src))
  for _ = 1, 8 do
    local rel = ("data/%s-%s.db"):format(prefix, fs.random_hex(16))
    local ok, msg, code = backend.publish(src, join(tbl_dir, rel))
    if ok then
      if not (opts and opts.keep_source) then fs.remove(src) end   -- a local temp file
      return rel
    end
    if code ~= "EEXIST" then check(nil, msg, code) end
  end
  errors.throw("internal", "could not find a free file name in " .. join(tbl_dir, "data"))
end

-- storage.sync_data_dir(tbl_dir): fsyncs data/ so links into it are durable
function storage.sync_data_dir(tbl_dir)
  return check(backend.sync_dir(join(tbl_dir, "data")))
end

-- storage.remove_files(tbl_dir, rels): best effort removal of orphans
function storage.remove_files(tbl_dir, rels)
  for _, rel in ipairs(rels) do backend.delete(join(tbl_dir, rel)) end
end

-- storage.data_file(tbl_dir, rel) -> local path of a data file to open
-- (downloaded once into the cache when the table is in an object store)
function storage.data_file(tbl_dir, rel)
  return check(backend.fetch(join(tbl_dir, rel)))
end

local function quote(s) return "'" .. tostring(s):gsub("'", "''") .. "'" end
storage.quote_literal = quote

--[[
Failed marks. A column file may hold, beside col(_rowid INTEGER PRIMARY
KEY, value), a table failed(_rowid INTEGER PRIMARY KEY) listing the rows
whose UDF call failed under on_error = "null" (their value is NULL). Only
files with failures have it; files written before it existed have none.
storage.has_failed_marks(db, alias) -> boolean: the file attached as alias
has the table.
]]
function storage.has_failed_marks(db, alias)
  local n, msg, code = db:value(("SELECT count(*) FROM %s.sqlite_master WHERE type = 'table' AND name = 'failed'")
    :format(alias))
  check(n, msg, code)
  return n > 0
end

--[[
storage.fold_into(db, tbl_dir, list, tname): reads a (fragment, column)
file list (oldest first, entries {file=, udf_version=}) into a new TEMP
table tname(_rowid INTEGER PRIMARY KEY, value, ver TEXT, failed INTEGER) of
db, the newest file winning per rowid (its NULLs too): ver is the winning
file's udf_version (NULL if it has none), failed 1 for its failed marks.
Attaches each file as "src" in turn. Raises unavailable.
]]
function storage.fold_into(db, tbl_dir, list, tname)
  check(db:exec(("CREATE TEMP TABLE %s(_rowid INTEGER PRIMARY KEY, value, ver TEXT, failed INTEGER)"):format(tname)))
  for _, e in ipairs(list) do
    check(db:attach(storage.data_file(tbl_dir, e.file), "src", { immutable = true }))
    local ver = e.udf_version and quote(e.udf_version) or "NULL"
    local pok, marks = pcall(storage.has_failed_marks, db, "src")
    if not pok then
      db:detach("src")
      error(marks, 0)
    end
    local sql = marks
      and ("INSERT OR REPLACE INTO temp.%s SELECT c._rowid, c.value, %s, f._rowid IS NOT NULL "
           .. "FROM src.col AS c LEFT JOIN src.failed AS f ON f._rowid = c._rowid")
      or "INSERT OR REPLACE INTO temp.%s SELECT _rowid, value, %s, 0 FROM src.col"
    local ok, msg, code = db:exec(sql:format(tname, ver))
    db:detach("src")
    check(ok, msg, code)
  end
end

--[[
storage.write_fold(db, tbl_dir, tname) -> list, made: the column files of a
fold table of db (as storage.fold_into makes: _rowid, value, ver, failed),
one per distinct ver (its rows, NULLs and failed marks), oldest rowid
first: entries {file=, udf_version=, lo=, hi=} published in data/ but not
synced nor referenced; made lists their paths. Attaches "dst" in turn.
Raises unavailable (removing what it had published).
]]
function storage.write_fold(db, tbl_dir, tname)
  local out, made = {}, {}
  local ok, err = pcall(function()
    local vers = {}
    for row in db:rows(("SELECT ver, min(_rowid), max(_rowid), max(failed) FROM temp.%s GROUP BY ver ORDER BY min(_rowid)")
        :format(tname)) do
      vers[#vers + 1] = row
    end
    for _, r in ipairs(vers) do
      local ver = r[1] ~= sqlite.null and r[1] or nil
      local is_ver = "ver IS " .. (ver and quote(ver) or "NULL")
      local tmp = storage.temp_data_path(tbl_dir)
      local wok, werr = pcall(function()
        check(db:attach(tmp, "dst"))
        check(db:exec("PRAGMA dst.journal_mode=OFF; PRAGMA dst.synchronous=OFF; "
          .. "CREATE TABLE dst.col(_rowid INTEGER PRIMARY KEY, value); "
          .. ("INSERT INTO dst.col SELECT _rowid, value FROM temp.%s WHERE %s ORDER BY _rowid"):format(tname, is_ver)))
        if r[4] == 1 then
          check(db:exec("CREATE TABLE dst.failed(_rowid INTEGER PRIMARY KEY); "
            .. ("INSERT INTO dst.failed SELECT _rowid FROM temp.%s WHERE %s AND failed ORDER BY _rowid")
              :format(tname, is_ver)))
        end
        check(db:exec("PRAGMA dst.synchronous=FULL; PRAGMA dst.user_version=1"))
        check(db:detach("dst"))
      end)
      if not wok then
        -- (ulimit -f, a full disk) the half-written file goes, and the
        -- error names it
        db:detach("dst")
        fs.remove(tmp)
        local e = errors.from(werr)
        if e.code == "unavailable" then
          e.message, e.path = ("cannot write '%s': %s"):format(tmp, e.message), tmp
        end
        error(e, 0)
      end
      out[#out + 1] = { file = storage.publish_file(tbl_dir, tmp, "c"), udf_version = ver, lo = r[2], hi = r[3] }
      made[#made + 1] = out[#out].file
    end
  end)
  if not ok then
    storage.remove_files(tbl_dir, made)
    error(err, 0)
  end
  return out, made
end

--[[
storage.fold_column_files(tbl_dir, list) -> new list
Folds a (fragment, column) file list (oldest first, entries {file=,
udf_version=, lo=, hi=}) into as few files as keep the same reading: one per
distinct udf_version of the winning files (usually one), each holding the
rows its version won, NULLs and failed marks included. The new files are in
data/ (synced) but not referenced: the caller commits or removes them.
Raises unavailable.
]]
function storage.fold_column_files(tbl_dir, list)
  local mem = check(sqlite.open(":memory:"))
  local ok, res = pcall(function()
    check(mem:exec("PRAGMA temp_store=MEMORY"))
    storage.fold_into(mem, tbl_dir, list, "fold")
    return (storage.write_fold(mem, tbl_dir, "fold"))
  end)
  mem:close()
  if not ok then error(res, 0) end
  storage.sync_data_dir(tbl_dir)
  return res
end

-- }======

-- {====== Cleanup

storage.CLEANUP_GRACE = 3600   -- seconds: a younger unreferenced file may be a commit in flight

-- storage.referenced(m, into) -> into: every file snapshot m references
-- (relative paths, as keys set to true)
function storage.referenced(m, into)
  for _, f in ipairs(m.fragments or {}) do
    if type(f.data) == "string" then into[f.data] = true end
    for _, list in pairs(f.columns or {}) do
      for _, e in ipairs(list) do
        if type(e.file) == "string" then into[e.file] = true end
      end
    end
  end
  return into
end

--[[
storage.cleanup(tbl_dir [, {older_than = s, grace = s, now = epoch s}]) -> report
Removes the versions created more than older_than seconds ago (never the
latest; without older_than, none), then every file in data/ that no kept
version references and that is older than grace (default CLEANUP_GRACE: a
file younger than that may belong to a commit in flight): column files of
commits that never landed (a kill -9 or Ctrl-C mid-commit), `.tmp-*` files
of folds and ingests that failed (a full disk), and files only old
versions used. Worker temp files in _staging (`*.tmp-<pid>`) older than
grace go too. report = {versions_removed, files_removed, bytes_removed}.
Readers of a removed version get not_found.
]]
function storage.cleanup(tbl_dir, opts)
  opts = opts or {}
  local now = opts.now or time.now()
  local grace = opts.grace or storage.CLEANUP_GRACE
  local report = { versions_removed = 0, files_removed = 0, bytes_removed = 0 }
  local vs = storage.versions(tbl_dir)
  local latest = vs[#vs]
  if not latest then errors.throw("not_found", ("no table at '%s'"):format(tbl_dir), { path = tbl_dir }) end
  local keep, dropped = {}, {}
  for _, v in ipairs(vs) do
    local m = storage.read(tbl_dir, v)
    local created = type(m.created_at) == "string" and time.parse_iso8601(m.created_at)
    if v ~= latest and opts.older_than and created and now - created > opts.older_than then
      check(backend.delete(version_path(tbl_dir, v)))
      report.versions_removed = report.versions_removed + 1
      storage.referenced(m, dropped)
    else
      storage.referenced(m, keep)
    end
  end
  -- a commit may have landed since we listed: what it references stays
  for _, v in ipairs(storage.versions(tbl_dir)) do
    if v > latest then storage.referenced(storage.read(tbl_dir, v), keep) end
  end
  for _, e in ipairs(check(backend.list(join(tbl_dir, "data"), { details = true }))) do
    local rel = "data/" .. e.name
    -- a file a removed version used was committed: no grace for it
    if not keep[rel] and (dropped[rel] or now - e.mtime > grace) then
      check(backend.delete(join(tbl_dir, rel)))
      report.files_removed = report.files_removed + 1
      report.bytes_removed = report.bytes_removed + e.size
    end
  end
  for _, rel in ipairs(fs.walk(join(tbl_dir, "_staging"), { ignore_errors = true }) or {}) do
    local path = join(join(tbl_dir, "_staging"), rel)
    local st = rel:match("%.tmp%-%d+$") and fs.stat(path)
    if st and now - st.mtime > grace then
      fs.remove(path)
      report.files_removed = report.files_removed + 1
      report.bytes_removed = report.bytes_removed + st.size
    end
  end
  return report
end

-- }======

return storage
