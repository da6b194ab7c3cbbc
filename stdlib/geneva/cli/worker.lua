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

function M.main(args)
  local a = args[1]
  if a == "--help" or a == "-h" then io.stdout:write(usage) return 0 end
  if a == "--stdio" then return require("geneva.backfill.worker").stdio_main() end
  if a == "--driver" then return require("geneva.backfill").drive_main() end
  if a == "--task" and args[2] then return require("geneva.backfill.worker").task_main(args[2]) end
  io.stderr:write(usage)
  return 2
end

return M
