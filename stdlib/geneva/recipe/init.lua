--- Team recipes: templated YAML files that define clusters and manifests
-- and name backfill jobs (`geneva recipe validate|run|apply|render`).
--
--    vars:   { db: ./data, table: docs }
--    db: ${db}
--    clusters:  { two: { type: local, workers: 2 } }      # as define_cluster
--    manifests: { udfs: { modules: [my_udfs] } }           # as define_manifest
--    jobs:
--      chars:
--        table: ${table}
--        column: chars
--        udf: { module: my_udfs, function: chars, data_type: int64 }   # + udf options
--        where: "id <= ${max_id:-100}"
--        cluster: two
--        manifest: udfs
--        backfill: { batch_size: 1000, concurrency: 2 }
--
-- Every scalar may use `${name}` (a var from `--set` / the `vars` argument,
-- else the recipe's `vars:` block) or `${name:-default}`; `$${` is a
-- literal `${`. An unquoted scalar is re-typed after substitution (`2` is
-- an integer, `true` a boolean), a quoted one stays a string, and one that
-- is exactly `${name}` takes a list or map var as it is. YAML ends an
-- unquoted scalar at `{` inside flow collections: quote the reference
-- there. Top-level keys starting with `x-` are free-form (anchors for
-- `<<: *name`); any other unknown field is an error, and so are duplicate
-- keys. Relative paths resolve against the recipe's directory, which is
-- also put first on `package.path` (so `udf.module` finds a module next to
-- the recipe).
--
-- Errors are `invalid_argument` with the message `<file>:<line>:<col>:
-- <what>` and the fields `path`, `line`, `col` and `problems` (every problem
-- found, each `{line=, col=, message=}`); `not_found` for a missing file.
-- @module geneva.recipe

-- Internals. Substitution is capped (geneva.recipe.template: 4 MiB of
-- substituted text, 1e6 nodes copied by whole list/map uses, vars and
-- defaults 64 deep): past a cap, load fails at the scalar that crossed it.
-- Defaults in `vars:` may refer to other vars. The pieces:
-- geneva.recipe.template (positions, problems, substitution),
-- geneva.recipe.shape (the fields of a recipe); this module loads, checks
-- further, applies, runs and renders.
local yaml = require "geneva.yaml"
local errors = require "geneva.errors"
local fs = require "geneva.fs"
local template = require "geneva.recipe.template"
local shape = require "geneva.recipe.shape"

local NULL = yaml.null
local loc_of, deep_copy = shape.loc_of, template.deep_copy

local recipe = {}

local Recipe = {}
Recipe.__index = Recipe
Recipe.__name = "geneva.Recipe"
function Recipe:__tostring() return ("geneva.Recipe %s"):format(self.file) end
recipe.Recipe = Recipe

-- {====== Loading

local function dirname(path)
  local d = path:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

local function absolute(dir, p)
  if p:sub(1, 1) == "/" then return p end
  p = p:gsub("^%./", "")
  if p == "." or p == "" then return dir end
  return dir .. "/" .. p
end

local function prepend_package_path(dir)
  local entry = dir .. "/?.lua;" .. dir .. "/?/init.lua;"
  if package.path:sub(1, #entry) ~= entry then
    -- remove an older copy so the recipe's directory is first exactly once
    local plain = entry:gsub("%p", "%%%0")
    package.path = entry .. package.path:gsub(plain, "")
  end
end

local function check_vars(vars)
  if vars == nil then return {} end
  if type(vars) ~= "table" then
    errors.throw("invalid_argument", ("recipe: vars must be a table of name = value, got %s"):format(type(vars)))
  end
  local out = {}
  for k, v in pairs(vars) do
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then
      errors.throw("invalid_argument", ("recipe: bad variable name %s (letters, digits and _, not starting with a digit)")
        :format(type(k) == "string" and ("'" .. k .. "'") or tostring(k)))
    end
    if type(v) ~= "table" and not template.value_text(v) then
      errors.throw("invalid_argument", ("recipe: variable '%s' must be a string, number, boolean or table, got %s")
        :format(k, type(v)))
    end
    out[k] = v
  end
  return out
end

-- A parse error message "<file>:<l>:<c>: what" -> line, col; with a hint
-- when the line puts ${...} inside a flow collection.
local function yaml_error(file, src, msg, code)
  local line, col = msg:match("^.-:(%d+):(%d+): ")
  line, col = tonumber(line), tonumber(col)
  local text = line and src.text:sub(src.starts[line] or 1, (src.starts[line + 1] or 0) - 1) or ""
  if code == "YAML_PARSE" and text:find("[%[{].-%${") then
    msg = msg .. " (hint: inside [...] or {...} an unquoted ${...} ends at '{': quote it or use block style)"
  end
  return errors.new("invalid_argument", msg, { path = file, line = line, col = col, yaml_code = code,
    problems = { { line = line or 1, col = col or 1, message = msg:gsub("^.-:%d+:%d+: ", "") } } })
end

--- Loads a recipe: parses, substitutes and checks its shape.
-- Puts the recipe's directory first on `package.path`; nothing else is
-- touched.
-- @string path the YAML file
-- @tab[opt] vars `{name = value}` overriding the recipe's `vars:` (what
-- `--set` gives; strings are re-typed like unquoted text when they fill a
-- whole unquoted scalar)
-- @treturn table the Recipe: `file`, `path`, `dir`, `doc` (the substituted
-- document), `vars` (effective values), `warnings` (a `--set` nobody
-- used, ...), `db`, `clusters` and `manifests` (`{name=, spec=}` in file
-- order), `jobs` (`{name=, table=, column=, udf=, where=, cluster=,
-- manifest=, backfill=}` in file order)
-- @raise `not_found` (no file), `invalid_argument` (bad YAML, unknown
-- variable or field, wrong type; at `file:line:col`)
-- @usage local r = geneva.recipe.load("chars.yaml", { db = "/elsewhere" })
function recipe.load(path, vars)
  if type(path) ~= "string" or path == "" then
    errors.throw("invalid_argument", "recipe.load: path must be a file name")
  end
  local set = check_vars(vars)
  local text, msg, code = fs.read(path)
  if not text then
    errors.throw(code == "ENOENT" and "not_found" or "unavailable",
      ("cannot read recipe %s: %s"):format(path, tostring(msg)), { path = path })
  end
  local src = template.source(text, path)
  local doc, pos, ycode = yaml.load(text, { filename = path, positions = true })
  if doc == nil then error(yaml_error(path, src, pos, ycode), 0) end

  local dir = assert(fs.realpath(dirname(path)))
  local r = setmetatable({ file = path, dir = dir, path = dir .. "/" .. path:match("[^/]*$"),
                           warnings = {}, problems = template.problems(path) }, Recipe)

  local used
  r.doc, r.pos, r.vars, used = template.expand(doc, pos, src, set, r.problems)
  r.problems:check()

  local names = {}
  for k in pairs(set) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    if not used[k] then
      r.warnings[#r.warnings + 1] = ("%s: --set %s: no ${%s} in the recipe uses it"):format(path, k, k)
    end
  end

  shape.check(r)
  r.problems:check()

  -- the database: an absolute path (or a URI, kept)
  local uri = r.db_uri
  if uri:match("^%a[%w+.-]*://") then
    local p = uri:match("^file://(.*)$")
    r.db = p and absolute(dir, p) or uri
  else
    r.db = absolute(dir, uri)
  end
  prepend_package_path(dir)
  return r
end

-- }======

-- {====== Validation and the objects a recipe makes

-- Where an error naming a field path (err.field = "a.b[2].c" or an array,
-- or a quoted path in its message) points in the spec map at node; at
-- least node itself.
local function field_loc(r, node, err, fallback)
  local paths = {}
  local f = type(err) == "table" and err.field
  if type(f) == "table" then
    paths[#paths + 1] = f
  elseif type(f) == "string" then
    paths[#paths + 1] = f
  end
  local msg = type(err) == "table" and tostring(err.message or "") or tostring(err)
  for q in msg:gmatch("'([%w_%.%[%]%-]+)'") do
    paths[#paths + 1] = q
    if type(f) == "string" then paths[#paths + 1] = f .. "." .. q end   -- "unknown field 'q'" in f
  end
  for seg in (msg .. ": "):gmatch("%s*([^:]+): ") do
    if seg:match("^[%w_][%w_%.%[%]]*$") then paths[#paths + 1] = seg end
  end
  local best, best_depth = fallback, 0
  for _, path in ipairs(paths) do
    local parts = path
    if type(path) == "string" then
      parts = {}
      for seg in path:gsub("%[(%d+)%]", ".%1"):gmatch("[^.]+") do
        parts[#parts + 1] = math.tointeger(tonumber(seg)) or seg
      end
    end
    local t, loc, depth = node, nil, 0
    for _, seg in ipairs(parts) do
      if type(t) ~= "table" then break end
      local p = r.pos[t]
      if not p then break end
      local l
      if p.kind == "seq" then
        l = math.type(seg) == "integer" and p.items[seg]
      else
        l = p.keys[seg] or (math.type(seg) == "integer" and p.keys[tostring(seg)])
        if l and t[seg] == nil then seg = tostring(seg) end
      end
      if not l then break end
      loc, t, depth = l, t[seg], depth + 1
    end
    if loc and depth > best_depth then best, best_depth = loc, depth end
  end
  return best
end

-- Error e again with another message, its fields and then extra's.
local function reworded(e, message, extra)
  local fields = {}
  for k, v in pairs(e) do fields[k] = v end
  fields.code, fields.message = nil, nil
  for k, v in pairs(extra) do fields[k] = v end
  return errors.new(e.code, message, fields)
end

-- Re-raises err as an invalid_argument (or its own code) located in the file.
local function located_error(r, loc, prefix, err)
  local e = errors.from(err)
  loc = loc or { line = 1, col = 1 }
  return reworded(e, ("%s:%d:%d: %s: %s"):format(r.file, loc.line, loc.col, prefix, e.message),
    { path = r.file, line = loc.line, col = loc.col })
end

-- YAML nulls are absent fields to the registries
local function strip_nulls(t)
  for k, v in pairs(t) do
    if v == NULL then t[k] = nil elseif type(v) == "table" then strip_nulls(v) end
  end
  return t
end

-- Specs with relative paths resolved against the recipe's directory.
local function resolve_cluster_spec(r, spec)
  local s = strip_nulls(deep_copy(spec))
  for _, k in ipairs({ "kubeconfig", "token_file" }) do
    if type(s[k]) == "string" and s[k] ~= "" then s[k] = absolute(r.dir, s[k]) end
  end
  return s
end

local function resolve_manifest_spec(r, spec)
  local s = strip_nulls(deep_copy(spec))
  -- file globs stay relative (their zip names), to the recipe's directory
  if s.base_dir == nil then s.base_dir = r.dir
  elseif type(s.base_dir) == "string" and s.base_dir ~= "" then s.base_dir = absolute(r.dir, s.base_dir) end
  if type(s.local_zip_output_dir) == "string" then
    s.local_zip_output_dir = absolute(r.dir, s.local_zip_output_dir)
  end
  return s
end

-- The geneva.udf of a job. Raises located errors.
local function job_udf(r, j)
  local o = {}
  for k, v in pairs(j.udf or {}) do o[k] = v end
  if type(o.setup) == "table" then o.setup = { module = o.setup.module, ["function"] = o.setup["function"] } end
  local ok, u = pcall(require("geneva.udf").new, o)
  if ok then return u end
  local node = j.node.udf
  local loc = field_loc(r, node, u, loc_of(r, j.node, "udf", "key"))
  error(located_error(r, loc, ("job '%s' udf"):format(j.name), u), 0)
end

-- Whether list (a YAML sequence, or anything) holds the string s
local function lists(list, s)
  if type(list) ~= "table" then return false end
  for _, x in ipairs(list) do if x == s then return true end end
  return false
end

-- The recipe's own spec of manifest `name`, or nil (a manifest of the db)
local function recipe_manifest(r, name)
  for _, e in ipairs(r.manifests) do
    if e.name == name then return e end
  end
end

-- Runs fn with the files of the job's manifest (when the recipe defines it)
-- on package.path, where its packaged files' root will be on the workers:
-- a module UDF shipped in `files` loads here as it will there.
local function with_manifest_files(r, j, fn)
  local e = j.manifest and recipe_manifest(r, j.manifest)
  local spec = e and resolve_manifest_spec(r, e.spec)
  if not (spec and spec.files and type(spec.base_dir) == "string") then return fn() end
  local entry = ("%s/?.lua;%s/?/init.lua;"):format(spec.base_dir, spec.base_dir)
  local saved = package.path
  package.path = entry .. package.path
  local res = table.pack(pcall(fn))
  package.path = saved
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

local function backfill_opts(j)
  local o = {}
  for k, v in pairs(j.backfill or {}) do o[k] = v end
  if j.where then o.where = j.where end
  return o
end

--- Checks what can be checked without creating anything: cluster and
-- manifest specs (a manifest's modules and files must exist), each job's
-- UDF (its module must load), the names jobs use.
-- @tab r a Recipe from @{load}
-- @treturn table `r`
-- @raise `invalid_argument` at `file:line:col`
function recipe.validate(r)
  assert(getmetatable(r) == Recipe, "recipe.validate: expected a Recipe (recipe.load)")
  local problems = template.problems(r.file)
  local function add(loc, err, prefix)
    local e = located_error(r, loc, prefix, err)
    problems:add(loc, "%s", (e.message:gsub("^.-:%d+:%d+: ", "")))
  end
  local cluster_mod = require "geneva.context.cluster"
  local manifest_mod = require "geneva.context.manifest"
  local registry = require "geneva.context.registry"
  for _, section in ipairs({ { "clusters", "cluster", cluster_mod, resolve_cluster_spec },
                             { "manifests", "manifest", manifest_mod, resolve_manifest_spec } }) do
    local list, kind, mod, resolve = section[1], section[2], section[3], section[4]
    local node = r.doc[list]
    for _, e in ipairs(r[list]) do
      local keyloc = loc_of(r, node, e.name, "key")
      local ok, err = pcall(registry.check_name, kind, e.name)
      if not ok then add(keyloc, err, kind .. " '" .. e.name .. "'") end
      ok, err = pcall(mod.validate, resolve(r, e.spec))
      -- a manifest's modules and files must exist, as apply will find them
      if ok and mod.check_sources then ok, err = pcall(mod.check_sources, resolve(r, e.spec)) end
      if not ok then add(field_loc(r, e.spec, err, keyloc), err, kind .. " '" .. e.name .. "'") end
    end
  end
  for _, j in ipairs(r.jobs) do
    local ok, err = pcall(with_manifest_files, r, j, function() return job_udf(r, j) end)
    local e = not ok and errors.from(err)
    local mod = j.udf and j.udf.module
    local missing = e and type(mod) == "string" and e.message:find("module '" .. mod .. "' not found", 1, true)
    local rm = missing and j.manifest and recipe_manifest(r, j.manifest)
    if rm and lists(rm.spec.modules, mod) then
      -- the manifest's own problem says it: module not found, at the manifest
    elseif missing and j.manifest and not rm then
      -- its module may be in the db's manifest: known only once unpacked
      local l = loc_of(r, j.node, "udf", "key") or { line = 1, col = 1 }
      r.warnings[#r.warnings + 1] = ("%s:%d:%d: job '%s': module '%s' is not on package.path here; "
        .. "it must be in manifest '%s'"):format(r.file, l.line, l.col, j.name, mod, j.manifest)
    elseif e then
      problems:add({ line = e.line or 1, col = e.col or 1 }, "%s", (e.message:gsub("^.-:%d+:%d+: ", "")))
    end
    local ok2, err2 = pcall(require("geneva.db").check_table_name, j.table)
    if not ok2 then add(loc_of(r, j.node, "table"), err2, ("job '%s'"):format(j.name)) end
  end
  problems:check()
  return r
end

-- Finds a job by name; raises not_found listing the recipe's jobs.
local function find_job(r, name)
  for _, j in ipairs(r.jobs) do
    if j.name == name then return j end
  end
  local names = {}
  for _, j in ipairs(r.jobs) do names[#names + 1] = j.name end
  errors.throw("not_found", ("%s: no job '%s' (jobs: %s)"):format(r.file, tostring(name),
    #names > 0 and table.concat(names, ", ") or "none"), { path = r.file })
end

--- Validates, connects the recipe's database (creating its directory) and
-- defines its clusters, then its manifests, in file order (unchanged
-- definitions write nothing).
-- @tab r a Recipe from @{load}
-- @treturn geneva.db.Db
-- @treturn table `{db = path, clusters = {names}, manifests = {names}}`
-- @raise `invalid_argument` at the offending field's `file:line:col`
function recipe.apply(r)
  recipe.validate(r)
  local db = require("geneva.db").connect(r.db)
  local summary = { db = db.path, clusters = {}, manifests = {} }
  for _, section in ipairs({ { "clusters", "cluster", resolve_cluster_spec, "define_cluster" },
                             { "manifests", "manifest", resolve_manifest_spec, "define_manifest" } }) do
    local list, kind, resolve, method = section[1], section[2], section[3], section[4]
    for _, e in ipairs(r[list]) do
      local ok, err = pcall(db[method], db, e.name, resolve(r, e.spec))
      if not ok then
        local keyloc = loc_of(r, r.doc[list], e.name, "key")
        error(located_error(r, field_loc(r, e.spec, err, keyloc), kind .. " '" .. e.name .. "'", err), 0)
      end
      table.insert(summary[list], e.name)
    end
  end
  return db, summary
end

-- Adds the job's column, or re-points it when its UDF changed; returns
-- "added" | "altered" | "unchanged".
local function ensure_column(r, j, tbl, u)
  local json = require "geneva.json"
  local col = tbl:schema()[j.column]
  if not col then
    local ok, err = pcall(tbl.add_columns, tbl, { [j.column] = u })
    if not ok then error(located_error(r, loc_of(r, j.node, "column"), ("job '%s'"):format(j.name), err), 0) end
    return "added"
  end
  if not col.virtual then
    error(located_error(r, loc_of(r, j.node, "column"), ("job '%s'"):format(j.name),
      errors.new("invalid_argument", ("column '%s' of table '%s' is a stored column, not a computed one")
        :format(j.column, j.table))), 0)
  end
  local function norm(spec)
    return json.canonical(json.decode(json.encode(spec), { null_as_nil = true }))
  end
  if col.udf_version == u.version and norm(col.udf) == norm(u:spec()) then return "unchanged" end
  local ok, err = pcall(tbl.alter_columns, tbl, { { path = j.column, udf = u } })
  if not ok then error(located_error(r, loc_of(r, j.node, "udf", "key"), ("job '%s'"):format(j.name), err), 0) end
  return "altered"
end

-- Runs one job on db; returns its result (see recipe.run).
local function run_job(r, db, j)
  local time = require "geneva.time"
  local t0 = time.monotonic()
  local ok, tbl = pcall(db.open_table, db, j.table)
  if not ok then error(located_error(r, loc_of(r, j.node, "table"), ("job '%s'"):format(j.name), tbl), 0) end
  local action, located
  -- the column's UDF; with a manifest, inside its context, where the
  -- manifest's modules and files are on package.path
  local function prepare()
    local pok, perr = pcall(function() action = ensure_column(r, j, tbl, job_udf(r, j)) end)
    if not pok then
      located = perr
      error(perr, 0)
    end
  end
  if not j.manifest then prepare() end
  local opts = backfill_opts(j)
  local rec
  local function go() rec = tbl:backfill(j.column, opts) end
  local bok, berr
  if j.cluster or j.manifest then
    bok, berr = pcall(function()
      require("geneva.context").new{ cluster = j.cluster, manifest = j.manifest, db = db, name = "recipe job " .. j.name }(function()
        if j.manifest then prepare() end
        go()
      end)
    end)
  else
    bok, berr = pcall(go)
  end
  if located then error(located, 0) end
  if not bok then
    local e = errors.from(berr)
    if e.code == "interrupted" then error(berr, 0) end
    error(reworded(e, ("%s: job '%s': %s"):format(r.file, j.name, e.message), { recipe_job = j.name }), 0)
  end
  if type(rec) == "table" and type(rec.record) == "function" then rec = rec:record() end
  rec = rec or {}
  local rows = rec.rows or {}
  return { job = j.name, table = j.table, column = j.column, column_action = action,
           cluster = j.cluster, manifest = j.manifest, id = rec.id, status = rec.status,
           rows = rows.computed or 0, failed = rows.failed or 0, committed = rows.committed or 0,
           seconds = time.monotonic() - t0 }
end

--- Applies the recipe, then runs the named job, or every job in file order.
-- A job opens its table, adds its column with the UDF (or alters it when
-- the UDF changed), then backfills inside `geneva.context{cluster=,
-- manifest=}` (on the embedded local cluster when it names neither).
-- @tab r a Recipe from @{load}
-- @string[opt] job_name one job (default: all)
-- @tab[opt] opts `on_result` (function(result), called after each job)
-- @treturn {table,...} one result per job: `job`, `table`, `column`,
-- `column_action` (`"added"`, `"altered"`, `"unchanged"`), `cluster`,
-- `manifest`, `id`, `status`, `rows`, `failed`, `committed`, `seconds`
-- @raise the first failing job's error, its message prefixed
-- `<file>: job '<name>': `; `not_found` for an unknown job or table
-- @usage local results = geneva.recipe.run(geneva.recipe.load("chars.yaml"))
function recipe.run(r, job_name, opts)
  assert(getmetatable(r) == Recipe, "recipe.run: expected a Recipe (recipe.load)")
  opts = opts or {}
  if type(opts) ~= "table" then errors.throw("invalid_argument", "recipe.run: opts must be a table {on_result=}") end
  require("geneva.suggest").check_options("recipe.run", opts, { "on_result" })
  local jobs = r.jobs
  if job_name ~= nil then jobs = { find_job(r, job_name) } end
  local db = recipe.apply(r)
  local results = {}
  for _, j in ipairs(jobs) do
    local res = run_job(r, db, j)
    results[#results + 1] = res
    if opts.on_result then opts.on_result(res) end
  end
  return results
end

-- recipe.find_job(r, name) -> job | raises not_found
recipe.find_job = find_job

-- }======

-- {====== Rendering

-- A copy of t where every "${" in a string (keys too) is written "$${",
-- so loading the rendered text gives the same values back.
local function escape_tree(v, pos, newpos)
  if type(v) == "string" then return (v:gsub("%${", "$${")) end
  if type(v) ~= "table" then return v end
  local out, p = {}, pos[v]
  local np = p and { kind = p.kind, order = p.order and {} }
  for k, x in pairs(v) do out[escape_tree(k, pos, newpos)] = escape_tree(x, pos, newpos) end
  if np and p.order then
    for i, k in ipairs(p.order) do np.order[i] = escape_tree(k, pos, newpos) end
  end
  if np then newpos[out] = np end
  return out
end

--- The substituted document as YAML (keys in the file's order, `vars:`
-- showing the effective values); loading it again gives the same document.
-- @tparam string|table path a file, or a Recipe from @{load}
-- @tab[opt] vars as @{load}
-- @treturn string the YAML text
-- @treturn table the Recipe
-- @raise as @{load}
function recipe.render(path, vars)
  local r = getmetatable(path) == Recipe and path or recipe.load(path, vars)
  local newpos = {}
  local doc = escape_tree(r.doc, r.pos, newpos)
  local text, err = yaml.dump(doc, { order = newpos })
  if not text then errors.throw("internal", ("%s: cannot render: %s"):format(r.file, err)) end
  return text, r
end

-- }======

return recipe
