#!/usr/bin/env bash
# Run on the GPU machine from the repository root: builds build-gpu/ (tools/device/build-gpu.sh),
# then starts one skyrun per GPU with backend "nccl" (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* set as
# torchrun does, and one SKYRUN_DIST_SECRET) and checks all_reduce, broadcast, barrier and
# all_reduce_mean on every rank, and that mismatched collectives fail alike on every rank;
# then runs the Gloo process tests with the GPU build. Exits non-zero on any mismatch.
#   usage: tools/device/dist-nccl.sh [world_size]   (default: the number of GPUs)
set -euo pipefail
cd "$(dirname "$0")/../.."
tools/device/build-gpu.sh > /tmp/dist-nccl-build.log 2>&1 || { tail -40 /tmp/dist-nccl-build.log; exit 1; }
# shellcheck disable=SC1091
source build-gpu/env.sh
N=${1:-$(nvidia-smi -L | wc -l)}
build-gpu/skyrun --version
PORT=$(build-gpu/skyrun -e 'print(require("sky.dist").free_port())')
SKYRUN_DIST_SECRET=$(build-gpu/skyrun -e 'print(require("sky.dist").new_secret())')
export SKYRUN_DIST_SECRET
work=$(mktemp -d)
cat > "$work/rank.lua" <<'LUA'
local dist = require "sky.dist"
dist.init_process_group { backend = "nccl", timeout = 60 }
local r, n = dist.rank(), dist.world_size()
local function check(what, got, want)
  if got ~= want then error(string.format("rank %d: %s gave %s, expected %s", r, what, tostring(got), tostring(want))) end
end
assert(dist.backend() == "nccl")
check("all_reduce sum", dist.all_reduce(r), n * (n - 1) / 2)
check("all_reduce max", dist.all_reduce(r, "max"), n - 1)
check("all_reduce avg", dist.all_reduce(r, "avg"), (n - 1) / 2)
local a = dist.all_reduce({ r, 1, 2 ^ 40 })
check("array[2]", a[2], n)
check("array[3]", a[3], n * 2 ^ 40)
check("broadcast", dist.broadcast(r == n - 1 and "from the last rank" or nil, n - 1), "from the last rank")
dist.barrier()
local g = dist.all_reduce_mean({ { r, 2 * r }, { 1 } }, { bucket_bytes = 8 })
check("all_reduce_mean", g[1][2], n - 1)
check("all_reduce_mean", g[2][1], 1)
-- mismatched collectives: the same clear error on every rank (the agreement all-gathers on NCCL)
local ok, err = pcall(dist.all_reduce, r == 0 and 1 or { 1, 2 })
if ok or not tostring(err):find("the ranks are not in the same collective", 1, true) then
  error(string.format("rank %d: a mismatched all_reduce gave %s", r, tostring(err)))
end
ok, err = pcall(function() if r == 0 then dist.barrier() else dist.all_reduce(1, "max") end end)
if ok or not tostring(err):find("rank 0 (call #", 1, true) then
  error(string.format("rank %d: barrier against all_reduce gave %s", r, tostring(err)))
end
check("after a refusal", dist.all_reduce(1), n)
dist.destroy_process_group()
print(string.format("rank %d of %d: nccl ok", r, n))
LUA
pids=()
for ((r = 0; r < N; r++)); do
  RANK=$r LOCAL_RANK=$r WORLD_SIZE=$N MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT \
    build-gpu/skyrun "$work/rank.lua" > "$work/$r.log" 2>&1 &
  pids+=($!)
done
fail=0
for ((r = 0; r < N; r++)); do
  wait "${pids[$r]}" || fail=1
  cat "$work/$r.log"
done
meson test -C build-gpu test_dist_processes --print-errorlogs || fail=1
rm -rf "$work"
if [[ $fail -ne 0 ]]; then echo "dist-nccl: FAILED"; exit 1; fi
echo "dist-nccl: all $N ranks ok"
