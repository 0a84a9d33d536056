-- A host that vanishes without closing its connection (its link cut: no FIN, no RST) is declared
-- lost after dead_after seconds; its task fails naming it, the other host's task finishes, and its
-- worker is gone once the link is back and the connection can be refused.
local T = require "testlib"
local Sshd = require "sshd"
local Netns = require "netns"
local sky = require "sky"

local key = Sshd.user_key()
local net = Netns.cluster { hosts = 2, authorized = { key } }
local kh = Sshd.tmpdir("kh") .. "/known_hosts"
T.write_file(kh, net:known_hosts())

local function now()
  local f = io.popen("date +%s.%N")
  local t = tonumber(f:read("*a"))
  f:close()
  return t
end

T.test("a silently vanished host fails its task (no retries) within dead_after plus a little, naming it", function()
  local pool = sky.ComputePool {
    provider = sky.providers.ssh { hosts = { net.hosts[1].sshd.spec, net.hosts[2].sshd.spec }, key = key.private,
                                   known_hosts = kh, quiet = true, dead_after = 2 },
    nodes = 2, output = false, retry_on_interruption = 0,
  }
  pool:open()
  local nap = sky.compute(function(s)
    local t0 = os.time()
    while os.time() - t0 < s do end
    return sky.info().node
  end)
  local f1, f2 = pool:submit(nap(6)), pool:submit(nap(6))
  os.execute("sleep 0.3")
  T.exec("ip link set " .. net.hosts[2].veth .. " down")
  Sshd.on_exit("ip link set " .. net.hosts[2].veth .. " up")
  local t0 = now()
  local ok, err = pcall(f2.get, f2)
  local took = now() - t0
  T.ok(not ok, "the cut host's task failed")
  T.contains(tostring(err), net.hosts[2].addr)
  T.contains(tostring(err), "lost")
  T.ok(took < 5, "noticed after " .. took .. " s")
  T.eq(f1:get(), 1)
  T.exec("ip link set " .. net.hosts[2].veth .. " up")
  pool:close()
  -- the orphaned worker ends when its next write meets the closed connection
  local left
  for _ = 1, 100 do
    left = {}
    for _, pid in ipairs(net:pids(2)) do
      local fh = io.open("/proc/" .. pid .. "/cmdline", "rb")
      local cmd = fh and fh:read("*a") or ""
      if fh then fh:close() end
      if cmd:find("skyrun", 1, true) then left[#left + 1] = pid end
    end
    if #left == 0 then break end
    os.execute("sleep 0.1")
  end
  T.eq(left, {}, "skyrun left on the cut host")
end)

T.run()
