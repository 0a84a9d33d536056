-- The Trainer loop on the tiny classifier (no src/nn model needed): logging, evaluation,
-- checkpoints in HF's layout, resume after a kill (issue 8, acceptance 2), best-checkpoint
-- bookkeeping, callbacks, TensorBoard files, and HF-like errors (acceptance 4).
local T = require "testlib"
local transformers = require "transformers"
local train = require "skyrun.train"
local tcore = require "transformers.train_core"

local ROOT = os.getenv("SKYRUN_SOURCE_ROOT") or "."
local SCRIPT = ROOT .. "/tests/train/scripts/tiny_run.lua"

local function rows_of(n, seed)
  local rng = seed
  local function rnd(k) rng = (rng * 1103515245 + 12345) % 2147483648; return rng % k end
  local rows = {}
  for i = 1, n do
    local ids = {}
    for j = 1, 3 + rnd(6) do ids[j] = 1 + rnd(63) end
    -- the label: is the first token (where DistilBERT's classifier pools) below 32
    rows[i] = { input_ids = ids, label = (ids[1] < 32) and 1 or 0, text = "ignored" }
  end
  return rows
end

local function accuracy(p)
  local ok = 0
  for i, l in ipairs(p.predictions) do if ((l[2] > l[1]) and 1 or 0) == p.label_ids[i] then ok = ok + 1 end end
  return { accuracy = ok / #p.predictions }
end

local tok = { pad_token_id = 0 }

local tiny_model = require "tiny_model"
local function tiny() return tiny_model.tiny_classifier { vocab_size = 64, hidden_size = 16, num_labels = 2, seed = 1 } end

T.test("train logs every step, follows the schedule and improves eval accuracy", function()
  local out_dir = T.tmpdir()
  local rows, evald = rows_of(48, 7), rows_of(24, 9)
  local trainer = transformers.Trainer { model = tiny(), train_dataset = rows, eval_dataset = evald, processing_class = tok,
    compute_metrics = accuracy, args = transformers.TrainingArguments { output_dir = out_dir, per_device_train_batch_size = 4,
      gradient_accumulation_steps = 2, num_train_epochs = 3, learning_rate = 0.05, warmup_steps = 2, logging_steps = 1,
      save_strategy = "no", disable_tqdm = true } }
  local before = trainer:evaluate()
  local out = trainer:train()
  local after = trainer:evaluate()
  T.eq(out.global_step, 18)
  T.ok(after.eval_accuracy > before.eval_accuracy, string.format("accuracy %g -> %g", before.eval_accuracy, after.eval_accuracy))
  T.ok(after.eval_loss < before.eval_loss)
  local steps = {}
  for _, e in ipairs(trainer.state.log_history) do if e.loss then steps[#steps + 1] = e end end
  T.eq(#steps, 18)
  T.eq(steps[1].learning_rate, 0.0, "warmup starts at lr 0 on step 1")
  T.near(steps[2].learning_rate, 0.025, 1e-12)
  T.near(steps[3].learning_rate, 0.05, 1e-12)
  T.near(steps[18].learning_rate, 0.05 / 16, 1e-12)
  T.near(steps[1].epoch, 2 / 12, 1e-12)
  T.ok(steps[1].grad_norm > 0)
  local sum = 0
  for _, e in ipairs(steps) do sum = sum + e.loss end
  T.near(out.training_loss, sum / 18, 1e-9, "train_loss is the mean step loss")
  T.ok(out.metrics.train_runtime > 0)
end)

T.test("the same seed gives the same run; another seed another order", function()
  local function run(seed)
    local t = transformers.Trainer { model = tiny(), train_dataset = rows_of(32, 3), processing_class = tok,
      args = transformers.TrainingArguments { output_dir = T.tmpdir(), per_device_train_batch_size = 4, max_steps = 4,
        learning_rate = 0.05, logging_steps = 1, save_strategy = "no", disable_tqdm = true, seed = seed } }
    t:train()
    local l = {}
    for _, e in ipairs(t.state.log_history) do if e.loss then l[#l + 1] = e.loss end end
    return l
  end
  T.eq(run(1), run(1))
  T.ok(not T.deep_eq(run(1), run(2)))
end)

T.test("checkpoints have HF's layout and trainer_state fields; save_total_limit keeps the best", function()
  local out_dir = T.tmpdir()
  local trainer = transformers.Trainer { model = tiny(), train_dataset = rows_of(48, 7), eval_dataset = rows_of(16, 9),
    processing_class = tok, compute_metrics = accuracy,
    args = transformers.TrainingArguments { output_dir = out_dir, per_device_train_batch_size = 4, max_steps = 12,
      learning_rate = 0.05, logging_steps = 2, eval_strategy = "steps", eval_steps = 2, save_steps = 2,
      save_total_limit = 2, load_best_model_at_end = true, metric_for_best_model = "loss", disable_tqdm = true } }
  trainer:train()
  local best = trainer.state.best_model_checkpoint
  T.ok(best, "a best checkpoint is known")
  local names = {}
  for line in io.popen("ls -1 " .. T.shell_quote(out_dir)):lines() do names[#names + 1] = line end
  local cps = {}
  for _, n in ipairs(names) do if n:match("^checkpoint%-") then cps[#cps + 1] = n end end
  T.ok(#cps <= 3 and #cps >= 2, "save_total_limit: " .. table.concat(cps, ","))
  T.contains(table.concat(cps, ","), "checkpoint-12", "the newest is kept")
  T.contains(table.concat(cps, ","), best:match("checkpoint%-%d+$"), "the best is kept")
  local st = tcore.json_decode(T.read_file(out_dir .. "/checkpoint-12/trainer_state.json"))
  for _, k in ipairs { "best_global_step", "best_metric", "best_model_checkpoint", "epoch", "eval_steps", "global_step",
    "is_hyper_param_search", "is_local_process_zero", "is_world_process_zero", "log_history", "logging_steps",
    "max_steps", "num_input_tokens_seen", "num_train_epochs", "save_steps", "stateful_callbacks", "total_flos",
    "train_batch_size", "trial_name", "trial_params" } do
    T.ok(st[k] ~= nil, "trainer_state.json has " .. k)
  end
  T.eq(st.global_step, 12)
  T.eq(st.max_steps, 12)
  for _, f in ipairs { "model.safetensors", "config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.json" } do
    T.ok(io.open(out_dir .. "/checkpoint-12/" .. f), "checkpoint has " .. f)
  end
  T.eq(transformers.Trainer and require("transformers.trainer").get_last_checkpoint(out_dir), out_dir .. "/checkpoint-12")
end)

local function run_script(env)
  local parts = {}
  for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. T.shell_quote(v) end
  return T.sh(table.concat(parts, " ") .. " " .. T.shell_quote(T.skyrun_bin) .. " " .. T.shell_quote(SCRIPT))
end

T.test("a run killed at step 7 resumes from checkpoint-6 with the uninterrupted run's losses", function()
  local full_dir, cut_dir = T.tmpdir(), T.tmpdir()
  local _, err, code = run_script { OUT = full_dir, LOSSES = full_dir .. "/losses.json" }
  T.eq(code, 0, err)
  local full = tcore.json_decode(T.read_file(full_dir .. "/losses.json"))
  T.eq(#full.losses, 12)
  local _, _, killed = run_script { OUT = cut_dir, LOSSES = cut_dir .. "/losses.json", KILL_AT = "7" }
  T.ok(killed ~= 0, "the first run dies")
  T.ok(io.open(cut_dir .. "/checkpoint-6/trainer_state.json"), "checkpoint-6 was written")
  T.ok(not io.open(cut_dir .. "/checkpoint-9/trainer_state.json"))
  local _, err2, code2 = run_script { OUT = cut_dir, LOSSES = cut_dir .. "/losses.json", RESUME = "1" }
  T.eq(code2, 0, err2)
  local resumed = tcore.json_decode(T.read_file(cut_dir .. "/losses.json"))
  T.eq(resumed.global_step, 12)
  -- the resumed run's log_history holds steps 1-6 from the checkpoint and 7-12 of its own
  T.eq(#resumed.losses, 12)
  for i = 7, 12 do
    T.eq(resumed.losses[i].step, i)
    T.eq(resumed.losses[i].loss, full.losses[i].loss, "loss of step " .. i)
    T.eq(resumed.losses[i].grad_norm, full.losses[i].grad_norm, "grad_norm of step " .. i)
    T.eq(resumed.losses[i].learning_rate, full.losses[i].learning_rate, "lr of step " .. i)
  end
end)

T.test("a GPT-2 run killed at step 7 resumes from checkpoint-6 (model.safetensors) with identical losses", function()
  local gpt2 = ROOT .. "/tests/fixtures/trainer/gpt2/initial"
  local full_dir, cut_dir = T.tmpdir(), T.tmpdir()
  local _, err, code = run_script { OUT = full_dir, LOSSES = full_dir .. "/losses.json", MODEL = gpt2 }
  T.eq(code, 0, err)
  local full = tcore.json_decode(T.read_file(full_dir .. "/losses.json"))
  local _, _, killed = run_script { OUT = cut_dir, LOSSES = cut_dir .. "/losses.json", KILL_AT = "7", MODEL = gpt2 }
  T.ok(killed ~= 0)
  for _, f in ipairs { "model.safetensors", "config.json", "tokenizer_config.json", "trainer_state.json", "optimizer.pt" } do
    T.ok(io.open(cut_dir .. "/checkpoint-6/" .. f), "checkpoint-6 has " .. f)
  end
  local _, err2, code2 = run_script { OUT = cut_dir, LOSSES = cut_dir .. "/losses.json", RESUME = "1", MODEL = gpt2 }
  T.eq(code2, 0, err2)
  local resumed = tcore.json_decode(T.read_file(cut_dir .. "/losses.json"))
  for i = 7, 12 do
    T.eq(resumed.losses[i].loss, full.losses[i].loss, "loss of step " .. i)
    T.eq(resumed.losses[i].grad_norm, full.losses[i].grad_norm, "grad_norm of step " .. i)
  end
end)

T.test("dying while a checkpoint is written leaves the previous one intact and resumable", function()
  local dir = T.tmpdir()
  local _, _, code = run_script { OUT = dir, LOSSES = dir .. "/losses.json", KILL_IN_SAVE = "9" }
  T.ok(code ~= 0)
  T.ok(not io.open(dir .. "/checkpoint-9/trainer_state.json"), "no checkpoint-9")
  local left = T.sh("ls -1a " .. T.shell_quote(dir))
  T.contains(left, ".checkpoint-9.tmp-", "the half-written checkpoint stays under its temporary name")
  local st = tcore.json_decode(T.read_file(dir .. "/checkpoint-6/trainer_state.json"))
  T.eq(st.global_step, 6)
  T.eq(require("transformers.trainer").get_last_checkpoint(dir), dir .. "/checkpoint-6")
  local _, err, code2 = run_script { OUT = dir, LOSSES = dir .. "/losses.json", RESUME = "1" }
  T.eq(code2, 0, err)
  T.eq(tcore.json_decode(T.read_file(dir .. "/losses.json")).global_step, 12)
end)

T.test("callbacks see logs and evaluations; should_training_stop ends training; EarlyStoppingCallback stops", function()
  local seen = { log = 0, eval = 0, save = 0, step = 0 }
  local cb = transformers.TrainerCallback {
    on_log = function(_, _, _, _, logs) if logs.loss then seen.log = seen.log + 1 end end,
    on_evaluate = function(_, _, _, _, metrics) seen.eval = seen.eval + 1; T.ok(metrics.eval_loss) end,
    on_save = function() seen.save = seen.save + 1 end,
    on_step_end = function(_, _, state, control) seen.step = seen.step + 1; if state.global_step == 5 then control.should_stop = true end end,
  }
  local t = transformers.Trainer { model = tiny(), train_dataset = rows_of(40, 1), eval_dataset = rows_of(8, 2), processing_class = tok,
    callbacks = { cb }, args = transformers.TrainingArguments { output_dir = T.tmpdir(), per_device_train_batch_size = 4,
      max_steps = 10, logging_steps = 1, eval_strategy = "steps", eval_steps = 2, save_steps = 4, disable_tqdm = true } }
  local out = t:train()
  T.eq(out.global_step, 5)
  T.eq(seen.step, 5)
  T.eq(seen.log, 5)
  T.eq(seen.eval, 2)
  T.eq(seen.save, 1)
  T.raises(function() transformers.TrainerCallback { on_lgo = function() end } end, "did you mean 'on_log'?")

  local es = transformers.Trainer { model = tiny(), train_dataset = rows_of(40, 1), eval_dataset = rows_of(8, 2), processing_class = tok,
    callbacks = { transformers.EarlyStoppingCallback { early_stopping_patience = 1 } },
    args = transformers.TrainingArguments { output_dir = T.tmpdir(), per_device_train_batch_size = 4, max_steps = 40,
      learning_rate = 0.0, logging_steps = 5, eval_strategy = "steps", eval_steps = 1, save_steps = 1,
      load_best_model_at_end = true, disable_tqdm = true, save_total_limit = 1 } }
  local o2 = es:train()
  T.eq(o2.global_step, 2, "lr 0: the second evaluation is no better and patience 1 stops")
end)

T.test("bad arguments give HF's errors", function()
  T.raises(function()
    transformers.Trainer { model = tiny(), train_dataset = rows_of(4, 1),
      args = transformers.TrainingArguments { eval_strategy = "epoch" } }
  end, "You have set `args.eval_strategy` to epoch but you didn't pass an `eval_dataset` to `Trainer`")
  T.raises(function() transformers.Trainer { model = tiny(), modle = 1 } end, "unknown option 'modle' to 'Trainer' (did you mean 'model'?)")
  local t = transformers.Trainer { model = tiny(), args = transformers.TrainingArguments { output_dir = T.tmpdir() } }
  T.raises(function() t:train() end, "training requires a train_dataset")
  local es = transformers.Trainer { model = tiny(), train_dataset = rows_of(8, 1), processing_class = tok,
    callbacks = { transformers.EarlyStoppingCallback {} }, args = transformers.TrainingArguments { output_dir = T.tmpdir(), disable_tqdm = true } }
  T.raises(function() es:train() end, "EarlyStoppingCallback requires load_best_model_at_end = True")
  local r = transformers.Trainer { model = tiny(), train_dataset = rows_of(8, 1), processing_class = tok,
    args = transformers.TrainingArguments { output_dir = T.tmpdir() .. "/empty", disable_tqdm = true } }
  T.raises(function() r:train { resume_from_checkpoint = true } end, "No valid checkpoint found in output directory")
end)

T.test("report_to writes jsonl lines and TensorBoard records with valid crc32c", function()
  local dir = T.tmpdir()
  local t = transformers.Trainer { model = tiny(), train_dataset = rows_of(16, 1), processing_class = tok,
    args = transformers.TrainingArguments { output_dir = dir, per_device_train_batch_size = 4, max_steps = 3,
      logging_steps = 1, save_strategy = "no", report_to = { "jsonl", "tensorboard" }, logging_dir = dir .. "/tb",
      disable_tqdm = true } }
  t:train()
  local lines = {}
  for line in io.lines(dir .. "/trainer_log.jsonl") do lines[#lines + 1] = tcore.json_decode(line) end
  T.eq(#lines, 4)
  T.eq(lines[1].step, 1)
  T.ok(lines[4].train_loss)
  local name = T.sh("ls " .. T.shell_quote(dir .. "/tb")):match("(events%.out%.tfevents[^\n]+)")
  T.ok(name, "an event file")
  local data = T.read_file(dir .. "/tb/" .. name)
  local pos, records, tags = 1, 0, {}
  local function u32(s, i) local a, b, c, d = s:byte(i, i + 3); return a + b * 256 + c * 65536 + d * 16777216 end
  while pos <= #data do
    local len = u32(data, pos)  -- lengths here are < 2^32
    local _, len_crc = tcore.crc32c(data:sub(pos, pos + 7))
    T.eq(u32(data, pos + 8), len_crc, "length crc of record " .. records)
    local payload = data:sub(pos + 12, pos + 11 + len)
    local _, data_crc = tcore.crc32c(payload)
    T.eq(u32(data, pos + 12 + len), data_crc, "data crc of record " .. records)
    for tag in payload:gmatch("(train/[%a_]+)") do tags[tag] = true end
    pos = pos + 16 + len
    records = records + 1
  end
  T.eq(pos, #data + 1)
  T.ok(records >= 1 + 3 * 3, "file_version + scalars")
  T.ok(tags["train/loss"] and tags["train/learning_rate"] and tags["train/grad_norm"], "scalar tags")
end)

T.test("collators pad to the longest, mask pads in LM labels, and refuse ragged rows unpadded", function()
  local rows = { { input_ids = { 5, 6, 7 }, label = 1, text = "a" }, { input_ids = { 8 }, label = 0, text = "b" } }
  local b = transformers.DataCollatorWithPadding({ pad_token_id = 0 })(rows)
  T.eq(b:get("input_ids"), { { 5, 6, 7 }, { 8, 0, 0 } })
  T.eq(b:get("attention_mask"), { { 1, 1, 1 }, { 1, 0, 0 } })
  T.eq(b:get("labels"), { 1, 0 })
  T.eq(b:get("text"), nil)
  local left = transformers.DataCollatorWithPadding({ pad_token_id = 0, padding_side = "left" }, { pad_to_multiple_of = 4 })(rows)
  T.eq(left:get("input_ids"), { { 0, 5, 6, 7 }, { 0, 0, 0, 8 } })
  local lm = transformers.DataCollatorForLanguageModeling({ pad_token_id = 0 }, { mlm = false })({ { input_ids = { 5, 6, 7 } }, { input_ids = { 8 } } })
  T.eq(lm:get("labels"), { { 5, 6, 7 }, { 8, -100, -100 } })
  T.raises(function() transformers.DataCollatorForLanguageModeling({ pad_token_id = 0 }) end, "not supported yet: DataCollatorForLanguageModeling with mlm=true")
  T.raises(function() transformers.DataCollatorForLanguageModeling({}, { mlm = false }) end, "does not have a padding token")
  T.raises(function() transformers.default_data_collator(rows) end, "column 'input_ids' has rows of different lengths (1 and 3)")
  local d = transformers.default_data_collator({ { input_ids = { 1, 2 }, label = 1 }, { input_ids = { 3, 4 }, label = 0 } })
  T.eq(d:get("labels"), { 1, 0 })
  T.eq(d.rows, 2)
end)

T.test("trainer_state JSON keeps doubles exact through a write and a read (found by fuzz_train_json)", function()
  for _, v in ipairs { 1 / 6, 0.1, 2 / 3 * 1e-7, 4.969246864318848, 1e300, -5e-324, 2 ^ 53 + 2 } do
    T.eq(tcore.json_decode(tcore.json_encode({ v }))[1], v, tostring(v))
  end
  local text = '{"epoch": 0.16666666666666666, "loss": 3.0282788276672363}'
  local once = tcore.json_encode(tcore.json_decode(text))
  T.eq(tcore.json_encode(tcore.json_decode(once)), once)
  T.eq(tcore.json_decode(text).epoch, 1 / 6)
  T.raises(function() tcore.json_decode("{\"a\": [1,", "state.json") end, "state.json: invalid JSON at offset")
end)

T.test("the fp16 loss scaler leaves fp32 results unchanged and skips a step whose grads overflow", function()
  local rows = rows_of(8, 3)
  local b = transformers.DataCollatorWithPadding(tok)(rows)
  local function run(opts)
    local e = train.engine(tiny(), opts)
    local out = {}
    for i = 1, 3 do
      local lr, skipped = e:train_step({ b }, nil, 1, 1)
      out[i] = { loss = e:take_loss(), grad_norm = e:grad_norm(), lr = lr, skipped = skipped }
    end
    return out, e
  end
  local plain = run { learning_rate = 0.05, lr_scheduler_type = "constant" }
  local scaled = run { learning_rate = 0.05, lr_scheduler_type = "constant", loss_scaling = true, init_scale = 1024 }
  for i = 1, 3 do
    T.eq(scaled[i].loss, plain[i].loss, "scaling by 2^k is exact: loss of step " .. i)
    T.eq(scaled[i].grad_norm, plain[i].grad_norm)
    T.eq(scaled[i].skipped, false)
  end
  local over, e = run { learning_rate = 0.05, lr_scheduler_type = "linear", total_steps = 10, loss_scaling = true, init_scale = 1e300 }
  T.eq(over[1].skipped, true, "inf grads: the step is skipped")
  T.eq(over[2].loss, over[1].loss, "the weights did not move")
  T.eq(e:info().scheduler_steps, 0, "nor did the schedule")
  T.ok(e:info().loss_scale < 1e300 / 4, "the scale backs off")
  T.raises(function() train.engine(tiny(), { fp16 = true }) end, "not supported yet: fp16 on the CPU")
end)

T.test("group_by_length batches rows of similar length; the order is a permutation", function()
  local rows = rows_of(64, 5)
  local t = transformers.Trainer { model = tiny(), train_dataset = rows, processing_class = tok,
    args = transformers.TrainingArguments { output_dir = T.tmpdir(), per_device_train_batch_size = 4, group_by_length = true,
      disable_tqdm = true } }
  local order = t:_epoch_order(#rows, 0)
  local seen, spread_grouped = {}, 0
  for _, i in ipairs(order) do seen[i] = true end
  for i = 1, 64 do T.ok(seen[i], "row " .. i .. " is in the order") end
  local plain = transformers.Trainer { model = tiny(), train_dataset = rows, processing_class = tok,
    args = transformers.TrainingArguments { output_dir = T.tmpdir(), per_device_train_batch_size = 4, disable_tqdm = true } }
  local porder = plain:_epoch_order(#rows, 0)
  local function spread(o)
    local s = 0
    for b = 1, #o, 4 do
      local lo, hi = math.huge, -math.huge
      for k = b, b + 3 do local n = #rows[o[k]].input_ids; lo = math.min(lo, n); hi = math.max(hi, n) end
      s = s + hi - lo
    end
    return s
  end
  spread_grouped = spread(order)
  T.ok(spread_grouped < spread(porder), string.format("length spread %d grouped vs %d random", spread_grouped, spread(porder)))
  local longest = 0
  for _, r in ipairs(rows) do longest = math.max(longest, #r.input_ids) end
  T.eq(#rows[order[1]].input_ids, longest, "the longest row comes first")
end)

T.test("predict returns logits and labels; datasets.Dataset rows train as lists do; SGD and cosine run", function()
  local datasets = require "datasets"
  local rows = rows_of(24, 3)
  local plain = {}
  for i, r in ipairs(rows) do plain[i] = { input_ids = r.input_ids, label = r.label } end
  local ds = datasets.Dataset.from_list(plain)
  local t = transformers.Trainer { model = tiny(), train_dataset = ds, processing_class = tok,
    args = transformers.TrainingArguments { output_dir = T.tmpdir(), per_device_train_batch_size = 4, max_steps = 4,
      optim = "sgd", lr_scheduler_type = "cosine", learning_rate = 0.1, logging_steps = 1, save_strategy = "no",
      disable_tqdm = true } }
  local out = t:train()
  T.eq(out.global_step, 4)
  local lrs = {}
  for _, e in ipairs(t.state.log_history) do if e.learning_rate then lrs[#lrs + 1] = e.learning_rate end end
  T.near(lrs[1], 0.1, 1e-12)
  T.near(lrs[3], 0.05, 1e-12, "cosine at half way")
  local p = t:predict(ds)
  T.eq(#p.predictions, 24)
  T.eq(#p.predictions[1], 2)
  T.eq(p.label_ids[1], plain[1].label)
  T.ok(p.metrics.test_loss > 0)
end)

T.test("evaluation without compute_metrics copies no logits to the host; predict copies them once (issue 17)", function()
  local dir = ROOT .. "/tests/fixtures/trainer/gpt2"
  local data = tcore.json_decode(T.read_file(dir .. "/data.json"))
  local trainer = transformers.Trainer { model = transformers.AutoModelForCausalLM.from_pretrained(dir .. "/initial"),
    eval_dataset = data.eval, data_collator = transformers.DataCollatorForLanguageModeling(tok, { mlm = false }),
    args = transformers.TrainingArguments { output_dir = T.tmpdir(), use_cpu = true, per_device_eval_batch_size = 4,
      disable_tqdm = true } }
  local m = trainer:evaluate()
  T.ok(m.eval_loss > 0 and m.eval_loss < 100, "eval_loss " .. m.eval_loss)
  T.eq(trainer.engine:info().host_logits_bytes, 0, "no [batch, seq, vocab] logits reached the host")
  local p = trainer:predict(data.eval)
  local V = #p.predictions[1][1]
  T.ok(V > 100, "predictions carry the vocabulary: " .. V)
  local elements = 0
  for s = 1, #data.eval, 4 do  -- each batch is padded to its longest row
    local longest = 0
    for i = s, math.min(s + 3, #data.eval) do longest = math.max(longest, #data.eval[i].input_ids) end
    elements = elements + math.min(4, #data.eval - s + 1) * longest * V
  end
  T.eq(trainer.engine:info().host_logits_bytes, elements * 4, "predict: the float32 logits, once")
  T.near(p.metrics.test_loss, m.eval_loss, 1e-6 * m.eval_loss, "the same loss, with logits (predict) or the fused lm_head + loss (evaluate)")
  -- preprocess_logits_for_metrics runs on the device, with tensors: only its result is copied
  local seen
  trainer.preprocess_logits_for_metrics = function(logits, labels)
    seen = { logits.shape[3], labels.shape[1] }
    return logits:argmax(-1)
  end
  local before = trainer.engine:info().host_logits_bytes
  local q = trainer:predict(data.eval)
  T.eq(seen[1], V)
  T.eq(type(q.predictions[1][1]), "number", "token ids, not logits")
  T.eq(trainer.engine:info().host_logits_bytes - before, elements / V * 8, "int64 ids only")
end)

T.test("a datasets.Dataset takes the native data path (issue 17) with the losses of the same rows as Lua tables", function()
  local datasets = require "datasets"
  local rows = rows_of(40, 5)
  local cols = { input_ids = {}, label = {}, text = {} }
  for i, r in ipairs(rows) do cols.input_ids[i], cols.label[i], cols.text[i] = r.input_ids, r.label, r.text end
  local ds = datasets.Dataset.from_dict(cols)
  local function run(data)
    local t = transformers.Trainer { model = tiny(), train_dataset = data, eval_dataset = data, processing_class = tok,
      args = transformers.TrainingArguments { output_dir = T.tmpdir(), per_device_train_batch_size = 4,
        gradient_accumulation_steps = 2, num_train_epochs = 2, learning_rate = 0.05, logging_steps = 1,
        save_strategy = "no", disable_tqdm = true, seed = 3 } }
    t:train()
    local l = {}
    for _, e in ipairs(t.state.log_history) do if e.loss then l[#l + 1] = e.loss end end
    return l, t:evaluate().eval_loss, t
  end
  local lua_losses, lua_eval, t1 = run(rows)
  local native_losses, native_eval, t2 = run(ds)
  T.ok(t1._loaders == nil or next(t1._loaders) == nil, "Lua rows take the Lua path")
  T.ok(t2._loaders and next(t2._loaders) ~= nil, "the Dataset took the native loader")
  T.eq(#native_losses, 10)
  T.eq(native_losses, lua_losses)
  T.eq(native_eval, lua_eval)
  local bad = datasets.Dataset.from_dict { input_ids = { { 1, 2 } }, tokens = { { "a", "b" } }, label = { 1 } }
  T.raises(function()
    transformers.Trainer { model = tiny(), train_dataset = bad, processing_class = tok,
      args = transformers.TrainingArguments { output_dir = T.tmpdir(), max_steps = 1, disable_tqdm = true } }:train()
  end, "DataCollatorWithPadding: column 'tokens' is list<string> (numbers or lists of numbers expected)")
end)

T.run()
