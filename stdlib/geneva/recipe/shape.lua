-- geneva.recipe.shape: the shape of a substituted recipe. The fields each
-- level allows and the kinds of their values; unknown fields, wrong kinds and
-- missing required fields are problems at their file:line:col.
--
--   shape.check(r)                  fills r.db_uri, r.clusters, r.manifests,
--                                   r.jobs, adds to r.problems and r.warnings
--   loc_of(r, t [, key [, "key"]]) -> the position of t, or of t's
--                                   entry key (its value, or its key)
local template = require "geneva.recipe.template"
local suggest = require "geneva.suggest"

local isnull, describe = template.isnull, template.describe

local shape = {}

-- A scalar as written in messages (strings quoted); collections described.
local function show(v)
  if type(v) == "string" then return (("%q"):format(v):gsub("\\\n", "\\n")) end
  if type(v) == "number" or type(v) == "boolean" then return tostring(v) end
  return describe(v)
end

local TOP = { vars = "map", db = "string", clusters = "map", manifests = "map", jobs = "map" }
local TOP_ORDER = "vars, db, clusters, manifests, jobs"

local JOB = { table = "string", column = "string", udf = "map", where = "string",
              cluster = "string", manifest = "string", backfill = "map" }
local JOB_ORDER = "table, column, udf, where, cluster, manifest, backfill"

local UDF = { module = "string", ["function"] = "string", data_type = "string",
              input_columns = "strings", batch = "boolean", setup = "setup",
              on_error = "string", retries = "count", timeout = "number", num_cpus = "number",
              num_gpus = "number", memory = "posint", name = "string" }
local UDF_ORDER = "module, function, data_type, input_columns, batch, setup, on_error, "
  .. "retries, timeout, num_cpus, num_gpus, memory, name"

local BACKFILL = { where = "string", batch_size = "posint", concurrency = "posint",
                   commit_every = "posint", resume = "boolean" }
local BACKFILL_ORDER = "where, batch_size, concurrency, commit_every, resume"

local kinds = {
  string = function(v) return type(v) == "string" end,
  map = function(v) return type(v) == "table" and v[1] == nil end,
  boolean = function(v) return type(v) == "boolean" end,
  number = function(v) return type(v) == "number" end,
  count = function(v) return math.type(v) == "integer" and v >= 0 end,
  posint = function(v) return math.type(v) == "integer" and v > 0 end,
  strings = function(v)
    if type(v) ~= "table" then return false end
    for k, x in pairs(v) do
      if math.type(k) ~= "integer" or type(x) ~= "string" then return false end
    end
    return true
  end,
  setup = function(v) return type(v) == "string" or (type(v) == "table" and v[1] == nil) end,
}
local expected = {
  string = "a string", map = "a map", boolean = "true or false", number = "a number",
  count = "an integer >= 0", posint = "an integer > 0", strings = "a list of strings",
  setup = "a function name or a map {module, function}",
}

-- Is v a map (by its position entry when it has one)?
local function is_map(r, v)
  if type(v) ~= "table" then return false end
  local p = r.pos[v]
  if p then return p.kind == "map" end
  return v[1] == nil
end

-- Checks map t (at pos entry p) against fields; returns a plain table of
-- the non-null values. what names the map in messages ("job 'x'").
local function check_fields(r, t, fields, allowed, what)
  local p = r.pos[t] or { order = {}, keys = {}, values = {} }
  local out = {}
  for _, k in ipairs(p.order) do
    local v = t[k]
    local kind = fields[k]
    if not kind and fields == TOP and type(k) == "string" and k:sub(1, 2) == "x-" then
      out[k] = v                             -- x-*: free-form, for anchors to merge
    elseif not kind then
      local near = suggest.nearest(k, fields)
      r.problems:add(p.keys[k], "unknown field '%s' in %s (%sallowed: %s)", tostring(k), what,
        near and ("did you mean '%s'? "):format(near) or "", allowed)
    elseif not isnull(v) then
      if (kind == "map" and is_map(r, v)) or (kind ~= "map" and kinds[kind](v)) then
        out[k] = v
      else
        r.problems:add(p.values[k], "%s: '%s' must be %s, got %s", what, k, expected[kind], show(v))
      end
    end
  end
  return out
end

