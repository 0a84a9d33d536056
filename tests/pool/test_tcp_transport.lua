-- Workers that dial the driver over TCP (src/pool/tcp_transport.hpp), without Slurm: the launcher
-- is the worker itself. Tasks run over the socket; a worker without the pool's secret is refused;
-- a worker never serves a peer that cannot prove it holds the secret; a keeper (`skyrun hold`)
-- leaves when the driver closes.
local T = require "testlib"
local sky = require "sky"
local pcore = require "sky.pool.core"
local tcp = require "sky.pool.tcp"

local q = T.shell_quote
local bin = T.skyrun_bin

-- A provider whose workers dial in: `launch(target, id)` gives the launcher's argv.
local function dial_in_provider(launch)
  local p = { name = "dial-in" }
  function p:open() self.rv = tcp.listen { address = "127.0.0.1" } end
  local serial = 0
  function p:spawn(node)
    serial = serial + 1
    local host, port = self.rv:address()
    local id = "w" .. serial
    return self.rv:spawn { argv = launch(host .. ":" .. port, id), id = id, label = "node " .. node .. " (dial-in)" }
  end
  function p:close() self.rv:close() end
  return p
end

local function worker_argv(target, id) return { bin, "worker", "--connect", target, "--id", id } end

T.test("tasks, output and map run over workers that dialled in with the pool's secret", function()
  local lines = {}
  local pool = sky.ComputePool { provider = dial_in_provider(worker_argv), nodes = 2,
                                 output = function(node, line) lines[#lines + 1] = node .. ":" .. line end }
  pool:with(function()
    T.eq(pool:broadcast(sky.compute(function() print("hi") return sky.info().node end)()), { 1, 2 })
    local sum = 0
    for _, v in ipairs(pool:map(function(x) return x * x end, { 1, 2, 3, 4, 5 })) do sum = sum + v end
    T.eq(sum, 55)
    local big = string.rep("x", 3 * 1024 * 1024)
    T.eq(#pool:run(sky.compute(function(s) return s .. s end)(big)), 6 * 1024 * 1024)
  end)
  table.sort(lines)
  T.eq(lines, { "1:hi", "2:hi" })
end)

T.test("a worker with the wrong secret is refused and the pool says so", function()
  local pool = sky.ComputePool { nodes = 1, startup_timeout = 10, provider = dial_in_provider(function(target, id)
    -- the launcher throws the secret away and hands the worker another one
    return { "/bin/sh", "-c", "read line; echo 00112233445566778899 | exec " .. q(bin) .. " worker --connect " ..
             q(target) .. " --id " .. q(id) }
  end) }
  local err = T.raises(function() pool:open() end, "refused this worker (wrong pool secret")
  T.contains(err, "node 1 (dial-in)")
end)

T.test("a worker does not serve a peer that cannot prove it holds the secret", function()
  -- a fake driver: greets, then answers anything with OK and a made-up proof
  local dir = T.tmpdir()
  T.write_file(dir .. "/fake.py", [[
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.sendall(b"SKYRUN-DIAL 1 " + b"ab" * 32 + b"\n")
c.recv(1024)
c.sendall(b"OK " + b"cd" * 32 + b"\n")
c.sendall(b"anything")
c.recv(1024)
]])
  -- bounded, and detached from the test's output (meson waits for every holder of its pipes)
  T.exec("cd " .. q(dir) .. " && (timeout 60 python3 fake.py > port 2> fake.err < /dev/null & ) ")
  local port
  for _ = 1, 200 do
    local f = io.open(dir .. "/port")  -- appears when the background shell gets to it
    port = f and f:read("*a"):match("^(%d+)\n")
    if f then f:close() end
    if port then break end
    pcore.sleep(0.05)
  end
  T.ok(port, "the fake driver printed its port")
  local out, err, code = T.sh("echo 00112233445566778899 | " .. q(bin) .. " worker --connect 127.0.0.1:" .. port .. " --id w1")
  T.eq(code, 3, out .. err)
  T.contains(err, "did not prove that it holds the pool's secret: not serving it")
  -- and a target that is not a driver at all
  out, err, code = T.sh("echo 00112233445566778899 | " .. q(bin) .. " worker --connect 127.0.0.1:1 --id w1")
  T.eq(code, 3)
  T.contains(err, "cannot connect to the driver at 127.0.0.1:1")
end)

T.test("the pool's secret is on no command line: a worker without it on stdin does not start", function()
  local out, err, code = T.sh(q(bin) .. " worker --connect 127.0.0.1:9 --id w1 < /dev/null")
  T.eq(code, 3, out)
  T.contains(err, "needs the pool's secret as the first line of stdin")
  T.raises(function() tcp.listen { address = "no such address" } end, "cannot listen on 'no such address'")
end)

T.test("a keeper holds its connection and leaves as soon as the driver closes", function()
  local rv = tcp.listen { address = "127.0.0.1" }
  local host, port = rv:address()
  local dir = T.tmpdir()
  T.exec(string.format("(%s hold %s:%d --label job42; echo $? > %s) > /dev/null 2>&1 &", q(bin), host, port, q(dir .. "/rc")))
  T.ok(rv:wait_hold("job42", 10), "the keeper connected")
  T.eq(rv:holds(), { "job42" })
  pcore.sleep(0.3)
  T.ok(not io.open(dir .. "/rc"), "the keeper stays while the driver is there")
  rv:close()
  local rc
  for _ = 1, 50 do
    local f = io.open(dir .. "/rc")
    if f then rc = f:read("*a"):match("%d+") f:close() break end
    pcore.sleep(0.05)
  end
  T.eq(rc, "0", "the keeper left")
end)

T.run()
