-- Recipes: templating rules, errors with file:line:col, apply/run, and the memcheck
-- `geneva recipe` command run as a real process.
local geneva = require "geneva"
local recipe = require "geneva.recipe"
local yaml = require "geneva.yaml"
local json = require "geneva.json"
local fs = require "geneva.fs"
local child = require "child"
local tables = require "tables"

local SRC = os.getenv("GENEVA_SOURCE_DIR") or "."
local RECIPES = SRC .. "/scripts/recipes"

local write = child.write

-- load's error (a geneva.Error) for a recipe that must fail
local function load_err(path, vars)
  local ok, e = pcall(recipe.load, path, vars)
  assert.is_false(ok, "expected recipe.load to fail")
  assert.equals("geneva.Error", getmetatable(e).__name)
  return e
end

-- runs `geneva recipe ...` in the source tree -> exit status, stdout, stderr
local function cli(args, env)
  return child.cli({ "recipe", table.unpack(args) }, { cwd = SRC, env = env })
end

-- db at dir with table docs: (id, content) for ids 1..n, row 3's content null
local function make_docs(dir, n)
  local db = geneva.connect(dir)
  tables.make(db, "docs", n, { schema = { { name = "id", data_type = "int64" },
                                          { name = "content", data_type = "string" } },
    rows = function(i) return { id = i, content = i ~= 3 and ("w "):rep(i % 4 + 1) or nil } end })
  return db
end

