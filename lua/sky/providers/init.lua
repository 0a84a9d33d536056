-- sky.providers: where workers run. Each provider lives in lua/sky/providers/<name>.lua and
-- returns a factory: sky.providers.local_{...} (also sky.providers["local"]), sky.providers.ssh{...},
-- sky.providers.slurm{...}.
--
-- A provider is a table with:
--   name                         "local", "ssh", ...
--   spawn(self, node, slot, ctx) -> a skyrun.Connection to a fresh `skyrun worker` (required).
--                                C++ providers make one with sky::pool::connection_push(L, transport)
--                                (src/pool/transport.hpp); ctx = {pool, pool_id, nodes, concurrency,
--                                image, bootstrap, head_address, accelerator, spec}. The pool calls it
--                                again for a node whose worker died: a provider that creates machines
--                                replaces a machine that is gone there.
--   spec_fields                  optional: the machine-spec fields of the pool it honours (lua/sky/spec.lua):
--                                "nodes" (a {min=, max=} range), "vcpus", "memory_gb", "disk_gb",
--                                "region", "allocation", "ttl", "max_hourly_cost". A pool that sets a
--                                field its provider does not list is an error naming both. Every
--                                provider takes `accelerator` and a plain node count.
--   open(self, ctx, pool)        optional: get and prepare the nodes (create machines, apply the image)
--                                before spawning. May return { nodes = n }: the nodes it gave, between
--                                spec.nodes.min and spec.nodes.max (default: spec.nodes.max).
--   head_address(self)           optional: the address other nodes reach node 1 at (default 127.0.0.1)
--   node_address(self, i)        optional: the address other nodes reach node i at (sky.info().address)
--   ranks_per_node(self, spec)   optional: workers per node, each a rank (one per GPU; default 1):
--                                the pool starts that many per node and broadcasts to every one
--   close(self, pool)            optional: release hosts/sessions; a provider that created machines
--                                ends them here (also when open failed half way, and on Ctrl-C)
--   __tostring                   a description without secrets
--
-- ctx.spec (sky.spec.from_options): accelerator (nil, or {name, count, memory_gb (nil: any variant),
-- entry = the catalog entry of lua/sky/accelerators.lua with each cloud's names}), nodes = {min, max},
-- vcpus, memory_gb, disk_gb, region, allocation ("spot-if-available", "spot", "on-demand",
-- "cheapest"), ttl (seconds, 0: none), max_hourly_cost (USD per hour for the whole pool), given.
-- ctx.pool_id ("sky-" and 8 hex digits) tags everything created for the pool.
--
-- Providers that create machines record each pool with sky.cloud.state (lua/sky/cloud/state.lua),
-- so that `skyrun instances` lists and `skyrun down [id]` ends what a driver left behind: the
-- record names a module with list(record) and terminate(record, ids).
local M = {}

local aliases = { local_ = "local", Local = "local" }

--- Workers per node when each is a rank, one per GPU (ranks_per_node): the provider's
--- gpus_per_node option, else the accelerator count the pool asks for ("H100:8"), else what
--- detect() finds on the node (nil or 0: one worker per node, as Skyward).
function M.gpus_per_node(option, spec, detect)
  if option then return option end
  if spec and spec.accelerator and (spec.accelerator.count or 1) > 1 then return spec.accelerator.count end
  local n = detect and detect() or nil
  return (n and n > 1) and n or 1
end

--- Checks a provider's gpus_per_node option: nil or an integer of at least 1.
function M.check_gpus_per_node(v, where)
  if v ~= nil and (type(v) ~= "number" or v ~= math.floor(v) or v < 1) then
    error(where .. ": option 'gpus_per_node' must be an integer of at least 1 (got " .. tostring(v) .. ")", 3)
  end
  return v
end

return setmetatable(M, {
  __index = function(t, k)
    local name = aliases[k] or k
    local ok, factory = pcall(require, "sky.providers." .. name)
    if not ok then
      if tostring(factory):find("module 'sky.providers." .. name .. "' not found", 1, true) then
        error("no provider '" .. tostring(k) .. "' (sky.providers has local_ and the providers under lua/sky/providers/)", 2)
      end
      error(factory, 2)
    end
    rawset(t, k, factory)
    return factory
  end,
})
