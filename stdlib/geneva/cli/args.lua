-- geneva.cli.args: option parsing shared by the subcommands.
--   local opts, pos = args.parse(argv, {db = "value", json = "flag", ...})
-- A short option is an entry naming its long one: {["-f"] = "follow"}.
-- raises {usage = message} for bad syntax (the command exits 2).
local suggest = require "geneva.suggest"

local args = {}

function args.parse(argv, spec)
  local opts, pos = {}, {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local name, inline = a:match("^%-%-([%w%-_]+)=(.*)$")
    name = name or a:match("^%-%-([%w%-_]+)$")
    if a == "-h" then name = "help" end
    if a:match("^%-%a$") and type(spec[a]) == "string" and spec[spec[a]] then name = spec[a] end
    if name then
      local key = name:gsub("%-", "_")
      local kind = spec[key]
      if not kind then
        local names = {}
        for k, v in pairs(spec) do if not k:match("^%-") and v then names[#names + 1] = k:gsub("_", "-") end end
        local near = suggest.nearest(name, names)
        error({ usage = ("unknown option '--%s'%s"):format(name, near and (" (did you mean '--%s'?)"):format(near) or "") }, 0)
      end
      if kind == "flag" then
        if inline then error({ usage = ("option '--%s' takes no value"):format(name) }, 0) end
        opts[key] = true
      else
        local v = inline
        if not v then
          i = i + 1
          v = argv[i]
          if v == nil then error({ usage = ("option '--%s' needs a value"):format(name) }, 0) end
        end
        if kind == "list" then
          opts[key] = opts[key] or {}
          table.insert(opts[key], v)
        else
          opts[key] = v
        end
      end
    elseif a == "--" then
      for j = i + 1, #argv do pos[#pos + 1] = argv[j] end
      break
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

-- The machine and wide formats of list/show commands (kubectl's -o):
-- json is --json, yaml the same document in YAML, wide a table with more
-- columns. args.OUTPUT_OPTIONS go into a command's args.parse spec.
args.FORMATS = { "json", "yaml", "wide" }
args.OUTPUT_OPTIONS = { output = "value", ["-o"] = "output" }

-- args.with_output(spec) -> spec with -o/--output added
function args.with_output(spec)
  for k, v in pairs(args.OUTPUT_OPTIONS) do spec[k] = v end
  return spec
end

-- args.format(opts) -> nil | "json" | "yaml" | "wide" from --json and
-- -o/--output FORMAT; also sets opts.format (and opts.json for json).
-- Raises {usage = ...} for an unknown format or one --json contradicts.
function args.format(opts)
  local f = opts.output
  if f == nil then
    opts.format = opts.json and "json" or nil
    return opts.format
  end
  local known = false
  for _, x in ipairs(args.FORMATS) do known = known or x == f end
  if not known then
    error({ usage = ("unknown output format '%s'%s"):format(f, suggest.unknown(f, args.FORMATS)) }, 0)
  end
  if opts.json and f ~= "json" then
    error({ usage = ("--json and -o %s contradict each other: give one"):format(f) }, 0)
  end
  opts.format = f
  if f == "json" then opts.json = true end
  return f
end

-- args.machine(opts) -> "json" | "yaml" | nil: the document format the
-- command prints (errors included), if any
function args.machine(opts)
  local f = opts.format or (opts.json and "json") or nil
  if f == "json" or f == "yaml" then return f end
  return nil
end

-- args.action(pos, verbs, operand) -> verb: the command's first word must
-- be one of verbs (a list); each verb but the first takes one operand, named
-- in the message when it is missing ("job ID"). Raises {usage = message}.
function args.action(pos, verbs, operand)
  local verb = pos[1]
  if not verb then
    error({ usage = ("missing action (%s or %s)"):format(table.concat(verbs, ", ", 1, #verbs - 1),
      verbs[#verbs]) }, 0)
  end
  local known = false
  for _, v in ipairs(verbs) do known = known or v == verb end
  if not known then error({ usage = ("unknown action '%s'%s"):format(verb, suggest.hint(verb, verbs)) }, 0) end
  local n = verb == verbs[1] and 1 or 2
  if n == 2 and not pos[2] then error({ usage = ("missing %s"):format(operand) }, 0) end
  if #pos > n then error({ usage = ("unexpected argument '%s'"):format(pos[n + 1]) }, 0) end
  return verb
end

-- args.database(opts) -> the database's directory: --db must be given (a
-- usage error) and name a directory that exists (a path or file://path, as
-- geneva.connect reads it; raises not_found) or an s3:// database
-- (mounted: the directory is its mirror, geneva.store.backend.s3)
function args.database(opts)
  if not opts.db then error({ usage = "missing --db URI" }, 0) end
  if opts.db:match("^s3://") then return require("geneva.db").connect_existing(opts.db).dir end
  local dir = require("geneva.db").directory_of(opts.db)     -- file:// as connect reads it
  local st = require("geneva.fs").stat(dir)
  if not st or st.type ~= "dir" then
    require("geneva.errors").throw("not_found", ("no database at '%s'"):format(opts.db))
  end
  return dir
end

-- args.db(opts) -> Db: geneva.connect of --db, checked as args.database
-- checks it (an s3:// URI is connected as such, not as its mirror)
function args.db(opts)
  local dir = args.database(opts)
  return require("geneva.db").connect(opts.db:match("^s3://") and opts.db or dir)
end

-- args.run(usage, machine, fn) -> exit code: runs fn(), mapping usage
-- errors to 2, geneva.Errors to 1 (as {"error": ...} on stdout when
-- machine() says "json" or true (--json), or "yaml")
function args.run(usage, json_out, fn)
  local ok, res = pcall(fn)
  if ok then return res or 0 end
  if type(res) == "table" and res.usage then
    io.stderr:write("geneva: ", res.usage, "\n", usage)
    return 2
  end
  if res == "interrupted" then error(res, 0) end
  local errors = require "geneva.errors"
  local e = errors.from(res)
  local machine = json_out()
  if machine then
    io.stdout:write(require("geneva.cli.output").document({ error = { code = e.code, message = e.message } },
      machine == "yaml" and "yaml" or "json"))
  else
    io.stderr:write("geneva: ", tostring(e), "\n")
  end
  return 1
end

return args
