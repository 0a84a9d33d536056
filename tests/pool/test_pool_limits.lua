-- The local pool against stray processes, floods and bad settings: a task's children never
-- outlive its worker (pool close, timeout, Ctrl-C, a killed driver); a huge output line costs
-- linear time and bounded memory, and the driver sleeps while a task does; too many nodes, a
-- process limit and failing spawns are clear errors, never a spin; invalid timeouts and env
-- entries are refused naming the option or the key.
local T = require "testlib"
local sky = require "sky"
local pcore = require "sky.pool.core"
local monotonic = require("sky.core").monotonic

local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "rb")
  if not f then return false end
  local stat = f:read("*a")
  f:close()
  return not stat:match("^%d+ %b() Z")  -- a zombie is gone for our purpose
end

local function wait_gone(pid, seconds)
  local deadline = monotonic() + seconds
  while alive(pid) and monotonic() < deadline do pcore.sleep(0.05) end
  return not alive(pid)
end


local function peak_rss_mb()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmHWM:%s+(%d+)")
    if kb then return tonumber(kb) / 1024 end
  end
end

-- A task that starts `sleep` in the background (as a shell would) and returns its pid.
local background_sleep = sky.compute(function(spin)
  local p = io.popen("sleep 300 > /dev/null 2>&1 & echo $!")
  local pid = tonumber(p:read("*l"))
  p:close()
  if spin then
    print("pid " .. pid)
    io.stdout:flush()
    while true do end
  end
  return pid
end, { name = "background_sleep" })

T.test("a task's background child ends with the pool", function()
  local pool = sky.ComputePool {}
  local pid
  pool:with(function() pid = pool:run(background_sleep(false)) end)
  T.ok(pid and pid > 0)
  T.ok(wait_gone(pid, 3), "sleep " .. pid .. " outlived the pool")
end)

T.test("a task's background child ends with its worker when the task times out", function()
  local pid
  local pool = sky.ComputePool { output = function(_, line) pid = tonumber(line:match("^pid (%d+)")) or pid end }
  pool:with(function()
    local spin = sky.compute(background_sleep.fn, { timeout = 1, name = "spin" })
    T.raises(function() pool:run(spin(true)) end, "task 'spin' timed out")
    T.ok(pid, "the task printed its child's pid")
    T.ok(wait_gone(pid, 3), "sleep " .. pid .. " outlived the timed-out worker")
    T.eq(type(pool:run(sky.compute(function() return 1 end)())), "number")
  end)
end)

-- Starts a driver script running a task that leaves `sleep` behind and spins; signal: what
-- ends the driver once the task printed its child's pid. Returns the child's pid and the output.
local function driver_with_child(signal)
  local dir = T.tmpdir()
  T.write_file(dir .. "/driver.lua", [[
    local sky = require "sky"
    local pool = sky.ComputePool {}
    pool:open()
    pool:run(sky.compute(function()
      local p = io.popen("sleep 300 > /dev/null 2>&1 & echo $!")
      print("pid " .. p:read("*l")) p:close() io.stdout:flush()
      while true do end
    end)())
  ]])
  T.sh(string.format([[
    %s %s > %s/out 2>&1 & pid=$!
    for i in $(seq 200); do grep -q "pid " %s/out && break; sleep 0.05; done
    kill -%s $pid; wait $pid; echo "rc=$?" >> %s/out
  ]], T.shell_quote(T.skyrun_bin), T.shell_quote(dir .. "/driver.lua"), dir, dir, signal, dir))
  local out = T.read_file(dir .. "/out")
  return tonumber(out:match("pid (%d+)")), out
end

T.test("a task's background child ends when the driver is interrupted (Ctrl-C)", function()
  local pid, out = driver_with_child("INT")
  T.ok(pid, out)
  T.contains(out, "interrupted!")
  T.ok(wait_gone(pid, 3), "sleep " .. pid .. " outlived the interrupted driver")
end)

