-- sky.dist: this process's distributed group, as tasks see it. The torch plugin creates the group
-- on every worker before tasks run; a script started by a launcher (RANK, WORLD_SIZE, MASTER_ADDR,
-- MASTER_PORT set) can call init_process_group itself. LibTorch loads on the first call, not on
-- `require "sky"`.

---@class sky.dist
local M = {}

local native
local function lib()
  native = native or require "skyrun.dist"
  return native
end

local names = {
  "init_process_group", -- {backend=, rank=, world_size=, local_rank=, master_addr=, master_port=, timeout=,
                        --  secret= (default SKYRUN_DIST_SECRET: the same on every rank)}
  "is_initialized",
  "rank",
  "world_size",
  "backend",            -- "gloo" | "nccl"
  "barrier",
  "all_reduce",         -- (number | {numbers} | Tensor, op = "sum"|"max"|"min"|"avg"|"product") -> same
                        -- shape (a Tensor is reduced in place and returned)
  "broadcast",          -- (value, src = 0): nil, boolean, string, number, {numbers} from rank src, or a
                        -- Tensor overwritten in place on every rank
  "all_reduce_mean",    -- ({arrays}, {bucket_bytes=}) -> the arrays averaged over ranks (gradient sync)
  "sync_parameters",    -- ({Tensors}, src = 0): DDP's start, every rank takes rank src's values
  "sync_gradients",     -- ({Tensors}): DDP's step, each parameter's .grad averaged over ranks
  "destroy_process_group",
}
-- Why this process has no group although it should have one (a worker that replaced a dead
-- rank: rejoining a running group is not supported yet); raised by every group call.
local unavailable
local needs_group = { rank = true, world_size = true, backend = true, barrier = true, all_reduce = true,
                      broadcast = true, all_reduce_mean = true, sync_parameters = true, sync_gradients = true }

for _, name in ipairs(names) do
  if needs_group[name] then
    M[name] = function(...)
      if unavailable and not M.is_initialized() then error(unavailable, 2) end
      return lib()[name](...)
    end
  else
    M[name] = function(...) return lib()[name](...) end
  end
end

M.destroy = M.destroy_process_group  -- short name

--- Marks this process as one that cannot have a group, with the message group calls raise.
function M.set_unavailable(msg) unavailable = msg end

-- Address helpers that need no LibTorch (the driver picks a port with them).
local core = require "sky.dist.core"
M.free_port = core.free_port                         -- () -> a TCP port free on this host just now
M.local_address_towards = core.local_address_towards -- (host) -> this host's address on the route to host
M.new_secret = core.new_secret                       -- () -> a fresh pool secret (SKYRUN_DIST_SECRET)

-- The group is gone once the process has none; is_initialized answers without loading LibTorch.
function M.is_initialized()
  return native ~= nil and native.is_initialized()
end

return M
