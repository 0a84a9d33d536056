-- A job whose task raises at line 12 on node 2 (tests/pool/test_pool.lua runs it).
local sky = require "sky"

local check = sky.compute(function(x)
  local node = sky.info().node
  if node == 1 then
    return x
  end
  -- Lines 9-11 pad the error onto line 12.
  local bad = x
  local where = "node " .. node
  error("bad input " .. bad .. " on " .. where)
end)

local pool = sky.ComputePool { nodes = 2 }
pool:with(function()
  pool:broadcast(check(41))
end)
