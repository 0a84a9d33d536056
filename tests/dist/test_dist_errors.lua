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

T.test("ranks in mismatched collectives get the same clear error on every rank, and the group goes on", function()
  local results = run_ranks(2, [[
    local r = dist.rank()
    local function try(f) local ok, err = pcall(f) print(ok, err) end
    -- different shapes
    try(function() return dist.all_reduce(r == 0 and 1 or { 1, 2 }) end)
    -- different ops: sum on one, max on the other (a wrong answer before, not an error)
    try(function() return dist.all_reduce({ 5 }, r == 0 and "sum" or "max") end)
    -- different collectives: a barrier against an all_reduce (SIGABRT in gloo before)
    try(function() if r == 0 then dist.barrier() else dist.all_reduce(1) end end)
    -- tensors of different shapes with as many elements, and of different dtypes
    local torch = require "torch"
    try(function() return dist.all_reduce(r == 0 and torch.zeros({ 2, 3 }) or torch.zeros({ 3, 2 })) end)
    try(function() return dist.broadcast(r == 0 and torch.zeros({ 2 }) or torch.zeros({ 2 }, { dtype = "int64" }), 0) end)
    print("after", dist.all_reduce(1))  -- the group still works after the refusals
  ]])
  for r = 0, 1 do
    check_ok(results[r + 1], r)
    local out = results[r + 1].out
    T.contains(out, "false\tdist.all_reduce: the ranks are not in the same collective: rank 0 (call #1): " ..
      "all_reduce(sum) of a number; rank 1 (call #1): all_reduce(sum) of an array of 2 numbers (this is rank " .. r .. ")")
    T.contains(out, "rank 0 (call #2): all_reduce(sum) of an array of 1 number; rank 1 (call #2): all_reduce(max) of an array of 1 number")
    T.contains(out, "rank 0 (call #3): barrier; rank 1 (call #3): all_reduce(sum) of a number")
    T.contains(out, "rank 0 (call #4): all_reduce(sum) of a Float tensor [2, 3]; rank 1 (call #4): all_reduce(sum) of a Float tensor [3, 2]")
    T.contains(out, "rank 0 (call #5): broadcast from rank 0 of a Float tensor [2]; rank 1 (call #5): broadcast from rank 0 of a Long tensor [2]")
    T.contains(out, "after\t2\n")
  end
end)

T.test("a rank with another pool secret cannot join: the store refuses it and rank 0 names the rank missing", function()
  local results = run_ranks(2, "print('joined')", { timeout = 4, secrets = { "secret-of-the-pool-0123456789", "a-guess-at-the-secret-0123456789" } })
  T.eq(results[2].code, 1)
  T.contains(results[2].err, "rank 1 of 2 cannot join the rendezvous store at 127.0.0.1:")
  T.contains(results[2].err, "refused this process: it does not know the pool secret")
  T.not_contains(results[2].err, "secret-of-the-pool")
  T.eq(results[1].code, 1)
  T.contains(results[1].err, "rank 1 of world size 2 did not join")
  T.contains(results[1].err, "refused the connection from 127.0.0.1:")
  T.not_contains(results[1].out .. results[2].out, "joined")
end)

T.test("a group of several ranks needs the pool secret; one rank alone makes its own", function()
  local out, err, code = T.sh(string.format("env -u SKYRUN_DIST_SECRET RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=%d %s -e %s",
    require("sky.dist").free_port(), T.shell_quote(T.skyrun_bin), T.shell_quote("require('sky.dist').init_process_group { timeout = 5 }")))
  T.eq(code, 1, out)
  T.contains(err, "no pool secret for the rendezvous store: set SKYRUN_DIST_SECRET to the same random value")
  T.raises(function() dist.init_process_group { rank = 0, world_size = 2, master_addr = "127.0.0.1", master_port = 1, secret = "short" } end,
    "no pool secret")
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
    "RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=%d SKYRUN_DIST_SECRET=%s timeout -s INT 4 %s -e %s", port,
    require("sky.dist").new_secret(),
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
    return string.format("RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=%d SKYRUN_DIST_SECRET=%s %s -e %s", port,
      require("sky.dist").new_secret(),
      T.shell_quote(T.skyrun_bin), T.shell_quote("require('sky.dist').init_process_group { timeout = " .. timeout .. " }"))
  end
  -- the first holds the port while it waits for rank 1 (stopped once the second has answered)
  local out, err = T.sh(rank0(30) .. " & first=$!; sleep 2; " .. rank0(3) .. "; kill $first; wait")
  T.contains(out .. err, "rank 0 cannot host the rendezvous store at 127.0.0.1:" .. port .. " (MASTER_ADDR:MASTER_PORT)")
  T.contains(out .. err, "Address already in use")
end)

T.run()
