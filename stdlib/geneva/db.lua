--- Databases: `geneva.connect` and the Db object.
--
-- A database is a directory (or an `s3://bucket/prefix`); each table is a
-- sub-directory with its version log, and `_geneva/` holds clusters,
-- manifests, packages, job records and leases. Errors are raised
-- @{geneva.errors.Error} tables (`not_found`, `conflict`, `invalid_argument`,
-- `unavailable`); only the probes @{Db:get_cluster} and @{Db:get_manifest}
-- return `nil, err`.
-- @module geneva.db
local fs = require "geneva.fs"
local json = require "geneva.json"
local errors = require "geneva.errors"
local storage = require "geneva.store.versions"
local backend = require "geneva.store.backend"
local ingest = require "geneva.store.ingest"
local table_mod = require "geneva.table"

local M = {}

local Db = {}
Db.__index = Db
Db.__name = "geneva.Db"
M.Db = Db

local function invalid(msg, fields) errors.throw("invalid_argument", msg, fields) end

-- M.check_table_name(name) -> name | raises invalid_argument
function M.check_table_name(name)
  if type(name) ~= "string" or not name:match("^[%a_][%w_%-]*$") or name:sub(1, 1) == "_" or #name > 200 then
    invalid(("invalid table name %s (letters, digits, _ and -, not starting with _ or a digit)")
      :format(type(name) == "string" and ("'" .. name .. "'") or tostring(name)))
  end
  return name
end

local S3_OPTIONS = { endpoint = "string", region = "string", profile = "string", path_style = "boolean" }

