#!/usr/bin/env bash
# Run on the GPU machine from the repository root (python and transformers only, no build): HF
# Trainer's per-step losses on the batches our SFTTrainer built (tests/fixtures/sft/batches.json,
# made here by build/skyrun tools/fixtures/sft_batches.lua). Writes $OUT/history.json; copy it to
# tests/fixtures/sft/history.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
python3 tools/fixtures/gen_sft.py "${OUT:-/tmp/sft-fixtures}"
