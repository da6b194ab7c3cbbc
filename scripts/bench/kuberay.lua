-- scripts/bench/kuberay's body (see the launcher).   geneva kuberay.lua ROUNDS
local geneva = require "geneva"
local fs = require "geneva.fs"
local clock = geneva.time.monotonic
local src = assert(os.getenv("GENEVA_SOURCE_DIR"))
package.path = src .. "/tests/support/?.lua;" .. package.path
local kube = require "kube_emulator"
local ROUNDS = math.tointeger(tonumber(arg[1] or "3"))

local tmp = fs.tmpdir("geneva-bench-")
local k = kube.start(tmp.path .. "/kube", { "--ready-delay", "0" })
local db = geneva.connect(tmp.path .. "/db")
local rows = {}
for i = 1, 20000 do rows[i] = { id = i } end
local tbl = db:create_table("docs", rows)
local spec = { type = "kuberay", kubeconfig = k.kubeconfig,
               head_group = { image = "rayproject/ray:2.52.0", num_cpus = 0 },
               worker_groups = { { name = "cpu", image = "rayproject/ray:2.52.0", num_cpus = 2, replicas = 1 } } }

local function total() return k:state().counters.total or 0 end
local function median(t) table.sort(t) return t[(#t + 1) // 2] end

local enter, first, exit_t, reqs = {}, {}, {}, {}
for r = 1, ROUNDS do
  local col = "c" .. r
  tbl:add_columns { [col] = geneva.udf { data_type = "int64", fn = function(id) return id + 1 end } }
  local r0 = total()
  local t0 = clock()
  local t_fn_end
  geneva.context { cluster = spec, db = db } (function()
    enter[r] = clock() - t0
    local j = tbl:backfill_async(col, { batch_size = 5000 })
    -- the first task running: claimed by a Ray worker from the job's queue
    -- (as scripts/bench/ray times it), not done
    local claims = require("geneva.backfill.queue").dir(db.path, j.id) .. "/claims"
    while #(fs.list(claims) or {}) == 0 and j:status() ~= "DONE" do geneva.time.sleep(0.005) end
    first[r] = clock() - t0
    j:wait()
    t_fn_end = clock()
  end)
  exit_t[r] = clock() - t_fn_end
  assert(#k:clusters() == 0, "a RayCluster is left")
  reqs[r] = total() - r0
  assert(tbl:count_rows(col .. " = id + 1") == 20000)
end
print(("KubeRay context lifecycle through the emulators, median of %d rounds (20k rows, 4 tasks)"):format(ROUNDS))
print(("  context enter (RayCluster created and ready, dashboard reached): %6.0f ms"):format(median(enter) * 1000))
print(("  enter -> first task running (claimed by a Ray worker):          %6.0f ms"):format(median(first) * 1000))
print(("  end of the function -> RayCluster deleted and gone:            %6.0f ms"):format(median(exit_t) * 1000))
print(("  Kubernetes API requests per lifecycle (proxied Ray calls included): %d"):format(median(reqs)))
k:close()
tmp:close()
