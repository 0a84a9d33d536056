-- The FSDP seed's task (jobs/fsdp.lua) on 3 local CPU ranks with tiny sizes: the accelerate
-- plugin's config dict, the task's Trainer code unchanged (issue 15, acceptance 2).
local T = require "testlib"
local tcore = require "transformers.train_core"

local ROOT = os.getenv("SKYRUN_SOURCE_ROOT") or "."

T.test("fsdp.lua trains GPT-2 sharded over 3 local ranks through the accelerate plugin", function()
  local out = T.tmpdir()
  local stdout, stderr, code = T.skyrun({ ROOT .. "/jobs/fsdp.lua", "--max-samples", "48", "--output-dir", out .. "/fsdp" })
  T.eq(code, 0, stderr .. stdout)
  local n = 0
  for obj in stdout:gmatch("\n(%b{})") do
    local r = tcore.json_decode(obj)
    n = n + 1
    T.eq(r.fsdp_enabled, true, "trainer.is_fsdp_enabled on rank " .. tostring(r.rank))
    T.eq(r.world_size, 3)
    T.eq(r.pg_initialized, true)
    T.eq(r.env_vars.ACCELERATE_USE_FSDP, "true")
    T.eq(r.error, nil)
    T.ok(type(r.final_loss) == "number" and r.final_loss > 0 and r.final_loss < 10, "final loss " .. tostring(r.final_loss))
  end
  T.eq(n, 3, "one result per rank")
end)

T.run()
