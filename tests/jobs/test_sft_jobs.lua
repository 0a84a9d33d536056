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

T.run()
