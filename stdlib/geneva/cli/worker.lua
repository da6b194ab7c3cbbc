-- geneva worker: internal; runs backfill tasks for a driver.
--   geneva worker --stdio        serve tasks over stdin/stdout (local runner)
--   geneva worker --task FILE    run the task in FILE, write FILE.result
--   geneva worker --driver       drive a background job (handoff on stdin)
--   geneva worker --queue DB JOB [--slot N] [--id ID] [--store JSON]
--                                run the job's tasks from its queue in the db
--                                (geneva.backfill.queue: Ray workers)
local M = {}

local usage = [[
usage: geneva worker --stdio
       geneva worker --task FILE
       geneva worker --driver
       geneva worker --queue DB_URI JOB_ID [--slot N] [--id ID] [--store JSON]
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
  local db
  if type(msg.store) == "table" and type(msg.store.uri) == "string" then
    local o = {}
    for _, k in ipairs({ "endpoint", "region", "profile", "path_style" }) do o[k] = msg.store[k] end
    db = require("geneva.db").connect(msg.store.uri, o)
    msg.db = db.dir
  else
    db = require("geneva.db").connect(msg.db)
  end
  local tbl = db:open_table(msg.table)
  return backfill.drive(tbl, msg)
end

-- --queue DB JOB [--slot N] [--id ID]: a long-lived worker taking the
-- job's tasks from its queue in the database until the job ends
function M.queue_main(argv)
  local opts, pos = {}, {}
  local i = 2
  while i <= #argv do
    local a = argv[i]
    if (a == "--slot" or a == "--id" or a == "--store") and argv[i + 1] then
      opts[a:sub(3)] = argv[i + 1]
      i = i + 2
    else
      pos[#pos + 1] = a
      i = i + 1
    end
  end
  local slot = opts.slot and math.tointeger(tonumber(opts.slot))
  if #pos ~= 2 or (opts.slot and not slot) then
    io.stderr:write(usage)
    return 2
  end
  local store
  if pos[1] and pos[1]:match("^s3://") then
    -- the database's store description (endpoint, region...: no secrets)
    store = opts.store and require("geneva.json").decode(opts.store, { null_as_nil = true }) or { uri = pos[1] }
  end
  local ok, err = pcall(require("geneva.backfill.queue").work, pos[1], pos[2], { slot = slot, id = opts.id, store = store })
  if ok then return err end
  local e = require("geneva.errors").from(err)
  if e.code == "interrupted" then error(err, 0) end
  io.stderr:write("geneva worker --queue: ", tostring(e), "\n")
  return 1
end

function M.main(args)
  local a = args[1]
  if a == "--help" or a == "-h" then io.stdout:write(usage) return 0 end
  if a == "--stdio" then return require("geneva.backfill.worker").stdio_main() end
  if a == "--driver" then return M.driver_main() end
  if a == "--queue" then return M.queue_main(args) end
  if a == "--task" and args[2] then return require("geneva.backfill.worker").task_main(args[2]) end
  io.stderr:write(usage)
  return 2
end

return M
