-- geneva.repl: what the REPL does around each statement. Each statement
-- runs in a ledger scope of its own, so Ctrl-C tears down what that
-- statement created (a context's workers, a running job, temp dirs) and
-- nothing from earlier statements; a statement that completes keeps what it
-- made (say `c = ctx:enter()`) until it is closed or the REPL ends.
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

return M
