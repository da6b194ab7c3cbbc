-- UDF functions the specs share. They travel to workers as bytecode, so
-- each stands alone (no upvalues but globals).
local udfs = {}

-- ~0.3 ms a row, so jobs last long enough to be watched, cancelled or hit:
-- a 6000-row job takes a couple of seconds on 2 workers. Returns id * 7.
function udfs.slow(id)
  local t = os.clock() + 0.0003
  while os.clock() < t do end
  return id * 7
end

-- ~2 ms a row: a 20000-row job lasts 40 s of worker time, so a test that
-- cancels it can tell "stopped" from "finished" on any machine.
function udfs.slower(id)
  local t = os.clock() + 0.002
  while os.clock() < t do end
  return id * 7
end

return udfs
