-- Gloo across hosts: three network namespaces (tests/lib/netns.lua), one rank in each, joined over
-- the veth links with MASTER_ADDR set to the first host's private address, as on a cluster where
-- every node has its own address. Each rank's Gloo device binds the address it routes to the
-- master by (no GLOO_SOCKET_IFNAME needed).
local T = require "testlib"
local Netns = require "netns"

local net = Netns.create { hosts = 3 }
local PORT = 29517

-- Runs `body` as rank i-1 inside host i for every host in `hosts` (all by default), in parallel.
local function run_ranks(body, opts)
  opts = opts or {}
  local dir = T.tmpdir()
  T.write_file(dir .. "/rank.lua", string.format(
    "local dist = require 'skyrun.dist'; dist.init_process_group { backend = 'gloo', timeout = %s }\n",
    opts.timeout or 20) .. body)
  local hosts = opts.hosts or { 1, 2, 3 }
  local parts = {}
  local secret = require("sky.dist").new_secret()
  for _, i in ipairs(hosts) do
    local f = dir .. "/" .. i
    parts[#parts + 1] = string.format(
      "( ip netns exec %s env RANK=%d WORLD_SIZE=%d MASTER_ADDR=%s MASTER_PORT=%d SKYRUN_DIST_SECRET=%s %s %s > %s 2> %s; echo $? > %s ) &",
      T.shell_quote(net.hosts[i].ns), i - 1, opts.world or #net.hosts, opts.master or net.hosts[1].addr, PORT, secret,
      T.shell_quote(T.skyrun_bin), T.shell_quote(dir .. "/rank.lua"), T.shell_quote(f .. ".out"),
      T.shell_quote(f .. ".err"), T.shell_quote(f .. ".code"))
  end
  T.exec(table.concat(parts, " ") .. " wait")
  local results = {}
  for _, i in ipairs(hosts) do
    results[i] = { out = T.read_file(dir .. "/" .. i .. ".out"), err = T.read_file(dir .. "/" .. i .. ".err"),
                   code = tonumber(T.read_file(dir .. "/" .. i .. ".code")) }
  end
  return results
end

T.test("three ranks in three namespaces rendezvous at the first host's address and all_reduce over the veths", function()
  local results = run_ranks([[
    print("addr=" .. require("sky.dist").local_address_towards(os.getenv("MASTER_ADDR")))
    print("sum=" .. dist.all_reduce(dist.rank()))
    print("array=" .. table.concat(dist.all_reduce({ dist.rank(), 1 }, "max"), ","))
    print("bcast=" .. dist.broadcast(dist.rank() == 2 and "from the third host" or nil, 2))
    dist.barrier()
  ]])
  for i, h in ipairs(net.hosts) do
    local res = results[i]
    T.eq(res.code, 0, "host " .. i .. ": " .. res.err)
    T.eq(res.out, "addr=" .. h.addr .. "\nsum=3\narray=2,1\nbcast=from the third host\n", "host " .. i)
  end
  for i = 1, 3 do T.eq(net:pids(i), {}, "no process left in host " .. i) end
end)

T.test("a master address nothing answers on is a connect timeout naming it, within the timeout", function()
  local t0 = os.time()
  local results = run_ranks("print('unreachable')", { hosts = { 2 }, world = 2, master = net:unused_address(), timeout = 2 })
  T.eq(results[2].code, 1)
  T.contains(results[2].err, "rank 1 of 2 cannot reach the rendezvous store at " .. net:unused_address() .. ":" .. PORT)
  T.ok(os.time() - t0 <= 15, "gave up within the timeout (plus process start on a loaded machine)")
end)

-- the namespaces go when this process ends (netns registers their removal)
T.run()
