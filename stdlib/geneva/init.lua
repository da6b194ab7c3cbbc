--- The public module: connect to a database, make UDFs, run contexts.
--
--    local geneva = require "geneva"
--    local db = geneva.connect("./data")
--    local tbl = db:open_table("docs")
--    tbl:add_columns { words = geneva.udf { data_type = "int64",
--      fn = function(content) return select(2, content:gsub("%S+", "")) end } }
--    geneva.context { cluster = "two" } (function() tbl:backfill("words") end)
--
-- Submodules load on first use, so `geneva -e ''` and `geneva worker` pay
-- only for what they touch: @{geneva.udf}, @{geneva.recipe}, @{geneva.json},
-- @{geneva.time}, @{geneva.pretty}. `geneva.fs`,
-- `geneva.proc`, `geneva.http`, `geneva.yaml`, `geneva.zip`,
-- `geneva.sqlite` and `geneva.ledger` are the host's own helpers, usable
-- in scripts and UDFs but not part of the API contract.
--
-- Errors are raised as @{geneva.errors.Error} tables with a `code`.
-- @module geneva
local geneva = { _VERSION = "geneva 0.1.0" }

local lazy = {
  ledger = "geneva.ledger", json = "geneva.json", yaml = "geneva.yaml",
  zip = "geneva.zip", sqlite = "geneva.sqlite", fs = "geneva.fs",
  proc = "geneva.proc", http = "geneva.http", time = "geneva.time",
  pretty = "geneva.pretty",
  udf = "geneva.udf",             -- callable: geneva.udf{...}
  recipe = "geneva.recipe",       -- geneva.recipe.load(path [, vars])
}

--- Opens (or creates) a database; see @{geneva.db.connect}.
-- It becomes the database that cluster and manifest names resolve against
-- when a context names no `db`.
-- @string uri a directory path or `s3://bucket/prefix`
-- @tab[opt] opts for s3: `endpoint`, `region`, `profile`, `path_style`
-- @treturn geneva.db.Db
-- @raise invalid_argument for a bad URI or option, unavailable when the
-- directory cannot be made or the bucket not reached
-- @usage local db = geneva.connect("./data")
-- local s3db = geneva.connect("s3://bucket/features", { region = "eu-west-1" })
function geneva.connect(uri, opts)
  local db = require("geneva.db").connect(uri, opts)
  geneva._latest_db = db
  return db
end

--- Makes an execution context (not entered yet); see @{geneva.context.new}.
-- @tab opts `cluster` (a name or an inline spec), `manifest` (a name or an
-- inline spec), `db`, `on_exit`
-- @treturn geneva.context.Context
-- @usage geneva.context { cluster = "gpu", manifest = "dev" } (function()
--   tbl:backfill("embedding")
-- end)   -- the workers are gone here, whether the function returned or raised
function geneva.context(opts) return require("geneva.context").new(opts) end

--- A context on worker processes of this machine.
-- @tab[opt] opts `workers` (default: the number of cores), and `db`,
-- `manifest`, `on_exit` as in @{context}
-- @treturn geneva.context.Context
-- @usage geneva.local_cluster { workers = 2 } (function() tbl:backfill("words") end)
function geneva.local_cluster(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    require("geneva.errors").throw("invalid_argument", "local_cluster: expected a table of options")
  end
  require("geneva.suggest").check_options("local_cluster", opts, { "workers", "db", "manifest", "on_exit", "name" })
  local c = { cluster = { type = "local", workers = opts.workers } }
  for k, v in pairs(opts) do if k ~= "workers" then c[k] = v end end
  return require("geneva.context").new(c)
end

--- A context on an existing Ray cluster, through its dashboard's REST API.
-- @tab opts `address` (the dashboard's URL) and the other fields of a `ray`
-- cluster spec (@{geneva.context.cluster}); `db`, `manifest`, `on_exit` as in
-- @{context}
-- @treturn geneva.context.Context
-- @usage geneva.ray_cluster { address = "http://127.0.0.1:8265" } (function()
--   tbl:backfill("words")
-- end)
function geneva.ray_cluster(opts)
  opts = opts or {}
  local spec, c = { type = "ray" }, {}
  for k, v in pairs(opts) do
    if k == "db" or k == "manifest" or k == "on_exit" then c[k] = v else spec[k] = v end
  end
  c.cluster = spec
  return require("geneva.context").new(c)
end

--- NULL inside batch arrays and results (the JSON null sentinel); `nil`
-- everywhere else.
-- @field null

--- The metatable of API errors, @{geneva.errors.Error}.
-- @field Error

-- what __index gives, for Tab in the REPL
local made_up = { "null", "Error" }
for k in pairs(lazy) do made_up[#made_up + 1] = k end

return setmetatable(geneva, {
  __complete = made_up,
  __index = function(t, k)
    if k == "null" then          -- NULL in batch arrays (json.null)
      local v = require("geneva.json").null
      rawset(t, k, v)
      return v
    end
    if k == "Error" then return require("geneva.errors").Error end
    local name = lazy[k]
    if not name then return nil end
    local m = require(name)
    rawset(t, k, m)
    return m
  end,
})
