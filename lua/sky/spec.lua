-- sky.spec: the machine spec of a ComputePool, with Skyward's names and defaults: accelerator,
-- nodes (a count or {min=, max=}), vcpus, memory_gb, disk_gb, region, allocation, ttl,
-- max_hourly_cost. It checks the values and that the provider honours every field given (a
-- field no provider would use is an error, never silently ignored).
local accelerators = require "sky.accelerators"

local M = {}

M.allocations = { "spot-if-available", "spot", "on-demand", "cheapest" }
M.DEFAULT_TTL = 600  -- Skyward's: seconds an instance lives before it shuts itself down (0: never)

-- the fields only providers that create machines use
M.machine_fields = { "vcpus", "memory_gb", "disk_gb", "region", "allocation", "ttl", "max_hourly_cost" }

local function positive(v, name, integer)
  if v == nil then return nil end
  if type(v) ~= "number" or v <= 0 or (integer and v % 1 ~= 0) then
    error("ComputePool: " .. name .. " must be a positive " .. (integer and "whole number" or "number") ..
      " (got " .. tostring(v) .. ")", 4)
  end
  return v
end

local function nodes_of(v)
  if v == nil then return { min = 1, max = 1 }, false end
  if type(v) == "number" then
    if v < 1 or v % 1 ~= 0 then error("ComputePool: nodes must be at least 1 (got " .. v .. ")", 4) end
    return { min = v, max = v }, false
  end
  if type(v) ~= "table" then
    error("ComputePool: nodes must be a count or {min=, max=} (got " .. type(v) .. ")", 4)
  end
  for k in pairs(v) do
    if k ~= "min" and k ~= "max" then error("ComputePool: nodes: unknown field '" .. tostring(k) .. "' (known: min, max)", 4) end
  end
  local lo, hi = v.min, v.max
  if hi == nil then error("ComputePool: nodes = {min=, max=} needs max", 4) end
  lo = lo or 1
  for name, n in pairs({ min = lo, max = hi }) do
    if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then
      error("ComputePool: nodes." .. name .. " must be a whole number, at least 1 (got " .. tostring(n) .. ")", 4)
    end
  end
  if lo > hi then error("ComputePool: nodes.min (" .. lo .. ") is above nodes.max (" .. hi .. ")", 4) end
  return { min = lo, max = hi }, lo ~= hi
end

--- The spec of pool options opts (already type-checked by check_options). Errors blame the
--- ComputePool call. Fields: accelerator (sky.accelerators value or nil), label (what
--- sky.info().accelerator shows), nodes = {min, max}, vcpus, memory_gb, disk_gb, region,
--- allocation, ttl, max_hourly_cost, given = {field = true} (what the job set).
function M.from_options(opts)
  local given = {}
  for _, f in ipairs(M.machine_fields) do if opts[f] ~= nil then given[f] = true end end
  local ok, acc = pcall(accelerators.parse, opts.accelerator)
  if not ok then error("ComputePool: " .. tostring(acc):gsub("^[^:]*:%d+: ", ""), 3) end
  local nodes, ranged = nodes_of(opts.nodes)
  if ranged then given.nodes = true end
  local allocation = opts.allocation or "spot-if-available"
  local known = false
  for _, a in ipairs(M.allocations) do if a == allocation then known = true end end
  if not known then
    error("ComputePool: allocation must be one of \"" .. table.concat(M.allocations, "\", \"") .. "\" (got " ..
      tostring(allocation) .. ")", 3)
  end
  if opts.region ~= nil and (type(opts.region) ~= "string" or opts.region == "") then
    error("ComputePool: region must be a non-empty string", 3)
  end
  local ttl = opts.ttl
  if ttl ~= nil and (type(ttl) ~= "number" or ttl < 0 or ttl % 1 ~= 0) then
    error("ComputePool: ttl must be a whole number of seconds, 0 for none (got " .. tostring(ttl) .. ")", 3)
  end
  return {
    accelerator = acc,
    label = acc and acc.name or opts.accelerator or "auto",
    nodes = nodes,
    vcpus = positive(opts.vcpus, "vcpus"),
    memory_gb = positive(opts.memory_gb, "memory_gb"),
    disk_gb = positive(opts.disk_gb, "disk_gb", true),
    region = opts.region,
    allocation = allocation,
    ttl = ttl or M.DEFAULT_TTL,
    max_hourly_cost = positive(opts.max_hourly_cost, "max_hourly_cost"),
    given = given,
  }
end

--- Errors when the spec sets a field the provider does not list in provider.spec_fields.
function M.check_provider(spec, provider)
  local honoured = {}
  for _, f in ipairs(provider.spec_fields or {}) do honoured[f] = true end
  local missing = {}
  for _, f in ipairs(M.machine_fields) do
    if spec.given[f] and not honoured[f] then missing[#missing + 1] = f end
  end
  if spec.given.nodes and not honoured.nodes then missing[#missing + 1] = "nodes = {min=, max=}" end
  if #missing > 0 then
    error("ComputePool: " .. table.concat(missing, ", ") .. (#missing == 1 and " has" or " have") ..
      " no meaning for " .. tostring(provider) .. " (it creates no machines); the cloud providers " ..
      "(sky.providers.aws{}, runpod{}, lambda{}, vastai{}) use them", 3)
  end
end

--- One line describing the spec (for plans and errors).
function M.describe(spec)
  local parts = {}
  if spec.accelerator then parts[#parts + 1] = tostring(spec.accelerator) end
  local n = spec.nodes
  parts[#parts + 1] = (n.min == n.max and n.max or (n.min .. "-" .. n.max)) .. " node" .. (n.max == 1 and "" or "s")
  if spec.vcpus then parts[#parts + 1] = spec.vcpus .. " vCPUs" end
  if spec.memory_gb then parts[#parts + 1] = spec.memory_gb .. " GB memory" end
  if spec.disk_gb then parts[#parts + 1] = spec.disk_gb .. " GB disk" end
  if spec.region then parts[#parts + 1] = "region " .. spec.region end
  parts[#parts + 1] = spec.allocation
  return table.concat(parts, ", ")
end

return M
