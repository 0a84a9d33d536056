-- The model API around the architectures: save → load round trips (one file and shards),
-- HF-style missing/unexpected weight reports, options and errors, and the torch module.
package.path = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/nn/?.lua;" .. package.path
local T = require "testlib"
local N = require "nn_testing"
local torch = require "torch"
local transformers = require "transformers"
local nn = require "skyrun.nn"

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

T.test("a saved model loads back with identical logits, as one file and as shards", function()
  local ref = N.reference("qwen3")
  local model = transformers.AutoModelForCausalLM.from_pretrained(N.root .. "qwen3")
  local inputs = { input_ids = ref["right.input_ids"], attention_mask = ref["right.attention_mask"] }
  local before = model(inputs).logits
  local dir = T.tmpdir()
  model:save_pretrained(dir .. "/one")
  T.ok(exists(dir .. "/one/model.safetensors") and exists(dir .. "/one/config.json"))
  local cfg = transformers.AutoConfig.from_pretrained(dir .. "/one")
  T.eq(cfg.architectures, { "Qwen3ForCausalLM" })
  T.eq(cfg.model_type, "qwen3")
  T.eq(cfg.dtype, "float32")
  local header = nn.safetensors_header(dir .. "/one/model.safetensors")
  local names = {}
  for _, e in ipairs(header) do names[e.name] = true end
  T.ok(names["model.embed_tokens.weight"] and not names["lm_head.weight"], "tied lm_head is not saved")
  local again = transformers.AutoModelForCausalLM.from_pretrained(dir .. "/one")
  T.ok(again(inputs).logits:equal(before), "one-file round trip")
  model:save_pretrained(dir .. "/sharded", { max_shard_size = "100KB" })
  T.ok(exists(dir .. "/sharded/model.safetensors.index.json"))
  T.ok(exists(dir .. "/sharded/model-00001-of-00004.safetensors"))
  T.ok(not exists(dir .. "/sharded/model.safetensors"))
  local sharded = transformers.AutoModelForCausalLM.from_pretrained(dir .. "/sharded")
  T.ok(sharded(inputs).logits:equal(before), "sharded round trip")
end)

T.test("a bf16 load saves bf16 and dtype auto keeps it", function()
  local dir = T.tmpdir()
  local m = transformers.AutoModelForCausalLM.from_pretrained(N.root .. "gpt2", { dtype = "bfloat16" })
  m:save_pretrained(dir)
  local header = nn.safetensors_header(dir .. "/model.safetensors")
  T.eq(header[1].dtype, "BF16")
  local back = transformers.AutoModelForCausalLM.from_pretrained(dir)
  T.eq(back.dtype, "bfloat16")
  T.eq(transformers.AutoConfig.from_pretrained(dir).dtype, "bfloat16")
end)

T.test("a new classification head is initialised and reported as HF reports it", function()
  local model, info = transformers.AutoModelForSequenceClassification.from_pretrained(N.root .. "bert", {
    num_labels = 3, output_loading_info = true })
  T.eq(info.missing_keys, { "classifier.weight", "classifier.bias" })
  T.contains(info.warnings, "Some weights of BertForSequenceClassification were not initialized from the model checkpoint")
  T.contains(info.warnings, "['classifier.weight', 'classifier.bias']")
  T.eq(model.config.num_labels, 3)
  T.eq(model.config.id2label[2], "LABEL_2")
  local out = model { input_ids = { { 5, 6, 7 } }, labels = { 1 } }
  T.eq(out.logits.shape, { 1, 3 })
  T.ok(out.loss:item() > 0)
  local _, info2 = transformers.AutoModel.from_pretrained(N.root .. "bert-cls", { output_loading_info = true })
  T.eq(info2.unexpected_keys, { "classifier.bias", "classifier.weight" })
  T.eq(info2.missing_keys, {})
end)

T.test("id2label and problem_type options reach the config; multi-label uses BCE", function()
  local model = transformers.AutoModelForSequenceClassification.from_pretrained(N.root .. "distilbert-cls", {
    id2label = { [0] = "NEG", [1] = "POS" }, problem_type = "multi_label_classification" })
  T.eq(model.config.label2id, { NEG = 0, POS = 1 })
  local out = model { input_ids = { { 5, 6, 7 } }, labels = torch.tensor({ { 1, 0 } }, { dtype = "float32" }) }
  local p = out.logits:sigmoid()
  local l = p:tolist()[1]
  local bce = -(math.log(l[1]) + math.log(1 - l[2])) / 2
  T.near(out.loss:item(), bce, 1e-5)
end)

