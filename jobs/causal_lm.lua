-- jobs/causal_lm.lua: the seeds' causal-LM flow. Fine-tunes a GPT-2/Llama/Qwen-style model on
-- text with DataCollatorForLanguageModeling (mlm = false), evaluating and saving every epoch and
-- loading the best checkpoint at the end; prints eval loss and perplexity before and after.
--
--   skyrun jobs/causal_lm.lua                     # offline: a tiny GPT-2 and text made here
--   skyrun jobs/causal_lm.lua --model gpt2 --dataset karpathy/tiny_shakespeare --epochs 1
--
-- Without --model/--dataset nothing is downloaded: a random-init GPT-2 (2 layers, dim 64), a
-- word-level tokenizer and synthetic review sentences (transformers.demo_data) are used.
local sky = require "sky"

local USAGE = [[
usage: skyrun jobs/causal_lm.lua [--model ID|DIR] [--dataset ID] [--epochs N] [--batch-size N]
                                 [--max-samples N] [--output-dir DIR] [--lr X] [--block-size N]
                                 [--attn-implementation eager|sdpa]
]]
local FLAGS = { model = "string", dataset = "string", epochs = "number", ["batch-size"] = "number",
  ["max-samples"] = "number", ["output-dir"] = "string", lr = "number", ["block-size"] = "number",
  ["attn-implementation"] = "string" }

local flags = require("sky.flags").parse(arg, FLAGS, { prog = "causal_lm.lua", usage = USAGE })
local opts = {
  model = flags.model, dataset = flags.dataset, epochs = flags.epochs or 2, batch_size = math.floor(flags["batch-size"] or 16),
  max_samples = math.floor(flags["max-samples"] or 1000), output_dir = flags["output-dir"] or "/tmp/skyrun-causal-lm",
  lr = flags.lr, block_size = math.floor(flags["block-size"] or 128), attn_implementation = flags["attn-implementation"],
}

local train_lm = sky.compute(function(o)
  local transformers = require "transformers"
  local datasets = require "datasets"
  local demo = require "transformers.demo_data"

  local base = o.model
  if not base then
    base = o.output_dir .. "/base"
    demo.make_causal_lm_folder(base, { seed = 42 })
  end
  local tok = transformers.AutoTokenizer.from_pretrained(base)
  if tok.pad_token == nil then tok.pad_token = tok.eos_token end  -- GPT-2 has no pad token
  local model = transformers.AutoModelForCausalLM.from_pretrained(base, { attn_implementation = o.attn_implementation })

  local train_ds, eval_ds
  local n_eval = math.max(16, math.floor(o.max_samples / 10))
  if o.dataset then
    local ds = datasets.load_dataset(o.dataset)
    local train = ds.train
    train_ds = train:select(1, math.min(o.max_samples, #train))
    local held = ds.validation or ds.test
    eval_ds = held and held:select(1, math.min(n_eval, #held)) or train:select(#train_ds + 1, math.min(#train_ds + n_eval, #train))
  else
    train_ds = datasets.Dataset.from_list(demo.lm_rows(o.max_samples, 3))
    eval_ds = datasets.Dataset.from_list(demo.lm_rows(n_eval, 4))
  end
  local function tokenize(batch) return tok(batch.text, { truncation = true, max_length = o.block_size }) end
  train_ds = train_ds:map(tokenize, { batched = true })
  eval_ds = eval_ds:map(tokenize, { batched = true })

  local cuda = require("skyrun.train").cuda_available()
  local args = transformers.TrainingArguments {
    output_dir = o.output_dir, num_train_epochs = o.epochs, per_device_train_batch_size = o.batch_size,
    per_device_eval_batch_size = o.batch_size, learning_rate = o.lr or (o.model and 5e-5 or 2e-3), weight_decay = 0.01,
    warmup_ratio = 0.05, lr_scheduler_type = "cosine", logging_steps = 10, eval_strategy = "epoch", save_strategy = "epoch",
    save_total_limit = 2, load_best_model_at_end = true, bf16 = cuda, report_to = "jsonl", seed = 42,
  }
  local trainer = transformers.Trainer { model = model, args = args, train_dataset = train_ds, eval_dataset = eval_ds,
    processing_class = tok, data_collator = transformers.DataCollatorForLanguageModeling(tok, { mlm = false }) }
  local before = trainer:evaluate()
  local out = trainer:train()
  local after = trainer:evaluate()
  trainer:save_model(o.output_dir .. "/final")
  return { device = cuda and "cuda (bf16 autocast)" or "cpu (fp32)", before = before.eval_loss, after = after.eval_loss,
    steps = out.global_step, runtime = out.metrics.train_runtime, best = trainer.state.best_model_checkpoint,
    saved = o.output_dir .. "/final" }
end, { timeout = 3600 })

print(string.format("skyrun %s: causal LM on %s with %s -> %s", sky.version, opts.dataset or "synthetic sentences",
  opts.model or "a tiny GPT-2 made here", opts.output_dir))
local pool = sky.ComputePool { provider = sky.providers["local"] {}, nodes = 1 }
pool:with(function()
  local r = pool:run(train_lm(opts))
  print(string.format("device: %s", r.device))
  print(string.format("eval loss before: %.4f (perplexity %.2f)", r.before, math.exp(r.before)))
  print(string.format("eval loss after:  %.4f (perplexity %.2f) after %d steps in %.1fs", r.after, math.exp(r.after), r.steps, r.runtime))
  print(string.format("best checkpoint: %s; saved to %s", tostring(r.best), r.saved))
end)
