-- netns: a small private network of Linux network namespaces, each a "host", for multi-host tests.
--   local Netns = require "netns"
--   local net = Netns.create { hosts = 3 }         -- 10.77.<n>.11, .12, .13; the driver is 10.77.<n>.1
--   net.hosts[1].ns, net.hosts[1].addr
--   net:exec(1, "hostname -I")                     -- stdout, stderr, code (run inside host 1)
--   net:pids(1)                                     -- every process inside host 1's namespace
--   local c = Netns.cluster { hosts = 3, authorized = { key } }   -- the same, with an sshd in each
--   c.hosts[2].sshd.spec                           -- "root@10.77.<n>.12:22"
--   net:destroy()
-- Topology: a bridge in the root namespace (where the driver runs) with address .1, and one veth
-- pair per host, its inner end named eth0 inside the host's namespace. Hosts reach each other
-- over the bridge. The /24 exists only on this bridge and in these namespaces. Names are unique
-- per test process, and everything is removed when the test process ends, even on failure.

local T = require "testlib"
local Sshd = require "sshd"

local M = {}
local N = {}
N.__index = N

local q = T.shell_quote

local function own_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = tonumber(f:read("*a"):match("^(%d+)"))
  f:close()
  return pid
end

local sh_ok = T.sh_ok

-- A third octet for 10.77.X.0/24 that no interface here uses yet.
local function free_octet(seed)
  local used = T.sh("ip -4 -o addr show")
  for i = 0, 249 do
    local o = (seed + i) % 250 + 1
    if not used:find("10.77." .. o .. ".", 1, true) then return o end
  end
  error("netns: no free 10.77.X.0/24 subnet")
end

local serial = 0

--- Creates the namespaces. opts.hosts: how many (3).
function M.create(opts)
  opts = opts or {}
  serial = serial + 1
  local pid = own_pid()
  local id = string.format("%d%d", pid % 100000, serial)
  local self = setmetatable({ id = id, hosts = {} }, N)
  self.octet = free_octet(pid + serial * 37)
  self.prefix = "10.77." .. self.octet .. "."
  self.gateway = self.prefix .. "1"
  self.bridge = ("skb" .. id):sub(1, 15)
  Sshd.on_exit("ip link del " .. self.bridge)
  sh_ok(string.format("ip link add %s type bridge && ip addr add %s/24 dev %s && ip link set %s up",
    self.bridge, self.gateway, self.bridge, self.bridge))
  self.added = 0
  for _ = 1, opts.hosts or 3 do self:add_host() end
  return self
end

--- Adds one more host to the network (hosts[i], address prefix .. (10 + i)); returns it.
function N:add_host()
  self.added = self.added + 1
  local i = self.added
  if i > 230 then error("netns: no more than 230 hosts on one network") end
  local ns = "skyns" .. self.id .. "_" .. i
  local veth = ("skv" .. self.id .. "h" .. i):sub(1, 15)
  local addr = self.prefix .. (10 + i)
  -- the exit cleanup kills the namespace's processes, then removes it
  Sshd.on_exit("ip netns pids " .. ns .. " | xargs -r kill -9; ip netns del " .. ns)
  sh_ok("ip netns add " .. ns)
  sh_ok(string.format(
    "ip link add %s type veth peer name eth0 netns %s && ip link set %s master %s up && " ..
    "ip -n %s addr add %s/24 dev eth0 && ip -n %s link set eth0 up && ip -n %s link set lo up && " ..
    "ip -n %s route add default via %s",
    veth, ns, veth, self.bridge, ns, addr, ns, ns, ns, self.gateway))
  self.hosts[i] = { ns = ns, addr = addr, veth = veth, index = i }
  return self.hosts[i]
end

--- Kills everything inside host i's namespace and removes it (the host is gone; its index stays used).
function N:remove_host(i)
  local h = self.hosts[i]
  if not h then return end
  os.execute("ip netns pids " .. q(h.ns) .. " | xargs -r kill -9 2>/dev/null")
  os.execute("ip netns del " .. q(h.ns) .. " 2>/dev/null")
  os.execute("ip link del " .. q(h.veth) .. " 2>/dev/null")
  self.hosts[i] = nil
end

--- Runs a shell command inside host i's namespace; returns stdout, stderr, code.
function N:exec(i, cmd) return T.sh("ip netns exec " .. q(self.hosts[i].ns) .. " sh -c " .. q(cmd)) end

--- Pids of every process inside host i's namespace.
function N:pids(i)
  local pids = {}
  for p in T.sh("ip netns pids " .. q(self.hosts[i].ns)):gmatch("%d+") do pids[#pids + 1] = tonumber(p) end
  return pids
end

--- An address on the private network where nothing answers (connects to it time out).
function N:unused_address() return self.prefix .. "250" end

--- Kills everything inside the namespaces and removes them and the bridge.
function N:destroy()
  for _, h in pairs(self.hosts) do
    os.execute("ip netns pids " .. q(h.ns) .. " | xargs -r kill -9 2>/dev/null")
    os.execute("ip netns del " .. q(h.ns) .. " 2>/dev/null")
  end
  os.execute("ip link del " .. q(self.bridge) .. " 2>/dev/null")
  self.hosts = {}
end

--- Namespaces with an sshd (port 22) in each. opts: hosts (3), authorized (user keys).
function M.cluster(opts)
  opts = opts or {}
  local net = M.create(opts)
  for i, h in ipairs(net.hosts) do
    h.sshd = Sshd.start { netns = h.ns, address = h.addr, port = 22, name = "host" .. i,
                          authorized = opts.authorized }
  end
  return net
end

--- known_hosts text listing every host's key.
function N:known_hosts()
  local lines = {}
  for _, h in ipairs(self.hosts) do lines[#lines + 1] = h.sshd:known_hosts_line() end
  return table.concat(lines, "\n") .. "\n"
end

return M
