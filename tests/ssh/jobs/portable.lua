-- One job, any provider: `skyrun portable.lua PROVIDER_FILE` where PROVIDER_FILE returns the
-- provider (sky.providers.local_{} or sky.providers.ssh{...}). Nothing below depends on which.
local sky = require "sky"
local provider = dofile(arg[1])

-- The address this worker's host is reached at from the head node: the source address of a
-- route towards the head (on one machine, the loopback).
local function my_address(head)
  local f = io.popen("ip -4 route get " .. head .. " 2>/dev/null")
  local out = f:read("*a")
  f:close()
  return out:match("src (%d+%.%d+%.%d+%.%d+)") or "?"
end

local whoami = sky.compute(function(tag)
  local info = sky.info(); local routed = my_address(info.head_address)
  assert(info.address == routed, "sky.info().address " .. tostring(info.address) .. " is not " .. routed)
  return { tag = tag, node = info.node, nodes = info.nodes, rank = info.rank, head = info.head_address, address = info.address }
end)

local square = sky.compute(function(x) return x * x end)

local fails = sky.compute(function(n)
  if n > 2 then
    error("n is too large: " .. n)
  end
  return n
end)

local pool = sky.ComputePool { provider = provider, nodes = 3 }
pool:with(function()
  local all = pool:broadcast(whoami("b"))
  local addresses, seen = {}, {}
  for i, r in ipairs(all) do
    print(string.format("broadcast %d: node=%d nodes=%d rank=%d tag=%s", i, r.node, r.nodes, r.rank, r.tag))
    if not seen[r.address] then seen[r.address] = true addresses[#addresses + 1] = r.address end
  end
  print("distinct addresses: " .. #addresses)
  print("addresses: " .. table.concat(addresses, " "))
  print("head: " .. all[1].head)
  local a, b, c = pool:gather(square(2), square(3), square(4))
  print("gather: " .. a .. " " .. b .. " " .. c)
  local items = {}
  for i = 1, 200 do items[i] = i end
  local sum = 0
  for _, v in ipairs(pool:map(function(x) return x + 1 end, items)) do sum = sum + v end
  print("map sum: " .. sum)
  local ok, err = pcall(function() return pool:run(fails(5)) end)
  print("error caught: " .. tostring(not ok))
  print("error text: " .. tostring(err))
end)
print("done")
