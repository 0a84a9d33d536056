-- jobs/lora.lua: LoRA fine-tuning of a causal LM, as the NVIDIA playbook's LoRA script and PEFT's
-- examples do it: the base frozen, adapters on the attention and MLP projections, the Trainer, the
-- adapter saved (adapter_config.json + adapter_model.safetensors, which PEFT loads), then loaded
-- again on a fresh base and used to generate.
--
--   skyrun jobs/lora.lua                                 # offline: a tiny Llama and text made here
--   skyrun jobs/lora.lua --model Qwen/Qwen3-0.6B --dataset karpathy/tiny_shakespeare --epochs 1
--   skyrun jobs/lora.lua --qlora ...                     # the base in 4 bits (NF4, double quant)
--
-- Without --model/--dataset nothing is downloaded: a random-init Llama (2 layers, dim 64), a
-- word-level tokenizer and synthetic review sentences (transformers.demo_data) are used.
local sky = require "sky"

local USAGE = [[
usage: skyrun jobs/lora.lua [--model ID|DIR] [--dataset ID] [--epochs N] [--batch-size N] [--max-samples N]
                            [--output-dir DIR] [--lr X] [--block-size N] [--r N] [--alpha X] [--dropout X]
                            [--target-modules all-linear|a,b,c] [--qlora] [--gradient-checkpointing]
]]
local FLAGS = { model = "string", dataset = "string", epochs = "number", ["batch-size"] = "number",
  ["max-samples"] = "number", ["output-dir"] = "string", lr = "number", ["block-size"] = "number", r = "number",
  alpha = "number", dropout = "number", ["target-modules"] = "string", qlora = "boolean",
  ["gradient-checkpointing"] = "boolean" }

