-- Retries on interruption: a task, or a map batch, whose worker died runs again on the replacement
-- (or another worker) up to retry_on_interruption times; every task and item completes once, none
-- is lost. Each run appends a line to a log file, so the tests count how often each one ran.
local T = require "testlib"
local sky = require "sky"
local pcore = require "sky.pool.core"
local monotonic = require("sky.core").monotonic

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- Lines of the log as { {what, id, pid}, ... }.
local function runs(log)
  local out = {}
  if not exists(log) then return out end
  for what, id, pid in T.read_file(log):gmatch("(%a+) (%d+) (%d+)\n") do
    out[#out + 1] = { what = what, id = tonumber(id), pid = tonumber(pid) }
  end
  return out
end

local function count_by_id(log)
  local c = {}
  for _, r in ipairs(runs(log)) do c[r.id] = (c[r.id] or 0) + 1 end
  return c
end

-- Appends "<what> <id> <pid>" to the log (one write with O_APPEND: lines never interleave).
local function log_run(log, what, id)
  local f = assert(io.open(log, "a"))
  f:write(what, " ", id, " ", require("sky.pool.core").getpid(), "\n")
  f:close()
end

-- Starts, then waits until the gate file exists.
local gated = sky.compute(function(log, gate, id)
  log_run(log, "start", id)
  local pc = require "sky.pool.core"
  while not io.open(gate, "rb") do pc.sleep(0.01) end
  return id, pc.getpid()
end, { name = "gated" })

local function wait_until(pred, what)
  local t0 = monotonic()
  while not pred() do
    if monotonic() - t0 > 20 then error("timed out waiting for " .. what, 2) end
    pcore.sleep(0.01)
  end
end

T.test("a task whose worker is SIGKILLed mid-task runs once more on the replacement; none is lost", function()
  local dir = T.tmpdir()
  local log, gate = dir .. "/log", dir .. "/gate"
  local pool = sky.ComputePool { nodes = 2, output = false }
  pool:with(function()
    local futures = {}
    for id = 1, 4 do futures[id] = pool:submit(gated(log, gate, id)) end
    -- Tasks 1 and 2 run (one per worker), 3 and 4 wait in the queue.
    wait_until(function() for _, f in ipairs(futures) do f:done() end return #runs(log) == 2 end, "two tasks to start")
    local first = runs(log)[1]
    T.ok(pcore.signal(first.pid, "KILL"))
    wait_until(function() for _, f in ipairs(futures) do f:done() end return #runs(log) >= 3 end, "the rerun")
    T.write_file(gate, "")
    for id = 1, 4 do
      local got, pid = futures[id]:get()
      T.eq(got, id)
      T.ok(pid ~= first.pid, "no result comes from the killed worker")
    end
    local counts = count_by_id(log)
    for id = 1, 4 do T.eq(counts[id], id == first.id and 2 or 1, "runs of task " .. id) end
    local killed_runs = 0
    for _, r in ipairs(runs(log)) do if r.pid == first.pid then killed_runs = killed_runs + 1 end end
    T.eq(killed_runs, 1, "the killed worker ran one task")
  end)
end)

T.test("a map batch whose worker is SIGKILLed mid-map is rerun; every item comes back once", function()
  local dir = T.tmpdir()
  local log, marker = dir .. "/log", dir .. "/killed"
  local pool = sky.ComputePool { nodes = 2, output = false }
  pool:with(function()
    local items = {}
    for i = 1, 40 do items[i] = i end
    local results = pool:map(function(i)
      log_run(log, "item", i)
      if i == 10 and not io.open(marker, "rb") then
        io.open(marker, "wb"):close()
        local pc = require "sky.pool.core"
        pc.signal(pc.getpid(), "KILL")
      end
      return i * 10
    end, items, { batch = 4 })
    T.eq(#results, 40)
    for i = 1, 40 do T.eq(results[i], i * 10, "item " .. i) end
    -- Batch 9..12 died at item 10: 9 and 10 ran twice, 11 and 12 only after the retry; a batch
    -- queued behind it on the same worker had not started, so it ran once, like all the others.
    local counts = count_by_id(log)
    for i = 1, 40 do T.eq(counts[i], (i == 9 or i == 10) and 2 or 1, "runs of item " .. i) end
    -- The pool still has two workers.
    T.eq(#pool:broadcast(sky.compute(function() return sky.info().pid end)()), 2)
  end)
end)

T.test("broadcast reruns a node's task on that node's replacement", function()
  local dir = T.tmpdir()
  local marker = dir .. "/killed"
  local pool = sky.ComputePool { nodes = 3, output = false }
  pool:with(function()
    local per_node = pool:broadcast(sky.compute(function(path)
      local pc = require "sky.pool.core"
      if sky.info().node == 2 and not io.open(path, "rb") then
        io.open(path, "wb"):close()
        pc.signal(pc.getpid(), "KILL")
      end
      return sky.info().node
    end)(marker))
    T.eq(per_node, { 1, 2, 3 })
  end)
end)

T.test("retry_on_interruption = 0 fails the task at once; past the retries it fails naming the count", function()
  local dir = T.tmpdir()
  local log = dir .. "/log"
  local suicide = function(path, id)
    log_run(path, "start", id)
    local pc = require "sky.pool.core"
    pc.signal(pc.getpid(), "KILL")
  end
  local pool = sky.ComputePool { nodes = 1, output = false, retry_on_interruption = 2 }
  pool:with(function()
    local once = sky.compute(suicide, { name = "once", retry_on_interruption = 0 })
    local err = T.raises(function() pool:run(once(log, 1)) end, "task 'once' failed on node 1")
    T.contains(err, "worker died (killed by signal 9 (SIGKILL))")
    T.eq(count_by_id(log)[1], 1)
    local thrice = sky.compute(suicide, { name = "thrice" })
    err = T.raises(function() pool:run(thrice(log, 2)) end, "worker died (killed by signal 9 (SIGKILL)); it ran 3 times (retry_on_interruption = 2)")
    T.eq(count_by_id(log)[2], 3)
    -- A map with no retries loses no item silently: each item of the dead batch is an error.
    local lossy = sky.compute(function(i) if i == 2 then suicide(log, 100 + i) end return i end,
      { retry_on_interruption = 0 })
    local res = pool:map(lossy, { 1, 2, 3 }, { batch = 3, return_errors = true })
    for i = 1, 3 do
      T.contains(tostring(res[i]), "worker died (killed by signal 9 (SIGKILL))", "item " .. i)
    end
    -- Errors raised by a task and timeouts are not interruptions: they run once.
    local raising = sky.compute(function(path) log_run(path, "start", 3) error("bad input") end)
    T.raises(function() pool:run(raising(log)) end, "bad input")
    local slow = sky.compute(function(path) log_run(path, "start", 4) while true do end end, { timeout = 0.3 })
    T.raises(function() pool:run(slow(log)) end, "timed out")
    local counts = count_by_id(log)
    T.eq({ counts[3], counts[4] }, { 1, 1 })
    T.eq(type(pool:run(sky.compute(function() return sky.info().pid end)())), "number")
  end)
end)

T.test("retry_on_interruption is checked", function()
  T.raises(function() sky.ComputePool { retry_on_interruption = -1 } end, "retry_on_interruption must be 0 or more (got -1)")
  T.raises(function() sky.compute(function() end, { retry_on_interruption = 1.5 }) end, "retry_on_interruption")
end)

T.run()
