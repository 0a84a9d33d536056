-- skyrun.dist without a pool: plain `skyrun -e` processes given RANK, WORLD_SIZE, MASTER_ADDR and
-- MASTER_PORT as torchrun would, rendezvous on loopback and run Gloo collectives; then the
-- failures users meet (a rank that never comes, no rank 0, mismatched shapes, missing settings).
local T = require "testlib"
local dist = require "skyrun.dist"

-- Starts one `skyrun -e` per rank in `ranks` (default 0..world-1) and waits for all of them.
-- Returns per rank (1-based: [r+1]) {out=, err=, code=}.
local function run_ranks(world, body, opts)
  opts = opts or {}
  local dir = T.tmpdir()
  local port = opts.port or require("sky.dist").free_port()
  local prelude = string.format(
    "local dist = require 'skyrun.dist'; dist.init_process_group { backend = 'gloo', timeout = %s }\n",
    opts.timeout or 20)
  T.write_file(dir .. "/rank.lua", prelude .. body)
  local ranks = opts.ranks
  if not ranks then
    ranks = {}
    for r = 0, world - 1 do ranks[#ranks + 1] = r end
  end
  local parts = {}
  for _, r in ipairs(ranks) do
    local q = function(s) return T.shell_quote(s) end
    parts[#parts + 1] = string.format(
      "( RANK=%d WORLD_SIZE=%d MASTER_ADDR=127.0.0.1 MASTER_PORT=%d %s %s > %s 2> %s; echo $? > %s ) &",
      r, world, port, q(T.skyrun_bin), q(dir .. "/rank.lua"), q(dir .. "/" .. r .. ".out"),
      q(dir .. "/" .. r .. ".err"), q(dir .. "/" .. r .. ".code"))
  end
  T.exec(table.concat(parts, " ") .. " wait")
  local results = {}
  for _, r in ipairs(ranks) do
    results[r + 1] = {
      out = T.read_file(dir .. "/" .. r .. ".out"),
      err = T.read_file(dir .. "/" .. r .. ".err"),
      code = tonumber(T.read_file(dir .. "/" .. r .. ".code")),
    }
  end
  return results, port
end

local function check_ok(res, r)
  if res.code ~= 0 then error(string.format("rank %d exited %s: %s%s", r, tostring(res.code), res.out, res.err), 2) end
end

T.test("four ranks all_reduce their ranks to 6, and broadcast, barrier and arrays agree", function()
  local results = run_ranks(4, [[
    local r = dist.rank()
    local function line(name, v)
      if type(v) == "table" then v = "{" .. table.concat(v, ",") .. "}" end
      print(name .. "=" .. tostring(v))
    end
    line("rank", r)
    line("world_size", dist.world_size())
    line("backend", dist.backend())
    line("sum", dist.all_reduce(r))
    line("max", dist.all_reduce(r, "max"))
    line("min", dist.all_reduce(r, "min"))
    line("avg", dist.all_reduce(r, "avg"))
    line("product", dist.all_reduce(r + 1, "product"))
    line("array", dist.all_reduce({ r, 1, -r, 0.5 }))
    line("empty", dist.all_reduce({}))
    line("big", dist.all_reduce(2 ^ 50 + r) - 4 * 2 ^ 50)
    dist.barrier()
    line("bcast_number", dist.broadcast(r == 2 and 42.5 or nil, 2))
    line("bcast_array", dist.broadcast(r == 0 and { 1, 2, 3 } or "ignored"))
    line("bcast_string", dist.broadcast(r == 3 and "from \0 rank 3" or nil, 3):gsub("%z", "NUL"))
    line("bcast_nil", dist.broadcast(nil, 1))
    line("bcast_bool", dist.broadcast(r == 1, 1))
    dist.barrier()
    dist.destroy_process_group()
    line("after_destroy", dist.is_initialized())
  ]])
  for r = 0, 3 do
    local res = results[r + 1]
    check_ok(res, r)
    T.eq(res.out, table.concat({
      "rank=" .. r, "world_size=4", "backend=gloo", "sum=6", "max=3", "min=0", "avg=1.5", "product=24",
      "array={6,4,-6,2}", "empty={}", "big=6", "bcast_number=42.5", "bcast_array={1,2,3}",
      "bcast_string=from NUL rank 3", "bcast_nil=nil", "bcast_bool=true", "after_destroy=false", "",
    }, "\n"), "rank " .. r .. " output")
  end
end)

-- A linear model y = w.x + b trained by SGD on MSE; each rank sees its half of the batch.
local DDP_MODEL = [[
  local X = { { 1, 2, 0.5 }, { -1, 0, 2 }, { 0.3, -0.7, 1 }, { 2, 2, -1 },
              { 0, 1, 1 }, { -2, 0.5, 0 }, { 1.5, -1, -1 }, { 0.1, 0.2, 0.3 } }
  local Y = { 3, -1, 0.5, 2, 1.5, -2, 0, 0.4 }
  local function grads(w, b, first, last)  -- mean squared error over samples first..last
    local gw, gb, n = { 0, 0, 0 }, 0, last - first + 1
    for i = first, last do
      local err = w[1] * X[i][1] + w[2] * X[i][2] + w[3] * X[i][3] + b - Y[i]
      for j = 1, 3 do gw[j] = gw[j] + 2 * err * X[i][j] / n end
      gb = gb + 2 * err / n
    end
    return gw, gb
  end
  local function step(w, b, gw, gb)
    for j = 1, 3 do w[j] = w[j] - 0.1 * gw[j] end
    return w, b - 0.1 * gb
  end
  local function show(w, b) return string.format("%.17g %.17g %.17g %.17g", w[1], w[2], w[3], b) end
]]

T.test("DDP-style sync: two ranks end with identical parameters, equal to full-batch SGD", function()
  local results = run_ranks(2, DDP_MODEL .. [[
    local r = dist.rank()
    math.randomseed(100 + r)  -- different initial parameters on each rank...
    local init = { math.random(), math.random(), math.random(), math.random() }
    init = dist.broadcast(init, 0)  -- ...until rank 0's are broadcast, as DDP does at wrap time
    local w, b = { init[1], init[2], init[3] }, init[4]
    print("init " .. show(w, b))
    for _ = 1, 3 do
      local gw, gb = grads(w, b, r * 4 + 1, r * 4 + 4)
      local g = dist.all_reduce_mean({ gw, { gb } }, { bucket_bytes = 16 })  -- two buckets
      w, b = step(w, b, g[1], g[2][1])
    end
    print("final " .. show(w, b))
  ]])
  for r = 0, 1 do check_ok(results[r + 1], r) end
  T.eq(results[1].out, results[2].out, "both ranks print the same parameters")
  -- the reference: full-batch SGD from rank 0's initial parameters, in this process
  local ref = assert(loadstring(DDP_MODEL .. [[
    local init = {}
    for v in (...):gmatch("%S+") do init[#init + 1] = tonumber(v) end
    local w, b = { init[1], init[2], init[3] }, init[4]
    for _ = 1, 3 do w, b = step(w, b, grads(w, b, 1, 8)) end
    return w, b
  ]]))
  local w, b = ref(results[1].out:match("init ([^\n]+)"))
  local got = {}
  for v in results[1].out:match("final ([^\n]+)"):gmatch("%S+") do got[#got + 1] = tonumber(v) end
  for j = 1, 3 do T.near(got[j], w[j], 1e-12, "w" .. j) end
  T.near(got[4], b, 1e-12, "b")
end)

T.test("a rank that never joins: every rank that came names it, the address and the timeout", function()
  local results, port = run_ranks(3, "print('unreachable')", { ranks = { 0, 1 }, timeout = 2 })
  for r = 0, 1 do
    local res = results[r + 1]
    T.eq(res.code, 1, "rank " .. r .. " exit code")
    T.contains(res.err, "rendezvous at 127.0.0.1:" .. port)
    T.contains(res.err, "rank 2 of world size 3 did not join")
    T.not_contains(res.out, "unreachable")
  end
  -- rank 0 hosts the store: it waits the full timeout; rank 1 may see the store close first.
  T.contains(results[1].err, "timed out after 2 s: rank 2 of world size 3 did not join")
end)

T.test("without rank 0 a rank says it cannot reach the store, naming MASTER_ADDR:MASTER_PORT", function()
  local results, port = run_ranks(2, "print('unreachable')", { ranks = { 1 }, timeout = 2 })
  T.eq(results[2].code, 1)
  T.contains(results[2].err, "rank 1 of 2 cannot reach the rendezvous store at 127.0.0.1:" .. port ..
    " (MASTER_ADDR:MASTER_PORT) within 2 s: is rank 0 running there and the port reachable?")
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
  sky.dist.destroy_process_group()
  T.eq(sky.dist.is_initialized(), false)
end)

T.run()
