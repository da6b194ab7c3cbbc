-- geneva tables list|show|cleanup --db URI [--json]
local args = require "geneva.cli.args"
local output = require "geneva.cli.output"

local M = {}

local usage = [[
usage: geneva tables list    --db URI [--json]
       geneva tables show    TABLE --db URI [--json]
       geneva tables cleanup TABLE --db URI [--older-than SECONDS] [--grace SECONDS] [--json]
list: the tables, with rows, versions and the latest version's age.
show: one table's schema, with how much of each virtual column is filled.
cleanup: tbl:cleanup_old_versions: removes versions older than --older-than
(default 7 days; never the latest) and the files no kept version uses,
including what crashed commits and failed folds left (older than --grace,
default 3600 s, so a commit in flight keeps its file).
--json prints the data (keys sorted).
]]

local function seconds(opts, name)
  local v = opts[name]
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or n < 0 then error({ usage = ("--%s: a number of seconds expected, got '%s'"):format(name:gsub("_", "-"), v) }, 0) end
  return n
end

local function summary(tbl)
  local m = tbl:_snapshot()
  return { name = tbl.name, rows = tbl:count_rows(), version = m.version, versions = #tbl:versions(),
           fragments = #m.fragments, created_at = m.created_at }
end

local function schema(tbl)
  local rows = tbl:count_rows()
  local out = {}
  for i, c in ipairs(tbl:schema()) do
    local e = { name = c.name, data_type = c.data_type, virtual = c.virtual or false }
    if c.virtual then
      e.filled = tbl:count_rows(require("geneva.sqlite").quote_ident(c.name) .. " IS NOT NULL")
      e.fill_ratio = rows > 0 and e.filled / rows or 0
      e.udf = c.udf and (c.udf.name or c.udf.fn) or nil
    end
    out[i] = e
  end
  return { name = tbl.name, rows = rows, version = tbl:version(), columns = out }
end

function M.main(argv)
  local opts, pos = {}, {}
  return args.run(usage, function() return opts.json end, function()
    opts, pos = args.parse(argv, { db = "value", json = "flag", help = "flag",
                                   older_than = "value", grace = "value" })
    if opts.help then io.stdout:write(usage) return 0 end
    local verb = args.action(pos, { "list", "show", "cleanup" }, "TABLE")
    local older, grace = seconds(opts, "older_than"), seconds(opts, "grace")
    local db = args.db(opts)
    local json = require "geneva.json"
    if verb == "list" then
      local list = {}
      for i, name in ipairs(db:table_names()) do list[i] = summary(db:open_table(name)) end
      if opts.json then io.stdout:write(output.json(json.array(list)), "\n") return 0 end
      if #list == 0 then io.stderr:write("No tables found.\n") return 0 end
      local rows = {}
      for i, t in ipairs(list) do
        rows[i] = { t.name, tostring(t.rows), tostring(t.version), tostring(t.fragments), output.age(t.created_at) }
      end
      io.stdout:write(output.table({ "NAME", "ROWS", "VERSION", "FRAGMENTS", "CHANGED" }, rows))
    elseif verb == "show" then
      local s = schema(db:open_table(pos[2]))
      if opts.json then io.stdout:write(output.json(s), "\n") return 0 end
      io.stdout:write(("%s: %d rows, version %d\n"):format(s.name, s.rows, s.version))
      local rows = {}
      for i, c in ipairs(s.columns) do
        rows[i] = { c.name, c.data_type, c.virtual and ("udf " .. tostring(c.udf or "?")) or "stored",
                    c.virtual and ("%d (%.0f%%)"):format(c.filled, 100 * c.fill_ratio) or "" }
      end
      io.stdout:write(output.table({ "COLUMN", "TYPE", "KIND", "FILLED" }, rows))
    else
      local r = db:open_table(pos[2]):cleanup_old_versions { older_than = older, grace = grace }
      if opts.json then io.stdout:write(output.json(r), "\n") return 0 end
      io.stdout:write(("%s: removed %d version(s) and %d file(s), %d bytes\n")
        :format(pos[2], r.versions_removed, r.files_removed, r.bytes_removed))
    end
    return 0
  end)
end

return M
