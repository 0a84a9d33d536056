-- trl.sft_config: SFTConfig, TrainingArguments plus TRL's SFT fields, with TRL 1.x's defaults
-- (learning_rate 2e-5, logging_steps 10, gradient_checkpointing on, bf16 unless fp16) and checks.
-- The result is a TrainingArguments object (the Trainer takes it as is) carrying the SFT fields.

local core = require "sky.core"
local training_args = require "transformers.training_args"

local M = {}

local NONE = {}
-- name -> {type, default} for TRL's own fields
local SFT_FIELDS = {
  model_init_kwargs = { "table", NONE },
  trust_remote_code = { "boolean", false },
  chat_template_path = { "string", NONE },
  dataset_text_field = { "string", "text" },
  dataset_kwargs = { "table", NONE },
  dataset_num_proc = { "integer", NONE },
  eos_token = { "string", NONE },
  pad_token = { "string", NONE },
  max_length = { "integer", 1024 },
  truncation_mode = { "string", "keep_start" },
  shuffle_dataset = { "boolean", false },
  packing = { "boolean", false },
  packing_strategy = { "string", "bfd" },
  padding_free = { "boolean", false },
  pad_to_multiple_of = { "integer", NONE },
  eval_packing = { "boolean", NONE },
  completion_only_loss = { "boolean", NONE },
  assistant_only_loss = { "boolean", false },
  loss_type = { "string", NONE },
  activation_offloading = { "boolean", false },
}

-- TrainingArguments defaults that TRL changes.
local TRL_DEFAULTS = { learning_rate = 2e-5, logging_steps = 10, gradient_checkpointing = true }

local function fail(msg) error("SFTConfig: " .. msg, 4) end

local function type_ok(t, v)
  if t == "integer" then return type(v) == "number" and v == math.floor(v) end
  return type(v) == t
end

local function build(opts)
  if opts ~= nil and type(opts) ~= "table" then error("options to 'SFTConfig' must be a table (got " .. type(opts) .. ")", 3) end
  opts = opts or {}
  local sft, base = {}, {}
  for k, v in pairs(opts) do
    if SFT_FIELDS[k] then
      if not type_ok(SFT_FIELDS[k][1], v) then
        fail(string.format("option '%s' must be %s (got %s)", k,
          SFT_FIELDS[k][1] == "integer" and "an integer" or "a " .. SFT_FIELDS[k][1], type(v)))
      end
      sft[k] = v
    else
      base[k] = v
    end
  end
  for k, v in pairs(TRL_DEFAULTS) do if base[k] == nil then base[k] = v end end
  if base.bf16 == nil then base.bf16 = not base.fp16 end
  local ok, args = pcall(training_args.TrainingArguments, base)
  if not ok then
    local msg = tostring(args):gsub("^[^\n]-%.lua:%d+: ", "")
    local unknown = msg:match("^unknown option '([^']+)' to 'TrainingArguments'")
    if unknown then
      local names = {}
      for n in pairs(SFT_FIELDS) do names[#names + 1] = n end
      for n in pairs(training_args.FIELDS) do names[#names + 1] = n end
      local hint = core.suggest(unknown, names)
      msg = string.format("unknown option '%s' to 'SFTConfig'%s", unknown, hint and (" (did you mean '" .. hint .. "'?)") or "")
    end
    error((msg:gsub("TrainingArguments", "SFTConfig")), 3)
  end
  rawset(args, "_extra_fields", SFT_FIELDS)
  for k, f in pairs(SFT_FIELDS) do
    local v = sft[k]
    if v == nil and f[2] ~= NONE then v = f[2] end
    rawset(args, k, v)
  end
  -- TRL's __post_init__
  if args.packing_strategy == "bfd-requeue" then rawset(args, "packing_strategy", "bfd_split") end
  if args.packing_strategy ~= "bfd" and args.packing_strategy ~= "bfd_split" and args.packing_strategy ~= "wrapped" then
    fail(string.format("Invalid packing strategy '%s', must be one of ('bfd', 'bfd_split', 'wrapped').", args.packing_strategy))
  end
  if args.truncation_mode ~= "keep_start" and args.truncation_mode ~= "keep_end" then
    fail(string.format("Unsupported truncation mode: %s, expected 'keep_start' or 'keep_end'", args.truncation_mode))
  end
  if args.loss_type == nil then rawset(args, "loss_type", "chunked_nll") end
  if args.loss_type == "dft" then error("not supported yet: SFTConfig loss_type 'dft'", 3) end
  if args.loss_type ~= "nll" and args.loss_type ~= "chunked_nll" then
    fail(string.format("loss_type must be 'nll', 'chunked_nll' or 'dft' (got '%s')", args.loss_type))
  end
  if args.activation_offloading then error("not supported yet: SFTConfig activation_offloading", 3) end
  if args.max_length ~= nil and args.max_length < 1 then fail("max_length must be a positive integer") end
  if args.dataset_kwargs ~= nil then
    for k in pairs(args.dataset_kwargs) do
      if k ~= "skip_prepare_dataset" then fail("dataset_kwargs: the only supported key is 'skip_prepare_dataset' (got '" .. tostring(k) .. "')") end
    end
  end
  rawset(args, "_sft", true)
  local base_to_dict = args.to_dict
  rawset(args, "to_dict", function(self)
    local d = base_to_dict(self)
    for k in pairs(SFT_FIELDS) do d[k] = rawget(self, k) end
    return d
  end)
  return args
end

M.SFT_FIELDS = SFT_FIELDS

function M.is_sft_config(v) return training_args.is_training_arguments(v) and rawget(v, "_sft") == true end

M.SFTConfig = setmetatable({}, {
  __call = function(_, opts)
    local args = build(opts)  -- not a tail call: errors at level 3 name the job's line
    return args
  end,
  __tostring = function() return "SFTConfig" end,
})

return M
