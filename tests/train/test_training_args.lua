-- TrainingArguments: HF names and defaults, and HF-like errors for bad arguments (issue 8, acceptance 4).
local T = require "testlib"
local transformers = require "transformers"
local TrainingArguments = transformers.TrainingArguments

T.test("defaults are transformers 5.x's", function()
  local a = TrainingArguments {}
  T.eq(a.output_dir, "trainer_output")
  T.eq(a.num_train_epochs, 3.0)
  T.eq(a.max_steps, -1)
  T.eq(a.per_device_train_batch_size, 8)
  T.eq(a.per_device_eval_batch_size, 8)
  T.eq(a.gradient_accumulation_steps, 1)
  T.eq(a.learning_rate, 5e-5)
  T.eq(a.weight_decay, 0.0)
  T.eq({ a.adam_beta1, a.adam_beta2, a.adam_epsilon }, { 0.9, 0.999, 1e-8 })
  T.eq(a.lr_scheduler_type, "linear")
  T.eq(a.max_grad_norm, 1.0)
  T.eq(a.logging_steps, 500)
  T.eq(a.save_strategy, "steps")
  T.eq(a.eval_strategy, "no")
  T.eq(a.seed, 42)
  T.eq(a.train_shuffle, true)
  T.eq(a.report_to, "none")
  T.eq(a.reporters, {})
  T.eq(a.metric_for_best_model, nil)
  T.eq(a.remove_unused_columns, true)
end)

T.test("given values are kept and fractional epochs are allowed", function()
  local a = TrainingArguments { output_dir = "/tmp/x", num_train_epochs = 0.5, learning_rate = 1e-3,
    per_device_train_batch_size = 2, train_shuffle = false, report_to = { "jsonl", "tensorboard" } }
  T.eq(a.num_train_epochs, 0.5)
  T.eq(a.learning_rate, 1e-3)
  T.eq(a.train_shuffle, false)
  T.eq(a.reporters, { "jsonl", "tensorboard" })
  T.eq(TrainingArguments({ report_to = "all" }).reporters, { "jsonl", "tensorboard" })
end)

T.test("an unknown name is an error with a suggestion", function()
  local err = T.raises(function() TrainingArguments { num_epochs = 3 } end,
    "unknown option 'num_epochs' to 'TrainingArguments' (did you mean 'num_train_epochs'?)")
  T.contains(err, "test_training_args.lua", "blames the caller's line")
  T.raises(function() TrainingArguments { learnig_rate = 1 } end, "did you mean 'learning_rate'?")
  T.raises(function() TrainingArguments { zzzzz = 1 } end, "unknown option 'zzzzz' to 'TrainingArguments'")
end)

T.test("reading an unknown field is an error with a suggestion", function()
  local a = TrainingArguments {}
  T.raises(function() return a.learnig_rate end, "did you mean 'learning_rate'?")
end)

T.test("a known but unsupported name says not supported yet", function()
  T.raises(function() TrainingArguments { deepspeed = "ds.json" } end, "not supported yet: TrainingArguments.deepspeed")
  T.raises(function() TrainingArguments { optim = "adafactor" } end, "not supported yet: optim 'adafactor'")
  T.raises(function() TrainingArguments { lr_scheduler_type = "polynomial" } end, "not supported yet: lr_scheduler_type 'polynomial'")
  T.raises(function() TrainingArguments { report_to = "wandb" } end, "not supported yet: report_to 'wandb'")
  T.raises(function() TrainingArguments { evaluation_strategy = "epoch" } end, "renamed 'eval_strategy'")
end)

T.test("wrong types are named with the option", function()
  T.raises(function() TrainingArguments { learning_rate = "1e-3" } end,
    "option 'learning_rate' to 'TrainingArguments' must be a number (got string)")
  T.raises(function() TrainingArguments { per_device_train_batch_size = 2.5 } end,
    "option 'per_device_train_batch_size' to 'TrainingArguments' must be an integer")
  T.raises(function() TrainingArguments "x" end, "options to 'TrainingArguments' must be a table")
end)

T.test("batch size 0 is refused", function()
  T.raises(function() TrainingArguments { per_device_train_batch_size = 0 } end,
    "per_device_train_batch_size must be a positive integer, got 0")
  T.raises(function() TrainingArguments { per_device_eval_batch_size = 0 } end,
    "per_device_eval_batch_size must be a positive integer, got 0")
  T.raises(function() TrainingArguments { gradient_accumulation_steps = 0 } end,
    "gradient_accumulation_steps must be a positive integer")
end)

T.test("invalid scheduler and optimizer names list the valid ones", function()
  T.raises(function() TrainingArguments { lr_scheduler_type = "cosin" } end,
    "'cosin' is not a valid SchedulerType, please select one of 'linear', 'cosine'")
  T.raises(function() TrainingArguments { lr_scheduler_type = "cosin" } end, "did you mean 'cosine'?")
  T.raises(function() TrainingArguments { optim = "adamw" } end, "'adamw' is not a valid OptimizerNames")
  T.raises(function() TrainingArguments { lr_scheduler_type = "cosine_with_min_lr" } end, "min_lr")
  T.eq(TrainingArguments({ lr_scheduler_type = "cosine_with_min_lr", lr_scheduler_kwargs = { min_lr = 1e-5 } }).lr_scheduler_type,
    "cosine_with_min_lr")
end)

T.test("load_best_model_at_end needs matching strategies", function()
  local err = T.raises(function()
    TrainingArguments { load_best_model_at_end = true, eval_strategy = "epoch", save_strategy = "steps" }
  end, "--load_best_model_at_end requires the save and eval strategy to match, but found")
  T.contains(err, "- Evaluation strategy: epoch")
  T.contains(err, "- Save strategy: steps")
  T.raises(function()
    TrainingArguments { load_best_model_at_end = true, eval_strategy = "steps", save_strategy = "steps", eval_steps = 3, save_steps = 5 }
  end, "requires the saving steps to be a round multiple of the evaluation steps, but found 5, which is not a round multiple of 3")
  local a = TrainingArguments { load_best_model_at_end = true, eval_strategy = "steps", save_strategy = "steps", eval_steps = 2, save_steps = 4 }
  T.eq(a.metric_for_best_model, "loss")
  T.eq(a.greater_is_better, false)
  local b = TrainingArguments { load_best_model_at_end = true, eval_strategy = "epoch", save_strategy = "epoch", metric_for_best_model = "accuracy" }
  T.eq(b.greater_is_better, true)
end)

T.test("eval_steps defaults to logging_steps; bf16 with fp16 is refused", function()
  T.eq(TrainingArguments({ eval_strategy = "steps", logging_steps = 7 }).eval_steps, 7)
  T.raises(function() TrainingArguments { bf16 = true, fp16 = true } end, "At most one of fp16 and bf16 can be True")
  T.raises(function() TrainingArguments { eval_strategy = "sometimes" } end, "eval_strategy 'sometimes' is not valid")
  T.raises(function() TrainingArguments { warmup_ratio = 2 } end, "warmup_ratio must lie in range [0,1]")
end)

T.test("warmup and ratio step counts follow HF", function()
  T.eq(TrainingArguments({ warmup_steps = 3 }):get_warmup_steps(100), 3)
  T.eq(TrainingArguments({ warmup_ratio = 0.1 }):get_warmup_steps(25), 3)
  T.eq(TrainingArguments({ warmup_steps = 0.1 }):get_warmup_steps(25), 3)
  T.eq(TrainingArguments({ logging_steps = 0.25 }):steps_of("logging_steps", 10), 3)
end)

T.run()
