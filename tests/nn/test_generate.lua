-- Random models from a config (HF's initialisation) and batched generation with padding.
package.path = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/nn/?.lua;" .. package.path
local T = require "testlib"
local N = require "nn_testing"
local transformers = require "transformers"
local torch = require "torch"

T.test("from_config builds a random model of the config's shape, initialised as HF does", function()
  local cfg = transformers.AutoConfig.from_pretrained(N.root .. "llama")
  cfg.num_hidden_layers = 1
  transformers.set_seed(3)
  local m = transformers.AutoModelForCausalLM.from_config(cfg)
  T.eq(m.class_name, "LlamaForCausalLM")
  T.eq(m.config.num_hidden_layers, 1)
  local w = m:get_parameter("model.layers.0.mlp.up_proj.weight")
  T.eq(w.shape, { 128, 64 })
  local std = ((w * w):mean():item()) ^ 0.5
  T.near(std, 0.02, 0.002)
  T.eq(m:get_parameter("model.norm.weight"):tolist()[1], 1)
  local clf = transformers.AutoModelForSequenceClassification.from_config(
    transformers.AutoConfig.from_pretrained(N.root .. "bert-cls"), { dtype = "bfloat16" })
  T.eq(clf.dtype, "bfloat16")
  T.eq(clf.config.id2label[2], "positive")
end)

for _, name in ipairs { "llama", "gpt2", "qwen3" } do
  T.test(name .. ": a left-padded batch generates what each prompt generates alone", function()
    local model = transformers.AutoModelForCausalLM.from_pretrained(N.root .. name)
    local opts = { max_new_tokens = 6, eos_token_id = false, pad_token_id = 0 }
    local a = model:generate({ { 17, 42, 99, 7, 150 } }, opts):tolist()[1]
    local b = model:generate({ { 33, 8, 201 } }, opts):tolist()[1]
    opts.attention_mask = { { 1, 1, 1, 1, 1 }, { 0, 0, 1, 1, 1 } }
    local batch = model:generate({ { 17, 42, 99, 7, 150 }, { 0, 0, 33, 8, 201 } }, opts):tolist()
    T.eq(batch[1], a)
    T.eq({ unpack(batch[2], 3) }, b)
  end)
end

T.test("out-of-range generation settings and fractional token ids are errors, not silently used", function()
  local model = transformers.AutoModelForCausalLM.from_pretrained(N.root .. "gpt2")
  local ids = { { 17, 42, 99 } }
  T.raises(function() model:generate(ids, { max_new_tokens = -5 }) end,
    "generate: max_new_tokens must be greater than 0 (got -5)")
  T.raises(function() model:generate(ids, { max_new_tokens = 0 }) end, "max_new_tokens must be greater than 0 (got 0)")
  T.raises(function() model:generate(ids, { top_p = 2 }) end, "generate: top_p must be a number from 0 to 1 (got 2)")
  T.raises(function() model:generate(ids, { top_p = -0.5, do_sample = true }) end, "top_p must be a number from 0 to 1 (got -0.5)")
  T.raises(function() model:generate(ids, { top_k = -1 }) end, "top_k must be 0 (off) or a positive integer (got -1)")
  T.raises(function() model:generate(ids, { temperature = 0, do_sample = true }) end,
    "temperature must be a strictly positive finite number (got 0); for greedy decoding set do_sample = false")
  T.raises(function() model:generate(ids, { temperature = 0 / 0 }) end, "temperature must be a strictly positive finite number")
  T.raises(function() model:generate(ids, { temperature = -1 }) end, "temperature must be a strictly positive finite number (got -1)")
  T.raises(function() model:generate({ { 17, 2.5 } }, { max_new_tokens = 2 }) end,
    "generate: input_ids must hold integers (found 2.5)")
  T.raises(function() model { input_ids = { { 17, 2.5 } } } end, "input_ids must hold integers (found 2.5)")
  T.raises(function() model { input_ids = torch.tensor({ { 17, 3 } }, { dtype = "float32" }) } end,
    "input_ids must hold integers (got a float32 tensor)")
  T.raises(function() model { input_ids = { { 17, 3 } }, position_ids = { { 0, 0.5 } } } end,
    "position_ids must hold integers (found 0.5)")
  -- valid edges still work
  T.eq(#model:generate(ids, { max_new_tokens = 1, top_p = 1, top_k = 0, eos_token_id = false }):tolist()[1], 4)
  T.eq(model { input_ids = torch.tensor({ { 17, 3 } }, { dtype = "int32" }) }.logits.shape[2], 2)
end)

T.run()
