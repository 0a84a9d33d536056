-- Packed, padding-free batches on the model side: position_ids restart at each sequence and
-- attention stays inside each sequence (HF masking_utils' packed-sequence mask), so the loss over
-- a packed row equals the loss of the same sequences run one by one, unpadded (fp32, 1e-5); then
-- SFTTrainer runs end to end, packed and padded, on the tiny fixture models.
local T = require "testlib"
local transformers = require "transformers"
local trl = require "trl"
local words = require "word_tokenizer"

local root = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/fixtures/models/"
-- tools/device/bench-sft.sh runs this file on CUDA too (SKYRUN_TRL_DEVICE=cuda), with torch's
-- fused attention as well as the float32 softmax.
local DEVICE = os.getenv("SKYRUN_TRL_DEVICE") or "cpu"
local IMPLS = DEVICE == "cuda" and { "eager", "sdpa" } or { "eager" }
local TOL = DEVICE == "cuda" and 1e-4 or 1e-5

-- three sequences of ids < 256 (the fixtures' vocabulary), of different lengths
local SEQS = {
  { 17, 42, 99, 7, 150, 3, 88 },
  { 5, 250, 61, 61, 9 },
  { 120, 33, 8, 201, 77, 14, 2, 19, 64 },
}

local function packed_batch(seqs)
  local rows = {}
  for i, s in ipairs(seqs) do rows[i] = { input_ids = s } end
  return trl.DataCollatorForLanguageModeling { pad_token_id = 0, padding_free = true }(rows)
end

for _, spec in ipairs { { "llama", "eager" }, { "gpt2", "eager" }, { "llama", "sdpa" }, { "gpt2", "sdpa" } } do
  local name, impl = spec[1], spec[2]
  local run = false
  for _, i in ipairs(IMPLS) do if i == impl then run = true end end
  if run then T.test(string.format("%s (%s, %s): a packed row's loss and logits equal the sequences' run one by one (%g)",
      name, impl, DEVICE, TOL), function()
    local model = transformers.AutoModelForCausalLM.from_pretrained(root .. name, { dtype = "float32",
      attn_implementation = impl, device = DEVICE })
    model:eval()
    local batch = packed_batch(SEQS)
    local out = model { input_ids = batch:get("input_ids"), labels = batch:get("labels"),
      position_ids = batch:get("position_ids") }
    local packed_logits = out.logits:tolist()[1]
    local sum, count, at = 0, 0, 0
    for _, s in ipairs(SEQS) do
      local one = model { input_ids = { s }, labels = { s } }
      sum = sum + one.loss:item() * (#s - 1)  -- the first label of each sequence predicts nothing
      count = count + #s - 1
      local logits = one.logits:tolist()[1]
      for t = 1, #s do
        for v = 1, #logits[t], 37 do T.near(packed_logits[at + t][v], logits[t][v], TOL) end
      end
      at = at + #s
    end
    T.near(out.loss:item(), sum / count, TOL)
    -- without position_ids the row is one long sequence: the loss differs
    local joined = model { input_ids = batch:get("input_ids"), labels = batch:get("labels") }
    T.ok(math.abs(joined.loss:item() - sum / count) > 1e-3, "attention crossed the sequences without position_ids")
  end) end
end

if DEVICE == "cuda" then
  -- bf16 packed rows go through variable-length flash attention where LibTorch has it
  T.test("llama (sdpa, cuda, bf16): a packed row's loss equals the sequences' run one by one (2e-2)", function()
    local model = transformers.AutoModelForCausalLM.from_pretrained(root .. "llama", { dtype = "bfloat16", device = "cuda" })
    model:eval()
    local batch = packed_batch(SEQS)
    local out = model { input_ids = batch:get("input_ids"), labels = batch:get("labels"), position_ids = batch:get("position_ids") }
    local sum, count = 0, 0
    for _, s in ipairs(SEQS) do
      sum = sum + model { input_ids = { s }, labels = { s } }.loss:item() * (#s - 1)
      count = count + #s - 1
    end
    T.near(out.loss:item(), sum / count, 2e-2 * sum / count)
  end)
end


local function alpaca_rows(n)
  local rows = {}
  local vocab = words.WORDS
  for i = 1, n do
    local a, b = {}, {}
    for k = 1, 2 + (i * 7) % 9 do a[#a + 1] = vocab[8 + (i + k) % 10] end
    for k = 1, 1 + (i * 5) % 6 do b[#b + 1] = vocab[8 + (i * k) % 10] end
    rows[i] = { prompt = table.concat(a, " "), completion = " " .. table.concat(b, " ") }
  end
  return rows
end

if DEVICE == "cpu" then T.test("SFTTrainer trains the tiny Llama padded and packed; packed steps see the same tokens", function()
  local dir = words.write(T.tmpdir() .. "/tok", { bos_token = "<s>", eos_token = "</s>", pad_token = "<pad>" }, { bos = true })
  local tok = transformers.AutoTokenizer.from_pretrained(dir)
  local results = {}
  for _, packing in ipairs { false, true } do
    transformers.set_seed(0)
    local model = transformers.AutoModelForCausalLM.from_pretrained(root .. "llama", { dtype = "float32" })
    local out = T.tmpdir()
    local trainer = trl.SFTTrainer { model = model, processing_class = tok, train_dataset = alpaca_rows(24),
      args = trl.SFTConfig { output_dir = out, per_device_train_batch_size = 4, num_train_epochs = 2, max_length = 32,
        learning_rate = 1e-3, logging_steps = 1, report_to = "none", save_strategy = "no", bf16 = false, packing = packing,
        train_shuffle = false } }
    local r = trainer:train()
    local losses = {}
    for _, e in ipairs(trainer.state.log_history) do if e.loss then losses[#losses + 1] = e.loss end end
    T.ok(#losses >= 4, "logged steps")
    T.ok(losses[#losses] < losses[1], string.format("loss fell (%s -> %s)", losses[1], losses[#losses]))
    results[packing] = { steps = trainer.state.global_step, rows = #trainer.train_dataset, loss = r.training_loss }
  end
  T.eq(results[false].rows, 24)
  T.ok(results[true].rows < 24, "packing made fewer rows")
  T.ok(results[true].steps < results[false].steps, "packing made fewer steps")
end) end

T.run()
