-- sky.cloud.aws_api: the AWS APIs the aws provider calls, over libcurl with our SigV4 signer:
-- EC2 (Query protocol, XML answers), SSM and the Price List API (JSON protocol). Throttling and
-- server errors are retried with exponential backoff and jitter, as the AWS SDKs' standard mode;
-- other errors raise an AwsError whose message is plain ("AWS EC2 RunInstances: <Code>: <text>").
-- Credentials never appear in messages: they travel in headers, and sky.secret masks them.
local core = require "sky.cloud.core"
local sigv4 = require "sky.cloud.sigv4"
local xml = require "sky.cloud.xml"
local config = require "sky.cloud.aws_config"
local secret = require "sky.secret"

local M = {}

M.EC2_VERSION = "2016-11-15"

local AwsError = {}
AwsError.__index = AwsError
AwsError.__tostring = function(e) return e.message end
M.AwsError = AwsError
function M.is_error(e) return getmetatable(e) == AwsError end

local throttling = {
  RequestLimitExceeded = true, Throttling = true, ThrottlingException = true, ThrottledException = true,
  RequestThrottledException = true, TooManyRequestsException = true, SlowDown = true, RequestThrottled = true,
  EC2ThrottledException = true, PriorRequestNotComplete = true,
}
local transient = { InternalError = true, InternalFailure = true, ServiceUnavailable = true, Unavailable = true }

local Client = {}
Client.__index = Client

--- A client. opts: profile, region, endpoint_url, max_attempts (8), backoff (base seconds, 0.25),
--- sleep (function(seconds)), timeout (60). Raises when there are no credentials or region.
function M.client(opts)
  opts = opts or {}
  local cfg = config.resolve { profile = opts.profile, region = opts.region, endpoint_url = opts.endpoint_url }
  if not cfg.region then
    error("no AWS region: pass sky.providers.aws{region=} or the pool's region=, or set AWS_REGION, or a region in " ..
      "profile '" .. cfg.profile .. "' of ~/.aws/config", 0)
  end
  return setmetatable({
    cfg = cfg, region = cfg.region, profile = cfg.profile, max_attempts = opts.max_attempts or 8,
    backoff = opts.backoff or 0.25, sleep = opts.sleep or require("sky.pool.core").sleep, timeout = opts.timeout or 60,
    calls = {},
  }, Client)
end

local function fail(fields)
  fields.message = secret.mask(fields.message)
  return setmetatable(fields, AwsError)
end

