-- The Trainer under a process group (sky.dist, Gloo on loopback): two ranks with batch 2 each
-- follow the one-process run with batch 4 (rank r takes micro-batches r, r+2, ...; gradients
-- averaged, num_items_in_batch summed over ranks, each rank's loss times the world size).
local T = require "testlib"
local R = require "dist_ranks"
local tcore = require "transformers.train_core"

local BODY = [[
local transformers = require "transformers"
local train = require "skyrun.train"
local tcore = require "transformers.train_core"
local rows = {}
local state = 11
for i = 1, 32 do
  local ids = {}
  for j = 1, 3 + i % 5 do state = (state * 1103515245 + 12345) % 2147483648; ids[j] = 1 + state % 63 end
  rows[i] = { input_ids = ids, label = (ids[1] < 32) and 1 or 0 }
end
local world = tonumber(os.getenv("WORLD_SIZE") or "1")
local t = transformers.Trainer { model = require("tiny_model").tiny_classifier { seed = 3 }, train_dataset = rows, processing_class = { pad_token_id = 0 },
  args = transformers.TrainingArguments { output_dir = os.getenv("OUT"), per_device_train_batch_size = 4 / world,
    gradient_accumulation_steps = 2, learning_rate = 0.05, num_train_epochs = 1, logging_steps = 1, train_shuffle = false,
    save_steps = 2, disable_tqdm = true } }
local out = t:train()
local losses = {}
for _, e in ipairs(t.state.log_history) do if e.loss then losses[#losses + 1] = e.loss end end
print("RESULT " .. tcore.json_encode({ losses = losses, steps = out.global_step }))
]]

T.test("two DDP ranks with batch 2 match one process with batch 4", function()
  local single_dir, ddp_dir = T.tmpdir(), T.tmpdir()
  local f = T.tmpdir() .. "/single.lua"
  T.write_file(f, BODY)
  local out, err, code = T.sh("OUT=" .. T.shell_quote(single_dir) .. " " .. T.shell_quote(T.skyrun_bin) .. " " .. T.shell_quote(f))
  T.eq(code, 0, err)
  local single = tcore.json_decode(out:match("RESULT (%b{})"))
  local body = BODY:gsub('os%.getenv%("OUT"%)', function() return string.format("%q", ddp_dir) end)
  local results = R.run(2, body)
  local ranks = {}
  for r = 1, 2 do
    T.eq(results[r].code, 0, results[r].err)
    ranks[r] = tcore.json_decode(results[r].out:match("RESULT (%b{})"))
  end
  T.eq(single.steps, 4)
  T.eq(ranks[1].steps, 4)
  T.eq(ranks[1].losses, ranks[2].losses, "both ranks log the same (averaged) losses")
  for i = 1, 4 do
    T.near(ranks[1].losses[i], single.losses[i], 1e-5 * math.abs(single.losses[i]), "loss of step " .. i)
  end
  T.ok(io.open(ddp_dir .. "/checkpoint-4/trainer_state.json"), "rank 0 wrote the checkpoint")
end)

T.run()
