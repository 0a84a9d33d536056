-- The pieces under the cloud providers, one at a time: SigV4 against botocore's signer, the XML
-- reader, credentials and region as the AWS CLI finds them, offer selection and the plan's
-- refusal, the ttl script, the state records.
local T = require "testlib"
local pcore = require "sky.pool.core"
local monotonic = require("sky.core").monotonic
local sigv4 = require "sky.cloud.sigv4"
local xml = require "sky.cloud.xml"
local config = require "sky.cloud.aws_config"
local machines = require "sky.cloud.machines"
local spec = require "sky.spec"
local ttl = require "sky.cloud.ttl"
local secret = require "sky.secret"

local q = T.shell_quote

T.test("SigV4 signatures are the ones botocore's signer computes", function()
  local dir = T.tmpdir()
  local cases = {
    { body = "Action=DescribeRegions&Version=2016-11-15", token = nil, service = "ec2", region = "eu-west-3" },
    { body = '{"Name":"/aws/service/x"}', token = "FwoGZXIvYXdzE+/tok==", service = "ssm", region = "us-east-1" },
    { body = "", token = nil, service = "pricing", region = "us-east-1" },
  }
  for i, c in ipairs(cases) do
    local req = { method = "POST", host = "10.1.2.3:8443", path = "/", body = c.body,
                  headers = { ["Content-Type"] = "application/x-amz-json-1.1", ["X-Amz-Target"] = "A.B  c" } }
    sigv4.sign(req, { access_key_id = "AKIDEXAMPLE", secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
      session_token = c.token }, { region = c.region, service = c.service }, 1700000000 + i)
    local lines = {}
    for k, v in pairs(req.headers) do lines[#lines + 1] = k .. "\t" .. v end
    T.write_file(dir .. "/h" .. i, table.concat(lines, "\n") .. "\n")
    T.write_file(dir .. "/b" .. i, c.body)
    T.write_file(dir .. "/c" .. i, c.service .. " " .. c.region .. " " .. (c.token or ""))
  end
  local out, err, code = T.sh("python3 - " .. q(dir), { stdin = [[
import sys
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
d = sys.argv[1]
for i in (1, 2, 3):
    h = dict(l.split("\t", 1) for l in open("%s/h%d" % (d, i)).read().splitlines())
    body = open("%s/b%d" % (d, i), "rb").read()
    service, region, *tok = open("%s/c%d" % (d, i)).read().split(" ")
    auth = h.pop("Authorization")
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    req = AWSRequest(method="POST", url="http://10.1.2.3:8443/", data=body,
                     headers={k: v for k, v in h.items() if k.lower() in signed})
    req.context["timestamp"] = h["X-Amz-Date"]
    s = SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", tok[0] or None), service, region)
    ok = s.signature(s.string_to_sign(req, s.canonical_request(req)), req) == auth.split("Signature=")[1]
    print(i, ok, ",".join(signed))
]] })
  T.eq(code, 0, err)
  T.eq(out, "1 True content-type,host,x-amz-date,x-amz-target\n" ..
    "2 True content-type,host,x-amz-date,x-amz-security-token,x-amz-target\n" ..
    "3 True content-type,host,x-amz-date,x-amz-target\n")
end)

T.test("EC2's XML reads into tables, lists of <item> into arrays", function()
  local name, v = xml.decode([==[<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r-1</requestId>
<reservationSet><item><instancesSet><item><instanceId>i-1</instanceId><tagSet><item><key>a&amp;b</key><value>&#x4e2d;&lt;</value></item></tagSet>
<groupSet/></item></instancesSet></item></reservationSet><note><![CDATA[<raw>]]></note></DescribeInstancesResponse>]==])
  T.eq(name, "DescribeInstancesResponse")
  local inst = v.reservationSet[1].instancesSet[1]
  T.eq(inst.instanceId, "i-1")
  T.eq(inst.tagSet[1], { key = "a&b", value = "中<" })
  T.eq(xml.list(inst.groupSet), {})
  T.eq(v.note, "<raw>")
  T.raises(function() xml.decode("<a><b></a>") end, "does not close")
end)

-- Writes ~/.aws files into a fresh HOME and sets the environment; returns a function that undoes it.
local function aws_home(files, env)
  local home = T.tmpdir()
  T.exec("mkdir -p " .. q(home .. "/.aws"))
  for name, text in pairs(files) do T.write_file(home .. "/.aws/" .. name, text) end
  local saved = {}
  env = env or {}
  env.HOME = home
  for _, k in ipairs({ "HOME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
                       "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_CONFIG_FILE",
                       "AWS_SHARED_CREDENTIALS_FILE" }) do
    saved[k] = os.getenv(k) or ""
    pcore.setenv(k, env[k] or "")
  end
  return function() for k, v in pairs(saved) do pcore.setenv(k, v) end end
end

T.test("credentials, region and endpoints come from where the AWS CLI looks", function()
  local undo = aws_home({
    credentials = "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = secretdefault1\n" ..
      "[work]\naws_access_key_id=AKIAWORK\naws_secret_access_key=secretwork2\naws_session_token = tokenwork3\n",
    config = "[default]\nregion = eu-west-1\n[profile work]\nregion = ap-south-1\nendpoint_url = http://127.0.0.1:9\n" ..
      "[profile role]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = default\n",
  })
  local ok, err = pcall(function()
    local c = config.resolve {}
    T.eq({ c.credentials.access_key_id, c.region, c.endpoint("ec2", "ec2.eu-west-1.amazonaws.com") },
      { "AKIADEFAULT", "eu-west-1", "https://ec2.eu-west-1.amazonaws.com" })
    T.eq(secret.mask("x secretdefault1 y"), "x *** y")
    -- the driver's credentials are masked but never sent to workers (the pool's setup frame)
    for _, v in ipairs(secret.list()) do T.ok(v ~= "secretdefault1", "the AWS secret key would go to the workers") end
    c = config.resolve { profile = "work" }
    T.eq({ c.credentials.access_key_id, c.credentials.session_token, c.region, c.endpoint("ec2", "x") },
      { "AKIAWORK", "tokenwork3", "ap-south-1", "http://127.0.0.1:9" })
    -- the environment's keys win over AWS_PROFILE, not over an explicit profile
    pcore.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    pcore.setenv("AWS_SECRET_ACCESS_KEY", "secretenv4")
    pcore.setenv("AWS_PROFILE", "work")
    c = config.resolve {}
    T.eq({ c.credentials.access_key_id, c.region }, { "AKIAENV", "ap-south-1" })
    T.eq(config.resolve({ profile = "work" }).credentials.access_key_id, "AKIAWORK")
    pcore.setenv("AWS_REGION", "us-west-2")
    pcore.setenv("AWS_ENDPOINT_URL_EC2", "http://10.0.0.1:1/")
    c = config.resolve {}
    T.eq({ c.region, c.endpoint("ec2", "x"), c.endpoint("ssm", "ssm.x") }, { "us-west-2", "http://10.0.0.1:1", "http://127.0.0.1:9" })
    T.raises(function() config.resolve { profile = "role" } end, "not supported yet: AWS profile 'role' gets its credentials through role_arn")
    T.raises(function() config.resolve { profile = "nope" } end, "AWS profile 'nope' is in neither")
  end)
  undo()
  if not ok then error(err, 0) end
  undo = aws_home({})
  ok, err = pcall(function()
    T.raises(function() config.resolve {} end, "no AWS credentials found")
  end)
  undo()
  if not ok then error(err, 0) end
end)

