#!/usr/bin/env bash
# Run on the GPU machine from the repository root (with .debs/ carried, from
# tools/device/fetch-debs.sh): builds build-gpu/ (tools/device/build-gpu.sh), then (issue 18)
# checks on CUDA what the CPU suite can only see as zeros: torch.cuda's memory counters follow an
# allocation and reset_peak_memory_stats, pipeline(..., {device = 0}) runs on cuda:0, and
# tests/train/test_hf_arguments.lua passes with the pip LibTorch.
#   usage: tools/device/runtime-gpu.sh      (prints every result; exits 1 if any failed)
set -uo pipefail
cd "$(dirname "$0")/../.."
tools/device/build-gpu.sh > /tmp/runtime-gpu-build.log 2>&1 || { tail -40 /tmp/runtime-gpu-build.log; exit 1; }
# shellcheck disable=SC1091
source build-gpu/env.sh
export SKYRUN_SOURCE_ROOT=$PWD SKYRUN_SHARED_DATA=$PWD/.shared-data LUA_PATH="$PWD/tests/lib/?.lua;;"
status=0
build-gpu/skyrun --version
echo "== torch.cuda memory counters"
build-gpu/skyrun -e '
local torch = require "torch"
assert(torch.cuda.is_available(), "no CUDA")
torch.cuda.reset_peak_memory_stats()
local before = torch.cuda.memory_allocated()
local t = torch.zeros({ 1024, 1024, 64 }, { device = "cuda" })  -- 256 MiB of float32
torch.cuda.synchronize()
local during, peak = torch.cuda.memory_allocated(0), torch.cuda.max_memory_allocated("cuda:0")
t = nil
collectgarbage() collectgarbage()
local after = torch.cuda.memory_allocated()
print(string.format("allocated %d -> %d -> %d bytes, peak %d, reserved %d (max %d)", before, during, after, peak,
  torch.cuda.memory_reserved(), torch.cuda.max_memory_reserved()))
assert(during - before >= 256 * 1024 * 1024, "the allocation shows in memory_allocated")
assert(peak >= during, "the peak holds it")
assert(after < during, "freed memory leaves memory_allocated")
torch.cuda.reset_peak_memory_stats()
assert(torch.cuda.max_memory_allocated() < peak, "reset_peak_memory_stats starts a new peak")
print("ok")' || status=1
echo "== pipeline(..., {device = 0})"
build-gpu/skyrun -e '
local transformers = require "transformers"
local model = transformers.AutoModelForSequenceClassification.from_pretrained("tests/fixtures/models/distilbert-cls")
local tok = setmetatable({}, { __call = function(_, text)
  local ids = {} for i = 1, #text do ids[i] = text:byte(i) % 200 + 5 end return { input_ids = ids } end })
local clf = transformers.pipeline("sentiment-analysis", { model = model, tokenizer = tok, device = 0 })
local out = clf("a fine movie")
print(model.device, out[1].label, out[1].score)
assert(tostring(model.device):find("cuda", 1, true), "the model moved to cuda:0")
print("ok")' || status=1
echo "== tests/train/test_hf_arguments.lua"
(cd tests && ../build-gpu/skyrun train/test_hf_arguments.lua) || status=1
exit $status