T.test("a task's background child ends when the driver is killed with SIGKILL", function()
  local pid, out = driver_with_child("KILL")
  T.ok(pid, out)
  T.ok(wait_gone(pid, 3), "sleep " .. pid .. " outlived the killed driver")
end)

T.test("a 64 MB output line costs linear time and bounded driver memory", function()
  local got, pieces, longest = 0, 0, 0
  local pool = sky.ComputePool { output = function(_, line)
    got = got + #line
    pieces = pieces + 1
    longest = math.max(longest, #line)
  end }
  pool:with(function()
    local rss0, cpu0 = peak_rss_mb(), T.cpu_seconds()
    pool:run(sky.compute(function()
      local chunk = string.rep("x", 1048576)
      for _ = 1, 64 do io.write(chunk) end
      io.write("\nend\n")
      io.stdout:flush()
    end)())
    local cpu = T.cpu_seconds() - cpu0
    T.eq(got, 64 * 1048576 + 3)
    T.ok(longest <= 1048576 + 65536, "a piece of " .. longest .. " bytes")
    T.ok(pieces >= 64, "the line arrived in pieces")
    -- quadratic concatenation took 6 s of CPU for 32 MB (and 700 MB of memory); linear is well
    -- under a second here
    T.ok(cpu < 8, "the driver spent " .. cpu .. " CPU seconds on the line")
    T.ok(peak_rss_mb() - rss0 < 256, "driver peak RSS grew by " .. (peak_rss_mb() - rss0) .. " MB")
  end)
end)

T.test("a printed long line keeps its bytes in order, and a secret split across pieces is still masked", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/long.lua", [[
    local sky = require "sky"
    local pool = sky.ComputePool { plugins = { { name = "masks", secrets = { "hf_LongLineSecretToken123" } } } }
    pool:with(function()
      pool:run(sky.compute(function()
        -- the token straddles the 1 MiB piece boundary
        io.write(string.rep("a", 1048576 - 10), "hf_LongLineSecretToken123", string.rep("b", 100), "\n")
        print("next line")
      end)())
    end)
  ]])
  local out, err, rc = T.skyrun({ dir .. "/long.lua" })
  T.eq(rc, 0, err)
  T.not_contains(out, "LongLineSecret")
  local line = out:match("%[node 1%] (a+%*%*%*b+)\n")
  T.ok(line, "one printed line with the token masked")
  T.eq(#line, 1048576 - 10 + 3 + 100)
  T.contains(out, "\n[node 1] next line\n")
end)

T.test("the driver uses no CPU while a task sleeps", function()
  local pool = sky.ComputePool {}
  pool:with(function()
    local cpu0 = T.cpu_seconds()
    pool:run(sky.compute(function() require("sky.pool.core").sleep(2) end)())
    T.ok(T.cpu_seconds() - cpu0 < 0.3, "the driver spent " .. (T.cpu_seconds() - cpu0) .. " CPU seconds waiting")
  end)
end)

T.test("a million nodes is refused at once with the limit", function()
  local t0 = monotonic()
  T.raises(function() sky.ComputePool { nodes = 1e6 } end,
    "ComputePool: nodes x concurrency = 1000000 workers, more than one pool runs (4096)")
  T.raises(function() sky.ComputePool { nodes = 64, concurrency = 128 } end, "8192 workers")
  T.ok(monotonic() - t0 < 1)
end)

T.test("under a process limit, too many local workers is a clear error, not a spin", function()
  local dir = T.tmpdir()
  T.exec("chmod 755 " .. T.shell_quote(dir))
  T.write_file(dir .. "/many.lua", [[
    local sky = require "sky"
    local ok, err = pcall(function() sky.ComputePool { nodes = 200 }:open() end)
    print(ok, err)
  ]])
  -- an unprivileged user of its own (root ignores RLIMIT_NPROC), 40 processes at most
  local uid = 40000 + math.random(20000)
  local t0 = monotonic()
  local out, err = T.sh(string.format("cd %s && setpriv --reuid=%d --regid=%d --clear-groups prlimit --nproc=40 %s many.lua",
    T.shell_quote(dir), uid, uid, T.shell_quote(T.skyrun_bin)))
  T.contains(out, "false", err)
  T.contains(out, "200 local workers need about 400 processes, but this user may start about")
  T.contains(out, "(ulimit -u 40;")
  T.ok(monotonic() - t0 < 20, "it took " .. (monotonic() - t0) .. " s")
end)

