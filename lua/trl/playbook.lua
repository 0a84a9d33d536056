-- trl.playbook: the NVIDIA DGX Spark playbook's fine-tuning scripts (Llama3_3B_full_finetuning.py,
-- Llama3_8B_LoRA_finetuning.py, ...) as one task body that jobs/sft_*.lua run on a pool: Alpaca
-- rows formatted with the playbook's prompt and EOS, SFTConfig with its settings (dataset_text_field
-- "text", no packing, max_length = seq_length, adamw_torch, seed 42, TensorBoard logs), SFTTrainer,
-- then the model and tokenizer saved. Without a model id it trains a tiny Llama made here; without a
-- dataset, Alpaca-format rows made here (trl.demo_data), so it runs offline.

local M = {}

-- The flags every playbook script takes, as sky.flags specs, and their defaults per method.
M.FLAGS = { model = "string", dataset = "string", ["dataset-size"] = "number", ["batch-size"] = "number",
  ["seq-length"] = "number", ["num-epochs"] = "number", ["learning-rate"] = "number",
  ["gradient-accumulation-steps"] = "number", ["gradient-checkpointing"] = "boolean", ["output-dir"] = "string",
  ["log-dir"] = "string", ["logging-steps"] = "number", ["lora-rank"] = "number", packing = "boolean",
  ["attn-implementation"] = "string", ["max-steps"] = "number", nodes = "number" }

M.DEFAULTS = {
  full = { hub_model = "meta-llama/Llama-3.2-3B-Instruct", batch_size = 8, learning_rate = 5e-5 },
  lora = { hub_model = "meta-llama/Llama-3.1-8B-Instruct", batch_size = 4, learning_rate = 1e-4 },
  qlora = { hub_model = "unsloth/Meta-Llama-3.1-70B-bnb-4bit", batch_size = 8, learning_rate = 1e-4 },
  lora_fsdp = { hub_model = "meta-llama/Llama-3.1-70B-Instruct", batch_size = 1, learning_rate = 1e-4, nodes = 2 },
}

M.USAGE = [[
usage: skyrun jobs/sft_%s.lua [--model ID|DIR] [--nodes N (lora_fsdp: ranks, default 2)] [--dataset ID|FILE.json] [--dataset-size N] [--batch-size N]
         [--seq-length N] [--num-epochs N] [--learning-rate X] [--gradient-accumulation-steps N]
         [--gradient-checkpointing] [--output-dir DIR] [--log-dir DIR] [--logging-steps N] [--lora-rank N]
         [--packing] [--attn-implementation eager|sdpa] [--max-steps N]
Without --model a tiny random-init Llama is made here; without --dataset, Alpaca-format rows are made
here (both offline). The playbook's model for this script: %s.
]]

--- The task's options from parsed flags.
function M.options(method, flags)
  local d = M.DEFAULTS[method]
  local f = function(name, def)
    local v = flags[name]
    if v == nil then return def end
    return v
  end
  return { method = method, model = flags.model, dataset = flags.dataset,
    dataset_size = math.floor(f("dataset-size", 500)), batch_size = math.floor(f("batch-size", d.batch_size)),
    seq_length = math.floor(f("seq-length", 2048)), num_epochs = f("num-epochs", 1),
    learning_rate = f("learning-rate", d.learning_rate),
    gradient_accumulation_steps = math.floor(f("gradient-accumulation-steps", 1)),
    gradient_checkpointing = f("gradient-checkpointing", false), output_dir = f("output-dir", "/tmp/skyrun-sft-" .. method),
    log_dir = flags["log-dir"], logging_steps = math.floor(f("logging-steps", 1)),
    lora_rank = math.floor(f("lora-rank", 8)), packing = f("packing", false),
    attn_implementation = flags["attn-implementation"], max_steps = flags["max-steps"] and math.floor(flags["max-steps"]),
    nodes = math.floor(f("nodes", d.nodes or 1)) }
end

