-- transformers.quantization: BitsAndBytesConfig with transformers 5.x's names and defaults. Passed
-- as from_pretrained(id, {quantization_config = ...}) it stores the linear layers (not the output
-- layer, embeddings or norms) in bitsandbytes' 4-bit format (src/nn/quant4.cpp).

local core = require "sky.core"
local tcore = require "transformers.train_core"

local M = {}

local BNB = {}
BNB.__index = BNB
BNB.__name = "BitsAndBytesConfig"
function BNB.__tostring(self) return "BitsAndBytesConfig " .. self:to_json_string() end

local OPTIONS = {
  load_in_4bit = "boolean", load_in_8bit = "boolean", bnb_4bit_quant_type = "string",
  bnb_4bit_use_double_quant = "boolean", bnb_4bit_compute_dtype = "string", bnb_4bit_quant_storage = "string",
  llm_int8_skip_modules = "table", llm_int8_threshold = "number", llm_int8_has_fp16_weight = "boolean",
  llm_int8_enable_fp32_cpu_offload = "boolean",
}
local DTYPES = { float32 = "float32", fp32 = "float32", float = "float32", bfloat16 = "bfloat16", bf16 = "bfloat16",
  float16 = "float16", fp16 = "float16", half = "float16" }

--- BitsAndBytesConfig{ load_in_4bit = true, bnb_4bit_quant_type = "nf4" | "fp4" (default "fp4"),
---   bnb_4bit_use_double_quant = false, bnb_4bit_compute_dtype = "float32" | "bfloat16" | "float16",
---   llm_int8_skip_modules = {...} }
function M.BitsAndBytesConfig(opts)
  opts = core.check_options(opts, OPTIONS, "BitsAndBytesConfig", 3)
  if opts.load_in_8bit then error("not supported yet: load_in_8bit (8-bit weights); load_in_4bit works", 2) end
  if opts.load_in_4bit and opts.load_in_8bit then error("load_in_4bit and load_in_8bit are both True, but only one can be used at the same time", 2) end
  local qt = opts.bnb_4bit_quant_type or "fp4"
  if qt ~= "nf4" and qt ~= "fp4" then error("bnb_4bit_quant_type must be \"nf4\" or \"fp4\" (got \"" .. qt .. "\")", 2) end
  local cd = opts.bnb_4bit_compute_dtype or "float32"
  cd = DTYPES[(cd:gsub("^torch%.", ""))]
  if not cd then error("bnb_4bit_compute_dtype must be \"float32\", \"bfloat16\" or \"float16\" (got \"" .. opts.bnb_4bit_compute_dtype .. "\")", 2) end
  local storage = opts.bnb_4bit_quant_storage or "uint8"
  if storage ~= "uint8" then error("not supported yet: bnb_4bit_quant_storage = \"" .. storage .. "\"", 2) end
  return setmetatable({
    load_in_4bit = opts.load_in_4bit or false, load_in_8bit = false, bnb_4bit_quant_type = qt,
    bnb_4bit_use_double_quant = opts.bnb_4bit_use_double_quant or false, bnb_4bit_compute_dtype = cd,
    bnb_4bit_quant_storage = storage, llm_int8_skip_modules = opts.llm_int8_skip_modules,
    llm_int8_threshold = opts.llm_int8_threshold or 6.0, llm_int8_has_fp16_weight = opts.llm_int8_has_fp16_weight or false,
    llm_int8_enable_fp32_cpu_offload = opts.llm_int8_enable_fp32_cpu_offload or false,
  }, BNB)
end

function M.is_bnb_config(v) return getmetatable(v) == BNB end

--- to_dict(): what transformers writes as config.json's quantization_config
function BNB:to_dict()
  if not self.load_in_4bit then error("BitsAndBytesConfig: set load_in_4bit = true", 2) end
  local skip = tcore.json_null
  if self.llm_int8_skip_modules then
    skip = setmetatable({}, { __jsontype = "array" })
    for i, v in ipairs(self.llm_int8_skip_modules) do skip[i] = v end
  end
  return {
    _load_in_4bit = self.load_in_4bit, _load_in_8bit = self.load_in_8bit, bnb_4bit_compute_dtype = self.bnb_4bit_compute_dtype,
    bnb_4bit_quant_storage = self.bnb_4bit_quant_storage, bnb_4bit_quant_type = self.bnb_4bit_quant_type,
    bnb_4bit_use_double_quant = self.bnb_4bit_use_double_quant,
    llm_int8_enable_fp32_cpu_offload = self.llm_int8_enable_fp32_cpu_offload,
    llm_int8_has_fp16_weight = self.llm_int8_has_fp16_weight, llm_int8_skip_modules = skip,
    llm_int8_threshold = self.llm_int8_threshold, load_in_4bit = self.load_in_4bit, load_in_8bit = self.load_in_8bit,
    quant_method = "bitsandbytes",
  }
end

function BNB:to_json_string() return tcore.json_encode(self:to_dict(), 2) end

return M
