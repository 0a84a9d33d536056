-- The huggingface-plugin seed (Skyward's docs/plugins/huggingface.md) ported line by line, with its
-- two pools on sky.providers.aws{}: `skyrun hf_seed.lua single` (one node, accelerator "A100",
-- `finetune(...) >> pool`) and `skyrun hf_seed.lua multi` (4 nodes, the torch plugin,
-- `distributed_finetune(...) @ pool`). The model and data are the offline demo ones
-- (lua/transformers/demo_data.lua) and the run is tiny: the point is the path from offer to result.
-- Where AWS is reached, and with which keys, comes from the environment as for the AWS CLI.
local sky = require "sky"
local which = arg[1] or "single"
local token = os.getenv("HF_TOKEN")

local finetune = sky.compute(function(epochs)
  local transformers = require "transformers"
  local datasets = require "datasets"
  local demo = require "transformers.demo_data"
  local dir = os.tmpname()
  os.remove(dir)
  demo.make_classifier_folder(dir .. "/base", { seed = 42 })
  local tok = transformers.AutoTokenizer.from_pretrained(dir .. "/base")
  local model = transformers.AutoModelForSequenceClassification.from_pretrained(dir .. "/base", { num_labels = 2 })
  local function tokenize(b) return tok(b.text, { truncation = true, max_length = 64 }) end
  local train = datasets.Dataset.from_list(demo.sentiment_rows(48, 1)):map(tokenize, { batched = true })
  local test = datasets.Dataset.from_list(demo.sentiment_rows(16, 2)):map(tokenize, { batched = true })
  local trainer = transformers.Trainer {
    model = model, train_dataset = train, eval_dataset = test, processing_class = tok,
    args = transformers.TrainingArguments { output_dir = dir .. "/out", num_train_epochs = epochs,
      per_device_train_batch_size = 16, learning_rate = 1e-3, save_strategy = "no", report_to = "none", disable_tqdm = true },
  }
  local out = trainer:train()
  local eval = trainer:evaluate()
  local info = sky.info()
  -- which secrets this worker was given to mask (as hashes: the job prints them)
  local hashes = {}
  for _, s in ipairs(require("sky.secret").list()) do hashes[#hashes + 1] = require("sky.cloud.core").sha256_hex(s) end
  return { node = info.node, train_loss = out.training_loss, eval_loss = eval.eval_loss,
           token_seen = os.getenv("HF_TOKEN") ~= nil, accelerator = info.accelerator, secret_hashes = table.concat(hashes, " ") }
end, { timeout = 600 })

local distributed_finetune = sky.compute(function()
  local r = finetune.fn(1)
  -- every rank's eval loss, averaged over the c10d group the torch plugin made
  r.mean_eval_loss = sky.dist.all_reduce(r.eval_loss, "avg")
  r.rank, r.world_size = sky.dist.rank(), sky.dist.world_size()
  return r
end, { timeout = 600 })

if which == "single" then
  local pool = sky.ComputePool {
    provider = sky.providers.aws {},
    nodes = 1,
    accelerator = "A100",
    plugins = { sky.plugins.huggingface { token = token } },
  }
  pool:with(function()
    local r = pool:run(finetune(1))
    print(string.format("single: node %d accelerator %s train_loss %.4f eval_loss %.4f token %s", r.node,
      r.accelerator, r.train_loss, r.eval_loss, tostring(r.token_seen)))
    print("worker secrets (sha256): " .. r.secret_hashes)
  end)
else
  local pool = sky.ComputePool {
    provider = sky.providers.aws {},
    nodes = 4,
    accelerator = "A100",
    plugins = { sky.plugins.torch { backend = "gloo" }, sky.plugins.huggingface { token = token } },
  }
  pool:with(function()
    local results = pool:broadcast(distributed_finetune())
    for _, r in ipairs(results) do
      print(string.format("multi: node %d rank %d/%d eval_loss %.4f mean %.4f token %s", r.node, r.rank, r.world_size,
        r.eval_loss, r.mean_eval_loss, tostring(r.token_seen)))
    end
  end)
end
print("done")
