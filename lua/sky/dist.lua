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
  "init_process_group", -- {backend=, rank=, world_size=, local_rank=, master_addr=, master_port=, timeout=}
  "is_initialized",
  "rank",
  "world_size",
  "backend",            -- "gloo" | "nccl"
  "barrier",
  "all_reduce",         -- (number | {numbers}, op = "sum"|"max"|"min"|"avg"|"product") -> same shape
  "broadcast",          -- (value, src = 0): nil, boolean, string, number or {numbers} from rank src
  "destroy_process_group",
  "free_port",
  "local_address_towards",
}
for _, name in ipairs(names) do
  M[name] = function(...) return lib()[name](...) end
end

-- The group is gone once the process has none; is_initialized answers without loading LibTorch.
function M.is_initialized()
  return native ~= nil and native.is_initialized()
end

return M