local function offer(t, gpus, price, spot, where)
  return { type = t, gpu_name = "A100", gpus = gpus, gpu_memory_gb = 40, vcpus = 8 * gpus, memory_gb = 100 * gpus,
           price = price, spot = spot, where = where }
end

T.test("the plan is the cheapest offer that fits, spot first, within max_hourly_cost", function()
  local offers = { offer("big", 8, 30, false, "z1"), offer("big", 8, 10, true, "z1"), offer("small", 1, 4, false, "z2"),
                   offer("small", 1, 2, true, "z3"), offer("small", 1, 1.5, true, "z4") }
  local function plan(opts) return machines.choose(offers, spec.from_options(opts), "test") end
  local p = plan { accelerator = "A100" }
  T.eq({ p[1].type, p[1].where, p[1].spot, p[1].nodes }, { "small", "z4", true, 1 })
  T.eq(#p, 5)
  T.eq({ p[4].spot, p[5].spot }, { false, false })  -- spot-if-available: on-demand after every spot offer
  p = plan { accelerator = "A100:4" }
  T.eq({ p[1].type, p[1].price }, { "big", 10 })
  p = plan { accelerator = "A100", allocation = "on-demand" }
  T.eq({ p[1].type, p[1].price, #p }, { "small", 4, 2 })
  p = plan { accelerator = "A100", allocation = "cheapest", nodes = 3 }
  T.eq({ p[1].price, p[1].nodes }, { 1.5, 3 })
  p = plan { accelerator = "A100", nodes = { min = 2, max = 6 }, max_hourly_cost = 4.6 }
  T.eq({ p[1].price, p[1].nodes }, { 1.5, 3 })  -- as many as the cap pays for
  T.raises(function() plan { accelerator = "A100", nodes = 4, max_hourly_cost = 5 } end,
    "refused: the cheapest plan, 4 x small (1x A100 40GB, 8 vCPUs, 100 GB) spot in z4 at $1.50/h each ($6.00/h), " ..
    "is above max_hourly_cost = $5.00/h; nothing was created")
  T.raises(function() plan { accelerator = "A100:16" } end, "no test offer fits 16x A100, 1 node")
  T.raises(function() plan { accelerator = "A100", memory_gb = 900 } end, "no test offer fits")
  T.raises(function() plan { accelerator = require("sky.accelerators").A100 { memory = "80GB" } } end,
    "no test offer fits A100 80GB")
end)

T.test("the ttl script shuts the machine down in the background and holds no secret", function()
  local s = ttl.user_data(600, "sky-1234abcd")
  T.contains(s, "#!/bin/sh\n")
  T.contains(s, "nohup setsid sh -c 'sleep 600; shutdown -h now' >/dev/null 2>&1 &")
  T.eq(ttl.timer_line(0, "x"), "")
  -- it really runs later, detached: a stand-in for `shutdown` records when
  local dir = T.tmpdir()
  T.write_file(dir .. "/shutdown", "#!/bin/sh\necho \"$*\" > " .. q(dir .. "/ran") .. "\n")
  T.exec("chmod 755 " .. q(dir .. "/shutdown"))
  local t0 = monotonic()
  T.exec("PATH=" .. q(dir) .. ":$PATH sh -c " .. q(ttl.timer_line(1, "shutdown -h now")))
  T.ok(monotonic() - t0 < 0.9, "the script returns at once")
  for _ = 1, 50 do
    if io.open(dir .. "/ran") then break end
    pcore.sleep(0.1)
  end
  T.eq(T.read_file(dir .. "/ran"), "-h now\n")
end)

T.test("state records keep each pool's machines until they are gone", function()
  local state = require "sky.cloud.state"
  local saved = os.getenv("XDG_STATE_HOME") or ""
  pcore.setenv("XDG_STATE_HOME", T.tmpdir())
  local ok, err = pcall(function()
    T.eq(state.all(), {})
    state.record { pool_id = "sky-0000000a", pool = "p", provider = "aws", module = "sky.providers.aws", config = { region = "r" } }
    state.add_instances("sky-0000000a", { "i-1", "i-2" })
    state.add_instances("sky-0000000a", { "i-2", "i-3" })
    local rec = state.load("sky-0000000a")
    T.eq(rec.instances, { "i-1", "i-2", "i-3" })
    T.eq(rec.config, { region = "r" })
    T.eq(T.sh("stat -c %a " .. q(state.dir() .. "/sky-0000000a.json")), "600\n")
    state.closed("sky-0000000a")
    T.ok(state.load("sky-0000000a").closed)
    T.eq(#state.all(), 1)
    state.forget("sky-0000000a")
    T.eq(state.all(), {})
    T.raises(function() state.load("../etc") end, "not a pool id")
  end)
  pcore.setenv("XDG_STATE_HOME", saved)
  if not ok then error(err, 0) end
end)

T.run()
