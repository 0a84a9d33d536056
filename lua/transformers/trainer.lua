-- transformers.trainer: HF's Trainer. The loop (epochs, gradient accumulation, logging,
-- evaluation, checkpoints, callbacks) is here and follows transformers 5.x's _inner_training_loop;
-- each step's tensor work (forward, backward, clipping, optimizer, schedule) is native
-- (skyrun.train's engine). Models come from transformers.modeling (src/nn).

local core = require "sky.core"
local tcore = require "transformers.train_core"
local training_args = require "transformers.training_args"
local collators = require "transformers.data_collator"

local M = {}

local function native() return require "skyrun.train" end
local json_encode, json_decode = tcore.json_encode, tcore.json_decode
local ARRAY = { __jsontype = "array" }

local wall = core.monotonic  -- seconds, sub-microsecond resolution (os.clock is CPU time)

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

local write_file_atomic = tcore.write_file_atomic

local fs = require "sky.fs"
local function mkdir_p(dir) fs.makedirs(dir) end  -- raises naming the folder and the reason
local function rm_rf(path) fs.remove_tree(path) end
local function is_dir(path)
  local st = fs.stat(path)
  return st ~= nil and st.kind == "dir"
end
local function list_dir(dir) return fs.listdir(dir) or {} end

-- ---- distributed: DDP over sky.dist's process group, when one of several ranks exists --------

local function dist_ctx()
  local ok, dist = pcall(require, "skyrun.dist")  -- the native module: a group made by any means
  if ok and dist.is_initialized() and dist.world_size() > 1 then
    return { dist = dist, rank = dist.rank(), world = dist.world_size() }
  end
  return { rank = 0, world = 1 }
end

-- ---- datasets: plain Lua lists of rows, or datasets.Dataset (1-based ds[i], #ds) --------------

local function ds_len(ds) return #ds end

local function to_plain(v)
  if type(v) == "userdata" or type(v) == "cdata" then
    local ok, t = pcall(function() return v:tolist() end)
    if ok then return t end
  end
  return v
end

local function ds_row(ds, i)
  local row = ds[i]
  if type(row) ~= "table" then error(string.format("dataset row %d is a %s, not a table of columns", i, type(row)), 0) end
  local plain = {}
  for k, v in pairs(row) do plain[k] = to_plain(v) end
  return plain
end

-- ---- models ----------------------------------------------------------------------------------

local function model_save(model, dir) model:save_pretrained(dir) end

-- FSDP: FULL_STATE_DICT gathers every parameter on every rank and rank 0 writes HF's folder;
-- SHARDED_STATE_DICT has each rank write its shards (pytorch_model_fsdp_0/). Every rank calls it.
local function fsdp_model_save(trainer, dir, sharded)
  local engine = trainer.engine
  if sharded then
    engine:fsdp_save_shards(dir)
    return
  end
  engine:fsdp_gather()
  local ok, err = pcall(function() if trainer._dist.rank == 0 then model_save(trainer.model, dir) end end)
  engine:fsdp_release()
  if not ok then error(err, 0) end
end

local function model_load(model, dir)
  local peft = package.loaded["peft"]
  if peft and peft.is_peft_model(model) then  -- a checkpoint of a PEFT model holds the adapter folder
    model:_load_adapter_weights(dir)
    return
  end
  native().load_weights(model, dir)
end

-- TrainingArguments.gradient_checkpointing: HF calls model.gradient_checkpointing_enable(kwargs).
local function gradient_checkpointing_on(model, args)
  local ok, enable = pcall(function() return model.gradient_checkpointing_enable end)
  if not ok or enable == nil then
    error("Trainer: gradient_checkpointing = true needs a model with gradient_checkpointing_enable (a transformers or peft model)", 4)
  end
  model:gradient_checkpointing_enable({ gradient_checkpointing_kwargs = args.gradient_checkpointing_kwargs })
end

-- The tokenizer's files beside the model: its save_pretrained when it has one, else a copy of the
-- tokenizer files of the folder it was loaded from (name_or_path), or of that Hub repo's cached
-- snapshot when name_or_path is a Hub id (no request: what from_pretrained fetched is there), so
-- the saved folder reloads offline.
local TOKENIZER_FILES = { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
  "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja" }
local function save_processing_class(pc, dir)
  if pc == nil then return end
  local ok, save = pcall(function() return pc.save_pretrained end)
  if ok and type(save) == "function" then
    pc:save_pretrained(dir)
    return
  end
  local ok2, src = pcall(function() return pc.name_or_path end)
  if not ok2 or type(src) ~= "string" or src == "" then return end
  local hub = not is_dir(src) and require "huggingface_hub"
  for _, f in ipairs(TOKENIZER_FILES) do
    local path = src .. "/" .. f
    if hub then path = hub.try_to_load_from_cache(src, f) end
    local data = path and read_file(path)
    if data then write_file_atomic(dir .. "/" .. f, data) end
  end
end

-- ---- callbacks ---------------------------------------------------------------------------------

local EVENTS = { "on_init_end", "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_step_begin",
  "on_step_end", "on_evaluate", "on_predict", "on_save", "on_log", "on_substep_end" }

--- TrainerCallback{ on_log = function(self, args, state, control, logs) ... end, ... }
function M.TrainerCallback(methods)
  methods = methods or {}
  local known = {}
  for _, e in ipairs(EVENTS) do known[e] = "function" end
  for k, v in pairs(methods) do
    if type(v) == "function" and not known[k] and k:sub(1, 3) == "on_" then
      local hint = core.suggest(k, EVENTS)
      error(string.format("TrainerCallback: unknown event '%s'%s", k, hint and (" (did you mean '" .. hint .. "'?)") or ""), 2)
    end
  end
  return methods
end

--- EarlyStoppingCallback{early_stopping_patience = 1, early_stopping_threshold = 0.0}
function M.EarlyStoppingCallback(opts)
  opts = core.check_options(opts, { early_stopping_patience = "integer", early_stopping_threshold = "number" },
    "EarlyStoppingCallback", 3)
  local cb = { name = "EarlyStoppingCallback", patience = opts.early_stopping_patience or 1,
    threshold = opts.early_stopping_threshold or 0.0, counter = 0 }
  function cb.on_train_begin(self, args)
    if not args.load_best_model_at_end then
      error("EarlyStoppingCallback requires load_best_model_at_end = True", 0)
    end
    if args.metric_for_best_model == nil then error("EarlyStoppingCallback requires metric_for_best_model to be defined", 0) end
    if args.eval_strategy == "no" then
      error("EarlyStoppingCallback requires eval_strategy of steps or epoch", 0)
    end
  end
  function cb.on_evaluate(self, args, state, control, metrics)
    local name = args.metric_for_best_model
    if name:sub(1, 5) ~= "eval_" then name = "eval_" .. name end
    local value = metrics[name]
    if value == nil then return end
    local better
    if state.best_metric == nil then
      better = true
    elseif args.greater_is_better then
      better = value > state.best_metric and math.abs(value - state.best_metric) > self.threshold
    else
      better = value < state.best_metric and math.abs(value - state.best_metric) > self.threshold
    end
    if better then self.counter = 0 else self.counter = self.counter + 1 end
    if self.counter >= self.patience then control.should_training_stop = true end
  end
  return cb
end

-- ---- the Trainer -------------------------------------------------------------------------------

local Trainer = {}
Trainer.__index = Trainer
Trainer.__name = "Trainer"

local TRAINER_OPTIONS = { model = "any", args = "any", train_dataset = "any", eval_dataset = "any",
  processing_class = "any", tokenizer = "any", data_collator = "any", compute_metrics = "function",
  callbacks = "table", preprocess_logits_for_metrics = "function" }

local function new_state()
  return { epoch = 0, global_step = 0, max_steps = 0, logging_steps = 500, eval_steps = 500, save_steps = 500,
    train_batch_size = nil, num_train_epochs = 0, num_input_tokens_seen = 0, total_flos = 0,
    log_history = setmetatable({}, ARRAY), best_metric = nil, best_global_step = nil, best_model_checkpoint = nil,
    is_local_process_zero = true, is_world_process_zero = true, is_hyper_param_search = false, trial_name = nil,
    trial_params = nil }
end

local function new_control()
  return { should_training_stop = false, should_epoch_stop = false, should_save = false, should_evaluate = false,
    should_log = false }
end

local function build_trainer(opts)
  opts = core.check_options(opts, TRAINER_OPTIONS, "Trainer", 4)
  if opts.model == nil then error("Trainer needs a model (model = ...)", 3) end
  local args = opts.args
  if args == nil then
    args = training_args.TrainingArguments {}
  elseif not training_args.is_training_arguments(args) then
    if type(args) == "table" then
      args = training_args.TrainingArguments(args)
    else
      error("Trainer: args must be a TrainingArguments (got " .. type(args) .. ")", 3)
    end
  end
  if args.eval_strategy ~= "no" and opts.eval_dataset == nil then
    error(string.format("You have set `args.eval_strategy` to %s but you didn't pass an `eval_dataset` to `Trainer`. " ..
      "Either set `args.eval_strategy` to `no` or pass an `eval_dataset`.", args.eval_strategy), 3)
  end
  for _, which in ipairs { "train_dataset", "eval_dataset" } do
    local ds = opts[which]
    if ds ~= nil then
      local ok, n = pcall(ds_len, ds)
      if not ok or type(n) ~= "number" then error("Trainer: " .. which .. " must be a dataset or a list of rows", 3) end
    end
  end
  local self = setmetatable({}, Trainer)
  self.model = opts.model
  if args.gradient_checkpointing then gradient_checkpointing_on(self.model, args) end
  -- accelerate's FSDP plugin (TrainingArguments.fsdp or sky.plugins.accelerate's environment)
  self.is_fsdp_enabled = args.fsdp_plugin ~= nil
  if self.is_fsdp_enabled and args.fsdp_plugin.activation_checkpointing then
    gradient_checkpointing_on(self.model, args)
  end
  self.args = args
  self.train_dataset = opts.train_dataset
  self.eval_dataset = opts.eval_dataset
  self.processing_class = opts.processing_class or opts.tokenizer
  self.compute_metrics = opts.compute_metrics
  self.preprocess_logits_for_metrics = opts.preprocess_logits_for_metrics
  local collator = opts.data_collator
  if collator == nil then
    if self.processing_class ~= nil then
      collator = collators.DataCollatorWithPadding(self.processing_class)
    else
      collator = collators.default_data_collator
    end
  end
  self.data_collator = collator
  self.callbacks = {}
  for i, cb in ipairs(opts.callbacks or {}) do
    if type(cb) ~= "table" then error("Trainer: callbacks[" .. i .. "] must be a table of on_* functions", 3) end
    self.callbacks[#self.callbacks + 1] = cb
  end
  self.state = new_state()
  self.control = new_control()
  self.label_names = args.label_names or { "labels" }
  self._dist = dist_ctx()
  if args.push_to_hub then self:init_hf_repo() end
  return self
end

M.Trainer = setmetatable({}, {
  __call = function(_, opts)
    local t = build_trainer(opts)  -- not a tail call: errors name the job's line
    return t
  end,
  __tostring = function() return "Trainer" end,
})

function Trainer:__tostring() return "Trainer" end

function Trainer:add_callback(cb) self.callbacks[#self.callbacks + 1] = cb end

function Trainer:_call_event(event, extra)
  for _, cb in ipairs(self.callbacks) do
    local fn = cb[event]
    if fn then fn(cb, self.args, self.state, self.control, extra) end
  end
  -- HF's name is should_training_stop; should_stop is accepted as well
  if self.control.should_stop then self.control.should_training_stop = true end
end

function Trainer:_device()
  if self.args.use_cpu then return "cpu" end
  if native().cuda_available() then return "cuda" end
  return "cpu"
end

-- The engine for a run of max_steps optimizer steps (the schedule depends on it); evaluation
-- before training uses one of its own.
function Trainer:_engine(max_steps)
  if self.engine and self._engine_steps == max_steps then return self.engine end
  self._engine_steps = max_steps
  local a = self.args
  local kw = a.lr_scheduler_kwargs or {}
  local min_lr_rate = kw.min_lr_rate
  if kw.min_lr ~= nil then min_lr_rate = kw.min_lr / a.learning_rate end
  local device = self:_device()
  local fsdp = self.args.fsdp_plugin
  local bf16, fp16 = a.bf16, a.fp16
  if fsdp and fsdp.mixed_precision and not bf16 and not fp16 then  -- accelerate's mixed_precision
    bf16, fp16 = fsdp.mixed_precision == "bf16", fsdp.mixed_precision == "fp16"
  end
  local sharded = fsdp and fsdp.sharding_strategy ~= "NO_SHARD" and self._dist.world > 1
  self.engine = native().engine(self.model, {
    optim = a.optim, learning_rate = a.learning_rate, weight_decay = a.weight_decay, adam_beta1 = a.adam_beta1,
    adam_beta2 = a.adam_beta2, adam_epsilon = a.adam_epsilon, lr_scheduler_type = a.lr_scheduler_type,
    warmup_steps = a:get_warmup_steps(max_steps), total_steps = max_steps, num_cycles = kw.num_cycles,
    min_lr_rate = min_lr_rate, max_grad_norm = a.max_grad_norm, bf16 = bf16 and device ~= "cpu", fp16 = fp16, device = device,
    world_size = self._dist.world, cuda_graphs = a.torch_compile, ddp_bucket_cap_mb = a.ddp_bucket_cap_mb,
    average_tokens_across_devices = a.average_tokens_across_devices,
    fsdp = sharded or nil,
    fsdp_reshard_after_forward = sharded and fsdp.reshard_after_forward or nil,
    fsdp_backward_prefetch = sharded and fsdp.backward_prefetch or nil,
    fsdp_forward_prefetch = sharded and fsdp.forward_prefetch or nil,
    fsdp_sync_module_states = sharded and fsdp.sync_module_states or nil,
    fsdp_wrap = sharded and fsdp.auto_wrap_policy == "TRANSFORMER_BASED_WRAP" or nil,
    fsdp_block_classes = sharded and fsdp.transformer_layer_cls_to_wrap and table.concat(fsdp.transformer_layer_cls_to_wrap, ",") or nil,
    -- MixedPrecisionPolicy: 16-bit parameters in compute, fp32 gradient reduction
    fsdp_param_dtype = sharded and device ~= "cpu" and (bf16 and "bfloat16" or fp16 and "float16") or nil,
  })
  return self.engine
end

-- The native data path (src/train/loader.cpp) for a datasets.Dataset with one of the built-in
-- collators: batches built from the mapped columns on a worker thread, in pinned memory on CUDA.
-- nil for Lua lists of rows or a collator written in Lua (they take _collate).
function Trainer:_loader(dataset)
  if not (require("datasets.core").is_dataset(dataset) and collators.is_collator(self.data_collator)) then return nil end
  self._loaders = self._loaders or setmetatable({}, { __mode = "k" })
  local l = self._loaders[dataset]
  if not l then
    l = native().loader(dataset, self.data_collator.opts, self.args.dataloader_pin_memory and self:_device() ~= "cpu")
    self._loaders[dataset] = l
  end
  return l
end

function Trainer:_collate(rows)
  local c = self.data_collator
  local batch = c(rows)
  if type(batch) == "table" and getmetatable(batch) == nil then
    -- a Lua collator returned columns: {input_ids = {{...}, ...}, labels = {...}}
    local n
    for _, v in pairs(batch) do
      if type(v) == "table" then n = #v break end
    end
    local rows2 = {}
    for i = 1, n or 0 do
      local r = {}
      for k, v in pairs(batch) do r[k] = to_plain(v)[i] end
      rows2[i] = r
    end
    batch = native().collate(rows2, { mode = "stack", where = "data_collator" })
  elseif type(batch) ~= "userdata" then
    error("data_collator returned a " .. type(batch) .. " (a batch or a table of columns expected)", 0)
  end
  return batch
end

-- The index order of one epoch: HF's SequentialSampler (train_shuffle = false), RandomSampler
-- seeded with seed + epoch, or LengthGroupedSampler (group_by_length).
function Trainer:_epoch_order(n, epoch)
  local a = self.args
  if not a.train_shuffle then
    local order = {}
    for i = 1, n do order[i] = i end
    return order
  end
  local seed = (a.data_seed or a.seed) + epoch
  local perm = native().randperm(n, seed)
  if not a.group_by_length then return perm end
  -- HF's get_length_grouped_indices: megabatches of 50 batches (fewer for small sets), each sorted
  -- by length, longest first; the megabatch holding the longest row goes first.
  local bs = a.per_device_train_batch_size
  local lengths = self._lengths
  if not lengths then
    lengths = {}
    for i = 1, n do
      local row = ds_row(self.train_dataset, i)
      lengths[i] = row[a.length_column_name] or (row.input_ids and #row.input_ids) or 0
    end
    self._lengths = lengths
  end
  local mult = math.min(math.floor(n / (bs * 4)), 50)
  if mult == 0 then mult = 1 end
  local mega = mult * bs
  local groups = {}
  for s = 1, n, mega do
    local g = {}
    for i = s, math.min(s + mega - 1, n) do g[#g + 1] = perm[i] end
    table.sort(g, function(x, y)
      if lengths[x] ~= lengths[y] then return lengths[x] > lengths[y] end
      return x < y
    end)
    groups[#groups + 1] = g
  end
  local best, best_len = 1, -1
  for gi, g in ipairs(groups) do
    if lengths[g[1]] > best_len then best, best_len = gi, lengths[g[1]] end
  end
  groups[1][1], groups[best][1] = groups[best][1], groups[1][1]
  local order = {}
  for _, g in ipairs(groups) do for _, i in ipairs(g) do order[#order + 1] = i end end
  return order
end

local function fmt_num(v)
  if type(v) ~= "number" then return tostring(v) end
  if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%d", v) end
  if math.abs(v) < 1e-3 or math.abs(v) >= 1e5 then return string.format("%.4g", v) end
  return string.format("%.4f", v)
end

local LOG_ORDER = { "loss", "grad_norm", "learning_rate", "epoch", "eval_loss" }
local function format_logs(logs)
  local keys, seen = {}, {}
  for _, k in ipairs(LOG_ORDER) do
    if logs[k] ~= nil then keys[#keys + 1] = k; seen[k] = true end
  end
  local rest = {}
  for k in pairs(logs) do if not seen[k] and k ~= "step" then rest[#rest + 1] = k end end
  table.sort(rest)
  for _, k in ipairs(rest) do keys[#keys + 1] = k end
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. " " .. fmt_num(logs[k]) end
  return table.concat(parts, ", ")
end

-- ---- logging: progress line, plain lines, jsonl, tensorboard -----------------------------------

function Trainer:_progress_enabled()
  if self.args.disable_tqdm == true or self._dist.rank ~= 0 then return false end
  return core.isatty(1)
end

function Trainer:_draw_progress(final)
  if not self._progress then return end
  local s = self.state
  local p = self._progress
  local t = wall()
  if not final and p.drawn and t - p.drawn < 0.1 and s.global_step < s.max_steps then return end  -- at most 10 a second
  p.drawn = t
  local elapsed = t - p.t0
  local done = s.global_step - p.start_step
  local rate = done > 0 and elapsed / done or 0
  local eta = rate * (s.max_steps - s.global_step)
  local width = 24
  local frac = s.max_steps > 0 and s.global_step / s.max_steps or 1
  local filled = math.floor(frac * width + 0.5)
  local line = string.format("\r%3d%%|%s%s| %d/%d [%s<%s, %s tok/s] loss %s lr %.2e", math.floor(frac * 100),
    string.rep("#", filled), string.rep(" ", width - filled), s.global_step, s.max_steps,
    os.date("!%M:%S", math.floor(elapsed)), os.date("!%M:%S", math.floor(eta)),
    fmt_num(elapsed > 0 and math.floor(p.tokens / elapsed) or 0), p.last_loss and string.format("%.4f", p.last_loss) or "-",
    p.last_lr or 0)
  io.stdout:write(line .. (final and "\n" or ""))
  io.stdout:flush()
end

function Trainer:_emit(logs)
  -- what HF's Trainer.log does: add epoch and step, keep in log_history, tell callbacks
  local entry = {}
  for k, v in pairs(logs) do entry[k] = v end
  if self.state.epoch ~= nil then entry.epoch = self.state.epoch end
  entry.step = self.state.global_step
  local hist = self.state.log_history
  hist[#hist + 1] = entry
  self:_call_event("on_log", logs)
  if self._dist.rank ~= 0 then return end
  if self._progress then
    if logs.loss then self._progress.last_loss = logs.loss end
    if logs.eval_loss or logs.train_runtime then
      io.stdout:write("\r\27[K" .. format_logs(entry) .. "\n")
      self:_draw_progress(false)
    end
  elseif self.args.disable_tqdm ~= true then
    print(string.format("[step %d/%d] %s", self.state.global_step, self.state.max_steps, format_logs(entry)))
    io.stdout:flush()
  end
  for _, r in ipairs(self.args.reporters) do
    if r == "jsonl" then
      if not self._jsonl then
        mkdir_p(self.args.output_dir)
        self._jsonl = assert(io.open(self.args.output_dir .. "/trainer_log.jsonl", "a"))
      end
      -- checked: a full disk is an error, not a log silently cut short
      local ok, err = self._jsonl:write(json_encode(entry), "\n")
      if ok then ok, err = self._jsonl:flush() end
      if not ok then
        error("cannot write " .. self.args.output_dir .. "/trainer_log.jsonl: " .. tostring(err), 0)
      end
    elseif r == "tensorboard" then
      if not self._tb then self._tb = tcore.tb_open(self.args.logging_dir) end
      for k, v in pairs(logs) do
        if type(v) == "number" then
          local tag = k:sub(1, 5) == "eval_" and ("eval/" .. k:sub(6)) or (k:sub(1, 5) == "test_" and ("test/" .. k:sub(6)) or ("train/" .. k))
          self._tb:add_scalar(tag, v, self.state.global_step)
        end
      end
      self._tb:flush()
    end
  end
end

function Trainer:log(logs) self:_emit(logs) end

-- ---- checkpoints ---------------------------------------------------------------------------------

local function checkpoint_step(name)
  local n = name:match("^checkpoint%-(%d+)$")
  return n and tonumber(n)
end

--- The checkpoint-<step> folder with the highest step in dir, or nil (HF's get_last_checkpoint).
function M.get_last_checkpoint(dir)
  local best, best_step
  for _, name in ipairs(list_dir(dir)) do
    local step = checkpoint_step(name)
    if step and is_dir(dir .. "/" .. name) and (not best_step or step > best_step) then
      best, best_step = dir .. "/" .. name, step
    end
  end
  return best
end

function Trainer:_state_json()
  local s = self.state
  local out = {
    best_global_step = s.best_global_step or tcore.json_null, best_metric = s.best_metric or tcore.json_null,
    best_model_checkpoint = s.best_model_checkpoint or tcore.json_null, epoch = s.epoch, eval_steps = s.eval_steps,
    global_step = s.global_step, is_hyper_param_search = false, is_local_process_zero = true,
    is_world_process_zero = true, log_history = s.log_history, logging_steps = s.logging_steps,
    max_steps = s.max_steps, num_input_tokens_seen = s.num_input_tokens_seen, num_train_epochs = s.num_train_epochs,
    save_steps = s.save_steps, total_flos = s.total_flos, train_batch_size = s.train_batch_size,
    trial_name = tcore.json_null, trial_params = tcore.json_null,
    stateful_callbacks = { TrainerControl = { args = {
      should_epoch_stop = self.control.should_epoch_stop, should_evaluate = self.control.should_evaluate,
      should_log = self.control.should_log, should_save = self.control.should_save,
      should_training_stop = self.control.should_training_stop }, attributes = {} } },
  }
  return json_encode(out, 2)
end

-- HF's _determine_best_metric: true when metrics hold a new best value of metric_for_best_model.
function Trainer:_determine_best_metric(metrics)
  local a, s = self.args, self.state
  if not a.metric_for_best_model then return false end
  local key = a.metric_for_best_model
  if key:sub(1, 5) ~= "eval_" then key = "eval_" .. key end
  local v = metrics[key]
  if v == nil then
    local names = {}
    for k in pairs(metrics) do names[#names + 1] = k end
    table.sort(names)
    error(string.format("The `metric_for_best_model` training argument is set to '%s', which is not found in the evaluation metrics. " ..
      "The available evaluation metrics are: %s. Consider changing the `metric_for_best_model` via the TrainingArguments.",
      key, table.concat(names, ", ")), 0)
  end
  if s.best_metric == nil or (a.greater_is_better and v > s.best_metric) or (not a.greater_is_better and v < s.best_metric) then
    s.best_metric, s.best_global_step = v, s.global_step
    return true
  end
  return false
end

function Trainer:_save_checkpoint()
  local a = self.args
  local name = "checkpoint-" .. self.state.global_step
  local final = a.output_dir .. "/" .. name
  -- everything goes to a temporary folder renamed at the end: a run killed mid-write leaves the
  -- previous checkpoints as they were and no half-written checkpoint-<step>
  local D = self._dist
  local fsdp = self.engine and self.engine:info().fsdp
  local nonce = math.random(1, 1e9)
  -- FSDP: every rank writes into the same folder (rank 0's name); a rank that does not share
  -- rank 0's filesystem has its own copy of it
  if fsdp then nonce = D.dist.all_reduce(D.rank == 0 and nonce or 0) end
  local tmp = string.format("%s/.%s.tmp-%d", a.output_dir, name, nonce)
  mkdir_p(tmp)
  local s = self.state
  local main = D.rank == 0
  local sharded = fsdp and self.args.fsdp_plugin.state_dict_type == "SHARDED_STATE_DICT"
  local ok, err = pcall(function()
    if fsdp then fsdp_model_save(self, tmp, sharded) else model_save(self.model, tmp) end
    if not main then
      if not a.save_only_model then self.engine:state_save(tmp, sharded) end
      return
    end
    save_processing_class(self.processing_class, tmp)
    if not a.save_only_model then self.engine:state_save(tmp, sharded) end
    if a.metric_for_best_model and s.best_global_step then
      local best = a.output_dir .. "/checkpoint-" .. s.best_global_step
      if s.best_global_step == s.global_step or is_dir(best) then s.best_model_checkpoint = best end
    end
    write_file_atomic(tmp .. "/trainer_state.json", self:_state_json())
    write_file_atomic(tmp .. "/training_args.json", json_encode(a:to_dict(), 2))
  end)
  if not ok then  -- a full disk, say: no half-written folder stays; earlier checkpoints are untouched
    require("sky.fs").remove_tree(tmp)
    error(string.format("cannot save %s: %s", final, (tostring(err):gsub("^[^\n]-%.lua:%d+: ", ""))), 0)
  end
  if fsdp then
    -- every rank's files are in: rank 0 renames; then, one rank at a time, a rank whose folder
    -- is still there (a filesystem of its own) renames its copy
    D.dist.barrier()
    local placed = false
    for r = 0, D.world - 1 do
      if r > 0 then D.dist.barrier() end
      if D.rank == r and is_dir(tmp) then self:_place_checkpoint(tmp, final); placed = true end
    end
    if not placed then self:_call_event("on_save") end
    return final
  end
  return self:_place_checkpoint(tmp, final)
end

function Trainer:_place_checkpoint(tmp, final)
  if is_dir(final) then
    local old = final .. ".old-" .. math.random(1, 1e9)
    assert(os.rename(final, old))
    assert(os.rename(tmp, final))
    rm_rf(old)
  else
    assert(os.rename(tmp, final))
  end
  self:_rotate_checkpoints()
  if self.args.push_to_hub and self._dist.rank == 0 then self:_push_from_checkpoint(final) end
  self:_call_event("on_save")
  return final
end

function Trainer:_rotate_checkpoints()
  local a = self.args
  if a.save_total_limit == nil or a.save_total_limit <= 0 then return end
  local cps = {}
  for _, name in ipairs(list_dir(a.output_dir)) do
    local step = checkpoint_step(name)
    if step then cps[#cps + 1] = { step = step, path = a.output_dir .. "/" .. name } end
  end
  table.sort(cps, function(x, y) return x.step < y.step end)
  local best = self.state.best_model_checkpoint
  -- HF: the best checkpoint moves to the end of the list so that it is kept
  if best then
    for i, c in ipairs(cps) do
      if c.path == best and i < #cps then
        table.remove(cps, i)
        table.insert(cps, #cps, c)  -- second to last: the newest stays newest
        break
      end
    end
  end
  local limit = a.save_total_limit
  if limit == 1 and best and cps[#cps] and cps[#cps].path ~= best then limit = 2 end
  for i = 1, #cps - limit do rm_rf(cps[i].path) end
end

-- HF's TrainerState fields and their types. HF builds the dataclass from the JSON unchecked; a
-- corrupted file would resume at a wrong step on trained weights, so each field is checked here.
-- Unknown fields (other transformers versions) are ignored.
local STATE_FIELDS = {
  epoch = "number?", global_step = "count", max_steps = "count?", logging_steps = "number?",
  eval_steps = "number?", save_steps = "number?", train_batch_size = "count?", num_train_epochs = "number?",
  num_input_tokens_seen = "count?", total_flos = "number?", log_history = "list of objects",
  best_metric = "number?", best_global_step = "count?", best_model_checkpoint = "string?",
  is_local_process_zero = "boolean?", is_world_process_zero = "boolean?", is_hyper_param_search = "boolean?",
  trial_name = "string?", trial_params = "object?", stateful_callbacks = "object?",
}
local MAX_COUNT = 2 ^ 53  -- counts beyond this are not exact as Lua numbers

-- The JSON type of a decoded value; an empty table is both an empty array and an empty object.
local function json_kind(v, want)
  if v == tcore.json_null then return "null" end
  if type(v) ~= "table" then return type(v) end
  if next(v) == nil and want then return want end
  return v[1] ~= nil and "array" or "object"
end

local function check_trainer_state(st, file)
  local function bad(field, want, v)
    local shown = v == nil and "nothing" or type(v) == "string" and string.format("%q", v) or
      (type(v) == "number" and string.format("%.17g", v)) or json_kind(v)
    error(string.format("resume_from_checkpoint: %s: field '%s' must be %s (got %s)", file, field, want, shown), 0)
  end
  if json_kind(st, "object") ~= "object" then
    error(string.format("resume_from_checkpoint: %s must hold a JSON object of HF's TrainerState (got %s)", file,
      json_kind(st)), 0)
  end
  for field, kind in pairs(STATE_FIELDS) do
    local v = st[field]
    local optional = kind:sub(-1) == "?"
    local base = optional and kind:sub(1, -2) or kind
    if v == nil or v == tcore.json_null then
      if not optional and base ~= "list of objects" then bad(field, "present", v) end
    elseif base == "count" then
      if type(v) ~= "number" or v ~= math.floor(v) or v < 0 or v >= MAX_COUNT then
        bad(field, "an integer from 0 to 2^53", v)
      end
    elseif base == "number" then
      if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then bad(field, "a finite number", v) end
      if field ~= "best_metric" and v < 0 then bad(field, "a number >= 0", v) end
    elseif base == "list of objects" then
      if json_kind(v, "array") ~= "array" then bad(field, "a list of objects", v) end
      for i, e in ipairs(v) do
        if json_kind(e, "object") ~= "object" then bad(field .. "[" .. i .. "]", "an object", e) end
      end
    elseif json_kind(v, base) ~= base then
      bad(field, (base == "object" and "an " or "a ") .. base, v)
    end
  end
  if (st.max_steps or 0) > 0 and st.global_step > st.max_steps then
    error(string.format("resume_from_checkpoint: %s: global_step %d is past max_steps %d", file, st.global_step,
      st.max_steps), 0)
  end
end

function Trainer:_load_checkpoint(path)
  if not is_dir(path) then error("resume_from_checkpoint: no checkpoint folder at " .. path, 0) end
  local text = read_file(path .. "/trainer_state.json")
  if not text then error("resume_from_checkpoint: " .. path .. " has no trainer_state.json", 0) end
  local st = json_decode(text, path .. "/trainer_state.json")
  check_trainer_state(st, path .. "/trainer_state.json")
  local fsdp = self.engine:info().fsdp
  local sharded = fsdp and self.args.fsdp_plugin.state_dict_type == "SHARDED_STATE_DICT"
  if sharded then
    self.engine:fsdp_load_shards(path)
  elseif fsdp then
    error("not supported yet: resuming FSDP from a FULL_STATE_DICT checkpoint (" .. path .. "); " ..
      "save with state_dict_type = SHARDED_STATE_DICT to resume", 0)
  else
    model_load(self.model, path)
  end
  self.engine:state_load(path, sharded)
  local s = self.state
  for _, k in ipairs { "epoch", "global_step", "num_input_tokens_seen", "total_flos" } do
    if type(st[k]) == "number" then s[k] = st[k] end
  end
  s.log_history = setmetatable(st.log_history or {}, ARRAY)
  for _, k in ipairs { "best_metric", "best_global_step", "best_model_checkpoint" } do
    if st[k] ~= tcore.json_null then s[k] = st[k] end
  end
  return st
end

-- ---- evaluation ----------------------------------------------------------------------------------

local function concat_predictions(all, part)
  for _, row in ipairs(part) do all[#all + 1] = row end
end

-- Losses stay on the device (one read at the end); logits leave it only when predictions are
-- wanted (compute_metrics, predict), after preprocess_logits_for_metrics(logits, labels) ran on the
-- device with torch Tensors.
function Trainer:_prediction_loop(dataset, prefix, want_preds)
  local a = self.args
  local n = ds_len(dataset)
  local engine = self.engine or self:_engine(math.max(self.state.max_steps, 1))
  local bs = a.per_device_eval_batch_size
  local t0 = wall()
  local batches = 0
  local preds, labels = {}, {}
  local with_labels = true
  local loader = self:_loader(dataset)
  if loader then
    local order, ranges = {}, {}
    for i = 1, n do order[i] = i end
    for s = 1, n, bs do ranges[#ranges + 1] = { s, math.min(s + bs - 1, n) } end
    loader:start(order, ranges)
  end
  engine:eval_begin()
  for s = 1, n, bs do
    local batch
    if loader then
      batch = loader:next(1)[1]
    else
      local rows = {}
      for i = s, math.min(s + bs - 1, n) do rows[#rows + 1] = ds_row(dataset, i) end
      batch = self:_collate(rows)
    end
    local logits = engine:eval_batch(batch, want_preds)
    if logits then
      if self.preprocess_logits_for_metrics then logits = self.preprocess_logits_for_metrics(logits, batch:tensor("labels")) end
      if type(logits) ~= "table" then logits = engine:host_rows(logits) end
      concat_predictions(preds, logits)
      local l = batch:get("labels")
      if l then concat_predictions(labels, l) else with_labels = false end
    end
    batches = batches + 1
  end
  local loss_sum, loss_rows = engine:eval_end()
  local runtime = wall() - t0
  local metrics = {}
  if loss_rows > 0 then metrics[prefix .. "_loss"] = loss_sum / loss_rows end
  if self.compute_metrics and want_preds and with_labels and #preds > 0 then
    local extra = self.compute_metrics({ predictions = preds, label_ids = labels })
    if type(extra) ~= "table" then error("compute_metrics must return a table of metrics", 0) end
    for k, v in pairs(extra) do
      if k:sub(1, #prefix + 1) ~= prefix .. "_" then k = prefix .. "_" .. k end
      metrics[k] = v
    end
  end
  metrics[prefix .. "_runtime"] = math.floor(runtime * 1e4 + 0.5) / 1e4
  metrics[prefix .. "_samples_per_second"] = runtime > 0 and math.floor(n / runtime * 1e3 + 0.5) / 1e3 or 0
  metrics[prefix .. "_steps_per_second"] = runtime > 0 and math.floor(batches / runtime * 1e3 + 0.5) / 1e3 or 0
  return metrics, preds, labels
end

--- evaluate([eval_dataset [, {metric_key_prefix = "eval"}]]) -> metrics
function Trainer:evaluate(dataset, opts)
  opts = core.check_options(opts, { metric_key_prefix = "string", ignore_keys = "table" }, "evaluate", 3)
  dataset = dataset or self.eval_dataset
  if dataset == nil then error("Trainer: evaluation requires an eval_dataset.", 2) end
  local prefix = opts.metric_key_prefix or "eval"
  local metrics = self:_prediction_loop(dataset, prefix, self.compute_metrics ~= nil)
  if self.state.epoch ~= nil then metrics.epoch = self.state.epoch end
  self:_emit(metrics)
  self:_call_event("on_evaluate", metrics)
  return metrics
end

--- predict(test_dataset [, {metric_key_prefix = "test"}]) -> {predictions, label_ids, metrics}
function Trainer:predict(dataset, opts)
  opts = core.check_options(opts, { metric_key_prefix = "string", ignore_keys = "table" }, "predict", 3)
  if dataset == nil then error("Trainer:predict needs a test_dataset", 2) end
  local metrics, preds, labels = self:_prediction_loop(dataset, opts.metric_key_prefix or "test", true)
  self:_call_event("on_predict", metrics)
  return { predictions = preds, label_ids = #labels > 0 and labels or nil, metrics = metrics }
end

--- save_model([output_dir]): the model (and the tokenizer) in HF's layout.
function Trainer:save_model(dir, _internal_call)
  dir = dir or self.args.output_dir
  if self.engine and self.engine:info().fsdp then  -- every rank takes part in gathering the weights
    mkdir_p(dir)
    fsdp_model_save(self, dir, self.args.fsdp_plugin.state_dict_type == "SHARDED_STATE_DICT")
  end
  if self._dist.rank ~= 0 then return end  -- the main process saves, as HF's
  mkdir_p(dir)
  if not (self.engine and self.engine:info().fsdp) then model_save(self.model, dir) end
  save_processing_class(self.processing_class, dir)
  write_file_atomic(dir .. "/training_args.json", json_encode(self.args:to_dict(), 2))
  -- HF: a save the user asks for is pushed when push_to_hub is on
  if self.args.push_to_hub and not _internal_call then
    self:push_to_hub { commit_message = "Model save", revision = self.args.hub_revision }
  end
end

-- ---- the Hub ----------------------------------------------------------------------------------------

-- What the output folder's pushes leave out, as HF's: names starting with '_' and the checkpoints.
local PUSH_IGNORE = { "_*", "checkpoint-*" }

--- Creates the repository (hub_model_id, default the output folder's name, in the token's account)
--- if missing, and records its id in self.hub_model_id.
function Trainer:init_hf_repo(token)
  local a = self.args
  local name = a.hub_model_id
  if name == nil then
    local abs = a.output_dir:sub(1, 1) == "/" and a.output_dir or ((os.getenv("PWD") or ".") .. "/" .. a.output_dir)
    name = abs:gsub("/+$", ""):match("([^/]+)$")
  end
  local hf = require "huggingface_hub"
  token = token or a.hub_token
  if not name:find("/", 1, true) then name = hf.whoami({ token = token }).name .. "/" .. name end
  hf.create_repo(name, { token = token, private = a.hub_private_repo, exist_ok = true })
  self.hub_model_id = name
end

--- trainer:push_to_hub([{commit_message=, token=, revision=, blocking=}]): saves the model (and
--- tokenizer) into output_dir and uploads the folder, checkpoints left out, in one commit.
function Trainer:push_to_hub(opts)
  opts = core.check_options(opts, { commit_message = "string", token = "string", revision = "string",
    blocking = "boolean", model_name = "string", tags = "string|table" }, "push_to_hub", 3) or {}
  if opts.tags ~= nil then error("not supported yet: push_to_hub tags (the model card)", 2) end
  local token = opts.token or self.args.hub_token
  if self.hub_model_id == nil then self:init_hf_repo(token) end
  self:save_model(nil, true)
  if self._dist.rank ~= 0 then return end
  return require("huggingface_hub").upload_folder { repo_id = self.hub_model_id, folder_path = self.args.output_dir,
    commit_message = opts.commit_message or "End of training", token = token, revision = opts.revision,
    ignore_patterns = PUSH_IGNORE }
end

-- The files of a checkpoint that make the model, copied to output_dir before each push.
local function is_model_file(name)
  return name == "config.json" or name == "generation_config.json" or name == "adapter_config.json" or
    name:match("^model.*%.safetensors$") ~= nil or name == "model.safetensors.index.json" or
    name:match("^adapter_model.*%.safetensors$") ~= nil
end

-- HF's _push_from_checkpoint: the model of the checkpoint just saved goes to the repository's root
-- ("Training in progress, step N"); with hub_strategy "checkpoint" the checkpoint itself also goes
-- to last-checkpoint/, with "all_checkpoints" to checkpoint-N/. Pushes complete before training
-- goes on (HF's run in the background).
function Trainer:_push_from_checkpoint(folder)
  local a = self.args
  if self._dist.rank ~= 0 or a.hub_strategy == "end" then return end
  for _, name in ipairs(assert(fs.listdir(folder))) do
    if is_model_file(name) then write_file_atomic(a.output_dir .. "/" .. name, assert(fs.read(folder .. "/" .. name))) end
  end
  save_processing_class(self.processing_class, a.output_dir)
  write_file_atomic(a.output_dir .. "/training_args.json", json_encode(a:to_dict(), 2))
  local message = a.save_strategy == "steps" and ("Training in progress, step " .. self.state.global_step)
    or ("Training in progress, epoch " .. math.floor(self.state.epoch or 0))
  local hf = require "huggingface_hub"
  hf.upload_folder { repo_id = self.hub_model_id, folder_path = a.output_dir, commit_message = message,
    token = a.hub_token, revision = a.hub_revision, ignore_patterns = PUSH_IGNORE }
  if a.hub_strategy == "checkpoint" or a.hub_strategy == "all_checkpoints" then
    hf.upload_folder { repo_id = self.hub_model_id, folder_path = folder, commit_message = message .. ", checkpoint",
      path_in_repo = a.hub_strategy == "checkpoint" and "last-checkpoint" or folder:match("([^/]+)$"),
      token = a.hub_token, revision = a.hub_revision }
  end
end

-- ---- training --------------------------------------------------------------------------------------

--- train([{resume_from_checkpoint = true|path}]) -> {training_loss, global_step, metrics}
function Trainer:train(opts)
  if type(opts) == "string" or type(opts) == "boolean" then opts = { resume_from_checkpoint = opts } end
  opts = core.check_options(opts, { resume_from_checkpoint = "any" }, "train", 3)
  local a = self.args
  if self.train_dataset == nil then error("Trainer: training requires a train_dataset.", 2) end
  local resume = opts.resume_from_checkpoint
  if resume == nil then resume = a.resume_from_checkpoint end
  if resume == true then
    resume = M.get_last_checkpoint(a.output_dir)
    if not resume then error("No valid checkpoint found in output directory (" .. a.output_dir .. ")", 2) end
  elseif resume == false then
    resume = nil
  end

  native().set_seed(a.seed)
  local n = ds_len(self.train_dataset)
  if n == 0 then error("Trainer: the train_dataset is empty", 2) end
  local bs, ga = a.per_device_train_batch_size, a.gradient_accumulation_steps
  local D = self._dist
  local len_dataloader = a.dataloader_drop_last and math.floor(n / bs) or math.ceil(n / bs)
  -- DDP: rank r takes micro-batches r, r + world, ... (accelerate's batch sharding, even_batches)
  if D.world > 1 then len_dataloader = math.ceil(len_dataloader / D.world) end
  if len_dataloader == 0 then
    error(string.format("Trainer: %d training rows make no batch of %d with dataloader_drop_last", n, bs), 2)
  end
  local updates_per_epoch = math.max(math.floor(len_dataloader / ga) + ((len_dataloader % ga > 0) and 1 or 0), 1)
  local max_steps, num_epochs
  if a.max_steps > 0 then
    max_steps = a.max_steps
    num_epochs = math.floor(max_steps / updates_per_epoch) + ((max_steps % updates_per_epoch > 0) and 1 or 0)
  else
    max_steps = math.ceil(a.num_train_epochs * updates_per_epoch)
    num_epochs = math.ceil(a.num_train_epochs)
  end
  if max_steps <= 0 then error("Trainer: num_train_epochs gives no training step", 2) end
  local s = self.state
  s.max_steps, s.num_train_epochs, s.train_batch_size = max_steps, num_epochs, bs
  s.logging_steps = a:steps_of("logging_steps", max_steps)
  s.eval_steps = a:steps_of("eval_steps", max_steps) or s.logging_steps
  s.save_steps = a:steps_of("save_steps", max_steps)

  local engine = self:_engine(max_steps)
  local epochs_trained, skip_batches = 0, 0
  if resume then
    self:_load_checkpoint(resume)
    epochs_trained = math.floor(s.global_step / updates_per_epoch)
    skip_batches = (s.global_step % updates_per_epoch) * ga
  end

  local info = engine:info()
  self._progress = nil
  if self:_progress_enabled() then self._progress = { t0 = wall(), start_step = s.global_step, tokens = 0 } end
  if a.disable_tqdm ~= true and not self._progress and D.rank == 0 then
    print(string.format("***** Running training *****  %d examples, %d epochs, batch %d x %d accumulation, %d steps, %s parameters on %s%s",
      n, num_epochs, bs, ga, max_steps, fmt_num(info.trainable_parameters), info.device, a.bf16 and info.device ~= "cpu" and " (bf16 autocast)" or (a.fp16 and " (fp16 autocast, loss scaling)" or "")))
    io.stdout:flush()
  end
  self:_call_event("on_train_begin")

  local loader = self:_loader(self.train_dataset)
  local t0 = wall()
  local tokens_total = 0
  local total_loss, last_logged = 0, s.global_step  -- tr_loss itself stays on the device (engine:take_loss)
  local start_step = s.global_step
  local stop = false
  for epoch = epochs_trained, num_epochs - 1 do
    local order = self:_epoch_order(n, epoch)
    local micro = {}
    for st = 1, n, bs do
      if st + bs - 1 > n and a.dataloader_drop_last then break end
      micro[#micro + 1] = { first = st, last = math.min(st + bs - 1, n) }
    end
    if D.world > 1 then
      local mine = {}
      for k = 1, len_dataloader do
        local idx = (k - 1) * D.world + D.rank + 1
        mine[k] = micro[(idx - 1) % #micro + 1]  -- short last round: wrap to the first batches
      end
      micro = mine
    end
    local steps_in_epoch = #micro
    if loader then  -- the micro-batches this epoch will take (those a resume skips left out)
      local ranges = {}
      for k = skip_batches + 1, #micro do ranges[#ranges + 1] = { micro[k].first, micro[k].last } end
      loader:start(order, ranges)
    end
    local remainder = steps_in_epoch % ga
    if remainder == 0 then remainder = ga end
    local total_updates = math.floor(steps_in_epoch / ga) + ((remainder < ga) and 1 or 0)
    self:_call_event("on_epoch_begin")
    local mi = 0  -- micro-batches consumed in this epoch
    for update = 0, total_updates - 1 do
      local count = (update ~= total_updates - 1) and ga or remainder
      if mi + count <= skip_batches then
        mi = mi + count
      else
        local batches
        if loader then
          batches = loader:next(count)
          mi = mi + count
        else
          batches = {}
          for _ = 1, count do
            mi = mi + 1
            local m = micro[mi]
            local rows = {}
            for i = m.first, m.last do rows[#rows + 1] = ds_row(self.train_dataset, order[i]) end
            batches[#batches + 1] = self:_collate(rows)
          end
        end
        local num_items = nil
        if info.model_accepts_loss_kwargs then
          num_items = 0
          for _, b in ipairs(batches) do num_items = num_items + engine:count_items(b) end
          if D.world > 1 and a.average_tokens_across_devices then num_items = D.dist.all_reduce(num_items) end
        end
        self:_call_event("on_step_begin")
        local lr = engine:train_step(batches, num_items, ga, 1 + s.global_step - last_logged)
        for _, b in ipairs(batches) do
          local tok = b:num_tokens()
          tokens_total = tokens_total + tok
          s.num_input_tokens_seen = s.num_input_tokens_seen + tok
          if self._progress then self._progress.tokens = self._progress.tokens + tok end
        end
        s.global_step = s.global_step + 1
        s.epoch = epoch + mi / steps_in_epoch
        self.control.should_log, self.control.should_evaluate, self.control.should_save = false, false, false
        if s.global_step == 1 and a.logging_first_step then self.control.should_log = true end
        if a.logging_strategy == "steps" and s.global_step % s.logging_steps == 0 then self.control.should_log = true end
        if a.eval_strategy == "steps" and s.global_step % s.eval_steps == 0 then self.control.should_evaluate = true end
        if a.save_strategy == "steps" and s.global_step % s.save_steps == 0 then self.control.should_save = true end
        if s.global_step >= max_steps then
          self.control.should_training_stop = true
          if a.save_strategy == "steps" then self.control.should_save = true end  -- HF's DefaultFlowCallback
        end
        if mi >= steps_in_epoch then
          if a.logging_strategy == "epoch" then self.control.should_log = true end
          if a.eval_strategy == "epoch" then self.control.should_evaluate = true end
          if a.save_strategy == "epoch" then self.control.should_save = true end
        end
        self:_call_event("on_step_end")
        if self._progress then
          self._progress.last_lr = lr
          self:_draw_progress(false)
        end
        self:_maybe_log_save_evaluate(lr, last_logged)
        if self._logged then
          total_loss = total_loss + self._logged
          last_logged, self._logged = s.global_step, nil
        end
        if self.control.should_training_stop then stop = true break end
      end
    end
    skip_batches = 0
    self:_call_event("on_epoch_end")
    if stop then break end
  end
  total_loss = total_loss + engine:take_loss()  -- what was not logged yet
  local runtime = wall() - t0
  local steps_run = s.global_step - start_step
  if a.load_best_model_at_end and s.best_model_checkpoint and is_dir(s.best_model_checkpoint) then
    model_load(self.model, s.best_model_checkpoint)
  end
  local train_loss = total_loss / math.max(s.global_step, 0.001)
  local metrics = {
    train_runtime = math.floor(runtime * 1e4 + 0.5) / 1e4,
    train_samples_per_second = runtime > 0 and math.floor(steps_run * bs * ga / runtime * 1e3 + 0.5) / 1e3 or 0,
    train_steps_per_second = runtime > 0 and math.floor(steps_run / runtime * 1e3 + 0.5) / 1e3 or 0,
    total_flos = s.total_flos, train_loss = train_loss,
  }
  self:_emit(metrics)
  if self._progress then self:_draw_progress(true) end
  if a.disable_tqdm ~= true and D.rank == 0 then
    print(string.format("Training done: %d steps in %.1fs, train_loss %.4f, %s tokens/s", steps_run, runtime, train_loss,
      fmt_num(runtime > 0 and math.floor(tokens_total / runtime) or 0)))
    io.stdout:flush()
  end
  self:_call_event("on_train_end")
  if self._jsonl then self._jsonl:close(); self._jsonl = nil end
  if self._tb then self._tb:close(); self._tb = nil end
  local m = {}
  for k, v in pairs(metrics) do m[k] = v end
  m.epoch = s.epoch
  return { training_loss = train_loss, global_step = s.global_step, metrics = m }
end

-- The one place the step's device-side numbers are read: at logging steps.
function Trainer:_maybe_log_save_evaluate(lr, last_logged)
  local s, c = self.state, self.control
  if c.should_log and s.global_step > last_logged then
    local tr_loss = self.engine:take_loss()
    local grad_norm = self.engine:grad_norm()
    if self._dist.world > 1 then tr_loss = self._dist.dist.all_reduce(tr_loss, "avg") end  -- HF logs the mean over ranks
    local logs = { loss = tr_loss / (s.global_step - last_logged), learning_rate = lr }
    if grad_norm ~= nil then logs.grad_norm = grad_norm end
    self:_emit(logs)
    self._logged = tr_loss  -- the logged sum (averaged over ranks)
  end
  if c.should_evaluate then
    local metrics = self:evaluate()
    local is_new_best = self:_determine_best_metric(metrics)
    if self.args.save_strategy == "best" then c.should_save = is_new_best end
  end
  if c.should_save then
    if self._dist.rank == 0 or (self.engine and self.engine:info().fsdp) then self:_save_checkpoint() end
    if self._dist.world > 1 then self._dist.dist.barrier() end  -- the others may load it next
  end
end

M.is_trainer = function(v) return getmetatable(v) == Trainer end

return M
