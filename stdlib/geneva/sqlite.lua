--- geneva.sqlite: SQLite databases, the Lua face of geneva.sqlite.core.
--
-- Values: Lua integer <-> INTEGER (exact 64-bit), float <-> REAL, string <->
-- TEXT, sqlite.blob(s) binds a BLOB (BLOB columns read back as strings),
-- booleans bind as 0/1, nil, sqlite.null and geneva.json's null bind NULL.
-- NULL when reading: row arrays (stmt:row, rows(), first()) hold sqlite.null
-- so they never have holes; named rows, stmt:get and stmt:values give nil.
-- sqlite.null is lightuserdata NULL (the same value as cjson.null).
-- Pitfall: SQLite stores a NaN REAL as NULL.
--
-- Errors: misuse (bad arguments, use after close, unbindable values)
-- raises. SQLite failures return nil, msg, code, extcode: code is the primary
-- result name ("SQLITE_BUSY", "SQLITE_CONSTRAINT"), extcode the extended one
-- ("SQLITE_CONSTRAINT_UNIQUE"); msg quotes the first 80 bytes of the SQL.
-- After SIGINT/TERM/HUP running statements stop with nil, "interrupted",
-- "EINTR". Iterators (rows, named_rows) raise instead, as io.lines does.
local core = require "geneva.sqlite.core"

local M = {
  null = core.null,
  blob = core.blob,           -- sqlite.blob(s): bind s as a BLOB
  is_blob = core.is_blob,
  version = core.version,     -- version() -> "3.40.1"
}

local Db, Stmt = core.Db, core.Stmt
local core_exec = Db.exec

local function argerror(n, fname, msg)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end

