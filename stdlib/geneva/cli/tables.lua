-- geneva tables list|show|cleanup --db URI [-o json|yaml|wide | --json]
local args = require "geneva.cli.args"
local output = require "geneva.cli.output"

local M = {}

local usage = [[
usage: geneva tables list    --db URI [-o FORMAT | --json]
       geneva tables show    TABLE --db URI [-o FORMAT | --json]
       geneva tables cleanup TABLE --db URI [--older-than SECONDS] [--grace SECONDS] [-o FORMAT | --json]
list: the tables, with rows, versions and the latest version's age.
show: one table's schema, with how much of each virtual column is filled.
cleanup: tbl:cleanup_old_versions: removes versions older than --older-than
(default 7 days; never the latest) and the files no kept version uses,
including what crashed commits and failed folds left (older than --grace,
default 3600 s, so a commit in flight keeps its file).
-o json (or --json) prints the data as JSON, -o yaml as YAML (keys sorted
in both); -o wide adds to list VERSIONS, COLUMNS (stored + virtual) and
FILES (the data and column files the latest version reads), and to show
each virtual column's UDF VERSION and FILES.
]]

local function seconds(opts, name)
  local v = opts[name]
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or n < 0 then error({ usage = ("--%s: a number of seconds expected, got '%s'"):format(name:gsub("_", "-"), v) }, 0) end
  return n
end

-- the files a snapshot reads: data files, and column files of `column`
-- (all columns when nil)
local function files_of(m, column)
  local n = 0
  for _, f in ipairs(m.fragments) do
    if column == nil then n = n + 1 end
    for name, list in pairs(f.columns or {}) do
      if column == nil or name == column then n = n + #list end
    end
  end
  return n
end

local function summary(tbl)
  local m = tbl:_snapshot()
  local stored, virtual = 0, 0
  for _, c in ipairs(m.schema) do
    if c.virtual then virtual = virtual + 1 else stored = stored + 1 end
  end
  return { name = tbl.name, rows = tbl:count_rows(), version = m.version, versions = #tbl:versions(),
           fragments = #m.fragments, created_at = m.created_at, files = files_of(m),
           stored_columns = stored, virtual_columns = virtual }
end

local function schema(tbl)
  local rows = tbl:count_rows()
  local m = tbl:_snapshot()
  local out = {}
  for i, c in ipairs(tbl:schema()) do
    local e = { name = c.name, data_type = c.data_type, virtual = c.virtual or false }
    if c.virtual then
      e.filled = tbl:count_rows(require("geneva.sqlite").quote_ident(c.name) .. " IS NOT NULL")
      e.fill_ratio = rows > 0 and e.filled / rows or 0
      e.udf = c.udf and (c.udf.name or c.udf.fn) or nil
      e.udf_version = c.udf_version
      e.files = files_of(m, c.name)
    end
    out[i] = e
  end
  return { name = tbl.name, rows = rows, version = tbl:version(), columns = out }
end

function M.main(argv)
  local opts, pos = {}, {}
  return args.run(usage, function() return args.machine(opts) end, function()
    opts, pos = args.parse(argv, args.with_output{ db = "value", json = "flag", help = "flag",
                                   older_than = "value", grace = "value" })
    if opts.help then io.stdout:write(usage) return 0 end
    local verb = args.action(pos, { "list", "show", "cleanup" }, "TABLE")
    args.format(opts)
    local machine, wide = args.machine(opts), opts.format == "wide"
    local older, grace = seconds(opts, "older_than"), seconds(opts, "grace")
    local db = args.db(opts)
    local json = require "geneva.json"
    if verb == "list" then
      local list = {}
      for i, name in ipairs(db:table_names()) do list[i] = summary(db:open_table(name)) end
      if machine then io.stdout:write(output.document(json.array(list), machine)) return 0 end
      if #list == 0 then io.stderr:write("No tables found.\n") return 0 end
      local rows = {}
      for i, t in ipairs(list) do
        rows[i] = { t.name, tostring(t.rows), tostring(t.version), tostring(t.fragments), output.age(t.created_at) }
        if wide then
          table.move({ tostring(t.versions), ("%d + %d"):format(t.stored_columns, t.virtual_columns),
                       tostring(t.files) }, 1, 3, 6, rows[i])
        end
      end
      local headers = { "NAME", "ROWS", "VERSION", "FRAGMENTS", "CHANGED" }
      if wide then table.move({ "VERSIONS", "COLUMNS", "FILES" }, 1, 3, 6, headers) end
      io.stdout:write(output.table(headers, rows))
    elseif verb == "show" then
      local s = schema(db:open_table(pos[2]))
      if machine then io.stdout:write(output.document(s, machine)) return 0 end
      io.stdout:write(("%s: %d rows, version %d\n"):format(s.name, s.rows, s.version))
      local rows = {}
      for i, c in ipairs(s.columns) do
        rows[i] = { c.name, c.data_type, c.virtual and ("udf " .. tostring(c.udf or "?")) or "stored",
                    c.virtual and ("%d (%.0f%%)"):format(c.filled, 100 * c.fill_ratio) or "" }
        if wide then
          rows[i][5] = c.virtual and tostring(c.udf_version or "?"):sub(1, 12) or ""
          rows[i][6] = c.virtual and tostring(c.files) or ""
        end
      end
      local headers = { "COLUMN", "TYPE", "KIND", "FILLED" }
      if wide then headers[5], headers[6] = "UDF VERSION", "FILES" end
      io.stdout:write(output.table(headers, rows))
    else
      local r = db:open_table(pos[2]):cleanup_old_versions { older_than = older, grace = grace }
      if machine then io.stdout:write(output.document(r, machine)) return 0 end
      io.stdout:write(("%s: removed %d version(s) and %d file(s), %d bytes\n")
        :format(pos[2], r.versions_removed, r.files_removed, r.bytes_removed))
    end
    return 0
  end)
end

return M
