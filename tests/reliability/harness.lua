-- tests/reliability/run: see that script's header. Each run of a loop gets
-- a fresh db, TMPDIR and state dir; its fault lands at a random moment;
-- then the documented recovery (geneva reap --db, a resuming backfill,
-- geneva reap --db --grace 0 for the orphan files) and the counts. A run passes when its table is
-- exact and nothing was left behind.
local src = os.getenv("GENEVA_SOURCE_DIR")
package.path = src .. "/tests/reliability/?.lua;" .. package.path

local fs = require "geneva.fs"
local json = require "geneva.json"
local time = require "geneva.time"
local kit = require "kit"
local loops = require "loops"
local checks = require "checks"

local function usage(msg)
  io.stderr:write("reliability: ", msg, " (see tests/reliability/run --help)\n")
  os.exit(2)
end

local opts = { n = 50, seed = math.floor(time.now() * 1000) % 2147483647 }
do
  local i = 1
  while arg[i] do
    local a = arg[i]
    if a == "--n" or a == "--seed" then
      opts[a:sub(3)] = math.tointeger(tonumber(arg[i + 1])) or usage(a .. " takes an integer")
      i = i + 1
    elseif a == "--loops" then
      opts.loops = {}
      for name in (arg[i + 1] or ""):gmatch("[^,]+") do
        if not loops[name] then usage(("no loop '%s' (%s)"):format(name, table.concat(loops.order, ", "))) end
        opts.loops[#opts.loops + 1] = name
      end
      i = i + 1
    elseif a == "--keep" or a == "--json" or a == "--list" then
      opts[a:sub(3)] = true
    else
      usage("unknown argument " .. a)
    end
    i = i + 1
  end
end
if opts.list then
  for _, name in ipairs(loops.order) do print(("%-14s %s"):format(name, loops[name].about)) end
  os.exit(0)
end
math.randomseed(opts.seed)

local base_tmp = fs.tmpdir("geneva-reliability-")
local base = base_tmp.path
local function say(fmt, ...) io.stderr:write(fmt:format(...), "\n") end

-- du(dir [, since]) -> total bytes of its files, the largest of those
-- that are new or changed since the sizes of an earlier du, its sizes
local function du(dir, since)
  local total, largest, sizes = 0, 0, {}
  for _, rel in ipairs(fs.walk(dir, { ignore_errors = true }) or {}) do
    local st = fs.stat(dir .. "/" .. rel)
    if st and st.type == "file" then
      total = total + st.size
      sizes[rel] = st.size
      if not since or since[rel] ~= st.size then largest = math.max(largest, st.size) end
    end
  end
  return total, largest, sizes
end

-- One clean run first: how long a job lasts (faults land within it), how
-- much it writes (the disk-full loop leaves up to twice that free) and the
-- largest file it writes (the ulimit loop's limit goes up to that).
local function calibrate()
  local k = kit.new(base)
  k:table()
  local before, _, sizes = du(k.root)
  local t0 = time.monotonic()
  local o, detail = k:outcome(k:driver("x"))
  local D = time.monotonic() - t0
  if o ~= "done" then error("a clean run failed: " .. tostring(detail), 0) end
  local r = checks.rows(k:table(), kit.ROWS, { x = kit.COLUMNS.x })
  if r.lost + r.dup + r.wrong > 0 then error("a clean run was not exact", 0) end
  local after, largest = du(k.root, sizes)
  k:close()
  return { D = D, growth = math.max(1, after - before), largest_kb = largest // 1024 + 1 }
end

local COUNTS = { "lost", "dup", "wrong", "procs", "tmpdirs", "leases", "stray", "stuck", "orphans", "unclean" }

local function add(into, what, n) into[what] = (into[what] or 0) + n end

-- the counts of a run's leftovers, as they stand
local function leftovers(k, into, with_files)
  add(into, "procs", #checks.wait_procs(k.tag, 5))
  local left = checks.left(k.root, k.db_dir)
  add(into, "tmpdirs", left.tmpdirs)
  add(into, "leases", left.leases)
  add(into, "stuck", left.stuck)
  if with_files then add(into, "stray", left.stray) end
end

-- one run: the loop's fault, the checks a clean exit owes, the recovery, the rest
local function run_once(def, env, state, n)
  local k = kit.new(base, def.kit_opts and def.kit_opts(state, n))
  local c, notes = {}, {}
  k:table()
  local r = def.run(k, env, state)
  for _, o in ipairs(r.outcomes) do
    if o == "unclean" then add(c, "unclean", 1) end
  end
  add(c, "procs", r.ray_left or 0)
  if r.teardown then leftovers(k, c, false) end

  -- recovery: what the README prescribes after a crash
  local reap = k:cli("reap", "--db", k.db, "--json")
  if not reap.ok then add(c, "unclean", 1); notes[#notes + 1] = "reap: " .. reap.stderr end
  if not r.teardown then leftovers(k, c, false) end
  local resume = def.resume_opts and def.resume_opts(state) or nil
  for _, col in ipairs(r.both and { "x", "y" } or { "x" }) do
    local o, detail = k:outcome(k:driver(col, resume))
    if o ~= "done" then add(c, "unclean", 1); notes[#notes + 1] = "resume of " .. col .. ": " .. tostring(detail) end
  end
  -- what the crash left in data/: reap's orphan sweep, without waiting out its grace
  local clean = k:cli("reap", "--db", k.db, "--grace", "0", "--json")
  local collected = clean.ok and (json.decode(clean.stdout).orphan_files or 0) or 0
  if not clean.ok then add(c, "unclean", 1); notes[#notes + 1] = "reap --grace 0: " .. clean.stderr end

  -- the end state
  local cols = { x = kit.COLUMNS.x }
  if r.both then cols.y = kit.COLUMNS.y end
  local rows = checks.rows(k:table(), kit.ROWS, cols)
  for what, v in pairs(rows) do add(c, what, v) end
  leftovers(k, c, true)
  add(c, "orphans", checks.orphans(k.db_dir .. "/docs"))
  local ok = true
  for _, what in ipairs(COUNTS) do ok = ok and (c[what] or 0) == 0 end
  for _, note in ipairs(k.notes) do notes[#notes + 1] = note end
  k:close(opts.keep and not ok)
  return { ok = ok, hit = r.hit, exact = rows.lost + rows.dup + rows.wrong == 0 and (c.unclean or 0) == 0,
           counts = c, collected = collected, notes = notes, dir = not ok and opts.keep and k.root or nil }
end

local results, failures = {}, {}
local function main()
  local env = calibrate()
  say("seed %d, databases %s; a clean run takes %.2f s, writes %d KB, largest file %d KB", opts.seed,
      kit.BUCKET and ("in s3://" .. kit.BUCKET .. " (moto)") or "in directories", env.D, env.growth // 1024,
      env.largest_kb)
  for _, name in ipairs(opts.loops or loops.order) do
    local def = loops[name]
    local row = { loop = name, runs = 0, hit = 0, exact = 0, collected = 0 }
    for _, what in ipairs(COUNTS) do row[what] = 0 end
    results[#results + 1] = row
    local state, why = true, nil
    if def.setup then state, why = def.setup(base) end
    if not state then
      row.skipped = why
      say("%s: skipped: %s", name, why)
    else
      local ok, err = pcall(function()
        for i = 1, opts.n do
          local r = run_once(def, env, state, i)
          row.runs = row.runs + 1
          if r.hit then row.hit = row.hit + 1 end
          if r.exact then row.exact = row.exact + 1 end
          row.collected = row.collected + r.collected
          for what, v in pairs(r.counts) do row[what] = row[what] + v end
          if not r.ok then
            failures[#failures + 1] = { loop = name, run = i, counts = r.counts, notes = r.notes, dir = r.dir }
          end
          io.stderr:write(("\r%-14s %d/%d"):format(name, i, opts.n))
        end
        io.stderr:write("\n")
      end)
      if def.teardown then def.teardown(state) end
      if not ok then error(err, 0) end
    end
  end
end

local ok, err = pcall(main)
base_tmp:close()
if not ok then
  io.stderr:write("reliability: ", tostring(err), "\n")
  os.exit(1)
end

local bad = #failures > 0
if opts.json then
  print(json.encode { seed = opts.seed, n = opts.n, store = kit.BUCKET and "s3" or "dir", loops = json.array(results), failures = json.array(failures) })
else
  print(("%-14s %5s %5s %6s %5s %4s %6s %6s %8s %7s %6s %6s %8s %8s %10s"):format("loop", "runs", "hit", "exact",
    "lost", "dup", "wrong", "procs", "tmpdirs", "leases", "stray", "stuck", "orphans", "unclean", "collected"))
  for _, r in ipairs(results) do
    if r.skipped then
      print(("%-14s skipped: %s"):format(r.loop, r.skipped))
    else
      print(("%-14s %5d %5d %6d %5d %4d %6d %6d %8d %7d %6d %6d %8d %8d %10d"):format(r.loop, r.runs, r.hit, r.exact,
        r.lost, r.dup, r.wrong, r.procs, r.tmpdirs, r.leases, r.stray, r.stuck, r.orphans, r.unclean, r.collected))
    end
  end
  print(("seed %d, %d runs a loop, %s: %s"):format(opts.seed, opts.n, kit.BUCKET and "s3" or "dir",
    bad and (#failures .. " failed runs") or "all exact, nothing left behind"))
  for i, f in ipairs(failures) do
    if i > 5 then print(("... and %d more"):format(#failures - 5)) break end
    local parts = {}
    for what, v in pairs(f.counts) do if v > 0 then parts[#parts + 1] = what .. "=" .. v end end
    table.sort(parts)
    print(("  %s run %d: %s%s"):format(f.loop, f.run, table.concat(parts, " "), f.dir and (" (kept: " .. f.dir .. ")") or ""))
    for _, note in ipairs(f.notes) do print("    " .. note:gsub("\n", "\n    ")) end
  end
end
os.exit(bad and 1 or 0)
