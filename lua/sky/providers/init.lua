-- sky.providers: where workers run. Each provider lives in lua/sky/providers/<name>.lua and
-- returns a factory: sky.providers.local_{...} (also sky.providers["local"]), sky.providers.ssh{...}.
--
-- A provider is a table with:
--   name                         "local", "ssh", ...
--   spawn(self, node, slot, ctx) -> a skyrun.Connection to a fresh `skyrun worker` (required).
--                                C++ providers make one with sky::pool::connection_push(L, transport)
--                                (src/pool/transport.hpp); ctx = {pool, nodes, concurrency, image,
--                                head_address, accelerator}
--   open(self, ctx, pool)        optional: prepare the nodes (apply the image) before spawning
--   head_address(self)           optional: the address other nodes reach node 1 at (default 127.0.0.1)
--   node_address(self, i)        optional: the address other nodes reach node i at (sky.info().address)
--   close(self, pool)            optional: release hosts/sessions
--   __tostring                   a description without secrets
local M = {}

local aliases = { local_ = "local", Local = "local" }

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