--- Opens a database (what @{geneva.connect} does).
--
-- An `s3://` database works like a directory: tables, versions, backfills,
-- contexts, leases and job records live in the bucket under the prefix.
-- Credentials come from the profile `opts.profile` names (it beats the
-- environment's keys, as `aws --profile` does), else `AWS_ACCESS_KEY_ID` /
-- `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, else the profile
-- `AWS_PROFILE` in `AWS_SHARED_CREDENTIALS_FILE` (default
-- `~/.aws/credentials`). Connecting to an empty prefix creates the
-- database (an object, `_geneva/database.json`), as connecting to a
-- missing directory creates it. It is served through a local mirror:
-- `db.path` is that mirror, `db.uri` the s3 URI. The Db becomes the one
-- names resolve against (the "latest connect").
-- @string uri a directory (created if missing; `file://` allowed) or
-- `s3://bucket/prefix`
-- @tab[opt] opts s3 only: `endpoint` (URL; default `AWS_ENDPOINT_URL_S3`,
-- then `AWS_ENDPOINT_URL`, then AWS), `region` (default `AWS_REGION`, then
-- `AWS_DEFAULT_REGION`, then `us-east-1`), `profile` (default
-- `AWS_PROFILE`), `path_style` (boolean; default on when an endpoint is given)
-- @treturn Db
-- @raise `invalid_argument` for a bad URI or option; `unavailable` when the
-- directory cannot be created or the store not reached
-- @usage local db = geneva.connect("./data")
-- local db2 = geneva.connect("s3://bucket/prefix", { endpoint = "http://127.0.0.1:9000" })
function M.connect(uri, opts) return M._open(uri, opts, false) end

-- M._open(uri, opts, existing): connect; existing = true never creates an
-- s3 database (connect_existing)
function M._open(uri, opts, existing)
  if type(uri) ~= "string" or uri == "" then invalid("connect: uri must be a directory path or s3://bucket/prefix") end
  if opts ~= nil and type(opts) ~= "table" then invalid("connect: opts must be a table") end
  local path, store
  if uri:match("^s3://") then
    require("geneva.suggest").check_options("connect (s3 database)", opts or {}, S3_OPTIONS)
    for k, v in pairs(opts or {}) do
      if type(v) ~= S3_OPTIONS[k] then invalid(("connect: option '%s' must be a %s"):format(k, S3_OPTIONS[k])) end
    end
    local o = { create = not existing }
    for k, v in pairs(opts or {}) do o[k] = v end
    path, store = require("geneva.store.backend.s3").mount(uri, o)
  else
    path = M.directory_of(uri)
    local k = next(opts or {})
    if k ~= nil then
      -- the options are an s3 database's: a typo'd s3:// URI, most likely
      invalid(("connect: option '%s' is for s3:// databases; a directory database takes none")
        :format(tostring(k)), { field = type(k) == "string" and k or nil })
    end
    errors.io(fs.mkdir_p(path))
    path = errors.io(fs.realpath(path))
  end
  -- dir: alias of path, for modules that say tbl.db.dir
  local db = setmetatable({ uri = uri, path = path, dir = path, opts = opts or {}, store = store }, Db)
  require("geneva.context").use_db(db)   -- names resolve against it
  return db
end

-- M.directory_of(uri) -> the directory a database URI other than s3://
-- names: a path, or file://path. Raises invalid_argument for another scheme.
-- (connect and the CLI's --db read URIs the same way through it)
function M.directory_of(uri)
  if uri:match("^%a[%w+.-]*://") and not uri:match("^file://") then
    invalid(("connect: '%s': a database is a directory or s3://bucket/prefix"):format(uri))
  end
  return (uri:gsub("^file://", ""))
end

-- M.connect_existing(uri [, opts]) -> Db: connect, for a database that
-- must exist already (the CLI's --db). An s3:// one whose prefix holds no
-- object (no table, no _geneva/) is not_found, as a missing directory is:
-- otherwise a mistyped prefix reads as an empty database.
function M.connect_existing(uri, opts)
  local db = M._open(uri, opts, true)
  local impl = backend.for_path(db.path)
  if db.store and impl.holds_objects and not impl:holds_objects() then
    errors.throw("not_found", ("no database at '%s' (nothing under that prefix)"):format(uri))
  end
  return db
end

-- M.latest() -> the Db of the latest connect in this Lua state, or nil
function M.latest() return require("geneva.context").latest_db() end

--- A database handle, from @{connect}.
-- Fields: `uri` (as given), `path` (the directory, or an s3 database's mirror).
-- @type Db

function Db:__tostring() return ("geneva.Db '%s'"):format(self.store and self.uri or self.path) end

-- db:table_dir(name) -> path of the table's directory (no checks)
function Db:table_dir(name) return self.path .. "/" .. name end

local function exists(self, name)
  return storage.latest_version(self:table_dir(name)) ~= nil
end

--- A context whose cluster and manifest names resolve against this database.
-- @tab[opt] opts as @{geneva.context.new}, without `db`
-- @treturn geneva.context.Context
-- @usage db:context { cluster = "two" } (function() tbl:backfill("words") end)
function Db:context(opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.db = self
  return require("geneva.context").new(o)
end

--- The backfill jobs run on this database, newest first.
-- @tab[opt] filter `table` (a name), `status` (`"PENDING"`, `"RUNNING"`,
-- `"DONE"`, `"FAILED"`, `"CANCELLED"`)
-- @treturn {table,...} job records (plain tables: `id`, `status`, `table`,
-- `column`, `rows`, `tasks`, `error`, times; as @{geneva.backfill.job.Job:record})
-- @raise `invalid_argument` for a status that does not exist
-- @usage for _, r in ipairs(db:jobs { status = "FAILED" }) do print(r.id, r.error.message) end
function Db:jobs(filter)
  return require("geneva.backfill.job").list(self.path, filter)
end

--- One job by its id.
-- @string id as in @{jobs} or `geneva jobs list`
-- @treturn geneva.backfill.job.Job
-- @raise `not_found`
function Db:job(id)
  local job = require "geneva.backfill.job"
  local rec, err = job.load(self.path, id)
  if not rec then error(err, 2) end
  return job.object(self.path, rec)
end

--- The names of the tables, sorted.
-- @treturn {string,...}
function Db:table_names()
  local names = errors.io(backend.list(self.path))
  local out = {}
  for _, name in ipairs(names) do
    if name:match("^[%a][%w_%-]*$") and exists(self, name) then out[#out + 1] = name end
  end
  return out
end

-- The directory of table `name`, which must exist | raises not_found
local function existing_dir(self, name)
  M.check_table_name(name)
  if not exists(self, name) then
    errors.throw("not_found", ("table '%s' does not exist in %s"):format(name, self.path), { path = self:table_dir(name) })
  end
  return self:table_dir(name)
end

--- Opens an existing table.
-- @string name
-- @treturn geneva.table.Table
-- @raise `not_found`; `invalid_argument` for a malformed name
function Db:open_table(name)
  return table_mod.new(self, name, existing_dir(self, name))
end

--- Deletes a table with all its versions and files.
-- @string name
-- @treturn boolean true
-- @raise `not_found`
function Db:drop_table(name)
  errors.io(backend.delete_tree(existing_dir(self, name)))
  return true
end

local create_options = { schema = true, fragment_size = true, mode = true }

--- Creates a table from Lua rows or a CSV or JSONL file; commits version 1
-- (with mode `"overwrite"`, the existing table's next version).
--
-- Column types are inferred unless `opts.schema` gives them: `int64`,
-- `float64`, `string`, `bool`, `blob`, `float32[N]`. Column order comes from
-- `opts.schema`, else the CSV header, else the order in which JSONL keys
-- first appear, else sorted names. Nothing is created when any row is bad,
-- and a table being overwritten stays as it was.
--
-- Files stream: a chunk of rows (65,536, fewer for wide rows) is read,
-- checked and written at a time, so memory does not grow with the file,
-- and a progress bar shows on stderr when it is a terminal
-- (`GENEVA_PROGRESS=0` turns it off). Types are inferred from the first
-- chunk; a later row that does not fit them is an error naming its line
-- and column (give `opts.schema`).
--
-- CSV cells: an empty unquoted field is NULL, a quoted `""` the empty
-- string (in a column that is not a string, both are NULL); a leading zero
-- (`007`) makes a column a string; an integer beyond int64 is an error, not
-- a float (unless `opts.schema` says `float64`). JSONL: `null` is NULL; a
-- nested object or array is an error (an array of numbers is a
-- `float32[N]` vector); so are a repeated key and an integer beyond int64.
-- @string name letters, digits, `_` and `-`, not starting with `_` or a digit
-- @tparam {table,...}|table source an array of records `{column = value}`
-- (NULL is `nil`), or `{from = "file.csv" | "file.jsonl"}`
-- @tab[opt] opts `schema` (`{{name=, data_type=}, ...}` or `{name = type}`),
-- `fragment_size` (rows per fragment, default 100000), `mode` (`"create"`,
-- the default, or `"overwrite"`)
-- @treturn geneva.table.Table
-- @raise `conflict` when the table exists (mode `"create"`);
-- `invalid_argument` for bad input (a file's errors carry `path` and `line`)
-- @usage local tbl = db:create_table("docs", { { id = 1, content = "a b" }, { id = 2 } })
-- local csv = db:create_table("imported", { from = "docs.csv" }, { mode = "overwrite" })
function Db:create_table(name, source, opts)
  M.check_table_name(name)
  if opts ~= nil and type(opts) ~= "table" then invalid("create_table: opts must be a table") end
  opts = opts or {}
  require("geneva.suggest").check_options("create_table", opts, create_options)
  local mode = opts.mode or "create"
  if mode ~= "create" and mode ~= "overwrite" then
    invalid(("create_table: mode must be 'create' or 'overwrite', got '%s'"):format(tostring(mode)))
  end
  local fsize = opts.fragment_size or ingest.DEFAULT_FRAGMENT_SIZE
  if math.type(fsize) ~= "integer" or fsize < 1 then invalid("create_table: fragment_size must be a positive integer") end
  if mode == "create" and exists(self, name) then
    errors.throw("conflict", ("table '%s' already exists"):format(name), { path = self:table_dir(name) })
  end

  local given = ingest.normalize_schema(opts.schema)
  local src <close> = ingest.open(source)
  local schema = src:plan(given)

  local dir = self:table_dir(name)
  -- an overwrite is the table's next version, committed like any other
  -- (Lance's way): the old table stays whole until it lands, a concurrent
  -- commit meets it as a conflict, and checkout still reads the old
  -- versions until cleanup_old_versions
  local replacing = mode == "overwrite" and exists(self, name)
  local fresh = not fs.exists(dir)
  errors.io(fs.mkdir_p(dir .. "/data"))
  local w = ingest.writer(dir, schema, src.names, fsize)
  local ok, err = pcall(function()
    ingest.copy(src, w)
    local frags = w:finish()
    local function snapshot(first_id)
      local m = { table = name, fragment_size = fsize, schema = json.array(), fragments = json.array() }
      for i, c in ipairs(schema) do m.schema[i] = { name = c.name, data_type = c.data_type } end
      for i, f in ipairs(frags) do
        m.fragments[i] = { id = first_id + i - 1, rows = f.rows, data = f.data, columns = json.object() }
      end
      m.next_fragment_id = first_id + #frags
      return m
    end
    if replacing then
      -- fragment ids go on from the old table's: checkpoints name fragments by id
      storage.commit(dir, "overwrite", function(cur) return snapshot(cur.next_fragment_id or 1) end)
    else
      storage.init(dir, snapshot(1))
    end
  end)
  if not ok then
    w:abort()
    if fresh and not exists(self, name) then backend.delete_tree(dir) end
    error(err, 0)
  end
  return table_mod.new(self, name, dir)
end

-- {====== clusters and manifests (geneva.context.cluster, geneva.context.manifest)

--- Defines (or replaces) a cluster: where a context's workers run.
-- The spec's fields are in @{geneva.context.cluster}.
-- @string name
-- @tab spec `type = "local" | "ray" | "kuberay"` and that type's fields
-- @treturn table the normalized spec, as stored
-- @raise `invalid_argument` naming the field (with "did you mean")
-- @usage db:define_cluster("two", { type = "local", workers = 2 })
-- db:define_cluster("ray", { type = "ray", address = "http://head:8265", token_env = "RAY_TOKEN" })
function Db:define_cluster(name, spec) return require("geneva.context.cluster").define(self, name, spec) end

--- A cluster's spec (a probe: no error raised when it is missing).
-- @string name
-- @treturn[1] table the spec
-- @return[2] nil
-- @treturn[2] geneva.errors.Error `not_found`
function Db:get_cluster(name) return require("geneva.context.cluster").get(self, name) end

--- The clusters, sorted by name.
-- @treturn {table,...} `{name=, type=, spec=, ...}` records
function Db:list_clusters() return require("geneva.context.cluster").list(self) end

--- Deletes a cluster definition.
-- @string name
-- @treturn boolean true
-- @raise `not_found`
function Db:delete_cluster(name) return require("geneva.context.cluster").delete(self, name) end

--- Defines (or replaces) a manifest: the code and files shipped to workers.
-- Defining packages the files into a zip, content-addressed by SHA-256; an
-- unchanged manifest packages and uploads nothing new. The spec's fields
-- are in @{geneva.context.manifest}.
-- @string name
-- @tab spec `modules`, `files`, `env`, `ship_host`, `local_zip_output_dir`
-- @treturn table the manifest's record (with its package's digest and size)
-- @raise `invalid_argument` for a bad field, `not_found` for a module or
-- file that does not exist
-- @usage db:define_manifest("udfs", { modules = { "my_udfs" }, files = { "models/*.bin" },
--   env = { HF_TOKEN = { from_env = "HF_TOKEN" } } })
function Db:define_manifest(name, spec) return require("geneva.context.manifest").define(self, name, spec) end

--- A manifest's record (a probe: no error raised when it is missing).
-- @string name
-- @treturn[1] table the record
-- @return[2] nil
-- @treturn[2] geneva.errors.Error `not_found`
function Db:get_manifest(name) return require("geneva.context.manifest").get(self, name) end

--- The manifests' records, sorted by name.
-- @treturn {table,...}
function Db:list_manifests() return require("geneva.context.manifest").list(self) end

--- Deletes a manifest definition (its package stays for the jobs that used it).
-- @string name
-- @treturn boolean true
-- @raise `not_found`
function Db:delete_manifest(name) return require("geneva.context.manifest").delete(self, name) end

-- }======

return M
