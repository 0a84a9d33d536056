-- A job for the cloud provider tests: `skyrun cloud_job.lua CONFIG.lua` where CONFIG returns
-- { provider = "aws" (or runpod, lambda, vastai), provider_opts = {...}, pool = {...ComputePool options},
--   steps = { "square", "sleep", "fail", "interruptible", ... }, marker = path, torch = true (the torch plugin) }.
-- It prints what each step returned, "ready" once the pool is open, and "done" at the end.
local sky = require "sky"
local cfg = dofile(arg[1])

local square = sky.compute(function(x) return x * x end)
local where = sky.compute(function() local i = sky.info() return i.node .. "@" .. tostring(i.address) end)
local fails = sky.compute(function() error("the task failed on purpose") end)
local sleeps = sky.compute(function(s) os.execute("sleep " .. s) return "slept" end)
-- Writes its node's address to `marker` (which makes the stand-in reclaim that machine) and waits
-- to be killed; run again on a replacement (the marker exists then), it returns at once.
local interruptible = sky.compute(function(marker)
  local f = io.open(marker, "rb")
  if f then
    f:close()
    return "finished on " .. tostring(sky.info().address)
  end
  local tmp = marker .. ".tmp"
  f = assert(io.open(tmp, "wb"))
  f:write(tostring(sky.info().address))
  f:close()
  os.rename(tmp, marker)
  os.execute("sleep 30")
  return "not interrupted"
end)

local opts = cfg.pool or {}
opts.provider = sky.providers[cfg.provider](cfg.provider_opts or {})
if cfg.torch then opts.plugins = { sky.plugins.torch { backend = "gloo" } } end
opts.output = opts.output == nil and true or opts.output
local pool = sky.ComputePool(opts)
pool:with(function()
  print("ready " .. pool.id .. " nodes " .. pool.nodes)
  io.stdout:flush()
  for _, step in ipairs(cfg.steps or { "square" }) do
    if step == "square" then print("square " .. pool:run(square(7)))
    elseif step == "where" then print("where " .. table.concat(pool:broadcast(where()), " "))
    elseif step == "fail" then pool:run(fails())
    elseif step == "sleep" then print(pool:run(sleeps(cfg.sleep or 60)))
    elseif step == "interruptible" then print(pool:run(interruptible(cfg.marker)))
    end
    io.stdout:flush()
  end
end)
print("done")