-- One signed request with retries. Returns the response; raises AwsError (or a transport error
-- after the last attempt).
function Client:_send(service, scope_service, region, url, headers, body, parse_error, action)
  local host_port = url:match("^https?://([^/]+)")
  local path = url:match("^https?://[^/]+(/.*)$") or "/"
  local attempt = 0
  while true do
    attempt = attempt + 1
    local h = {}
    for k, v in pairs(headers) do h[k] = v end
    h["Expect"] = ""  -- no 100-continue round trip (not signed)
    sigv4.sign({ method = "POST", host = host_port, path = path, headers = h, body = body },
      self.cfg.credentials, { region = region, service = scope_service })
    local ok, r = pcall(core.http, { method = "POST", url = url, headers = h, body = body, timeout = self.timeout })
    local code, msg, retry
    if not ok then
      if tostring(r):find("interrupted!", 1, true) then error(r, 0) end
      code, msg, retry = "Transport", tostring(r), true
    elseif r.status >= 200 and r.status < 300 then
      self.calls[#self.calls + 1] = action
      return r
    else
      code, msg = parse_error(r)
      retry = throttling[code] or transient[code] or r.status >= 500 or r.status == 429
    end
    if not retry or attempt >= self.max_attempts then
      local e = fail({ service = service, action = action, code = code, status = ok and r.status or 0,
        message = "AWS " .. service .. " " .. action .. ": " .. code .. ": " .. tostring(msg) })
      if retry then e.message = e.message .. " (after " .. attempt .. " attempts)" end
      error(e, 0)
    end
    -- "full jitter": a random wait up to base * 2^attempt, capped at 20 s
    local cap = math.min(20, self.backoff * 2 ^ attempt)
    self.sleep(cap * (0.5 + math.random() / 2))
  end
end

local function flatten(prefix, v, out)
  if type(v) == "table" then
    if v[1] ~= nil then
      for i, x in ipairs(v) do flatten(prefix .. "." .. i, x, out) end
    else
      for k, x in pairs(v) do flatten(prefix == "" and k or (prefix .. "." .. k), x, out) end
    end
  elseif type(v) == "boolean" then
    out[prefix] = v and "true" or "false"
  else
    out[prefix] = tostring(v)
  end
end
M.flatten = function(params) local out = {} flatten("", params, out) return out end

local function ec2_error(r)
  local ok, _, v = pcall(xml.decode, r.body)
  if ok and type(v) == "table" then
    local errs = v.Errors and v.Errors.Error
    if errs and errs[1] then errs = errs[1] end
    if errs and errs.Code then return errs.Code, errs.Message end
  end
  return "HTTP" .. r.status, (r.body or ""):sub(1, 300)
end

--- Calls an EC2 action with params (a nested table in EC2's wire names: {Filter = {{Name=, Value={...}}}}).
--- Returns the decoded answer (see sky.cloud.xml).
function Client:ec2(action, params)
  local flat = M.flatten(params or {})
  flat.Action, flat.Version = action, M.EC2_VERSION
  local keys = {}
  for k in pairs(flat) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = sigv4.uri_encode(k) .. "=" .. sigv4.uri_encode(flat[k]) end
  local body = table.concat(parts, "&")
  local url = self.cfg.endpoint("ec2", "ec2." .. self.region .. ".amazonaws.com") .. "/"
  local r = self:_send("EC2", "ec2", self.region, url, { ["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8" },
    body, ec2_error, action)
  local ok, name, value = pcall(xml.decode, r.body)
  if not ok then error(fail({ service = "EC2", action = action, code = "BadResponse", status = r.status,
    message = "AWS EC2 " .. action .. ": the answer is not XML: " .. tostring(name) }), 0) end
  return value, name
end

local json = require "transformers.train_core"

local function json_error(r)
  local ok, v = pcall(json.json_decode, r.body, "AWS error")
  if ok and type(v) == "table" then
    local code = v.__type or v.code or ("HTTP" .. r.status)
    return tostring(code):gsub("^.*#", ""), v.message or v.Message or ""
  end
  return "HTTP" .. r.status, (r.body or ""):sub(1, 300)
end

-- A JSON-protocol call (SSM, Pricing).
function Client:_json(service, scope_service, region, host, target, params)
  local body = json.json_encode(params)
  local url = self.cfg.endpoint(scope_service, host) .. "/"
  local r = self:_send(service, scope_service, region, url,
    { ["Content-Type"] = "application/x-amz-json-1.1", ["X-Amz-Target"] = target }, body, json_error, target:match("%.(.*)$"))
  return json.json_decode(r.body, "the answer of AWS " .. service .. " " .. target)
end

--- SSM GetParameter: the value of a parameter (AWS's public ones under /aws/service/...).
function Client:ssm_parameter(name)
  local v = self:_json("SSM", "ssm", self.region, "ssm." .. self.region .. ".amazonaws.com", "AmazonSSM.GetParameter",
    { Name = name })
  return v.Parameter and v.Parameter.Value
end

--- The on-demand Linux price (USD per hour) of an instance type in the client's region, from
--- the Price List API (GetProducts), or nil when AWS lists none.
function Client:on_demand_price(instance_type)
  local filters = {}
  for _, f in ipairs({ { "instanceType", instance_type }, { "regionCode", self.region }, { "operatingSystem", "Linux" },
                       { "tenancy", "Shared" }, { "preInstalledSw", "NA" }, { "capacitystatus", "Used" } }) do
    filters[#filters + 1] = { Type = "TERM_MATCH", Field = f[1], Value = f[2] }
  end
  local v = self:_json("Pricing", "pricing", "us-east-1", "api.pricing.us-east-1.amazonaws.com",
    "AWSPriceListService.GetProducts", { ServiceCode = "AmazonEC2", Filters = filters, FormatVersion = "aws_v1",
    MaxResults = 10 })
  for _, raw in ipairs(v.PriceList or {}) do
    local product = type(raw) == "string" and json.json_decode(raw, "a price list entry") or raw
    for _, term in pairs(product.terms and product.terms.OnDemand or {}) do
      for _, dim in pairs(term.priceDimensions or {}) do
        local usd = tonumber(dim.pricePerUnit and dim.pricePerUnit.USD)
        if usd and usd > 0 then return usd end
      end
    end
  end
  return nil
end

return M
