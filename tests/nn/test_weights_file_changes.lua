-- A loaded model does not change or crash when its model.safetensors changes afterwards: the
-- weights of a file another process may write are read into memory of their own at load; only a
-- file that cannot change (a read-only mount) is used in place from its mapping.
package.path = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/nn/?.lua;" .. package.path
local T = require "testlib"
local N = require "nn_testing"
local transformers = require "transformers"

local INPUTS = { input_ids = { { 17, 42, 99, 7 } } }

local function fixture_copy()
  local dir = T.tmpdir()
  T.exec("cp " .. T.shell_quote(N.root .. "gpt2/config.json") .. " " .. T.shell_quote(N.root .. "gpt2/model.safetensors") ..
    " " .. T.shell_quote(dir))
  return dir
end

local function logits(model) return model(INPUTS).logits:tolist() end

-- Whether this process maps the file (a line of /proc/self/maps names it).
local function mapped(path)
  for line in io.lines("/proc/self/maps") do
    if line:sub(-#path) == path then return true end
  end
  return false
end

T.test("truncating model.safetensors after loading neither crashes nor changes the model", function()
  local dir = fixture_copy()
  local model = transformers.AutoModelForCausalLM.from_pretrained(dir)
  local before = logits(model)
  T.eq(mapped(dir .. "/model.safetensors"), false, "the weights are not a mapping of the file")
  io.open(dir .. "/model.safetensors", "wb"):close()  -- O_TRUNC, as cp or a failed save would
  T.eq(logits(model), before)
  collectgarbage()
  T.eq(logits(model), before)
end)

T.test("overwriting model.safetensors in place after loading does not change the logits", function()
  local dir = fixture_copy()
  local model = transformers.AutoModelForCausalLM.from_pretrained(dir)
  local before = logits(model)
  local path = dir .. "/model.safetensors"
  local size = require("sky.fs").stat(path).size
  local f = assert(io.open(path, "r+b"))
  f:seek("set", 4096)
  f:write(string.rep("\127", size - 4096))  -- every weight byte after the header becomes 0x7f
  f:close()
  T.eq(logits(model), before)
  -- replaced by another model's bytes the way cp does it (truncate, then write)
  T.exec("cp " .. T.shell_quote(N.root .. "llama/model.safetensors") .. " " .. T.shell_quote(path))
  T.eq(logits(model), before)
end)

T.test("a checkpoint on a read-only mount is used in place from its mapping", function()
  local dir = fixture_copy()
  local ro = T.tmpdir()
  T.exec("mount --bind " .. T.shell_quote(dir) .. " " .. T.shell_quote(ro) .. " && mount -o remount,bind,ro " ..
    T.shell_quote(ro))
  local ok, err = pcall(function()
    local model = transformers.AutoModelForCausalLM.from_pretrained(ro)
    local reference = transformers.AutoModelForCausalLM.from_pretrained(dir)
    T.eq(mapped(ro .. "/model.safetensors"), true, "float32 weights on the CPU alias the mapping")
    T.eq(logits(model), logits(reference))
    model = nil
    collectgarbage()
    collectgarbage()
  end)
  T.exec("umount -l " .. T.shell_quote(ro))
  if not ok then error(err, 0) end
end)

T.run()
