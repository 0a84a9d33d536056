-- jobs/fsdp.lua: skyward's FSDP seed (GPT-2 XL sharded over 3 nodes with the accelerate plugin),
-- in Lua. The task is plain HF Trainer code with no FSDP in it: sky.plugins.accelerate makes the
-- process group and sets accelerate's environment (ACCELERATE_USE_FSDP, FSDP_*), which the
-- Trainer picks up (trainer.is_fsdp_enabled); every rank trains its shard of the model.
--
--   skyrun jobs/fsdp.lua                                   # 3 local CPU ranks, tiny sizes, offline
--   skyrun jobs/fsdp.lua --provider aws.lua --model gpt2-xl --dataset wikitext --max-samples 500 \
--                        --batch-size 1 --max-length 256 --mixed-precision fp16
--
-- Without --model a random-init GPT-2 (2 blocks, dim 64) with a word-level tokenizer is made on
-- every rank (transformers.demo_data); without --dataset the WikiText-2 raw text comes from
-- --text-file (default: the shared copy of wiki.valid.tokens) read with the "text" builder, the
-- seed's wikitext-2-raw-v1 otherwise.
local sky = require "sky"

local USAGE = [[
usage: skyrun jobs/fsdp.lua [--provider FILE] [--nodes N] [--model ID|DIR] [--dataset ID] [--text-file PATH]
                            [--max-samples N] [--epochs N] [--batch-size N] [--max-length N]
                            [--mixed-precision no|fp16|bf16] [--state-dict-type SHARDED_STATE_DICT|FULL_STATE_DICT]
                            [--output-dir DIR]
  FILE: a Lua file returning a provider (default: sky.providers.local_{})
]]
local flags = require("sky.flags").parse(arg, {
  provider = "string", nodes = "number", model = "string", dataset = "string", ["text-file"] = "string",
  ["max-samples"] = "number", epochs = "number", ["batch-size"] = "number", ["max-length"] = "number",
  ["mixed-precision"] = "string", ["state-dict-type"] = "string", ["output-dir"] = "string",
}, { prog = "fsdp.lua", usage = USAGE })

-- the project's third-party data sits beside the checkout (../shared/data), as the build assumes
local here = (debug.getinfo(1, "S").source:match("^@(.*)/jobs/[^/]*$") or ".")
local shared = os.getenv("SKYRUN_SHARED_DATA") or (here .. "/../shared/data")
local opts = {
  text_file = flags["text-file"] or (shared .. "/datasets/wikitext2/wiki.valid.tokens"),
  max_length = math.floor(flags["max-length"] or 32),
  output_dir = flags["output-dir"] or "/tmp/fsdp",  -- the seed's /tmp/fsdp-<node>
}

