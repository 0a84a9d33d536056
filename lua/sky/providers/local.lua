-- sky.providers.local_{...}: workers are `skyrun worker` processes on this machine, spoken to
-- over pipes. The image's env and files apply; its apt packages and setup commands change this
-- machine, so they run only with modify_host = true (otherwise a non-empty apt/setup is an error
-- naming the option, rather than being skipped silently).
--   modify_host  boolean: run the image's apt installs and setup lines here (default false)
--   cwd          the workers' working folder (default: the driver's)
--   command      argv of the worker process (default: this skyrun binary's `skyrun worker`)
--   gpus_per_node  workers per node, each a rank bound to its GPU (default: the pool's accelerator
--                count, else the GPUs this machine has, /dev/nvidia0..N; one worker without GPUs)
local core = require "sky.core"
local pcore = require "sky.pool.core"

local Local = {}
Local.__index = Local

function Local:spawn(node, slot, ctx)
  return pcore.spawn_local { argv = self.command, cwd = self.cwd, label = "node " .. node }
end

function Local:head_address() return "127.0.0.1" end

function Local:ranks_per_node(spec)
  return require("sky.providers").gpus_per_node(self.gpus_per_node, spec, require("sky.compute").gpus_seen)
end

-- Workers this machine can start now for this user: about two tasks each (the worker and its
-- output thread) under the process limit, two descriptors each in the driver under its limit.
local function check_limits(workers)
  local lim = pcore.limits()
  local need = 2 * workers
  if lim.nproc and not lim.privileged and need > lim.nproc - lim.tasks then
    error(string.format("sky.providers.local_: %d local workers need about %d processes, but this user may start " ..
      "about %d more (ulimit -u %d; %d running): use fewer nodes or raise the limit", workers, need,
      math.max(0, lim.nproc - lim.tasks), lim.nproc, lim.tasks), 0)
  end
  if lim.nofile and need > lim.nofile - lim.open_files - 16 then
    error(string.format("sky.providers.local_: %d local workers need %d open files in the driver, but it may open " ..
      "about %d more (ulimit -n %d): use fewer nodes or raise the limit", workers, need,
      math.max(0, lim.nofile - lim.open_files - 16), lim.nofile), 0)
  end
end

function Local:open(ctx, pool)
  check_limits((ctx.nodes or 1) * (ctx.concurrency or 1))
  local image = ctx.image or ((ctx.bootstrap and #ctx.bootstrap > 0) and require("sky.image").Image {})
  if not image then return end
  if image.apply_local then image:apply_local({ modify_host = self.modify_host, bootstrap = ctx.bootstrap }) end
end

function Local:__tostring()
  return "sky.providers.local_{" .. (self.modify_host and "modify_host=true" or "") .. "}"
end

return function(opts)
  opts = core.check_options(opts, { modify_host = "boolean", cwd = "string", command = "table", gpus_per_node = "integer" },
    "sky.providers.local_", 3)
  return setmetatable({ name = "local", spec_fields = { "nodes" }, modify_host = opts.modify_host == true, cwd = opts.cwd,
                        command = opts.command,
                        gpus_per_node = require("sky.providers").check_gpus_per_node(opts.gpus_per_node, "sky.providers.local_") },
                      Local)
end
