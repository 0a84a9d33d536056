-- Writes deep-nesting seeds for the JSON-reading fuzz targets (issue 12: every JSON reader stops at
-- 128 levels), one folder per target, under the folder given (default ./seeds):
--   skyrun tests/host/json_fuzz_seeds.lua DIR
--   fuzz_train_json DIR/train_json    (src/train/fuzz_train_json.cpp)
--   fuzz_tokenizer_load DIR/tokenizer (src/tokenize/fuzz_tokenizer_load.cpp; tools/fuzz_tokenizers.sh adds them)
--   fuzz_safetensors DIR/safetensors  (src/nn/fuzz_safetensors.cpp)
local fs = require "sky.fs"
local out = arg[1] or "seeds"

local function nest(n, open, close) return string.rep(open, n) .. string.rep(close, n) end
local function write(dir, name, data)
  fs.makedirs(out .. "/" .. dir)
  fs.write_atomic(out .. "/" .. dir .. "/" .. name, data)
end
local function le64(n)
  local b = {}
  for i = 1, 8 do b[i] = string.char(n % 256); n = math.floor(n / 256) end
  return table.concat(b)
end

-- At the limit, one past it, and far past it (the stack overflow of old), arrays and objects.
local docs = {
  ["array-128"] = nest(128, "[", "]"), ["array-129"] = nest(129, "[", "]"), ["array-100000"] = nest(100000, "[", "]"),
  ["object-129"] = string.rep('{"a":', 129) .. "1" .. string.rep("}", 129),
  ["mixed-200"] = string.rep('[{"k":', 100) .. "0" .. string.rep("}]", 100),
  ["unclosed-50000"] = string.rep("[", 50000),
}
for name, text in pairs(docs) do
  write("train_json", name .. ".json", text)
  write("tokenizer", name .. ".json", '{"version": "1.0", "model": {"type": "WordLevel", "vocab": ' .. text .. "}}")
  local header = '{"t": {"dtype": "F32", "shape": ' .. text .. ', "data_offsets": [0, 0]}}'
  write("safetensors", name .. ".safetensors", le64(#header) .. header)
end
print("deep-nesting seeds written under " .. out)
