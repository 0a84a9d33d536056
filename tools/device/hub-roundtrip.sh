#!/usr/bin/env bash
# Run on the GPU machine from the repository root (with .debs/ carried, from
# tools/device/fetch-debs.sh): builds build-gpu/ (tools/device/build-gpu.sh), then (issue 18)
# checks pushes against Python's huggingface_hub through the Hub stand-in, both ways:
# a folder skyrun pushes (regular, LFS and multipart LFS files) downloads byte-identical with
# huggingface_hub, and a folder huggingface_hub pushes downloads byte-identical with skyrun.
#   usage: tools/device/hub-roundtrip.sh     (log in $OUT/hub-roundtrip.log; exits 1 if any failed)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp}
tools/device/build-gpu.sh > "$OUT/hub-roundtrip-build.log" 2>&1 || { tail -40 "$OUT/hub-roundtrip-build.log"; exit 1; }
# shellcheck disable=SC1091
source build-gpu/env.sh
python3 tools/hub_push_interop.py --skyrun build-gpu/skyrun 2>&1 | tee "$OUT/hub-roundtrip.log"
exit "${PIPESTATUS[0]}"
