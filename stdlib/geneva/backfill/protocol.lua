-- geneva.backfill.protocol: the lines a `geneva worker --stdio` and the
-- local runner exchange (docs/internals.md, "Worker protocol").
--
-- Driver to worker: one JSON object a line ({"op":"task", ...}, {"op":"exit"}).
-- Worker to driver: protocol lines start with MARK (an ASCII record separator
-- and a tag), so anything else a UDF or library prints is a log line.
local json = require "geneva.json"

local protocol = {}

protocol.MARK = "\30GENEVA "

-- protocol.line(msg) -> the worker's line for msg, newline included
function protocol.line(msg)
  return protocol.MARK .. json.encode(msg) .. "\n"
end

-- protocol.parse(line) -> msg | nil when the line is a log line (or garbage)
function protocol.parse(line)
  local mark = protocol.MARK
  if line:sub(1, #mark) ~= mark then return nil end
  local msg = json.decode(line:sub(#mark + 1), { null_as_nil = true })
  if type(msg) ~= "table" or type(msg.op) ~= "string" then return nil end
  return msg
end

return protocol
