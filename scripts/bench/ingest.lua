-- scripts/bench/ingest: see that script's header.
local fs = require "geneva.fs"
local proc = require "geneva.proc"
local time = require "geneva.time"

local ROWS = math.tointeger(tonumber(arg[1]))
local RUNS = math.tointeger(tonumber(arg[2]))
local bin = os.getenv("GENEVA_BIN")

local tmp = fs.tmpdir("geneva-bench-ingest-")
local dir = tmp.path
local csv = dir .. "/rows.csv"

-- The file, deterministic: what a log or an export looks like
do
  local f = assert(io.open(csv, "wb"))
  f:write("id,name,score,active,zip\n")
  local rnd, buf = 42, {}
  local function rand(n)           -- an LCG: the same file on every machine
    rnd = (rnd * 1103515245 + 12345) % 2147483648
    return rnd % n
  end
  for i = 1, ROWS do
    buf[#buf + 1] = ("%d,u%d,%d.%02d,%s,%05d\n"):format(i, rand(100000), rand(100), rand(100),
      i % 3 == 0 and "true" or "false", rand(100000))
    if #buf == 10000 then
      f:write(table.concat(buf))
      buf = {}
    end
  end
  f:write(table.concat(buf))
  f:close()
end
local size = fs.stat(csv).size

local time_bin = fs.exists("/usr/bin/time") and "/usr/bin/time" or nil

-- Runs argv; -> wall seconds, stdout, and from /usr/bin/time (when there
-- is one) peak RSS in kB and CPU seconds (user + system)
local function timed(argv)
  local res_file = dir .. "/res"
  if time_bin then
    table.move(argv, 1, #argv, 4)
    argv[1], argv[2], argv[3] = time_bin, "-f%M %U %S", "-o" .. res_file
  end
  local t0 = time.monotonic()
  local r = assert(proc.run { argv = argv })
  local wall = time.monotonic() - t0
  if not r.ok then error(("%s failed: %s"):format(argv[time_bin and 4 or 1], r.stderr), 0) end
  if not time_bin then return wall, r.stdout end
  local rss, user, sys = (fs.read(res_file) or ""):match("(%d+) (%S+) (%S+)%s*$")
  return wall, r.stdout, tonumber(rss), tonumber(user) + tonumber(sys)
end

local GENEVA = [[
local db = require("geneva").connect(arg[1])
local t = db:create_table("t", { from = arg[2] })
local f = io.open("/proc/self/status")
local hwm = f:read("a"):match("VmHWM:%s*(%d+) kB")
f:close()
print(t:count_rows(), hwm)
]]
local script = dir .. "/ingest.lua"
assert(fs.write(script, GENEVA))

local function median(xs)
  local s = { table.unpack(xs) }
  table.sort(s)
  return s[(#s + 1) // 2]
end

local g_times, s_times, g_rss, s_rss, g_cpu, s_cpu = {}, {}, 0, 0, {}, {}
for run = 1, RUNS do
  -- geneva: a fresh database each run
  local db = ("%s/g%d"):format(dir, run)
  local wall, out, _, cpu = timed { bin, script, db, csv }
  local n, hwm = out:match("^(%d+)%s+(%d+)")
  assert(tonumber(n) == ROWS, "geneva read " .. tostring(n) .. " rows")
  g_times[#g_times + 1], g_cpu[#g_cpu + 1] = wall, cpu
  g_rss = math.max(g_rss, tonumber(hwm))
  fs.remove_tree(db)
  -- sqlite3: .import into a table it creates (every column TEXT)
  local sdb = ("%s/s%d.db"):format(dir, run)
  local swall, _, rss, scpu = timed { "sqlite3", sdb, ".import --csv " .. csv .. " t" }
  local _, count = timed { "sqlite3", sdb, "SELECT count(*) FROM t" }
  assert(tonumber(count) == ROWS, "sqlite3 imported " .. tostring(count) .. " rows")
  s_times[#s_times + 1], s_cpu[#s_cpu + 1] = swall, scpu
  s_rss = math.max(s_rss, rss or 0)
  fs.remove(sdb)
  io.write(("run %d: geneva %.2f s, sqlite3 .import %.2f s%s\n"):format(run, wall, swall,
    cpu and ("  (cpu %.2f s, %.2f s)"):format(cpu, scpu) or ""))
end

local g, s = median(g_times), median(s_times)
print(("file: %d rows, %.1f MB; median of %d runs each"):format(ROWS, size / 1e6, RUNS))
print(("geneva create_table  %.2f s  %.0fk rows/s  peak RSS %.1f MB"):format(g, ROWS / g / 1e3, g_rss / 1024))
print(("sqlite3 .import      %.2f s  %.0fk rows/s%s"):format(s, ROWS / s / 1e3,
  s_rss > 0 and ("  peak RSS %.1f MB"):format(s_rss / 1024) or ""))
print(("ratio geneva/sqlite3 speed: %.2fx (target >= 0.8x)"):format(s / g))
if #g_cpu > 0 then
  -- on a loaded machine wall times wander; CPU time is steadier
  print(("cpu (user + sys): geneva %.2f s, sqlite3 %.2f s: %.2fx"):format(median(g_cpu), median(s_cpu),
    median(s_cpu) / median(g_cpu)))
end
tmp:close()
