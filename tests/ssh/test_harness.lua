-- The test harness itself: real sshd servers on loopback and in network namespaces, reached with
-- OpenSSH's client, and their cleanup when a test process dies without cleaning up.
local T = require "testlib"
local Sshd = require "sshd"
local Netns = require "netns"

local key = Sshd.user_key()

T.test("a loopback sshd accepts the throwaway key and gives the session its own HOME", function()
  local s = Sshd.start { authorized = { key }, name = "lo" }
  local out, err, code = s:ssh(key, "echo $HOME; id -u")
  T.eq(code, 0, err)
  T.eq(out, s.home .. "\n0\n")
  T.ok(s.port >= 20000, "a high port")
  T.contains(s.fingerprint, "SHA256:")
  s:stop()
end)

T.test("a loopback sshd refuses a key it does not know", function()
  local s = Sshd.start { authorized = { key }, name = "lo2" }
  local other = Sshd.user_key()
  local _, err, code = s:ssh(other, "true")
  T.ok(code ~= 0)
  T.contains(err, "Permission denied")
  s:stop()
end)

T.test("killing a server ends its sessions and leaves no process behind", function()
  local s = Sshd.start { authorized = { key }, name = "lo3" }
  T.exec(string.format("ssh -F none -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null " ..
    "-i %s -p %d root@127.0.0.1 'sleep 30' >/dev/null 2>&1 &", T.shell_quote(key.private), s.port))
  local found
  for _ = 1, 50 do
    found = #s:processes() > 0
    if found then break end
    os.execute("sleep 0.1")
  end
  T.ok(found, "the session's sleep is seen")
  s:kill()
  T.eq(s:wait_no_processes(3), {})
end)

T.test("three namespaces each run an sshd at its own private address", function()
  local net = Netns.cluster { hosts = 3, authorized = { key } }
  local seen = {}
  for i, h in ipairs(net.hosts) do
    local out, err, code = h.sshd:ssh(key, "ip -4 -o addr show dev eth0")
    T.eq(code, 0, err)
    local addr = out:match("inet (%d+%.%d+%.%d+%.%d+)")
    T.eq(addr, h.addr)
    seen[addr] = true
    T.eq(#net:pids(i) >= 1, true, "the sshd runs inside " .. h.ns)
  end
  T.eq(#net.hosts, 3)
  -- hosts reach each other over the bridge, not only the driver
  local out, err, code = net:exec(1, "ssh-keyscan -T 3 -t ed25519 " .. net.hosts[2].addr .. " 2>/dev/null")
  T.eq(code, 0, err)
  T.contains(out, net.hosts[2].sshd.host_key_line:match("^%S+%s+(%S+)"))
  -- the private addresses do not exist in the root namespace except on the test's bridge
  local root = T.sh("ip -4 -o addr show")
  for line in root:gmatch("[^\n]+") do
    if line:find(net.prefix, 1, true) then T.contains(line, net.bridge) end
  end
  net:destroy()
  T.not_contains(T.sh("ip netns list"), net.hosts[1] and net.hosts[1].ns or ("skyns" .. net.id .. "_"))
end)

T.test("a test process that dies without cleaning up leaves no namespace, server or session", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/crash.lua", [[
    local Sshd = require "sshd"
    local Netns = require "netns"
    local key = Sshd.user_key()
    local net = Netns.cluster { hosts = 2, authorized = { key } }
    local s = Sshd.start { authorized = { key } }
    print(net.hosts[1].ns, net.hosts[2].ns, net.bridge, s.pid)
    io.stdout:flush()
    io.open(os.getenv("CRASH_FIFO")):read("*a")   -- blocks: nobody ever writes to it
  ]])
  T.exec("mkfifo " .. T.shell_quote(dir .. "/fifo"))
  -- started in the background and SIGKILLed once it has set everything up
  T.exec(string.format("CRASH_FIFO=%s %s %s > %s 2>&1 & echo $! > %s", T.shell_quote(dir .. "/fifo"), T.shell_quote(T.skyrun_bin), T.shell_quote(dir .. "/crash.lua"),
    T.shell_quote(dir .. "/out"), T.shell_quote(dir .. "/pid")))
  local child = T.read_file(dir .. "/pid"):match("%d+")
  Sshd.on_exit("kill -9 " .. child)
  local out = ""
  for _ = 1, 150 do
    local f = io.open(dir .. "/out", "rb")
    if f then out = f:read("*a") f:close() end
    if out:find("%d+%s*$") then break end
    os.execute("sleep 0.1")
  end
  T.exec("kill -9 " .. child)
  local ns1, ns2, bridge, pid = out:match("(%S+)%s+(%S+)%s+(%S+)%s+(%d+)")
  T.ok(ns1, "the crashing script printed its names: " .. out)
  local gone = false
  for _ = 1, 50 do
    local list = T.sh("ip netns list")
    local links = T.sh("ip -o link show")
    if not list:find(ns1, 1, true) and not list:find(ns2, 1, true) and not links:find(bridge .. ":", 1, true)
        and os.execute("kill -0 " .. pid .. " 2>/dev/null") ~= 0 then
      gone = true
      break
    end
    os.execute("sleep 0.1")
  end
  T.ok(gone, "namespaces, bridge and sshd removed after the crash")
end)

T.run()
