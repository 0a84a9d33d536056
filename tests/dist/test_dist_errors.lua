-- skyrun.dist's failures, as users meet them: a rank that never comes, no rank 0, ranks passing
-- different shapes, missing settings and bad arguments; and sky.dist's lazy loading.
local T = require "testlib"
local R = require "dist_ranks"
local dist = require "skyrun.dist"
local run_ranks, check_ok = R.run, R.check_ok

T.test("a rank that never joins: every rank that came names it, the address and the timeout", function()
  -- 4 s: room for rank 1 to start and load LibTorch on a loaded machine before rank 0 gives up
  local results, port = run_ranks(3, "print('unreachable')", { ranks = { 0, 1 }, timeout = 4 })
  for r = 0, 1 do
    local res = results[r + 1]
    T.eq(res.code, 1, "rank " .. r .. " exit code")
    T.contains(res.err, "rendezvous at 127.0.0.1:" .. port)
    T.contains(res.err, "rank 2 of world size 3 did not join")
    T.not_contains(res.out, "unreachable")
  end
  -- rank 0 hosts the store: it waits the full timeout; rank 1 may see the store close first.
  T.contains(results[1].err, "timed out after 4 s: rank 2 of world size 3 did not join")
end)

T.test("without rank 0 a rank says it cannot reach the store, naming MASTER_ADDR:MASTER_PORT", function()
  local results, port = run_ranks(2, "print('unreachable')", { ranks = { 1 }, timeout = 1 })
  T.eq(results[2].code, 1)
  T.contains(results[2].err, "rank 1 of 2 cannot reach the rendezvous store at 127.0.0.1:" .. port ..
    " (MASTER_ADDR:MASTER_PORT) within 1 s: is rank 0 running there and the port reachable?")
end)

T.test("ranks passing different shapes to all_reduce fail alike instead of hanging", function()
  local results = run_ranks(2, [[
    local ok, err = pcall(dist.all_reduce, dist.rank() == 0 and 1 or { 1, 2 })
    print(ok, err)
    print(dist.all_reduce(1))  -- the group still works after the refusal
  ]])
  for r = 0, 1 do
    check_ok(results[r + 1], r)
    T.contains(results[r + 1].out, "false\tdist.all_reduce: ranks passed different shapes: a number on some, an array of 2 numbers on others")
    T.contains(results[r + 1].out, "\n2\n")
  end
end)

T.test("missing settings, bad values and calls before init are clear errors", function()
  T.raises(function() dist.rank() end, "no process group in this process: call init_process_group first")
  T.raises(function() dist.init_process_group { rank = 0, world_size = 1, master_addr = "127.0.0.1" } end,
    "no master port: pass it or set MASTER_PORT")
  T.raises(function() dist.init_process_group { rank = 2, world_size = 2, master_addr = "127.0.0.1", master_port = 1 } end,
    "rank 2 is not below world size 2")
  T.raises(function() dist.init_process_group { backend = "mpi", rank = 0, world_size = 1, master_addr = "127.0.0.1", master_port = 1 } end,
    "unknown backend 'mpi' (expected 'gloo' or 'nccl')")
  T.raises(function() dist.init_process_group { world_sise = 2 } end, "did you mean 'world_size'?")
end)

T.test("a one-rank group works in-process and refuses bad arguments", function()
  dist.init_process_group { backend = "gloo", rank = 0, world_size = 1, master_addr = "127.0.0.1",
    master_port = require("sky.dist").free_port(), timeout = 5 }
  T.eq(dist.all_reduce(7), 7)
  T.eq(dist.all_reduce({ 1, 2 }, "avg"), { 1, 2 })
  T.raises(function() dist.all_reduce(1, "mean") end, "unknown reduce op 'mean' (expected sum, max, min, avg or product)")
  T.raises(function() dist.all_reduce({ 1, "x" }) end, "element 2 is string")
  T.raises(function() dist.all_reduce({ a = 1 }) end, "keys other than 1..n")
  T.raises(function() dist.broadcast(1, 3) end, "source rank 3 is not in 0..0")
  T.raises(function() dist.init_process_group { rank = 0, world_size = 1 } end, "a process group exists already")
  dist.destroy_process_group()
  T.eq(dist.is_initialized(), false)
end)

T.test("sky.dist reaches the same group and answers is_initialized without loading LibTorch first", function()
  local sky = require "sky"
  T.eq(sky.dist.is_initialized(), false)
  T.raises(function() sky.dist.barrier() end, "add the torch plugin")
  sky.dist.init_process_group { backend = "gloo", rank = 0, world_size = 1, master_addr = "127.0.0.1",
    master_port = require("sky.dist").free_port(), timeout = 5 }
  T.eq(dist.is_initialized(), true)
  T.eq(sky.dist.all_reduce({ 3 }, "max"), { 3 })
  sky.dist.destroy()
  T.eq(sky.dist.is_initialized(), false)
end)

T.test("Ctrl-C while rank 0 waits for the others stops the rendezvous at once", function()
  local port = require("sky.dist").free_port()
  local t0 = os.time()
  local _, err = T.sh(string.format(
    "RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=%d timeout -s INT 4 %s -e %s", port,
    T.shell_quote(T.skyrun_bin), T.shell_quote("require('sky.dist').init_process_group { timeout = 120 }")))
  -- (on a very loaded machine the signal may land while LibTorch still loads: then the Lua hook
  -- raises the bare "interrupted!"; either way the process stops long before the timeout)
  T.contains(err, "interrupted!")
  if err:find("rendezvous", 1, true) then T.contains(err, "dist: rendezvous at 127.0.0.1:" .. port .. ": interrupted!") end
  T.ok(os.time() - t0 < 60, "stopped long before the 120 s timeout")
end)

T.test("a second rank 0 on a port already taken names the store address and the bind error", function()
  local port = require("sky.dist").free_port()
  local function rank0(timeout)
    return string.format("RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=%d %s -e %s", port,
      T.shell_quote(T.skyrun_bin), T.shell_quote("require('sky.dist').init_process_group { timeout = " .. timeout .. " }"))
  end
  -- the first holds the port while it waits for rank 1 (stopped once the second has answered)
  local out, err = T.sh(rank0(30) .. " & first=$!; sleep 2; " .. rank0(3) .. "; kill $first; wait")
  T.contains(out .. err, "rank 0 cannot host the rendezvous store at 127.0.0.1:" .. port .. " (MASTER_ADDR:MASTER_PORT)")
  T.contains(out .. err, "Address already in use")
end)

T.run()
