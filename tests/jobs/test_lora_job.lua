-- jobs/lora.lua, run small as a user runs it: offline, on the local pool, with the model and data
-- made by transformers.demo_data (issue 13, acceptance 3): the adapter trains, saves, loads again on
-- a fresh base with the same eval loss, and generates; --qlora does the same on a 4-bit base.
local T = require "testlib"

local ROOT = os.getenv("SKYRUN_SOURCE_ROOT") or "."

local function run(extra)
  local out = T.tmpdir()
  local args = { ROOT .. "/jobs/lora.lua", "--epochs", "2", "--max-samples", "200", "--output-dir", out }
  for _, a in ipairs(extra) do args[#args + 1] = a end
  local stdout, stderr, code = T.skyrun(args)
  T.eq(code, 0, stderr .. stdout)
  local before = tonumber(stdout:match("eval loss before: ([%d.]+)"))
  local after = tonumber(stdout:match("eval loss after:  ([%d.]+)"))
  local reloaded = tonumber(stdout:match("eval loss of the saved adapter on a fresh base: ([%d.]+)"))
  T.ok(before and after and after < before - 0.1, stdout)
  T.eq(reloaded, after, "the saved adapter on a fresh base")
  T.contains(stdout, "trainable params: 32768 of 113728")
  T.contains(stdout, "generated: the plot was")
  T.ok(io.open(out .. "/adapter/adapter_model.safetensors"), "the adapter file")
  T.ok(io.open(out .. "/adapter/adapter_config.json"), "its config")
end

T.test("lora.lua trains an adapter, saves it, reloads it on a fresh base and generates", function() run({}) end)
T.test("lora.lua --qlora does it on a 4-bit base with gradient checkpointing", function() run({ "--qlora" }) end)

T.run()