local flags = require("sky.flags").parse(arg, FLAGS, { prog = "lora.lua", usage = USAGE })
local targets = flags["target-modules"] or "all-linear"
if targets ~= "all-linear" then
  local list = {}
  for t in targets:gmatch("[^,]+") do list[#list + 1] = t end
  targets = list
end
local opts = {
  model = flags.model, dataset = flags.dataset, epochs = flags.epochs or 3,
  batch_size = math.floor(flags["batch-size"] or 16), max_samples = math.floor(flags["max-samples"] or 600),
  output_dir = flags["output-dir"] or "/tmp/skyrun-lora", lr = flags.lr, block_size = math.floor(flags["block-size"] or 128),
  r = math.floor(flags.r or 16), alpha = flags.alpha or 32, dropout = flags.dropout or 0.05, targets = targets,
  qlora = flags.qlora or false, gc = flags["gradient-checkpointing"] or flags.qlora or false,
}

local train_lora = sky.compute(function(o)
  local transformers = require "transformers"
  local datasets = require "datasets"
  local peft = require "peft"
  local demo = require "transformers.demo_data"

  local base = o.model
  if not base then
    base = o.output_dir .. "/base"
    demo.make_causal_lm_folder(base, { seed = 42, model_type = "llama" })
  end
  local tok = transformers.AutoTokenizer.from_pretrained(base)
  if tok.pad_token == nil then tok.pad_token = tok.eos_token end
  local cuda = require("skyrun.train").cuda_available()
  local load = {}
  if o.qlora then
    load.quantization_config = transformers.BitsAndBytesConfig { load_in_4bit = true, bnb_4bit_quant_type = "nf4",
      bnb_4bit_use_double_quant = true, bnb_4bit_compute_dtype = cuda and "bfloat16" or "float32" }
    load.device = cuda and "cuda" or "cpu"
  end
  local model = transformers.AutoModelForCausalLM.from_pretrained(base, load)
  if o.qlora then model = peft.prepare_model_for_kbit_training(model, { use_gradient_checkpointing = o.gc }) end
  local config = peft.LoraConfig { r = o.r, lora_alpha = o.alpha, lora_dropout = o.dropout, target_modules = o.targets,
    task_type = "CAUSAL_LM" }
  model = peft.get_peft_model(model, config)
  model:print_trainable_parameters()

  local train_ds, eval_ds
  local n_eval = math.max(16, math.floor(o.max_samples / 10))
  if o.dataset then
    local ds = datasets.load_dataset(o.dataset)
    train_ds = ds.train:select(1, math.min(o.max_samples, #ds.train))
    local held = ds.validation or ds.test
    eval_ds = held and held:select(1, math.min(n_eval, #held))
      or ds.train:select(#train_ds + 1, math.min(#train_ds + n_eval, #ds.train))
  else
    train_ds = datasets.Dataset.from_list(demo.lm_rows(o.max_samples, 3))
    eval_ds = datasets.Dataset.from_list(demo.lm_rows(n_eval, 4))
  end
  local function tokenize(batch) return tok(batch.text, { truncation = true, max_length = o.block_size }) end
  train_ds = train_ds:map(tokenize, { batched = true })
  eval_ds = eval_ds:map(tokenize, { batched = true })

  local args = transformers.TrainingArguments {
    output_dir = o.output_dir, num_train_epochs = o.epochs, per_device_train_batch_size = o.batch_size,
    per_device_eval_batch_size = o.batch_size, learning_rate = o.lr or (o.model and 2e-4 or 3e-3), warmup_ratio = 0.05,
    lr_scheduler_type = "cosine", logging_steps = 10, eval_strategy = "epoch", save_strategy = "epoch",
    save_total_limit = 1, bf16 = cuda, report_to = "jsonl", seed = 42, gradient_checkpointing = o.gc,
  }
  local trainer = transformers.Trainer { model = model, args = args, train_dataset = train_ds, eval_dataset = eval_ds,
    processing_class = tok, data_collator = transformers.DataCollatorForLanguageModeling(tok, { mlm = false }) }
  local before = trainer:evaluate()
  local out = trainer:train()
  local after = trainer:evaluate()
  local adapter = o.output_dir .. "/adapter"
  model:save_pretrained(adapter)

  -- the adapter on a fresh base, as a user of the saved folder would load it
  local fresh = transformers.AutoModelForCausalLM.from_pretrained(base, load)
  local loaded = peft.PeftModel.from_pretrained(fresh, adapter)
  local prompt = o.model and "The" or "the plot was"
  local ids = tok(prompt).input_ids
  local gen = loaded:generate({ ids }, { max_new_tokens = 12, pad_token_id = tok.pad_token_id })
  local text = tok:decode(gen:tolist()[1], { skip_special_tokens = true })
  local reloaded = transformers.Trainer { model = loaded, args = transformers.TrainingArguments {
    output_dir = o.output_dir .. "/reloaded-eval", per_device_eval_batch_size = o.batch_size, report_to = "none" },
    eval_dataset = eval_ds, processing_class = tok,
    data_collator = transformers.DataCollatorForLanguageModeling(tok, { mlm = false }) }:evaluate()
  local trainable, all = model:get_nb_trainable_parameters()
  return { device = cuda and "cuda (bf16 autocast)" or "cpu (fp32)", before = before.eval_loss, after = after.eval_loss,
    reloaded = reloaded.eval_loss, steps = out.global_step, runtime = out.metrics.train_runtime, adapter = adapter,
    generated = text, trainable = trainable, all = all }
end, { timeout = 3600 })

print(string.format("skyrun %s: LoRA (r=%d%s) on %s with %s -> %s", sky.version, opts.r, opts.qlora and ", QLoRA 4-bit base" or "",
  opts.dataset or "synthetic sentences", opts.model or "a tiny Llama made here", opts.output_dir))
local pool = sky.ComputePool { provider = sky.providers["local"] {}, nodes = 1 }
pool:with(function()
  local r = pool:run(train_lora(opts))
  print(string.format("device: %s", r.device))
  print(string.format("trainable params: %d of %d (%.2f%%)", r.trainable, r.all, 100 * r.trainable / r.all))
  print(string.format("eval loss before: %.4f", r.before))
  print(string.format("eval loss after:  %.4f after %d steps in %.1fs", r.after, r.steps, r.runtime))
  print(string.format("eval loss of the saved adapter on a fresh base: %.4f", r.reloaded))
  print(string.format("adapter: %s", r.adapter))
  print(string.format("generated: %s", r.generated))
end)
