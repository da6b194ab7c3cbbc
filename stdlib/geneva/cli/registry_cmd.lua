-- geneva.cli.registry_cmd: the shared shape of `geneva cluster ...` and
-- `geneva manifest ...`: list | show NAME | delete NAME, --db URI,
-- -o json|yaml|wide (or --json).
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
  return ("usage: geneva %s list        --db URI [-o FORMAT | --json]\n"
    .. "       geneva %s show NAME   --db URI [-o FORMAT | --json]\n"
    .. "       geneva %s delete NAME --db URI [-o FORMAT | --json]\n"):format(kind, kind, kind) .. text
    .. "-o json (or --json) prints JSON, -o yaml the same as YAML (keys sorted in\n"
    .. "both); -o wide adds columns to list.\n"
end

-- M.main(argv, kind, usage, impl) -> exit code
-- impl: {list = fn(db) -> records, get = fn(db, name) -> rec | nil, err,
-- delete = fn(db, name), headers = {...}, row = fn(rec) -> {cell, ...},
-- wide_headers = {...}, wide_row = fn(rec) -> {cell, ...} (-o wide: after
-- the others), show = fn(rec) -> text}
function M.main(argv, kind, usage, impl)
  local opts = {}
  return args.run(usage, function() return args.machine(opts) end, function()
    local pos
    opts, pos = args.parse(argv, args.with_output{ db = "value", json = "flag", help = "flag" })
    if opts.help then io.stdout:write(usage) return 0 end
    local verb = args.action(pos, { "list", "show", "delete" }, kind .. " NAME")
    args.format(opts)
    local machine = args.machine(opts)
    local db = args.db(opts)
    if verb == "list" then
      local recs = redact(impl.list(db))
      if machine then
        io.stdout:write(output.document(json.array(recs), machine))
      elseif #recs == 0 then
        io.stderr:write(("No %ss found.\n"):format(kind))
      else
        local wide = opts.format == "wide"
        local headers = impl.headers
        if wide then headers = table.move(impl.wide_headers, 1, #impl.wide_headers, #headers + 1,
          table.move(headers, 1, #headers, 1, {})) end
        local rows = {}
        for i, rec in ipairs(recs) do
          rows[i] = impl.row(rec)
          if wide then table.move(impl.wide_row(rec), 1, #impl.wide_headers, #rows[i] + 1, rows[i]) end
        end
        io.stdout:write(output.table(headers, rows))
      end
    elseif verb == "show" then
      local rec, err = impl.get(db, pos[2])
      if not rec then error(err, 0) end
      rec = redact(rec)
      if machine then
        io.stdout:write(output.document(rec, machine, true))
      else
        io.stdout:write(impl.show(rec))
      end
    else
      impl.delete(db, pos[2])
      if machine then
        io.stdout:write(output.document({ deleted = pos[2], kind = kind }, machine))
      else
        io.stdout:write(("deleted %s '%s'\n"):format(kind, pos[2]))
      end
    end
    return 0
  end)
end

return M
