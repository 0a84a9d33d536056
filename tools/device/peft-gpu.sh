#!/usr/bin/env bash
# Run on the GPU machine from the repository root (with .debs/ carried; see build-gpu.sh): issue 13's
# GPU side in one go, each part's log under $OUT (default /tmp/peft-gpu):
#   build.log      tools/device/build-gpu.sh
#   fixtures.log   tools/fixtures/gen_peft.py (PEFT's adapters, logits, training curves) -> fixtures.tar.gz
#                  (unpack into tests/fixtures/peft/ and commit)
#   parity.log     tests/peft/test_peft_parity.lua against those fixtures, test_lora.lua and
#                  test_quant4.lua with the pip LibTorch, and the CUDA checks (quant4 dequantization
#                  on the GPU equal to the CPU's; a 4-bit model's logits on CUDA)
#   roundtrip.log  adapters skyrun trained and saved, loaded by PEFT: identical logits (1e-5)
#   bench.log      tools/bench peft [steps] [which]
#   usage: tools/device/peft-gpu.sh [steps] [lora|qlora|gc|all]
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/peft-gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
tools/device/build-gpu.sh > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
# shellcheck disable=SC1091
source build-gpu/env.sh
export SKYRUN_SOURCE_ROOT=$PWD LUA_PATH="$PWD/tests/lib/?.lua;;"
export SKYRUN_BIN=$PWD/build-gpu/skyrun SKYRUN_BUILD_ROOT=$PWD/build-gpu SKYRUN_BENCH_NO_BUILD=1
work=$(mktemp -d)
status=0
python3 tools/fixtures/gen_peft.py "$work/peft" > "$out/fixtures.log" 2>&1 || status=1
tar -C "$work/peft" -czf "$out/fixtures.tar.gz" .
tail -15 "$out/fixtures.log"
{
  build-gpu/skyrun --version
  for t in test_peft_parity test_lora test_quant4; do
    echo "== CPU tests/peft/$t.lua"
    (cd tests && SKYRUN_PEFT_FIXTURES=$work/peft ../build-gpu/skyrun "peft/$t.lua") || status=1
  done
  echo "== CUDA: 4-bit dequantization and a 4-bit model"
  build-gpu/skyrun - <<'LUA' || status=1
local nn, peft, transformers, torch = require "skyrun.nn", require "skyrun.peft", require "transformers", require "torch"
local ref = nn.safetensors_load("tests/fixtures/nf4/quant.safetensors")
local worst = 0
for name, t in pairs(ref) do
  local case = name:match("^(.*)%.input$")
  if case then
    local q = {}
    for k, v in pairs(ref) do
      local rest = k:sub(#case + 2)
      if k:sub(1, #case + 1) == case .. "." and rest:find("^weight") then q[rest] = v:to("cuda") end
    end
    local d = (peft.dequant4(q, t.shape, "float32"):to("cpu") - ref[case .. ".dequantized"]):abs():max():item()
    worst = math.max(worst, d)
  end
end
print(string.format("CUDA dequantization vs the transcription: max |diff| %.3g", worst))
assert(worst == 0, "CUDA dequantization differs")
local r = nn.safetensors_load("tests/fixtures/models/llama/reference.safetensors")
local inputs = { input_ids = r["right.input_ids"], attention_mask = r["right.attention_mask"] }
local cpu = transformers.AutoModelForCausalLM.from_pretrained("tests/fixtures/nf4/llama-4bit")
local gpu = transformers.AutoModelForCausalLM.from_pretrained("tests/fixtures/nf4/llama-4bit", { device = "cuda" })
local d = (gpu(inputs).logits:to("cpu") - cpu(inputs).logits):abs():max():item()
print(string.format("4-bit Llama logits, CUDA vs CPU: max |diff| %.3g", d))
assert(d < 1e-3, "4-bit logits on CUDA differ")
LUA
} > "$out/parity.log" 2>&1
grep -E "^(FAIL|==)|max \|diff\||not ok" "$out/parity.log" | head -30
{
  build-gpu/skyrun tools/device/peft_export.lua "$work/peft" "$work/ours" && python3 tools/device/peft_roundtrip.py "$work/ours"
} > "$out/roundtrip.log" 2>&1 || status=1
tail -12 "$out/roundtrip.log"
tools/bench peft "$@" > "$out/bench.log" 2>&1 || status=1
cat "$out/bench.log"
echo "status $status"
exit $status
