-- The Trainer's files under faults (issue 12): a disk filling up while a checkpoint is written
-- (a clean error, no half-written folder, the previous checkpoint intact), trainer_log.jsonl on a
-- full disk, and corrupted trainer_state.json refused on resume naming the file and the field.
local T = require "testlib"
local transformers = require "transformers"
local tiny_model = require "tiny_model"
local tcore = require "transformers.train_core"
local fs = require "sky.fs"

local function rows_of(n)
  local rows = {}
  for i = 1, n do rows[i] = { input_ids = { 1 + i % 60, 2 + i % 50, 3 }, label = i % 2 } end
  return rows
end

local tok = { pad_token_id = 0 }
local function tiny() return tiny_model.tiny_classifier { vocab_size = 64, hidden_size = 16, num_labels = 2, seed = 1 } end

local function free_bytes(dir)
  local avail, bsize = T.sh("stat -f -c '%a %S' " .. T.shell_quote(dir)):match("(%d+) (%d+)")
  return tonumber(avail) * tonumber(bsize)
end

T.test("a disk filling up while optimizer.pt is written is a clean error; the previous checkpoint stays", function()
  T.with_tmpfs("4m", function(mnt)
    local out_dir = mnt .. "/out"
    local filled = false
    -- after checkpoint-2, leave room for the next model.safetensors but not for optimizer.pt
    local cb = transformers.TrainerCallback { on_save = function(_, _, state)
      if state.global_step ~= 2 then return end
      local model_size = fs.stat(out_dir .. "/checkpoint-2/model.safetensors").size
      local opt_size = fs.stat(out_dir .. "/checkpoint-2/optimizer.pt").size
      T.ok(opt_size > model_size + 8192, "optimizer.pt is the larger file")
      local keep = math.ceil(model_size / 4096) * 4096 + 8192
      T.exec(string.format("fallocate -l %d %s", free_bytes(mnt) - keep, T.shell_quote(mnt .. "/filler")))
      filled = true
    end }
    local function bigger() return tiny_model.tiny_classifier { vocab_size = 512, hidden_size = 64, num_labels = 2, seed = 1 } end
    local trainer = transformers.Trainer { model = bigger(), train_dataset = rows_of(32), processing_class = tok,
      callbacks = { cb }, args = transformers.TrainingArguments { output_dir = out_dir, per_device_train_batch_size = 4,
        max_steps = 6, save_steps = 2, learning_rate = 0.05, disable_tqdm = true, logging_steps = 100 } }
    local err = T.raises(function() trainer:train() end, "cannot save " .. out_dir .. "/checkpoint-4: ")
    T.ok(filled, "the disk was filled after checkpoint-2")
    T.contains(err, "checkpoint-4: cannot write '" .. out_dir .. "/.checkpoint-4.tmp-")
    T.contains(err, "/optimizer.pt': No space left on device")
    T.eq(fs.listdir(out_dir), { "checkpoint-2" })  -- the temporary folder is gone
    local st = tcore.json_decode(T.read_file(out_dir .. "/checkpoint-2/trainer_state.json"))
    T.eq(st.global_step, 2)
    -- room again: the run resumes from checkpoint-2 and finishes
    os.remove(mnt .. "/filler")
    local again = transformers.Trainer { model = bigger(), train_dataset = rows_of(32), processing_class = tok,
      args = transformers.TrainingArguments { output_dir = out_dir, per_device_train_batch_size = 4, max_steps = 6,
        save_steps = 2, learning_rate = 0.05, disable_tqdm = true, logging_steps = 100 } }
    T.eq(again:train { resume_from_checkpoint = true }.global_step, 6)
  end)
end)

T.test("trainer_log.jsonl on a full disk is an error naming the file, not a log silently cut short", function()
  T.with_tmpfs("64k", function(mnt)
    T.exec("fallocate -l " .. free_bytes(mnt) .. " " .. T.shell_quote(mnt .. "/filler"))
    local trainer = transformers.Trainer { model = tiny(), train_dataset = rows_of(16), processing_class = tok,
      args = transformers.TrainingArguments { output_dir = mnt, per_device_train_batch_size = 4, max_steps = 2,
        logging_steps = 1, save_strategy = "no", report_to = "jsonl", disable_tqdm = true } }
    T.raises(function() trainer:train() end, "cannot write " .. mnt .. "/trainer_log.jsonl: No space left on device")
  end)
end)

-- A checkpoint to corrupt: checkpoint-2 of a 4-step run.
local function checkpoint()
  local out_dir = T.tmpdir()
  local trainer = transformers.Trainer { model = tiny(), train_dataset = rows_of(16), processing_class = tok,
    args = transformers.TrainingArguments { output_dir = out_dir, per_device_train_batch_size = 4, max_steps = 4,
      save_steps = 2, disable_tqdm = true, logging_steps = 100 } }
  trainer:train()
  return out_dir, out_dir .. "/checkpoint-2"
end

local function resume(out_dir, cp)
  local trainer = transformers.Trainer { model = tiny(), train_dataset = rows_of(16), processing_class = tok,
    args = transformers.TrainingArguments { output_dir = out_dir, per_device_train_batch_size = 4, max_steps = 4,
      save_steps = 2, disable_tqdm = true, logging_steps = 100 } }
  return trainer:train { resume_from_checkpoint = cp }
end

T.test("corrupted trainer_state.json is refused on resume naming the file and the field", function()
  local out_dir, cp = checkpoint()
  local file = cp .. "/trainer_state.json"
  local good = T.read_file(file)
  local function with_state(text, needle)
    T.write_file(file, text)
    local err = T.raises(function() resume(out_dir, cp) end, needle)
    T.contains(err, file)
  end
  local function with_field(value, needle)
    with_state((good:gsub('"global_step": 2', '"global_step": ' .. value)), needle)
  end
  with_state("[1,2,3]", "must hold a JSON object of HF's TrainerState (got array)")
  with_field('"x"', "field 'global_step' must be an integer from 0 to 2^53 (got \"x\")")
  with_field("-5", "field 'global_step' must be an integer from 0 to 2^53 (got -5)")
  with_field("1e18", "field 'global_step' must be an integer from 0 to 2^53 (got 1e+18)")
  with_field("6.5", "field 'global_step' must be an integer from 0 to 2^53 (got 6.5)")
  with_field("9", "global_step 9 is past max_steps 4")
end)

T.test("other corrupted trainer_state.json fields are refused; unknown fields are ignored", function()
  local out_dir, cp = checkpoint()
  local file = cp .. "/trainer_state.json"
  local st = tcore.json_decode(T.read_file(file))
  local function with(field, value, needle)
    local copy = tcore.json_decode(T.read_file(file))
    copy[field] = value
    local saved = T.read_file(file)
    T.write_file(file, tcore.json_encode(copy))
    local err = T.raises(function() resume(out_dir, cp) end, needle)
    T.contains(err, file)
    T.write_file(file, saved)
  end
  with("log_history", "nope", "field 'log_history' must be a list of objects (got \"nope\")")
  with("log_history", { 1, 2 }, "field 'log_history[1]' must be an object (got 1)")
  with("epoch", -1, "field 'epoch' must be a number >= 0 (got -1)")
  with("best_model_checkpoint", 5, "field 'best_model_checkpoint' must be a string (got 5)")
  with("max_steps", 2 ^ 60, "field 'max_steps' must be an integer from 0 to 2^53")
  with("global_step", nil, "field 'global_step' must be present (got nothing)")
  st.some_future_field = { 1, 2 }
  T.write_file(file, tcore.json_encode(st))
  T.eq(resume(out_dir, cp).global_step, 4)
end)

T.run()
