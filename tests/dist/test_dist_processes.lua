-- skyrun.dist without a pool: plain `skyrun` processes given RANK, WORLD_SIZE, MASTER_ADDR and
-- MASTER_PORT as torchrun would, rendezvous on loopback and run Gloo collectives, and DDP-style
-- gradient sync ends with identical parameters on every rank. Failures: test_dist_errors.lua.
local T = require "testlib"
local R = require "dist_ranks"
local run_ranks, check_ok = R.run, R.check_ok

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
    local t = require("torch").tensor({ r + 0.5, 1 })  -- float32
    line("tensor_sum", table.concat(dist.all_reduce(t):tolist(), ","))
    line("tensor_in_place", table.concat(t:tolist(), ","))
    line("tensor_bcast", table.concat(dist.broadcast(require("torch").tensor({ r, r }), 1):tolist(), ","))
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
      "bcast_string=from NUL rank 3", "bcast_nil=nil", "bcast_bool=true", "tensor_sum=8,4",
      "tensor_in_place=8,4", "tensor_bcast=1,1", "after_destroy=false", "",
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

-- The same model on autograd tensors: torch's matmul/backward, then sync_gradients (what the
-- Trainer calls after backward) and a plain SGD step.
local TORCH_MODEL = [[
  local torch = require "torch"
  local X = { { 1, 2, 0.5 }, { -1, 0, 2 }, { 0.3, -0.7, 1 }, { 2, 2, -1 },
              { 0, 1, 1 }, { -2, 0.5, 0 }, { 1.5, -1, -1 }, { 0.1, 0.2, 0.3 } }
  local Y = { { 3 }, { -1 }, { 0.5 }, { 2 }, { 1.5 }, { -2 }, { 0 }, { 0.4 } }
  local function rows(t, first, last)
    local out = {}
    for i = first, last do out[#out + 1] = t[i] end
    return torch.tensor(out, { dtype = "float32" })
  end
  local function sgd(p) return torch.tensor((p - p.grad * 0.1):tolist(), { requires_grad = true }) end
  local function show(w, b)
    local v = w:tolist()
    return string.format("%.9g %.9g %.9g %.9g", v[1][1], v[2][1], v[3][1], b:tolist()[1])
  end
]]

T.test("sync_parameters and sync_gradients on autograd tensors: two ranks stay identical and match full-batch SGD", function()
  local results = run_ranks(2, TORCH_MODEL .. [[
    local r = dist.rank()
    torch.manual_seed(10 + r)  -- different initial weights on each rank until sync_parameters
    local w = torch.randn(3, 1, { requires_grad = true })
    local b = torch.randn(1, { requires_grad = true })
    dist.sync_parameters({ w, b })
    print("init " .. show(w, b))
    local x, y = rows(X, r * 4 + 1, r * 4 + 4), rows(Y, r * 4 + 1, r * 4 + 4)
    for _ = 1, 3 do
      local loss = ((x:matmul(w) + b - y) ^ 2):mean()
      loss:backward()
      dist.sync_gradients({ w, b })
      w, b = sgd(w), sgd(b)
    end
    print("final " .. show(w, b))
  ]])
  for r = 0, 1 do check_ok(results[r + 1], r) end
  T.eq(results[1].out, results[2].out, "both ranks print the same parameters")
  local ref = assert(loadstring(TORCH_MODEL .. [[
    local init = {}
    for v in (...):gmatch("%S+") do init[#init + 1] = tonumber(v) end
    local w = torch.tensor({ { init[1] }, { init[2] }, { init[3] } }, { requires_grad = true })
    local b = torch.tensor({ init[4] }, { requires_grad = true })
    local x, y = rows(X, 1, 8), rows(Y, 1, 8)
    for _ = 1, 3 do
      local loss = ((x:matmul(w) + b - y) ^ 2):mean()
      loss:backward()
      w, b = sgd(w), sgd(b)
    end
    return show(w, b)
  ]]))
  local want = {}
  for v in ref(results[1].out:match("init ([^\n]+)")):gmatch("%S+") do want[#want + 1] = tonumber(v) end
  local j = 0
  for v in results[1].out:match("final ([^\n]+)"):gmatch("%S+") do
    j = j + 1
    T.near(tonumber(v), want[j], 1e-5, "parameter " .. j .. " (float32)")
  end
  T.eq(j, 4)
end)

T.run()