local function loc_of(r, t, key, which)
  local p = r.pos[t]
  if not p then return nil end
  if key == nil then return p end
  if p.kind == "seq" then return p.items[key] end
  return (which == "key" and p.keys or p.values)[key] or p.keys[key]
end
shape.loc_of = loc_of

-- The entries of a map value, in document order: {name=, value=}.
local function entries(r, t)
  local out = {}
  local p = r.pos[t]
  for _, k in ipairs(p and p.order or {}) do out[#out + 1] = { name = k, value = t[k] } end
  return out
end

-- shape.check(r): r has file, doc and pos (template.expand), problems
-- and warnings.
function shape.check(r)
  local doc = r.doc
  if not is_map(r, doc) then
    r.problems:add(r.pos[doc] or { line = 1, col = 1 },
      "a recipe is a map with the fields %s, got %s", TOP_ORDER, describe(doc))
    r.problems:check()
  end
  local top = check_fields(r, doc, TOP, TOP_ORDER, "the recipe")
  if top.db == nil and isnull(doc.db) then
    r.problems:add(r.pos[doc], "missing field 'db' (the database the recipe applies to)")
  elseif top.db == "" then
    r.problems:add(loc_of(r, doc, "db"), "'db' must not be empty")
  end
  r.db_uri = top.db

  r.clusters, r.manifests, r.jobs = {}, {}, {}
  for _, section in ipairs({ "clusters", "manifests" }) do
    local m = top[section]
    if m then
      for _, e in ipairs(entries(r, m)) do
        local what = section:sub(1, -2) .. " '" .. tostring(e.name) .. "'"
        if type(e.name) ~= "string" then
          r.problems:add(loc_of(r, m, e.name, "key"), "%s name must be a string", section:sub(1, -2))
        elseif not is_map(r, e.value) then
          r.problems:add(loc_of(r, m, e.name), "%s: the spec must be a map, got %s", what, describe(e.value))
        else
          table.insert(r[section], { name = e.name, spec = e.value })
        end
      end
    end
  end

  if top.jobs then
    for _, e in ipairs(entries(r, top.jobs)) do
      local what = "job '" .. tostring(e.name) .. "'"
      local jt = e.value
      if type(e.name) ~= "string" then
        r.problems:add(loc_of(r, top.jobs, e.name, "key"), "job names must be strings")
      elseif not is_map(r, jt) then
        r.problems:add(loc_of(r, top.jobs, e.name), "%s must be a map, got %s", what, describe(jt))
      else
        local j = check_fields(r, jt, JOB, JOB_ORDER, what)
        j.name, j.node = e.name, jt
        for _, req in ipairs({ "table", "column", "udf" }) do
          if isnull(jt[req]) then
            r.problems:add(loc_of(r, top.jobs, e.name, "key"), "%s: missing field '%s'", what, req)
          end
        end
        if j.udf then
          j.udf = check_fields(r, jt.udf, UDF, UDF_ORDER, what .. " udf")
          for _, req in ipairs({ "module", "function", "data_type" }) do
            if isnull(jt.udf[req]) then
              r.problems:add(loc_of(r, jt, "udf", "key"), "%s udf: missing field '%s'", what, req)
            end
          end
          local s = jt.udf.setup
          if type(s) == "table" then
            check_fields(r, s, { module = "string", ["function"] = "string" }, "module, function",
              what .. " udf setup")
          end
        end
        if j.backfill then
          j.backfill = check_fields(r, jt.backfill, BACKFILL, BACKFILL_ORDER, what .. " backfill")
          if j.backfill.where and j.where then
            r.problems:add(loc_of(r, jt.backfill, "where", "key"),
              "%s: 'where' is given both in the job and in its backfill options: keep one", what)
          end
        end
        r.jobs[#r.jobs + 1] = j
      end
    end
  end

  -- names a job uses that the recipe does not define come from the db
  for _, j in ipairs(r.jobs) do
    for _, kind in ipairs({ "cluster", "manifest" }) do
      local name = j[kind]
      if name then
        local found = false
        for _, e in ipairs(r[kind .. "s"]) do if e.name == name then found = true end end
        if not found then
          local l = loc_of(r, j.node, kind) or { line = 1, col = 1 }
          r.warnings[#r.warnings + 1] = ("%s:%d:%d: job '%s': %s '%s' is not defined in this recipe; "
            .. "it must exist in the db"):format(r.file, l.line, l.col, j.name, kind, name)
        end
      end
    end
  end
end

return shape
