-- Gang restarts (issue 15): the ranks of a torch-plugin pool are a gang. A rank that dies ends the
-- others, the next gang meets on a new group, and with max_restarts a broadcast training task runs
-- again there and resumes from its last checkpoint, ending as an uninterrupted run does.
local T = require "testlib"
local sky = require "sky"

local plugins = function() return { sky.plugins.torch { backend = "gloo", timeout = 30 } } end

T.test("a dead rank ends its gang: the broadcast fails naming it, and the next one meets on a new group", function()
  local pool = sky.ComputePool { nodes = 2, plugins = plugins() }
  local said = {}
  pool:with(function()
    local err = T.raises(function()
      pool:broadcast(sky.compute(function()
        if sky.info().node == 2 then os.exit(3) end
        return sky.dist.all_reduce(1)
      end)())
    end, "a rank died: rank 1 on node 2")
    T.contains(err, "no gang restarts (max_restarts = 0)")
    local per_rank = pool:broadcast(sky.compute(function()
      return { sky.dist.all_reduce(1), sky.info().restarts, os.getenv("TORCHELASTIC_RESTART_COUNT") }
    end)())
    T.eq(per_rank, { { 2, 1, "1" }, { 2, 1, "1" } })
  end)
  T.raises(function() sky.ComputePool { nodes = 2, max_restarts = -1 } end, "max_restarts must be 0 or more")
end)

-- The task: DDP on 2 ranks (batch 2 each), a checkpoint every 2 steps; with kill_at, rank 1 of
-- the first gang kills its own process at the end of that step. Each gang after the first resumes
-- from the last checkpoint.
local train = sky.compute(function(out, kill_at)
  local transformers = require "transformers"
  local tcore = require "transformers.train_core"
  local rows, state = {}, 11
  for i = 1, 32 do
    local ids = {}
    for j = 1, 3 + i % 5 do state = (state * 1103515245 + 12345) % 2147483648; ids[j] = 1 + state % 63 end
    rows[i] = { input_ids = ids, label = (ids[1] < 32) and 1 or 0 }
  end
  local info = sky.info()
  local ran = 0
  local killer = transformers.TrainerCallback { on_step_end = function(_, _, st)
    ran = ran + 1
    if kill_at and info.restarts == 0 and sky.dist.rank() == 1 and st.global_step == kill_at then
      os.execute("kill -9 " .. require("sky.pool.core").getpid())
    end
  end }
  local t = transformers.Trainer { model = require("tiny_model").tiny_classifier { seed = 3 }, train_dataset = rows,
    processing_class = { pad_token_id = 0 }, callbacks = { killer },
    args = transformers.TrainingArguments { output_dir = out, per_device_train_batch_size = 2, learning_rate = 0.05,
      num_train_epochs = 1, logging_steps = 1, train_shuffle = false, save_steps = 2, disable_tqdm = true } }
  local r = t:train { resume_from_checkpoint = info.restarts > 0 }
  local losses = {}
  for _, e in ipairs(t.state.log_history) do if e.loss then losses[e.step] = e.loss end end
  return tcore.json_encode { steps = r.global_step, losses = losses, restarts = info.restarts, ran = ran }
end)

T.test("a rank killed mid-training restarts the gang, which resumes from the checkpoint and ends as an uninterrupted run", function()
  local json = require "transformers.train_core"
  local function run(kill_at, max_restarts)
    local out = T.tmpdir()
    local pool = sky.ComputePool { nodes = 2, max_restarts = max_restarts, plugins = plugins() }
    local res
    pool:with(function() res = pool:broadcast(train(out, kill_at)) end)
    return json.json_decode(res[1]), json.json_decode(res[2]), out
  end
  local whole = run(nil, 0)
  T.eq(whole.steps, 8)
  local r0, r1, out = run(5, 2)
  T.eq(r0.restarts, 1, "the second gang finished the job")
  T.eq(r0.steps, 8)
  T.eq(r0.ran, 4, "the new gang resumed from checkpoint-4: it ran steps 5 to 8 only")
  T.eq(r1.losses, r0.losses, "both ranks of the new gang log the same losses")
  for step = 5, 8 do
    local a, b = r0.losses[step], whole.losses[step]
    T.ok(a and b, "step " .. step .. " logged")
    T.near(a, b, 1e-6 * math.abs(b), "loss of step " .. step .. " after the restart")
  end
  T.ok(io.open(out .. "/checkpoint-8/trainer_state.json"), "the restarted gang wrote the last checkpoint")
  -- restarts exhausted: the broadcast fails with how often it ran
  local err = T.raises(function() run(1, 0) end, "a rank died: rank 1 on node 2")
  T.contains(err, "max_restarts = 0")
end)

T.run()
