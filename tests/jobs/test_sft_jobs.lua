-- The playbook's SFT scripts as jobs (issue 14, acceptance 4), run small as a user runs them on
-- the local pool: on the 999 real Alpaca rows of ../shared/data with a tiny Llama made by the
-- job, and fully offline (rows made by the job, packed), each saving a model and tokenizer that
-- load again and writing TensorBoard event files.
local T = require "testlib"
local tcore = require "transformers.train_core"

local ROOT = os.getenv("SKYRUN_SOURCE_ROOT") or "."
local ALPACA = assert(os.getenv("SKYRUN_SHARED_DATA"), "SKYRUN_SHARED_DATA not set") .. "/datasets/alpaca/alpaca_en_demo.json"

local function losses(stdout)
  local out = {}
  for l in stdout:gmatch("%[step %d+/%d+%] loss ([%d.]+)") do out[#out + 1] = tonumber(l) end
  return out
end

local function check_saved(dir)
  for _, f in ipairs { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json" } do
    T.ok(io.open(dir .. "/" .. f), dir .. "/" .. f)
  end
  -- the saved folder loads and the tokenizer still ends texts as the playbook's rows end
  local script = string.format([[
local transformers = require "transformers"
local tok = transformers.AutoTokenizer.from_pretrained(%q)
local model = transformers.AutoModelForCausalLM.from_pretrained(%q)
local ids = tok("### Instruction: give the opposite of the word." .. tok.eos_token).input_ids
print("eos", ids[#ids] == tok.eos_token_id, "loss", model { input_ids = { ids }, labels = { ids } }.loss:item())]], dir, dir)
  local stdout, stderr, code = T.skyrun({ "-e", script })
  T.eq(code, 0, stderr)
  T.contains(stdout, "eos\ttrue")
end

T.test("sft_full.lua trains a tiny Llama on real Alpaca rows, logs to TensorBoard and saves model and tokenizer", function()
  local out = T.tmpdir()
  local stdout, stderr, code = T.skyrun({ ROOT .. "/jobs/sft_full.lua", "--dataset", ALPACA, "--dataset-size", "64",
    "--batch-size", "8", "--seq-length", "128", "--num-epochs", "2", "--learning-rate", "3e-3", "--logging-steps", "1",
    "--output-dir", out, "--log-dir", out .. "/tb" })
  T.eq(code, 0, stderr .. stdout)
  T.contains(stdout, "TRAINING COMPLETED")
  T.contains(stdout, "Train loss: ")
  T.contains(stdout, "(16 steps over 64 rows)")
  local l = losses(stdout)
  T.eq(#l, 16)
  T.ok(l[#l] < l[1] - 0.5, string.format("loss %.3f -> %.3f", l[1], l[#l]))
  check_saved(out .. "/final")
  local events = T.sh("ls " .. T.shell_quote(out .. "/tb"))
  T.contains(events, "events.out.tfevents.")
end)

T.test("sft_full.lua offline with --packing: fewer, fuller rows; bad flags and datasets are named", function()
  local out = T.tmpdir()
  local stdout, stderr, code = T.skyrun({ ROOT .. "/jobs/sft_full.lua", "--dataset-size", "48", "--batch-size", "4",
    "--seq-length", "96", "--packing", "--learning-rate", "3e-3", "--output-dir", out })
  T.eq(code, 0, stderr .. stdout)
  local rows = tonumber(stdout:match("steps over (%d+) rows"))
  T.ok(rows and rows < 48, "packed rows: " .. tostring(rows))
  check_saved(out .. "/final")
  local _, err, c = T.skyrun({ ROOT .. "/jobs/sft_full.lua", "--seq-lenght", "64" })
  T.eq(c, 2)
  T.contains(err, "unknown argument '--seq-lenght'")
  local bad = T.tmpdir() .. "/not_alpaca.json"
  T.write_file(bad, '[{"question": "q", "answer": "a"}]')
  local so, se, c2 = T.skyrun({ ROOT .. "/jobs/sft_full.lua", "--dataset", bad, "--output-dir", T.tmpdir() })
  T.ok(c2 ~= 0, so)
  T.contains(se .. so, "is not in Alpaca format (instruction, input, output); its columns are: question, answer")
end)

-- The LoRA and QLoRA scripts save PEFT's adapter folder (no full model): it loads on the base the
-- job made (quantized again for QLoRA) and runs.
local function check_adapter(out, qlora)
  local final = out .. "/final"
  for _, f in ipairs { "adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json" } do
    T.ok(io.open(final .. "/" .. f), final .. "/" .. f)
  end
  T.ok(not io.open(final .. "/model.safetensors"), "no full model beside the adapter")
  local cfg = tcore.json_decode(T.read_file(final .. "/adapter_config.json"))
  T.eq(cfg.peft_type, "LORA")
  T.eq(cfg.r, 4)
  T.eq(cfg.lora_alpha, 16)
  local targets = cfg.target_modules
  table.sort(targets)
  T.eq(targets, { "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj" })
  local script = string.format([[
local transformers = require "transformers"
local peft = require "peft"
local base = transformers.AutoModelForCausalLM.from_pretrained(%q%s)
local model = peft.PeftModel.from_pretrained(base, %q)
local tok = transformers.AutoTokenizer.from_pretrained(%q)
local ids = tok("### Instruction: give the opposite of the word." .. tok.eos_token).input_ids
print("loss", model { input_ids = { ids }, labels = { ids } }.loss:item())]], out .. "/base",
    qlora and ', { quantization_config = transformers.BitsAndBytesConfig { load_in_4bit = true, bnb_4bit_use_double_quant = true } }' or "",
    final, final)
  local stdout, stderr, code = T.skyrun({ "-e", script })
  T.eq(code, 0, stderr)
  T.ok(tonumber(stdout:match("loss\t([%d.]+)")), stdout)
end

for _, method in ipairs { "lora", "qlora" } do
  T.test("sft_" .. method .. ".lua trains an adapter offline, logs to TensorBoard and saves PEFT's folder and the tokenizer", function()
    local out = T.tmpdir()
    local stdout, stderr, code = T.skyrun({ ROOT .. "/jobs/sft_" .. method .. ".lua", "--dataset-size", "48",
      "--batch-size", "8", "--seq-length", "96", "--num-epochs", "2", "--learning-rate", "2e-2", "--lora-rank", "4",
      "--logging-steps", "1", "--gradient-checkpointing", "--output-dir", out, "--log-dir", out .. "/tb" })
    T.eq(code, 0, stderr .. stdout)
    T.contains(stdout, "TRAINING COMPLETED")
    local l = losses(stdout)
    T.eq(#l, 12)
    T.ok(l[#l] < l[1], string.format("loss %.3f -> %.3f", l[1], l[#l]))
    T.contains(T.sh("ls " .. T.shell_quote(out .. "/tb")), "events.out.tfevents.")
    check_adapter(out, method == "qlora")
  end)
end

T.test("sft_lora_fsdp.lua trains the adapter on 2 FSDP ranks offline and saves PEFT's folder once", function()
  local out = T.tmpdir()
  local stdout, stderr, code = T.skyrun({ ROOT .. "/jobs/sft_lora_fsdp.lua", "--dataset-size", "32", "--batch-size", "4",
    "--seq-length", "64", "--learning-rate", "2e-2", "--lora-rank", "4", "--logging-steps", "1", "--output-dir", out })
  T.eq(code, 0, stderr .. stdout)
  T.contains(stdout, "FSDP: on over 2 ranks")
  T.contains(stdout, "(4 steps over 32 rows)")  -- 32 rows, batch 4 on each of 2 ranks
  T.eq(#losses(stdout), 4)
  check_adapter(out, false)
end)

T.run()
