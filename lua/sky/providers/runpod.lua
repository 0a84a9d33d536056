-- sky.providers.runpod{...}: GPU pods on RunPod, through its GraphQL API (GPU types and prices,
-- deploying on-demand and interruptible pods) and its REST API (a pod's state, listing,
-- terminating). The pool's accelerator names the catalog's RunPod GPU type ids; spot is an
-- interruptible pod at the lowest bid. Each pod runs a start command (its dockerArgs) that
-- starts sshd with skyrun's public key (PUBLIC_KEY) and holds the ttl timer: the pod terminates
-- itself through the REST API with the pod-scoped RUNPOD_API_KEY RunPod puts in every pod. Pods
-- are named "skyrun <pool id> <pool>"; a reclaimed (outbid) pod is replaced.
--   image              the Docker image (default "nvcr.io/nvidia/cuda:12.9.1-runtime-ubuntu24.04";
--                      the start command installs openssh-server when the image lacks it)
--   cloud_type         "ALL" (default), "SECURE" or "COMMUNITY"
--   container_disk_gb  the container disk per pod (default: the pool's disk_gb, else 40)
--   endpoint           the REST API (default https://rest.runpod.io/v1)
--   graphql_endpoint   the GraphQL API (default https://api.runpod.io/graphql)
--   and the options of every cloud provider (lua/sky/cloud/machines.lua)
-- The API key comes from RUNPOD_API_KEY.
local core = require "sky.core"
local machines = require "sky.cloud.machines"
local rest = require "sky.cloud.rest"
local ttl = require "sky.cloud.ttl"
local cloud = require "sky.cloud.core"

local M = {}

M.DEFAULT_IMAGE = "nvcr.io/nvidia/cuda:12.9.1-runtime-ubuntu24.04"
M.DEFAULT_ENDPOINT = "https://rest.runpod.io/v1"
M.DEFAULT_GRAPHQL = "https://api.runpod.io/graphql"

local capacity_words = { "no longer any instances available", "SUPPLY_CONSTRAINT", "not enough free" }

local Driver = {}
Driver.__index = Driver
Driver.name = "runpod"
Driver.ssh_user = "root"

local function message_of(body)
  if type(body) ~= "table" then return nil end
  if type(body.errors) == "table" and body.errors[1] then return body.errors[1].message end
  return body.error or body.message
end

local key_opts = { var = "RUNPOD_API_KEY", provider = "RunPod", error_message = message_of }

function Driver:rest()
  return rest.for_driver(self, self.endpoint, setmetatable({ name = "RunPod" }, { __index = key_opts }))
end

-- A GraphQL call; GraphQL errors (in a 200 answer) raise like HTTP ones.
function Driver:graphql(operation, query, variables)
  local gql = rest.for_driver(self, self.graphql_endpoint, setmetatable({ name = "RunPod GraphQL" }, { __index = key_opts }))
  local v = gql:request("POST", "", { query = query, variables = variables or {} })
  if type(v) == "table" and type(v.errors) == "table" and v.errors[1] then
    local msg = tostring(v.errors[1].message)
    local e = { message = "RunPod " .. operation .. ": " .. msg }
    for _, w in ipairs(capacity_words) do if msg:find(w, 1, true) then e.capacity = true end end
    error(setmetatable(e, { __tostring = function(x) return x.message end }), 0)
  end
  return v and v.data or {}
end

function Driver:describe() return "runpod{}" end

function Driver:config()
  return { endpoint = self.endpoint ~= M.DEFAULT_ENDPOINT and self.endpoint or nil,
           graphql_endpoint = self.graphql_endpoint ~= M.DEFAULT_GRAPHQL and self.graphql_endpoint or nil }
end

local GPU_TYPES = [[query GpuTypes($gpuCount: Int) {
  gpuTypes { id displayName memoryInGb secureCloud communityCloud
    lowestPrice(input: {gpuCount: $gpuCount}) { minimumBidPrice uninterruptablePrice minVcpu minMemory stockStatus } } }]]

function Driver:offers(spec)
  if spec.region then error("sky.providers.runpod: region = is not supported yet", 0) end
  if not spec.accelerator then error("not supported yet: CPU pods on RunPod (give the pool an accelerator)", 0) end
  local ids = spec.accelerator.entry.runpod
  if not ids then error("RunPod has no " .. spec.accelerator.name .. " in the catalog", 0) end
  local want = {}
  for _, id in ipairs(ids) do want[id] = true end
  local n = spec.accelerator.count
  local data = self:graphql("GpuTypes", GPU_TYPES, { gpuCount = n })
  local offers = {}
  for _, g in ipairs(data.gpuTypes or {}) do
    local p = type(g.lowestPrice) == "table" and g.lowestPrice or {}
    if want[g.id] then
      local base = { type = g.id, gpu_name = g.displayName, gpus = n, gpu_memory_gb = tonumber(g.memoryInGb),
                     vcpus = tonumber(p.minVcpu), memory_gb = tonumber(p.minMemory), gpu_type_id = g.id }
      local function add(spot, per_gpu)
        if not per_gpu or per_gpu <= 0 then return end
        local o = { spot = spot, price = per_gpu * n, per_gpu = per_gpu }
        for k, v in pairs(base) do o[k] = v end
        offers[#offers + 1] = o
      end
      add(true, tonumber(p.minimumBidPrice))
      add(false, tonumber(p.uninterruptablePrice))
    end
  end
  return offers
end

function Driver:prepare(ctx) end

-- The pod's start command: the ttl timer (the pod terminates itself with its own key), then sshd
-- with PUBLIC_KEY, then waits. Sent base64-encoded so that no quoting can mangle it.
function Driver:start_command(ctx)
  local terminate = "printf 'header = \"Authorization: Bearer %s\"\\n' \"$RUNPOD_API_KEY\" | curl -s -K - -X DELETE " ..
    "\"" .. self.endpoint .. "/pods/$RUNPOD_POD_ID\""
  local script = table.concat({
    "# skyrun pool " .. ctx.pool_id .. ": sshd for skyrun; the pod terminates itself after its ttl",
    ttl.timer_line(ctx.ttl, terminate),
    "if [ ! -x /usr/sbin/sshd ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq " ..
      "--no-install-recommends openssh-server >/dev/null; fi",
    "mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh",
    "printf '%s\\n' \"$PUBLIC_KEY\" >> /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys",
    "ssh-keygen -A >/dev/null",
    "/usr/sbin/sshd",
    "exec sleep infinity",
    "",
  }, "\n")
  return "bash -c \"echo " .. cloud.base64(script) .. " | base64 -d | bash\""
end

local DEPLOY = [[mutation Deploy($input: %s) { %s(input: $input) { id costPerHr } }]]

function Driver:create(offer, count, min_count, ctx)
  local ids = {}
  for i = 1, count do
    local input = {
      name = "skyrun " .. ctx.pool_id .. " " .. ctx.pool, imageName = self.image, gpuTypeId = offer.gpu_type_id,
      gpuCount = offer.gpus, cloudType = self.cloud_type, containerDiskInGb = ctx.disk_gb or self.container_disk_gb or 40,
      volumeInGb = 0, ports = "22/tcp", supportPublicIp = true, dockerArgs = self:start_command(ctx),
      env = { { key = "PUBLIC_KEY", value = ctx.public_key } },
    }
    if ctx.spec.vcpus then input.minVcpuCount = math.ceil(ctx.spec.vcpus) end
    if ctx.spec.memory_gb then input.minMemoryInGb = math.ceil(ctx.spec.memory_gb) end
    local op, type_name = "podFindAndDeployOnDemand", "PodFindAndDeployOnDemandInput"
    if offer.spot then
      op, type_name = "podRentInterruptable", "PodRentInterruptableInput!"
      input.bidPerGpu = offer.per_gpu
    end
    local ok, data = pcall(self.graphql, self, op, DEPLOY:format(type_name, op), { input = input })
    if not ok then
      if #ids > 0 then pcall(self.terminate, self, ids) end
      error(data, 0)
    end
    ids[#ids + 1] = tostring(data[op] and data[op].id)
  end
  return ids
end

local states = { RUNNING = "running", CREATED = "pending", RESTARTING = "pending", EXITED = "stopped",
                 TERMINATED = "terminated", DEAD = "terminated" }

local function view(p)
  local port = type(p.portMappings) == "table" and tonumber(p.portMappings["22"]) or 22
  local ip = type(p.publicIp) == "string" and p.publicIp ~= "" and p.publicIp or nil
  local state = states[tostring(p.desiredStatus)] or tostring(p.desiredStatus):lower()
  if state == "running" and not ip then state = "pending" end  -- still starting: no address yet
  return { id = tostring(p.id), state = state, address = ip, port = port, name = p.name,
           type = (p.gpuCount or "?") .. "x " .. tostring(type(p.gpu) == "table" and p.gpu.displayName or p.gpuTypeId or "GPU"),
           reason = p.desiredStatus == "EXITED" and p.interruptible and "interruptible pod stopped (outbid)" or nil,
           launched = p.createdAt }
end

function Driver:status(ids)
  local out = {}
  for _, id in ipairs(ids) do
    local v = self:rest():get_optional("/pods/" .. id)
    if type(v) == "table" then out[id] = view(v) end
  end
  return out
end

function Driver:terminate(ids)
  for _, id in ipairs(ids) do
    self:rest():request("DELETE", "/pods/" .. id, nil, { ok_statuses = { [404] = true } })
  end
end

function Driver:list(pool_id)
  local v = self:rest():request("GET", "/pods")
  local out = {}
  for _, p in ipairs(type(v) == "table" and v or {}) do
    local name = tostring(p.name or "")
    if name:match("^skyrun sky%-") and (not pool_id or name:find("skyrun " .. pool_id .. " ", 1, true) == 1) and
       p.desiredStatus ~= "TERMINATED" then
      out[#out + 1] = view(p)
    end
  end
  return out
end

local options = { image = "string", cloud_type = "string", container_disk_gb = "number", endpoint = "string",
                  graphql_endpoint = "string" }
for k, v in pairs(machines.options) do options[k] = v end

local function driver_of(opts)
  return setmetatable({ image = opts.image or M.DEFAULT_IMAGE, cloud_type = opts.cloud_type or "ALL",
    container_disk_gb = opts.container_disk_gb, endpoint = (opts.endpoint or M.DEFAULT_ENDPOINT):gsub("/+$", ""),
    graphql_endpoint = opts.graphql_endpoint or M.DEFAULT_GRAPHQL }, Driver)
end

function M.list(record) return driver_of(record.config or {}):list(record.pool_id) end
function M.terminate(record, ids) return driver_of(record.config or {}):terminate(ids) end

return setmetatable(M, {
  __call = function(_, opts)
    opts = core.check_options(opts, options, "sky.providers.runpod", 3)
    if opts.cloud_type and opts.cloud_type ~= "ALL" and opts.cloud_type ~= "SECURE" and opts.cloud_type ~= "COMMUNITY" then
      error("sky.providers.runpod: cloud_type must be \"ALL\", \"SECURE\" or \"COMMUNITY\"", 2)
    end
    return machines.new(driver_of(opts), "sky.providers.runpod", opts)
  end,
})
