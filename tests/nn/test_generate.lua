-- Random models from a config (HF's initialisation) and batched generation with padding.
package.path = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/nn/?.lua;" .. package.path
local T = require "testlib"
local N = require "nn_testing"
local transformers = require "transformers"

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

T.run()
