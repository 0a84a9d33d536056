#!/usr/bin/env bash
# Run on a 2-GPU machine (kind nvidia-h100-x2 or nvidia-h200-x2) from the repository root with
# .debs/ carried: issue 15's GPU side in one go, each part's log under $OUT (default /tmp/fsdp-gpu):
#   build.log   tools/device/build-gpu.sh
#   ddp.log     NCCL DDP on 2 GPUs vs 1 GPU with the same global batch: GPT-2 124M shapes (random
#               init, seed 42), bf16, 20 steps; every step's loss within 2% (bf16 tolerance)
#   fsdp.log    GPT-2-XL shapes (1.5B, random init), bf16, batch 1 x 512 tokens, 6 steps: DDP vs
#               FULL_SHARD FSDP on 2 GPUs, each rank's torch.cuda.max_memory_allocated; checks
#               FSDP's peak <= 0.6 x DDP's (DDP may run out of memory: then its peak is the card)
#   job.log     jobs/fsdp.lua on the 2 GPUs (2 local ranks, NCCL, fp16 as the seed)
# Not here yet: `tools/bench dist` (ours vs torchrun + HF Trainer + accelerate FSDP) does not exist.
#   usage: tools/device/fsdp-gpu.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/fsdp-gpu}
mkdir -p "$out"
tools/device/build-gpu.sh > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
# shellcheck disable=SC1091
source build-gpu/env.sh
export SKYRUN_SOURCE_ROOT=$PWD LUA_PATH="$PWD/tests/lib/?.lua;;"
bin=$PWD/build-gpu/skyrun
work=$(mktemp -d)
status=0

# rank.lua MODE SHAPE STEPS BATCH SEQ: one Trainer run; prints RESULT {losses, peak}
cat > "$work/rank.lua" <<'LUA'
local mode, shape, steps, batch, seq = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5])
local world = tonumber(os.getenv("WORLD_SIZE") or "1")
if world > 1 then require("sky.dist").init_process_group { backend = "nccl", timeout = 600 } end
local transformers, torch = require "transformers", require "torch"
local tcore = require "transformers.train_core"
local cfg = { model_type = "gpt2", vocab_size = 50257, n_positions = 1024, n_embd = 768, n_layer = 12, n_head = 12,
  attn_pdrop = 0, embd_pdrop = 0, resid_pdrop = 0 }
if shape == "xl" then cfg.n_embd, cfg.n_layer, cfg.n_head = 1600, 48, 25 end
transformers.set_seed(42)
local model = transformers.AutoModelForCausalLM.from_config(cfg)
local rows, state = {}, 7
for i = 1, steps * batch * 2 do
  local ids = {}
  for j = 1, seq do state = (state * 1103515245 + 12345) % 2147483648; ids[j] = state % 50257 end
  rows[i] = { input_ids = ids, labels = ids }
end
local args = { output_dir = os.getenv("WORK") .. "/" .. mode .. world, per_device_train_batch_size = batch / world,
  max_steps = steps, logging_steps = 1, learning_rate = 1e-4, bf16 = true, save_strategy = "no", train_shuffle = false,
  disable_tqdm = true, report_to = "none" }
if mode == "fsdp" then args.fsdp, args.fsdp_config = "full_shard auto_wrap", { transformer_layer_cls_to_wrap = "GPT2Block" } end
local t = transformers.Trainer { model = model, train_dataset = rows, processing_class = { pad_token_id = 0 },
  args = transformers.TrainingArguments(args) }
