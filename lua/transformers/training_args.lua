-- transformers.training_args: TrainingArguments with HuggingFace's names, defaults (transformers
-- 5.x) and validation. Pure Lua: building the arguments never loads LibTorch. Names HF knows but
-- we do not implement are refused with "not supported yet: <name>", never silently ignored.

local core = require "sky.core"

local M = {}

-- name -> {type, default}. type: "number", "integer", "boolean", "string", "table", "any",
-- "string|table", "number|string", "boolean|string". A default of NONE means nil.
local NONE = {}
local FIELDS = {
  output_dir = { "string", "trainer_output" },
  overwrite_output_dir = { "boolean", false },
  do_train = { "boolean", false },
  do_eval = { "boolean", false },
  do_predict = { "boolean", false },
  num_train_epochs = { "number", 3.0 },
  max_steps = { "integer", -1 },
  per_device_train_batch_size = { "integer", 8 },
  per_device_eval_batch_size = { "integer", 8 },
  gradient_accumulation_steps = { "integer", 1 },
  learning_rate = { "number", 5e-5 },
  weight_decay = { "number", 0.0 },
  adam_beta1 = { "number", 0.9 },
  adam_beta2 = { "number", 0.999 },
  adam_epsilon = { "number", 1e-8 },
  optim = { "string", "adamw_torch" },
  lr_scheduler_type = { "string", "linear" },
  lr_scheduler_kwargs = { "table", NONE },
  warmup_steps = { "number", 0 },
  warmup_ratio = { "number", 0.0 },
  max_grad_norm = { "number", 1.0 },
  bf16 = { "boolean", false },
  fp16 = { "boolean", false },
  bf16_full_eval = { "boolean", false },
  gradient_checkpointing = { "boolean", false },
  gradient_checkpointing_kwargs = { "table", NONE },
  logging_strategy = { "string", "steps" },
  logging_steps = { "number", 500 },
  logging_first_step = { "boolean", false },
  logging_dir = { "string", NONE },
  eval_strategy = { "string", "no" },
  eval_steps = { "number", NONE },
  save_strategy = { "string", "steps" },
  save_steps = { "number", 500 },
  save_total_limit = { "integer", NONE },
  save_only_model = { "boolean", false },
  load_best_model_at_end = { "boolean", false },
  metric_for_best_model = { "string", NONE },
  greater_is_better = { "boolean", NONE },
  seed = { "integer", 42 },
  data_seed = { "integer", NONE },
  dataloader_drop_last = { "boolean", false },
  dataloader_num_workers = { "integer", 0 },
  remove_unused_columns = { "boolean", true },
  label_names = { "table", NONE },
  report_to = { "string|table", "none" },
  disable_tqdm = { "boolean", NONE },
  resume_from_checkpoint = { "boolean|string", NONE },
  group_by_length = { "boolean", false },
  length_column_name = { "string", "length" },
  use_cpu = { "boolean", false },
  run_name = { "string", NONE },
  prediction_loss_only = { "boolean", false },
  -- ours: CUDA graphs of the whole step for static shapes (the Trainer's engine), not torch.compile
  torch_compile = { "boolean", false },
  dataloader_pin_memory = { "boolean", true },
  -- DDP's find_unused_parameters (None: the Trainer decides, as HF's); kept for the DDP step
  ddp_find_unused_parameters = { "boolean", NONE },
  -- our extension: false keeps the dataset's order (HF's sequential sampler)
  train_shuffle = { "boolean", true },
  -- the Hub (Trainer:push_to_hub, and pushes at every save as hub_strategy says)
  push_to_hub = { "boolean", false },
  hub_model_id = { "string", NONE },
  hub_strategy = { "string", "every_save" },
  hub_token = { "string", NONE },
  hub_private_repo = { "boolean", NONE },
  hub_always_push = { "boolean", false },
  hub_revision = { "string", NONE },
  -- FSDP as HF's: "full_shard auto_wrap" (or a list of those words, or true) and its config;
  -- without them the environment sky.plugins.accelerate sets decides (transformers.fsdp)
  fsdp = { "string|table|boolean", "" },
  fsdp_config = { "table", NONE },
  ddp_bucket_cap_mb = { "number", NONE },
  -- num_items_in_batch summed over the ranks (and the loss times the world size), HF 5.x's default
  average_tokens_across_devices = { "boolean", true },
}