T.test("a worker that cannot start stops the pool's start at once, naming the node", function()
  local started = 0
  local failing = setmetatable({ name = "failing" }, { __index = {
    spawn = function(_, node)
      started = started + 1
      if node == 3 then error("cannot start a worker process: Resource temporarily unavailable", 0) end
      return require("sky.providers").local_ {}:spawn(node)
    end,
  } })
  local pool = sky.ComputePool { provider = failing, nodes = 50 }
  local t0 = monotonic()
  T.raises(function() pool:open() end, "cannot start the worker of node 3: cannot start a worker process: Resource temporarily unavailable")
  T.eq(started, 3, "no spawn after the first failure")
  T.ok(monotonic() - t0 < 10)
end)

T.test("invalid timeouts are refused naming the option and the value", function()
  local f = function() end
  T.raises(function() sky.compute(f, { timeout = 0 / 0 }) end,
    "option 'timeout' to 'sky.compute' must be a positive number of seconds (got nan)")
  T.raises(function() sky.compute(f, { timeout = -1 }) end, "(got -1)")
  T.raises(function() sky.compute(f, { timeout = 0 }) end, "(got 0)")
  T.raises(function() sky.compute(f, { timeout = math.huge }) end, "(got inf)")
  T.raises(function() sky.compute(f, { timeout = "10" }) end, "(got string)")
  T.raises(function() sky.ComputePool { startup_timeout = 0 / 0 } end, "option 'startup_timeout' to 'ComputePool' must be a positive number of seconds")
  T.raises(function() sky.providers.ssh { hosts = { "h" }, connect_timeout = 0 / 0 } end, "option 'connect_timeout'")
  T.raises(function() sky.providers.ssh { hosts = { "h" }, dead_after = -5 } end, "option 'dead_after'")
  T.raises(function() sky.plugins.torch { timeout = 0 / 0 } end, "timeout must be a positive number of seconds")
  T.raises(function() sky.plugins.torch { timeout = math.huge } end, "timeout must be a positive number of seconds")
  T.eq(sky.compute(f, { timeout = 0.5 }).timeout, 0.5)
end)

T.test("env entries that are not strings, or keys with '=', are refused naming the key", function()
  T.raises(function() sky.ComputePool { env = { A = {} } } end, 'ComputePool: env["A"] must be a string, number or boolean (got table)')
  T.raises(function() sky.ComputePool { env = { ["A=B"] = "x" } } end, "ComputePool: env key \"A=B\" is not a variable name (it contains '=')")
  T.raises(function() sky.ComputePool { env = { [""] = "x" } } end, 'env key "" is not a variable name')
  T.raises(function() sky.ComputePool { env = { A = "a\0b" } } end, 'env["A"] contains a NUL byte')
  T.raises(function() sky.ComputePool { env = { [1] = "x" } } end, "env key 1 is not a variable name")
  T.raises(function() sky.Image { env = { B = function() end } } end, 'sky.Image: env["B"] must be a string, number or boolean (got function)')
  T.raises(function() sky.Image { env = { ["A-B"] = "x" } } end, 'sky.Image: env key "A-B" is not a variable name')
  local pool = sky.ComputePool { env = { N = 3, FLAG = true, S = "s" } }
  pool:with(function()
    T.eq({ pool:run(sky.compute(function() return os.getenv("N"), os.getenv("FLAG"), os.getenv("S") end)()) }, { "3", "true", "s" })
  end)
end)

T.run()
