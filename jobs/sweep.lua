-- jobs/sweep.lua: a scripted hyper-parameter sweep over a local pool with pool:map.
-- Fits character n-gram language models (order 1-3, add-k smoothing) on Tiny Shakespeare and
-- reports held-out bits per character for every point of the grid, as a table.
--   skyrun jobs/sweep.lua [--nodes N] [--data PATH] [--chars N]
-- Each worker counts n-grams once per (order, data) and keeps them in a module-level cache, so the
-- grid points that share an order reuse the counts (modules stay loaded between tasks).
local sky = require "sky"

local opts = { nodes = 2, chars = 400000 }
local i = 1
while arg and arg[i] do
  local a = arg[i]
  if a == "--nodes" then opts.nodes = tonumber(arg[i + 1]) i = i + 2
  elseif a == "--data" then opts.data = arg[i + 1] i = i + 2
  elseif a == "--chars" then opts.chars = tonumber(arg[i + 1]) i = i + 2
  else io.stderr:write("usage: skyrun jobs/sweep.lua [--nodes N] [--data PATH] [--chars N]\n") os.exit(2) end
end
if not opts.data then
  -- The shared test data beside the checkout (as tests/meson.build looks for it).
  local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
  for _, root in ipairs({ os.getenv("SKYRUN_SHARED_DATA") or "", here .. "/../../shared/data",
                          here .. "/../../../shared/data", "/work/shared/data" }) do
    local path = root .. "/text/tinyshakespeare.txt"
    local f = root ~= "" and io.open(path, "rb")
    if f then f:close() opts.data = path break end
  end
  opts.data = opts.data or "../shared/data/text/tinyshakespeare.txt"
end
do
  local f = io.open(opts.data, "rb")
  if not f then io.stderr:write("sweep: cannot read the corpus " .. opts.data .. " (pass --data PATH)\n") os.exit(1) end
  f:close()
end

-- One grid point, run on a worker: returns the held-out bits per character.
local evaluate = sky.compute(function(point)
  local cache = package.loaded["sweep.ngram_cache"] or {}
  package.loaded["sweep.ngram_cache"] = cache
  local key = point.data .. "|" .. point.order .. "|" .. point.chars
  local model = cache[key]
  if not model then
    local f = assert(io.open(point.data, "rb"))
    local text = f:read(point.chars)
    f:close()
    local split = math.floor(#text * 0.9)
    local train, held = text:sub(1, split), text:sub(split + 1)
    local counts, context_counts, vocab = {}, {}, {}
    local n = point.order
    for p = n, #train do
      local ctx, ch = train:sub(p - n + 1, p - 1), train:sub(p, p)
      vocab[ch] = true
      local k = ctx .. "\0" .. ch
      counts[k] = (counts[k] or 0) + 1
      context_counts[ctx] = (context_counts[ctx] or 0) + 1
    end
    local v = 0
    for _ in pairs(vocab) do v = v + 1 end
    model = { counts = counts, context_counts = context_counts, vocab = v + 1, held = held }
    cache[key] = model
  end
  local n, k = point.order, point.k
  local held, counts, ctxc, v = model.held, model.counts, model.context_counts, model.vocab
  local bits = 0
  for p = n, #held do
    local ctx, ch = held:sub(p - n + 1, p - 1), held:sub(p, p)
    local prob = ((counts[ctx .. "\0" .. ch] or 0) + k) / ((ctxc[ctx] or 0) + k * v)
    bits = bits - math.log(prob) / math.log(2)
  end
  return { bits = bits / (#held - n + 1), node = sky.info().node }
end, { name = "ngram-eval", timeout = 600 })

local grid = {}
for _, order in ipairs({ 1, 2, 3 }) do
  for _, k in ipairs({ 0.01, 0.1, 1.0 }) do
    grid[#grid + 1] = { order = order, k = k, data = opts.data, chars = opts.chars }
  end
end

local pool = sky.ComputePool { nodes = opts.nodes, name = "sweep" }
local t0 = os.time()
local results = pool:with(function()
  return pool:map(evaluate, grid)
end)

print(string.format("sweep over %d settings on %d nodes (%s, first %d chars)", #grid, opts.nodes, opts.data, opts.chars))
print(string.format("%-6s %-6s %-14s %-5s", "order", "k", "bits/char", "node"))
local best
for j, point in ipairs(grid) do
  local r = results[j]
  print(string.format("%-6d %-6g %-14.4f %-5d", point.order, point.k, r.bits, r.node))
  if not best or r.bits < results[best].bits then best = j end
end
print(string.format("best: order %d, k %g: %.4f bits/char (%ds)", grid[best].order, grid[best].k, results[best].bits,
  os.time() - t0))
