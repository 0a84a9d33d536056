-- sky.accelerators: the GPU catalog (Skyward's names), with each GPU's memory and the names each
-- cloud gives it, and the accelerator values a ComputePool accepts:
--   accelerator = "A100"                              one A100 per node
--   accelerator = "H100:8"                            eight per node
--   accelerator = sky.accelerators.H100 { count = 8 }  the same; { memory = "40GB" } picks a variant
-- An unknown name is an error listing the known ones. Providers read the per-cloud names from
-- the catalog entry (aws: candidate instance types, runpod: GPU type ids, lambda: instance type
-- names, vastai: gpu_name values); the memory a cloud reports decides between variants.
local M = {}

-- name, memory_gb (the default variant), memories (every variant sold), and per-cloud names.
local catalog = {
  { name = "T4", memory_gb = 16,
    aws = { "g4dn.xlarge", "g4dn.2xlarge", "g4dn.4xlarge", "g4dn.8xlarge", "g4dn.16xlarge", "g4dn.12xlarge", "g4dn.metal" },
    vastai = { "Tesla T4" } },
  { name = "V100", memory_gb = 32, memories = { 16, 32 },
    aws = { "p3.2xlarge", "p3.8xlarge", "p3.16xlarge", "p3dn.24xlarge" },
    runpod = { "Tesla V100-SXM2-16GB", "Tesla V100-SXM2-32GB", "Tesla V100-PCIE-16GB" },
    lambda = { "gpu_8x_v100", "gpu_8x_v100_n" }, vastai = { "Tesla V100" } },
  { name = "A10", memory_gb = 24, lambda = { "gpu_1x_a10" }, vastai = { "A10" } },
  { name = "A10G", memory_gb = 24,
    aws = { "g5.xlarge", "g5.2xlarge", "g5.4xlarge", "g5.8xlarge", "g5.16xlarge", "g5.12xlarge", "g5.24xlarge", "g5.48xlarge" } },
  { name = "A30", memory_gb = 24, runpod = { "NVIDIA A30" }, vastai = { "A30" } },
  { name = "A40", memory_gb = 48, runpod = { "NVIDIA A40" }, vastai = { "A40" } },
  { name = "A100", memory_gb = 80, memories = { 40, 80 },
    aws = { "p4d.24xlarge", "p4de.24xlarge" },
    runpod = { "NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB" },
    lambda = { "gpu_1x_a100", "gpu_1x_a100_sxm4", "gpu_2x_a100", "gpu_4x_a100", "gpu_8x_a100", "gpu_8x_a100_80gb_sxm4" },
    vastai = { "A100 PCIE", "A100 SXM4", "A100X" } },
  { name = "L4", memory_gb = 24,
    aws = { "g6.xlarge", "g6.2xlarge", "g6.4xlarge", "g6.8xlarge", "g6.16xlarge", "g6.12xlarge", "g6.24xlarge", "g6.48xlarge" },
    runpod = { "NVIDIA L4" }, vastai = { "L4" } },
  { name = "L40", memory_gb = 48, runpod = { "NVIDIA L40" }, vastai = { "L40" } },
  { name = "L40S", memory_gb = 48,
    aws = { "g6e.xlarge", "g6e.2xlarge", "g6e.4xlarge", "g6e.8xlarge", "g6e.16xlarge", "g6e.12xlarge", "g6e.24xlarge", "g6e.48xlarge" },
    runpod = { "NVIDIA L40S" }, vastai = { "L40S" } },
  { name = "RTX 3090", memory_gb = 24, runpod = { "NVIDIA GeForce RTX 3090" }, vastai = { "RTX 3090" } },
  { name = "RTX 4090", memory_gb = 24, runpod = { "NVIDIA GeForce RTX 4090" }, vastai = { "RTX 4090" } },
  { name = "RTX 5090", memory_gb = 32, runpod = { "NVIDIA GeForce RTX 5090" }, vastai = { "RTX 5090" } },
  { name = "RTX A6000", memory_gb = 48, runpod = { "NVIDIA RTX A6000" },
    lambda = { "gpu_1x_a6000", "gpu_2x_a6000", "gpu_4x_a6000" }, vastai = { "RTX A6000" } },
  { name = "RTX 6000 Ada", memory_gb = 48, runpod = { "NVIDIA RTX 6000 Ada Generation" }, vastai = { "RTX 6000Ada" } },
  { name = "H100", memory_gb = 80,
    aws = { "p5.4xlarge", "p5.48xlarge" },
    runpod = { "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe" },
    lambda = { "gpu_1x_h100_pcie", "gpu_1x_h100_sxm5", "gpu_2x_h100_sxm5", "gpu_4x_h100_sxm5", "gpu_8x_h100_sxm5" },
    vastai = { "H100 SXM", "H100 PCIE" } },
  { name = "H100-NVL", memory_gb = 94, runpod = { "NVIDIA H100 NVL" }, vastai = { "H100 NVL" } },
  { name = "H200", memory_gb = 141, aws = { "p5e.48xlarge", "p5en.48xlarge" }, runpod = { "NVIDIA H200" }, vastai = { "H200" } },
  { name = "GH200", memory_gb = 96, lambda = { "gpu_1x_gh200" }, vastai = { "GH200 SXM" } },
  { name = "B200", memory_gb = 180, aws = { "p6-b200.48xlarge" }, runpod = { "NVIDIA B200" },
    lambda = { "gpu_8x_b200_sxm6" }, vastai = { "B200" } },
  { name = "MI300X", memory_gb = 192, runpod = { "AMD Instinct MI300X OAM" } },
}

local by_name, names = {}, {}
for _, e in ipairs(catalog) do
  e.memories = e.memories or { e.memory_gb }
  by_name[e.name:upper()] = e
  names[#names + 1] = e.name
end
M.names = names

local Accelerator = {}
Accelerator.__index = Accelerator

function Accelerator:__tostring()
  local mem = self.memory_gb and (" " .. self.memory_gb .. "GB") or ""  -- a variant asked for
  return (self.count == 1 and "" or (self.count .. "x ")) .. self.name .. mem
end

--- The catalog entry of a name ("a100" and "A100" are the same), or nil.
function M.entry(name) return by_name[tostring(name):upper()] end

local function unknown(name, level)
  error("unknown accelerator '" .. tostring(name) .. "' (known: " .. table.concat(names, ", ") .. ")", level + 1)
end

local function memory_gb(v, name, level)
  if v == nil then return nil end
  local n = type(v) == "number" and v or tonumber(tostring(v):upper():match("^%s*(%d+%.?%d*)%s*G?B?%s*$"))
  if not n or n <= 0 then error("accelerator " .. name .. ": memory must be like \"40GB\" or 40 (got " .. tostring(v) .. ")", level + 1) end
  return n
end

--- An accelerator value: { name, count, memory_gb (nil: any variant), entry }.
local function make(name, opts, level)
  local e = by_name[tostring(name):upper()]
  if not e then unknown(name, level + 1) end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "count" and k ~= "memory" then
      error("sky.accelerators." .. e.name .. ": unknown option '" .. tostring(k) .. "' (known: count, memory)", level + 1)
    end
  end
  local count = opts.count or 1
  if type(count) ~= "number" or count < 1 or count % 1 ~= 0 then
    error("accelerator " .. e.name .. ": count must be a whole number of GPUs, at least 1 (got " .. tostring(count) .. ")", level + 1)
  end
  local mem = memory_gb(opts.memory, e.name, level + 1)
  if mem then
    local ok = false
    for _, m in ipairs(e.memories) do if m == mem then ok = true end end
    if not ok then
      local sold = {}
      for i, m in ipairs(e.memories) do sold[i] = m .. "GB" end
      error("accelerator " .. e.name .. " comes with " .. table.concat(sold, " or ") .. " (got " .. mem .. "GB)", level + 1)
    end
  end
  return setmetatable({ name = e.name, count = count, memory_gb = mem, entry = e }, Accelerator)
end

function M.is_accelerator(v) return getmetatable(v) == Accelerator end

--- Parses what a pool's `accelerator =` holds: nil, "auto", "cpu" or "cuda" (labels, no GPU
--- asked for: returns nil), "A100", "H100:8", or a sky.accelerators.X{...} value.
function M.parse(v, level)
  level = (level or 1) + 1
  if v == nil or v == "auto" or v == "cpu" or v == "cuda" then return nil end
  if M.is_accelerator(v) then return v end
  if type(v) ~= "string" then
    error("accelerator must be a name (\"A100\", \"H100:8\") or sky.accelerators.<name>{count=} (got " .. type(v) .. ")", level)
  end
  local name, count = v:match("^%s*(.-)%s*:%s*(%d+)%s*$")
  if name then return make(name, { count = tonumber(count) }, level) end
  return make(v:match("^%s*(.-)%s*$"), nil, level)
end

-- sky.accelerators.H100{count = 8}; names with spaces or dashes use underscores (RTX_4090, H100_NVL).
for _, e in ipairs(catalog) do
  M[(e.name:gsub("[^%w]", "_"))] = function(opts) return make(e.name, opts, 2) end
end

return setmetatable(M, {
  __index = function(_, k) unknown(k, 2) end,
})
