-- FSDP through the Trainer on CPU with Gloo (issue 15): ranks on loopback (tests/lib/dist_ranks),
-- a random-init GPT-2 (2 blocks) read from one folder by every rank, the same global batch.
--   * 2 and 3 FSDP ranks give the per-step losses of one process (1e-5, fp32);
--   * FULL_STATE_DICT: the checkpoint is an HF folder our from_pretrained loads, with the weights
--     the one-process run ends with;
--   * SHARDED_STATE_DICT: per-rank files with an index; a resume at the same world size repeats
--     the uninterrupted run's losses; another world size is refused naming both sizes;
--   * the seed's config dict with a bad key names it; what we lack says `not supported yet`.
local T = require "testlib"
local R = require "dist_ranks"
local tcore = require "transformers.train_core"

local BASE = T.tmpdir() .. "/base"
require("transformers.demo_data").make_causal_lm_folder(BASE, { seed = 7 })

-- BODY's placeholders: OUT, FSDP (a Lua expression for TrainingArguments.fsdp), CONFIG (fsdp_config),
-- STEPS, SAVE, RESUME
local BODY = [[
local transformers = require "transformers"
local tcore = require "transformers.train_core"
local world = tonumber(os.getenv("WORLD_SIZE") or "1")
local model = transformers.AutoModelForCausalLM.from_pretrained(BASE)
local V = model.config.vocab_size
if PEFT then  -- LoRA on the attention and MLP projections: the frozen base is sharded beside the adapters
  local peft = require "peft"
  transformers.set_seed(1)
  model = peft.get_peft_model(model, peft.LoraConfig { r = 4, lora_alpha = 8, lora_dropout = 0.0,
    target_modules = { "c_attn", "c_fc" } })
end
local rows, state = {}, 11
for i = 1, 48 do
  local ids = {}
  for j = 1, 12 do state = (state * 1103515245 + 12345) % 2147483648; ids[j] = 4 + state % (V - 4) end
  rows[i] = { input_ids = ids, labels = ids }
end
local t = transformers.Trainer { model = model, train_dataset = rows, processing_class = { pad_token_id = 0 },
  args = transformers.TrainingArguments { output_dir = OUT, per_device_train_batch_size = 6 / world,
    gradient_accumulation_steps = 2, learning_rate = 2e-2, max_steps = STEPS, logging_steps = 1, train_shuffle = false,
    save_steps = SAVE, disable_tqdm = true, fsdp = FSDP, fsdp_config = CONFIG } }
local out = t:train { resume_from_checkpoint = RESUME }
local losses = {}
for _, e in ipairs(t.state.log_history) do if e.loss then losses[#losses + 1] = e.loss end end
local info = t.engine:info()
print("RESULT " .. tcore.json_encode({ losses = losses, steps = out.global_step, fsdp = t.is_fsdp_enabled,
  sharded = info.fsdp, total = info.num_parameters, mine = info.local_trainable_parameters or info.trainable_parameters }))
]]

local function body(o)
  local b = BODY
  for k, v in pairs { BASE = string.format("%q", BASE), OUT = string.format("%q", o.out), FSDP = o.fsdp or '""',
    CONFIG = o.config or "nil", STEPS = tostring(o.steps or 4), SAVE = tostring(o.save or 4),
    RESUME = o.resume and string.format("%q", o.resume) or "nil", PEFT = o.peft and "true" or "false" } do
    b = b:gsub("%f[%w_]" .. k .. "%f[^%w_]", function() return v end)
  end
  return b
end

local function result(res, r)
  T.eq(res.code, 0, "rank " .. r .. ": " .. (res.err or "") .. (res.out or ""))
  return tcore.json_decode(res.out:match("RESULT (%b{})"))
end

local function single(o)
  local f = T.tmpdir() .. "/single.lua"
  T.write_file(f, body(o))
  local out, err, code = T.sh(T.shell_quote(T.skyrun_bin) .. " " .. T.shell_quote(f))
  T.eq(code, 0, err)
  return tcore.json_decode(out:match("RESULT (%b{})"))
end

local function ranks(world, o)
  local res = R.run(world, body(o), { timeout = 60 })
  local out = {}
  for r = 1, world do out[r] = result(res[r], r - 1) end
  return out
end

local FULL = '"full_shard auto_wrap"'
local WRAP = '{ transformer_layer_cls_to_wrap = "GPT2Block" }'
local ref_dir = T.tmpdir()
local ref

local function same_losses(got, want, what)
  T.eq(#got, #want, what .. ": logged steps")
  for i = 1, #want do T.near(got[i], want[i], 1e-5 * math.abs(want[i]), what .. ": loss of step " .. i) end
end

local function load_params(dir)
  local m = require("transformers").AutoModelForCausalLM.from_pretrained(dir)
  local out = {}
  for _, np in ipairs(m:named_parameters()) do out[np[1]] = np[2] end
  return out
end

T.test("2 and 3 FSDP ranks follow one process with the same global batch", function()
  ref = single { out = ref_dir }
  T.eq(ref.steps, 4)
  T.eq(ref.fsdp, false)
  for _, world in ipairs { 2, 3 } do
    local dir = T.tmpdir()
    local rs = ranks(world, { out = dir, fsdp = FULL, config = WRAP })
    for r = 1, world do
      T.eq(rs[r].fsdp, true, "trainer.is_fsdp_enabled")
      T.eq(rs[r].sharded, true, "the engine shards the model")
      same_losses(rs[r].losses, ref.losses, world .. " ranks, rank " .. (r - 1))
    end
    local sum = 0
    for r = 1, world do sum = sum + rs[r].mine end
    T.eq(sum, rs[1].total, "the ranks' shards add up to the model")
    T.ok(rs[1].mine < 1.2 * rs[1].total / world, string.format("rank 0 holds about 1/%d of the %d parameters (%d)", world, rs[1].total, rs[1].mine))
    if world == 2 then
      -- FULL_STATE_DICT (the default): rank 0 wrote an HF folder with the weights of the one-process run
      T.ok(T.file_exists(dir .. "/checkpoint-4/model.safetensors"), "FULL checkpoint: model.safetensors")
      T.ok(not T.file_exists(dir .. "/checkpoint-4/pytorch_model_fsdp_0"), "no shards in a FULL checkpoint")
      local got, want = load_params(dir .. "/checkpoint-4"), load_params(ref_dir .. "/checkpoint-4")
      local n = 0
      for name, w in pairs(want) do
        T.ok(got[name] ~= nil, "saved " .. name)
        local d = (got[name] - w):abs():max():item()
        -- Adam's steps are lr-sized whatever the gradient: 1e-7 differences in a near-zero
        -- gradient move a weight by up to ~1e-5 per step; a wrong gather would be off by ~lr
        T.ok(d < 2e-4, string.format("%s differs by %g", name, d))
        n = n + 1
      end
      T.ok(n > 10, "compared every tensor")
    end
  end
end)

T.test("a SHARDED_STATE_DICT checkpoint has per-rank files with an index and resumes exactly", function()
  local dir = T.tmpdir()
  local config = '{ transformer_layer_cls_to_wrap = "GPT2Block", state_dict_type = "SHARDED_STATE_DICT" }'
  local full = ranks(2, { out = dir, fsdp = FULL, config = config, save = 2 })
  same_losses(full[1].losses, ref.losses, "sharded run")
  local ck = dir .. "/checkpoint-2"
  for _, f in ipairs { "pytorch_model_fsdp_0/index.json", "pytorch_model_fsdp_0/rank-00000-of-00002.safetensors",
    "pytorch_model_fsdp_0/rank-00001-of-00002.safetensors", "optimizer_0/rank-00000-of-00002.pt",
    "optimizer_0/rank-00001-of-00002.pt", "rng_state_0.pth", "rng_state_1.pth", "scheduler.pt", "trainer_state.json" } do
    T.ok(T.file_exists(ck .. "/" .. f), "checkpoint-2/" .. f)
  end
  local index = tcore.json_decode(T.read_file(ck .. "/pytorch_model_fsdp_0/index.json"))
  T.eq(index.world_size, 2)
  T.eq(index.parameters["transformer.h.0.attn.c_attn.weight"].rows_per_rank, 32)
  -- resume from step 2 into a fresh output folder: steps 3 and 4 as the uninterrupted run
  local again = T.tmpdir()
  T.sh_ok("cp -r " .. T.shell_quote(ck) .. " " .. T.shell_quote(again .. "/checkpoint-2"))
  local resumed = ranks(2, { out = again, fsdp = FULL, config = config, save = 2, resume = again .. "/checkpoint-2" })
  T.eq(resumed[1].steps, 4)
  local tail = { full[1].losses[3], full[1].losses[4] }
  local got = { resumed[1].losses[#resumed[1].losses - 1], resumed[1].losses[#resumed[1].losses] }
  for i = 1, 2 do T.near(got[i], tail[i], 1e-6 * math.abs(tail[i]), "resumed loss of step " .. (i + 2)) end
  -- another world size: refused, naming both
  local res = R.run(3, body { out = T.tmpdir(), fsdp = FULL, config = config, resume = ck }, { timeout = 60 })
  T.ok(res[1].code ~= 0, "3 ranks cannot resume 2 ranks' shards")
  T.contains(res[1].err, "saved sharded over 2 ranks")
end)

T.test("LoRA under FSDP: the frozen base is sharded, 2 ranks follow one process, the adapter saves", function()
  local one = single { out = T.tmpdir(), peft = true }
  local dir = T.tmpdir()
  local rs = ranks(2, { out = dir, fsdp = FULL, config = WRAP, peft = true })
  for r = 1, 2 do same_losses(rs[r].losses, one.losses, "LoRA rank " .. (r - 1)) end
  T.ok(rs[1].mine < rs[1].total / 10, "only the adapters' shards train")
  T.ok(T.file_exists(dir .. "/checkpoint-4/adapter_model.safetensors"), "the adapter folder of a FULL checkpoint")
end)

T.test("the seed's config dict: bad keys are named, what we lack says not supported yet", function()
  local sky = require "sky"
  local seed = { mixed_precision = "fp16", fsdp = { sharding_strategy = "FULL_SHARD",
    auto_wrap_policy = "TRANSFORMER_BASED_WRAP", transformer_layer_cls_to_wrap = "GPT2Block",
    backward_prefetch = "BACKWARD_PRE", state_dict_type = "SHARDED_STATE_DICT", sync_module_states = true,
    use_orig_params = true, cpu_ram_efficient_loading = true } }
  local p = sky.plugins.accelerate { config = seed }
  T.eq(p.name, "accelerate")
  local env = require("transformers.fsdp").accelerate_env(seed)
  T.eq(env.ACCELERATE_USE_FSDP, "true")
  T.eq(env.FSDP_TRANSFORMER_CLS_TO_WRAP, "GPT2Block")
  T.eq(env.FSDP_STATE_DICT_TYPE, "SHARDED_STATE_DICT")
  T.eq(env.ACCELERATE_MIXED_PRECISION, "fp16")
  seed.fsdp.sharding_stratgy = seed.fsdp.sharding_strategy
  T.raises(function() sky.plugins.accelerate { config = seed } end,
    "unknown key 'sharding_stratgy' in config.fsdp (did you mean 'sharding_strategy'?)")
  seed.fsdp.sharding_stratgy = nil
  T.raises(function() sky.plugins.accelerate { config = { mixed_precison = "bf16" } } end,
    "unknown config key 'mixed_precison' (did you mean 'mixed_precision'?)")
  T.raises(function() sky.plugins.accelerate { config = { fsdp = { backward_prefetch = "BACKWARD_PER" } } } end,
    "did you mean 'BACKWARD_PRE'?")
  T.raises(function() sky.plugins.accelerate { config = { fsdp = { sharding_strategy = "HYBRID_SHARD" } } } end,
    "not supported yet: sharding_strategy HYBRID_SHARD")
  T.raises(function() sky.plugins.accelerate { config = { fsdp = { offload_params = true } } } end,
    "not supported yet: FSDP offload_params")
  T.raises(function() sky.plugins.accelerate { config = { deepspeed_config = {} } } end,
    "not supported yet: accelerate config key 'deepspeed_config'")
  local transformers = require "transformers"
  local a = transformers.TrainingArguments { output_dir = T.tmpdir(), fsdp = "full_shard auto_wrap",
    fsdp_config = { fsdp_transformer_layer_cls_to_wrap = { "GPT2Block" }, backward_prefetch = "backward_post" } }
  T.eq(a.fsdp_plugin.sharding_strategy, "FULL_SHARD")
  T.eq(a.fsdp_plugin.auto_wrap_policy, "TRANSFORMER_BASED_WRAP")
  T.eq(a.fsdp_plugin.backward_prefetch, "BACKWARD_POST")
  T.eq(a.fsdp_plugin.transformer_layer_cls_to_wrap, { "GPT2Block" })
  T.eq(transformers.TrainingArguments { output_dir = T.tmpdir() }.fsdp_plugin, nil)
  T.raises(function() transformers.TrainingArguments { fsdp = "full_shard", fsdp_config = { transformer_layer_cls = "GPT2Block" } } end,
    "unknown key 'transformer_layer_cls' in fsdp_config (did you mean 'transformer_layer_cls_to_wrap'?)")
  T.raises(function() transformers.TrainingArguments { fsdp = "full_shard offload" } end, "not supported yet: fsdp \"offload\"")
  T.raises(function() transformers.TrainingArguments { fsdp = "ful_shard" } end, "did you mean 'full_shard'?")
  T.raises(function() transformers.TrainingArguments { fsdp = "full_shard", fsdp_config = { xla = true } } end,
    "not supported yet: fsdp_config.xla")
end)

T.run()
