#!/usr/bin/env bash
# Run on the GPU machine from the repository root: makes every golden fixture that needs the
# Python reference stack and packs them into $OUT/fixtures.tar.gz (unpack into tests/fixtures/).
#   usage: tools/device/fixtures.sh [models] [trainer] [parquet]   (default: all)
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
work=$(mktemp -d)
what=${*:-models trainer parquet}
for w in $what; do
  case $w in
    models) python3 tools/fixtures/gen_models.py "$work/models" ;;
    trainer) python3 tools/fixtures/gen_trainer.py "$work/trainer" ;;
    parquet)
      if [[ -f tools/fixtures/gen_parquet.py && -d .shared-data/parquet ]]; then
        python3 tools/fixtures/gen_parquet.py .shared-data/parquet "$work/parquet"
      else
        echo "parquet: skipped (no tools/fixtures/gen_parquet.py or .shared-data/parquet)"
      fi ;;
  esac
done
tar -C "$work" -czf "${OUT:-/tmp}/fixtures.tar.gz" .
ls -la "${OUT:-/tmp}/fixtures.tar.gz"