-- TrainingArguments fields of transformers 5.x that we do not implement (yet).
local UNSUPPORTED = {
  "eval_accumulation_steps", "eval_delay", "torch_empty_cache_steps", "log_level", "log_level_replica",
  "log_on_each_node", "logging_nan_inf_filter", "save_safetensors", "save_on_each_node",
  "restore_callback_states_from_checkpoint", "jit_mode_eval", "fp16_opt_level",
  "half_precision_backend", "fp16_full_eval", "tf32", "local_rank", "ddp_backend", "tpu_num_cores",
  "dataloader_prefetch_factor", "past_index", "ignore_data_skip",
  "deepspeed", "accelerator_config", "parallelism_config", "label_smoothing_factor", "debug",
  "optim_args", "project", "trackio_space_id",
  "ddp_broadcast_buffers", "dataloader_persistent_workers",
  "skip_memory_metrics",
  "include_for_metrics", "eval_do_concat_batches", "auto_find_batch_size", "full_determinism",
  "torchdynamo", "ray_scope", "ddp_timeout", "torch_compile_backend",
  "torch_compile_mode", "include_tokens_per_second", "include_num_input_tokens_seen",
  "neftune_noise_alpha", "optim_target_modules", "batch_eval_metrics", "eval_on_start",
  "use_liger_kernel", "liger_kernel_config", "eval_use_gather_object",
  "use_mps_device", "no_cuda", "evaluation_strategy",
}
local UNSUPPORTED_SET = {}
for _, n in ipairs(UNSUPPORTED) do UNSUPPORTED_SET[n] = true end

