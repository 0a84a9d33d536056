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

M.cuda = {
  is_available = core.cuda_is_available,
  device_count = core.cuda_device_count,
}

--- torch.allclose(a, b, {atol=, rtol=})
function M.allclose(a, b, opts) return a:allclose(b, opts) end

return M
