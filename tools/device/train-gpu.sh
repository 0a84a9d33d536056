#!/usr/bin/env bash
# Run on the GPU machine from the repository root (with .debs/ and .shared-data/ carried): the
# whole check of issue 8's GPU side in one go, each part's log under $OUT (default /tmp/train-gpu):
#   build.log    tools/device/build-gpu.sh
#   parity.log   model parity tests on CUDA (fp32, bf16) and on the CPU with the pip LibTorch
#                (which takes the SDPA path), then the Trainer parity and trainer tests there,
#                then save with skyrun / load with HF on CUDA (tools/nn_hf_roundtrip.py)
#   bench.log    tools/bench train [steps] [gpt2|qwen3|all] (ours vs HF Trainer)
#   finetune.log jobs/finetune.lua on CUDA (bf16); finetune-eager.log with --attn-implementation eager
#   usage: tools/device/train-gpu.sh [steps] [which]
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/train-gpu}
mkdir -p "$out"
tools/device/build-gpu.sh > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
# shellcheck disable=SC1091
source build-gpu/env.sh
export SKYRUN_SOURCE_ROOT=$PWD SKYRUN_SHARED_DATA=$PWD/.shared-data LUA_PATH="$PWD/tests/lib/?.lua;;"
export SKYRUN_BIN=$PWD/build-gpu/skyrun SKYRUN_BUILD_ROOT=$PWD/build-gpu SKYRUN_BENCH_NO_BUILD=1
status=0
{
  build-gpu/skyrun --version
  for t in tests/nn/test_parity_*.lua; do
    echo "== CUDA $t"; (cd tests && SKYRUN_TEST_DEVICE=cuda ../build-gpu/skyrun "nn/$(basename "$t")") || status=1
    echo "== CPU $t"; (cd tests && ../build-gpu/skyrun "nn/$(basename "$t")") || status=1
  done
  for t in tests/train/test_trainer_parity.lua tests/train/test_trainer.lua tests/nn/test_generate.lua tests/nn/test_models.lua; do
    echo "== CPU $t"; (cd tests && ../build-gpu/skyrun "${t#tests/}") || status=1
  done
  echo "== save with skyrun, load with HF transformers (CUDA)"
  python3 tools/nn_hf_roundtrip.py --skyrun build-gpu/skyrun --device cuda || status=1
} > "$out/parity.log" 2>&1
grep -E "^(==|ok|FAIL|not ok)|fail" "$out/parity.log" | grep -vE "^ok|^==" | head -20
echo "parity status $status"
tools/bench train "$@" > "$out/bench.log" 2>&1 || status=1
cat "$out/bench.log"
build-gpu/skyrun jobs/finetune.lua --output-dir /tmp/skyrun-finetune-gpu > "$out/finetune.log" 2>&1 || status=1
tail -4 "$out/finetune.log"
echo "--- the same with --attn-implementation eager:"
build-gpu/skyrun jobs/finetune.lua --attn-implementation eager --output-dir /tmp/skyrun-finetune-gpu-eager \
  > "$out/finetune-eager.log" 2>&1 || status=1
tail -3 "$out/finetune-eager.log"
exit $status
