-- Acceptance 1 of issue 8: our Trainer reproduces HF Trainer 5.17's curves step by step (CPU,
-- fp32): tests/fixtures/trainer/<name>/history.json, made by tools/fixtures/gen_trainer.py with a
-- sequential sampler (ours: train_shuffle=false), dropout 0, AdamW, linear warmup, clipping,
-- weight decay and gradient accumulation 2. Tolerance: 1e-4 relative on every logged loss and on
-- the final eval loss; learning rates exactly; grad norms 1e-3 relative.
local T = require "testlib"
local transformers = require "transformers"
local tcore = require "transformers.train_core"

local ROOT = os.getenv("SKYRUN_SOURCE_ROOT") or "."
local FIX = ROOT .. "/tests/fixtures/trainer/"

local function rel(a, b) return math.abs(a - b) / math.max(math.abs(b), 1e-12) end

local function check(name, auto)
  local dir = FIX .. name
  local history = tcore.json_decode(T.read_file(dir .. "/history.json"))
  local data = tcore.json_decode(T.read_file(dir .. "/data.json"))
  local model = transformers[auto].from_pretrained(dir .. "/initial")
  local tok = { pad_token_id = 0 }  -- [PAD] of the fixture's WordLevel tokenizer; the data is already ids
  local collator = auto == "AutoModelForCausalLM" and transformers.DataCollatorForLanguageModeling(tok, { mlm = false })
    or transformers.DataCollatorWithPadding(tok)
  local a = history.args
  local args = transformers.TrainingArguments {
    output_dir = T.tmpdir(), use_cpu = true, train_shuffle = false,
    per_device_train_batch_size = a.per_device_train_batch_size, per_device_eval_batch_size = a.per_device_eval_batch_size,
    gradient_accumulation_steps = a.gradient_accumulation_steps, num_train_epochs = a.num_train_epochs,
    learning_rate = a.learning_rate, weight_decay = a.weight_decay, adam_beta1 = a.adam_beta1, adam_beta2 = a.adam_beta2,
    adam_epsilon = a.adam_epsilon, lr_scheduler_type = a.lr_scheduler_type, warmup_steps = a.warmup_steps,
    max_grad_norm = a.max_grad_norm, logging_steps = a.logging_steps, save_strategy = a.save_strategy,
    eval_strategy = a.eval_strategy, report_to = a.report_to, seed = a.seed, dataloader_drop_last = a.dataloader_drop_last,
    optim = a.optim, disable_tqdm = true,
  }
  local trainer = transformers.Trainer { model = model, args = args, train_dataset = data.train, eval_dataset = data.eval,
    data_collator = collator }
  local out = trainer:train()
  local metrics = trainer:evaluate()
  local ours = {}
  for _, e in ipairs(trainer.state.log_history) do if e.loss then ours[#ours + 1] = e end end
  local theirs = {}
  for _, e in ipairs(history.log_history) do if e.loss then theirs[#theirs + 1] = e end end
  T.eq(#ours, #theirs, name .. ": logged steps")
  T.eq(out.global_step, history.train_output.global_step)
  local worst = 0
  for i, e in ipairs(theirs) do
    local o = ours[i]
    T.eq(o.step, e.step)
    -- the unrounded step loss (history.step_losses) is what HF logs; compare with it
    local r = rel(o.loss, history.step_losses[i])
    worst = math.max(worst, r)
    T.ok(r < 1e-4, string.format("%s step %d: loss %.9g vs HF %.9g (rel %.2e)", name, e.step, o.loss, history.step_losses[i], r))
    T.near(o.learning_rate, e.learning_rate, 1e-15, name .. " lr of step " .. e.step)
    T.ok(rel(o.grad_norm, e.grad_norm) < 1e-3, string.format("%s step %d: grad_norm %.7g vs HF %.7g", name, e.step, o.grad_norm, e.grad_norm))
    T.near(o.epoch, e.epoch, 1e-12, name .. " epoch of step " .. e.step)
  end
  T.ok(rel(out.training_loss, history.train_output.training_loss) < 1e-4,
    string.format("%s train_loss %.9g vs HF %.9g", name, out.training_loss, history.train_output.training_loss))
  local r = rel(metrics.eval_loss, history.eval_metrics.eval_loss)
  T.ok(r < 1e-4, string.format("%s eval_loss %.9g vs HF %.9g (rel %.2e)", name, metrics.eval_loss, history.eval_metrics.eval_loss, r))
  print(string.format("     %s: %d steps, worst step-loss rel diff %.2e, eval_loss rel diff %.2e", name, #theirs, worst, r))
end

T.test("GPT-2 causal LM follows HF Trainer's curve", function() check("gpt2", "AutoModelForCausalLM") end)
T.test("Llama causal LM follows HF Trainer's curve", function() check("llama", "AutoModelForCausalLM") end)
T.test("DistilBERT classification follows HF Trainer's curve", function()
  check("distilbert-cls", "AutoModelForSequenceClassification")
end)

T.run()
