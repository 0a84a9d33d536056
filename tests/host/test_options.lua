-- Option tables: unknown keys get a suggestion, wrong types name the key, at the caller's line.
local T = require "testlib"
local sky = require "sky"

local SCHEMA = { num_train_epochs = "number", output_dir = "string", learning_rate = "number",
  per_device_train_batch_size = "integer", bf16 = "boolean", callbacks = "table" }

local function TrainingArguments(opts)
  local checked = sky.check_options(opts, SCHEMA, "TrainingArguments")  -- not a tail call: keeps the frame
  return checked
end

T.test("an unknown option gets the closest known name as a suggestion", function()
  local err = T.raises(function() TrainingArguments { num_epochs = 3 } end,
    "unknown option 'num_epochs' to 'TrainingArguments' (did you mean 'num_train_epochs'?)")
  T.contains(err, "test_options.lua:")  -- blamed on the caller's line, not inside the module
end)

T.test("an unknown option far from every name gets no suggestion", function()
  local err = T.raises(function() TrainingArguments { zzz = 1 } end, "unknown option 'zzz' to 'TrainingArguments'")
  T.not_contains(err, "did you mean")
end)

T.test("a wrong type names the key and both types", function()
  T.raises(function() TrainingArguments { learning_rate = "fast" } end,
    "option 'learning_rate' to 'TrainingArguments' must be a number (got string)")
  T.raises(function() TrainingArguments { per_device_train_batch_size = 2.5 } end,
    "option 'per_device_train_batch_size' to 'TrainingArguments' must be an integer (got number)")
end)

T.test("nil options are an empty table and valid ones pass through", function()
  T.eq(TrainingArguments(nil), {})
  local o = { output_dir = "/tmp/x", bf16 = true }
  T.eq(TrainingArguments(o), o)
end)

T.test("option names must be strings", function()
  T.raises(function() TrainingArguments { 1, 2 } end, "option names to 'TrainingArguments' must be strings")
end)

T.test("a schema type may join several with '|'; TrainingArguments is checked by the same checker", function()
  local schema = { resume = "boolean|string", n = "integer|table" }
  T.eq(sky.check_options({ resume = "ckpt", n = 3 }, schema, "f"), { resume = "ckpt", n = 3 })
  T.raises(function() sky.check_options({ resume = 1 }, schema, "f") end,
    "option 'resume' to 'f' must be a boolean or a string (got number)")
  T.raises(function() sky.check_options({ resume = true }, { resume = "bool" }, "f") end,
    "check_options: schema entry 'resume' has unknown type 'bool'")
  local transformers = require "transformers"
  T.raises(function() transformers.TrainingArguments { resume_from_checkpoint = 3 } end,
    "option 'resume_from_checkpoint' to 'TrainingArguments' must be a boolean or a string (got number)")
  local err = T.raises(function() transformers.TrainingArguments { num_epochs = 3 } end,
    "unknown option 'num_epochs' to 'TrainingArguments' (did you mean 'num_train_epochs'?)")
  T.contains(err, "test_options.lua:")  -- the caller's line
end)

T.test("one monotonic clock and one isatty in sky.core", function()
  local core = require "sky.core"
  local a = core.monotonic()
  local b = core.monotonic()
  T.ok(type(a) == "number" and b >= a)
  T.eq(type(core.isatty(2)), "boolean")
end)

T.run()
