-- ComputePool over sky.providers.ssh on a loopback sshd: tasks run on the host, the second pool
-- start skips the upload, closing the pool or killing the driver leaves no worker on the host,
-- and the HF token travels only inside the protocol.
local T = require "testlib"
local Sshd = require "sshd"
local sky = require "sky"

local q = T.shell_quote
local key = Sshd.user_key()
local server = Sshd.start { authorized = { key }, name = "pool" }
local kh = Sshd.tmpdir("kh") .. "/known_hosts"
T.write_file(kh, server:known_hosts_line() .. "\n")

local function provider(extra)
  local o = { hosts = { server.spec }, key = key.private, known_hosts = kh, quiet = true }
  for k, v in pairs(extra or {}) do o[k] = v end
  return sky.providers.ssh(o)
end

local function wait_for(pred, seconds)
  for _ = 1, math.floor(seconds / 0.05) do
    if pred() then return true end
    os.execute("sleep 0.05")
  end
  return pred()
end

T.test("tasks run on the ssh host; the second pool start does not upload the binary again", function()
  local p1 = provider()
  local pool = sky.ComputePool { provider = p1, nodes = 1 }
  pool:with(function()
    local sum, home, node = pool:run(sky.compute(function(a, b) return a + b, os.getenv("HOME"), sky.info().node end)(2, 3))
    T.eq({ sum, home, node }, { 5, server.home, 1 })
  end)
  T.eq(p1:uploaded(1), true)
  local p2 = provider()
  local pool2 = sky.ComputePool { provider = p2, nodes = 1, concurrency = 2 }
  pool2:with(function()
    T.eq(pool2:run(sky.compute(function() return "again" end)()), "again")
    -- the driver's collections reach workers on the host through their ssh channels
    local r = pool2:map(function(i) sky.dict("seen")[i] = true return sky.counter("n"):increment() end, { 1, 2, 3, 4 })
    T.eq(sky.counter("n"):value(), 4)
    T.eq(sky.dict("seen"):keys(), { 1, 2, 3, 4 })
    T.eq(#r, 4)
  end)
  T.eq(p2:uploaded(1), false, "the second start found the binary in ~/.cache/skyrun/bin")
  T.eq(T.sh("ls " .. q(server.home .. "/.cache/skyrun/bin")):gsub("%s+$", ""):len(), 64)
end)

T.test("workdir sets the workers' folder; nodes may not exceed the hosts; options are checked", function()
  local pool = sky.ComputePool { provider = provider { workdir = "~/runs/a b" }, nodes = 1 }
  pool:with(function()
    local f = sky.compute(function() local p = io.popen("pwd") local d = p:read("*l") p:close() return d end)
    T.eq(pool:run(f()), server.home .. "/runs/a b")
  end)
  T.raises(function() sky.ComputePool { provider = provider(), nodes = 2 }:open() end,
    "sky.providers.ssh: nodes=2 but only 1 host is given")
  T.raises(function() sky.providers.ssh { hosts = {} } end, "option 'hosts' must list at least one host")
  T.raises(function() sky.providers.ssh { hosts = { "h" }, host_key_policy = "tofu" } end, "must be \"strict\" or \"accept-new\"")
  T.raises(function() sky.providers.ssh { hosts = { "h" }, conect_timeout = 3 } end, "did you mean 'connect_timeout'")
  T.raises(function() sky.providers.ssh { hosts = { "h:0" } } end, "hosts[1]: ssh: bad port '0'")
  T.eq(tostring(provider { host_key_policy = "accept-new" }),
    'sky.providers.ssh{hosts={' .. server.spec .. '}, host_key_policy="accept-new"}')
end)

T.test("the image is applied on the host: env, files in the workers' folder, setup once, output prefixed", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/vocab.txt", "hello\nworld\n")
  local job = dir .. "/job.lua"
  T.write_file(job, string.format([[
    local sky = require "sky"
    local pool = sky.ComputePool { provider = sky.providers.ssh { hosts = { %q }, key = %q, known_hosts = %q, workdir = "~/img" },
      nodes = 1, image = sky.Image { env = { GREETING = "hi there" }, files = { ["data/vocab.txt"] = %q },
      setup = { "echo setting up", "echo ran >> \"$HOME/setup-count\"" } } }
    pool:with(function()
      print(pool:run(sky.compute(function()
        local f = io.open("data/vocab.txt") local v = f:read("*a") f:close()
        return os.getenv("GREETING") .. "|" .. v:gsub("\n", ",")
      end)()))
    end)
  ]], server.spec, key.private, kh, dir .. "/vocab.txt"))
  local out, err, code = T.skyrun({ job })
  T.eq(code, 0, err)
  T.contains(out, "[" .. server.spec .. "] setting up\n")
  T.contains(out, "hi there|hello,world,")
  out, err, code = T.skyrun({ job })
  T.eq(code, 0, err)
  T.not_contains(out, "setting up", "setup runs once per distinct text")
  T.eq(T.read_file(server.home .. "/setup-count"), "ran\n")
  T.eq(T.read_file(server.home .. "/img/data/vocab.txt"), "hello\nworld\n")
end)

T.test("a task timeout kills the remote worker and replaces it; a worker killed on the host is reported", function()
  local pool = sky.ComputePool { provider = provider(), nodes = 1, output = false }
  pool:with(function()
    local spin = sky.compute(function() while true do end end, { timeout = 1 })
    local pid_of = sky.compute(function() return sky.info().pid end)
    local first = pool:run(pid_of())
    T.raises(function() pool:run(spin()) end, "no result after 1 s")
    local second = pool:run(pid_of())
    T.ok(second ~= first, "a new worker")
    T.ok(wait_for(function() return os.execute("kill -0 " .. first .. " 2>/dev/null") ~= 0 end, 3), "the stuck worker is gone")
    -- killed from outside, on the host: the task fails with how it died, the next one runs
    local f = pool:submit(sky.compute(function() local t0 = os.time() while os.time() - t0 < 10 do end end,
      { retry_on_interruption = 0 })())
    os.execute("sleep 0.3")
    T.exec("kill -9 " .. second)
    local err = T.raises(function() f:get() end, "killed by signal SIGKILL on " .. server.spec)
    T.contains(err, "node 1 (ssh " .. server.spec .. ")")
    T.ok(pool:run(pid_of()) ~= second)
  end)
  T.eq(server:wait_no_processes(5), {})
end)

T.test("closing the pool stops the remote workers", function()
  local pool = sky.ComputePool { provider = provider(), nodes = 1, concurrency = 2 }
  pool:open()
  local pids = pool:broadcast(sky.compute(function() return sky.info().pid end)())
  T.ok(#server:processes() >= 1, "workers run on the host")
  pool:close()
  T.eq(server:wait_no_processes(5), {})
  T.ok(pids[1] ~= nil)
end)

T.test("a driver killed mid-task leaves no worker, and no child of a task, on the host", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/job.lua", string.format([[
    local sky = require "sky"
    local pool = sky.ComputePool { provider = sky.providers.ssh { hosts = { %q }, key = %q, known_hosts = %q, quiet = true }, nodes = 1 }
    pool:with(function()
      pool:run(sky.compute(function(marker)
        os.execute("sleep 300 > /dev/null 2>&1 &")  -- a child that would outlive a killed worker
        local f = io.open(marker, "w") f:write("started") f:close()
        local t0 = os.time()
        while os.time() - t0 < 60 do end   -- busy: never reads its input while the task runs
      end)(%q))
    end)
  ]], server.spec, key.private, kh, dir .. "/started"))
  T.exec(string.format("%s %s > %s 2>&1 & echo $! > %s", q(T.skyrun_bin), q(dir .. "/job.lua"), q(dir .. "/out"),
    q(dir .. "/pid")))
  local driver = T.read_file(dir .. "/pid"):match("%d+")
  Sshd.on_exit("kill -9 " .. driver)
  T.ok(wait_for(function() return io.open(dir .. "/started") ~= nil end, 20), "the task started: " .. T.read_file(dir .. "/out"))
  T.ok(#server:processes() >= 1)
  T.exec("kill -9 " .. driver)
  T.eq(server:wait_no_processes(5), {}, "no worker left after the driver was killed")
end)

