-- The main job (jobs/finetune.lua), run small as a user runs them: offline,
-- on the local pool, with the model and data made by transformers.demo_data (issue 8, acceptance 3).
local T = require "testlib"
local tcore = require "transformers.train_core"

local ROOT = os.getenv("SKYRUN_SOURCE_ROOT") or "."

T.test("finetune.lua improves eval accuracy, saves the model, and the reloaded model evaluates the same", function()
  local out = T.tmpdir()
  local stdout, stderr, code = T.skyrun({ ROOT .. "/jobs/finetune.lua", "--epochs", "3", "--max-samples", "600",
    "--batch-size", "16", "--output-dir", out })
  T.eq(code, 0, stderr .. stdout)
  T.contains(stdout, "device: cpu (fp32)")
  local before = tonumber(stdout:match("eval accuracy before: ([%d.]+)"))
  local after = tonumber(stdout:match("eval accuracy after:  ([%d.]+)"))
  local reloaded = tonumber(stdout:match("reloaded: eval accuracy ([%d.]+)"))
  T.ok(before and after and reloaded, stdout)
  T.ok(after > before + 0.15, string.format("accuracy %.4f -> %.4f", before, after))
  T.eq(reloaded, after, "the saved folder evaluates as the trained model")
  local loss_after = tonumber(stdout:match("eval accuracy after:  [%d.]+ %(loss ([%d.]+)%)"))
  local loss_reloaded = tonumber(stdout:match("reloaded: eval accuracy [%d.]+ %(loss ([%d.]+)%)"))
  T.eq(loss_reloaded, loss_after)
  for _, f in ipairs { "config.json", "model.safetensors", "tokenizer.json" } do
    T.ok(io.open(out .. "/final/" .. f), "final/" .. f)
  end
  local cfg = tcore.json_decode(T.read_file(out .. "/final/config.json"))
  T.eq(cfg.model_type, "distilbert")
end)

T.test("finetune.lua names an unknown flag", function()
  local _, stderr, code = T.skyrun({ ROOT .. "/jobs/finetune.lua", "--epoch", "1" })
  T.eq(code, 2)
  T.contains(stderr, "unknown argument '--epoch'")
  local out = T.tmpdir()
  local stdout
  stdout, stderr, code = T.skyrun({ ROOT .. "/jobs/finetune.lua", "--attn-implementation", "flash_attention_2",
    "--output-dir", out })
  T.ok(code ~= 0, stdout)
  T.contains(stderr .. stdout, "not supported yet: attn_implementation 'flash_attention_2'")
end)

T.run()
