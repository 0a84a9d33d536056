-- ComputePool on the local provider: run/broadcast/gather/submit/map, task isolation, errors with
-- file:line and node, dead and timed-out workers, interrupted drivers, the handshake.
local T = require "testlib"
local sky = require "sky"
local pcore = require "sky.pool.core"
local monotonic = require("sky.core").monotonic
local wire = require "sky.wire"

local here = (os.getenv("SKYRUN_SOURCE_ROOT") or ".") .. "/tests/pool"

local function pool_of(n, opts)
  opts = opts or {}
  opts.nodes = n
  return sky.ComputePool(opts)
end

local pid_task = sky.compute(function() return sky.info().pid end)

local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/cmdline", "rb")
  if not f then return false end
  local cmd = f:read("*a")
  f:close()
  return cmd:find("worker", 1, true) ~= nil
end

T.test("a value zoo goes to a worker and comes back equal", function()
  local shared = { "shared" }
  local zoo = { n = 42, f = 0.1, negzero = -0.0, inf = math.huge, nan = 0 / 0, big = 9007199254740993LL,
                s = "bytes\0\1\255", holes = { 1, nil, 3 }, a = shared, b = shared, yes = true }
  zoo.cycle = zoo
  local count = 0
  local function inc() count = count + 1 return count end
  local function get() return count end
  local pool = pool_of(1, { results_may_carry_code = true })  -- the closure comes back
  pool:with(function()
    local r = pool:run(sky.compute(function(v, f)
      -- On the worker: the zoo arrived intact, and the closures share their upvalue.
      assert(v.cycle == v and v.a == v.b and v.nan ~= v.nan and 1 / v.negzero < 0 and v.holes[2] == nil)
      f.inc() f.inc()
      return { v = v, got = f.get(), inc = f.inc }
    end)(zoo, { inc = inc, get = get }))
    T.eq(r.v.n, 42); T.eq(r.v.f, 0.1); T.eq(1 / r.v.negzero, -math.huge); T.eq(r.v.inf, math.huge)
    T.ok(r.v.nan ~= r.v.nan); T.eq(tostring(r.v.big), "9007199254740993LL"); T.eq(r.v.s, zoo.s)
    T.eq(r.v.holes[3], 3); T.eq(r.v.holes[2], nil); T.ok(r.v.a == r.v.b); T.ok(r.v.cycle == r.v); T.eq(r.v.yes, true)
    T.eq(r.got, 2)
    T.eq(r.inc(), 3, "the closure came back with the worker's upvalue value")
    T.eq(count, 0)
  end)
end)

T.test("a task carries the driver's global functions and tables it reads, not modules", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/globals.lua", [[
    local sky = require "sky"
    function scale(x) return x * SETTINGS.factor + offset() end
    function offset() return 1 end
    SETTINGS = { factor = 10 }
    local pool = sky.ComputePool {}
    pool:with(function()
      print(pool:run(sky.compute(function(x) return scale(x), string.format("%s", "fmt"), SETTINGS == _G.SETTINGS end)(4)))
      print(pool:map(function(x) return scale(x) end, { 1, 2 })[2])
      print(pool:run(sky.compute(function() return rawget(_G, "offset") ~= nil, SETTINGS.factor end)()))
    end)
  ]])
  local out, err, rc = T.skyrun({ dir .. "/globals.lua" })
  T.eq(rc, 0, err)
  T.eq(out, "41\tfmt\ttrue\n21\nfalse\t10\n")
end)

