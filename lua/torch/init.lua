-- torch: a minimal tensor module for job code and tests, backed by LibTorch (skyrun.torch).
--   local torch = require "torch"
--   local t = torch.tensor({{1, 2}, {3, 4}}, {dtype = "float32"})
--   print(t.shape[1], t.dtype, t.device, (t * 2):sum():item(), t:tolist()[2][1])
-- Dimensions given to methods are 1-based (negative ones count from the end); dtypes are
-- named as torch names them without "torch." ("float32", "bfloat16", "int64", ...).

local core = require "skyrun.torch"

local M = {}

M.tensor = core.tensor
M.zeros = core.zeros
M.ones = core.ones
M.randn = core.randn
M.rand = core.rand
M.full = core.full
M.arange = core.arange
M.cat = core.cat
M.stack = core.stack
M.manual_seed = core.manual_seed
M.is_tensor = core.is_tensor
M.__version__ = core.version()

M.float32, M.float, M.float16, M.half = "float32", "float32", "float16", "float16"
M.bfloat16, M.float64, M.double = "bfloat16", "float64", "float64"
M.int64, M.long, M.int32, M.int, M.uint8, M.bool = "int64", "int64", "int32", "int32", "uint8", "bool"

-- device: a 0-based index, "cuda:N" or nil (the current device), as torch.cuda takes it.
local function device_index(device, fname)
  if device == nil then return nil end
  if type(device) == "number" and device >= 0 and device == math.floor(device) then return device end
  local n = type(device) == "string" and (device == "cuda" and -1 or tonumber(device:match("^cuda:(%d+)$")))
  if n then return n >= 0 and n or nil end
  error(string.format("bad argument #1 to 'torch.cuda.%s' (device index or \"cuda:N\" expected, got %s)", fname,
    tostring(device)), 3)
end

local function memory_counter(what, fname)
  return function(device) return core.cuda_memory_stat(what, device_index(device, fname)) end
end

--- torch.cuda: is_available(), device_count(), synchronize(), and the caching allocator's
--- counters in bytes as the FSDP seed reads them: memory_allocated(device), max_memory_allocated,
--- memory_reserved, max_memory_reserved, reset_peak_memory_stats(device). They are 0 on a
--- machine without CUDA.
M.cuda = {
  is_available = core.cuda_is_available,
  device_count = core.cuda_device_count,
  synchronize = function() core.cuda_synchronize() end,
  memory_allocated = memory_counter("allocated", "memory_allocated"),
  max_memory_allocated = memory_counter("max_allocated", "max_memory_allocated"),
  memory_reserved = memory_counter("reserved", "memory_reserved"),
  max_memory_reserved = memory_counter("max_reserved", "max_memory_reserved"),
  reset_peak_memory_stats = function(device)
    core.cuda_reset_peak_memory_stats(device_index(device, "reset_peak_memory_stats"))
  end,
}

--- torch.allclose(a, b, {atol=, rtol=})
function M.allclose(a, b, opts) return a:allclose(b, opts) end

return M
