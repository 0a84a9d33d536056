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

T.run()