local function alpaca_dataset(o, eos)
  local datasets = require "datasets"
  local demo = require "trl.demo_data"
  local ds
  if o.dataset == nil then
    ds = datasets.Dataset.from_list(demo.alpaca_rows(o.dataset_size, 42))
  else
    if o.dataset:match("%.jsonl?$") then
      ds = datasets.load_dataset("json", { data_files = o.dataset, split = "train" })
    else
      local dd = datasets.load_dataset(o.dataset)
      ds = dd.train or error("dataset " .. o.dataset .. " has no train split", 0)
    end
    local have = {}
    for _, c in ipairs(ds.column_names) do have[c] = true end
    if not (have.instruction and have.output) then
      error(string.format("dataset %s is not in Alpaca format (instruction, input, output); its columns are: %s",
        o.dataset, table.concat(ds.column_names, ", ")), 0)
    end
    -- as the playbook: the first dataset_size rows, shuffled with seed 42
    ds = ds:select(1, math.min(o.dataset_size, #ds)):shuffle { seed = 42 }
  end
  local format = demo.format_alpaca
  return ds:map(function(x)
    local texts = {}
    for i = 1, #x.instruction do texts[i] = format(x.instruction[i], x.input and x.input[i] or "", x.output[i]) .. eos end
    return { text = texts }
  end, { batched = true, remove_columns = ds.column_names })
end

--- The task body: returns the training figures and where the model went.
function M.run(o)
  local transformers = require "transformers"
  local trl = require "trl"
  local demo = require "trl.demo_data"
  local cuda = require("skyrun.train").cuda_available()
  -- under FSDP every rank runs this: rank 0 makes the tiny base and saves the tokenizer
  local dist = require "sky.dist"
  local rank0 = not dist.is_initialized() or dist.rank() == 0

  local base = o.model
  if base == nil then
    -- the tiny model's vocabulary is the words of the rows it will train on
    local rows = alpaca_dataset(o, "")
    local texts = {}
    for i = 1, #rows do texts[i] = rows[i].text end
    base = o.output_dir .. "/base"
    if rank0 then demo.make_tiny_llama(base, texts, { max_positions = math.max(o.seq_length, 64) }) end
    if dist.is_initialized() then dist.barrier() end
  end
  local tok = transformers.AutoTokenizer.from_pretrained(base)
  tok.pad_token = tok.eos_token  -- as the playbook
  local peft
  if o.method ~= "full" then
    local ok, mod = pcall(require, "peft")
    if not ok or type(mod) ~= "table" or mod.LoraConfig == nil then
      error("not supported yet: the " .. o.method .. " playbook script (the peft module is not in this build)", 0)
    end
    peft = mod
  end
  local load = { dtype = cuda and "bfloat16" or "float32", attn_implementation = o.attn_implementation }
  if o.method == "qlora" and transformers.AutoConfig.from_pretrained(base).quantization_config == nil then
    -- the playbook's QLoRA: NF4 weights with double quantization, computing in bf16
    load.quantization_config = transformers.BitsAndBytesConfig { load_in_4bit = true, bnb_4bit_quant_type = "nf4",
      bnb_4bit_use_double_quant = true, bnb_4bit_compute_dtype = cuda and "bfloat16" or "float32" }
  end
  local model = transformers.AutoModelForCausalLM.from_pretrained(base, load)
  local peft_config
  if peft then
    if o.method == "qlora" then
      model = peft.prepare_model_for_kbit_training(model, { use_gradient_checkpointing = o.gradient_checkpointing })
    end
    peft_config = peft.LoraConfig { r = o.lora_rank, lora_alpha = 16, lora_dropout = 0,
      target_modules = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" },
      task_type = "CAUSAL_LM" }
  end
  local dataset = alpaca_dataset(o, tok.eos_token)
  local config = trl.SFTConfig {
    output_dir = o.output_dir, per_device_train_batch_size = o.batch_size, num_train_epochs = o.num_epochs,
    gradient_accumulation_steps = o.gradient_accumulation_steps, learning_rate = o.learning_rate, optim = "adamw_torch",
    save_strategy = "no", remove_unused_columns = false, seed = 42, dataset_text_field = "text", packing = o.packing,
    max_length = o.seq_length, report_to = "tensorboard", logging_dir = o.log_dir or (o.output_dir .. "/logs"),
    logging_steps = o.logging_steps, gradient_checkpointing = o.gradient_checkpointing, bf16 = cuda,
    max_steps = o.max_steps or -1,
  }
  local trainer = trl.SFTTrainer { model = model, processing_class = tok, train_dataset = dataset, args = config,
    peft_config = peft_config }
  local stats = trainer:train()
  local final = o.output_dir .. "/final"
  trainer:save_model(final)
  if rank0 then tok:save_pretrained(final) end
  local m = stats.metrics
  return { device = cuda and "cuda (bf16 autocast)" or "cpu (fp32)", steps = stats.global_step,
    runtime = m.train_runtime, samples_per_second = m.train_samples_per_second,
    steps_per_second = m.train_steps_per_second, train_loss = stats.training_loss, rows = #trainer.train_dataset,
    saved = final, logs = config.logging_dir, fsdp = trainer.is_fsdp_enabled == true,
    ranks = dist.is_initialized() and dist.world_size() or 1 }
end

--- The driver side of a jobs/sft_<method>.lua script: flags, the pool, the printout.
function M.main(method, argv)
  local sky = require "sky"
  local d = M.DEFAULTS[method]
  local flags = require("sky.flags").parse(argv, M.FLAGS,
    { prog = "sft_" .. method .. ".lua", usage = M.USAGE:format(method, d.hub_model) })
  local o = M.options(method, flags)
  local task = sky.compute(function(opts) return require("trl.playbook").run(opts) end, { timeout = 24 * 3600 })
  print(string.format("skyrun %s: SFT (%s) of %s on %s, batch %d, seq %d, %s epoch(s), lr %g -> %s", sky.version,
    method, o.model or "a tiny Llama made here", o.dataset or "Alpaca-format rows made here", o.batch_size, o.seq_length,
    tostring(o.num_epochs), o.learning_rate, o.output_dir))
  local pool
  if method == "lora_fsdp" then
    -- the playbook's FSDP config through accelerate: the decoder layers wrapped and sharded
    pool = sky.ComputePool { provider = sky.providers["local"] {}, nodes = o.nodes, plugins = {
      sky.plugins.accelerate { config = { mixed_precision = "no", fsdp = {
        sharding_strategy = "FULL_SHARD", auto_wrap_policy = "TRANSFORMER_BASED_WRAP",
        transformer_layer_cls_to_wrap = "LlamaDecoderLayer", state_dict_type = "FULL_STATE_DICT",
        sync_module_states = true, use_orig_params = true } } } } }
  else
    pool = sky.ComputePool { provider = sky.providers["local"] {}, nodes = 1 }
  end
  pool:with(function()
    local r = method == "lora_fsdp" and pool:broadcast(task(o))[1] or pool:run(task(o))
    print(string.rep("=", 60))
    print("TRAINING COMPLETED")
    print(string.rep("=", 60))
    print(string.format("Device: %s", r.device))
    print(string.format("Training runtime: %.2f seconds", r.runtime))
    print(string.format("Samples per second: %.2f", r.samples_per_second))
    print(string.format("Steps per second: %.2f", r.steps_per_second))
    print(string.format("Train loss: %.4f (%d steps over %d rows)", r.train_loss, r.steps, r.rows))
    if r.ranks > 1 then print(string.format("FSDP: %s over %d ranks", r.fsdp and "on" or "off", r.ranks)) end
    print(string.format("Model and tokenizer saved to %s; TensorBoard logs in %s", r.saved, r.logs))
    print(string.rep("=", 60))
  end)
end

return M
