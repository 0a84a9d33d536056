-- sky.providers.lambda{...}: on-demand GPU machines on Lambda Cloud, through its REST API
-- (cloud.lambda.ai/api/v1). The pool's accelerator names the catalog's Lambda instance types;
-- instance-types says their price and the regions with capacity (one offer per region: no capacity
-- moves on to the next); skyrun's key is registered as an SSH key; machines are named
-- "skyrun <pool id> <pool>" and log in as "ubuntu". Lambda sells no spot machines and gives no
-- instance-scoped keys, and shutting a machine down does not end its billing: the ttl timer is
-- set up over SSH once a machine answers, with the API key written there into a file only the
-- login user can read (through stdin, never on a command line), and terminates the machine
-- through the API.
--   endpoint     the API (default https://cloud.lambda.ai/api/v1)
--   and the options of every cloud provider (lua/sky/cloud/machines.lua)
-- The API key comes from LAMBDA_API_KEY.
local core = require "sky.core"
local machines = require "sky.cloud.machines"
local rest = require "sky.cloud.rest"
local ttl = require "sky.cloud.ttl"
local cloud = require "sky.cloud.core"
local pcore = require "sky.pool.core"
local monotonic = require("sky.core").monotonic

local M = {}

local shq = require("sky.ssh.core").shell_quote

M.DEFAULT_ENDPOINT = "https://cloud.lambda.ai/api/v1"

local Driver = {}
Driver.__index = Driver
Driver.name = "lambda"
Driver.ssh_user = "ubuntu"
Driver.nodes_reach_each_other = true  -- over their private addresses

local function message_of(body)
  if type(body) == "table" and type(body.error) == "table" then
    return tostring(body.error.code or "") .. ": " .. tostring(body.error.message or "")
  end
  return nil
end

function Driver:api()
  return rest.for_driver(self, self.endpoint, { name = "Lambda", var = "LAMBDA_API_KEY", provider = "Lambda Cloud",
                                                error_message = message_of })
end

function Driver:describe() return "lambda{}" end

function Driver:config() return { endpoint = self.endpoint ~= M.DEFAULT_ENDPOINT and self.endpoint or nil } end

function Driver:offers(spec)
  if spec.allocation == "spot" then error("Lambda Cloud sells no spot machines (allocation = \"spot\")", 0) end
  if not spec.accelerator then error("not supported yet: machines without an accelerator on Lambda Cloud", 0) end
  local names = spec.accelerator.entry.lambda
  if not names then error("Lambda Cloud has no " .. spec.accelerator.name .. " in the catalog", 0) end
  local want = {}
  for _, n in ipairs(names) do want[n] = true end
  local v = self:api():request("GET", "/instance-types")
  local offers = {}
  for name, t in pairs(v and v.data or {}) do
    local it = t.instance_type or {}
    local specs = it.specs or {}
    if want[name] and (not spec.disk_gb or (tonumber(specs.storage_gib) or 0) >= spec.disk_gb) then
      for _, r in ipairs(t.regions_with_capacity_available or {}) do
        if not spec.region or spec.region == r.name then
          local gmem = tostring(it.gpu_description or ""):match("%((%d+) GB")
          offers[#offers + 1] = { type = name, gpu_name = spec.accelerator.name, gpus = tonumber(specs.gpus),
            gpu_memory_gb = tonumber(gmem), vcpus = tonumber(specs.vcpus), memory_gb = tonumber(specs.memory_gib),
            spot = false, price = tonumber(it.price_cents_per_hour) and tonumber(it.price_cents_per_hour) / 100,
            where = r.name, region = r.name }
        end
      end
    end
  end
  return offers
end

function Driver:prepare(ctx)
  local line = ctx.public_key:match("^(%S+%s+%S+)")
  local v = self:api():request("GET", "/ssh-keys")
  for _, k in ipairs(v and v.data or {}) do
    if type(k.public_key) == "string" and k.public_key:find(line, 1, true) then
      self.key_name = k.name
      return
    end
  end
  self.key_name = "skyrun-" .. cloud.sha256_hex(line):sub(1, 16)
  self:api():request("POST", "/ssh-keys", { name = self.key_name, public_key = ctx.public_key })
end

function Driver:create(offer, count, min_count, ctx)
  local ok, v = pcall(self:api().request, self:api(), "POST", "/instance-operations/launch", {
    region_name = offer.region, instance_type_name = offer.type, ssh_key_names = { self.key_name }, quantity = count,
    name = "skyrun " .. ctx.pool_id .. " " .. ctx.pool })
  if not ok then
    local e = v
    local code = type(e) == "table" and type(e.body) == "table" and type(e.body.error) == "table" and e.body.error.code
    if code == "instance-operations/launch/insufficient-capacity" then e.capacity = true end
    if code == "global/quota-exceeded" then e.quota = true end
    error(e, 0)
  end
  local ids = {}
  for _, id in ipairs(v and v.data and v.data.instance_ids or {}) do ids[#ids + 1] = tostring(id) end
  local now = monotonic()
  for _, id in ipairs(ids) do self.created_at[id] = now end
  return ids
end

-- Once the machine answers: the API key into a file only the login user can read (through
-- stdin), then the timer that terminates the machine through the API when its ttl is over
-- (counted from its launch).
function Driver:after_ssh(session, id, ctx)
  if not ctx.ttl or ctx.ttl <= 0 then return end
  local left = math.max(1, math.floor(ctx.ttl - (monotonic() - (self.created_at[id] or monotonic()))))
  local terminate = "curl -s -K \"$HOME/.skyrun/ttl.curl\" -X POST -H 'Content-Type: application/json' " ..
    "-d '{\"instance_ids\":[\"" .. id .. "\"]}' " .. self.endpoint .. "/instance-operations/terminate"
  local script = table.concat({
    "umask 077 && mkdir -p \"$HOME/.skyrun\"",
    "{ printf 'header = \"Authorization: Bearer '; cat; printf '\"\\n'; } > \"$HOME/.skyrun/ttl.curl\"",
    ttl.timer_line(left, terminate),
  }, "\n")
  local code, _, err = session:run("sh -c " .. shq(script), { stdin = self._key, timeout = 60 })
  if code ~= 0 then error("lambda: cannot set up the ttl timer on " .. id .. ": " .. tostring(err), 0) end
end

local states = { booting = "pending", active = "running", unhealthy = "running", terminating = "terminated",
                 terminated = "terminated" }

local function view(i)
  return { id = tostring(i.id), state = states[tostring(i.status)] or tostring(i.status), address = i.ip ~= "" and i.ip or nil,
           private_address = i.private_ip ~= "" and i.private_ip or nil, name = i.name,
           type = type(i.instance_type) == "table" and i.instance_type.name or nil,
           reason = i.status == "unhealthy" and "unhealthy" or nil }
end

function Driver:status(ids)
  local out = {}
  for _, id in ipairs(ids) do
    local v = self:api():get_optional("/instances/" .. id)
    if type(v) == "table" and type(v.data) == "table" then out[id] = view(v.data) end
  end
  return out
end

function Driver:terminate(ids)
  if #ids == 0 then return end
  self:api():request("POST", "/instance-operations/terminate", { instance_ids = ids })
end

function Driver:list(pool_id)
  local v = self:api():request("GET", "/instances")
  local out = {}
  for _, i in ipairs(v and v.data or {}) do
    local name = tostring(i.name or "")
    if name:match("^skyrun sky%-") and (not pool_id or name:find("skyrun " .. pool_id .. " ", 1, true) == 1) and
       i.status ~= "terminated" then
      out[#out + 1] = view(i)
    end
  end
  return out
end

local options = { endpoint = "string" }
for k, v in pairs(machines.options) do options[k] = v end

local function driver_of(opts)
  return setmetatable({ endpoint = (opts.endpoint or M.DEFAULT_ENDPOINT):gsub("/+$", ""), created_at = {} }, Driver)
end

function M.list(record) return driver_of(record.config or {}):list(record.pool_id) end
function M.terminate(record, ids) return driver_of(record.config or {}):terminate(ids) end

return setmetatable(M, {
  __call = function(_, opts)
    opts = core.check_options(opts, options, "sky.providers.lambda", 3)
    return machines.new(driver_of(opts), "sky.providers.lambda", opts)
  end,
})