torch.cuda.reset_peak_memory_stats()
local ok, err = pcall(function() t:train() end)
local losses = {}
for _, e in ipairs(t.state.log_history) do if e.loss then losses[#losses + 1] = e.loss end end
print("RESULT " .. tcore.json_encode({ ok = ok, err = ok and nil or tostring(err), losses = losses,
  peak = torch.cuda.max_memory_allocated(), fsdp = t.is_fsdp_enabled }))
LUA

# one GPU per process (CUDA_VISIBLE_DEVICES), so the memory counters of device 0 are its own
run_ranks() {  # N MODE SHAPE STEPS BATCH SEQ -> $work/<mode><N>.<rank>.log
  local n=$1; shift
  local port secret pids=()
  port=$("$bin" -e 'print(require("sky.dist").free_port())')
  secret=$("$bin" -e 'print(require("sky.dist").new_secret())')
  for ((r = 0; r < n; r++)); do
    WORK=$work RANK=$r LOCAL_RANK=0 WORLD_SIZE=$n MASTER_ADDR=127.0.0.1 MASTER_PORT=$port SKYRUN_DIST_SECRET=$secret \
      CUDA_VISIBLE_DEVICES=$r "$bin" "$work/rank.lua" "$@" > "$work/$1$n.$r.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
}

compare() {  # python-free comparison in skyrun: A B TOL what
  "$bin" -e "
local tcore = require 'transformers.train_core'
local function res(f) local h = assert(io.open(f)); local s = h:read('*a'); h:close()
  return tcore.json_decode(assert(s:match('RESULT (%b{})'), f .. ': no result\n' .. s)) end
local a, b = res('$1'), res('$2')
assert(a.ok and b.ok, tostring(a.err) .. ' / ' .. tostring(b.err))
assert(#a.losses == #b.losses, 'step counts differ')
for i = 1, #a.losses do
  local d = math.abs(a.losses[i] - b.losses[i]) / math.abs(b.losses[i])
  print(string.format('step %2d  %.5f  %.5f  rel %.2e', i, a.losses[i], b.losses[i], d))
  assert(d < $3, 'step ' .. i .. ' differs by ' .. d)
end
print('$4: ok')"
}

{
  echo "== NCCL DDP, 2 GPUs vs 1 GPU, GPT-2 124M shapes, bf16, global batch 8 x 512"
  run_ranks 1 ddp small 20 8 512
  run_ranks 2 ddp small 20 8 512
  cat "$work"/ddp2.*.log
  compare "$work/ddp2.0.log" "$work/ddp1.0.log" 0.02 "DDP 2 GPUs follows 1 GPU" || status=1
} > "$out/ddp.log" 2>&1

{
  echo "== GPT-2-XL shapes, bf16, batch 2 x 512 over 2 GPUs: DDP vs FSDP FULL_SHARD peaks"
  run_ranks 2 ddp xl 6 2 512
  run_ranks 2 fsdp xl 6 2 512
  cat "$work"/ddp2.*.log "$work"/fsdp2.*.log
  "$bin" -e "
local tcore = require 'transformers.train_core'
local function res(f) local h = assert(io.open(f)); local s = h:read('*a'); h:close()
  return tcore.json_decode(assert(s:match('RESULT (%b{})'), f)) end
local total = 0
local h = io.popen('nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i 0'); total = tonumber(h:read('*l')) * 2^20; h:close()
for r = 0, 1 do
  local d, f = res('$work/ddp2.' .. r .. '.log'), res('$work/fsdp2.' .. r .. '.log')
  assert(f.ok and f.fsdp, 'FSDP failed: ' .. tostring(f.err))
  local dp = d.ok and d.peak or total
  print(string.format('rank %d: DDP peak %.2f GB%s, FSDP peak %.2f GB, ratio %.3f', r, dp / 1e9,
    d.ok and '' or ' (out of memory: the card)', f.peak / 1e9, f.peak / dp))
  assert(f.peak <= 0.6 * dp, 'FSDP peak above 0.6 x DDP')
end
print('FSDP peak <= 0.6 x DDP: ok')" || status=1
} > "$out/fsdp.log" 2>&1

{
  echo "== jobs/fsdp.lua on 2 local GPU ranks (NCCL, fp16)"
  "$bin" jobs/fsdp.lua --nodes 2 --mixed-precision fp16 --max-samples 64 --max-length 128 --output-dir "$work/job" || status=1
} > "$out/job.log" 2>&1

tail -n 5 "$out"/ddp.log "$out"/fsdp.log "$out"/job.log
exit $status
