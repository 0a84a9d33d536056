-- jobs/finetune.lua: the main job. Fine-tunes a DistilBERT-style sequence classifier with the
-- Trainer inside a compute task on the local pool: evaluates, trains, evaluates again, saves the
-- model, reloads the saved folder and evaluates it once more.
--
--   skyrun jobs/finetune.lua                      # offline: a small model and data made here
--   skyrun jobs/finetune.lua --model distilbert-base-uncased --dataset stanfordnlp/imdb \
--       --epochs 1 --batch-size 16 --max-samples 2000 --output-dir /tmp/ft
--
-- Without --model/--dataset nothing is downloaded: the job writes a tiny random-init DistilBERT
-- (2 layers, dim 64) and a word-level tokenizer to <output-dir>/base, and generates a synthetic
-- sentiment set ("the plot was not dull but the acting felt awful" -> negative) whose label
-- depends on word order and negation. It shows that the pipeline learns, not a real benchmark.
local sky = require "sky"

local USAGE = [[
usage: skyrun jobs/finetune.lua [--model ID|DIR] [--dataset ID] [--epochs N] [--batch-size N]
                                [--max-samples N] [--output-dir DIR] [--lr X]
                                [--attn-implementation eager|sdpa]
  --model        a hub id or folder with a DistilBERT/BERT-style classifier (default: a tiny one made here)
  --dataset      a hub dataset with a text ("text" or "sentence") and a "label" column (default: synthetic)
  --epochs       training epochs (default 3)
  --batch-size   per-device batch size (default 32)
  --max-samples  rows of the train split to use (default 2000; eval uses a fifth of it)
  --output-dir   where checkpoints and the final model go (default /tmp/skyrun-finetune)
  --attn-implementation  as TRL's flag: "sdpa" (torch's fused attention, the default where
                 LibTorch >= 2.5) or "eager" (the written-out float32 softmax)
]]

local FLAGS = { model = "string", dataset = "string", epochs = "number", ["batch-size"] = "number",
  ["max-samples"] = "number", ["output-dir"] = "string", lr = "number", ["attn-implementation"] = "string" }

local flags = require("sky.flags").parse(arg, FLAGS, { prog = "finetune.lua", usage = USAGE })
local opts = {
  model = flags.model, dataset = flags.dataset, epochs = flags.epochs or 3, batch_size = math.floor(flags["batch-size"] or 32),
  max_samples = math.floor(flags["max-samples"] or 2000), output_dir = flags["output-dir"] or "/tmp/skyrun-finetune",
  lr = flags.lr, attn_implementation = flags["attn-implementation"],
}

