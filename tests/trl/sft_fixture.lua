-- The SFT parity fixture's inputs, shared by tools/fixtures/sft_batches.lua (which writes the
-- batches HF Trainer is fed on the GPU machine) and test_sft_parity.lua (which rebuilds them and
-- trains on them): 40 real Alpaca rows, a word-level tokenizer over them, and the two cases.
local tcore = require "transformers.train_core"

local M = {}

local DATA = (os.getenv("SKYRUN_SHARED_DATA") or "../shared/data") .. "/datasets/alpaca/alpaca_en_demo.json"
local N_ROWS = 40

-- The NVIDIA playbook's Alpaca prompt up to the response (trl.demo_data's template).
M.PROMPT = require("trl.demo_data").ALPACA_PROMPT_TEMPLATE:gsub("%%s$", "")

function M.alpaca_rows()
  local f = assert(io.open(DATA, "rb"), "cannot read " .. DATA)
  local all = tcore.json_decode(f:read("*a"))
  f:close()
  local rows = {}
  for i = 1, N_ROWS do rows[i] = all[i] end
  return rows
end

-- tokenizer.json and tokenizer_config.json texts: trl.demo_data's word-level tokenizer over the
-- rows' text, its 240 most frequent words after the four specials, so every id is < 256.
function M.tokenizer_files()
  local texts = {}
  for i, r in ipairs(M.alpaca_rows()) do texts[i] = M.PROMPT:format(r.instruction, r.input) .. r.output end
  local tok_json, tok_config = require("trl.demo_data").tokenizer_files(texts, 240)
  return tok_json, tok_config
end

-- What both trainers are run with (HF Trainer's names; CPU, fp32, sequential order).
local COMMON = { gradient_accumulation_steps = 2, num_train_epochs = 1, learning_rate = 1e-3, weight_decay = 0.01,
  adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8, lr_scheduler_type = "linear", warmup_steps = 2,
  max_grad_norm = 1.0, logging_steps = 1, seed = 42, optim = "adamw_torch" }

local function args_with(extra)
  local a = {}
  for k, v in pairs(COMMON) do a[k] = v end
  for k, v in pairs(extra) do a[k] = v end
  return a
end

M.CASES = {
  { name = "padded_completion", args = args_with { per_device_train_batch_size = 4 },
    sft = { max_length = 96 },
    rows = function(rows)
      local out = {}
      for i, r in ipairs(rows) do out[i] = { prompt = M.PROMPT:format(r.instruction, r.input), completion = r.output } end
      return out
    end },
  { name = "packed_text", args = args_with { per_device_train_batch_size = 2 },
    sft = { max_length = 64, packing = true },
    rows = function(rows)
      local out = {}
      for i, r in ipairs(rows) do out[i] = { text = M.PROMPT:format(r.instruction, r.input) .. r.output } end
      return out
    end },
}

--- An SFTTrainer for a case (model may be a stand-in when it does not train).
function M.trainer(case, tok_dir, model, output_dir)
  local transformers = require "transformers"
  local trl = require "trl"
  local tok = transformers.AutoTokenizer.from_pretrained(tok_dir)
  local cfg = { output_dir = output_dir or "/tmp/sft-fixture-unused", report_to = "none", save_strategy = "no",
    bf16 = false, use_cpu = true, train_shuffle = false, disable_tqdm = true }
  for k, v in pairs(case.args) do cfg[k] = v end
  for k, v in pairs(case.sft) do cfg[k] = v end
  if model == nil then cfg.gradient_checkpointing = false end  -- the stand-in is never run
  return trl.SFTTrainer { model = model or {}, processing_class = tok, train_dataset = case.rows(M.alpaca_rows()),
    args = trl.SFTConfig(cfg) }
end

local COLUMNS = { "input_ids", "labels", "attention_mask", "position_ids" }

--- The micro-batches the trainer's collator makes, in training order, as plain tables.
function M.batches(case, tok_dir)
  local trainer = M.trainer(case, tok_dir)
  local rows, bs = trainer.train_dataset, case.args.per_device_train_batch_size
  local out = {}
  for start = 1, #rows, bs do
    local chunk = {}
    for i = start, math.min(#rows, start + bs - 1) do chunk[#chunk + 1] = rows[i] end
    local b = trainer.data_collator(chunk)
    local t = {}
    for _, c in ipairs(COLUMNS) do t[c] = b:get(c) end
    out[#out + 1] = t
  end
  return out
end

return M