T.test("num_items_in_batch turns the causal loss into a sum over that many tokens", function()
  local ref = N.reference("llama")
  local model = transformers.AutoModelForCausalLM.from_pretrained(N.root .. "llama")
  local inputs = { input_ids = ref["right.input_ids"], attention_mask = ref["right.attention_mask"],
    labels = ref["right.labels"] }
  local mean = model(inputs).loss:item()
  local n = (ref["right.labels"]:narrow(2, 2, 7):ne(-100)):sum():item()  -- shifted label tokens
  inputs.num_items_in_batch = 2 * n
  T.near(model(inputs).loss:item(), mean / 2, 1e-5)
end)

T.test("train mode keeps gradients; parameters are listed by HF name without the tied head", function()
  local model = transformers.AutoModelForCausalLM.from_pretrained(N.root .. "gpt2")
  local params = model:named_parameters()
  T.eq(params[1][1], "transformer.wte.weight")
  for _, p in ipairs(params) do T.ok(p[1] ~= "lm_head.weight") end
  T.eq(model:num_parameters(), 64 * 256 + 128 * 64 + 2 * (4 * 64 + 64 * 192 + 192 + 64 * 64 + 64 + 64 * 256 + 256 + 256 * 64 + 64) + 128)
  model:train()
  T.ok(model.training)
  local out = model { input_ids = { { 5, 6, 7, 8 } }, labels = { { 5, 6, 7, 8 } } }
  out.loss:backward()
  T.ok(params[1][2].grad ~= nil, "wte has a gradient")
  model:eval()
  T.ok(not model.training)
end)

