#!/usr/bin/env bash
# Run on the GPU machine from the repository root (with .debs/ carried, from
# tools/device/fetch-debs.sh): builds build-gpu/ (tools/device/build-gpu.sh), then (issue 6) the model parity tests on CUDA (fp32 within 1e-4, bf16 within 5e-2 of
# HF's fixtures), then save with skyrun → load with HF transformers → same logits, on CPU and CUDA.
#   usage: tools/device/nn-gpu.sh      (prints every result; exits 1 if any failed)
set -uo pipefail
cd "$(dirname "$0")/../.."
tools/device/build-gpu.sh > /tmp/nn-gpu-build.log 2>&1 || { tail -40 /tmp/nn-gpu-build.log; exit 1; }
# shellcheck disable=SC1091
source build-gpu/env.sh
export SKYRUN_SOURCE_ROOT=$PWD SKYRUN_SHARED_DATA=$PWD/.shared-data LUA_PATH="$PWD/tests/lib/?.lua;;"
export PYTHONUNBUFFERED=1
status=0
build-gpu/skyrun --version
echo "== parity on CUDA (tests/nn/test_parity_*.lua with SKYRUN_TEST_DEVICE=cuda)"
for t in tests/nn/test_parity_*.lua; do
  (cd tests && SKYRUN_TEST_DEVICE=cuda ../build-gpu/skyrun "nn/$(basename "$t")") || status=1
done
echo "== parity on CPU with the pip LibTorch"
for t in tests/nn/test_parity_*.lua; do
  (cd tests && ../build-gpu/skyrun "nn/$(basename "$t")") || status=1
done
echo "== save with skyrun, load with HF transformers (CPU, then CUDA)"
python3 tools/nn_hf_roundtrip.py --skyrun build-gpu/skyrun --device cpu || status=1
python3 tools/nn_hf_roundtrip.py --skyrun build-gpu/skyrun --device cuda || status=1
exit $status
