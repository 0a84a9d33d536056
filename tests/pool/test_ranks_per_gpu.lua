-- One worker per GPU (issue 15): a node with several GPUs gives a rank per GPU on the local and
-- SSH providers too (Slurm's is tests/slurm), from gpus_per_node, the accelerator count the pool
-- asks for, or (local) the GPUs the machine has; RANK/LOCAL_RANK/WORLD_SIZE as torchrun numbers them.
local T = require "testlib"
local sky = require "sky"

local who = sky.compute(function()
  local i = sky.info()
  return { rank = tonumber(os.getenv("RANK")), local_rank = tonumber(os.getenv("LOCAL_RANK")),
    world = tonumber(os.getenv("WORLD_SIZE")), local_world = tonumber(os.getenv("LOCAL_WORLD_SIZE")),
    node = i.node, slot = i.slot, is_head = i.is_head, sum = sky.dist.all_reduce(1), dist_rank = sky.dist.rank() }
end)

local function pool_gpus()
  local pool = sky.ComputePool { nodes = 1 }
  return pool:with(function() return pool:run(sky.compute(function() return sky.info().gpus end)()) end)
end

local function ranks_of(pool)
  local out
  pool:with(function() out = pool:broadcast(who()) end)
  return out
end

T.test("gpus_per_node = 2 on 2 local nodes: four ranks, numbered as torchrun, all in one group", function()
  local r = ranks_of(sky.ComputePool { nodes = 2, provider = sky.providers.local_ { gpus_per_node = 2 },
    plugins = { sky.plugins.torch { backend = "gloo", timeout = 30 } } })
  T.eq(#r, 4)
  for i, x in ipairs(r) do
    T.eq(x.rank, i - 1)
    T.eq(x.dist_rank, i - 1)
    T.eq(x.local_rank, (i - 1) % 2)
    T.eq(x.world, 4)
    T.eq(x.local_world, 2)
    T.eq(x.node, math.floor((i - 1) / 2) + 1)
    T.eq(x.sum, 4)
    T.eq(x.is_head, i == 1)
  end
end)

T.test("the accelerator count asks for the ranks when gpus_per_node is not given; bad values are refused", function()
  local r = ranks_of(sky.ComputePool { nodes = 1, accelerator = "A100:3",
    plugins = { sky.plugins.torch { backend = "gloo", timeout = 30 } } })
  T.eq(#r, 3)
  T.eq({ r[1].local_rank, r[2].local_rank, r[3].local_rank }, { 0, 1, 2 })
  T.raises(function() sky.providers.local_ { gpus_per_node = 0 } end, "option 'gpus_per_node' must be an integer of at least 1")
  T.raises(function() sky.providers.ssh { hosts = { "h" }, gpus_per_node = 1.5 } end, "gpus_per_node")
  T.raises(function()
    sky.ComputePool { nodes = 1, concurrency = 2, provider = sky.providers.local_ { gpus_per_node = 2 } }
  end, "concurrency > 1 with several ranks per node (2 GPUs) is not supported yet")
end)

T.test("a machine with two GPUs (device files /dev/nvidia0 and 1) gives two ranks without being told", function()
  -- a private mount namespace whose /dev holds what the job needs and two GPU device files
  local dir = T.tmpdir()
  local script = dir .. "/job.lua"
  T.write_file(script, [[
local sky = require "sky"
local pool = sky.ComputePool { nodes = 1, plugins = { sky.plugins.torch { backend = "gloo", timeout = 30 } } }
pool:with(function()
  local r = pool:broadcast(sky.compute(function()
    return os.getenv("LOCAL_RANK") .. "/" .. os.getenv("WORLD_SIZE") .. ":" .. sky.info().gpus
  end)())
  print("RANKS " .. table.concat(r, " "))
end)
]])
  local dev = dir .. "/dev"
  local q = T.shell_quote
  local out, err, code = T.sh(string.format("unshare -m sh -c %s", q(string.format(
    "mkdir -p %s && cp -a /dev/null /dev/zero /dev/random /dev/urandom %s/ && ln -s /proc/self/fd %s/fd && " ..
    "touch %s/nvidia0 %s/nvidia1 && mount --bind %s /dev && exec %s %s",
    q(dev), q(dev), q(dev), q(dev), q(dev), q(dev), q(T.skyrun_bin), q(script)))))
  T.eq(code, 0, out .. err)
  T.contains(out, "RANKS 0/2:2 1/2:2")
  -- CUDA_VISIBLE_DEVICES narrows what a process may use, for the ranks and for sky.info().gpus
  out, err, code = T.sh(string.format("unshare -m sh -c %s", q(string.format(
    "mount --bind %s /dev && CUDA_VISIBLE_DEVICES=1 exec %s %s", q(dev), q(T.skyrun_bin), q(script)))))
  T.eq(code, 0, out .. err)
  T.contains(out, "RANKS 0/1:1")
  local none = pool_gpus()
  T.eq(none, 0, "this machine has no GPU")
end)

T.run()
