-- geneva worker: internal; runs backfill tasks for a driver.
--   geneva worker --stdio        serve tasks over stdin/stdout (local runner)
--   geneva worker --task FILE    run the task in FILE, write FILE.result
--   geneva worker --driver       drive a background job (handoff on stdin)
local M = {}

local usage = [[
usage: geneva worker --stdio
       geneva worker --task FILE
       geneva worker --driver
Internal: runs backfill tasks for a driver (see docs/internals.md).
]]

-- --driver: the process of a background job (geneva.backfill.start_async)
function M.driver_main()
  local backfill = require "geneva.backfill"
  local msg, why = backfill.read_handoff(io.stdin:read("a"))
  if not msg then
    io.stderr:write("geneva worker --driver: ", why, "\n")
    return 2
  end
  local tbl = require("geneva.db").connect(msg.db):open_table(msg.table)
  return backfill.drive(tbl, msg)
end

function M.main(args)
  local a = args[1]
  if a == "--help" or a == "-h" then io.stdout:write(usage) return 0 end
  if a == "--stdio" then return require("geneva.backfill.worker").stdio_main() end
  if a == "--driver" then return M.driver_main() end
  if a == "--task" and args[2] then return require("geneva.backfill.worker").task_main(args[2]) end
  io.stderr:write(usage)
  return 2
end

return M
