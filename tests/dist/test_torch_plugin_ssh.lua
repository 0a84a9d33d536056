-- The torch plugin on an SSH pool of three hosts, each an sshd in its own network namespace
-- (issue 4: the Gloo rendezvous across namespaces): MASTER_ADDR is the head node's private
-- address, every rank's Gloo device binds its own host's address, all_reduce runs over the veths.
local T = require "testlib"
local Sshd = require "sshd"
local Netns = require "netns"
local sky = require "sky"

local key = Sshd.user_key()
local net = Netns.cluster { hosts = 3, authorized = { key } }
local kh = Sshd.tmpdir("kh") .. "/known_hosts"
T.write_file(kh, net:known_hosts())
local specs = {}
for i, h in ipairs(net.hosts) do specs[i] = h.sshd.spec end

T.test("torch{backend='gloo'} on three ssh hosts in three namespaces: all_reduce of ranks is 3 on every node", function()
  local pool = sky.ComputePool {
    provider = sky.providers.ssh { hosts = specs, key = key.private, known_hosts = kh, quiet = true },
    nodes = 3, plugins = { sky.plugins.torch { backend = "gloo", timeout = 60 } },
  }
  local per_node = pool:with(function()
    return pool:broadcast(sky.compute(function()
      local d = sky.dist
      local master = os.getenv("MASTER_ADDR")
      return {
        rank = d.rank(), head = sky.info().head_address, master = master,
        bound = d.local_address_towards(master),  -- the address this rank's Gloo device listens on
        sum = d.all_reduce(d.rank()),
        hosts = d.all_reduce({ d.rank() == 0 and 1 or 0, d.rank() == 1 and 1 or 0, d.rank() == 2 and 1 or 0 }),
        word = d.broadcast(d.rank() == 1 and "from the second host" or nil, 1),
      }
    end)())
  end)
  T.eq(#per_node, 3)
  for i, r in ipairs(per_node) do
    T.eq(r.rank, i - 1)
    T.eq(r.head, net.hosts[1].addr, "sky.info().head_address on node " .. i)
    T.eq(r.master, net.hosts[1].addr, "MASTER_ADDR on node " .. i)
    T.eq(r.bound, net.hosts[i].addr, "node " .. i .. " binds its own host's address")
    T.eq(r.sum, 3, "all_reduce on node " .. i)
    T.eq(r.hosts, { 1, 1, 1 })
    T.eq(r.word, "from the second host")
  end
  -- the group went with the pool: no skyrun left in any namespace
  for i = 1, 3 do
    local left
    for _ = 1, 50 do
      left = {}
      for _, pid in ipairs(net:pids(i)) do
        local f = io.open("/proc/" .. pid .. "/cmdline", "rb")
        local cmd = f and f:read("*a") or ""
        if f then f:close() end
        if cmd:find("skyrun", 1, true) then left[#left + 1] = pid end
      end
      if #left == 0 then break end
      os.execute("sleep 0.1")
    end
    T.eq(left, {}, "skyrun processes left in host " .. i)
  end
end)

T.test("gpus_per_node = 2 on two ssh hosts: a rank per GPU, numbered as torchrun, in one group across the hosts", function()
  local pool = sky.ComputePool {
    provider = sky.providers.ssh { hosts = { specs[1], specs[2] }, key = key.private, known_hosts = kh, quiet = true,
      gpus_per_node = 2 },
    nodes = 2, plugins = { sky.plugins.torch { backend = "gloo", timeout = 60 } },
  }
  local per_rank = pool:with(function()
    return pool:broadcast(sky.compute(function()
      return { sky.dist.rank(), tonumber(os.getenv("LOCAL_RANK")), sky.info().node, sky.dist.all_reduce(1),
        sky.dist.local_address_towards(os.getenv("MASTER_ADDR")) }
    end)())
  end)
  T.eq(#per_rank, 4)
  for i, r in ipairs(per_rank) do
    local node = math.floor((i - 1) / 2) + 1
    T.eq({ r[1], r[2], r[3], r[4] }, { i - 1, (i - 1) % 2, node, 4 }, "rank " .. (i - 1))
    T.eq(r[5], net.hosts[node].addr, "rank " .. (i - 1) .. " on its node's host")
  end
end)

T.run()
