#!/usr/bin/env bash
# Run on the GPU machine from the repository root: builds build-gpu/ (tools/device/build-gpu.sh)
# and runs tools/bench train with it (GPT-2 124M and a Qwen3-0.6B-shaped model, ours vs HF
# Trainer, tokens/s and peak memory), then the main job on CUDA (bf16), printing its note.
#   usage: tools/device/bench-train.sh [steps] [gpt2|qwen3|all]
set -euo pipefail
cd "$(dirname "$0")/../.."
tools/device/build-gpu.sh > /tmp/bench-train-build.log 2>&1 || { tail -40 /tmp/bench-train-build.log; exit 1; }
# shellcheck disable=SC1091
source build-gpu/env.sh
export SKYRUN_BENCH_NO_BUILD=1 SKYRUN_BIN=$PWD/build-gpu/skyrun
tools/bench train "$@"
echo "--- jobs/finetune.lua on this machine (expects 'device: cuda (bf16 autocast)'):"
build-gpu/skyrun jobs/finetune.lua --output-dir /tmp/skyrun-finetune-gpu
