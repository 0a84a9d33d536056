-- jobs/causal_lm.lua, run small as a user runs it: offline,
-- on the local pool, with the model and data made by transformers.demo_data (issue 8, acceptance 3).
local T = require "testlib"

local ROOT = os.getenv("SKYRUN_SOURCE_ROOT") or "."

T.test("causal_lm.lua lowers the eval loss and keeps the best checkpoint", function()
  local out = T.tmpdir()
  local stdout, stderr, code = T.skyrun({ ROOT .. "/jobs/causal_lm.lua", "--epochs", "2", "--max-samples", "300",
    "--output-dir", out })
  T.eq(code, 0, stderr .. stdout)
  local before = tonumber(stdout:match("eval loss before: ([%d.]+)"))
  local after = tonumber(stdout:match("eval loss after:  ([%d.]+)"))
  T.ok(before and after and after < before - 0.5, stdout)
  T.contains(stdout, "best checkpoint: " .. out .. "/checkpoint-")
end)

T.run()
