-- jobs/data_sharding.lua: Skyward's guides/05_data_sharding.py and the gather part of
-- guides/02_parallel_execution.py, ported line by line to a local pool.
--   skyrun jobs/data_sharding.lua [--nodes N]
-- Python                                         Lua
--   x, y = sky.shard(full_x, full_y,              local x, y = sky.shard(full_x, full_y,
--                    shuffle=True, seed=42)                         { shuffle = true, seed = 42 })
--   info = sky.instance_info(); info.node         local info = sky.info(); info.node (from 1)
--   train_on_shard(X, Y) @ compute                pool:broadcast(train_on_shard(X, Y))
--   sky.gather(*tasks, stream=True) >> compute    pool:gather(t1, t2, ..., { stream = true })
local sky = require "sky"

local nodes = 4
if arg and arg[1] == "--nodes" then nodes = tonumber(arg[2]) end

local train_on_shard = sky.compute(function(full_x, full_y)
  local x, y = sky.shard(full_x, full_y, { shuffle = true, seed = 42 })
  local info = sky.info()
  local sum, count = 0, 0
  for _, row in ipairs(x) do
    for _, v in ipairs(row) do sum, count = sum + v, count + 1 end
  end
  return { node = info.node, shard_size = #x, labels = #y, mean = sum / count }
end)

local process_chunk = sky.compute(function(data)
  local s = 0
  for _, v in ipairs(data) do s = s + v end
  return s
end)

-- The data: 1000 rows of 10 normal numbers (Box-Muller over a seeded generator) and 1000 labels.
math.randomseed(42)
local function gauss() return math.sqrt(-2 * math.log(1 - math.random())) * math.cos(2 * math.pi * math.random()) end
local X, Y = {}, {}
for i = 1, 1000 do
  local row = {}
  for j = 1, 10 do row[j] = gauss() end
  X[i], Y[i] = row, math.random(0, 9)
end

local pool = sky.ComputePool { nodes = nodes }
pool:with(function()
  local results = pool:broadcast(train_on_shard(X, Y))
  for _, r in ipairs(results) do
    print(string.format("  Node %d: %d samples, %d labels, mean=%.3f", r.node, r.shard_size, r.labels, r.mean))
  end

  local chunks = { { 1, 2, 3 }, { 4, 5, 6 }, { 7, 8, 9 } }
  print("Chunk sums: " .. table.concat({ pool:gather(process_chunk(chunks[1]), process_chunk(chunks[2]),
    process_chunk(chunks[3])) }, ", "))

  local tasks = {}
  for i = 0, 4 do
    local data = {}
    for k = 1, 1000 do data[k] = i end
    tasks[#tasks + 1] = process_chunk(data)
  end
  tasks[#tasks + 1] = { stream = true }
  local start = require("sky.core").monotonic()
  for result, index in pool:gather(unpack(tasks)) do
    print(string.format("  [%.1fs] Got: %d (task %d)", require("sky.core").monotonic() - start, result, index))
  end
end)
