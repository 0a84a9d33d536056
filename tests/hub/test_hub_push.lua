-- push_to_hub as transformers does it, against the loopback Hub: model:push_to_hub and
-- tok:push_to_hub (saved, uploaded, loaded back from the Hub), TrainingArguments{push_to_hub=true}
-- with each hub_strategy's commits, and Trainer:push_to_hub at the end of training.
local T = require "testlib"
local HubServer = require "hub_server"
local H = require "hub_testing"
local hf = require "huggingface_hub"
local transformers = require "transformers"
local tiny_model = require "tiny_model"
local word_tokenizer = require "word_tokenizer"
local tcore = require "transformers.train_core"

local hub = HubServer.start { lfs_threshold = 4096, lfs_chunk_size = 8000 }
-- the Trainer and push_to_hub find the Hub as HF's do: HF_ENDPOINT
require("sky.pool.core").setenv("HF_ENDPOINT", hub.endpoint)

local function rows_of(n)
  local rows = {}
  for i = 1, n do rows[i] = { input_ids = { 1 + i % 60, 2 + i % 50, 3 }, label = i % 2 } end
  return rows
end

-- The files of a revision of a repository on the stand-in.
local function files_at(repo_id, rev)
  return hf.list_repo_files(repo_id, H.opts(hub, T.tmpdir(), { token = hub.token, revision = rev }))
end


T.test("model:push_to_hub and tok:push_to_hub upload what from_pretrained loads back", function()
  local tokdir = word_tokenizer.write(T.tmpdir() .. "/tok", { model_max_length = 32 })
  local model = tiny_model.tiny_classifier { seed = 4 }
  local info = model:push_to_hub("me/tiny", { token = hub.token })
  T.contains(info.commit_url, hub.endpoint .. "/me/tiny/commit/")
  local tok = transformers.AutoTokenizer.from_pretrained(tokdir)
  tok:push_to_hub("me/tiny", { token = hub.token, commit_message = "add the tokenizer" })
  T.eq(files_at("me/tiny"), { ".gitattributes", "config.json", "model.safetensors", "special_tokens_map.json",
    "tokenizer.json", "tokenizer_config.json" })
  -- what the Hub holds is what save_pretrained writes, byte for byte
  local here = T.tmpdir()
  model:save_pretrained(here)
  tok:save_pretrained(here)
  local cache = T.tmpdir()
  for _, f in ipairs { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json" } do
    local got = hf.hf_hub_download("me/tiny", f, H.opts(hub, cache, { token = hub.token }))
    T.ok(T.read_file(got) == T.read_file(here .. "/" .. f), f .. " byte-identical")
  end
  -- and from_pretrained takes the repo id
  local back = transformers.AutoModelForSequenceClassification.from_pretrained("me/tiny",
    { token = hub.token, cache_dir = cache })
  T.eq(back.config.num_labels, 2)
  T.ok(T.read_file(hub.log_path):find(hub.token, 1, true) == nil)
end)

T.test("TrainingArguments{push_to_hub=true}: every save pushes the model; checkpoint strategy adds last-checkpoint/", function()
  local out_dir = T.tmpdir() .. "/run-every"
  local tok = { pad_token_id = 0 }
  for _, case in ipairs {
    { strategy = "every_save", id = "me/every", extra = nil },
    { strategy = "checkpoint", id = "me/ckpt", extra = "last-checkpoint/trainer_state.json" },
    { strategy = "all_checkpoints", id = "me/allck", extra = "checkpoint-4/trainer_state.json" },
    { strategy = "end", id = "me/end", extra = nil },
  } do
    hub:clear_log()
    local args = transformers.TrainingArguments { output_dir = out_dir .. case.strategy, per_device_train_batch_size = 4,
      max_steps = 4, save_steps = 2, learning_rate = 0.05, disable_tqdm = true, logging_steps = 100,
      push_to_hub = true, hub_model_id = case.id, hub_strategy = case.strategy, hub_token = hub.token }
    T.not_contains(tcore.json_encode(args:to_dict()), hub.token)
    T.not_contains(tostring(args), hub.token)
    local trainer = transformers.Trainer { model = tiny_model.tiny_classifier { seed = 1 }, train_dataset = rows_of(16),
      processing_class = tok, args = args }
    T.eq(trainer.hub_model_id, case.id)
    trainer:train()
    local commits = hub:count("POST", "/api/models/" .. case.id .. "/commit/main")
    if case.strategy == "end" then
      T.eq(commits, 0, "hub_strategy end pushes nothing while training")
    elseif case.strategy == "every_save" then
      T.eq(commits, 2, "one push per save (steps 2 and 4)")
    else
      T.eq(commits, 4, "the model and the checkpoint at each save")
    end
    local info = trainer:push_to_hub()
    T.ok(info.oid ~= nil)
    local files = files_at(case.id)
    local set = {}
    for _, f in ipairs(files) do set[f] = true end
    T.ok(set["model.safetensors"] and set["config.json"] and set["training_args.json"], table.concat(files, " "))
    for f in pairs(set) do T.ok(not f:match("^checkpoint%-") or case.strategy == "all_checkpoints", f) end
    if case.extra then T.ok(set[case.extra], case.extra .. " in " .. table.concat(files, " ")) end
    T.not_contains(T.read_file(out_dir .. case.strategy .. "/training_args.json"), hub.token)
    T.contains(T.read_file(out_dir .. case.strategy .. "/training_args.json"), '"hub_token": "<HUB_TOKEN>"')
  end
end)

T.test("hub_model_id defaults to the output folder's name in the token's account; bad hub_strategy is refused", function()
  local out_dir = T.tmpdir() .. "/my-run"
  local trainer = transformers.Trainer { model = tiny_model.tiny_classifier { seed = 1 }, train_dataset = rows_of(4),
    processing_class = { pad_token_id = 0 }, args = transformers.TrainingArguments { output_dir = out_dir,
      push_to_hub = true, hub_token = hub.token, max_steps = 1, save_strategy = "no", disable_tqdm = true } }
  T.eq(trainer.hub_model_id, "loopback-user/my-run")
  T.raises(function() transformers.TrainingArguments { output_dir = out_dir, hub_strategy = "sometimes" } end,
    "hub_strategy 'sometimes' is not valid, please select from 'end', 'every_save', 'checkpoint', 'all_checkpoints'")
end)

T.run()
