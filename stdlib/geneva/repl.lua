-- geneva.repl: what the REPL does around each statement. Each statement
-- runs in a ledger scope of its own, so Ctrl-C tears down what that
-- statement created (a context's workers, a running job, temp dirs) and
-- nothing from earlier statements; a statement that completes keeps what it
-- made (say `c = ctx:enter()`) until it is closed or the REPL ends.
-- It also answers the REPL's Tab key (M.complete).
local ledger = require "geneva.ledger"

local M = {}

local stmt, prev

local function within(s, ancestor)
  while s do
    if s == ancestor then return true end
    s = s:parent()
  end
  return false
end

function M.before()
  prev = ledger.current()
  stmt = ledger.scope{ name = "repl statement", parent = prev }
  stmt:activate()
end

function M.after()
  if not stmt then return end
  local cur = ledger.current()
  if cur == stmt then prev:activate() end
  -- nothing held and no context left entered inside it: close it now
  if #stmt:resources() == 0 and not within(ledger.current(), stmt) then stmt:close() end
  stmt = nil
end

function M.interrupted()
  if not stmt then return end
  local ok, errs = stmt:close()         -- hooks off: teardown runs to the end
  if not prev:is_closed() then prev:activate() end
  stmt = nil
  local ctx = package.loaded["geneva.context"]
  if ctx and ctx.forget_closed then ctx.forget_closed() end
  if not ok then io.stderr:write("geneva: ", table.concat(errs, "\n"), "\n") end
end

-- {====== Tab completion

local KEYWORDS = { "and", "break", "do", "else", "elseif", "end", "false", "for",
  "function", "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return",
  "then", "true", "until", "while" }

-- Adds the identifier keys of t (methods only: functions) to names.
local function add_keys(names, t, methods)
  if type(t) ~= "table" then return end
  for k, v in next, t do
    if type(k) == "string" and k:match("^[%a_][%w_]*$") and not k:match("^__")
        and (not methods or type(v) == "function"
             or (type(v) == "table" and getmetatable(v) and getmetatable(v).__call)) then
      names[k] = true
    end
  end
end

-- What v offers after `.` (or `:` when methods): its own keys, then along
-- its metatables' __index tables. A function __index (geneva.Job's) hides
-- its table, so the metatable itself stands in for it, as the usual class
-- idiom keeps the methods there. `__complete` in a metatable lists names
-- that an __index function makes up on first use (geneva's submodules).
local function members(v, methods)
  local names = {}
  if type(v) == "table" then add_keys(names, v, methods) end
  for _ = 1, 8 do                       -- a bounded walk: __index may loop
    local mt = getmetatable(v)
    if type(mt) ~= "table" then break end
    if type(mt.__complete) == "table" then
      for _, k in ipairs(mt.__complete) do names[k] = true end
    end
    local idx = rawget(mt, "__index")
    if type(idx) == "table" then add_keys(names, idx, methods) v = idx
    else
      if type(idx) == "function" then add_keys(names, mt, methods) end
      break
    end
  end
  return names
end

-- The value a dotted path of names (`geneva.fs`, `t`) has now, or nil.
-- Only plain indexing: completion never calls a function of the user's.
local function lookup(path)
  local v = _G
  for name in path:gmatch("[^.]+") do
    if type(v) ~= "table" and type(v) ~= "userdata" then return nil end
    local ok, nv = pcall(function() return v[name] end)
    if not ok then return nil end
    v = nv
  end
  return v
end

--[[
M.complete(word) -> sorted array of the words that complete word: globals
and keywords for a bare name, fields after `a.b.`, methods after `a.b:`.
Names starting with `_` are offered only when the word's last part does.
]]
function M.complete(word)
  local path, sep, part = word:match("^([%a_][%w_.]-)([.:])([%w_]*)$")
  local names
  if path then
    if path:match("%.%.") or path:match("%.$") then return {} end
    local v = lookup(path)
    if v == nil then return {} end
    names = members(v, sep == ":")
  else
    part = word:match("^[%a_][%w_]*$") or (word == "" and "")
    if not part then return {} end
    names = members(_G, false)
    for _, k in ipairs(KEYWORDS) do names[k] = true end
    path, sep = "", ""
  end
  local out = {}
  for k in pairs(names) do
    if k:sub(1, #part) == part and (k:sub(1, 1) ~= "_" or part:sub(1, 1) == "_") then
      out[#out + 1] = path .. sep .. k
    end
  end
  table.sort(out)
  return out
end

-- }======

return M
