-- Skyward's runtime API on the local provider: sky.info()'s fields, sky.shard, run/submit with a
-- target, gather{stream = true}, output = {only = "head"}.
local T = require "testlib"
local sky = require "sky"

local info_task = sky.compute(function() return sky.info() end)

T.test("sky.info() in a task has is_head, local_rank, job_id and peers; node counts from 1", function()
  local pool = sky.ComputePool { nodes = 3, concurrency = 2, output = false }
  pool:with(function()
    local per_node = pool:broadcast(info_task())
    T.eq(#per_node, 3)
    for i, info in ipairs(per_node) do
      T.eq(info.node, i)
      T.eq(info.nodes, 3)
      T.eq(info.slot, 1, "broadcast runs on each node's first worker")
      T.eq(info.local_rank, 0)
      T.eq(info.rank, (i - 1) * 2)
      T.eq(info.is_head, i == 1)
      T.eq(info.job_id, per_node[1].job_id)
      T.eq(#info.peers, 3)
      T.eq(info.peers[i], { node = i, address = "127.0.0.1" })
    end
    T.ok(per_node[1].job_id:find(pool.name, 1, true) == 1, per_node[1].job_id)
    -- every worker, second slots included: one head, local ranks 0 and 1 on each node
    local all = pool:map(function() return sky.info() end, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, { batch = 1 })
    local heads = {}
    for _, info in ipairs(all) do
      T.eq(info.local_rank, info.slot - 1)
      if info.is_head then
        heads[info.pid] = true
        T.eq({ info.node, info.slot }, { 1, 1 })
      end
    end
    T.ok(next(heads) == nil or next(heads, next(heads)) == nil, "one head worker at most")
  end)
  local second = sky.ComputePool { nodes = 1, output = false }
  local a = second:with(function() return second:run(info_task()).job_id end)
  T.ok(a ~= nil and a ~= pool.job_id, "each pool run has its own job_id")
  local driver = sky.info()
  T.eq({ driver.role, driver.node, driver.is_head }, { "driver", 0, false })
end)

T.test("sky.shard gives each node every nodes-th item, or equal blocks with drop_last; shuffled alike", function()
  local items = {}
  for i = 1, 10 do items[i] = i * 10 end
  T.eq(sky.shard(items, { node = 1, nodes = 3 }), { 10, 40, 70, 100 })
  T.eq(sky.shard(items, { node = 3, nodes = 3 }), { 30, 60, 90 })
  T.eq(sky.shard(items, { node = 2, nodes = 3, drop_last = true }), { 40, 50, 60 })
  local labels = { "a", "b", "c", "d", "e", "f", "g", "h", "i", "j" }
  local x, y = sky.shard(items, labels, { node = 2, nodes = 2, shuffle = true, seed = 7 })
  T.eq(#x, 5)
  for k = 1, 5 do T.eq(labels[x[k] / 10], y[k], "x and y stay aligned") end
  -- the shards of every node cover the items exactly once
  local seen = {}
  for node = 1, 3 do
    for _, v in ipairs(sky.shard(items, { node = node, nodes = 3, shuffle = true, seed = 7 })) do
      T.eq(seen[v], nil)
      seen[v] = true
    end
  end
  for i = 1, 10 do T.ok(seen[i * 10], "item " .. i) end
  T.raises(function() sky.shard(items) end, "outside a task, pass {node = i, nodes = n}")
  T.raises(function() sky.shard(items, { node = 4, nodes = 3 }) end, "node must be 1 to nodes (got node 4 of 3)")
  T.raises(function() sky.shard(items, { node = 1, nodes = 2, shufle = true }) end, "did you mean 'shuffle'")
  T.raises(function() sky.shard(5, { node = 1, nodes = 2 }) end, "argument #1 must be a list or a datasets.Dataset")
end)

T.test("sky.shard in tasks on 3 nodes splits a list and a dataset with nothing lost", function()
  local pool = sky.ComputePool { nodes = 3, output = false }
  pool:with(function()
    local parts = pool:broadcast(sky.compute(function(n)
      local datasets = require "datasets"
      local list = {}
      for i = 1, n do list[i] = i end
      local ds = datasets.Dataset.from_dict { id = list }
      local mine = sky.shard(ds, { shuffle = true, seed = 1 })
      local ids = {}
      for i = 1, #mine do ids[i] = mine[i].id end
      return { list = sky.shard(list), ds = ids }
    end)(20))
    local from_list, from_ds = {}, {}
    for _, p in ipairs(parts) do
      for _, v in ipairs(p.list) do from_list[#from_list + 1] = v end
      for _, v in ipairs(p.ds) do from_ds[#from_ds + 1] = v end
    end
    table.sort(from_list)
    table.sort(from_ds)
    local all = {}
    for i = 1, 20 do all[i] = i end
    T.eq(from_list, all)
    T.eq(from_ds, all)
    T.eq(parts[2].list, { 2, 5, 8, 11, 14, 17, 20 })
  end)
end)

T.test("pool:run and submit with target = 'head' or a node run there", function()
  local pool = sky.ComputePool { nodes = 3, concurrency = 2, output = false }
  pool:with(function()
    local node_of = sky.compute(function() return sky.info().node end)
    T.eq(pool:run(node_of(), { target = "head" }), 1)
    for _ = 1, 3 do T.eq(pool:run(node_of(), { target = 3 }), 3) end
    local fs = {}
    for i = 1, 4 do fs[i] = pool:submit(node_of(), { target = 2 }) end
    for i = 1, 4 do T.eq(fs[i]:get(), 2) end
    T.raises(function() pool:run(node_of(), { target = 4 }) end, "pool:run: no node 4 (the pool's nodes are 1 to 3)")
    T.raises(function() pool:run(node_of(), { target = "tail" }) end, 'target must be "head" or a node number')
    T.raises(function() pool:run(node_of(), { taget = 1 }) end, "did you mean 'target'")
  end)
end)

T.test("gather{stream = true} yields results as the tasks finish; ordered = true keeps the given order", function()
  local pool = sky.ComputePool { nodes = 3, output = false }
  pool:with(function()
    local nap = sky.compute(function(s, v) require("sky.pool.core").sleep(s) return v end)
    local got = {}
    for value, index in pool:gather(nap(0.6, "slow"), nap(0.05, "fast"), nap(0.3, "middle"), { stream = true }) do
      got[#got + 1] = { value, index }
    end
    T.eq(got, { { "fast", 2 }, { "middle", 3 }, { "slow", 1 } })
    got = {}
    for value in pool:gather(nap(0.3, "a"), nap(0.05, "b"), { stream = true, ordered = true }) do got[#got + 1] = value end
    T.eq(got, { "a", "b" })
    local boom = sky.compute(function() error("boom") end)
    local it = pool:gather(nap(0.01, "ok"), boom(), { stream = true, ordered = true })
    T.eq(it(), "ok")
    T.raises(function() it() end, "boom")
    T.eq(#{ pool:gather(nap(0, 1), nap(0, 2)) }, 2, "without options gather returns the values")
  end)
end)

T.test("output = {only = 'head'} prints stdout of the head only; stderr of every node shows", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/job.lua", [[
    local sky = require "sky"
    local pool = sky.ComputePool { nodes = 3, output = { only = "head" } }
    pool:with(function()
      pool:broadcast(sky.compute(function()
        print("out from " .. sky.info().node)
        io.stderr:write("err from " .. sky.info().node .. "\n")
      end)())
    end)
  ]])
  local out, err, rc = T.skyrun({ dir .. "/job.lua" })
  T.eq(rc, 0, err)
  T.eq(out, "[node 1] out from 1\n")
  for i = 1, 3 do T.contains(err, "[node " .. i .. "] err from " .. i) end
  T.raises(function() sky.ComputePool { nodes = 2, output = { only = 3 } } end, 'output.only must be "head", a node number (1 to 2)')
  T.raises(function() sky.ComputePool { output = { onyl = "head" } } end, "did you mean 'only'")
  T.write_file(dir .. "/job2.lua", [[
    local sky = require "sky"
    for _, only in ipairs { 3, function(info) return info.node == 2 end } do
      local pool = sky.ComputePool { nodes = 3, output = { only = only } }
      pool:with(function() pool:broadcast(sky.compute(function() print("hi") end)()) end)
    end
  ]])
  out, err, rc = T.skyrun({ dir .. "/job2.lua" })
  T.eq(rc, 0, err)
  T.eq(out, "[node 3] hi\n[node 2] hi\n")
end)

T.run()
