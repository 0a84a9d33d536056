-- sky.providers.vastai{...}: machines rented on Vast.ai's marketplace through its REST API
-- (console.vast.ai/api/v0). Offers come from the bundles search (the pool's accelerator names
-- the catalog's gpu_name values; interruptible offers are "bid" offers at their minimum bid),
-- an instance is created from the cheapest fitting offer with skyrun's SSH key registered on the
-- account, and its `onstart` script holds the ttl timer: the instance destroys itself through the
-- API with the CONTAINER_API_KEY Vast.ai gives every instance. Instances are labelled
-- "skyrun <pool id> <node>"; an outbid (reclaimed) instance is replaced.
--   image        the Docker image (default "vastai/base-image:cuda-12.4.1-auto": Ubuntu with sshd)
--   disk_gb      disk per instance in GB (default: the pool's disk_gb, else 32)
--   endpoint     the API's base URL (default https://console.vast.ai)
--   and the options of every cloud provider (lua/sky/cloud/machines.lua)
-- The API key comes from VAST_API_KEY, else ~/.config/vastai/vast_api_key or ~/.vast_api_key (as
-- the vastai CLI keeps it).
local core = require "sky.core"
local machines = require "sky.cloud.machines"
local rest = require "sky.cloud.rest"
local ttl = require "sky.cloud.ttl"

local M = {}

M.DEFAULT_IMAGE = "vastai/base-image:cuda-12.4.1-auto"
M.DEFAULT_ENDPOINT = "https://console.vast.ai"

local Driver = {}
Driver.__index = Driver
Driver.name = "vastai"
Driver.ssh_user = "root"

local function message_of(body)
  return type(body) == "table" and (body.msg or body.error or body.message) or nil
end

function Driver:api()
  return rest.for_driver(self, self.endpoint .. "/api/v0", { name = "Vast.ai", var = "VAST_API_KEY",
    files = { "~/.config/vastai/vast_api_key", "~/.vast_api_key" }, provider = "Vast.ai", error_message = message_of })
end

function Driver:describe() return "vastai{}" end

function Driver:config()
  return { endpoint = self.endpoint ~= M.DEFAULT_ENDPOINT and self.endpoint or nil }
end

function Driver:offers(spec)
  if spec.region then error("sky.providers.vastai: region = is not supported yet (Vast.ai offers carry a geolocation)", 0) end
  local names
  if spec.accelerator then
    names = spec.accelerator.entry.vastai
    if not names then error("Vast.ai has no " .. spec.accelerator.name .. " in the catalog", 0) end
  else
    error("not supported yet: machines without an accelerator on Vast.ai", 0)
  end
  local offers = {}
  local kinds = spec.allocation == "on-demand" and { "ondemand" } or spec.allocation == "spot" and { "bid" } or { "bid", "ondemand" }
  for _, kind in ipairs(kinds) do
    local q = { gpu_name = { ["in"] = names }, num_gpus = { gte = spec.accelerator.count }, rentable = { eq = true },
                type = kind, order = { { "dph_total", "asc" } }, limit = 64 }
    if spec.vcpus then q.cpu_cores_effective = { gte = spec.vcpus } end
    if spec.memory_gb then q.cpu_ram = { gte = spec.memory_gb * 1024 } end  -- MiB, as gpu_ram
    if spec.disk_gb then q.disk_space = { gte = spec.disk_gb } end
    local v = self:api():request("POST", "/bundles/", q)
    for _, o in ipairs(v and v.offers or {}) do
      local spot = kind == "bid"
      offers[#offers + 1] = {
        type = tostring(o.gpu_name), gpu_name = o.gpu_name, gpus = tonumber(o.num_gpus),
        gpu_memory_gb = tonumber(o.gpu_ram) and tonumber(o.gpu_ram) / 1024, vcpus = tonumber(o.cpu_cores_effective),
        memory_gb = tonumber(o.cpu_ram) and tonumber(o.cpu_ram) / 1024, spot = spot,
        price = spot and tonumber(o.min_bid) or tonumber(o.dph_total), where = o.geolocation and tostring(o.geolocation) or nil,
        offer_id = o.id, bid = spot and tonumber(o.min_bid) or nil,
      }
    end
  end
  return offers
end

function Driver:prepare(ctx)
  local key = ctx.public_key:match("^(%S+%s+%S+)")
  local have = self:api():request("GET", "/ssh/")
  for _, k in ipairs(type(have) == "table" and (have.keys or have) or {}) do
    if type(k) == "table" and type(k.public_key or k.ssh_key) == "string" and (k.public_key or k.ssh_key):find(key, 1, true) then
      return
    end
  end
  self:api():request("POST", "/ssh/", { ssh_key = ctx.public_key })
end

-- The onstart script: the ttl timer, destroying this instance with its own key.
function Driver:onstart(ctx)
  local destroy = "[ -n \"$CONTAINER_API_KEY\" ] || eval \"$(tr '\\0' '\\n' < /proc/1/environ | " ..
    "grep -E '^(CONTAINER_ID|CONTAINER_API_KEY)=' | sed 's/^/export /')\"; " ..
    "printf 'header = \"Authorization: Bearer %s\"\\n' \"$CONTAINER_API_KEY\" | curl -s -K - -X DELETE " ..
    "\"" .. self.endpoint .. "/api/v0/instances/$CONTAINER_ID/\""
  return table.concat({ "#!/bin/sh", "# skyrun pool " .. ctx.pool_id .. ": this instance destroys itself after its ttl",
    ttl.timer_line(ctx.ttl, destroy), "" }, "\n")
end

function Driver:create(offer, count, min_count, ctx)
  local ids = {}
  for i = 1, count do
    local body = { client_id = "me", image = self.image, disk = ctx.disk_gb or self.disk_gb or 32,
                   label = "skyrun " .. ctx.pool_id .. " " .. ctx.pool, onstart = self:onstart(ctx), runtype = "ssh_direc" }
    if offer.spot then body.price = offer.bid end
    local ok, v = pcall(self:api().request, self:api(), "PUT", "/asks/" .. tostring(offer.offer_id) .. "/", body)
    if not ok then
      if #ids > 0 then self:terminate(ids) end
      local e = v
      if type(e) == "table" and e.status and e.status < 500 and tostring(e.message):find("no_such_ask", 1, true) or
         (type(e) == "table" and type(e.body) == "table" and (e.body.error == "no_such_ask" or e.body.error == "insufficient_capacity")) then
        e.capacity = true
      end
      error(e, 0)
    end
    ids[#ids + 1] = tostring(v.new_contract or v.id)
  end
  return ids
end

local function view(i)
  local port = 22
  local p = i.ports and i.ports["22/tcp"]
  if type(p) == "table" and p[1] and p[1].HostPort then port = tonumber(p[1].HostPort) end
  local state = i.actual_status
  if state == "loading" or state == "created" or state == nil then state = "pending"
  elseif state == "running" then state = "running"
  elseif state == "exited" or state == "stopped" or state == "offline" then state = "stopped" end
  return { id = tostring(i.id), state = state, address = i.public_ipaddr ~= "" and i.public_ipaddr or nil, port = port,
           reason = i.status_msg ~= "" and i.status_msg or nil, type = i.gpu_name and (tostring(i.num_gpus) .. "x " .. i.gpu_name),
           launched = i.start_date, label = i.label }
end

function Driver:status(ids)
  local out = {}
  for _, id in ipairs(ids) do
    local v = self:api():get_optional("/instances/" .. id .. "/")
    if type(v) == "table" and type(v.instances) == "table" then out[id] = view(v.instances) end
  end
  return out
end

function Driver:terminate(ids)
  for _, id in ipairs(ids) do
    self:api():request("DELETE", "/instances/" .. id .. "/", nil, { ok_statuses = { [404] = true } })
  end
end

function Driver:list(pool_id)
  local v = self:api():request("GET", "/instances/")
  local out = {}
  for _, i in ipairs(v and v.instances or {}) do
    local label = tostring(i.label or "")
    if label:match("^skyrun sky%-") and (not pool_id or label:find("skyrun " .. pool_id .. " ", 1, true) == 1) then
      out[#out + 1] = view(i)
    end
  end
  return out
end

local options = { image = "string", disk_gb = "number", endpoint = "string" }
for k, v in pairs(machines.options) do options[k] = v end

local function driver_of(opts)
  return setmetatable({ image = opts.image or M.DEFAULT_IMAGE, disk_gb = opts.disk_gb,
                        endpoint = (opts.endpoint or M.DEFAULT_ENDPOINT):gsub("/+$", "") }, Driver)
end

function M.list(record) return driver_of(record.config or {}):list(record.pool_id) end
function M.terminate(record, ids) return driver_of(record.config or {}):terminate(ids) end

return setmetatable(M, {
  __call = function(_, opts)
    opts = core.check_options(opts, options, "sky.providers.vastai", 3)
    return machines.new(driver_of(opts), "sky.providers.vastai", opts)
  end,
})
