-- sky.providers.aws{region=, profile=, subnet=, ...}: machines on EC2, through the EC2 API (SigV4
-- over libcurl; credentials, region and endpoints as the AWS CLI finds them: sky.cloud.aws_config).
-- The pool's accelerator picks the candidate instance types from the catalog
-- (lua/sky/accelerators.lua), DescribeInstanceTypes says what they hold, DescribeSpotPriceHistory
-- and the Price List API what they cost per zone; the plan is the cheapest fit. Machines boot the
-- Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04; AWS's public SSM parameter), log in
-- as "ubuntu" with skyrun's key (imported as a key pair), in a security group "skyrun" that lets
-- SSH in and lets the pool's machines reach each other; spot through InstanceMarketOptions;
-- InstanceInitiatedShutdownBehavior = terminate plus a shutdown timer in the user data for ttl.
-- Every instance is tagged skyrun-pool = <pool id>.
--   region           default: the pool's region=, AWS_REGION, AWS_DEFAULT_REGION, the profile's
--   profile          a profile of ~/.aws/credentials or ~/.aws/config (default: AWS_PROFILE, "default")
--   subnet           a subnet id (default: the default VPC's subnets, one offer per zone)
--   security_group   a security group id to use instead of "skyrun"
--   ami              an image id instead of the SSM parameter's
--   ami_parameter    the SSM parameter naming the image
--   instance_types   candidate types instead of the catalog's (also for pools without an accelerator)
--   endpoint_url     the EC2/SSM/Pricing endpoint (a URL, or {ec2=, ssm=, pricing=}); default as the
--                    AWS CLI: AWS_ENDPOINT_URL_<SERVICE>, AWS_ENDPOINT_URL, the profile's endpoint_url
--   ssh_cidr         who may reach port 22 (default "0.0.0.0/0")
--   and the options of every cloud provider (lua/sky/cloud/machines.lua): key, ssh_user ("ubuntu"),
--   connect_timeout, ssh_timeout, provision_timeout, poll_interval, max_attempts, workdir,
--   install_libraries, quiet
local core = require "sky.core"
local machines = require "sky.cloud.machines"
local aws_api = require "sky.cloud.aws_api"
local xml = require "sky.cloud.xml"
local ttl = require "sky.cloud.ttl"
local cloud = require "sky.cloud.core"
local accelerators = require "sky.accelerators"

local M = {}

M.DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
M.POOL_TAG = "skyrun-pool"
-- machines for pools without an accelerator
M.CPU_TYPES = { "m6i.large", "m6i.xlarge", "m6i.2xlarge", "m6i.4xlarge", "m6i.8xlarge", "c6i.large", "c6i.xlarge",
                "c6i.2xlarge", "c6i.4xlarge", "r6i.large", "r6i.xlarge", "r6i.2xlarge" }

local capacity_codes = {
  InsufficientInstanceCapacity = true, InsufficientHostCapacity = true, InsufficientCapacity = true,
  InsufficientReservedInstanceCapacity = true, SpotMaxPriceTooLow = true, Unsupported = true,
  InsufficientFreeAddressesInSubnet = true,
}
local quota_codes = { VcpuLimitExceeded = true, MaxSpotInstanceCountExceeded = true, InstanceLimitExceeded = true }

local Driver = {}
Driver.__index = Driver
Driver.name = "aws"
Driver.ssh_user = "ubuntu"
Driver.nodes_reach_each_other = true  -- the security group lets them

function Driver:api()
  if not self.client then
    self.client = aws_api.client { profile = self.profile, region = self.region, endpoint_url = self.endpoint_url }
  end
  return self.client
end

-- An EC2 call whose AwsError is made plain: UnauthorizedOperation without its encoded blob,
-- quota errors with where to raise the limit.
function Driver:ec2(action, params)
  local ok, v = pcall(self:api().ec2, self:api(), action, params)
  if ok then return v end
  if aws_api.is_error(v) then
    if v.code == "UnauthorizedOperation" then
      v.message = v.message:gsub("%s*Encoded authorization failure message:.*$", "") ..
        " (the credentials of " .. self:api().cfg.credentials.source .. " lack ec2:" .. action .. ")"
    elseif quota_codes[v.code] then
      v.quota = true
      v.message = v.message .. " (an account limit: ask AWS for more in Service Quotas, EC2)"
    elseif capacity_codes[v.code] then
      v.capacity = true
    end
  end
  error(v, 0)
end

function Driver:describe() return "aws{" .. (self.region and ("region=" .. self.region) or "") .. "}" end

function Driver:config()
  local c = self:api()
  local cfg = { region = c.region, profile = self.profile }
  local ep = c.cfg.endpoint("ec2", "ec2." .. c.region .. ".amazonaws.com")
  if not ep:match("%.amazonaws%.com$") then cfg.endpoint_url = ep end
  return cfg
end

-- DescribeInstanceTypes of the candidates; types this region lacks are dropped (EC2 names them in
-- an InvalidInstanceType error).
function Driver:_instance_types(names)
  local list = {}
  for _, n in ipairs(names) do list[#list + 1] = n end
  for _ = 1, 3 do
    if #list == 0 then return {} end
    local ok, v = pcall(self.ec2, self, "DescribeInstanceTypes", { InstanceType = list })
    if ok then return xml.list(v.instanceTypeSet) end
    if not (type(v) == "table" and v.code == "InvalidInstanceType") then error(v, 0) end
    local gone = {}
    for n in (v.message:match("%[(.-)%]") or ""):gmatch("[^,%s]+") do gone[n] = true end
    if next(gone) == nil then error(v, 0) end
    local keep = {}
    for _, n in ipairs(list) do if not gone[n] then keep[#keep + 1] = n end end
    list = keep
  end
  return {}
end

-- zone -> subnet id: the subnet= option's, or the default VPC's default subnet of each zone.
function Driver:_subnets()
  if self.subnet_of then return self.subnet_of end
  local out = {}
  if self.subnet then
    local v = self:ec2("DescribeSubnets", { SubnetId = { self.subnet } })
    for _, s in ipairs(xml.list(v.subnetSet)) do
      out[s.availabilityZone] = s.subnetId
      self.vpc = s.vpcId
    end
  else
    local vpcs = xml.list(self:ec2("DescribeVpcs", { Filter = { { Name = "is-default", Value = { "true" } } } }).vpcSet)
    if #vpcs == 0 then
      error("AWS region " .. self:api().region .. " has no default VPC: pass sky.providers.aws{subnet = \"subnet-...\"}", 0)
    end
    self.vpc = vpcs[1].vpcId
    local v = self:ec2("DescribeSubnets", { Filter = { { Name = "vpc-id", Value = { self.vpc } },
                                                       { Name = "default-for-az", Value = { "true" } } } })
    for _, s in ipairs(xml.list(v.subnetSet)) do out[s.availabilityZone] = s.subnetId end
  end
  self.subnet_of = out
  return out
end

function Driver:offers(spec)
  local c = self:api()
  if self.region and spec.region and self.region ~= spec.region then
    error("sky.providers.aws{region = \"" .. self.region .. "\"} and the pool's region = \"" .. spec.region .. "\" differ", 0)
  end
  local names = self.instance_types
  if not names then
    if spec.accelerator then
      names = spec.accelerator.entry.aws
      if not names then
        local on = {}
        for _, p in ipairs({ "runpod", "lambda", "vastai" }) do if spec.accelerator.entry[p] then on[#on + 1] = p end end
        error("AWS sells no " .. spec.accelerator.name .. " (the catalog has it on " .. table.concat(on, ", ") .. ")", 0)
      end
    else
      names = M.CPU_TYPES
    end
  end
  local infos = self:_instance_types(names)
  local types = {}
  for _, t in ipairs(infos) do types[#types + 1] = t.instanceType end
  if #types == 0 then return {} end
  local spot = {}
  if spec.allocation ~= "on-demand" then
    local v = self:ec2("DescribeSpotPriceHistory", { InstanceType = types, ProductDescription = { "Linux/UNIX" },
      StartTime = os.date("!%Y-%m-%dT%H:%M:%SZ") })
    for _, p in ipairs(xml.list(v.spotPriceHistorySet)) do
      local key = p.instanceType .. "@" .. p.availabilityZone
      if not spot[key] or p.timestamp > spot[key].timestamp then spot[key] = p end
    end
  end
  local subnets = self:_subnets()
  local zones = {}
  for z in pairs(subnets) do zones[#zones + 1] = z end
  table.sort(zones)
  local offers = {}
  for _, t in ipairs(infos) do
    local gpus, gname, gmem = 0, nil, nil
    for _, g in ipairs(xml.list(t.gpuInfo and t.gpuInfo.gpus)) do
      gpus = gpus + tonumber(g.count)
      gname = g.name
      gmem = tonumber(g.memoryInfo and g.memoryInfo.sizeInMiB) and tonumber(g.memoryInfo.sizeInMiB) / 1024
    end
    local base = { type = t.instanceType, gpus = gpus, gpu_name = gname, gpu_memory_gb = gmem,
                   vcpus = tonumber(t.vCpuInfo and t.vCpuInfo.defaultVCpus), memory_gb = tonumber(t.memoryInfo.sizeInMiB) / 1024,
                   cpu_ok = self.instance_types ~= nil }
    local on_demand = spec.allocation ~= "spot" and c:on_demand_price(t.instanceType) or nil
    for _, z in ipairs(zones) do
      local function add(is_spot, price)
        local o = { spot = is_spot, price = price, where = z, zone = z, subnet = subnets[z] }
        for k, v in pairs(base) do o[k] = v end
        offers[#offers + 1] = o
      end
      local sp = spot[t.instanceType .. "@" .. z]
      if sp then add(true, tonumber(sp.spotPrice)) end
      if on_demand then add(false, on_demand) end
    end
  end
  return offers
end

function Driver:prepare(ctx)
  local c = self:api()
  -- the key pair: skyrun's public key, under a name made from it
  local name = "skyrun-" .. cloud.sha256_hex(ctx.public_key:match("^(%S+%s+%S+)")):sub(1, 16)
  local have = xml.list(self:ec2("DescribeKeyPairs", { Filter = { { Name = "key-name", Value = { name } } } }).keySet)
  if #have == 0 then
    self:ec2("ImportKeyPair", { KeyName = name, PublicKeyMaterial = cloud.base64(ctx.public_key) })
  end
  self.key_name = name
  -- the security group
  self:_subnets()
  if self.security_group then
    self.group_id = self.security_group
  else
    local groups = xml.list(self:ec2("DescribeSecurityGroups", { Filter = {
      { Name = "group-name", Value = { "skyrun" } }, { Name = "vpc-id", Value = { self.vpc } } } }).securityGroupInfo)
    if #groups > 0 then
      self.group_id = groups[1].groupId
    else
      local v = self:ec2("CreateSecurityGroup", { GroupName = "skyrun", VpcId = self.vpc,
        GroupDescription = "skyrun: SSH in, and all traffic between the machines of this group",
        TagSpecification = { { ResourceType = "security-group", Tag = { { Key = "skyrun", Value = "true" } } } } })
      self.group_id = v.groupId
      self:ec2("AuthorizeSecurityGroupIngress", { GroupId = self.group_id, IpPermissions = {
        { IpProtocol = "tcp", FromPort = 22, ToPort = 22, IpRanges = { { CidrIp = self.ssh_cidr,
          Description = "SSH from the skyrun driver" } } },
        { IpProtocol = "-1", Groups = { { GroupId = self.group_id, Description = "the pool's machines" } } },
      } })
    end
  end
  -- the image and its root device
  self.image_id = self.ami or c:ssm_parameter(self.ami_parameter)
  if not self.image_id then error("AWS SSM parameter " .. self.ami_parameter .. " holds no image id", 0) end
  local images = xml.list(self:ec2("DescribeImages", { ImageId = { self.image_id } }).imagesSet)
  self.root_device = images[1] and images[1].rootDeviceName or "/dev/sda1"
end

function Driver:create(offer, count, min_count, ctx)
  local tags = { { Key = M.POOL_TAG, Value = ctx.pool_id }, { Key = "Name", Value = "skyrun " .. ctx.pool } }
  local params = {
    ImageId = self.image_id, InstanceType = offer.type, MinCount = min_count, MaxCount = count, KeyName = self.key_name,
    ClientToken = "skyrun-" .. cloud.random_hex(12),
    NetworkInterface = { { DeviceIndex = 0, SubnetId = offer.subnet, AssociatePublicIpAddress = true,
                           DeleteOnTermination = true, SecurityGroupId = { self.group_id } } },
    UserData = cloud.base64(ttl.user_data(ctx.ttl, ctx.pool_id)),
    InstanceInitiatedShutdownBehavior = "terminate",
    TagSpecification = { { ResourceType = "instance", Tag = tags }, { ResourceType = "volume", Tag = tags } },
  }
  if offer.spot then
    params.InstanceMarketOptions = { MarketType = "spot",
      SpotOptions = { SpotInstanceType = "one-time", InstanceInterruptionBehavior = "terminate" } }
  end
  if ctx.disk_gb then
    params.BlockDeviceMapping = { { DeviceName = self.root_device,
      Ebs = { VolumeSize = ctx.disk_gb, VolumeType = "gp3", DeleteOnTermination = true } } }
  end
  local v = self:ec2("RunInstances", params)
  local ids = {}
  for _, i in ipairs(xml.list(v.instancesSet)) do ids[#ids + 1] = i.instanceId end
  return ids
end

local reasons = {
  ["Server.SpotInstanceTermination"] = "spot interruption: AWS reclaimed the capacity",
  ["Client.InstanceInitiatedShutdown"] = "it shut itself down (its ttl)",
  ["Client.UserInitiatedShutdown"] = "terminated by a user",
  ["Server.InsufficientInstanceCapacity"] = "no capacity",
}

local function view(i)
  local reason = i.stateReason and i.stateReason.code
  return { id = i.instanceId, state = i.instanceState and i.instanceState.name, address = i.ipAddress ~= "" and i.ipAddress or nil,
           private_address = i.privateIpAddress ~= "" and i.privateIpAddress or nil,
           reason = reason and (reasons[reason] or reason), type = i.instanceType, launched = i.launchTime,
           spot = i.instanceLifecycle == "spot", zone = i.placement and i.placement.availabilityZone }
end

function Driver:describe_instances(params)
  local out = {}
  local ok, v = pcall(self.ec2, self, "DescribeInstances", params)
  if not ok then
    if type(v) == "table" and v.code == "InvalidInstanceID.NotFound" then return out end  -- not visible yet
    error(v, 0)
  end
  for _, r in ipairs(xml.list(v.reservationSet)) do
    for _, i in ipairs(xml.list(r.instancesSet)) do out[#out + 1] = view(i) end
  end
  return out
end

function Driver:status(ids)
  local out = {}
  for _, d in ipairs(self:describe_instances({ InstanceId = ids })) do out[d.id] = d end
  return out
end

function Driver:terminate(ids)
  if #ids == 0 then return end
  local ok, e = pcall(self.ec2, self, "TerminateInstances", { InstanceId = ids })
  if ok then return end
  if type(e) == "table" and e.code == "InvalidInstanceID.NotFound" and #ids > 1 then
    for _, id in ipairs(ids) do self:terminate({ id }) end
    return
  end
  if not (type(e) == "table" and e.code == "InvalidInstanceID.NotFound") then error(e, 0) end
end

function Driver:list(pool_id)
  local filters = { { Name = "instance-state-name", Value = { "pending", "running", "stopping", "stopped", "shutting-down" } } }
  if pool_id then
    filters[#filters + 1] = { Name = "tag:" .. M.POOL_TAG, Value = { pool_id } }
  else
    filters[#filters + 1] = { Name = "tag-key", Value = { M.POOL_TAG } }
  end
  return self:describe_instances({ Filter = filters })
end

local options = {
  region = "string", profile = "string", subnet = "string", security_group = "string", ami = "string",
  ami_parameter = "string", instance_types = "table", endpoint_url = "string|table", ssh_cidr = "string",
}
for k, v in pairs(machines.options) do options[k] = v end

local function driver_of(opts)
  return setmetatable({
    region = opts.region, profile = opts.profile, subnet = opts.subnet, security_group = opts.security_group,
    ami = opts.ami, ami_parameter = opts.ami_parameter or M.DLAMI_PARAMETER, instance_types = opts.instance_types,
    endpoint_url = opts.endpoint_url, ssh_cidr = opts.ssh_cidr or "0.0.0.0/0",
  }, Driver)
end

--- For `skyrun instances` / `skyrun down`: the instances of a recorded pool, and their end.
function M.list(record) return driver_of(record.config or {}):list(record.pool_id) end
function M.terminate(record, ids) return driver_of(record.config or {}):terminate(ids) end

return setmetatable(M, {
  __call = function(_, opts)
    opts = core.check_options(opts, options, "sky.providers.aws", 3)
    if opts.instance_types then
      for i, t in ipairs(opts.instance_types) do
        if type(t) ~= "string" then error("sky.providers.aws: instance_types[" .. i .. "] must be a string", 2) end
      end
    end
    return machines.new(driver_of(opts), "sky.providers.aws", opts)
  end,
})
