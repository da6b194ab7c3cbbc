-- geneva.store.where: a `where` is one SQL expression over the columns of a
-- table (README, Types). Callers paste it into their own SQL as
-- `... WHERE (<their conditions>) AND (<where>)`, so it must not be able to
-- close that parenthesis, comment out the rest, start another statement or
-- read anything but the view `t` (docs/internals.md "where").
--
-- where.check(text, snapshot, what) is the one gate, used by tbl:backfill
-- (and each worker task), tbl:count_rows, tbl:to_rows and tbl:search():where():
--   1. a scan that knows SQL string literals ('...', '' inside) and quoted
--      identifiers ("...", [...], `...`) and refuses comments (-- and /* */),
--      ';', a ')' without its '(' (or a '(' never closed), the word SELECT
--      (subqueries), `IN <table>` (IN must be followed by a list) and
--      parameters (?, :name, @name, $name);
--   2. SQLite prepares `SELECT 1 FROM t WHERE (<text>)` in a private
--      in-memory database holding only an empty table t with the snapshot's
--      columns (and the hidden __ver_c / __failed_c of virtual columns): a
--      syntax error, an unknown column or function, an aggregate, or a name
--      of any other table fails here.
-- Errors are invalid_argument `<what>: where "<text>": <reason>` with
-- field `where`; SQLite's reasons lose the SQL it quotes (ours, not the
-- user's).
local sqlite = require "geneva.sqlite"
local errors = require "geneva.errors"

local where = {}

local qi = sqlite.quote_ident

-- where.fail(what, text, reason): raises the invalid_argument for text
function where.fail(what, text, reason)
  reason = tostring(reason):gsub(' %(in ".*$', "")   -- geneva.sqlite quotes the SQL
  errors.throw("invalid_argument", ('%s: where "%s": %s'):format(what, text, reason), { where = text })
end

local quote_end = { ['"'] = '"', ["`"] = "`", ["["] = "]" }

--[[
where.scan(text) -> names | nil, reason
names: the identifiers text mentions (bare words lower-cased, quoted ones
unescaped), a superset of the columns it can read. nil, reason when text is
not one expression by the rules above.
]]
function where.scan(s)
  if type(s) ~= "string" then return nil, "must be an SQL string" end
  if not s:find("%S") then return nil, "empty expression" end
  -- the where travels in JSON (job record, tasks), which holds only UTF-8
  local ok, bad = utf8.len(s)
  if not ok then return nil, ("not valid UTF-8 (byte %d)"):format(bad) end
  local names, depth, i, n = {}, 0, 1, #s
  local after_in = false          -- the previous token was the word IN
  while i <= n do
    local c = s:sub(i, i)
    local was_in = after_in
    after_in = false
    if c:find("^%s") then
      i = i + 1
      after_in = was_in           -- whitespace keeps the state
    elseif c == "'" then
      local j = i + 1
      while true do
        local k = s:find("'", j, true)
        if not k then return nil, "unterminated string literal" end
        if s:sub(k + 1, k + 1) == "'" then j = k + 2 else i = k + 1 break end
      end
    elseif quote_end[c] then
      local close, j, parts = quote_end[c], i + 1, {}
      while true do
        local k = s:find(close, j, true)
        if not k then return nil, "unterminated quoted identifier" end
        parts[#parts + 1] = s:sub(j, k - 1)
        if close ~= "]" and s:sub(k + 1, k + 1) == close then
          parts[#parts + 1] = close
          j = k + 2
        else
          i = k + 1
          break
        end
      end
      names[#names + 1] = table.concat(parts)
    elseif s:sub(i, i + 1) == "--" or s:sub(i, i + 1) == "/*" then
      return nil, "comments are not allowed"
    elseif c == ";" then
      return nil, "must be one SQL expression (';' is not allowed)"
    elseif c == "(" then
      depth = depth + 1
      i = i + 1
    elseif c == ")" then
      if depth == 0 then return nil, "unbalanced parentheses (a ')' closes more than the where opened)" end
      depth = depth - 1
      i = i + 1
    elseif c == "?" or c == ":" or c == "@" or c == "$" then
      return nil, "parameters (?, :name, @name, $name) are not allowed"
    elseif c:find("^[%a_\128-\255]") then
      local w = s:match("^[%w_$\128-\255]+", i)
      i = i + #w
      local up = w:upper()
      if up == "SELECT" then return nil, "subqueries (SELECT) are not allowed" end
      if up == "IN" then after_in = true end
      names[#names + 1] = w:lower()
    elseif c:find("^[%d.]") then
      i = i + #(s:match("^[%w.]*", i))          -- 12, 1.5, .5, 0x1F, 1e5
      if s:sub(i - 1, i - 1):find("^[eE]") and s:sub(i, i):find("^[+-]") then
        i = i + 1 + #(s:match("^%d*", i + 1))  -- 1e+5
      end
    else
      i = i + 1                                 -- an operator character
    end
    if was_in and not after_in and c ~= "(" and not c:find("^%s") then
      return nil, "IN must be followed by a parenthesized list"
    end
  end
  if after_in then return nil, "IN must be followed by a parenthesized list" end
  if depth > 0 then return nil, "unbalanced parentheses (a '(' is never closed)" end
  return names
end

--[[
where.columns(snapshot, text) -> array of the schema's column names that
text mentions (a virtual column c also when text names "__ver_c" or
"__failed_c"), in schema order. text should have passed where.check; for
anything else the answer is a best effort.
]]
function where.columns(m, text)
  local words = {}
  for _, w in ipairs(where.scan(text) or {}) do
    w = w:lower()
    words[w:match("^__ver_(.+)$") or w:match("^__failed_(.+)$") or w] = true
  end
  local out = {}
  for _, c in ipairs(m.schema) do
    if words[c.name:lower()] then out[#out + 1] = c.name end
  end
  return out
end

--[[
where.check(text, snapshot, what) -> text
text is nil (no where: returns nil) or must be one SQL expression over the
snapshot's columns; raises invalid_argument `<what>: where "<text>": <why>`
otherwise. `what` names the caller ("backfill", "to_rows", ...).
]]
function where.check(text, m, what)
  if text == nil then return nil end
  if type(text) ~= "string" then
    errors.throw("invalid_argument", ("%s: where must be an SQL string, got %s"):format(what, type(text)))
  end
  local ok, why = where.scan(text)
  if not ok then where.fail(what, text, why) end
  local defs = { "_rowid INTEGER PRIMARY KEY" }
  for _, c in ipairs(m.schema) do
    defs[#defs + 1] = qi(c.name)
    if c.virtual then
      defs[#defs + 1] = qi("__ver_" .. c.name)
      defs[#defs + 1] = qi("__failed_" .. c.name)
    end
  end
  local db <close> = assert(sqlite.open(":memory:"))
  assert(db:exec(("CREATE TABLE t(%s)"):format(table.concat(defs, ", "))))
  local st, msg = db:prepare(("SELECT 1 FROM t WHERE (%s)"):format(text))
  if not st then where.fail(what, text, msg) end
  st:close()
  return text
end

return where