T.test("broadcast on 4 nodes returns 4 results in node order with distinct nodes", function()
  local pool = pool_of(4)
  pool:with(function()
    local r = pool:broadcast(sky.compute(function(tag) local i = sky.info() return { tag = tag, node = i.node, rank = i.rank, n = i.nodes } end)("x"))
    T.eq(#r, 4)
    for i = 1, 4 do T.eq(r[i], { tag = "x", node = i, rank = i - 1, n = 4 }) end
  end)
end)

T.test("gather of 8 sleeping tasks on 4 nodes runs in parallel", function()
  local nap = sky.compute(function(s) require("sky.pool.core").sleep(s) return sky.info().node end)
  local pool = pool_of(4)
  pool:with(function()
    pool:run(nap(0)) -- warm
    local t0 = monotonic()
    local r = { pool:gather(nap(0.25), nap(0.25), nap(0.25), nap(0.25), nap(0.25), nap(0.25), nap(0.25), nap(0.25)) }
    local wall = monotonic() - t0
    T.eq(#r, 8)
    T.ok(wall < 0.6 * 8 * 0.25, string.format("wall %.2f s, serial would be %.2f s", wall, 8 * 0.25))
  end)
end)

T.test("map over 1000 items returns them in order; unordered and return_errors work", function()
  local pool = pool_of(4)
  pool:with(function()
    local items = {}
    for i = 1, 1000 do items[i] = i end
    local r = pool:map(function(x) return x * 2 end, items)
    T.eq(#r, 1000)
    for i = 1, 1000 do if r[i] ~= 2 * i then error("item " .. i .. " is " .. tostring(r[i])) end end
    local okp, structured = pcall(pool.run, pool, sky.compute(function() error({ code = 42, why = "quota" }) end)())
    T.eq(okp, false)
    T.eq(structured.value, { code = 42, why = "quota" })
    T.eq(structured.node, 1)
    local u = pool:map(function(x) return x end, items, { ordered = false })
    table.sort(u)
    T.eq(u[1], 1); T.eq(u[1000], 1000)
    local e = pool:map(function(x) if x % 3 == 0 then error("three divides " .. x) end return x end, { 1, 2, 3, 4 },
      { return_errors = true })
    T.eq(e[1], 1); T.eq(e[4], 4)
    T.contains(tostring(e[3]), "three divides 3")
    T.raises(function() pool:map(function(x) if x == 2 then error("no two") end return x end, { 1, 2, 3 }) end, "no two")
    T.eq(#pool:map(function(x) return x end, {}), 0)
  end)
end)

T.test("submit gives futures; cancel stops a queued or running task", function()
  local pool = pool_of(1)
  pool:with(function()
    local spin = sky.compute(function() while true do end end)
    local f1 = pool:submit(spin())
    local f2 = pool:submit(sky.compute(function() return "never" end)())
    T.eq(f2:done(), false)
    T.ok(f2:cancel()); T.ok(f1:cancel())
    T.raises(function() f1:get() end, "cancelled")
    T.raises(function() f2:get() end, "cancelled")
    local f3 = pool:submit(sky.compute(function(a, b) return a + b, "two" end)(1, 2))
    local a, b = f3:get()
    T.eq(a, 3); T.eq(b, "two"); T.eq(f3:done(), true); T.eq(f3:cancel(), false)
  end)
end)

T.test("globals set by a task do not leak into the next; loaded modules stay loaded", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/counter_mod.lua", "local M = { loads = 0 } M.loads = M.loads + 1 M.hits = 0 return M")
  local pool = pool_of(1)
  pool:with(function()
    local set = sky.compute(function() package.path = dir .. "/?.lua;" .. package.path leaked_global = 42 local m = require "counter_mod" m.hits = m.hits + 1 return m.hits end)
    local get = sky.compute(function() local m = require "counter_mod" return leaked_global, m.hits, m.loads end)
    T.eq(pool:run(set()), 1)
    local g, hits, loads = pool:run(get())
    T.eq(g, nil); T.eq(hits, 1); T.eq(loads, 1)
  end)
end)

T.test("worker output streams with a node prefix, or goes to a function, or nowhere", function()
  local job = T.tmpdir() .. "/out.lua"
  T.write_file(job, [[
    local sky = require "sky"
    local pool = sky.ComputePool { nodes = 2 }
    pool:with(function()
      pool:broadcast(sky.compute(function() print("hello from", sky.info().node) io.write("partial") io.stderr:write("to stderr\n") end)())
    end)
    local lines = {}
    local quiet = sky.ComputePool { output = function(node, line, stream) lines[#lines + 1] = node .. stream .. line end }
    quiet:with(function() quiet:run(sky.compute(function() print("captured") end)()) end)
    print("got " .. table.concat(lines, ","))
    local off = sky.ComputePool { output = false }
    off:with(function() off:run(sky.compute(function() print("dropped") end)()) end)
  ]])
  local out, err, rc = T.skyrun({ job })
  T.eq(rc, 0, err)
  T.contains(out, "[node 1] hello from\t1\n")
  T.contains(out, "[node 2] hello from\t2\n")
  T.contains(out, "[node 1] partial\n")
  T.contains(err, "[node 2] to stderr\n")
  T.contains(out, "got 1stdoutcaptured")
  T.not_contains(out, "dropped")
end)

T.test("a task raising at job.lua:12 shows job.lua:12 and the node on the driver", function()
  local dir = T.tmpdir()
  T.exec("cp " .. T.shell_quote(here .. "/job.lua") .. " " .. T.shell_quote(dir .. "/job.lua"))
  local out, err, rc = T.skyrun({ "job.lua" }, { cwd = dir })
  T.eq(rc, 1)
  T.contains(err, "job.lua:12: bad input 41")
  T.contains(err, "on node 2")
  T.contains(err, "remote traceback (node 2")
  T.contains(err, "job.lua:12: in function")
end)

T.test("a worker killed with SIGKILL fails its task within 2 s (no retries) and the pool goes on", function()
  local pool = pool_of(2, { retry_on_interruption = 0 })
  pool:with(function()
    local pids = pool:broadcast(pid_task())
    local f = pool:submit(sky.compute(function() while true do end end)())
    pcore.sleep(0.1)
    local victim = f.rec.worker.node == 1 and pids[1] or pids[2]
    local t0 = monotonic()
    T.ok(pcore.signal(victim, "KILL"))
    local msg = T.raises(function() f:get() end, "worker died (killed by signal 9 (SIGKILL))")
    T.ok(monotonic() - t0 < 2, "failed within 2 s")
    T.contains(msg, "node " .. f.rec.worker.node)
    for _ = 1, 4 do T.eq(type(pool:run(pid_task())), "number") end
    local again = pool:broadcast(pid_task())
    T.eq(#again, 2)
    T.ok(again[1] ~= victim and again[2] ~= victim, "the dead worker was replaced")
  end)
end)

T.test("a segfaulting task names the signal and the pool goes on", function()
  local pool = pool_of(1)
  pool:with(function()
    local crash = sky.compute(function() return require("ffi").cast("int*", 0)[0] end)
    T.raises(function() pool:run(crash()) end, "worker died (killed by signal 11 (SIGSEGV))")
    T.eq(type(pool:run(pid_task())), "number")
  end)
end)

T.test("a driver script that raises without pool:with leaves no worker behind", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/err.lua", [[
    local sky = require "sky"
    local pool = sky.ComputePool { nodes = 2 }
    pool:open()
    local pids = {}
    for _, w in pairs(pool:workers_info()) do pids[#pids + 1] = w.pid end
    print("pids " .. table.concat(pids, " "))
    error("the driver failed")
  ]])
  local out, err, rc = T.skyrun({ dir .. "/err.lua" })
  T.eq(rc, 1)
  T.contains(err, "the driver failed")
  local pids = {}
  for p in (out:match("pids ([%d ]+)") or ""):gmatch("%d+") do pids[#pids + 1] = tonumber(p) end
  T.eq(#pids, 2, out)
  for _, p in ipairs(pids) do T.eq(alive(p), false) end
end)

T.test("a timeout fails the task and replaces the worker", function()
  local pool = pool_of(1)
  pool:with(function()
    local before = pool:run(pid_task())
    local slow = sky.compute(function() while true do end end, { timeout = 0.3, name = "spin" })
    local t0 = monotonic()
    T.raises(function() pool:run(slow()) end, "task 'spin' timed out on node 1")
    T.ok(monotonic() - t0 < 2)
    local after = pool:run(pid_task())
    T.ok(after ~= before, "a new worker")
    pcore.sleep(0.05)
    T.eq(alive(before), false, "the timed-out worker is gone")
    T.raises(function() pool:map(slow, { 1 }) end, "timed out")
  end)
end)

T.test("an interrupted driver leaves no skyrun worker process behind", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/intr.lua", [[
    local sky = require "sky"
    local pool = sky.ComputePool { nodes = 3, concurrency = 2 }
    pool:open()
    local pids = {}
    for _, f in ipairs({ pool:submit(sky.compute(function() return sky.info().pid end)()) }) do end
    for _, w in pairs(pool:workers_info()) do pids[#pids + 1] = w.pid end
    print("pids " .. table.concat(pids, " "))
    io.stdout:flush()
    pool:run(sky.compute(function() while true do end end)())
  ]])
  local script = string.format([[
    %s %s > %s/out 2>&1 & pid=$!
    for i in $(seq 100); do grep -q pids %s/out && break; sleep 0.05; done
    kill -INT $pid; wait $pid; echo "rc=$?" >> %s/out
  ]], T.shell_quote(T.skyrun_bin), T.shell_quote(dir .. "/intr.lua"), dir, dir, dir)
  T.sh(script)
  local out = T.read_file(dir .. "/out")
  T.contains(out, "interrupted!")
  local pids = {}
  for p in (out:match("pids ([%d ]+)") or ""):gmatch("%d+") do pids[#pids + 1] = tonumber(p) end
  T.eq(#pids, 6, out)
  local left = 0
  local deadline = monotonic() + 2
  repeat
    left = 0
    for _, p in ipairs(pids) do if alive(p) then left = left + 1 end end
    if left > 0 then pcore.sleep(0.05) end
  until left == 0 or monotonic() > deadline
  T.eq(left, 0, "skyrun worker processes left")
end)

T.test("a driver killed with SIGKILL takes its workers with it", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/k.lua", [[
    local sky = require "sky"
    local pool = sky.ComputePool { nodes = 2 }
    pool:open()
    local pids = {}
    for _, w in pairs(pool:workers_info()) do pids[#pids + 1] = w.pid end
    print("pids " .. table.concat(pids, " "))
    io.stdout:flush()
    require("sky.pool.core").sleep(30)
  ]])
  T.sh(string.format([[
    %s %s > %s/out 2>&1 & pid=$!
    for i in $(seq 100); do grep -q pids %s/out && break; sleep 0.05; done
    kill -KILL $pid; wait $pid
  ]], T.shell_quote(T.skyrun_bin), T.shell_quote(dir .. "/k.lua"), dir, dir))
  local out = T.read_file(dir .. "/out")
  local pids = {}
  for p in (out:match("pids ([%d ]+)") or ""):gmatch("%d+") do pids[#pids + 1] = tonumber(p) end
  T.eq(#pids, 2, out)
  local deadline = monotonic() + 2
  local left
  repeat
    left = 0
    for _, p in ipairs(pids) do if alive(p) then left = left + 1 end end
    if left > 0 then pcore.sleep(0.05) end
  until left == 0 or monotonic() > deadline
  T.eq(left, 0)
end)

T.test("unsendable values are refused before dispatch, naming the path", function()
  local pool = pool_of(1)
  pool:with(function()
    local db = { conn = io.stdout }
    local uses_db = sky.compute(function() return db end)
    T.raises(function() pool:run(uses_db()) end, "cannot send upvalue 'db' \u{2192} field 'conn': userdata (FILE*: open file)")
    local echo = sky.compute(function(x) return x end)
    T.raises(function() pool:run(echo({ co = coroutine.create(print) })) end,
      "cannot send argument #1 \u{2192} field 'co': coroutine")
    T.raises(function() pool:map(echo, { 1, io.stderr }) end, "cannot send item #2: userdata")
    T.raises(function() pool:run(function() end) end, "expected a task, got function")
    -- The worker answers unsendable results with an error instead of hanging.
    T.raises(function() pool:run(sky.compute(function() return coroutine.create(print) end)()) end,
      "cannot send result")
    T.eq(pool:run(echo("still fine")), "still fine")
    T.raises(function() pool:run(sky.compute(function() return undefined_helper_fn(1) end)()) end,
      "globals of the driver's script do not travel with a task: make 'undefined_helper_fn' a local")
  end)
end)

T.test("a worker with another skyrun version is refused naming both versions", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/old_worker.lua", [[
    local wire = require "sky.wire"
    io.stdout:write(wire.frame(1, wire.hello({ skyrun = "0.0.9", luajit = "LuaJIT 2.1.0-beta2" })))
    io.stdout:flush()
    io.stdin:read("*a")
  ]])
  local pool = sky.ComputePool { provider = sky.providers.local_ { command = { T.skyrun_bin, dir .. "/old_worker.lua" } } }
  local msg = T.raises(function() pool:open() end, "skyrun version mismatch")
  T.contains(msg, "driver runs skyrun " .. wire.versions().skyrun .. " (" .. wire.versions().luajit)
  T.contains(msg, "worker runs skyrun 0.0.9 (LuaJIT 2.1.0-beta2")
  T.write_file(dir .. "/not_a_worker.lua", "print('hello, I am a shell banner') io.stdout:flush() io.stdin:read('*a')")
  local pool2 = sky.ComputePool { provider = sky.providers.local_ { command = { T.skyrun_bin, dir .. "/not_a_worker.lua" } },
    startup_timeout = 5 }
  T.raises(function() pool2:open() end, "node 1")
  T.write_file(dir .. "/silent.lua", "io.stdin:read('*a')")
  local pool3 = sky.ComputePool { provider = sky.providers.local_ { command = { T.skyrun_bin, dir .. "/silent.lua" } },
    startup_timeout = 0.5 }
  T.raises(function() pool3:open() end, "not ready after 0.5 s (startup_timeout): node 1 (local pid")
end)

T.test("the task environment arrives over the protocol, never on a command line", function()
  local pool = pool_of(1, { env = { SKY_TEST_SECRET_ENV = "s3cr3t-value" } })
  pool:with(function()
    local v, pid = pool:run(sky.compute(function() return os.getenv("SKY_TEST_SECRET_ENV"), sky.info().pid end)())
    T.eq(v, "s3cr3t-value")
    T.not_contains(T.read_file("/proc/" .. pid .. "/cmdline"), "s3cr3t")
    T.not_contains(T.read_file("/proc/" .. pid .. "/environ"), "s3cr3t")
  end)
end)

T.test("with() closes the pool when the body raises, and the error comes through", function()
  local pool = pool_of(2)
  local pids
  local msg = T.raises(function()
    pool:with(function()
      pids = pool:broadcast(pid_task())
      error("body failed")
    end)
  end, "body failed")
  T.eq(tostring(pool):find("closed", 1, true) ~= nil, true)
  pcore.sleep(0.1)
  for _, p in ipairs(pids) do T.eq(alive(p), false) end
  T.raises(function() pool:run(pid_task()) end, "the pool is closed")
end)

T.run()
