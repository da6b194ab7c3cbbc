-- geneva: the public module. Submodules load on first use, so `geneva -e ''`
-- and `geneva worker` pay only for what they touch.
local geneva = { _VERSION = "geneva 0.1.0" }

local lazy = {
  ledger = "geneva.ledger", json = "geneva.json", yaml = "geneva.yaml",
  zip = "geneva.zip", sqlite = "geneva.sqlite", fs = "geneva.fs",
  proc = "geneva.proc", http = "geneva.http", time = "geneva.time",
  pretty = "geneva.pretty",
  udf = "geneva.udf",             -- callable: geneva.udf{...}
  recipe = "geneva.recipe",       -- geneva.recipe.load(path [, vars])
}

-- geneva.connect(uri [, opts]) -> Db (geneva.db); it becomes the database
-- names resolve against (geneva._latest_db).
function geneva.connect(uri, opts)
  local db = require("geneva.db").connect(uri, opts)
  geneva._latest_db = db
  return db
end

-- geneva.context{cluster=, manifest=, db=, on_exit=} -> Context: ctx(fn, ...)
-- runs fn inside and always tears down (geneva.context)
function geneva.context(opts) return require("geneva.context").new(opts) end

-- geneva.local_cluster{workers = n [, db=, manifest=, on_exit=]} -> Context
function geneva.local_cluster(opts)
  opts = opts or {}
  local c = { cluster = { type = "local", workers = opts.workers } }
  for k, v in pairs(opts) do if k ~= "workers" then c[k] = v end end
  return require("geneva.context").new(c)
end

-- geneva.ray_cluster{address = url, ...} -> Context on an existing Ray cluster
function geneva.ray_cluster(opts)
  opts = opts or {}
  local spec, c = { type = "ray" }, {}
  for k, v in pairs(opts) do
    if k == "db" or k == "manifest" or k == "on_exit" then c[k] = v else spec[k] = v end
  end
  c.cluster = spec
  return require("geneva.context").new(c)
end

local made_up = { "null", "Error" }     -- what __index gives, for Tab in the REPL
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