describe("geneva.recipe", function()
  local dir, saved_path
  before_each(function()
    dir = assert(fs.realpath(child.tmpdir()))
    saved_path = package.path
  end)
  after_each(function()
    package.path = saved_path
    child.rmtree(dir)
  end)

  it("is reachable as geneva.recipe", function()
    assert.equals(recipe, geneva.recipe)
    assert.is_function(geneva.recipe.load)
  end)

  describe("substitution", function()
    local base = [[
vars:
  n: 2
  name: docs
  flag: "true"
  empty: ""
  cols: [a, b]
db: ./db
x-t:
  int: ${n}
  quoted: "${n}"
  single: '${n}'
  text: table ${name} has ${n} cols
  flag_plain: ${flag}
  flag_quoted: "${flag}"
  float: ${f:-1.5}
  null_default: ${nothing:-}
  default_int: ${missing:-7}
  default_str: "${missing:-7}"
  nested_default: ${missing:-${name}}
  empty_default: ${empty:-fallback}
  escaped: $${n}
  escaped_quoted: "$${n} and ${n}"
  dollars: $$n and $5
  list: ${cols}
  deep:
    - {k: v}
    - key: ${name}
      more:
        - 1
        - "${n}"
        - ${n}
  ${name}_key: k
]]

    it("re-types unquoted scalars and keeps quoted ones strings", function()
      local r = recipe.load(write(dir .. "/r.yaml", base))
      local t = r.doc["x-t"]
      assert.equals(2, t.int)
      assert.equals("integer", math.type(t.int))
      assert.equals("2", t.quoted)
      assert.equals("2", t.single)
      assert.equals("table docs has 2 cols", t.text)
      assert.equals(true, t.flag_plain)            -- the var is a quoted "true"; the use is plain
      assert.equals("true", t.flag_quoted)
      assert.equals(1.5, t.float)
      assert.equals("float", math.type(t.float))
      assert.equals(yaml.null, t.null_default)
    end)

    it("applies ${name:-default}, nested defaults and empty vars", function()
      local t = recipe.load(write(dir .. "/r.yaml", base)).doc["x-t"]
      assert.equals(7, t.default_int)
      assert.equals("7", t.default_str)
      assert.equals("docs", t.nested_default)
      assert.equals("fallback", t.empty_default)
    end)

    it("escapes $${ and leaves other dollars alone", function()
      local t = recipe.load(write(dir .. "/r.yaml", base)).doc["x-t"]
      assert.equals("${n}", t.escaped)
      assert.equals("${n} and 2", t.escaped_quoted)
      assert.equals("$$n and $5", t.dollars)
    end)

    it("substitutes in nested maps and lists, in keys, and whole list vars", function()
      local t = recipe.load(write(dir .. "/r.yaml", base)).doc["x-t"]
      assert.same({ "a", "b" }, t.list)
      assert.same({ { k = "v" }, { key = "docs", more = { 1, "2", 2 } } }, t.deep)
      assert.equals("k", t.docs_key)
    end)

    it("lets --set override vars, re-typed where the use is unquoted", function()
      local r = recipe.load(write(dir .. "/r.yaml", base), { n = "10", name = "other", flag = "no" })
      local t = r.doc["x-t"]
      assert.equals(10, t.int)
      assert.equals("10", t.quoted)
      assert.equals("table other has 10 cols", t.text)
      assert.equals("no", t.flag_plain)          -- core schema: "no" is a string
      assert.equals("k", t.other_key)
      assert.equals("10", r.vars.n)
      assert.equals("other", r.doc.vars.name)    -- vars shows the effective values
      assert.same({}, r.warnings)
    end)

    it("lets --set give a var the recipe does not declare (used with a default)", function()
      local r = recipe.load(write(dir .. "/r.yaml", base), { missing = "8" })
      assert.equals(8, r.doc["x-t"].default_int)
      assert.equals("8", r.doc["x-t"].default_str)
    end)

    it("takes Lua values from recipe.load's vars argument", function()
      local r = recipe.load(write(dir .. "/r.yaml", base), { n = 5, flag = false, cols = { "x" } })
      local t = r.doc["x-t"]
      assert.same({ 5, "5", false, { "x" } }, { t.int, t.quoted, t.flag_plain, t.list })
      local e = load_err(dir .. "/r.yaml", { name = { 1 } })
      assert.matches("variable 'name' is a list: it can only be used as a whole unquoted value", e.message, 1, true)
      assert.has_error(function() recipe.load(dir .. "/r.yaml", { ["bad name"] = "x" }) end)
      assert.has_error(function() recipe.load(dir .. "/r.yaml", { f = print }) end)
    end)

    it("lets vars defaults refer to other vars", function()
      local r = recipe.load(write(dir .. "/r.yaml", [[
vars:
  root: /srv
  data: ${root}/data
  n: ${k:-3}
db: ${data}
x-a: ${n}
]]))
      assert.equals("/srv/data", r.db)
      assert.equals(3, r.doc["x-a"])
      assert.equals("/srv/data", r.vars.data)
      r = recipe.load(dir .. "/r.yaml", { root = "/tmp" })
      assert.equals("/tmp/data", r.db)
    end)

    it("warns about a --set nobody uses", function()
      local r = recipe.load(write(dir .. "/r.yaml", base), { n = "3", unused_thing = "1" })
      assert.equals(1, #r.warnings)
      assert.matches("%-%-set unused_thing: no %${unused_thing} in the recipe uses it", r.warnings[1])
    end)
  end)

  describe("errors with file:line:col", function()
    it("names an unknown variable where it is written", function()
      local p = write(dir .. "/r.yaml", [[
db: ./db
jobs:
  words:
    table: ${nope}
    column: c
    where: "id < ${lim} and ${other}"
    udf: {module: string, function: upper, data_type: string}
]])
      local e = load_err(p)
      assert.equals("invalid_argument", e.code)
      assert.equals(p .. ":4:12: unknown variable 'nope' (declare it under vars: or pass --set nope=...)"
        .. " (and 2 more problems)", e.message)
      assert.equals(4, e.line)
      assert.equals(12, e.col)
      assert.equals(p, e.path)
      assert.same({ 6, 6 }, { e.problems[2].line, e.problems[3].line })
      assert.same({ 18, 29 }, { e.problems[2].col, e.problems[3].col })
      assert.matches("unknown variable 'lim'", e.problems[2].message)
      assert.matches("unknown variable 'other'", e.problems[3].message)
    end)

    it("points into block scalars, after escapes and in nested defaults", function()
      local p = write(dir .. "/r.yaml", [[
db: ./db
x-a: |
  first line
  $${ok} then ${bad}
x-b: ${a:-${b:-${c}}}
]])
      local e = load_err(p)
      assert.same({ 4, 15 }, { e.problems[1].line, e.problems[1].col })
      assert.matches("unknown variable 'bad'", e.problems[1].message)
      assert.same({ 5, 16 }, { e.problems[2].line, e.problems[2].col })
      assert.matches("unknown variable 'c'", e.problems[2].message)
    end)

    it("reports bad references", function()
      local cases = {
        { "x-a: ${abc", 1, 6, "unterminated reference '${abc'" },
        { "x-a: ${a:-x", 1, 6, "unterminated '${'" },
        { "x-a: '${}'", 1, 7, "empty variable reference" },
        { "x-a: '${1x}'", 1, 7, "expected a variable name" },
        { "x-a: '${a b}'", 1, 7, "bad reference" },
      }
      for _, c in ipairs(cases) do
        local p = write(dir .. "/r.yaml", "db: d\n" .. c[1] .. "\n")
        local e = load_err(p)
        assert.same({ c[2] + 1, c[3] }, { e.line, e.col }, c[1])
        assert.matches(c[4], e.message, 1, true)
      end
    end)

    it("says so when a declared var has no value, and on cycles", function()
      local p = write(dir .. "/r.yaml", "vars:\n  a: ~\n  b: ${c}\n  c: ${b}\ndb: ${a}\n")
      local e = load_err(p)
      local msgs = {}
      for _, x in ipairs(e.problems) do msgs[#msgs + 1] = ("%d:%d %s"):format(x.line, x.col, x.message) end
      local all = table.concat(msgs, "\n")
      assert.matches("5:5 variable 'a' has no value", all, 1, true)
      assert.matches("refers to itself", all, 1, true)
    end)

    it("rejects unknown top-level fields", function()
      local p = write(dir .. "/r.yaml", "db: ./db\n\nclustres: {}\n")
      local e = load_err(p)
      assert.equals(p .. ":3:1: unknown field 'clustres' in the recipe "
        .. "(did you mean 'clusters'? allowed: vars, db, clusters, manifests, jobs)", e.message)
      p = write(dir .. "/r.yaml", "db: ./db\ncolour: red\n")
      assert.equals(p .. ":2:1: unknown field 'colour' in the recipe "
        .. "(allowed: vars, db, clusters, manifests, jobs)", load_err(p).message)
    end)

    it("rejects unknown fields in a job, its udf and its backfill options", function()
      local p = write(dir .. "/r.yaml", [[
db: ./db
jobs:
  words:
    table: docs
    column: words
    colour: red
    udf:
      module: my
      function: f
      data_type: int64
      batchsize: 3
    backfill: {batch_size: 10, paralel: 2}
]])
      local e = load_err(p)
      assert.equals(3, #e.problems)
      assert.same({ 6, 5 }, { e.line, e.col })
      assert.matches("unknown field 'colour' in job 'words'", e.message, 1, true)
      assert.same({ 11, 7 }, { e.problems[2].line, e.problems[2].col })
      assert.matches("unknown field 'batchsize' in job 'words' udf", e.problems[2].message, 1, true)
      assert.same({ 12, 32 }, { e.problems[3].line, e.problems[3].col })
      assert.matches("unknown field 'paralel' in job 'words' backfill", e.problems[3].message, 1, true)
      -- a typo gets the nearest name
      p = write(dir .. "/r.yaml", [[
db: ./db
jobs:
  words:
    tabel: docs
    column: words
    udf: {module: my, function: f, data_type: int64, retires: 2}
    backfill: {batch_sise: 10}
]])
      e = load_err(p)
      local all = {}
      for _, pr in ipairs(e.problems) do all[#all + 1] = ("%d:%d %s"):format(pr.line, pr.col, pr.message) end
      all = table.concat(all, "\n")
      assert.matches("4:5 unknown field 'tabel' in job 'words' (did you mean 'table'?", all, 1, true)
      assert.matches("6:54 unknown field 'retires' in job 'words' udf (did you mean 'retries'?", all, 1, true)
      assert.matches("7:16 unknown field 'batch_sise' in job 'words' backfill (did you mean 'batch_size'?", all, 1, true)
    end)

    it("checks types, required fields and where given twice", function()
      local p = write(dir .. "/r.yaml", [[
db: 5
jobs:
  a:
    table: docs
    udf: {module: m, function: f, data_type: int64, retries: -1}
    where: x > 1
    backfill: {where: x < 2, batch_size: 0, resume: maybe}
  b: [1, 2]
]])
      local e = load_err(p)
      local got = {}
      for _, x in ipairs(e.problems) do got[#got + 1] = ("%d:%d %s"):format(x.line, x.col, x.message) end
      assert.equals("1:5 the recipe: 'db' must be a string, got 5", got[1])
      local all = table.concat(got, "\n")
      assert.is_nil(all:find("missing field 'db'", 1, true))   -- wrong type, not missing
      assert.matches("3:3 job 'a': missing field 'column'", all, 1, true)
      assert.matches("5:62 job 'a' udf: 'retries' must be an integer >= 0, got -1", all, 1, true)
      assert.matches("7:16 job 'a': 'where' is given both", all, 1, true)
      assert.matches("7:42 job 'a' backfill: 'batch_size' must be an integer > 0, got 0", all, 1, true)
      assert.matches("7:53 job 'a' backfill: 'resume' must be true or false, got \"maybe\"", all, 1, true)
      assert.matches("8:6 job 'b' must be a map, got a list", all, 1, true)
    end)

    it("reports bad YAML with line and column", function()
      local p = write(dir .. "/r.yaml", "db: ./db\njobs:\n  a: [1, 2\n")
      local e = load_err(p)
      assert.equals("invalid_argument", e.code)
      assert.matches("^" .. p:gsub("%p", "%%%0") .. ":4:1: did not find expected ',' or ']'", e.message)
      assert.same({ 4, 1 }, { e.line, e.col })
      e = load_err(write(dir .. "/r.yaml", "db: ./db\nclusters: {c: {type: local, workers: ${w}}}\n"))
      assert.matches(":2:39: ", e.message, 1, true)
      assert.matches("quote it or use block style", e.message, 1, true)
    end)

    it("rejects duplicate keys, also after substitution", function()
      local e = load_err(write(dir .. "/r.yaml", "db: ./a\njobs: {}\ndb: ./b\n"))
      assert.same({ 3, 1 }, { e.line, e.col })
      assert.matches("duplicate mapping key 'db'", e.message, 1, true)
      e = load_err(write(dir .. "/r.yaml", "vars: {a: x}\ndb: ./a\nx-m:\n  x: 1\n  ${a}: 2\n"))
      assert.same({ 5, 3 }, { e.line, e.col })
      assert.matches("duplicate key 'x' after substitution", e.message, 1, true)
    end)

    it("caps ${...} expansion: total text, copies of list vars, depth", function()
      -- "billion laughs" through vars: each var is ten uses of the one before
      local function laughs(n, first, use)
        local lines = { "vars:", "  l0: " .. first }
        for i = 1, n do lines[#lines + 1] = ("  l%d: %s"):format(i, use(i - 1)) end
        lines[#lines + 1] = ("db: ./db\nx-a: ${l%d}\n"):format(n)
        return table.concat(lines, "\n")
      end
      local text = laughs(4, ("x"):rep(1000), function(k) return ("${l%d}"):format(k):rep(10) end)
      local p = write(dir .. "/r.yaml", text)
      local e = load_err(p)
      assert.equals("invalid_argument", e.code)
      assert.same({ 6, 7 }, { e.line, e.col })          -- l4: 10 MB of text
      assert.matches(p .. ":6:7: ${...} expands to more than 4194304 bytes", e.message, 1, true)

      local list = laughs(5, "[a, b, c, d, e, f, g, h, i, j]", function(k)
        return "\n" .. ("    - ${l%d}\n"):format(k):rep(10):sub(1, -2)
      end)
      e = load_err(write(dir .. "/r.yaml", list))
      assert.matches("expands to more than 1000000 nodes", e.message, 1, true)
      assert.equals(55, e.line)                         -- the 8th use of l4 in l5 crosses it

      -- a chain of vars, written in order (each resolved from a memo) or in
      -- reverse (each resolved by recursion): the same depth either way
      local chain = { "vars:", "  v0: x" }
      for i = 1, 300 do chain[#chain + 1] = ("  v%d: ${v%d}"):format(i, i - 1) end
      local tail = "\ndb: ${v300}\n"
      e = load_err(write(dir .. "/r.yaml", table.concat(chain, "\n") .. tail))
      assert.matches(p .. ":67:8: variables refer to variables more than 64 levels deep (through 'v64')",
        e.message, 1, true)
      table.move(chain, 2, #chain, 1)
      chain[#chain] = nil
      local reversed = { "vars:" }
      for i = #chain, 1, -1 do reversed[#reversed + 1] = chain[i] end
      e = load_err(write(dir .. "/r.yaml", table.concat(reversed, "\n") .. tail))
      assert.matches("variables refer to variables more than 64 levels deep", e.message, 1, true)
      assert.is_nil(e.message:find("stack overflow", 1, true))

      e = load_err(write(dir .. "/r.yaml", "db: ./db\nx-a: " .. ("${a:-"):rep(80) .. ("}"):rep(80) .. "\n"))
      assert.matches(p .. ":2:", e.message, 1, true)
      assert.matches("defaults nested more than 64 levels deep", e.message, 1, true)
    end)

    it("fails with not_found for a missing file", function()
      local e = load_err(dir .. "/nope.yaml")
      assert.equals("not_found", e.code)
    end)

    it("rejects a recipe that is not a map", function()
      local e = load_err(write(dir .. "/r.yaml", "- a\n- b\n"))
      assert.matches(":1:1: a recipe is a map", e.message, 1, true)
      e = load_err(write(dir .. "/r.yaml", ""))
      assert.matches("got null", e.message, 1, true)
    end)
  end)

  describe("merges and paths", function()
    it("merges << anchors into jobs; written keys win", function()
      local r = recipe.load(write(dir .. "/r.yaml", [[
vars: {t: docs}
db: ./db
x-common: &common
  table: ${t}
  column: base
  cluster: c1
jobs:
  one:
    <<: *common
    udf: {module: string, function: upper, data_type: string, input_columns: [content]}
  two:
    <<: *common
    column: other
    udf: {module: string, function: lower, data_type: string, input_columns: [content]}
]]))
      assert.equals(2, #r.jobs)
      assert.same({ "one", "docs", "base", "c1" }, { r.jobs[1].name, r.jobs[1].table, r.jobs[1].column, r.jobs[1].cluster })
      assert.same({ "two", "docs", "other", "c1" }, { r.jobs[2].name, r.jobs[2].table, r.jobs[2].column, r.jobs[2].cluster })
    end)

    it("points at the merged key's own line for errors in merged fields", function()
      local e = load_err(write(dir .. "/r.yaml", [[
db: ./db
x-common: &common
  tabel: docs
jobs:
  one:
    <<: *common
    column: c
    udf: {module: m, function: f, data_type: int64}
]]))
      local all = {}
      for _, x in ipairs(e.problems) do all[#all + 1] = ("%d:%d %s"):format(x.line, x.col, x.message) end
      all = table.concat(all, "\n")
      assert.matches("3:3 unknown field 'tabel' in job 'one'", all, 1, true)
    end)

    it("resolves relative paths against the recipe's directory and puts it on package.path", function()
      assert(fs.mkdir_p(dir .. "/sub"))
      write(dir .. "/sub/recipe_mod_xyz.lua", "return { f = function(content) return #content end }\n")
      local r = recipe.load(write(dir .. "/sub/r.yaml", [[
db: ../data
jobs:
  a:
    table: docs
    column: n
    udf: {module: recipe_mod_xyz, function: f, data_type: int64}
]]))
      assert.equals(dir .. "/sub", r.dir)
      assert.equals(dir .. "/sub/../data", r.db)
      local entry = dir .. "/sub/?.lua;" .. dir .. "/sub/?/init.lua;"
      assert.equals(entry, package.path:sub(1, #entry))
      assert.equals(dir .. "/sub/recipe_mod_xyz.lua", package.searchpath("recipe_mod_xyz", package.path))
      recipe.validate(r)                          -- the udf module loads from there
      -- loading again does not stack the entry
      recipe.load(dir .. "/sub/r.yaml")
      local _, n = package.path:gsub(dir:gsub("%p", "%%%0") .. "/sub/%?%.lua;", "")
      assert.equals(1, n)
      package.loaded.recipe_mod_xyz = nil
    end)

    it("warns when a job names a cluster or manifest the recipe does not define", function()
      local r = recipe.load(write(dir .. "/r.yaml", [[
db: ./db
clusters: {here: {type: local, workers: 1}}
jobs:
  j:
    table: docs
    column: c
    cluster: elsewhere
    manifest: gone
    udf: {module: string, function: upper, data_type: string, input_columns: [content]}
]]))
      assert.same({
        dir .. "/r.yaml:7:14: job 'j': cluster 'elsewhere' is not defined in this recipe; it must exist in the db",
        dir .. "/r.yaml:8:15: job 'j': manifest 'gone' is not defined in this recipe; it must exist in the db",
      }, r.warnings)
    end)

    it("keeps absolute db paths and URIs", function()
      local r = recipe.load(write(dir .. "/r.yaml", "db: /abs/db\n"))
      assert.equals("/abs/db", r.db)
      r = recipe.load(write(dir .. "/r.yaml", "db: s3://bucket/x\n"))
      assert.equals("s3://bucket/x", r.db)
      r = recipe.load(write(dir .. "/r.yaml", "db: file://rel\n"))
      assert.equals(dir .. "/rel", r.db)
    end)
  end)

  describe("render", function()
    it("prints the substituted document, which loads back to the same", function()
      local p = write(dir .. "/r.yaml", [[
vars:
  n: 2
  s: "007"
db: ./db
clusters:
  c:
    type: local
    workers: ${n}
x-misc:
  keep: "$${not_a_var}"
  plain_escape: $${x}
  code: ${s}
  quoted_num: "${n}"
  empty: []
jobs:
  j:
    table: docs
    column: c
    where: "id < ${n}"
    udf: {module: string, function: upper, data_type: string, input_columns: [content]}
]])
      local text, r = recipe.render(p, { n = "5" })
      assert.matches("workers: 5\n", text, 1, true)
      assert.matches("keep: $${not_a_var}\n", text, 1, true)   -- escaped again
      assert.matches("where: id < 5", text, 1, true)
      assert.matches("empty: []", text, 1, true)
      -- keys keep the file's order
      assert.truthy(text:find("vars:", 1, true) < text:find("db:", 1, true))
      assert.truthy(text:find("clusters:", 1, true) < text:find("jobs:", 1, true))
      local p2 = write(dir .. "/rendered.yaml", text)
      local r2 = recipe.load(p2)
      assert.same(r.doc, r2.doc)
      assert.equals("${not_a_var}", r2.doc["x-misc"].keep)
      assert.equals(7, r2.doc["x-misc"].code)   -- a string var used unquoted is re-typed
      assert.equals("5", r2.doc["x-misc"].quoted_num)
    end)
  end)

  describe("validate", function()
    it("checks without acting: nothing is created", function()
      local p = write(dir .. "/r.yaml", [[
db: ./never
clusters:
  c: {type: local, workers: 2}
manifests:
  m: {modules: [string_helpers_nope]}
jobs:
  j:
    table: docs
    column: c
    udf: {module: string, function: upper, data_type: string, input_columns: [content]}
]])
      local r = recipe.load(p)
      local ok, e = pcall(recipe.validate, r)
      -- a manifest naming a missing module fails as apply would, at the module
      assert.is_false(ok)
      assert.equals(1, #e.problems)
      assert.same({ 5, 17 }, { e.problems[1].line, e.problems[1].col })
      assert.matches("manifest 'm': modules[1]: module 'string_helpers_nope' not found on package.path",
        e.problems[1].message, 1, true)
      assert.is_false(fs.exists(dir .. "/never"))
    end)

    it("reports what apply would find missing in a manifest: modules, files, base_dir", function()
      write(dir .. "/my_udfs.lua", "return {}\n")
      local p = write(dir .. "/r.yaml", [[
db: ./db
manifests:
  ok: {modules: [my_udfs], files: [my_udfs.lua]}
  mods: {modules: [my_udfs, nothere]}
  files: {files: ["*.csv"]}
  base: {base_dir: ./nodir, files: [x]}
]])
      local ok, e = pcall(recipe.validate, recipe.load(p))
      assert.is_false(ok)
      local all = {}
      for _, x in ipairs(e.problems) do all[#all + 1] = ("%d:%d %s"):format(x.line, x.col, x.message) end
      all = table.concat(all, "\n")
      assert.equals(3, #e.problems, all)
      assert.matches("4:29 manifest 'mods': modules[2]: module 'nothere' not found on package.path", all, 1, true)
      assert.matches("5:19 manifest 'files': files[1]: '*.csv' matches no file", all, 1, true)
      assert.matches("manifest 'base': ", all, 1, true)
      assert.matches("nodir", all, 1, true)
      assert.is_false(fs.exists(dir .. "/db"))
      -- the command line says the same, and exits 1: one line a problem,
      -- each `geneva: <code>: file:line:col: ...`, no list of searched files
      local st, _, err = child.cli({ "recipe", "validate", p })
      assert.equals(1, st)
      local lines = {}
      for l in err:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.equals(3, #lines, err)
      for _, l in ipairs(lines) do
        assert.matches("^geneva: invalid_argument: " .. p:gsub("%p", "%%%0") .. ":%d+:%d+: manifest '", l)
      end
      assert.equals(("geneva: invalid_argument: %s:4:29: manifest 'mods': modules[2]: module 'nothere' not found "
        .. "on package.path"):format(p), lines[1])
    end)

    it("says once, in one line, that a job's module its manifest ships is not found", function()
      local p = write(dir .. "/r.yaml", [[
db: ./db
manifests: {m: {modules: [recipe_nothere_q]}}
jobs:
  j:
    table: docs
    column: c
    udf: {module: recipe_nothere_q, function: f, data_type: int64}
    manifest: m
  k:
    table: docs
    column: d
    udf: {module: recipe_nothere_r, function: f, data_type: int64}
]])
      local st, out, err = child.cli({ "recipe", "validate", p })
      assert.equals(1, st)
      assert.equals("", out)
      assert.equals(("geneva: invalid_argument: %s:2:27: manifest 'm': modules[1]: module 'recipe_nothere_q' "
        .. "not found on package.path\n"
        .. "geneva: invalid_argument: %s:12:11: job 'k' udf: geneva.udf: module 'recipe_nothere_r' "
        .. "not found on package.path\n"):format(p, p), err)
      -- one problem alone prints the same way
      p = write(dir .. "/r1.yaml", "db: ./db\nmanifests: {m: {modules: [recipe_nothere_q]}}\n")
      st, _, err = child.cli({ "recipe", "validate", p })
      assert.equals(1, st)
      assert.equals(("geneva: invalid_argument: %s:2:27: manifest 'm': modules[1]: module 'recipe_nothere_q' "
        .. "not found on package.path\n"):format(p), err)
    end)

    it("reports a job's UDF problems at the field", function()
      local p = write(dir .. "/r.yaml", [[
db: ./db
jobs:
  j:
    table: docs
    column: c
    udf:
      module: recipe_missing_module_q
      function: f
      data_type: int64
  k:
    table: docs
    column: c
    udf:
      module: string
      function: upper
      data_type: in64
      input_columns: [content]
]])
      local ok, e = pcall(recipe.validate, recipe.load(p))
      assert.is_false(ok)
      local all = {}
      for _, x in ipairs(e.problems) do all[#all + 1] = ("%d:%d %s"):format(x.line, x.col, x.message) end
      all = table.concat(all, "\n")
      assert.matches("recipe_missing_module_q", all, 1, true)
      assert.matches("16:7 job 'k' udf: geneva.udf: data_type:", all, 1, true)
      assert.is_false(fs.exists(dir .. "/db"))
    end)

    it("maps cluster and manifest spec errors to the offending field", function()
      local p = write(dir .. "/r.yaml", [[
db: ./db
clusters:
  ok: {type: local, workers: 2}
  bad:
    type: kuberay
    namespace: ns
    head_group: {image: "img:1"}
    worker_groups:
      - name: g
        image: "img:1"
        memory: 12 bananas
  worse:
    type: local
    wrokers: 2
manifests:
  m:
    modules: [my_udfs]
    files: [/etc/passwd]
]])
      local ok, e = pcall(recipe.validate, recipe.load(p))
      assert.is_false(ok)
      local all = {}
      for _, x in ipairs(e.problems) do all[#all + 1] = ("%d:%d %s"):format(x.line, x.col, x.message) end
      all = table.concat(all, "\n")
      assert.matches("11:9 cluster 'bad': worker_groups[1].memory:", all, 1, true)
      assert.matches("14:5 cluster 'worse': ", all, 1, true)
      assert.matches("unknown field 'wrokers'", all, 1, true)
      assert.matches("18:13 manifest 'm': files[1]:", all, 1, true)
    end)
  end)

  describe("apply and run (in this process)", function()
    it("defines clusters and manifests in the recipe's db", function()
      local p = write(dir .. "/r.yaml", [[
vars: {w: 2}
db: ./data
clusters:
  small: {type: local, workers: 3}
  big:
    type: local
    workers: ${w}
manifests:
  udfs:
    files: ["*.lua"]
]])
      write(dir .. "/helper_for_manifest.lua", "return {}\n")
      local db, summary = recipe.apply(recipe.load(p, { w = "4" }))
      assert.equals(dir .. "/data", db.path)
      assert.same({ "small", "big" }, summary.clusters)
      assert.same({ "udfs" }, summary.manifests)
      assert.equals(4, db:get_cluster("big").workers)
      assert.equals(3, db:get_cluster("small").workers)
      local m = assert(db:get_manifest("udfs"))
      local names = {}
      for _, f in ipairs(m.files) do names[#names + 1] = f.path end
      assert.same({ "helper_for_manifest.lua" }, names)   -- files relative to the recipe's dir
    end)

    it("points a define error at its field", function()
      local p = write(dir .. "/r.yaml", "db: ./data\nmanifests:\n  m:\n    files: [nothing_matches_*.q]\n")
      local ok, e = pcall(recipe.apply, recipe.load(p))
      assert.is_false(ok)
      assert.equals("invalid_argument", e.code)
      assert.matches(":4:13: manifest 'm': files[1]: 'nothing_matches_*.q' matches no file", e.message, 1, true)
      assert.same({ 4, 13 }, { e.line, e.col })
    end)

    it("adds the column, runs without a cluster, then leaves or alters it", function()
      make_docs(dir .. "/data", 20)
      local p = write(dir .. "/r.yaml", [[
vars: {fn: upper}
db: ./data
jobs:
  up:
    table: docs
    column: big
    where: "content IS NOT NULL AND id <= ${max:-10}"
    udf: {module: string, function: "${fn}", data_type: string, input_columns: [content]}
]])
      local res = recipe.run(recipe.load(p))
      assert.equals(1, #res)
      assert.same({ "up", "added", "DONE", 9 }, { res[1].job, res[1].column_action, res[1].status, res[1].rows })
      local tbl = geneva.connect(dir .. "/data"):open_table("docs")
      local rows = tbl:to_rows{ columns = { "id", "big" }, where = "id <= 2" }
      assert.same({ { id = 1, big = "W W " }, { id = 2, big = "W W W " } }, rows)
      -- unchanged: nothing to compute for the same rows
      res = recipe.run(recipe.load(p))
      assert.same({ "unchanged", 0 }, { res[1].column_action, res[1].rows })
      -- the UDF changed: altered, and every matching row recomputed
      res = recipe.run(recipe.load(p, { fn = "lower", max = "20" }), "up")
      assert.same({ "altered", 19 }, { res[1].column_action, res[1].rows })
      assert.equals("w w ", tbl:to_rows{ columns = { "big" }, where = "id = 1" }[1].big)
    end)

    it("raises located errors for an unknown table or job", function()
      geneva.connect(dir .. "/data")
      local p = write(dir .. "/r.yaml", [[
db: ./data
jobs:
  j:
    table: nosuch
    column: c
    udf: {module: string, function: upper, data_type: string, input_columns: [content]}
]])
      local r = recipe.load(p)
      local ok, e = pcall(recipe.run, r)
      assert.is_false(ok)
      assert.equals("not_found", e.code)
      assert.matches(":4:12: job 'j': table 'nosuch' does not exist", e.message, 1, true)
      ok, e = pcall(recipe.run, r, "zzz")
      assert.is_false(ok)
      assert.equals("not_found", e.code)
      assert.matches("no job 'zzz' (jobs: j)", e.message, 1, true)
    end)
  end)

  describe("the geneva recipe command", function()
    local db_dir
    before_each(function()
      db_dir = dir .. "/db"
      make_docs(db_dir, 40)
    end)

    it("runs one job of an example recipe in its context", function()
      local st, out, err = cli({ "run", "scripts/recipes/words.yaml", "words", "--set", "db=" .. db_dir,
                                 "--set", "max_id=30" })
      assert.equals(0, st, err)
      assert.matches("^job words: docs%.words: 30 rows computed in [%d.]+ s %(column added, job [%w-]+%)\n$", out)
      local tbl = geneva.connect(db_dir):open_table("docs")
      local rows = tbl:to_rows{ columns = { "id", "words" } }
      for _, row in ipairs(rows) do
        if row.id == 3 or row.id > 30 then
          assert.is_nil(row.words, "row " .. row.id)
        else
          assert.equals(row.id % 4 + 1, row.words, "row " .. row.id)
        end
      end
      -- the recipe's cluster and manifest are in the db now
      local db = geneva.connect(db_dir)
      assert.equals(2, db:get_cluster("local-small").workers)
      assert.truthy(db:get_manifest("recipe-udfs"))
      -- no worker, lease or temp dir left
      assert.equals(0, #(fs.list(db_dir .. "/_geneva/leases") or {}))
    end)

    it("resolves a UDF module shipped in a manifest's files, without LUA_PATH", function()
      assert(fs.mkdir_p(dir .. "/lib"))
      assert(fs.mkdir_p(dir .. "/app"))
      write(dir .. "/lib/shipped_rec.lua", "return { len = function(content) return content and #content end }\n")
      write(dir .. "/app/r.yaml", ([[
db: %s
manifests: { lib: { files: [shipped_rec.lua], base_dir: ../lib } }
jobs:
  len:
    table: docs
    column: len
    udf: { module: shipped_rec, function: len, data_type: int64 }
    manifest: lib
]]):format(db_dir))
      local env = { LUA_PATH = ";;" }                -- Lua's default path: no lib/ on it
      local function run(args) return child.cli(args, { cwd = dir .. "/app", env = env }) end
      local st, out, err = run({ "recipe", "validate", "r.yaml" })
      assert.equals(0, st, err)
      assert.matches("r.yaml: ok (0 clusters, 1 manifest, 1 job)", out, 1, true)
      st, out, err = run({ "recipe", "run", "r.yaml" })
      assert.equals(0, st, err)
      assert.matches("^job len: docs%.len: 40 rows computed", out)
      local tbl = geneva.connect(db_dir):open_table("docs")
      assert.equals(39, tbl:count_rows("len = length(content)"))
      -- a recipe naming the db's manifest: validate cannot see the module
      -- (a warning), run finds it in the unpacked package
      write(dir .. "/app/r2.yaml", ([[
db: %s
jobs:
  len2:
    table: docs
    column: len2
    udf: { module: shipped_rec, function: len, data_type: int64 }
    manifest: lib
]]):format(db_dir))
      st, out, err = run({ "recipe", "validate", "r2.yaml" })
      assert.equals(0, st, err)
      assert.matches("r2.yaml:6:5: job 'len2': module 'shipped_rec' is not on package.path here; "
        .. "it must be in manifest 'lib'", err, 1, true)
      st, out, err = run({ "recipe", "run", "r2.yaml" })
      assert.equals(0, st, err)
      assert.matches("^job len2: docs%.len2: 40 rows computed", out)
      -- without the manifest, the module is missing: an error at the job's udf
      write(dir .. "/app/r3.yaml", ([[
db: %s
jobs:
  len3:
    table: docs
    column: len3
    udf: { module: shipped_rec, function: len, data_type: int64 }
]]):format(db_dir))
      st, _, err = run({ "recipe", "validate", "r3.yaml" })
      assert.equals(1, st)
      assert.matches("r3.yaml:6:12: job 'len3' udf: ", err, 1, true)   -- at its module
      assert.matches("module 'shipped_rec' not found", err, 1, true)
    end)

    it("runs every job in file order without JOB, with --json", function()
      local st, out, err = cli({ "run", "scripts/recipes/features.yaml", "--set", "db=" .. db_dir,
                                 "--set", "prefix=x_", "--json" })
      assert.equals(0, st, err)
      local res = assert(json.decode(out))
      assert.same({ "chars", "shout" }, { res[1].job, res[2].job })
      assert.same({ "x_chars", "x_shout" }, { res[1].column, res[2].column })
      assert.same({ 40, 40 }, { res[1].rows, res[2].rows })   -- NULL content gives NULL, computed
      local db = geneva.connect(db_dir)
      local recs = db:jobs{ table = "docs" }
      assert.equals(2, #recs)
      local by = {}
      for _, rec in ipairs(recs) do by[rec.column] = rec end
      assert.truthy(by.x_chars.created_at <= by.x_shout.created_at)
      assert.truthy(by.x_chars.finished_at <= by.x_shout.started_at)
      local row = db:open_table("docs"):to_rows{ where = "id = 2" }[1]
      assert.same({ 6, "W W W !" }, { row.x_chars, row.x_shout })
    end)

    it("exits 2 on bad command lines", function()
      for _, args in ipairs({ {}, { "frobnicate", "x.yaml" }, { "run" },
                              { "run", "scripts/recipes/words.yaml", "--set", "novalue" },
                              { "run", "scripts/recipes/words.yaml", "--set", "1x=2" },
                              { "validate", "scripts/recipes/words.yaml", "extra" },
                              { "run", "scripts/recipes/words.yaml", "--bogus" } }) do
        local st, out, err = cli(args)
        assert.equals(2, st, table.concat(args, " ") .. ": " .. err)
        assert.equals("", out)
        assert.matches("usage: geneva recipe", err, 1, true)
      end
      local st, out = cli({ "--help" })
      assert.equals(0, st)
      assert.matches("usage: geneva recipe apply", out, 1, true)
    end)

    it("exits 1 with file:line:col for bad recipes, missing files and unknown jobs", function()
      local p = write(dir .. "/bad.yaml", "db: ./d\njobs:\n  j:\n    table: ${nope}\n    column: ${nix}\n")
      local st, out, err = cli({ "validate", p })
      assert.equals(1, st)
      assert.equals("", out)
      assert.matches(p .. ":4:12: unknown variable 'nope'", err, 1, true)
      assert.matches(p .. ":5:13: unknown variable 'nix'", err, 1, true)
      st, out = cli({ "validate", p, "--json" })
      assert.equals(1, st)
      local doc = assert(json.decode(out))
      assert.equals("invalid_argument", doc.error.code)
      assert.same({ 4, 12 }, { doc.error.problems[1].line, doc.error.problems[1].col })
      st, out, err = cli({ "run", dir .. "/missing.yaml" })
      assert.equals(1, st)
      assert.matches("not_found: cannot read recipe", err, 1, true)
      st, out, err = cli({ "run", "scripts/recipes/words.yaml", "nojob", "--set", "db=" .. db_dir })
      assert.equals(1, st)
      assert.matches("no job 'nojob' (jobs: words)", err, 1, true)
      assert.is_false(fs.exists(db_dir .. "/_geneva/clusters"))   -- failed before acting
    end)

    it("validates, renders and applies from the command line", function()
      local st, out, err = cli({ "validate", "scripts/recipes/words.yaml", "--set", "db=" .. db_dir })
      assert.equals(0, st, err)
      assert.equals("scripts/recipes/words.yaml: ok (1 cluster, 1 manifest, 1 job)\n", out)
      assert.is_false(fs.exists(db_dir .. "/_geneva/clusters"))

      st, out, err = cli({ "render", "scripts/recipes/words.yaml", "--set", "db=/x/y", "--set", "typo=1" })
      assert.equals(0, st, err)
      assert.matches("\ndb: /x/y\n", out, 1, true)
      assert.matches("warning: scripts/recipes/words.yaml: --set typo: no ${typo}", err, 1, true)
      local doc = yaml.load(out)
      assert.equals(1000000, nil == doc and 0 or tonumber(doc.jobs.words.where:match("%d+")))

      st, out, err = cli({ "apply", "scripts/recipes/words.yaml", "--set", "db=" .. db_dir, "--json" })
      assert.equals(0, st, err)
      local sum = assert(json.decode(out))
      assert.same({ "local-small" }, sum.clusters)
      assert.same({ "recipe-udfs" }, sum.manifests)
      assert.equals(2, geneva.connect(db_dir):get_cluster("local-small").workers)
    end)

    it("reports a failing job with exit 1", function()
      local p = write(dir .. "/fail.yaml", [[
db: ./db
jobs:
  boom:
    table: docs
    column: boom
    udf: {module: string, function: rep, data_type: string, input_columns: [content]}
]])
      local st, out, err = cli({ "run", p })
      assert.equals(1, st)
      assert.equals("", out)
      assert.matches("fail.yaml: job 'boom': ", err, 1, true)
    end)
  end)
end)