-- The option schema sky.core.check_options checks (unsupported names are there for its "did you
-- mean"; they are refused as not supported before it runs).
local SCHEMA = {}
for k, f in pairs(FIELDS) do SCHEMA[k] = f[1] end
for _, n in ipairs(UNSUPPORTED) do SCHEMA[n] = "any" end

M.SCHEDULERS = { "linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr" }
M.OPTIMIZERS = { "adamw_torch", "adamw_torch_fused", "sgd" }
local HF_SCHEDULERS = { "cosine_with_restarts", "polynomial", "inverse_sqrt", "reduce_lr_on_plateau",
  "cosine_warmup_with_min_lr", "warmup_stable_decay" }
local HF_OPTIMIZERS = { "adamw_torch_xla", "adamw_torch_npu_fused", "adamw_apex_fused", "adafactor",
  "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "adagrad", "adamw_bnb_8bit",
  "adamw_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit", "paged_adamw_8bit", "rmsprop",
  "galore_adamw", "lomo", "adalomo", "grokadamw", "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw",
  "stable_adamw" }
local STRATEGIES = { no = true, steps = true, epoch = true }
local REPORTERS = { none = true, jsonl = true, tensorboard = true, all = true }

local function list_has(list, v)
  for _, x in ipairs(list) do if x == v then return true end end
  return false
end

local function bad(msg) error("TrainingArguments: " .. msg, 3) end

local Args = {}
Args.__index = Args
Args.__name = "TrainingArguments"

-- Reads and validates the option table; level 3 blames the job's line.
local function build(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("options to 'TrainingArguments' must be a table (got " .. type(opts) .. ")", 3)
  end
  opts = opts or {}
  local self = setmetatable({}, Args)
  for k in pairs(opts) do
    if UNSUPPORTED_SET[k] then
      if k == "evaluation_strategy" then error("TrainingArguments: 'evaluation_strategy' was renamed 'eval_strategy' in transformers 4.46", 3) end
      error("not supported yet: TrainingArguments." .. k, 3)
    end
  end
  core.check_options(opts, SCHEMA, "TrainingArguments", 3)
  for k, v in pairs(opts) do self[k] = v end
  for k, f in pairs(FIELDS) do
    if self[k] == nil and f[2] ~= NONE then self[k] = f[2] end
  end

  -- HF's __post_init__ checks, in its order where it matters.
  for _, k in ipairs { "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps" } do
    if self[k] < 1 then bad(string.format("%s must be a positive integer, got %d", k, self[k])) end
  end
  if self.num_train_epochs < 0 then bad("num_train_epochs must be >= 0, got " .. self.num_train_epochs) end
  if self.max_steps == 0 or self.max_steps < -1 then bad("max_steps must be a positive integer or -1 (use num_train_epochs), got " .. self.max_steps) end
  if self.learning_rate < 0 then bad("learning_rate must be >= 0, got " .. self.learning_rate) end
  if self.adam_beta1 < 0 or self.adam_beta1 >= 1 then bad("adam_beta1 must lie in [0, 1), got " .. self.adam_beta1) end
  if self.adam_beta2 < 0 or self.adam_beta2 >= 1 then bad("adam_beta2 must lie in [0, 1), got " .. self.adam_beta2) end
  if self.adam_epsilon < 0 then bad("adam_epsilon must be >= 0, got " .. self.adam_epsilon) end
  if self.weight_decay < 0 then bad("weight_decay must be >= 0, got " .. self.weight_decay) end
  if self.dataloader_num_workers < 0 then bad("dataloader_num_workers must be >= 0, got " .. self.dataloader_num_workers) end
  if self.save_total_limit ~= nil and self.save_total_limit < 0 then bad("save_total_limit must be >= 0, got " .. self.save_total_limit) end
  if self.warmup_steps < 0 then bad("warmup_steps must be >= 0, got " .. self.warmup_steps) end
  if self.warmup_ratio < 0 or self.warmup_ratio > 1 then bad("warmup_ratio must lie in range [0,1], got " .. self.warmup_ratio) end

  if not list_has(M.SCHEDULERS, self.lr_scheduler_type) then
    if list_has(HF_SCHEDULERS, self.lr_scheduler_type) then error("not supported yet: lr_scheduler_type '" .. self.lr_scheduler_type .. "'", 3) end
    local hint = core.suggest(self.lr_scheduler_type, M.SCHEDULERS)
    bad(string.format("'%s' is not a valid SchedulerType, please select one of %s%s", self.lr_scheduler_type,
      "'" .. table.concat(M.SCHEDULERS, "', '") .. "'", hint and (" (did you mean '" .. hint .. "'?)") or ""))
  end
  if self.lr_scheduler_type == "cosine_with_min_lr" then
    local kw = self.lr_scheduler_kwargs or {}
    if kw.min_lr == nil and kw.min_lr_rate == nil then
      bad("lr_scheduler_type 'cosine_with_min_lr' needs lr_scheduler_kwargs = { min_lr = ... } or { min_lr_rate = ... }")
    end
  end
  if not list_has(M.OPTIMIZERS, self.optim) then
    if list_has(HF_OPTIMIZERS, self.optim) then error("not supported yet: optim '" .. self.optim .. "'", 3) end
    local hint = core.suggest(self.optim, M.OPTIMIZERS)
    bad(string.format("'%s' is not a valid OptimizerNames, please select one of '%s'%s", self.optim,
      table.concat(M.OPTIMIZERS, "', '"), hint and (" (did you mean '" .. hint .. "'?)") or ""))
  end
  if self.bf16 and self.fp16 then bad("At most one of fp16 and bf16 can be True, but not both") end
  -- HF sets accelerate's environment from fsdp/fsdp_config; PartialState reads it (or what the
  -- accelerate plugin set) when the arguments are made
  local fsdp = require "transformers.fsdp"
  local ok, plugin = pcall(function()
    local env = fsdp.training_args_env(self.fsdp, self.fsdp_config)
    if env and os.getenv("ACCELERATE_MIXED_PRECISION") then env.ACCELERATE_MIXED_PRECISION = os.getenv("ACCELERATE_MIXED_PRECISION") end
    return fsdp.resolve(env)
  end)
  if not ok then error(plugin, 3) end
  self.fsdp_plugin = plugin
  if plugin and plugin.activation_checkpointing and self.gradient_checkpointing then
    bad("The activation_checkpointing in FSDP config and the gradient_checkpointing in training arg can't be set to True simultaneously. " ..
      "Please use FSDP's activation_checkpointing logic when using FSDP.")
  end

  for _, k in ipairs { "logging_strategy", "eval_strategy", "save_strategy" } do
    local v = self[k]
    if not (STRATEGIES[v] or (k == "save_strategy" and v == "best")) then
      local choices = k == "save_strategy" and "'no', 'steps', 'epoch', 'best'" or "'no', 'steps', 'epoch'"
      bad(string.format("%s '%s' is not valid, please select one of %s", k, v, choices))
    end
  end
  for _, k in ipairs { "logging_steps", "save_steps" } do
    local v = self[k]
    if v <= 0 or (v > 1 and v ~= math.floor(v)) then
      bad(string.format("%s must be an integer >= 1 or a ratio in (0, 1], got %s", k, tostring(v)))
    end
  end
  if self.eval_strategy == "steps" and (self.eval_steps == nil or self.eval_steps == 0) then
    if self.logging_steps > 0 then
      self.eval_steps = self.logging_steps
    else
      bad("evaluation strategy steps requires either non-zero --eval_steps or --logging_steps")
    end
  end
  if self.eval_steps ~= nil and (self.eval_steps <= 0 or (self.eval_steps > 1 and self.eval_steps ~= math.floor(self.eval_steps))) then
    bad("eval_steps must be an integer >= 1 or a ratio in (0, 1], got " .. tostring(self.eval_steps))
  end
  if self.save_strategy == "best" and self.metric_for_best_model == nil then
    bad("save_strategy 'best' requires metric_for_best_model to be set")
  end
  if self.load_best_model_at_end and self.save_strategy ~= "best" then
    if self.eval_strategy ~= self.save_strategy then
      bad(string.format("--load_best_model_at_end requires the save and eval strategy to match, but found\n" ..
        "- Evaluation strategy: %s\n- Save strategy: %s", self.eval_strategy, self.save_strategy))
    end
    if self.eval_strategy == "steps" then
      local es, ss = self.eval_steps, self.save_steps
      if (es < 1) ~= (ss < 1) then
        bad(string.format("--load_best_model_at_end requires the saving steps to be a round multiple of the evaluation steps, but found %s, which is not a round multiple of %s.", tostring(ss), tostring(es)))
      elseif es >= 1 and ss % es ~= 0 then
        bad(string.format("--load_best_model_at_end requires the saving steps to be a round multiple of the evaluation steps, but found %d, which is not a round multiple of %d.", ss, es))
      elseif es < 1 and math.abs(ss / es - math.floor(ss / es + 0.5)) > 1e-9 then
        bad(string.format("--load_best_model_at_end requires the saving steps to be a round multiple of the evaluation steps, but found %s, which is not a round multiple of %s.", tostring(ss), tostring(es)))
      end
    end
  end
  if (self.load_best_model_at_end or self.save_strategy == "best") and self.metric_for_best_model == nil then
    self.metric_for_best_model = "loss"
  end
  if self.greater_is_better == nil and self.metric_for_best_model ~= nil then
    local m = self.metric_for_best_model
    self.greater_is_better = not (m == "loss" or m == "eval_loss" or m:sub(-5) == "_loss")
  end

  local HUB_STRATEGIES = { "end", "every_save", "checkpoint", "all_checkpoints" }
  if not list_has(HUB_STRATEGIES, self.hub_strategy) then
    bad(string.format("hub_strategy '%s' is not valid, please select from %s", self.hub_strategy,
      "'" .. table.concat(HUB_STRATEGIES, "', '") .. "'"))
  end
  -- report_to: "none", "jsonl", "tensorboard", "all" or a list of them
  local reporters = type(self.report_to) == "table" and self.report_to or { self.report_to }
  local list = {}
  for _, r in ipairs(reporters) do
    if type(r) ~= "string" then bad("report_to entries must be strings") end
    if not REPORTERS[r] then
      if r == "wandb" or r == "mlflow" or r == "comet_ml" or r == "trackio" or r == "clearml" or r == "dvclive" or r == "neptune" then
        error("not supported yet: report_to '" .. r .. "'", 3)
      end
      local names = {}
      for n in pairs(REPORTERS) do names[#names + 1] = n end
      local hint = core.suggest(r, names)
      bad(string.format("report_to '%s' is not valid, please select from 'none', 'jsonl', 'tensorboard', 'all'%s", r,
        hint and (" (did you mean '" .. hint .. "'?)") or ""))
    end
    if r == "all" then
      list[#list + 1] = "jsonl"; list[#list + 1] = "tensorboard"
    elseif r ~= "none" then
      list[#list + 1] = r
    end
  end
  self.reporters = list
  if self.logging_dir == nil then
    local host = os.getenv("HOSTNAME")
    if not host then
      local f = io.open("/etc/hostname")
      host = f and f:read("*l") or "localhost"
      if f then f:close() end
    end
    self.logging_dir = self.output_dir .. "/runs/" .. os.date("!%b%d_%H-%M-%S") .. "_" .. host
  end
  if self.label_names ~= nil then
    for i, n in ipairs(self.label_names) do
      if type(n) ~= "string" then bad("label_names[" .. i .. "] must be a string") end
    end
  end
  return self
end

--- The total optimizer steps of warmup for a run of `total` steps (HF: warmup_steps wins; a
--- value < 1 is a ratio; else ceil(warmup_ratio * total)).
function Args:get_warmup_steps(total)
  if self.warmup_steps > 0 then
    if self.warmup_steps < 1 then return math.ceil(self.warmup_steps * total) end
    return math.floor(self.warmup_steps)
  end
  return math.ceil(self.warmup_ratio * total)
end

--- A step count that may be a ratio of the run (logging_steps = 0.1 is every 10% of the steps).
function Args:steps_of(name, total)
  local v = self[name]
  if v == nil then return nil end
  if v < 1 then return math.ceil(v * total) end
  return math.floor(v)
end

-- HF's to_dict: a field ending in "_token" is written as "<FIELD_NAME>", never its value.
local function shown(k, v)
  if v ~= nil and k:match("_token$") then return "<" .. k:upper() .. ">" end
  return v
end

function Args:to_dict()
  local out = {}
  for k in pairs(FIELDS) do out[k] = shown(k, self[k]) end
  return out
end

function Args:__tostring()
  local keys = {}
  for k in pairs(FIELDS) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = shown(k, self[k])
    if v ~= nil then
      if type(v) == "table" then v = "{...}" end
      parts[#parts + 1] = k .. "=" .. tostring(v)
    end
  end
  return "TrainingArguments(" .. table.concat(parts, ", ") .. ")"
end

-- Unknown fields read from an arguments object are errors too (a typo in args.learnig_rate).
Args.__index = function(t, k)
  local m = rawget(Args, k)
  if m ~= nil then return m end
  if FIELDS[k] or k == "reporters" or k == "fsdp_plugin" then return nil end
  -- fields a subclass declares (trl's SFTConfig) read as nil when unset, as HF dataclass fields do
  local extra = rawget(t, "_extra_fields")
  if extra and extra[k] then return nil end
  local names = {}
  for n in pairs(FIELDS) do names[#names + 1] = n end
  local hint = type(k) == "string" and core.suggest(k, names)
  error(string.format("TrainingArguments has no field '%s'%s", tostring(k), hint and (" (did you mean '" .. hint .. "'?)") or ""), 2)
end

M.FIELDS = FIELDS

function M.is_training_arguments(v) return getmetatable(v) == Args end

M.TrainingArguments = setmetatable({}, {
  __call = function(_, opts)
    local args = build(opts)  -- not a tail call: errors at level 3 name the job's line
    return args
  end,
  __tostring = function() return "TrainingArguments" end,
})

return M
