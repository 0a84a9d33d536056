-- The machine spec of sky.ComputePool (lua/sky/spec.lua) and the accelerator catalog
-- (lua/sky/accelerators.lua): Skyward's names, their checks, and which providers honour them.
local T = require "testlib"
local sky = require "sky"
local spec = require "sky.spec"

T.test("accelerators parse from a name, name:count and the catalog's factories", function()
  local a = sky.accelerators.parse("A100")
  T.eq({ a.name, a.count, a.memory_gb }, { "A100", 1, nil })
  local h = sky.accelerators.parse("H100:8")
  T.eq({ h.name, h.count }, { "H100", 8 })
  T.eq(tostring(h), "8x H100")
  local f = sky.accelerators.H100 { count = 8 }
  T.eq({ f.name, f.count }, { "H100", 8 })
  T.eq(sky.accelerators.parse(f), f)
  local v = sky.accelerators.A100 { memory = "40GB" }
  T.eq(v.memory_gb, 40)
  T.eq(tostring(v), "A100 40GB")
  T.eq(sky.accelerators.parse("a100").name, "A100")
  T.eq(sky.accelerators.RTX_4090 {}.name, "RTX 4090")
  T.eq(sky.accelerators.parse("auto"), nil)
  -- every entry knows its memory and at least one cloud's names
  for _, name in ipairs(sky.accelerators.names) do
    local e = sky.accelerators.entry(name)
    T.ok(e.memory_gb > 0, name)
    T.ok(e.aws or e.runpod or e.lambda or e.vastai, name .. " has no cloud names")
  end
  T.ok(#sky.accelerators.entry("A100").aws > 0)
end)

T.test("an unknown accelerator is an error that lists the known ones", function()
  local err = T.raises(function() sky.ComputePool { accelerator = "A1000" } end, "unknown accelerator 'A1000'")
  T.contains(err, "known: ")
  T.contains(err, "A100, ")
  T.contains(err, "H100")
  T.contains(err, "test_spec.lua")   -- blames the job's line
  T.raises(function() return sky.accelerators.Z80 end, "unknown accelerator 'Z80'")
  T.raises(function() sky.accelerators.parse("H100:0") end, "at least 1")
  T.raises(function() sky.accelerators.H100 { cont = 2 } end, "unknown option 'cont'")
  T.raises(function() sky.accelerators.A100 { memory = "48GB" } end, "A100 comes with 40GB or 80GB (got 48GB)")
end)

T.test("the spec keeps Skyward's defaults and checks each field", function()
  local s = spec.from_options { accelerator = "H100:8", nodes = 2 }
  T.eq(s.allocation, "spot-if-available")
  T.eq(s.ttl, 600)
  T.eq(s.nodes, { min = 2, max = 2 })
  T.eq(s.label, "H100")
  T.eq(spec.from_options({ nodes = { min = 2, max = 4 } }).nodes, { min = 2, max = 4 })
  T.eq(spec.from_options({ nodes = { max = 3 } }).nodes, { min = 1, max = 3 })
  T.eq(spec.describe(spec.from_options { accelerator = "A100", nodes = { min = 1, max = 4 }, memory_gb = 32,
    allocation = "spot" }), "A100, 1-4 nodes, 32 GB memory, spot")
  T.raises(function() sky.ComputePool { allocation = "cheap" } end,
    'allocation must be one of "spot-if-available", "spot", "on-demand", "cheapest" (got cheap)')
  T.raises(function() sky.ComputePool { nodes = { min = 3, max = 2 } } end, "nodes.min (3) is above nodes.max (2)")
  T.raises(function() sky.ComputePool { nodes = { least = 3 } } end, "unknown field 'least'")
  T.raises(function() sky.ComputePool { nodes = 0 } end, "nodes must be at least 1")
  T.raises(function() sky.ComputePool { ttl = -1 } end, "ttl must be a whole number of seconds")
  T.raises(function() sky.ComputePool { memory_gb = "32" } end, "memory_gb must be a positive number")
  T.raises(function() sky.ComputePool { disk_gb = 1.5 } end, "disk_gb must be a positive whole number")
end)

T.test("machine fields on a provider that creates no machines are an error naming them", function()
  local err = T.raises(function() sky.ComputePool { ttl = 60, max_hourly_cost = 3 } end, "ttl, max_hourly_cost have no meaning")
  T.contains(err, "sky.providers.local_")
  T.raises(function() sky.ComputePool { provider = sky.providers.ssh { hosts = { "root@127.0.0.1:22" } }, allocation = "spot" } end,
    "allocation has no meaning for sky.providers.ssh")
  -- an accelerator and a node range are fine everywhere: the local provider starts max nodes
  local pool = sky.ComputePool { accelerator = "A100", nodes = { min = 1, max = 2 } }
  T.eq(pool.nodes, 2)
  T.ok(pool.id:match("^sky%-%x%x%x%x%x%x%x%x$"), pool.id)
  pool:with(function()
    local seen = pool:broadcast(sky.compute(function() return sky.info().accelerator end)())
    T.eq(seen, { "A100", "A100" })
  end)
end)

T.run()
