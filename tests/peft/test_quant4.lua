-- bitsandbytes' 4-bit format (QLoRA) on the CPU against tests/fixtures/nf4, made by
-- tools/fixtures/gen_nf4.py (a pure-Python transcription of bitsandbytes' quantization): codes,
-- absmax and the nested state equal bit for bit, dequantized weights equal, 4-bit checkpoints in
-- transformers' layout load (logits within 1e-5 of the float model holding the dequantized
-- weights) and save back byte for byte, bad quant states are named, and QLoRA trains.
local T = require "testlib"
local torch = require "torch"
local nn = require "skyrun.nn"
local transformers = require "transformers"
local peft = require "peft"
local native = require "skyrun.peft"

local ROOT = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/fixtures/"
local NF4 = ROOT .. "nf4/"

local function max_diff(a, b) return (a:float() - b:float()):abs():max():item() end

local function same(a, b, what)
  T.eq(a.shape, b.shape, what .. " shape")
  T.eq(a.dtype, b.dtype, what .. " dtype")
  T.ok(a:equal(b), what .. " differs")
end

T.test("quantize gives bitsandbytes' codes, absmax and nested state, and dequantizes to its values", function()
  local ref = nn.safetensors_load(NF4 .. "quant.safetensors")
  same(native.quant4_dynamic_map(), ref.dynamic_map, "create_dynamic_map()")
  local cases = 0
  for name in pairs(ref) do
    local case = name:match("^(.*)%.input$")
    if case then
      local qt, dq = case:match("%.(%a%a4)(%.?d?q?)$")
      local got = native.quant4(ref[name], qt, dq == ".dq")
      local keys = 0
      for k, t in pairs(got) do
        T.ok(ref[case .. "." .. k] ~= nil, case .. ": a tensor bitsandbytes does not save: " .. k)
        if k:find("quant_state") then  -- the JSON, byte for byte
          T.eq(string.char(unpack(t:tolist())), string.char(unpack(ref[case .. "." .. k]:tolist())), case .. " " .. k)
        else
          same(t, ref[case .. "." .. k], case .. " " .. k)
        end
        keys = keys + 1
      end
      T.eq(keys, dq == ".dq" and 6 or 4, case .. ": tensors saved")
      local shape = ref[name].shape
      same(native.dequant4(got, shape, "float32"), ref[case .. ".dequantized"], case .. " dequantized")
      cases = cases + 1
    end
  end
  T.eq(cases, 16)
end)

T.test("a 4-bit checkpoint in transformers' layout loads and runs as its dequantized float model", function()
  for _, m in ipairs { "llama", "gpt2" } do
    local ref = nn.safetensors_load(ROOT .. "models/" .. m .. "/reference.safetensors")
    local inputs = { input_ids = ref["right.input_ids"], attention_mask = ref["right.attention_mask"] }
    local q = transformers.AutoModelForCausalLM.from_pretrained(NF4 .. m .. "-4bit")
    T.eq(q.is_loaded_in_4bit, true)
    local f = transformers.AutoModelForCausalLM.from_pretrained(NF4 .. m .. "-dequantized")
    local d = max_diff(q(inputs).logits, f(inputs).logits)
    T.ok(d < 1e-5, string.format("%s: 4-bit logits within 1e-5 of the dequantized model's (%.3g)", m, d))
    -- save: the same tensors, byte for byte, and the quantization_config
    local dir = T.tmpdir()
    q:save_pretrained(dir)
    local a, b = nn.safetensors_load(dir .. "/model.safetensors"), nn.safetensors_load(NF4 .. m .. "-4bit/model.safetensors")
    local n = 0
    for k, t in pairs(b) do
      T.ok(a[k] ~= nil, m .. ": saved without " .. k)
      same(a[k], t, m .. " " .. k)
      n = n + 1
    end
    for k in pairs(a) do T.ok(b[k] ~= nil, m .. ": saved an extra " .. k) end
    local cfg = nn.load_config(dir)
    T.eq(cfg.quantization_config.bnb_4bit_quant_type, "nf4")
    T.eq(cfg.quantization_config.load_in_4bit, true)
    local again = transformers.AutoModelForCausalLM.from_pretrained(dir)
    T.eq(max_diff(again(inputs).logits, q(inputs).logits), 0)
  end
end)

T.test("BitsAndBytesConfig quantizes the linears on load as bitsandbytes would, the output layer left out", function()
  for _, m in ipairs { "llama", "gpt2" } do
    local bnb = transformers.BitsAndBytesConfig { load_in_4bit = true, bnb_4bit_quant_type = "nf4",
      bnb_4bit_use_double_quant = true, bnb_4bit_compute_dtype = "float32" }
    local q = transformers.AutoModelForCausalLM.from_pretrained(ROOT .. "models/" .. m, { quantization_config = bnb })
    local dir = T.tmpdir()
    q:save_pretrained(dir)
    local a, b = nn.safetensors_load(dir .. "/model.safetensors"), nn.safetensors_load(NF4 .. m .. "-4bit/model.safetensors")
    for k, t in pairs(b) do
      if k:find("quant_state") then
        T.eq(string.char(unpack(a[k]:tolist())), string.char(unpack(t:tolist())), m .. " " .. k)
      else
        same(a[k], t, m .. " " .. k)
      end
    end
  end
  T.raises(function() transformers.BitsAndBytesConfig { load_in_8bit = true } end, "not supported yet: load_in_8bit")
  T.raises(function() transformers.BitsAndBytesConfig { load_in_4bit = true, bnb_4bit_quant_type = "int4" } end,
    "bnb_4bit_quant_type must be")
end)

