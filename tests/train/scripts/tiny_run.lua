-- A Trainer run on the tiny classifier, driven by environment variables (used by test_trainer.lua
-- as a separate process, so it can be killed):
--   OUT=<output_dir> RESUME=1 KILL_AT=<step> KILL_IN_SAVE=<step> LOSSES=<file>
--   MODEL=<folder>: a causal LM folder (the GPT-2 fixture) instead of the tiny classifier
local transformers = require "transformers"
local train = require "skyrun.train"
local tcore = require "transformers.train_core"

local function my_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("*n")
  f:close()
  return pid
end
local function die() os.execute("kill -9 " .. my_pid()) end

local model_dir = os.getenv("MODEL")
local model = model_dir and transformers.AutoModelForCausalLM.from_pretrained(model_dir)
  or require("tiny_model").tiny_classifier { vocab_size = 64, hidden_size = 16, num_labels = 2, seed = 1 }
local rng = 7
local function rnd(n) rng = (rng * 1103515245 + 12345) % 2147483648; return rng % n end
local rows = {}
for i = 1, 48 do
  local ids = {}
  for j = 1, 3 + rnd(6) do ids[j] = 1 + rnd(63) end
  local small = 0
  for _, v in ipairs(ids) do if v < 32 then small = small + 1 end end
  rows[i] = { input_ids = ids, label = (small * 2 > #ids) and 1 or 0 }
  if model_dir then rows[i] = { input_ids = ids } end
end
local kill_at = tonumber(os.getenv("KILL_AT") or "")
local kill_in_save = tonumber(os.getenv("KILL_IN_SAVE") or "")
local state_ref
-- a tokenizer-shaped table: its save_pretrained runs in the middle of writing a checkpoint
local tok = { pad_token_id = 0, save_pretrained = function(_, dir)
  if kill_in_save and state_ref.global_step == kill_in_save then die() end
  local f = assert(io.open(dir .. "/tokenizer_config.json", "w"))
  f:write('{"pad_token": "[PAD]"}')
  f:close()
end }
local args = transformers.TrainingArguments { output_dir = os.getenv("OUT"), per_device_train_batch_size = 4,
  gradient_accumulation_steps = 2, max_steps = 12, learning_rate = 0.05, warmup_steps = 2, weight_decay = 0.01,
  logging_steps = 1, save_steps = 3, disable_tqdm = true, report_to = "jsonl", seed = 5 }
local trainer = transformers.Trainer { model = model, args = args, train_dataset = rows, processing_class = tok,
  data_collator = model_dir and transformers.DataCollatorForLanguageModeling(tok, { mlm = false }) or nil,
  callbacks = { { on_step_end = function(_, _, state) if kill_at and state.global_step == kill_at then die() end end } } }
state_ref = trainer.state
local out = trainer:train { resume_from_checkpoint = os.getenv("RESUME") == "1" }
local losses = {}
for _, e in ipairs(trainer.state.log_history) do
  if e.loss then losses[#losses + 1] = { step = e.step, loss = e.loss, grad_norm = e.grad_norm, learning_rate = e.learning_rate } end
end
local f = assert(io.open(os.getenv("LOSSES"), "w"))
f:write(tcore.json_encode({ losses = losses, global_step = out.global_step }))
f:close()
