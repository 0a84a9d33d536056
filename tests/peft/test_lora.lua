-- LoRA, the Trainer with a PEFT model, and gradient checkpointing on the CPU, on the tiny fixture
-- models (tests/fixtures/models, tests/fixtures/trainer). The parity with PEFT itself is in
-- test_peft_parity.lua; here: PEFT's config rules, its matching rules and errors, save/load round
-- trips, merge/unload/disable consistency (1e-5), the frozen base under the Trainer, exact resume,
-- and gradients under checkpointing equal to those without (1e-6, fp32, dropout on).
local T = require "testlib"
local torch = require "torch"
local nn = require "skyrun.nn"
local transformers = require "transformers"
local peft = require "peft"
local tcore = require "transformers.train_core"

local ROOT = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/fixtures/"
local MODELS = ROOT .. "models/"

local function llama() return transformers.AutoModelForCausalLM.from_pretrained(MODELS .. "llama") end

local function max_diff(a, b) return (a:float() - b:float()):abs():max():item() end

local function batch(name)
  local ref = nn.safetensors_load(MODELS .. name .. "/reference.safetensors")
  return { input_ids = ref["right.input_ids"], attention_mask = ref["right.attention_mask"] }, ref
end

local function adapter_keys(pm)
  local keys = {}
  for k in pairs(require("skyrun.peft").lora_state_dict(pm:get_base_model())) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- An adapter folder written by hand (PEFT's layout) with random A and B, so that it is no no-op.
local function write_adapter(dir, cfg, modules, r, shapes, seed)
  torch.manual_seed(seed or 1)
  local tensors = {}
  for _, m in ipairs(modules) do
    local inf, outf = shapes[m][1], shapes[m][2]
    tensors["base_model.model." .. m .. ".lora_A.weight"] = torch.randn { r, inf } * 0.1
    tensors["base_model.model." .. m .. ".lora_B.weight"] = torch.randn { outf, r } * 0.1
  end
  os.execute("mkdir -p '" .. dir .. "'")
  nn.safetensors_save(dir .. "/adapter_model.safetensors", tensors, { format = "pt" })
  T.write_file(dir .. "/adapter_config.json", tcore.json_encode(cfg, 2))
end

T.test("LoraConfig has PEFT's defaults and refuses unknown and unsupported keys by name", function()
  local c = peft.LoraConfig {}
  T.eq({ c.r, c.lora_alpha, c.lora_dropout, c.bias, c.use_rslora, c.init_lora_weights }, { 8, 8, 0, "none", false, true })
  T.raises(function() peft.LoraConfig { lora_alfa = 16 } end, "unknown option 'lora_alfa' (did you mean 'lora_alpha'?)")
  T.raises(function() peft.LoraConfig { use_dora = true } end, "not supported yet: LoraConfig.use_dora")
  peft.LoraConfig { use_dora = false, rank_pattern = {} }  -- PEFT's defaults of keys we lack are fine
  T.raises(function() peft.LoraConfig { r = 0 } end, "`r` should be a positive integer value but the value passed is 0")
  T.raises(function() peft.LoraConfig { init_lora_weights = "pissa" } end, "not supported yet: init_lora_weights = pissa")
  T.raises(function() peft.LoraConfig { target_modules = ".*q_proj", layers_to_transform = { 0 } } end,
    "`layers_to_transform` cannot be used when `target_modules` is a str.")
end)

T.test("target_modules: names or suffixes, a full regex, all-linear without lm_head, layers_to_transform", function()
  local function targets(cfg)
    local pm = peft.get_peft_model(llama(), peft.LoraConfig(cfg))
    local mods = {}
    for _, k in ipairs(adapter_keys(pm)) do
      local m = k:match("^base_model%.model%.(.*)%.lora_A%.weight$")
      if m then mods[#mods + 1] = m end
    end
    return mods
  end
  T.eq(targets { target_modules = { "q_proj", "model.layers.1.self_attn.v_proj" } },
    { "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj" })
  -- a string is re.fullmatch: "q_proj" alone matches nothing, the full name does
  T.eq(targets { target_modules = [[model\.layers\.\d+\.self_attn\.(q|k)_proj]] },
    { "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.k_proj",
      "model.layers.1.self_attn.q_proj" })
  local all = targets { target_modules = "all-linear" }
  T.eq(#all, 14, "7 linears in each of 2 layers")
  for _, m in ipairs(all) do T.ok(not m:find("lm_head"), "all-linear keeps lm_head out") end
  T.eq(targets { target_modules = { "down_proj" }, layers_to_transform = { 1 } }, { "model.layers.1.mlp.down_proj" })
  T.eq(targets { target_modules = { "down_proj" }, exclude_modules = { "model.layers.0.mlp.down_proj" } },
    { "model.layers.1.mlp.down_proj" })
end)

T.test("bad configs name what is wrong: nothing matched lists the modules, embeddings, norms", function()
  local err = T.raises(function() peft.get_peft_model(llama(), peft.LoraConfig { target_modules = { "c_attn" } }) end,
    "Target modules {c_attn} not found in the base model.")
  T.contains(err, "model.layers.0.self_attn.q_proj")
  T.contains(err, "lm_head")
  T.raises(function() peft.get_peft_model(llama(), peft.LoraConfig { target_modules = { "embed_tokens" } }) end,
    "not supported yet: LoRA on the embedding 'model.embed_tokens'")
  T.raises(function() peft.get_peft_model(llama(), peft.LoraConfig { target_modules = { "input_layernorm" } }) end,
    "is not supported")
  local m = llama()
  peft.get_peft_model(m, peft.LoraConfig { target_modules = { "q_proj" } })
  T.raises(function() peft.get_peft_model(m, peft.LoraConfig { target_modules = { "v_proj" } }) end,
    "not supported yet: a second adapter")
end)

T.test("get_peft_model freezes the base; A is kaiming-uniform, B zero; trainable counts as PEFT prints them", function()
  local pm = peft.get_peft_model(llama(), peft.LoraConfig { r = 4, target_modules = { "q_proj", "v_proj" } })
  local trainable, all = pm:get_nb_trainable_parameters()
  -- q_proj [64 -> 64], v_proj [64 -> 32] in 2 layers: r * (in + out)
  T.eq(trainable, 2 * (4 * (64 + 64) + 4 * (64 + 32)))
  local base_total = llama():num_parameters()
  T.eq(all, base_total + trainable)
  for _, np in ipairs(pm:named_parameters()) do
    local name, t = np[1], np[2]
    T.eq(t.requires_grad, name:find("lora_") ~= nil, name)
    if name:find("lora_A") then T.ok(t:abs():max():item() <= 1 / math.sqrt(64) + 1e-7, "kaiming-uniform bound") end
    if name:find("lora_B") then T.eq(t:abs():max():item(), 0) end
  end
  -- B = 0: the adapter does nothing yet
  local inputs, ref = batch("llama")
  T.ok(max_diff(pm(inputs).logits, ref["right.logits"]) < 1e-4)
end)

T.test("an adapter's logits survive save/load, equal merge_and_unload's, and disable_adapter gives the base", function()
  local dir = T.tmpdir() .. "/adapter"
  local shapes = {}
  for _, l in ipairs { 0, 1 } do
    shapes["model.layers." .. l .. ".self_attn.q_proj"] = { 64, 64 }
    shapes["model.layers." .. l .. ".self_attn.v_proj"] = { 64, 32 }
  end
  local mods = {}
  for m in pairs(shapes) do mods[#mods + 1] = m end
  write_adapter(dir, { peft_type = "LORA", r = 4, lora_alpha = 8, target_modules = { "q_proj", "v_proj" },
    task_type = "CAUSAL_LM", use_rslora = false }, mods, 4, shapes)
  local inputs, ref = batch("llama")
  local pm = peft.PeftModel.from_pretrained(llama(), dir)
  T.eq(pm.training, false)
  local logits = pm(inputs).logits
  T.ok(max_diff(logits, ref["right.logits"]) > 1e-3, "the adapter changes the output")
  local base_out = pm:disable_adapter(function() return pm(inputs).logits end)
  T.ok(max_diff(base_out, ref["right.logits"]) < 1e-4, "disabled: the base model's logits")
  T.ok(max_diff(pm(inputs).logits, logits) == 0, "enabled again after disable_adapter")
  for _, np in ipairs(pm:named_parameters()) do T.eq(np[2].requires_grad, false, "inference mode: " .. np[1]) end
  -- save and load again
  local dir2 = T.tmpdir() .. "/again"
  pm:save_pretrained(dir2)
  local saved = tcore.json_decode(T.read_file(dir2 .. "/adapter_config.json"))
  T.eq(saved.peft_type, "LORA")
  T.eq(saved.inference_mode, true)
  T.eq(saved.lora_alpha, 8)
  local again = peft.PeftModel.from_pretrained(llama(), dir2, { is_trainable = true })
  T.ok(max_diff(again(inputs).logits, logits) == 0, "identical logits after the round trip")
  for _, np in ipairs(again:named_parameters()) do T.eq(np[2].requires_grad, np[1]:find("lora_") ~= nil, np[1]) end
  local merged = pm:merge_and_unload()
  T.eq(require("skyrun.peft").has_lora(merged), false)
  local d = max_diff(merged(inputs).logits, logits)
  T.ok(d < 1e-5, string.format("merged logits within 1e-5 (%.3g)", d))
  local unloaded = again:unload()
  T.ok(max_diff(unloaded(inputs).logits, ref["right.logits"]) < 1e-4, "unload: the base model again")
  T.raises(function() return again(inputs) end, "unloaded")
end)

T.test("an adapter for another base is refused naming the tensor and both shapes", function()
  local dir = T.tmpdir() .. "/adapter"
  -- v_proj of the llama fixture is [64 -> 32]; mistral's (1 key/value head) is [64 -> 16]
  local shapes = { ["model.layers.0.self_attn.v_proj"] = { 64, 32 } }
  write_adapter(dir, { peft_type = "LORA", r = 4, lora_alpha = 8, target_modules = { "v_proj" } },
    { "model.layers.0.self_attn.v_proj" }, 4, shapes)
  local mistral = transformers.AutoModelForCausalLM.from_pretrained(MODELS .. "mistral")
  local err = T.raises(function() peft.PeftModel.from_pretrained(mistral, dir) end,
    "tensor 'base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight' has shape [32, 4]")
  T.contains(err, "expects [16, 4]")
  T.eq(require("skyrun.peft").has_lora(mistral), false, "the base model is left as it was")
  -- an adapter whose modules the base lacks: GPT-2's names on Llama
  local gdir = T.tmpdir() .. "/gpt2-adapter"
  write_adapter(gdir, { peft_type = "LORA", r = 4, target_modules = { "c_attn" } }, {}, 4, {})
  T.raises(function() peft.PeftModel.from_pretrained(llama(), gdir) end, "Target modules {c_attn} not found")
end)

-- one causal-LM training run of `steps` optimizer steps on the trainer fixture's data
local function lora_run(dir, opts)
  local rows = tcore.json_decode(T.read_file(ROOT .. "trainer/llama/data.json")).train
  local data = { train = {} }  -- four rows seen again and again: a loss that can go down
  for i = 1, 48 do data.train[i] = rows[(i - 1) % 4 + 1] end
  local base = transformers.AutoModelForCausalLM.from_pretrained(ROOT .. "trainer/llama/initial")
  transformers.set_seed(3)
  local pm = peft.get_peft_model(base, peft.LoraConfig { r = 4, lora_alpha = 8, target_modules = "all-linear",
    lora_dropout = opts.lora_dropout or 0 })
  local args = transformers.TrainingArguments {
    output_dir = dir, use_cpu = true, train_shuffle = false, per_device_train_batch_size = 4, num_train_epochs = 1,
    learning_rate = 1e-2, logging_steps = 1, save_strategy = "steps", save_steps = 6, report_to = "none",
    max_steps = opts.max_steps or -1, seed = 42, gradient_checkpointing = opts.gc or false,
  }
  local trainer = transformers.Trainer { model = pm, args = args, train_dataset = data.train,
    data_collator = transformers.DataCollatorForLanguageModeling({ pad_token_id = 0 }, { mlm = false }) }
  local out = trainer:train({ resume_from_checkpoint = opts.resume })
  local losses = {}
  for _, e in ipairs(trainer.state.log_history) do if e.loss then losses[e.step] = e.loss end end
  return pm, losses, out
end

T.test("the Trainer trains only the adapter, saves adapter folders, and resumes exactly", function()
  local dir = T.tmpdir()
  local before = {}
  for _, np in ipairs(transformers.AutoModelForCausalLM.from_pretrained(ROOT .. "trainer/llama/initial"):named_parameters()) do
    before[np[1]] = np[2]
  end
  local pm, losses = lora_run(dir, {})
  T.ok(#losses >= 12, "12 steps logged")
  T.ok(losses[12] < losses[1], "the loss goes down")
  for _, np in ipairs(pm:named_parameters()) do
    if before[np[1]] then T.eq(max_diff(np[2], before[np[1]]), 0, "frozen: " .. np[1]) end
  end
  local ck = dir .. "/checkpoint-6"
  T.ok(io.open(ck .. "/adapter_model.safetensors"), "checkpoint holds the adapter")
  T.ok(io.open(ck .. "/adapter_config.json"), "and its config")
  T.eq(io.open(ck .. "/model.safetensors"), nil, "not the base model")
  local _, resumed = lora_run(T.tmpdir(), { resume = ck })
  for step = 7, 12 do
    T.near(resumed[step], losses[step], 1e-6, "resumed loss of step " .. step)
  end
end)

T.test("gradient checkpointing: every gradient equals the run without it (fp32, dropout on)", function()
  local cfg = nn.load_config(MODELS .. "gpt2")
  cfg.resid_pdrop, cfg.embd_pdrop, cfg.attn_pdrop = 0.1, 0.1, 0.1
  local inputs = batch("gpt2")
  inputs.labels = inputs.input_ids
  local function grads(gc, lora)
    transformers.set_seed(11)
    local m = transformers.AutoModelForCausalLM.from_config(cfg)
    local model = m
    if lora then
      model = peft.get_peft_model(m, peft.LoraConfig { r = 4, target_modules = { "c_attn", "c_fc" }, lora_dropout = 0.2,
        init_lora_weights = false })
    end
    if gc then m:gradient_checkpointing_enable() end
    model:train()
    transformers.set_seed(5)
    local out = model(inputs)
    out.loss:backward()
    local g = {}
    for _, np in ipairs(model:named_parameters()) do
      if np[2].requires_grad then g[np[1]] = np[2].grad end
    end
    return g, out.loss:item()
  end
  -- checkpointing really runs the blocks again in backward: switched to eval between forward and
  -- backward, the recomputation drops dropout and the gradients change (without it they cannot)
  local function eval_before_backward(gc)
    transformers.set_seed(11)
    local m = transformers.AutoModelForCausalLM.from_config(cfg)
    if gc then m:gradient_checkpointing_enable() end
    m:train()
    local out = m(inputs)
    m:eval()
    out.loss:backward()
    return m:get_parameter("transformer.h.0.attn.c_attn.weight").grad
  end
  T.ok(max_diff(eval_before_backward(true), eval_before_backward(false)) > 1e-4, "the blocks ran again in backward")
  for _, lora in ipairs { false, true } do
    local a, la = grads(false, lora)
    local b, lb = grads(true, lora)
    T.eq(lb, la, "same loss")
    local n = 0
    for name, ga in pairs(a) do
      T.ok(b[name] ~= nil, "gradient of " .. name)
      local d = max_diff(ga, b[name])
      T.ok(d <= 1e-6, string.format("%s: |diff| %.3g > 1e-6", name, d))
      n = n + 1
    end
    T.ok(n > 0)
  end
end)

T.test("gradient checkpointing in the Trainer gives the same losses (LoRA, frozen embeddings)", function()
  local _, plain = lora_run(T.tmpdir(), { max_steps = 4, lora_dropout = 0.1 })
  local _, gc = lora_run(T.tmpdir(), { max_steps = 4, lora_dropout = 0.1, gc = true })
  for step = 1, 4 do T.near(gc[step], plain[step], 1e-6, "step " .. step) end
end)

T.run()
