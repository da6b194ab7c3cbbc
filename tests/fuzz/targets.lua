-- The fuzz targets (tests/fuzz/harness.c runs one per binary): each is
-- function(data, dir), data being libFuzzer's input and dir a temp
-- directory private to the process. Returning or raising a geneva.Error is
-- fine; raising anything else (a Lua runtime error in a loader, or a
-- broken invariant below: bug()) is a finding.
local json = require "geneva.json"
local yaml = require "geneva.yaml"
local fs = require "geneva.fs"
local errors = require "geneva.errors"

local T = {}

-- Targets whose logic is Lua: the harness feeds their Lua lines to
-- libFuzzer as coverage (a line hook; slower, but blind without it)
T.lua_lines = { yaml = true, csv_jsonl = true, zip_extract = true, recipe = true, kubeconfig = true }

local function bug(fmt, ...) error(("invariant broken: " .. fmt):format(...), 2) end

-- Calls f(...) and turns a failure that is not a geneva.Error into a bug
-- (the loaders raise invalid_argument and friends, never "attempt to ...").
local function loader(what, f, ...)
  local ok, e = pcall(f, ...)
  if ok then return true, e end
  if not errors.is(e) then bug("%s raised a non-geneva error: %s", what, tostring(e)) end
  return false, e
end

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end

-- {====== json: decode with each option set; what decodes encodes, and the
-- encoding decodes to the same value (compared canonically)
function T.json(data)
  for _, opts in ipairs { false, { null_as_nil = true }, { exact_integers = true, unique_keys = true } } do
    local ok, v, msg = pcall(json.decode, data, opts or nil)
    if not ok then bug("json.decode raised: %s", tostring(v)) end
    if v == nil and opts and opts.null_as_nil and msg == nil then
      -- "null" with null_as_nil decodes to nil: fine
    elseif v == nil then
      if type(msg) ~= "string" then bug("json.decode failed without a message") end
    elseif not opts then
      local ok2, text = pcall(json.encode, v)
      if not ok2 then bug("json.encode of a decoded value raised: %s", tostring(text)) end
      local v2, msg2 = json.decode(text)
      if v2 == nil then bug("json.decode of our own encoding failed: %s", msg2) end
      if json.canonical(v) ~= json.canonical(v2) then bug("json round trip changed the value") end
      json.encode(v, { indent = 2, sort_keys = true })
    end
  end
end
-- }======

-- {====== yaml: load (plain, with positions, every document); what loads
-- dumps, and the dump loads again
function T.yaml(data)
  local ok, v, msg = pcall(yaml.load, data)
  if not ok then bug("yaml.load raised: %s", tostring(v)) end
  if v == nil and type(msg) ~= "string" then bug("yaml.load failed without a message") end
  local ok2, v2, pos = pcall(yaml.load, data, { positions = true, filename = "f.yaml" })
  if not ok2 then bug("yaml.load{positions} raised: %s", tostring(v2)) end
  if (v == nil) ~= (v2 == nil) then bug("yaml.load and yaml.load{positions} disagree") end
  local ok3, docs = pcall(yaml.load_all, data)
  if not ok3 then bug("yaml.load_all raised: %s", tostring(docs)) end
  if v ~= nil then
    local ok4, text = pcall(yaml.dump, v2, { order = pos })
    if not ok4 then bug("yaml.dump raised: %s", tostring(text)) end
    if text then
      local back, bmsg = yaml.load(text)
      if back == nil then bug("yaml.load of our own dump failed: %s\n%s", bmsg, text) end
    end
  end
end
-- }======

-- {====== csv_jsonl: the same bytes as a CSV and as a JSONL file, through
-- db:create_table's reading steps (ingest.open, src:plan, every src:next)
function T.csv_jsonl(data, dir)
  local ingest = require "geneva.store.ingest"
  for _, ext in ipairs { "csv", "jsonl" } do
    local path = dir .. "/in." .. ext
    write(path, data)
    local ok, src = loader("ingest.open " .. ext, ingest.open, { from = path })
    if ok then
      loader("read " .. ext, function()
        src:plan({})
        while src:next(1000) do end
      end)
      src:close()
    end
  end
end
-- }======

-- {====== zip_extract: extract with the default limits into z/out, where
-- out/l is a symlink to z/esc; afterwards nothing may exist outside out
-- but what was there (a.zip, canary, esc empty), and nothing beside z
local function check_tree(dir, z)
  local top = assert(fs.list(dir))
  if #top ~= 1 or top[1] ~= "z" then bug("zip wrote beside its directory: %s", table.concat(top, ", ")) end
  local names = assert(fs.list(z))
  local want = { "a.zip", "canary", "esc", "out" }
  if table.concat(names, "\0") ~= table.concat(want, "\0") then
    bug("zip wrote outside its target: %s", table.concat(names, ", "))
  end
  local esc = assert(fs.list(z .. "/esc"))
  if #esc > 0 then bug("zip wrote through a symlink: esc/%s", esc[1]) end
  local f = assert(io.open(z .. "/canary", "rb"))
  local c = f:read("a")
  f:close()
  if c ~= "canary" then bug("zip overwrote a file outside its target") end
end

function T.zip_extract(data, dir)
  local zip = require "geneva.zip"
  local z = dir .. "/z"
  assert(fs.remove_tree(z) or not fs.exists(z))
  assert(fs.mkdir_p(z .. "/out/"))
  assert(fs.mkdir_p(z .. "/esc"))
  write(z .. "/canary", "canary")
  write(z .. "/a.zip", data)
  assert(fs.symlink(z .. "/esc", z .. "/out/l"))
  local a = zip.open(z .. "/a.zip")
  if a then
    local list = a:list()
    for i = 1, math.min(#list, 8) do a:read(list[i].name) end
    a:close()
  end
  zip.extract(z .. "/a.zip", z .. "/out")
  check_tree(dir, z)
  assert(fs.remove_tree(z))
end
-- }======

-- {====== recipe: the input as a recipe file: load (parse, ${var}
-- expansion, shape), validate, render; the rendering loads again
function T.recipe(data, dir)
  local recipe = require "geneva.recipe"
  local path = dir .. "/r.yaml"
  write(path, data)
  local saved = package.path
  local ok, r = loader("recipe.load", recipe.load, path, { given = "1", list = { "a", "b" } })
  if ok then
    loader("recipe.validate", recipe.validate, r)
    local ok2, text = loader("recipe.render", recipe.render, r)
    if ok2 then
      local back, msg = yaml.load(text)
      if back == nil then bug("the rendered recipe does not load: %s\n%s", msg, text) end
    end
  end
  package.path = saved
end
-- }======

-- {====== kubeconfig: the input as an explicit kubeconfig file (no
-- environment, not in a pod): load, and describe the result
function T.kubeconfig(data, dir)
  local kc = require "geneva.kube.config"
  local path = dir .. "/kubeconfig"
  write(path, data)
  local function getenv() return nil end
  local ok, cfg = loader("kube.config.load", kc.load, { kubeconfig = path, getenv = getenv, in_cluster = false })
  if ok then
    tostring(cfg)
    if cfg.describe then cfg:describe() end
  end
  loader("kube.config.load{context}", kc.load, { kubeconfig = path, getenv = getenv, in_cluster = false,
                                                 context = "dev", namespace = "ns" })
end
-- }======

return T
