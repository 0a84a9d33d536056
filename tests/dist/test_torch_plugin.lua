-- The torch plugin on the local pool (issue 3, acceptance 5): every worker joins one Gloo group
-- before tasks run, tasks reach it as sky.dist, and the group goes with the pool.
local T = require "testlib"
local sky = require "sky"
local torch_plugin = require "sky.plugins.torch"  -- the same table as sky.plugins.torch

T.test("torch{backend='gloo'} on 4 local nodes: all_reduce of each node's rank sums to 6 on every node", function()
  local pool = sky.ComputePool { nodes = 4, plugins = { sky.plugins.torch { backend = "gloo" } } }
  local per_node = pool:with(function()
    return pool:broadcast(sky.compute(function()
      local info = sky.info()
      local d = sky.dist
      return {
        node = info.node, rank = d.rank(), world_size = d.world_size(), backend = d.backend(),
        sum = d.all_reduce(d.rank()),
        max = d.all_reduce({ d.rank(), -d.rank() }, "max"),
        from_last = d.broadcast(d.rank() == 3 and ("node " .. info.node) or nil, 3),
        env = { os.getenv("RANK"), os.getenv("WORLD_SIZE"), os.getenv("LOCAL_RANK"), os.getenv("MASTER_ADDR") },
        port = os.getenv("MASTER_PORT"),
      }
    end)())
  end)
  T.eq(#per_node, 4)
  local port = per_node[1].port
  T.ok(tonumber(port) and tonumber(port) > 0, "MASTER_PORT is a port")
  for i, r in ipairs(per_node) do
    T.eq(r.node, i)
    T.eq(r.rank, i - 1, "rank of node " .. i)
    T.eq(r.world_size, 4)
    T.eq(r.backend, "gloo")
    T.eq(r.sum, 6, "all_reduce on node " .. i)
    T.eq(r.max, { 3, 0 })
    T.eq(r.from_last, "node 4")
    T.eq(r.env, { tostring(i - 1), "4", "0", "127.0.0.1" })
    T.eq(r.port, port, "one MASTER_PORT for the whole pool")
  end
end)

T.test("the rendezvous store of a 2-node Gloo job listens on the pool's address only and refuses a process without the secret", function()
  local lines = {}
  local pool = sky.ComputePool { nodes = 2, plugins = { sky.plugins.torch { backend = "gloo", timeout = 60 } },
    output = function(node, line) lines[#lines + 1] = line end }
  pool:with(function()
    local per_node = pool:broadcast(sky.compute(function()
      return { port = os.getenv("MASTER_PORT"), pid = sky.info().pid, has_secret = #(os.getenv("SKYRUN_DIST_SECRET") or "") }
    end)())
    local port = per_node[1].port
    T.ok(per_node[1].has_secret >= 16 and per_node[2].has_secret >= 16, "each rank got the pool secret")
    -- ss during the job: one listener on the port, on 127.0.0.1 (the pool's address), by rank 0's worker
    local ss = T.sh("ss -Hltnp 'sport = :" .. port .. "'")
    local listeners = {}
    for line in ss:gmatch("[^\n]+") do listeners[#listeners + 1] = line end
    T.eq(#listeners, 1, ss)
    T.contains(listeners[1], "127.0.0.1:" .. port .. " ")
    T.contains(listeners[1], "pid=" .. per_node[1].pid .. ",")
    T.not_contains(ss, "0.0.0.0:" .. port)
    T.not_contains(ss, "*:" .. port)
    T.not_contains(ss, "[::]:" .. port)
    -- a process that guesses the secret cannot join the group
    local out, err, code = T.sh(string.format(
      "RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=%s SKYRUN_DIST_SECRET=guessed-secret-0123456789abcdef %s -e %s",
      port, T.shell_quote(T.skyrun_bin), T.shell_quote("require('sky.dist').init_process_group { timeout = 10 } print('joined')")))
    T.eq(code, 1, out .. err)
    T.not_contains(out, "joined")
    T.contains(err, "refused this process: it does not know the pool secret")
    -- the job goes on, and rank 0's store said whom it refused
    T.eq(pool:broadcast(sky.compute(function() return sky.dist.all_reduce(1) end)()), { 2, 2 })
    local cmdline = T.read_file("/proc/" .. per_node[2].pid .. "/cmdline")
    T.not_contains(cmdline, "SECRET")
  end)
  local said = table.concat(lines, "\n")
  T.contains(said, "rendezvous store 127.0.0.1:")
  T.contains(said, "refused the connection from 127.0.0.1:")
end)

T.test("sky.dist in a pool without the plugin says to add it; bad plugin options are refused", function()
  local pool = sky.ComputePool { nodes = 1 }
  local err = T.raises(function()
    pool:with(function() return pool:run(sky.compute(function() return sky.dist.rank() end)()) end)
  end, "no process group in this process")
  T.contains(err, "sky.plugins.torch")
  T.raises(function() torch_plugin { backend = "mpi" } end, 'backend must be "gloo", "nccl" or "auto" (got mpi)')
  T.raises(function() torch_plugin { prot = 1 } end, "unknown option 'prot'")
  T.raises(function() torch_plugin { port = 70000 } end, "port must be a TCP port number")
  T.eq(sky.plugins.torch, torch_plugin)
  T.raises(function() return sky.plugins.horovod end, "no plugin 'horovod' under lua/sky/plugins/")
end)

T.test("with concurrency 2 each node's first worker is its rank and broadcast's collectives meet", function()
  local pool = sky.ComputePool { nodes = 2, concurrency = 2, plugins = { sky.plugins.torch { backend = "gloo", timeout = 30 } } }
  pool:with(function()
    local per_node = pool:broadcast(sky.compute(function()
      return { sky.dist.world_size(), sky.dist.all_reduce(sky.dist.rank() + 1), sky.info().slot }
    end)())
    T.eq(per_node, { { 2, 3, 1 }, { 2, 3, 1 } })
  end)
end)

T.run()
