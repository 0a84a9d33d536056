#!/usr/bin/env bash
# Run on the GPU machine from the repository root, with ../shared/data carried as .shared-data
# (datasets/alpaca and tokenizers/llama3-style-split-regex.json): builds build-gpu/
# (tools/device/build-gpu.sh), checks on CUDA that a packed row's loss equals its sequences' run one
# by one (bf16) and runs tools/bench sft (ours vs HF Trainer, padded and packed tokens/s and peak
# memory on a Llama-3.2-3B-shaped model).
#   usage: tools/device/bench-sft.sh [steps]
set -euo pipefail
cd "$(dirname "$0")/../.."
tools/device/build-gpu.sh > /tmp/bench-sft-build.log 2>&1 || { tail -40 /tmp/bench-sft-build.log; exit 1; }
# shellcheck disable=SC1091
source build-gpu/env.sh
export SKYRUN_BENCH_NO_BUILD=1 SKYRUN_BIN=$PWD/build-gpu/skyrun SKYRUN_SHARED_DATA=${SKYRUN_SHARED_DATA:-$PWD/.shared-data}
echo "--- packed attention on CUDA (sdpa):"
SKYRUN_SOURCE_ROOT=$PWD LUA_PATH="$PWD/tests/lib/?.lua;;" SKYRUN_TRL_DEVICE=cuda build-gpu/skyrun tests/trl/test_sft_packing.lua
tools/bench sft "$@"