-- The task: runs on a worker of the pool; everything it needs is required there.
local finetune = sky.compute(function(o)
  local transformers = require "transformers"
  local datasets = require "datasets"
  local tcore = require "transformers.train_core"
  local demo = require "transformers.demo_data"

  local base = o.model
  if not base then
    base = o.output_dir .. "/base"
    demo.make_classifier_folder(base, { seed = 42 })
  end
  local tok = transformers.AutoTokenizer.from_pretrained(base)
  local model = transformers.AutoModelForSequenceClassification.from_pretrained(base,
    { num_labels = 2, id2label = { [0] = "NEGATIVE", [1] = "POSITIVE" }, label2id = { NEGATIVE = 0, POSITIVE = 1 },
      attn_implementation = o.attn_implementation })

  local train_ds, eval_ds
  local n_eval = math.max(16, math.floor(o.max_samples / 5))
  if o.dataset then
    local ds = datasets.load_dataset(o.dataset)
    local train = ds.train:shuffle { seed = 42 }
    train_ds = train:select(1, math.min(o.max_samples, #train))
    local held = ds.test or ds.validation
    if held then
      held = held:shuffle { seed = 42 }
      eval_ds = held:select(1, math.min(n_eval, #held))
    else
      eval_ds = train:select(#train_ds + 1, math.min(#train_ds + n_eval, #train))
    end
  else
    train_ds = datasets.Dataset.from_list(demo.sentiment_rows(o.max_samples, 1))
    eval_ds = datasets.Dataset.from_list(demo.sentiment_rows(n_eval, 2))
  end
  local text_col = train_ds[1].text and "text" or "sentence"
  local function tokenize(batch) return tok(batch[text_col], { truncation = true, max_length = 256 }) end
  train_ds = train_ds:map(tokenize, { batched = true })
  eval_ds = eval_ds:map(tokenize, { batched = true })

  local function accuracy(p)
    local ok = 0
    for i, logits in ipairs(p.predictions) do
      local best = 1
      for j = 2, #logits do if logits[j] > logits[best] then best = j end end
      if best - 1 == p.label_ids[i] then ok = ok + 1 end
    end
    return { accuracy = ok / #p.predictions }
  end

  local cuda = require("skyrun.train").cuda_available()
  local args = transformers.TrainingArguments {
    output_dir = o.output_dir, num_train_epochs = o.epochs, per_device_train_batch_size = o.batch_size,
    per_device_eval_batch_size = 64, learning_rate = o.lr or (o.model and 5e-5 or 1e-3), weight_decay = 0.01,
    warmup_ratio = 0.1, logging_steps = 10, eval_strategy = "epoch", save_strategy = "epoch", save_total_limit = 1,
    load_best_model_at_end = true, metric_for_best_model = "accuracy", bf16 = cuda, report_to = "jsonl", seed = 42,
  }
  local trainer = transformers.Trainer { model = model, args = args, train_dataset = train_ds, eval_dataset = eval_ds,
    processing_class = tok, compute_metrics = accuracy }
  local before = trainer:evaluate()
  local out = trainer:train()
  local after = trainer:evaluate()
  local final_dir = o.output_dir .. "/final"
  trainer:save_model(final_dir)

  local reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(final_dir,
    { attn_implementation = o.attn_implementation })
  local check = transformers.Trainer { model = reloaded, args = transformers.TrainingArguments {
    output_dir = o.output_dir .. "/reload-eval", per_device_eval_batch_size = 64, bf16 = cuda, report_to = "none",
    disable_tqdm = true }, eval_dataset = eval_ds, processing_class = tok, compute_metrics = accuracy }
  local again = check:evaluate()
  return {
    device = cuda and "cuda (bf16 autocast)" or "cpu (fp32)", train_rows = #train_ds, eval_rows = #eval_ds,
    before = before, after = after, reloaded = again, training_loss = out.training_loss, global_step = out.global_step,
    runtime = out.metrics.train_runtime, saved = final_dir,
  }
end, { timeout = 3600 })

print(string.format("skyrun %s: fine-tuning %s on %s (%s epochs, batch %d, %d samples) -> %s", sky.version,
  opts.model or "a tiny DistilBERT made here", opts.dataset or "a synthetic sentiment set", tostring(opts.epochs),
  opts.batch_size, opts.max_samples, opts.output_dir))

local pool = sky.ComputePool { provider = sky.providers["local"] {}, nodes = 1 }
pool:with(function()
  local r = pool:run(finetune(opts))
  print(string.format("device: %s; %d train rows, %d eval rows", r.device, r.train_rows, r.eval_rows))
  print(string.format("eval accuracy before: %.4f (loss %.4f)", r.before.eval_accuracy, r.before.eval_loss))
  print(string.format("eval accuracy after:  %.4f (loss %.4f) after %d steps in %.1fs, train loss %.4f",
    r.after.eval_accuracy, r.after.eval_loss, r.global_step, r.runtime, r.training_loss))
  print(string.format("saved to %s; reloaded: eval accuracy %.4f (loss %.4f)", r.saved, r.reloaded.eval_accuracy,
    r.reloaded.eval_loss))
end)
