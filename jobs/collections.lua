-- jobs/collections.lua: the examples of Skyward's docs/distributed-collections.md, ported to a
-- local pool: a dict used as a cache over sky.shard, a counter of global steps, a work queue
-- filled by the head and drained by every node, a barrier between epochs, a lock around a
-- checkpoint. The collections live in the driver; tasks on any provider reach them.
--   skyrun jobs/collections.lua [--nodes N]
-- Python                                   Lua
--   cache = sky.dict("embeddings")           local cache = sky.dict("embeddings")
--   if item in cache: cache[item]            if cache:contains(item) then cache[item]
--   progress.increment(); int(progress)      progress:increment() (returns the new value)
--   queue.get(timeout=0.5) is None           queue:get(0.5) == nil
--   sky.barrier("s", n=info.total_nodes)     sky.barrier("s", info.nodes)
--   with lock: ...                           lock:with(function() ... end)
local sky = require "sky"

local nodes = 4
if arg and arg[1] == "--nodes" then nodes = tonumber(arg[2]) end

local process_with_cache = sky.compute(function(items)
  local cache = sky.dict("embeddings")
  local computed = 0
  for _, item in ipairs(sky.shard(items)) do
    if not cache:contains(item) then
      cache[item] = #item * 7  -- the "embedding"
      computed = computed + 1
    end
  end
  return computed
end)

local train_step = sky.compute(function()
  local progress = sky.counter("global_steps")
  return progress:increment()
end)

local producer = sky.compute(function(tasks)
  local queue = sky.queue("work")
  if sky.info().is_head then
    for _, t in ipairs(tasks) do queue:put(t) end
  end
  sky.barrier("filled", sky.info().nodes):wait()  -- nobody drains before the head filled it
  local results = {}
  while true do
    local task = queue:get(0.5)
    if task == nil then break end
    results[#results + 1] = task * 2
  end
  return results
end)

local synchronized_epoch = sky.compute(function(epoch)
  local info = sky.info()
  local sync = sky.barrier("epoch_sync", info.nodes)
  local loss = 1 / (epoch + info.node)
  local round = sync:wait()
  return { node = info.node, loss = loss, round = round }
end)

local safe_checkpoint = sky.compute(function(step)
  local lock = sky.lock("checkpoint_lock")
  local best = sky.dict("best")
  return lock:with(function()
    local score = step * 10 + sky.info().node
    if (best.score or -1) < score then
      best.score, best.node = score, sky.info().node
      return true
    end
    return false
  end)
end)

local pool = sky.ComputePool { nodes = nodes, output = { only = "head" } }
pool:with(function()
  local words = { "the", "plot", "was", "dull", "the", "acting", "was", "great", "plot" }
  local computed = pool:broadcast(process_with_cache(words))
  local total = 0
  for _, c in ipairs(computed) do total = total + c end
  print(string.format("cache: %d entries, computed %d times", sky.dict("embeddings"):len(), total))

  local steps = {}
  for i = 1, 20 do steps[i] = train_step() end
  steps[#steps + 1] = { stream = true }
  for _ in pool:gather(unpack(steps)) do end
  print("global steps: " .. sky.counter("global_steps"):value())

  local tasks = {}
  for i = 1, 100 do tasks[i] = i end
  local drained, sum = 0, 0
  for _, results in ipairs(pool:broadcast(producer(tasks))) do
    drained = drained + #results
    for _, v in ipairs(results) do sum = sum + v end
  end
  print(string.format("queue: %d tasks drained by %d nodes, sum %d", drained, nodes, sum))

  for epoch = 1, 2 do
    local per_node = pool:broadcast(synchronized_epoch(epoch))
    print(string.format("epoch %d: barrier round %d on all %d nodes", epoch, per_node[1].round, #per_node))
  end

  for _, won in ipairs(pool:broadcast(safe_checkpoint(3))) do assert(won ~= nil) end
  local best = sky.dict("best")
  print(string.format("best checkpoint: score %d from node %d", best.score, best.node))
end)