-- A file: URI for path with the query q (RFC 3986 escapes for the few
-- characters SQLite's URI parser treats specially).
local function uri(path, q)
  local esc = path:gsub("[%%?#]", function(c) return ("%%%02X"):format(c:byte()) end)
  return "file:" .. esc .. "?" .. q
end

local open_options = { readonly = true, create = true, busy_timeout_ms = true,
                       wal = true, immutable = true }

--- open(path [, opts]) -> Db | nil, msg, code, extcode
-- opts: readonly (false), create (true: create a missing file),
-- busy_timeout_ms (5000: how long a locked database is retried),
-- wal (false: switch the file to WAL journaling), immutable (false: read
-- only, no locking; only for files nobody writes). path may be ":memory:"
-- or a file: URI. Raises on bad arguments. The caller owns the Db: close it
-- (or `local db <close> = ...`); the host ledger closes it on teardown.
function M.open(path, opts)
  if type(path) ~= "string" then argerror(1, "open", "string expected, got " .. type(path)) end
  if opts ~= nil and type(opts) ~= "table" then
    argerror(2, "open", "table expected, got " .. type(opts))
  end
  opts = opts or {}
  for k in pairs(opts) do
    if not open_options[k] then argerror(2, "open", ("unknown option '%s'%s"):format(tostring(k),
      require("geneva.suggest").hint(k, open_options))) end
  end
  local busy = opts.busy_timeout_ms or 5000
  if math.type(busy) ~= "integer" or busy < 0 then
    argerror(2, "open", "busy_timeout_ms must be a non-negative integer")
  end
  local readonly = opts.readonly and true or false
  if opts.immutable then
    path, readonly = uri(path, "mode=ro&immutable=1"), true
  end
  local db, msg, code, ext = core.open(path, readonly, opts.create ~= false, busy)
  if not db then return nil, msg, code, ext end
  if opts.wal then
    local mode
    mode, msg, code, ext = db:value("PRAGMA journal_mode=WAL")
    if mode ~= "wal" then
      db:close()
      if msg then return nil, msg, code, ext end
      return nil, ("cannot use WAL for '%s' (journal mode is %s)"):format(path, tostring(mode)),
             "SQLITE_ERROR", "SQLITE_ERROR"
    end
  end
  return db
end

--- db:exec(sql, ...) -> true | nil, msg, code, extcode
-- Without arguments after sql, runs every statement in sql. With them, sql
-- must be one statement and they are its parameters (as in bind_all).
function Db:exec(sql, ...)
  if select("#", ...) == 0 then return core_exec(self, sql) end
  local st <close>, msg, code, ext = self:prepare(sql)
  if not st then return nil, msg, code, ext end
  st:bind_all(...)
  repeat
    local r
    r, msg, code, ext = st:step()
    if not r then return nil, msg, code, ext end
  until r == "done"
  return true
end

-- Prepares sql and binds the arguments, raising on failure (for iterators).
local function prepare_or_raise(db, sql, ...)
  local st, msg = db:prepare(sql)
  if not st then error(msg, 3) end
  if select("#", ...) > 0 then st:bind_all(...) end
  return st
end

--- db:rows(sql, ...) -> iterator over row arrays (sqlite.null for NULL)
-- `for row in db:rows("SELECT a, b FROM t WHERE k = ?", k) do`. The
-- statement is finalized when the loop ends (also on break or error).
-- Raises on a prepare or step failure.
function Db:rows(sql, ...)
  local st = prepare_or_raise(self, sql, ...)
  return core.iter_rows, st, nil, st
end

--- db:named_rows(sql, ...) -> iterator over {column = value} (NULL absent)
function Db:named_rows(sql, ...)
  local st = prepare_or_raise(self, sql, ...)
  return core.iter_named, st, nil, st
end

-- Runs sql once and hands the statement on its first row (or nil) to pick.
local function first_with(db, pick, sql, ...)
  local st <close>, msg, code, ext = db:prepare(sql)
  if not st then return nil, msg, code, ext end
  if select("#", ...) > 0 then st:bind_all(...) end
  local r
  r, msg, code, ext = st:step()
  if not r then return nil, msg, code, ext end
  if r == "done" then return nil end
  return pick(st)
end

--- db:first(sql, ...) -> row array | nil (no row) | nil, msg, code, extcode
function Db:first(sql, ...)
  return first_with(self, Stmt.row, sql, ...)
end

--- db:first_named(sql, ...) -> {column = value} | nil | nil, msg, code, extcode
function Db:first_named(sql, ...)
  return first_with(self, Stmt.named_row, sql, ...)
end

local function first_value(st) return (st:get(1)) end

--- db:value(sql, ...) -> first column of the first row (nil for NULL or no
-- row) | nil, msg, code, extcode. For `SELECT count(*) ...`.
function Db:value(sql, ...)
  return first_with(self, first_value, sql, ...)
end

-- Runs method (insert_many / insert_columns) of a fresh statement for sql,
-- inside the caller's transaction or, when there is none, its own.
local function batch(db, fname, method, sql, data, n)
  if type(sql) ~= "string" then argerror(1, fname, "SQL string expected") end
  local st <close>, msg, code, ext = db:prepare(sql)
  if not st then return nil, msg, code, ext end
  local own = not db:in_transaction()
  if own then
    local ok
    ok, msg, code, ext = core_exec(db, "BEGIN IMMEDIATE")
    if not ok then return nil, msg, code, ext end
  end
  local ok, res
  ok, res, msg, code, ext = pcall(method, st, data, n)
  if ok and res and own then
    ok, msg, code, ext = core_exec(db, "COMMIT")
    if not ok then ok, res = true, nil end
  end
  if not (ok and res) and own and db:in_transaction() then core_exec(db, "ROLLBACK") end
  if not ok then error(res, 3) end
  if not res then return nil, msg, code, ext end
  return res
end

--- db:insert_many(sql, rows [, n]) -> n | nil, msg, code, extcode
-- Binds each array rows[i] (i = 1..n, default #rows) to the one statement
-- sql and steps it: the fast path for bulk loads. Runs in the caller's
-- transaction if one is open (a failure then leaves earlier rows in it),
-- else in its own, which commits or rolls back as a whole. Raises for a
-- row that is not a table, has too many values or an unbindable value.
function Db:insert_many(sql, rows, n)
  return batch(self, "insert_many", Stmt.insert_many, sql, rows, n)
end

--- db:insert_columns(sql, cols [, n]) -> n | nil, msg, code, extcode
-- Like insert_many with one array per parameter: row i binds cols[1][i],
-- cols[2][i], ... (nil binds NULL). n defaults to #cols[1].
function Db:insert_columns(sql, cols, n)
  return batch(self, "insert_columns", Stmt.insert_columns, sql, cols, n)
end

local begin_sql = { deferred = "BEGIN DEFERRED", immediate = "BEGIN IMMEDIATE",
                    exclusive = "BEGIN EXCLUSIVE" }

--- db:begin([mode "deferred"|"immediate"|"exclusive"]) -> true | nil, msg, code, extcode
function Db:begin(mode)
  local sql = begin_sql[mode or "deferred"]
  if not sql then argerror(1, "begin", ("invalid mode '%s'"):format(tostring(mode))) end
  return core_exec(self, sql)
end

--- db:commit() / db:rollback() -> true | nil, msg, code, extcode
function Db:commit() return core_exec(self, "COMMIT") end
function Db:rollback() return core_exec(self, "ROLLBACK") end

local savepoints = 0

--- db:transaction(fn [, mode]) -> true, fn's results... | nil, msg, code, extcode
-- Runs fn(db) in a transaction (a savepoint when one is already open) and
-- commits. If fn raises, rolls back and re-raises the error. A failure to
-- begin or commit returns nil, msg, code (the transaction is rolled back).
function Db:transaction(fn, mode)
  if type(fn) ~= "function" then argerror(1, "transaction", "function expected") end
  local sp, ok, msg, code, ext
  if self:in_transaction() then
    savepoints = savepoints + 1
    sp = "geneva_tx_" .. savepoints
    ok, msg, code, ext = core_exec(self, "SAVEPOINT " .. sp)
  else
    ok, msg, code, ext = self:begin(mode)
  end
  if not ok then return nil, msg, code, ext end
  local function undo()
    if self:is_closed() or not self:in_transaction() then return end
    if sp then core_exec(self, "ROLLBACK TO " .. sp .. "; RELEASE " .. sp)
    else core_exec(self, "ROLLBACK") end
  end
  -- fn's error goes on with its own traceback, after the rollback
  local rollback <close> = setmetatable({}, { __close = function(_, err)   -- luacheck: ignore 211
    if err ~= nil then undo() end
  end })
  local res = table.pack(fn(self))
  ok, msg, code, ext = core_exec(self, sp and ("RELEASE " .. sp) or "COMMIT")
  if not ok then
    undo()
    return nil, msg, code, ext
  end
  return true, table.unpack(res, 1, res.n)
end

--- db:attach(path, alias [, {readonly=, immutable=}]) -> true | nil, msg, code, extcode
-- Makes path's tables visible as alias.name. Note Debian's SQLite allows at
-- most 10 attached databases.
function Db:attach(path, alias, opts)
  if type(path) ~= "string" then argerror(1, "attach", "string expected") end
  if type(alias) ~= "string" then argerror(2, "attach", "string expected") end
  if opts and opts.immutable then path = uri(path, "mode=ro&immutable=1")
  elseif opts and opts.readonly then path = uri(path, "mode=ro") end
  return self:exec("ATTACH DATABASE ? AS ?", path, alias)
end

--- db:detach(alias) -> true | nil, msg, code, extcode
function Db:detach(alias)
  if type(alias) ~= "string" then argerror(1, "detach", "string expected") end
  return self:exec("DETACH DATABASE ?", alias)
end

-- The to-be-closed value of stmt:rows(): resets the statement when the loop
-- ends early, so it does not keep its read lock.
local Resetter = { __close = function(r)
  if not r[1]:is_closed() then r[1]:reset() end
end }

local function stmt_iter(st, iter, ...)
  st:reset()
  if select("#", ...) > 0 then st:bind_all(...) end
  return iter, st, nil, setmetatable({ st }, Resetter)
end

--- stmt:rows(...) -> iterator over row arrays; stmt:named_rows(...) -> over
-- {column = value}. Reset the statement and, given arguments, bind them
-- first (as bind_all); otherwise earlier bindings stay. Raise on failure.
function Stmt:rows(...) return stmt_iter(self, core.iter_rows, ...) end
function Stmt:named_rows(...) return stmt_iter(self, core.iter_named, ...) end

--- quote_ident(name) -> name as one SQL identifier: in double quotes, each
-- '"' doubled, so any name (spaces, quotes, keywords) stays one identifier.
function M.quote_ident(name)
  return '"' .. name:gsub('"', '""') .. '"'
end

M.Db, M.Stmt = Db, Stmt
return M
