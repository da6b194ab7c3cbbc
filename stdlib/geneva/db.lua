-- geneva.db: `geneva.connect` and Db objects (design §3). A database is a
-- directory; each table a sub-directory with its version log (geneva.store.versions).
-- Errors are raised geneva.Error tables (not_found, conflict,
-- invalid_argument, unavailable).
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

--[[
M.connect(uri [, opts]) -> Db
uri is a directory (created if missing) or s3://bucket/prefix (opts:
endpoint, region, profile, path_style; design §3). An s3 database is
served through its local mirror (geneva.store.backend.s3): db.path is
that mirror, db.uri the s3 URI, db.store what a worker needs to mount it.
The Db becomes the "latest connect" (M.latest()).
]]
function M.connect(uri, opts)
  if type(uri) ~= "string" or uri == "" then invalid("connect: uri must be a directory path or s3://bucket/prefix") end
  if opts ~= nil and type(opts) ~= "table" then invalid("connect: opts must be a table") end
  local path, store
  if uri:match("^s3://") then
    require("geneva.suggest").check_options("connect (s3 database)", opts or {}, S3_OPTIONS)
    for k, v in pairs(opts or {}) do
      if type(v) ~= S3_OPTIONS[k] then invalid(("connect: option '%s' must be a %s"):format(k, S3_OPTIONS[k])) end
    end
    path, store = require("geneva.store.backend.s3").mount(uri, opts)
  elseif uri:match("^%a[%w+.-]*://") and not uri:match("^file://") then
    invalid(("connect: '%s': a database is a directory or s3://bucket/prefix"):format(uri))
  else
    local k = next(opts or {})
    if k ~= nil then
      -- the options are an s3 database's: a typo'd s3:// URI, most likely
      invalid(("connect: option '%s' is for s3:// databases; a directory database takes none")
        :format(tostring(k)), { field = type(k) == "string" and k or nil })
    end
    path = uri:gsub("^file://", "")
    errors.io(fs.mkdir_p(path))
    path = errors.io(fs.realpath(path))
  end
  -- dir: alias of path, for modules that say tbl.db.dir
  local db = setmetatable({ uri = uri, path = path, dir = path, opts = opts or {}, store = store }, Db)
  require("geneva.context").use_db(db)   -- names resolve against it
  return db
end

-- M.latest() -> the Db of the latest connect in this Lua state, or nil
function M.latest() return require("geneva.context").latest_db() end

function Db:__tostring() return ("geneva.Db '%s'"):format(self.store and self.uri or self.path) end

-- db:table_dir(name) -> path of the table's directory (no checks)
function Db:table_dir(name) return self.path .. "/" .. name end

local function exists(self, name)
  return storage.latest_version(self:table_dir(name)) ~= nil
end

-- db:table_names() -> sorted array of the names of existing tables
-- db:context{cluster=, manifest=, on_exit=} -> Context bound to this db
function Db:context(opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.db = self
  return require("geneva.context").new(o)
end

-- db:jobs([{table=, status=}]) -> array of job records, newest first
function Db:jobs(filter)
  return require("geneva.backfill.job").list(self.path, filter)
end

-- db:job(id) -> Job (reads its record; raises not_found)
function Db:job(id)
  local job = require "geneva.backfill.job"
  local rec, err = job.load(self.path, id)
  if not rec then error(err, 2) end
  return job.object(self.path, rec)
end

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

-- db:open_table(name) -> Table | raises not_found
function Db:open_table(name)
  return table_mod.new(self, name, existing_dir(self, name))
end

-- db:drop_table(name) -> true | raises not_found
function Db:drop_table(name)
  errors.io(backend.delete_tree(existing_dir(self, name)))
  return true
end

local create_options = { schema = true, fragment_size = true, mode = true }

--[[
db:create_table(name, rows | {from = "file.csv"|"file.jsonl"} [, opts]) -> Table
opts: schema ({{name=, data_type=}, ...} or {name = type}), fragment_size
(rows per fragment, default 100000), mode ("create" | "overwrite").
Commits version 1. Raises conflict if the table exists (mode "create"),
invalid_argument for bad input (file errors carry path and line); nothing
is created then.
]]
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

  -- read and check everything before touching the disk
  local batch = ingest.load(source)
  local schema = ingest.resolve_schema(batch, ingest.normalize_schema(opts.schema))
  local cols, names, sqltypes = ingest.to_columns(batch, schema)

  local dir = self:table_dir(name)
  if mode == "overwrite" and exists(self, name) then errors.io(backend.delete_tree(dir)) end
  local fresh = not fs.exists(dir)
  errors.io(fs.mkdir_p(dir .. "/data"))
  local ok, err = pcall(function()
    local frags = ingest.write_fragments(dir, cols, names, sqltypes, batch.n, fsize)
    local m = { table = name, fragment_size = fsize, schema = json.array(), fragments = json.array() }
    for i, c in ipairs(schema) do m.schema[i] = { name = c.name, data_type = c.data_type } end
    for i, f in ipairs(frags) do
      m.fragments[i] = { id = i, rows = f.rows, data = f.data, columns = json.object() }
    end
    m.next_fragment_id = #frags + 1
    local pok, perr = pcall(storage.init, dir, m)
    if not pok then
      local rels = {}
      for i, f in ipairs(frags) do rels[i] = f.data end
      storage.remove_files(dir, rels)
      error(perr, 0)
    end
  end)
  if not ok then
    if fresh and not exists(self, name) then backend.delete_tree(dir) end
    error(err, 0)
  end
  return table_mod.new(self, name, dir)
end

-- {====== clusters and manifests (geneva.context.cluster, geneva.context.manifest)

-- db:define_cluster(name, spec) -> normalized spec | raises invalid_argument
-- db:get_cluster(name) -> spec | nil, Error(not_found)   (a probe)
-- db:list_clusters() -> array of {name=, type=, spec=, ...}, sorted by name
-- db:delete_cluster(name) -> true | raises not_found
function Db:define_cluster(name, spec) return require("geneva.context.cluster").define(self, name, spec) end
function Db:get_cluster(name) return require("geneva.context.cluster").get(self, name) end
function Db:list_clusters() return require("geneva.context.cluster").list(self) end
function Db:delete_cluster(name) return require("geneva.context.cluster").delete(self, name) end

-- db:define_manifest(name, spec) -> record (packages; writes nothing when unchanged)
-- db:get_manifest(name) -> record | nil, Error(not_found)   (a probe)
-- db:list_manifests() -> array of records, sorted by name
-- db:delete_manifest(name) -> true | raises not_found (the package stays)
function Db:define_manifest(name, spec) return require("geneva.context.manifest").define(self, name, spec) end
function Db:get_manifest(name) return require("geneva.context.manifest").get(self, name) end
function Db:list_manifests() return require("geneva.context.manifest").list(self) end
function Db:delete_manifest(name) return require("geneva.context.manifest").delete(self, name) end

-- }======

return M
