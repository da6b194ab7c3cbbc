-- geneva.cli.registry_cmd: the shared shape of `geneva cluster ...` and
-- `geneva manifest ...`: list | show NAME | delete NAME, --db URI, --json.
local args = require "geneva.cli.args"
local json = require "geneva.json"
local output = require "geneva.cli.output"

local M = {}

-- A copy of v whose env values under secret names (spec.is_secret_key) read
-- "<redacted>": records written before the rule was widened may hold some,
-- and list/show must not print them.
local function redact(v, is_env)
  if type(v) ~= "table" then return v end
  local is_secret_key = require("geneva.context.spec").is_secret_key
  local out = setmetatable({}, getmetatable(v))    -- keeps json array/object marks
  for k, x in pairs(v) do
    if is_env and type(x) ~= "table" and is_secret_key(k) then out[k] = "<redacted>"
    else out[k] = redact(x, k == "env") end
  end
  return out
end
M.redact = redact

-- M.usage(kind, text) -> the usage of `geneva <kind>`: its three forms, then text
function M.usage(kind, text)
  return ("usage: geneva %s list        --db URI [--json]\n"
    .. "       geneva %s show NAME   --db URI [--json]\n"
    .. "       geneva %s delete NAME --db URI [--json]\n"):format(kind, kind, kind) .. text
end

-- M.main(argv, kind, usage, impl) -> exit code
-- impl: {list = fn(db) -> records, get = fn(db, name) -> rec | nil, err,
-- delete = fn(db, name), headers = {...}, row = fn(rec) -> {cell, ...},
-- show = fn(rec) -> text}
function M.main(argv, kind, usage, impl)
  local opts = {}
  return args.run(usage, function() return opts.json end, function()
    local pos
    opts, pos = args.parse(argv, { db = "value", json = "flag", help = "flag" })
    if opts.help then io.stdout:write(usage) return 0 end
    local verb = args.action(pos, { "list", "show", "delete" }, kind .. " NAME")
    local db = args.db(opts)
    if verb == "list" then
      local recs = redact(impl.list(db))
      if opts.json then
        io.stdout:write(output.json(json.array(recs)), "\n")
      elseif #recs == 0 then
        io.stderr:write(("No %ss found.\n"):format(kind))
      else
        local rows = {}
        for i, rec in ipairs(recs) do rows[i] = impl.row(rec) end
        io.stdout:write(output.table(impl.headers, rows))
      end
    elseif verb == "show" then
      local rec, err = impl.get(db, pos[2])
      if not rec then error(err, 0) end
      rec = redact(rec)
      if opts.json then
        io.stdout:write(output.json(rec, true), "\n")
      else
        io.stdout:write(impl.show(rec))
      end
    else
      impl.delete(db, pos[2])
      if opts.json then
        io.stdout:write(output.json({ deleted = pos[2], kind = kind }), "\n")
      else
        io.stdout:write(("deleted %s '%s'\n"):format(kind, pos[2]))
      end
    end
    return 0
  end)
end

return M
