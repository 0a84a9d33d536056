-- The HF arguments the seeds pass: TrainingArguments' ddp_find_unused_parameters,
-- from_pretrained's trust_remote_code (a repo that needs remote code is refused naming its
-- auto_map), pipeline's device index, num_parameters{only_trainable=}, torch.cuda's memory
-- counters, and tokenizer files in every save, also for a tokenizer loaded from a Hub id.
package.path = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/nn/?.lua;" .. package.path
local T = require "testlib"
local N = require "nn_testing"
local transformers = require "transformers"
local torch = require "torch"
local HubServer = require "hub_server"
local H = require "hub_testing"

local shared = os.getenv("SKYRUN_SHARED_DATA")

T.test("TrainingArguments accepts ddp_find_unused_parameters, dataloader_num_workers and remove_unused_columns", function()
  local args = transformers.TrainingArguments { output_dir = T.tmpdir(), ddp_find_unused_parameters = false,
    dataloader_num_workers = 2, remove_unused_columns = false }
  T.eq({ args.ddp_find_unused_parameters, args.dataloader_num_workers, args.remove_unused_columns }, { false, 2, false })
  T.eq(transformers.TrainingArguments {}.ddp_find_unused_parameters, nil, "None by default, as HF")
  T.raises(function() transformers.TrainingArguments { ddp_find_unused_parameters = "no" } end,
    "option 'ddp_find_unused_parameters' to 'TrainingArguments' must be a boolean")
end)

T.test("trust_remote_code = true loads native architectures; a repo that needs remote code names its auto_map", function()
  local model = transformers.AutoModelForCausalLM.from_pretrained(N.root .. "gpt2", { trust_remote_code = true })
  T.ok(model:num_parameters() > 0)
  local dir = T.tmpdir()
  T.write_file(dir .. "/config.json", [[{"model_type": "phi_custom", "architectures": ["PhiCustomForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_phi.PhiConfig", "AutoModelForCausalLM": "modeling_phi.PhiForCausalLM"}}]])
  for _, trust in ipairs { true, false } do
    local err = T.raises(function()
      transformers.AutoModelForCausalLM.from_pretrained(dir, { trust_remote_code = trust })
    end, "needs remote code (config.json auto_map: AutoConfig = configuration_phi.PhiConfig; " ..
      "AutoModelForCausalLM = modeling_phi.PhiForCausalLM; model_type 'phi_custom')")
    T.contains(err, "AutoModelForCausalLM.from_pretrained")
  end
end)

T.test("num_parameters{only_trainable = true} counts what requires grad", function()
  local model = transformers.AutoModelForSequenceClassification.from_pretrained(N.root .. "distilbert-cls")
  local total = model:num_parameters()
  T.eq(model:num_parameters { only_trainable = true }, total)
  local frozen = 0
  for _, np in ipairs(model:named_parameters()) do
    if not np[1]:find("classifier", 1, true) then
      np[2]:requires_grad_(false)
      frozen = frozen + np[2]:numel()
    end
  end
  T.ok(frozen > 0 and frozen < total)
  T.eq(model:num_parameters { only_trainable = true }, total - frozen)
  T.eq(model:num_parameters { only_trainable = false }, total)
  T.raises(function() model:num_parameters { only_trainble = true } end, "did you mean 'only_trainable'")
end)

T.test("torch.cuda memory counters answer 0 without CUDA and check their device", function()
  if torch.cuda.is_available() then return end  -- tools/device/runtime-gpu.sh checks them on a GPU
  for _, f in ipairs { "memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved" } do
    T.eq(torch.cuda[f](), 0, f)
    T.eq(torch.cuda[f](0), 0, f)
    T.eq(torch.cuda[f]("cuda:0"), 0, f)
  end
  torch.cuda.reset_peak_memory_stats()
  torch.cuda.synchronize()
  T.raises(function() torch.cuda.max_memory_allocated("gpu0") end, 'device index or "cuda:N" expected, got gpu0')
end)

T.test("pipeline(..., {device = -1}) runs on the CPU; device = 0 asks for cuda:0", function()
  local tok = setmetatable({}, { __call = function(_, text)
    local ids = {}
    for i = 1, #text do ids[i] = text:byte(i) % 200 + 5 end
    return { input_ids = ids }
  end })
  local model = transformers.AutoModelForSequenceClassification.from_pretrained(N.root .. "distilbert-cls")
  local clf = transformers.pipeline("sentiment-analysis", { model = model, tokenizer = tok, device = -1 })
  T.eq(#clf("fine"), 1)
  if not torch.cuda.is_available() then
    T.raises(function() transformers.pipeline("sentiment-analysis", { model = model, tokenizer = tok, device = 0 }) end,
      "cuda:0")
  end
  T.raises(function() transformers.pipeline("sentiment-analysis", { model = model, tokenizer = tok, device = 0.5 }) end,
    "device must be a whole GPU index")
end)

T.test("save_model and checkpoints hold the tokenizer of a Hub id; the folder reloads offline", function()
  local hub = HubServer.start {}
  hub:commit("org/tok", { ["tokenizer.json"] = T.read_file(shared .. "/tokenizers/bert-base-uncased.json"),
    ["tokenizer_config.json"] = T.read_file(shared .. "/tokenizers/bert-base-uncased.tokenizer_config.json") })
  -- the cache where from_pretrained put it by default ($HF_HUB_CACHE, set for this process)
  local setenv = require("sky.pool.core").setenv
  setenv("HF_HUB_CACHE", T.tmpdir())
  setenv("HF_ENDPOINT", hub.endpoint)
  local tok = transformers.AutoTokenizer.from_pretrained("org/tok", { token = false })
  local rows = {}
  for i = 1, 8 do rows[i] = { input_ids = tok("a movie number " .. i).input_ids, label = i % 2 } end
  local out_dir = T.tmpdir()
  local trainer = transformers.Trainer {
    model = require("tiny_model").tiny_classifier { vocab_size = 30522, hidden_size = 8, num_labels = 2, seed = 1 },
    train_dataset = rows, processing_class = tok,
    args = transformers.TrainingArguments { output_dir = out_dir, per_device_train_batch_size = 4, num_train_epochs = 1,
      save_strategy = "steps", save_steps = 2, disable_tqdm = true, report_to = "none" },
  }
  trainer:train()
  trainer:save_model(out_dir .. "/final")
  hub:stop()
  for _, dir in ipairs { out_dir .. "/final", out_dir .. "/checkpoint-2" } do
    T.eq(H.exists(dir .. "/tokenizer.json"), true, dir)
    T.eq(H.exists(dir .. "/tokenizer_config.json"), true, dir)
  end
  -- a child with no cache and no network reloads the folder and encodes the same ids
  local out, err, rc = H.run_child(string.format([[
    local tok = require("transformers").AutoTokenizer.from_pretrained(%q)
    print(table.concat(tok("a movie number 3").input_ids, " "))
  ]], out_dir .. "/final"), { HF_HUB_OFFLINE = "1", HF_HUB_CACHE = T.tmpdir() })
  T.eq(rc, 0, err)
  T.eq(out, table.concat(tok("a movie number 3").input_ids, " ") .. "\n")
end)

T.run()
