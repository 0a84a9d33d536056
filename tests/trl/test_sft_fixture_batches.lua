-- The batches SFTTrainer builds from 40 real Alpaca rows are the ones HF Trainer was fed for
-- tests/fixtures/sft/history.json (tools/fixtures/gen_sft.py): padded prompt-completion batches
-- with attention_mask, and BFD-packed padding-free batches with position_ids.
local T = require "testlib"
local tcore = require "transformers.train_core"
local sft_fixture = dofile(os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/trl/sft_fixture.lua")

local FIX = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/fixtures/sft"

T.test("the fixture's tokenizer and batches are what SFTTrainer builds now", function()
  local tok_json = sft_fixture.tokenizer_files()
  T.eq(tcore.json_decode(tok_json), tcore.json_decode(T.read_file(FIX .. "/tokenizer.json")))
  local fixture = tcore.json_decode(T.read_file(FIX .. "/batches.json"))
  for _, case in ipairs(sft_fixture.CASES) do
    local batches = sft_fixture.batches(case, FIX)
    T.eq(#batches, #fixture[case.name].batches, case.name .. ": batches")
    for i, b in ipairs(batches) do
      for _, col in ipairs { "input_ids", "labels", "attention_mask", "position_ids" } do
        T.eq(b[col], fixture[case.name].batches[i][col], string.format("%s batch %d %s", case.name, i, col))
      end
    end
  end
end)

T.run()
