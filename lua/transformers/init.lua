-- transformers: HuggingFace's names, loaded lazily from the submodule that implements each.
-- Accessing transformers.Trainer requires "transformers.trainer" on first use, so a job that only
-- tokenizes never loads LibTorch.

local core = require "sky.core"

-- name -> submodule that exports it. Each subsystem adds its names here.
local EXPORTS = {
  -- tokenizers (src/tokenize)
  AutoTokenizer = "transformers.tokenization",
  PreTrainedTokenizerFast = "transformers.tokenization",
  -- models (src/nn)
  AutoConfig = "transformers.modeling",
  AutoModel = "transformers.modeling",
  AutoModelForCausalLM = "transformers.modeling",
  AutoModelForSequenceClassification = "transformers.modeling",
  pipeline = "transformers.pipelines",
  set_seed = "transformers.modeling",
  BitsAndBytesConfig = "transformers.quantization",
  -- training (src/train)
  TrainingArguments = "transformers.training_args",
  Trainer = "transformers.trainer",
  TrainerCallback = "transformers.trainer",
  EarlyStoppingCallback = "transformers.trainer",
  DataCollatorWithPadding = "transformers.data_collator",
  DataCollatorForLanguageModeling = "transformers.data_collator",
  default_data_collator = "transformers.data_collator",
}

local M = {}

setmetatable(M, {
  __index = function(t, name)
    local modname = EXPORTS[name]
    if not modname then
      local names = {}
      for k in pairs(EXPORTS) do names[#names + 1] = k end
      local hint = type(name) == "string" and core.suggest(name, names)
      error(string.format("transformers has no '%s'%s", tostring(name),
        hint and (" (did you mean '" .. hint .. "'?)") or ""), 2)
    end
    local ok, mod = pcall(require, modname)
    if not ok then
      if tostring(mod):find("module '" .. modname .. "' not found", 1, true) then
        error("not supported yet: transformers." .. name, 2)
      end
      error(mod, 0)
    end
    local value = mod[name]
    if value == nil then error("not supported yet: transformers." .. name, 2) end
    rawset(t, name, value)
    return value
  end,
})

return M
