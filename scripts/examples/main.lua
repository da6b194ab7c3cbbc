-- The main example: what `bash scripts/setup.sh` runs after installing.
-- (Grows into the full backfill example as tables land.)
local geneva = require "geneva"
local ledger = geneva.ledger

-- Everything created inside a scope is torn down when it closes, newest
-- first, on return, on error, on Ctrl-C.
local scope = ledger.scope{ name = "example" }
ledger.with(scope, function()
  ledger.current():reserve("note", "hello"):bind(function()
    print("teardown: hello is gone")
  end)
  print("inside the scope: " .. #scope:resources() .. " resource(s)")
end)
print(geneva._VERSION .. " ok")
