-- jobs/distributed_finetune.lua: the huggingface plugin seed's multi-node pool, in Lua. Skyward's
-- `distributed_finetune("gpt2") @ pool` with sky.plugins.torch and sky.plugins.huggingface: every
-- rank runs the same Trainer code; the torch plugin's process group makes it DDP (the Trainer
-- shards the batches and averages the gradients), the huggingface plugin gives every worker the
-- token. The provider comes from a file, so the same job runs on any of them unchanged:
--
--   skyrun jobs/distributed_finetune.lua                          # 2 local worker processes
--   skyrun jobs/distributed_finetune.lua --provider slurm.lua --nodes 4 --backend nccl
--
-- where slurm.lua is `return require("sky").providers.slurm { partition = "gpu", gpus_per_node = 8 }`.
-- Without --model/--dataset nothing is downloaded: a random-init GPT-2 (2 layers, dim 64), a
-- word-level tokenizer and synthetic sentences (transformers.demo_data), the same on every rank.
-- The HF token (HF_TOKEN) is needed only for gated models; without one the plugin is left out.
local sky = require "sky"

local USAGE = [[
usage: skyrun jobs/distributed_finetune.lua [--provider FILE] [--nodes N] [--backend gloo|nccl]
                                            [--model ID|DIR] [--dataset ID] [--max-samples N]
                                            [--epochs N] [--output-dir DIR]
  FILE: a Lua file returning a provider (default: sky.providers.local_{})
]]
local flags = require("sky.flags").parse(arg, {
  provider = "string", nodes = "number", backend = "string", model = "string", dataset = "string",
  ["max-samples"] = "number", epochs = "number", ["output-dir"] = "string",
}, { prog = "distributed_finetune.lua", usage = USAGE })

local provider = flags.provider and dofile(flags.provider) or sky.providers.local_ {}
local opts = {
  model = flags.model, dataset = flags.dataset, max_samples = math.floor(flags["max-samples"] or 256),
  epochs = flags.epochs or 1, output_dir = flags["output-dir"] or "/tmp/skyrun-distributed-finetune",
}

local distributed_finetune = sky.compute(function(o)
  local transformers = require "transformers"
  local datasets = require "datasets"
  local info = sky.info()
  local rank = sky.dist.rank()
  local out_dir = o.output_dir .. "/rank" .. rank  -- ranks may share a filesystem
  local base = o.model
  if not base then
    base = out_dir .. "/base"
    require("transformers.demo_data").make_causal_lm_folder(base, { seed = 42 })  -- the same weights on every rank
  end
  local tok = transformers.AutoTokenizer.from_pretrained(base)
  if tok.pad_token == nil then tok.pad_token = tok.eos_token end
  local model = transformers.AutoModelForCausalLM.from_pretrained(base)

  local train, held
  if o.dataset then
    local ds = datasets.load_dataset(o.dataset)
    train = ds.train:select(1, math.min(o.max_samples, #ds.train))
    held = (ds.validation or ds.test or ds.train):select(1, 32)
  else
    local demo = require "transformers.demo_data"
    train = datasets.Dataset.from_list(demo.lm_rows(o.max_samples, 3))
    held = datasets.Dataset.from_list(demo.lm_rows(32, 4))
  end
  local function tokenize(b) return tok(b.text, { truncation = true, max_length = 64 }) end
  train = train:map(tokenize, { batched = true, remove_columns = { "text" } })
  held = held:map(tokenize, { batched = true, remove_columns = { "text" } })

  local trainer = transformers.Trainer {
    model = model,
    args = transformers.TrainingArguments {
      output_dir = out_dir, num_train_epochs = o.epochs, per_device_train_batch_size = 4,
      gradient_accumulation_steps = 4, learning_rate = 2e-3,
      save_strategy = "no", report_to = "none", seed = 42,
    },
    train_dataset = train, eval_dataset = held, processing_class = tok,
    data_collator = transformers.DataCollatorForLanguageModeling(tok, { mlm = false }),
  }
  local result = trainer:train()
  local metrics = trainer:evaluate()
  return {
    rank = rank, world_size = sky.dist.world_size(), node = info.node, local_rank = info.local_rank,
    gpus = os.getenv("CUDA_VISIBLE_DEVICES") or "", token = os.getenv("HF_TOKEN") ~= nil,
    steps = result.global_step, train_loss = result.training_loss, eval_loss = metrics.eval_loss,
  }
end, { timeout = 1800 })

local plugins = { sky.plugins.torch { backend = flags.backend or "gloo" } }
if os.getenv("HF_TOKEN") then plugins[#plugins + 1] = sky.plugins.huggingface {} end

local pool = sky.ComputePool { provider = provider, nodes = math.floor(flags.nodes or 2), accelerator = "A100",
                               plugins = plugins }
pool:with(function()
  local results = pool:broadcast(distributed_finetune(opts))
  for _, r in ipairs(results) do
    print(string.format("rank %d/%d node %d local_rank %d gpus=%s token=%s steps=%d train_loss=%.6f eval_loss=%.6f",
      r.rank, r.world_size, r.node, r.local_rank, r.gpus == "" and "-" or r.gpus, r.token and "yes" or "no", r.steps,
      r.train_loss, r.eval_loss))
  end
end)
print("done")