T.test("a 4-bit checkpoint with its quant state missing or truncated names the tensor", function()
  local src = nn.safetensors_load(NF4 .. "llama-4bit/model.safetensors")
  local cfg = io.open(NF4 .. "llama-4bit/config.json"):read("*a")
  local w = "model.layers.0.self_attn.q_proj.weight"
  local function broken(change)
    local dir = T.tmpdir()
    local t = {}
    for k, v in pairs(src) do t[k] = v end
    change(t)
    nn.safetensors_save(dir .. "/model.safetensors", t, { format = "pt" })
    T.write_file(dir .. "/config.json", cfg)
    return dir
  end
  local err = T.raises(function()
    transformers.AutoModelForCausalLM.from_pretrained(broken(function(t) t[w .. ".absmax"] = nil end))
  end, "has no '" .. w .. ".absmax'")
  T.contains(err, "model.safetensors")
  T.raises(function()
    transformers.AutoModelForCausalLM.from_pretrained(broken(function(t) t[w .. ".quant_state.bitsandbytes__nf4"] = nil end))
  end, w .. ".quant_state.bitsandbytes__nf4")
  T.raises(function()
    transformers.AutoModelForCausalLM.from_pretrained(broken(function(t)
      t[w .. ".quant_state.bitsandbytes__nf4"] = t[w .. ".quant_state.bitsandbytes__nf4"]:narrow(1, 1, 20)
    end))
  end, "is not a JSON object (truncated?)")
  T.raises(function()
    transformers.AutoModelForCausalLM.from_pretrained(broken(function(t) t[w] = t[w]:narrow(1, 1, 100) end))
  end, "tensor '" .. w .. "' of 4-bit weight")
  T.raises(function()
    transformers.AutoModelForCausalLM.from_pretrained(broken(function(t) t[w .. ".nested_absmax"] = nil end))
  end, "has no '" .. w .. ".nested_absmax'")
end)

T.test("QLoRA: prepare_model_for_kbit_training, LoRA on 4-bit linears, the loss goes down, the 4-bit base stays", function()
  local bnb = transformers.BitsAndBytesConfig { load_in_4bit = true, bnb_4bit_quant_type = "nf4",
    bnb_4bit_use_double_quant = true }
  local model = transformers.AutoModelForCausalLM.from_pretrained(ROOT .. "trainer/llama/initial", { quantization_config = bnb })
  model = peft.prepare_model_for_kbit_training(model)
  T.eq(model.is_gradient_checkpointing, true)
  local before = model:get_parameter("model.layers.0.mlp.up_proj.weight")
  local pm = peft.get_peft_model(model, peft.LoraConfig { r = 4, lora_alpha = 8, target_modules = "all-linear" })
  local trainable, all = pm:get_nb_trainable_parameters()
  local plain = transformers.AutoModelForCausalLM.from_pretrained(ROOT .. "trainer/llama/initial")
  T.eq(all, plain:num_parameters() + trainable, "4-bit weights counted unpacked, as PEFT counts Params4bit")
  T.eq(trainable, 2 * 4 * ((64 + 64) + (64 + 32) + (64 + 32) + (64 + 64) + 3 * (64 + 128)))
  local tcore = require "transformers.train_core"
  local rows = tcore.json_decode(T.read_file(ROOT .. "trainer/llama/data.json")).train
  local train = {}  -- four rows seen again and again: a loss that can go down
  for i = 1, 40 do train[i] = rows[(i - 1) % 4 + 1] end
  local trainer = transformers.Trainer { model = pm, train_dataset = train,
    args = transformers.TrainingArguments { output_dir = T.tmpdir(), use_cpu = true, train_shuffle = false,
      per_device_train_batch_size = 4, max_steps = 10, learning_rate = 1e-2, logging_steps = 1, save_strategy = "no",
      report_to = "none" },
    data_collator = transformers.DataCollatorForLanguageModeling({ pad_token_id = 0 }, { mlm = false }) }
  trainer:train()
  local losses = {}
  for _, e in ipairs(trainer.state.log_history) do if e.loss then losses[#losses + 1] = e.loss end end
  T.ok(losses[#losses] < losses[1] - 0.1, string.format("loss %.4f -> %.4f", losses[1], losses[#losses]))
  same(model:get_parameter("model.layers.0.mlp.up_proj.weight"), before, "the 4-bit weight")
  -- merge_and_unload requantizes: its logits match the adapter's within the 4-bit rounding
  local inputs = { input_ids = torch.tensor { { 5, 6, 7, 8, 9 } } }
  pm:eval()
  local with = pm(inputs).logits
  local merged = pm:merge_and_unload()
  T.ok(max_diff(merged(inputs).logits, with) < 0.5, "merged into the 4-bit weights")
end)

T.run()
