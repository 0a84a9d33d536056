-- sky.plugins.torch: a c10d process group across the pool's workers, created before any task runs.
--   plugins = { sky.plugins.torch { backend = "gloo" } }   -- or "nccl", or "auto" (nccl where CUDA is); port=, timeout=
-- Each node is one rank (rank = node - 1, world size = nodes): its first worker, where
-- pool:broadcast runs tasks, joins the group; further workers of a node (concurrency > 1) do not.
-- When the provider starts one worker per GPU (ranks_per_node > 1, e.g. Slurm's gpus_per_node),
-- every worker is a rank: RANK = (node - 1) * ranks_per_node + LOCAL_RANK, as torchrun numbers them.
-- The driver hands those workers RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR
-- (the head node's address as the pool reports it) and MASTER_PORT through the pool's protocol;
-- each worker's setup joins the group (rank 0, on the head node, hosts the rendezvous store on
-- MASTER_ADDR only; each rank proves the pool's SKYRUN_DIST_SECRET to it) and tasks reach it as
-- sky.dist. Torn down with the pool. Written with the same hooks as user plugins
-- (lua/sky/plugins/init.lua lists them all):
--   open(pool)        driver side, before workers start: picks MASTER_PORT
--   env(info, pool)   driver side, per worker: environment for that worker
--   setup(info)       worker side, before tasks
--   teardown(info)    worker side, at pool close
--   close(pool)       driver side, at pool close

local M = {}

local BACKENDS = { gloo = true, nccl = true, auto = true }

--- sky.plugins.torch{backend="gloo"|"nccl", port=, timeout=}: backend defaults to "gloo"; port to a port free on
--- the driver when the pool opens (pass one when the head node is another host and you know what
--- is free there); timeout (seconds, 300) bounds the rendezvous and each collective.
local function new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("sky.plugins.torch: expected an option table, got " .. type(opts), 2) end
  local known = { backend = true, port = true, timeout = true }
  for k in pairs(opts) do
    if not known[k] then
      error(string.format("sky.plugins.torch: unknown option '%s' (expected backend, port, timeout)", tostring(k)), 2)
    end
  end
  local backend = opts.backend or "gloo"
  if not BACKENDS[backend] then
    error(string.format("sky.plugins.torch: backend must be \"gloo\", \"nccl\" or \"auto\" (got %s)", tostring(backend)), 2)
  end
  local port = opts.port
  if port ~= nil and (type(port) ~= "number" or port ~= math.floor(port) or port < 1 or port > 65535) then
    error("sky.plugins.torch: port must be a TCP port number (1-65535), got " .. tostring(port), 2)
  end
  local timeout = opts.timeout or 300
  if type(timeout) ~= "number" or not (timeout > 0 and timeout <= 1e7) then
    error("sky.plugins.torch: timeout must be a positive number of seconds, at most 1e7 (got " .. tostring(timeout) .. ")", 2)
  end

  local ports = setmetatable({}, { __mode = "k" })  -- pool -> its MASTER_PORT (driver side)
  local secrets = setmetatable({}, { __mode = "k" }) -- pool -> the secret its ranks prove to the store
  local joined = setmetatable({}, { __mode = "k" }) -- pool -> { [rank] = true } once a worker was set up

  -- The ranks are a gang: when one dies the pool ends the others and starts them all again
  -- (ComputePool's max_restarts), after restart below gave the new gang a group of its own.
  local plugin = { name = "torch", backend = backend, gang = true }

  -- One MASTER_PORT and one secret per pool, picked before any worker starts. The secret travels
  -- to the ranks inside the protocol (never on a command line) and is masked in all output.
  local function prepare(pool)
    local dist = require "sky.dist"
    ports[pool] = ports[pool] or port or dist.free_port()
    secrets[pool] = secrets[pool] or require("sky.secret").add(dist.new_secret())
  end
  plugin.open = prepare

  -- Driver side, when a gang ended: the next gang meets on a fresh store, every rank new to it.
  function plugin.restart(pool)
    ports[pool] = port or require("sky.dist").free_port()
    joined[pool] = {}
  end

  function plugin.env(info, pool)
    if not ports[pool] then prepare(pool) end  -- a pool that did not call open (older hook order)
    local p = ports[pool]
    -- One rank per node: pool:broadcast runs a task on each node's first worker, so those are the
    -- processes that can meet in a collective. Further workers of a node (concurrency > 1) stay
    -- out of the group. With one worker per GPU, each worker is a rank.
    local per_node = info.ranks_per_node or 1
    if per_node == 1 and (info.slot or 1) ~= 1 then return { SKYRUN_DIST_OUTSIDE = tostring(info.slot) } end
    local local_rank = per_node > 1 and info.slot - 1 or 0
    local rank = (info.node - 1) * per_node + local_rank
    local seen = joined[pool] or {}
    joined[pool] = seen
    local replaced = seen[rank]
    seen[rank] = true
    return {
      RANK = rank, WORLD_SIZE = info.nodes * per_node, LOCAL_RANK = local_rank, LOCAL_WORLD_SIZE = per_node,
      NODE_RANK = info.node - 1, MASTER_ADDR = info.head_address, MASTER_PORT = p, SKYRUN_DIST_SECRET = secrets[pool],
      TORCHELASTIC_RESTART_COUNT = info.restarts or 0,  -- torchrun's name for the gang's number
      -- a worker started again for a rank that died cannot rejoin the running group
      SKYRUN_DIST_REPLACED = replaced and "1" or "", SKYRUN_DIST_OUTSIDE = "",
    }
  end

  -- Runs on the worker: only plain values travel with it (backend, timeout).
  function plugin.setup(info)
    local dist = require "sky.dist"
    local outside = os.getenv("SKYRUN_DIST_OUTSIDE") or ""
    if outside ~= "" then
      dist.set_unavailable(string.format("sky.dist: the torch plugin's group has one rank per node, its first " ..
        "worker; this is worker %s of node %d (concurrency > 1): run collectives with pool:broadcast",
        outside, info.node))
      return
    end
    if os.getenv("SKYRUN_DIST_REPLACED") == "1" then
      dist.set_unavailable(string.format("sky.dist: this worker replaced rank %d of the torch plugin's group after " ..
        "it died; rejoining a running group is not supported yet: close the pool and open a new one",
        tonumber(os.getenv("RANK")) or info.node - 1))
      return
    end
    local head = info.head_address or os.getenv("MASTER_ADDR") or ""
    local backend = backend
    if backend == "auto" then backend = require("skyrun.train").cuda_available() and "nccl" or "gloo" end
    -- Local-provider nodes share this machine's GPUs: one device per rank, not per node slot.
    local local_rank = tonumber(os.getenv("LOCAL_RANK")) or 0
    if backend == "nccl" and (head == "localhost" or head == "::1" or head:match("^127%.")) then
      local_rank = tonumber(os.getenv("RANK")) or local_rank
    end
    dist.init_process_group { backend = backend, timeout = timeout, local_rank = local_rank }
  end

  function plugin.teardown()
    local dist = require "sky.dist"
    if dist.is_initialized() then dist.destroy_process_group() end
  end

  function plugin.close(pool)
    ports[pool] = nil
    secrets[pool] = nil
    joined[pool] = nil
  end

  return setmetatable(plugin, {
    __tostring = function() return string.format("sky.plugins.torch{backend=%q}", backend) end,
  })
end

M.new = new

-- The module is the factory: require("sky.plugins.torch") { backend = "gloo" }.
return setmetatable(M, { __call = function(_, opts) return new(opts) end })
