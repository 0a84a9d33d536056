-- jobs/sweep.lua end to end: a grid of n-gram models evaluated through pool:map on 2 nodes.
local T = require "testlib"

T.test("the sweep prints one row per setting, from both nodes, with sensible numbers", function()
  local root = os.getenv("SKYRUN_SOURCE_ROOT")
  local data = os.getenv("SKYRUN_SHARED_DATA") .. "/text/tinyshakespeare.txt"
  local out, err, rc = T.skyrun({ root .. "/jobs/sweep.lua", "--nodes", "2", "--chars", "60000", "--data", data })
  T.eq(rc, 0, err)
  T.contains(out, "sweep over 9 settings on 2 nodes")
  local rows, nodes, by = 0, {}, {}
  for order, k, bits, node in out:gmatch("\n(%d)%s+([%d%.]+)%s+([%d%.]+)%s+(%d)") do
    rows = rows + 1
    nodes[node] = true
    by[order .. "/" .. k] = tonumber(bits)
  end
  T.eq(rows, 9)
  T.ok(nodes["1"] and nodes["2"], "both nodes worked")
  T.ok(by["2/0.1"] < by["1/0.1"], "a bigram model beats a unigram one")
  T.ok(by["1/0.1"] > 3 and by["1/0.1"] < 6, "unigram entropy of English text")
  T.contains(out, "best: order")
end)

T.run()