local train_fsdp = sky.compute(function(model_name, dataset_name, max_samples, num_epochs, batch_size, o)
  local transformers = require "transformers"
  local datasets = require "datasets"
  local torch = require "torch"
  local info = sky.info()

  local env_snapshot = {}
  for _, k in ipairs { "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_FSDP" } do
    env_snapshot[k] = os.getenv(k) or "<unset>"
  end
  local pg_initialized = sky.dist.is_initialized()
  local world_size = pg_initialized and sky.dist.world_size() or -1

  local training_args = transformers.TrainingArguments {
    output_dir = o.output_dir .. "-" .. info.node .. "-" .. (os.getenv("RANK") or "0"),
    num_train_epochs = num_epochs,
    per_device_train_batch_size = batch_size,
    gradient_accumulation_steps = 4,
    gradient_checkpointing = true,
    gradient_checkpointing_kwargs = { use_reentrant = false },
    learning_rate = 2e-5,
    warmup_steps = 10,
    fp16 = torch.cuda.is_available(),
    optim = "adamw_torch",
    logging_steps = 5,
    save_strategy = "no",
    report_to = "none",
    average_tokens_across_devices = false,
  }

  if not model_name then  -- offline: the same random-init GPT-2 on every rank (seeded)
    model_name = training_args.output_dir .. "/base"
    require("transformers.demo_data").make_causal_lm_folder(model_name, { seed = 42 })
  end
  local tokenizer = transformers.AutoTokenizer.from_pretrained(model_name)
  if tokenizer.pad_token == nil then tokenizer.pad_token = tokenizer.eos_token end

  local ds
  if dataset_name then
    ds = datasets.load_dataset(dataset_name, "wikitext-2-raw-v1", { split = "train" })
  else
    ds = datasets.load_dataset("text", { data_files = o.text_file, split = "train" })
  end
  ds = ds:filter(function(x) return #x.text > 50 end)
  ds = ds:select(1, math.min(max_samples, #ds))

  local function tokenize(examples)
    return tokenizer(examples.text, { truncation = true, max_length = o.max_length, padding = "max_length" })
  end
  ds = ds:map(tokenize, { batched = true, remove_columns = ds.column_names })
  ds = ds:map(function(x) return { labels = x.input_ids } end)

  local model = transformers.AutoModelForCausalLM.from_pretrained(model_name, { low_cpu_mem_usage = true })
  local param_count = model:num_parameters()

  local trainer = transformers.Trainer {
    model = model,
    args = training_args,
    train_dataset = ds,
    processing_class = tokenizer,
  }

  local train_loss, train_error
  local ok, res = pcall(function() return trainer:train() end)
  if ok then
    train_loss = math.floor(res.training_loss * 1e4 + 0.5) / 1e4
  else
    train_error = tostring(res)
  end

  local peak_gb = torch.cuda.is_available() and torch.cuda.max_memory_allocated() / 1e9 or 0
  return {
    node = info.node,
    rank = info.rank,
    env_vars = env_snapshot,
    pg_initialized = pg_initialized,
    world_size = world_size,
    fsdp_enabled = trainer.is_fsdp_enabled,
    model_params_b = math.floor(param_count / 1e8 + 0.5) / 10,
    model_params = param_count,
    peak_gpu_gb = math.floor(peak_gb * 100 + 0.5) / 100,
    final_loss = train_loss,
    error = train_error,
  }
end, { timeout = 1800 })

local provider = flags.provider and dofile(flags.provider) or sky.providers.local_ {}
local pool = sky.ComputePool {
  provider = provider,
  nodes = math.floor(flags.nodes or 3),
  plugins = {
    sky.plugins.accelerate { config = {
      -- the seed's fp16 needs CUDA; locally the ranks are CPU processes
      mixed_precision = flags["mixed-precision"] or (flags.provider and "fp16" or "no"),
      fsdp = {
        sharding_strategy = "FULL_SHARD",
        auto_wrap_policy = "TRANSFORMER_BASED_WRAP",
        transformer_layer_cls_to_wrap = "GPT2Block",
        backward_prefetch = "BACKWARD_PRE",
        state_dict_type = flags["state-dict-type"] or "SHARDED_STATE_DICT",
        sync_module_states = true,
        use_orig_params = true,
        cpu_ram_efficient_loading = true,
      },
    } },
  },
}

pool:with(function()
  print(string.rep("=", 60))
  print("FSDP fine-tuning " .. (flags.model or "a tiny random GPT-2"))
  print(string.rep("=", 60))
  local results = pool:broadcast(train_fsdp(flags.model, flags.dataset, math.floor(flags["max-samples"] or 96),
    flags.epochs or 1, math.floor(flags["batch-size"] or 2), opts))
  print("\n" .. string.rep("=", 60))
  print("Results")
  print(string.rep("=", 60))
  local tcore = require "transformers.train_core"
  local failed = false
  for _, r in ipairs(results) do
    print(tcore.json_encode(r, 2))
    if r.error then failed = true end
  end
  if failed then error("a rank failed to train (see its error above)", 0) end
end)
