--- The API's errors: tables with a `code`, raised with `error()`.
--
-- Callers branch on `err.code`; `tostring(err)` is `"<code>: <message>"`,
-- and `geneva` prints an uncaught one as `geneva: <code>: <message>` with
-- the line of the script that led to it.
-- @module geneva.errors
-- @usage local ok, err = pcall(db.open_table, db, "nope")
-- if not ok and err.code == "not_found" then print("no such table") end
local errors = {}

--- The metatable of every API error (`geneva.Error`).
-- @table Error
-- @field code one of @{codes}
-- @field message what went wrong, and where
-- @field path a file or directory involved (optional)
-- @field line,col a position in a file (recipes, CSV/JSONL, YAML; optional)
-- @field column,rowid,value the column, row and value a UDF failed on (optional)
-- @field job_id the job that failed (optional)
-- @field cause the underlying error (optional)
local Error = {}
Error.__index = Error
Error.__name = "geneva.Error"
Error.__tostring = function(e) return e.code .. ": " .. e.message end

errors.Error = Error

--- The codes, as a set: `not_found`, `invalid_argument`, `conflict` (also
-- "already exists"), `unavailable` (I/O, network, a server's 5xx),
-- `udf_error` (a UDF raised, returned a wrong type or timed out),
-- `cancelled`, `interrupted` (Ctrl-C, SIGTERM), `abandoned` (a job whose
-- driver is gone), `internal` (a bug: it prints a traceback).
-- @table codes
errors.codes = {
  not_found = true, invalid_argument = true, conflict = true, unavailable = true,
  udf_error = true, cancelled = true, interrupted = true, abandoned = true,
  internal = true,
}

--- Makes an Error (to raise: `error(errors.new(...))`).
-- @string code one of @{codes}
-- @string message
-- @tab[opt] fields more fields (`path`, `column`, ...)
-- @treturn Error
function errors.new(code, message, fields)
  assert(errors.codes[code], "unknown error code " .. tostring(code))
  local e = { code = code, message = tostring(message) }
  if fields then for k, v in pairs(fields) do e[k] = v end end
  return setmetatable(e, Error)
end

-- errors.raise(code, fmt, ...) raises a new Error; a trailing table argument
-- beyond the format's needs is not supported: use errors.throw for fields.
function errors.raise(code, fmt, ...)
  error(errors.new(code, select("#", ...) > 0 and fmt:format(...) or fmt), 2)
end

-- errors.throw(code, message, fields) raises a new Error with fields
function errors.throw(code, message, fields)
  error(errors.new(code, message, fields), 2)
end

--- Whether a value is an Error, with that code if one is given.
-- @param v any value (what `pcall` returned)
-- @string[opt] code
-- @treturn boolean
-- @usage local ok, err = pcall(tbl.backfill, tbl, "words")
-- if errors.is(err, "udf_error") then print(err.rowid, err.value) end
function errors.is(v, code)
  return getmetatable(v) == Error and (code == nil or v.code == code)
end

-- errors.from(v [, code]) -> Error: wraps any error value (strings from Lua,
-- "interrupted" from the host) keeping Errors as they are.
function errors.from(v, code)
  if errors.is(v) then return v end
  if v == "interrupted" then return errors.new("interrupted", "interrupted") end
  if type(v) == "table" and errors.codes[v.code] and v.message then
    return setmetatable(v, Error)
  end
  return errors.new(code or "internal", tostring(v))
end

-- errors.check(ok, err, code [, context]) -> ok: turns nil, msg into a raise
function errors.check(ok, err, code, context)
  if ok == nil or ok == false then
    error(errors.new(code or "internal", context and (context .. ": " .. tostring(err)) or tostring(err)), 2)
  end
  return ok
end

-- errors.io(ok, msg, code, ...) -> ok, msg, code, ... | raises. The one
-- adapter from the bindings' `nil, msg, code` convention to an Error: EINTR
-- (a signal arrived) is `interrupted`, anything else `unavailable` with the
-- binding's message (which names the path) and its code as `errno`.
function errors.io(ok, msg, code, ...)
  if ok == nil then
    if code == "EINTR" then error(errors.new("interrupted", "interrupted"), 2) end
    error(errors.new("unavailable", tostring(msg), { errno = code }), 2)
  end
  return ok, msg, code, ...
end

-- s as valid UTF-8: each byte that is not part of a character becomes
-- U+FFFD (utf8.len is strict: no surrogates, overlong forms or > U+10FFFF).
local function utf8_text(s)
  if utf8.len(s) then return s end
  local out, i = {}, 1
  while true do
    local ok, bad = utf8.len(s, i)
    if ok then out[#out + 1] = s:sub(i) break end
    out[#out + 1] = s:sub(i, bad - 1) .. "\u{FFFD}"
    i = bad + 1
  end
  return table.concat(out)
end
errors.utf8_text = utf8_text

-- errors.clean(s [, max = 300]) -> s printable and bounded: text from an
-- untrusted source (a server's answer, a lease, a kubeconfig) fit for a
-- message or a terminal: control bytes become spaces, and more than max
-- bytes end in "...".
function errors.clean(s, max)
  s = tostring(s == nil and "" or s)
  max = max or 300
  if #s > max then s = s:sub(1, max) .. "..." end
  return (s:gsub("[%c\127]", " "))
end

-- errors.plain(e) -> table without metatable (for JSON job records and
-- worker messages). Strings become valid UTF-8 (utf8_text): a message or
-- value may hold any bytes a UDF produced, and JSON only holds text. NaN
-- and infinities (a bad value a UDF returned) become their text, "nan",
-- "inf": JSON has no such numbers, and the worker's message must go out.
function errors.plain(e)
  local t = {}
  for k, v in pairs(e) do
    if type(v) == "string" then t[k] = utf8_text(v)
    elseif math.type(v) == "float" and (v ~= v or v == math.huge or v == -math.huge) then t[k] = tostring(v)
    elseif type(v) ~= "function" and type(v) ~= "userdata" then t[k] = v end
  end
  if type(t.cause) == "table" then t.cause = errors.plain(t.cause) end
  return t
end

return errors
