-- jobs/data_sharding.lua and jobs/collections.lua (Skyward's guides ported) end to end.
local T = require "testlib"
local root = os.getenv("SKYRUN_SOURCE_ROOT")

T.test("data_sharding: 4 nodes get 250 rows each; gather streams every chunk sum", function()
  local out, err, rc = T.skyrun({ root .. "/jobs/data_sharding.lua" })
  T.eq(rc, 0, err)
  for node = 1, 4 do T.contains(out, "Node " .. node .. ": 250 samples, 250 labels, mean=") end
  T.contains(out, "Chunk sums: 6, 15, 24")
  local got = {}
  for v in out:gmatch("Got: (%d+)") do got[#got + 1] = tonumber(v) end
  table.sort(got)
  T.eq(got, { 0, 1000, 2000, 3000, 4000 })
end)

T.test("collections: cache, counter, queue, barrier and lock across 4 nodes", function()
  local out, err, rc = T.skyrun({ root .. "/jobs/collections.lua" })
  T.eq(rc, 0, err)
  -- two nodes may both compute a word neither has seen yet, as with Skyward's cache
  local entries, computed = out:match("cache: (%d+) entries, computed (%d+) times")
  T.eq(tonumber(entries), 6)
  T.ok(tonumber(computed) >= 6 and tonumber(computed) <= 7, computed)
  T.contains(out, "global steps: 20")
  T.contains(out, "queue: 100 tasks drained by 4 nodes, sum 10100")
  T.contains(out, "epoch 1: barrier round 1 on all 4 nodes")
  T.contains(out, "epoch 2: barrier round 2 on all 4 nodes")
  T.contains(out, "best checkpoint: score 34 from node 4")
end)

T.run()
