#!/usr/bin/env bash
# Run on the GPU machine from the repository root (with .debs/ carried, and llm.c's source copied to
# $LLMC_SRC, default .carry/llmc, never committed): issue 17's GPU side in one go, logs under $OUT.
#   build.log     tools/device/build-gpu.sh (build-gpu/, CUDA)
#   checks.log    the graphed step's bf16 loss curve against eager over 50 steps on CUDA
#                 (tests/train/gpu_graph_parity.lua); CPU_CHECKS=1 adds the Trainer parity and trainer
#                 tests on the CPU with the pip LibTorch
#   llmc.log      llm.c's build (train_gpt2cu, sm_90, no cuDNN/MPI/NCCL)
#   bench.log     tools/bench train [steps] [which]: ours eager / graphed, HF eager / compile, llm.c
#   profile.txt   (PROFILE=1) ncu's per-kernel time summary of about one eager GPT-2 step of ours (top kernels)
#   usage: [BUDGET_S=540] tools/device/train-speed.sh [steps] [which]  (no bench run starts after
#          BUDGET_S seconds from the start)
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/train-speed}
mkdir -p "$out"
t0=$SECONDS
deadline=$(( $(date +%s) + ${BUDGET_S:-540} ))  # the bench stops starting runs after this
src=${LLMC_SRC:-.carry/llmc}
if [[ -d $src ]]; then  # llm.c builds beside ours
  rm -rf /tmp/llmc && cp -r "$src" /tmp/llmc
  (cd /tmp/llmc && make train_gpt2cu NO_MULTI_GPU=1 NO_USE_MPI=1 USE_CUDNN=0 GPU_COMPUTE_CAPABILITY=90 -j8 > "$out/llmc.log" 2>&1) &
  llmc_pid=$!
fi
tools/device/build-gpu.sh > "$out/build.log" 2>&1 || { tail -60 "$out/build.log"; exit 1; }
grep -a "CUDA kernels" "$out/build.log" || true
echo "build: $((SECONDS - t0)) s"
# shellcheck disable=SC1091
source build-gpu/env.sh
export SKYRUN_SOURCE_ROOT=$PWD LUA_PATH="$PWD/tests/lib/?.lua;;"
export SKYRUN_BIN=$PWD/build-gpu/skyrun SKYRUN_BUILD_ROOT=$PWD/build-gpu SKYRUN_BENCH_NO_BUILD=1
status=0
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  build-gpu/skyrun --version
  if [[ ${CPU_CHECKS:-0} == 1 ]]; then
    for t in train/test_trainer_parity.lua train/test_trainer.lua; do
      echo "== CPU $t"; (cd tests && timeout 300 ../build-gpu/skyrun "$t") || status=1
    done
  fi
  echo "== CUDA graphs vs eager, bf16, 50 steps"
  timeout 300 build-gpu/skyrun tests/train/gpu_graph_parity.lua || status=1
} > "$out/checks.log" 2>&1
grep -E "^(not ok|FAIL)|gpu_graph_parity|passed|failed|torch_compile" "$out/checks.log" | head -20
echo "checks status $status ($((SECONDS - t0)) s)"
if [[ -n ${llmc_pid:-} ]]; then
  wait "$llmc_pid" && [[ -x /tmp/llmc/train_gpt2cu ]] && export LLMC_DIR=/tmp/llmc || { echo "llm.c build failed:"; tail -5 "$out/llmc.log"; }
fi
BENCH_DEADLINE=$deadline BENCH_LOG_DIR=$out tools/bench train "$@" > "$out/bench.log" 2>&1 || status=1
cat "$out/bench.log"
echo "bench done ($((SECONDS - t0)) s)"
if command -v ncu >/dev/null && [[ ${PROFILE:-0} == 1 ]]; then
  # ours, eager, GPT-2 124M: skip the init and the first steps' kernels, then about one step's worth
  BENCH_RUNS=ours BENCH_LLMC=0 BENCH_WARM=1 timeout 240 ncu --metrics gpu__time_duration.sum --print-summary per-kernel --csv \
    --launch-skip "${PROFILE_SKIP:-1500}" --launch-count "${PROFILE_COUNT:-900}" tools/bench.d/train 2 gpt2 > "$out/profile.csv" 2>&1 || true
  python3 - "$out/profile.csv" > "$out/profile.txt" <<'PY' || true
import csv, sys, collections
rows = list(csv.reader(l for l in open(sys.argv[1]) if l.startswith('"')))
if not rows: print("no ncu rows"); sys.exit()
h = rows[0]; tot = collections.Counter(); cnt = collections.Counter()
for r in rows[1:]:
    d = dict(zip(h, r))
    if d.get("Metric Name") != "gpu__time_duration.sum": continue
    name = d.get("Kernel Name", "?")[:90]
    try: v = float(d["Average"].replace(",", "")) * int(d.get("Invocations", "1"))
    except Exception: continue
    unit = d.get("Metric Unit", "ns"); v *= {"ns": 1e-3, "usecond": 1, "us": 1, "msecond": 1e3, "ms": 1e3}.get(unit, 1e-3)
    tot[name] += v; cnt[name] += int(d.get("Invocations", "1"))
s = sum(tot.values())
print(f"total {s/1e3:.2f} ms over {sum(cnt.values())} kernels")
for n, v in tot.most_common(30): print(f"{v/1e3:8.3f} ms {100*v/s:5.1f}% x{cnt[n]:<5d} {n}")
PY
  head -40 "$out/profile.txt"
fi
exit $status
