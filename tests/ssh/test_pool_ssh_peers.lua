-- An SSH pool against an untrusted host and stray processes: a fake `skyrun` planted in the
-- host's binary cache answers with code (tests/lib/hostile_worker.lua) and the driver runs
-- nothing, reports the worker as misbehaving and goes on; a task's background children end with
-- the pool and a timeout (a killed driver: test_pool_ssh.lua); the driver sleeps while a remote
-- task sleeps.
local T = require "testlib"
local Sshd = require "sshd"
local sky = require "sky"

local q = T.shell_quote
local lib = (os.getenv("SKYRUN_SOURCE_ROOT") or ".") .. "/tests/lib"
local key = Sshd.user_key()
local server = Sshd.start { authorized = { key }, name = "peers" }
local kh = Sshd.tmpdir("kh") .. "/known_hosts"
T.write_file(kh, server:known_hosts_line() .. "\n")

local function provider()
  return sky.providers.ssh { hosts = { server.spec }, key = key.private, known_hosts = kh, quiet = true }
end



local sha = T.sh("sha256sum " .. q(T.skyrun_bin)):match("^(%x+)")
local cached = server.home .. "/.cache/skyrun/bin/" .. sha .. "/skyrun"

-- Plants a fake skyrun in the host's binary cache (where the pool finds "its" binary): the first
-- worker it starts is hostile (mode), later ones and every other use are the real skyrun.
local function plant(mode)
  local dir = Sshd.tmpdir("fake")
  local marker = dir .. "/ran-in-driver"
  T.exec("mkdir -p " .. q(cached:match("(.*)/")))
  T.write_file(cached, string.format([[#!/bin/sh
if [ "$1" = ssh-worker ] && mkdir %s 2>/dev/null; then exec %s %s %s %s; fi
exec %s "$@"
]], q(dir .. "/first"), q(T.skyrun_bin), q(lib .. "/hostile_worker.lua"), q(mode), q(marker), q(T.skyrun_bin)))
  T.exec("chmod 755 " .. q(cached))
  T.write_file(cached .. ".checked", "")
  return marker
end

local function unplant() os.remove(cached) os.remove(cached .. ".checked") end

T.test("a planted skyrun whose READY carries code runs nothing in the driver; the open fails naming the host", function()
  local marker = plant("ready-module")
  local pool = sky.ComputePool { provider = provider(), nodes = 1, startup_timeout = 30 }
  local c0 = T.cpu_seconds()
  local err = T.raises(function() pool:open() end, "worker on node 1 (ssh " .. server.spec .. ") misbehaved")
  T.contains(err, "a READY frame that is not plain data (refused to decode a module reference from untrusted bytes)")
  T.eq(T.file_exists(marker), false, "the attack ran in the driver")
  local c1 = T.cpu_seconds()
  os.execute("sleep 0.5")
  T.ok(T.cpu_seconds() - c1 < 0.2, "the driver spins after the refusal")
  T.ok(c1 - c0 < 5, "the refusal cost " .. (c1 - c0) .. " CPU seconds")
  -- the driver goes on: the next start gets a good worker
  local pool2 = sky.ComputePool { provider = provider(), nodes = 1 }
  pool2:with(function() T.eq(pool2:run(sky.compute(function() return "fine" end)()), "fine") end)
  T.eq(T.file_exists(marker), false)
  unplant()
end)

T.test("a planted skyrun answering a task with a reducer is stopped as misbehaving; the next task runs", function()
  local marker = plant("result-reducer")
  local pool = sky.ComputePool { provider = provider(), nodes = 1 }
  pool:with(function()
    local err = T.raises(function() pool:run(sky.compute(function() return 1 end, { name = "one" })()) end,
      "task 'one' failed on node 1 (ssh " .. server.spec .. ")")
    T.contains(err, "misbehaved: it sent a RESULT frame that is not plain data (refused to decode a reduced value")
    T.eq(pool:run(sky.compute(function() return "after" end)()), "after")
  end)
  T.eq(T.file_exists(marker), false, "the attack ran in the driver")
  unplant()
  T.eq(server:wait_no_processes(5), {})
end)

local background_sleep = sky.compute(function(spin)
  local p = io.popen("sleep 300 > /dev/null 2>&1 & echo $!")
  local pid = tonumber(p:read("*l"))
  p:close()
  if spin then
    local f = io.open(spin, "w") f:write(pid) f:close()
    while true do end
  end
  return pid
end, { name = "background_sleep" })

T.test("a task's background child on the host ends with the pool and with a timed-out worker", function()
  local pool = sky.ComputePool { provider = provider(), nodes = 1 }
  pool:with(function()
    local pid = pool:run(background_sleep(false))
    T.ok(os.execute("kill -0 " .. pid .. " 2>/dev/null") == 0, "the child runs while the pool does")
    local spin = sky.compute(background_sleep.fn, { timeout = 2, name = "spin" })
    local pidfile = Sshd.tmpdir("spin") .. "/pid"
    T.raises(function() pool:run(spin(pidfile)) end, "task 'spin' timed out")
    local spun = tonumber(T.read_file(pidfile))
    for _ = 1, 60 do
      if os.execute("kill -0 " .. spun .. " 2>/dev/null") ~= 0 then break end
      os.execute("sleep 0.05")
    end
    T.ok(os.execute("kill -0 " .. spun .. " 2>/dev/null") ~= 0, "sleep " .. spun .. " outlived the timed-out worker")
  end)
  T.eq(server:wait_no_processes(5), {}, "processes left on the host after the pool closed")
end)

T.test("the driver uses almost no CPU while a remote task sleeps", function()
  local pool = sky.ComputePool { provider = provider(), nodes = 1 }
  pool:with(function()
    pool:run(sky.compute(function() return 1 end)())
    local c0 = T.cpu_seconds()
    pool:run(sky.compute(function() require("sky.pool.core").sleep(3) end)())
    local used = T.cpu_seconds() - c0
    -- 4.6 CPU-s for a 10 s sleep before (a busy wait); the local pool uses none
    T.ok(used < 0.3, "the driver spent " .. used .. " CPU seconds while the task slept 3 s")
  end)
end)

T.run()
