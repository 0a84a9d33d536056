#!/usr/bin/env bash
# Run on the GPU machine from the repository root (python only, nothing built): makes the PEFT golden
# fixtures with the reference stack there (peft, transformers) and packs them into
# $OUT/peft-fixtures.tar.gz (unpack into tests/fixtures/peft/); the log is $OUT/peft-fixtures.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
work=$(mktemp -d)
python3 tools/fixtures/gen_peft.py "$work" 2>&1 | tee "${OUT:-/tmp}/peft-fixtures.log"
status=${PIPESTATUS[0]}
tar -C "$work" -czf "${OUT:-/tmp}/peft-fixtures.tar.gz" .
ls -la "${OUT:-/tmp}/peft-fixtures.tar.gz"
exit "$status"
