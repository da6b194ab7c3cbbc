-- geneva cluster list|show NAME|delete NAME --db URI [-o json|yaml|wide | --json]
local registry_cmd = require "geneva.cli.registry_cmd"
local cluster = require "geneva.context.cluster"
local output = require "geneva.cli.output"

local M = {}

local usage = registry_cmd.usage("cluster", [[
Lists the clusters defined in a database, shows one definition, or deletes
it. Secrets appear only as references (token_env, token_file, from_env).
-o wide adds ENV (the names of the variables set) and CREATED, UPDATED.
Exit codes: 0 ok, 1 failure (unknown name, no database), 2 bad syntax.
]])

local function summary(spec)
  if spec.type == "local" then
    return "workers=" .. (spec.workers and tostring(spec.workers) or "cores")
  elseif spec.type == "ray" then
    return spec.address .. (spec.ship_host and " ship_host" or "")
  else
    local groups = {}
    for _, g in ipairs(spec.worker_groups or {}) do
      groups[#groups + 1] = ("%s=%s"):format(g.name, tostring(g.replicas or g.min_replicas or 0))
    end
    return ("namespace=%s workers=%s"):format(spec.namespace or "-", #groups > 0 and table.concat(groups, ",") or "-")
  end
end

local impl = {
  list = cluster.list,
  get = function(db, name)
    local rec = cluster.record(db, name)
    if rec then return rec end
    return cluster.get(db, name)
  end,
  delete = cluster.delete,
  headers = { "NAME", "TYPE", "SPEC", "AGE" },
  wide_headers = { "ENV", "CREATED", "UPDATED" },
  wide_row = function(rec)
    local names = {}
    for k in pairs((rec.spec or {}).env or {}) do names[#names + 1] = tostring(k) end
    table.sort(names)
    return { #names > 0 and table.concat(names, ",") or "-", rec.created_at or "-", rec.updated_at or "-" }
  end,
  row = function(rec)
    return { rec.name, rec.type or "?", summary(rec.spec or {}), output.age(rec.updated_at) }
  end,
  show = function(rec)
    -- the spec as YAML, the language recipes define clusters in
    return ("cluster %s (%s)\ncreated %s, updated %s\n%s"):format(rec.name, rec.type,
      rec.created_at or "?", rec.updated_at or "?", output.yaml(rec.spec))
  end,
}

function M.main(argv)
  return registry_cmd.main(argv, "cluster", usage, impl)
end

return M
