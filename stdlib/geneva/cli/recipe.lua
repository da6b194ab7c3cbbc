-- geneva recipe apply|run|validate|render FILE [JOB] [--set k=v ...] [--json]
local args = require "geneva.cli.args"
local json = require "geneva.json"
local output = require "geneva.cli.output"

local M = {}

local usage = [[
usage: geneva recipe apply    FILE [--set NAME=VALUE ...] [--json]
       geneva recipe run      FILE [JOB] [--set NAME=VALUE ...] [--json]
       geneva recipe validate FILE [--set NAME=VALUE ...] [--json]
       geneva recipe render   FILE [--set NAME=VALUE ...] [--json]
apply defines the recipe's clusters and manifests in its db; run applies,
then runs JOB (or every job, in file order) inside its context; validate
checks the recipe without touching anything; render prints it with every
${var} substituted. --set overrides a var of the recipe's vars: block.
Exit status: 0 ok, 1 bad recipe or failed job, 2 bad command line.
]]

local VERBS = { apply = true, run = true, validate = true, render = true }

local function parse_sets(list)
  local vars = {}
  for _, s in ipairs(list or {}) do
    local k, v = s:match("^([^=]*)=(.*)$")
    if not k then error({ usage = ("--set expects NAME=VALUE, got '%s'"):format(s) }, 0) end
    if not k:match("^[%a_][%w_]*$") then
      error({ usage = ("--set: bad variable name '%s' (letters, digits and _)"):format(k) }, 0)
    end
    vars[k] = v
  end
  return vars
end

-- prints the warnings not printed yet (validate adds some after load)
local function warn_all(r)
  local ws = r.warnings or {}
  for i = (r.warned or 0) + 1, #ws do io.stderr:write("geneva: warning: ", ws[i], "\n") end
  r.warned = #ws
end

-- JSON arrays that stay arrays when empty
local function arr(t) return json.array(t or {}) end

local function names(list)
  local out = {}
  for i, e in ipairs(list) do out[i] = e.name end
  return arr(out)
end

local function fmt_seconds(s) return ("%.2f s"):format(s) end

local function result_line(res)
  return ("job %s: %s.%s: %d row%s computed%s in %s (column %s, job %s)"):format(
    res.job, res.table, res.column, res.rows, res.rows == 1 and "" or "s",
    res.failed > 0 and (", %d failed"):format(res.failed) or "",
    fmt_seconds(res.seconds), res.column_action, tostring(res.id))
end

local function do_main(opts, pos)
  local recipe = require "geneva.recipe"
  local verb, file = pos[1], pos[2]
  if not verb then error({ usage = "missing action (apply, run, validate or render)" }, 0) end
  if not VERBS[verb] then
    error({ usage = ("unknown action '%s'%s"):format(verb, require("geneva.suggest").hint(verb, VERBS)) }, 0)
  end
  if not file then error({ usage = "missing recipe FILE" }, 0) end
  local job = pos[3]
  if job and verb ~= "run" then error({ usage = ("unexpected argument '%s'"):format(job) }, 0) end
  if pos[4] then error({ usage = ("unexpected argument '%s'"):format(pos[4]) }, 0) end
  local vars = parse_sets(opts.set)

  local r = recipe.load(file, vars)
  warn_all(r)
  if verb == "render" then
    if opts.json then
      io.stdout:write(json.encode(r.doc, { indent = 2, invalid_utf8 = "replace" }), "\n")
    else
      io.stdout:write((recipe.render(r)))
    end
  elseif verb == "validate" then
    recipe.validate(r)
    warn_all(r)
    if opts.json then
      io.stdout:write(output.json({ ok = true, file = r.file, db = r.db, clusters = names(r.clusters),
        manifests = names(r.manifests), jobs = names(r.jobs), warnings = arr(r.warnings) },
        true), "\n")
    else
      io.stdout:write(("%s: ok (%d cluster%s, %d manifest%s, %d job%s)\n"):format(r.file,
        #r.clusters, #r.clusters == 1 and "" or "s", #r.manifests, #r.manifests == 1 and "" or "s",
        #r.jobs, #r.jobs == 1 and "" or "s"))
    end
  elseif verb == "apply" then
    local _, summary = recipe.apply(r)
    warn_all(r)
    if opts.json then
      io.stdout:write(output.json({ db = summary.db, clusters = arr(summary.clusters),
        manifests = arr(summary.manifests) }, true), "\n")
    else
      io.stdout:write(("applied %s to %s: clusters: %s; manifests: %s\n"):format(r.file, summary.db,
        #summary.clusters > 0 and table.concat(summary.clusters, ", ") or "none",
        #summary.manifests > 0 and table.concat(summary.manifests, ", ") or "none"))
    end
  else
    if job then recipe.find_job(r, job) end          -- an unknown job fails before acting
    local results = recipe.run(r, job, { on_result = not opts.json and function(res)
      warn_all(r)
      io.stdout:write(result_line(res), "\n")
      io.stdout:flush()
    end or nil })
    warn_all(r)
    if opts.json then
      io.stdout:write(output.json(arr(results), true), "\n")
    elseif #results == 0 then
      io.stdout:write(("%s: no jobs to run\n"):format(r.file))
    end
  end
  return 0
end

function M.main(argv)
  local opts = {}
  local ok, res = pcall(function()
    local pos
    opts, pos = args.parse(argv, { set = "list", json = "flag", help = "flag" })
    if opts.help then io.stdout:write(usage) return 0 end
    return do_main(opts, pos)
  end)
  if ok then return res or 0 end
  if type(res) == "table" and res.usage then
    io.stderr:write("geneva: ", res.usage, "\n", usage)
    return 2
  end
  local errors = require "geneva.errors"
  if res == "interrupted" or (errors.is(res) and res.code == "interrupted") then error(res, 0) end
  local e = errors.from(res)
  local problems = type(e.problems) == "table" and e.problems or nil
  if opts.json then
    local err = { code = e.code, message = e.message }
    if problems then
      err.problems = arr({})
      for i, p in ipairs(problems) do err.problems[i] = { line = p.line, col = p.col, message = p.message } end
      err.path = e.path
    end
    io.stdout:write(output.json({ error = err }), "\n")
  elseif problems and #problems > 1 then
    for _, p in ipairs(problems) do
      io.stderr:write(("geneva: %s: %s:%d:%d: %s\n"):format(e.code, e.path or "?", p.line, p.col, p.message))
    end
  else
    io.stderr:write("geneva: ", tostring(e), "\n")
  end
  return 1
end

return M
