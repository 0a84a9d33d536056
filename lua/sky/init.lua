-- sky: the job-facing module. Compute tasks, pools, providers, images and plugins grow here;
-- native services come from sky.core.

local core = require "sky.core"

local M = {}

M.version = core.version().skyrun
M.inspect = require "sky.inspect"
M.dist = require "sky.dist"  -- the process group of a worker (torch plugin); LibTorch loads on first use

--- Validates an option table against a schema ({name = "type", ...}); errors blame the caller's caller.
M.check_options = core.check_options

-- Compute tasks and pools (lua/sky/compute.lua, pool.lua, providers/).
local compute = require "sky.compute"
M.compute = compute.compute
M.info = compute.info
M.shard = require "sky.shard"
-- Distributed collections held by the driver (Skyward's sky.dict, counter, queue, barrier, lock).
local collections = require "sky.collections"
M.dict, M.counter, M.queue, M.barrier, M.lock = collections.dict, collections.counter, collections.queue,
  collections.barrier, collections.lock
M.ComputePool = require("sky.pool").ComputePool
M.providers = require "sky.providers"
M.accelerators = require "sky.accelerators"  -- sky.accelerators.H100{count = 8}; the catalog
M.plugins = require "sky.plugins"   -- sky.plugins.huggingface{token=}, sky.plugins.torch{backend=}
M.Image = require("sky.image").Image
M.free_port = require("sky.pool.core").free_port

return M