T.test("sampled generation with top_p and temperature is reproducible under a seed", function()
  local model = transformers.AutoModelForCausalLM.from_pretrained(N.root .. "llama")
  local opts = { max_new_tokens = 6, do_sample = true, temperature = 0.7, top_p = 0.9, eos_token_id = false }
  transformers.set_seed(7)
  local a = model:generate({ { 5, 9, 11 } }, opts):tolist()
  transformers.set_seed(7)
  local b = model:generate({ { 5, 9, 11 } }, opts):tolist()
  T.eq(a, b)
  T.eq(#a[1], 9)
end)

T.test("bad folders, options and inputs are clear errors", function()
  local dir = T.tmpdir()
  T.raises(function() transformers.AutoModel.from_pretrained(dir) end, "config.json")
  T.write_file(dir .. "/config.json", T.read_file(N.root .. "gpt2/config.json"))
  T.raises(function() transformers.AutoModel.from_pretrained(dir) end, "model.safetensors")
  T.write_file(dir .. "/config.json", '{"model_type": "mamba"}')
  T.write_file(dir .. "/model.safetensors", T.read_file(N.root .. "gpt2/model.safetensors"))
  T.raises(function() transformers.AutoModel.from_pretrained(dir) end, "not supported yet: model_type 'mamba'")
  T.write_file(dir .. "/config.json", T.read_file(N.root .. "gpt2/config.json"))
  T.write_file(dir .. "/model.safetensors", T.read_file(N.root .. "gpt2/model.safetensors"):sub(1, 5000))
  T.raises(function() transformers.AutoModel.from_pretrained(dir) end, dir .. "/model.safetensors: tensor '")
  T.raises(function() transformers.AutoModel.from_pretrained(N.root .. "gpt2", { dtyp = "bfloat16" }) end,
    "did you mean 'dtype'")
  T.raises(function() transformers.AutoModel.from_pretrained(N.root .. "gpt2", { dtype = "int8" }) end, "unknown dtype 'int8'")
  local m = transformers.AutoModel.from_pretrained(N.root .. "gpt2")
  T.raises(function() m { input_idz = { { 1 } } } end, "did you mean 'input_ids'")
  T.raises(function() m:generate({ { 1 } }) end, "not a causal LM")
end)

T.test("torch tensors go to and from Lua tables with shape, dtype and device", function()
  local t = torch.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
  T.eq(t.shape, { 2, 3 })
  T.eq(t.dtype, "int64")
  T.eq(t.device, "cpu")
  T.eq(t:tolist(), { { 1, 2, 3 }, { 4, 5, 6 } })
  local f = torch.tensor({ 0.5, 1.5 }, { dtype = "float32" })
  T.eq(f.dtype, "float32")
  T.eq(((f * 2) + 1):tolist(), { 2, 4 })
  T.eq(t:sum():item(), 21)
  T.eq(t:sum(2):tolist(), { 6, 15 })
  T.eq(t:argmax(2):tolist(), { 2, 2 })  -- 0-based indices, as torch
  T.eq(t:float():mean():item(), 3.5)
  T.eq(torch.arange(4):tolist(), { 0, 1, 2, 3 })
  T.eq(torch.zeros(2, 2).shape, { 2, 2 })
  T.eq(torch.tensor({ true, false }):tolist(), { true, false })
  T.eq(t:select(1, 2):tolist(), { 4, 5, 6 })
  T.eq(t:to("float32"):softmax(2):sum(2):tolist()[1], 1)
  T.eq(torch.cat({ t, t }):tolist(), { { 1, 2, 3 }, { 4, 5, 6 }, { 1, 2, 3 }, { 4, 5, 6 } })
  T.eq(torch.cat({ t, t }, 2).shape, { 2, 6 })
  T.eq(torch.stack({ t, t }).shape, { 2, 2, 3 })
  T.eq(torch.stack({ t, t }, -1):tolist()[2][3], { 6, 6 })
  T.raises(function() torch.cat({}) end, "torch.cat: no tensors")
  T.raises(function() torch.stack({ t, 5 }) end, "equal size")  -- a number is a 0-d tensor
  T.raises(function() torch.tensor({ { 1, 2 }, { 3 } }) end, "ragged")
  T.raises(function() t:to("flaot32") end, "did you mean 'float32'")
  T.contains(tostring(f), "dtype=float32")
  -- a float64 tensor owns its values (they outlive the Lua table they came from)
  local d = torch.tensor({ 0.25, 1e300, -3 }, { dtype = "float64" })
  collectgarbage(); local _ = {}; for i = 1, 1000 do _[i] = { i, i + 0.5 } end
  T.eq(d:tolist(), { 0.25, 1e300, -3 })
end)

T.test("dropped tensors are collected as they go, not when Lua's own heap happens to grow", function()
  local function rss_mb()
    for line in io.lines("/proc/self/status") do
      local kb = line:match("^VmRSS:%s+(%d+)")
      if kb then return tonumber(kb) / 1024 end
    end
  end
  collectgarbage()
  local base = rss_mb()
  for _ = 1, 50 do
    local t = torch.ones(5000000, { dtype = "float64" })  -- 40 MB, dropped at once: 2 GB in all
    T.eq(t.shape, { 5000000 })
  end
  local grown = rss_mb() - base
  T.ok(grown < 1000, string.format("RSS grew by %.0f MB over 50 dropped 40 MB tensors", grown))
end)

T.test("attn_implementation takes HF's names: eager everywhere, sdpa where LibTorch has it", function()
  local folder = N.root .. "gpt2"
  T.raises(function() transformers.AutoModelForCausalLM.from_pretrained(folder, { attn_implementation = "flash_attention_2" }) end,
    "not supported yet: attn_implementation 'flash_attention_2'")
  T.raises(function() transformers.AutoModelForCausalLM.from_pretrained(folder, { attn_implementation = "egaer" }) end,
    "attn_implementation 'egaer' is not one of 'eager', 'sdpa'")
  local cfg = transformers.AutoConfig.from_pretrained(folder)
  T.raises(function() transformers.AutoModelForCausalLM.from_config(cfg, { attn_implementation = "bogus" }) end, "not one of")
  local ok, err = pcall(transformers.AutoModelForCausalLM.from_pretrained, folder, { attn_implementation = "sdpa" })
  local version = T.skyrun { "--version" }
  local major, minor = version:match("LibTorch (%d+)%.(%d+)")
  if tonumber(major) * 100 + tonumber(minor) >= 205 then
    T.ok(ok, err)
  else
    T.contains(err, "not supported yet: attn_implementation 'sdpa' with LibTorch")
  end
end)

T.test("a LibTorch error reaches Lua as its message, without LibTorch's C++ backtrace", function()
  local ok, err = pcall(function() return torch.tensor({ 1, 2 }) + torch.tensor({ 1, 2, 3 }) end)
  T.ok(not ok)
  T.contains(err, "must match the size of tensor b (3)")
  T.ok(not err:find("Exception raised from", 1, true) and not err:find("frame #", 1, true), err)
end)

T.run()