T.test("the HF token is sent in the protocol: never on a command line, in output or in the server log", function()
  local token = "hf_sshTESTtoken" .. tostring(os.time()) .. "x9Q"
  local dir = T.tmpdir()
  T.write_file(dir .. "/job.lua", string.format([[
    local sky = require "sky"
    local pool = sky.ComputePool { provider = sky.providers.ssh { hosts = { %q }, key = %q, known_hosts = %q },
                                   nodes = 1, plugins = { sky.plugins.huggingface { token = %q } } }
    print(pool)
    print(pool:script())
    pool:with(function()
      local f = pool:submit(sky.compute(function(marker)
        local g = io.open(marker, "w") g:write("up") g:close()
        local t0 = os.clock()
        while os.clock() - t0 < 1.5 do end
        print("token seen on the worker: " .. tostring(os.getenv("HF_TOKEN") ~= nil))
        return #os.getenv("HF_TOKEN")
      end)(%q))
      print("length", f:get())
    end)
  ]], server.spec, key.private, kh, token, dir .. "/up"))
  T.exec(string.format("%s %s > %s 2>&1 & echo $! > %s", q(T.skyrun_bin), q(dir .. "/job.lua"), q(dir .. "/out"),
    q(dir .. "/pid")))
  local driver = T.read_file(dir .. "/pid"):match("%d+")
  Sshd.on_exit("kill -9 " .. driver)
  T.ok(wait_for(function() return io.open(dir .. "/up") ~= nil end, 20), "the task started: " .. T.read_file(dir .. "/out"))
  local ps = T.sh("ps -eww -o args")
  T.contains(ps, "ssh-worker")
  T.not_contains(ps, token, "ps listing")
  for _, line in ipairs(server:command_lines()) do T.not_contains(line, token, "a host command line") end
  T.ok(wait_for(function() return os.execute("kill -0 " .. driver .. " 2>/dev/null") ~= 0 end, 20))
  local out = T.read_file(dir .. "/out")
  T.contains(out, "token seen on the worker: true")
  T.contains(out, "length\t" .. #token)
  T.not_contains(out, token, "driver output")
  T.not_contains(server:log(), token, "sshd log")
  -- where huggingface_hub looks for it on the host, readable by the user only
  T.eq(T.read_file(server.home .. "/.cache/huggingface/token"), token)
  T.eq(T.sh("stat -c %a " .. q(server.home .. "/.cache/huggingface/token")), "600\n")
end)

T.run()
