-- Distributed collections (sky.dict, counter, queue, barrier, lock) held by the driver: 4 nodes
-- hammering them lose nothing; blocking operations wait and time out; a dead worker's lock is freed.
local T = require "testlib"
local sky = require "sky"

T.test("4 nodes hammering a counter and a queue lose nothing", function()
  local pool = sky.ComputePool { nodes = 4, output = false }
  pool:with(function()
    local per_node = pool:broadcast(sky.compute(function(n)
      local node = sky.info().node
      local hits, jobs, done = sky.counter("hits"), sky.queue("jobs"), sky.queue("done")
      local last
      for i = 1, n do
        last = hits:increment()
        jobs:put({ node = node, i = i })
      end
      sky.barrier("filled", 4):wait()
      -- every node drains the shared queue: each item is taken exactly once
      local taken = 0
      while true do
        local item = jobs:get(0)
        if item == nil then break end
        done:put(item.node * 100000 + item.i)
        taken = taken + 1
      end
      return { last = last, taken = taken }
    end)(300))
    T.eq(sky.counter("hits"):value(), 1200)
    local taken, seen = 0, {}
    for _, r in ipairs(per_node) do
      T.ok(r.last <= 1200)
      taken = taken + r.taken
    end
    T.eq(taken, 1200)
    local done = sky.queue("done")
    T.eq(done:len(), 1200)
    for _ = 1, 1200 do
      local v = done:get(0)
      T.eq(seen[v], nil, "item " .. tostring(v) .. " once")
      seen[v] = true
    end
    for node = 1, 4 do for i = 1, 300 do T.ok(seen[node * 100000 + i], node .. "/" .. i) end end
    T.eq(sky.queue("jobs"):empty(), true)
  end)
end)

T.test("a lock makes read-modify-write of a dict safe across 4 nodes; dict operations", function()
  local pool = sky.ComputePool { nodes = 4, output = false }
  pool:with(function()
    pool:broadcast(sky.compute(function()
      local d, lock = sky.dict("state"), sky.lock("state")
      for _ = 1, 100 do
        lock:with(function() d.total = (d.total or 0) + 1 end)
      end
      d["node" .. sky.info().node] = { done = true, list = { 1, 2, 3 } }
    end)())
    local d = sky.dict("state")
    T.eq(d.total, 400, "no update lost under the lock")
    T.eq(d:len(), 5)
    T.eq(d:keys(), { "node1", "node2", "node3", "node4", "total" })
    T.eq(d.node3, { done = true, list = { 1, 2, 3 } })
    T.eq(d:get("missing", "default"), "default")
    T.eq(d:contains("node1"), true)
    T.eq(d:pop("node1"), { done = true, list = { 1, 2, 3 } })
    T.eq(d:contains("node1"), false)
    d:update { a = 1, [2] = "two" }
    T.eq(d:setdefault("a", 5), 1)
    T.eq(d:setdefault("b", 5), 5)
    T.eq(d:items().a, 1)
    T.eq(d:items()[2], "two")
    d.a = nil
    T.eq(d.a, nil)
    d:clear()
    T.eq(d:len(), 0)
    T.raises(function() d[{}] = 1 end, "keys must be strings, numbers or booleans (got table)")
  end)
end)

T.test("barrier, queue get and lock acquire wait; they time out; a dead worker's lock is released", function()
  local pool = sky.ComputePool { nodes = 3, output = false, retry_on_interruption = 0 }
  pool:with(function()
    -- a barrier releases all three together, in rounds
    local rounds = pool:broadcast(sky.compute(function()
      local b = sky.barrier("b", 3)
      if sky.info().node == 3 then require("sky.pool.core").sleep(0.3) end
      local t0 = require("sky.core").monotonic()
      local r1 = b:wait()
      return { r1, b:wait(), require("sky.core").monotonic() - t0 }
    end)())
    for node = 1, 3 do T.eq({ rounds[node][1], rounds[node][2] }, { 1, 2 }) end
    T.ok(rounds[1][3] >= 0.25, "node 1 waited for node 3")
    -- a blocking get is answered by a put from another task
    local getter = pool:submit(sky.compute(function() return sky.queue("q"):get(10) end)())
    require("sky.pool.core").sleep(0.2)
    T.eq(getter:done(), false)
    sky.queue("q"):put("hello")
    T.eq(getter:get(), "hello")
    local t0 = require("sky.core").monotonic()
    T.eq(pool:run(sky.compute(function() return sky.queue("empty"):get(0.2) end)()), nil)
    T.ok(require("sky.core").monotonic() - t0 >= 0.2)
    -- a lock held by a worker that dies goes to the next one waiting
    local holder = pool:submit(sky.compute(function()
      sky.lock("l"):acquire()
      sky.queue("held"):put(true)
      local pc = require "sky.pool.core"
      pc.sleep(0.2)
      pc.signal(pc.getpid(), "KILL")
    end)())
    T.eq(sky.queue("held"):get(10), true)
    local waiter = pool:submit(sky.compute(function()
      local l = sky.lock("l")
      local got = l:acquire(10)
      local again = select(2, pcall(l.acquire, l))
      l:release()
      return got, again
    end)())
    T.raises(function() holder:get() end, "worker died")
    local got, again = waiter:get()
    T.eq(got, true)
    T.contains(again, "sky.lock 'l': already held by this worker")
    sky.lock("l"):acquire()  -- the driver holds it now
    T.raises(function() pool:run(sky.compute(function() return sky.lock("l", 0.1):acquire() end)()) end,
      "sky.lock 'l': not acquired within 0.1 s")
    T.raises(function() pool:run(sky.compute(function() sky.lock("other"):release() end)()) end,
      "sky.lock 'other': not held by this worker")
    T.raises(function() pool:run(sky.compute(function() sky.barrier("b", 2):wait() end)()) end,
      "sky.barrier 'b': made for 3 parties, not 2")
  end)
  T.raises(function() sky.counter("x"):value() end, "no open pool")
  T.raises(function() sky.barrier("x", 0) end, "n must be a whole number of parties")
end)

T.run()
