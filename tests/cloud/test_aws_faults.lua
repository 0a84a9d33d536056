-- sky.providers.aws against the EC2 stand-in when things go wrong as they do on AWS: no capacity in
-- a zone, throttling, a spot instance reclaimed mid-task, a machine that never answers on SSH, a
-- driver killed with SIGKILL (the ttl ends its machines), Ctrl-C, a failing job, a plan above
-- max_hourly_cost, missing permissions and quotas. After each, no instance is left running, and
-- no secret appears in any output. Also `skyrun instances` and `skyrun down`.
local T = require "testlib"
local A = require "cloud_testing"

local job = A.here .. "/jobs/cloud_job.lua"

local a = A.account()
-- machines whose image holds this skyrun: no upload (the seed tests and tests/ssh cover the upload)
local ec2 = A.standin(a, { preinstalled = true })
local env = A.home(a, ec2)

local config = A.config

local fast = { ssh_timeout = 20, poll_interval = 0.2, provision_timeout = 20 }
local function run(t)
  t.provider = t.provider or "aws"
  t.provider_opts = t.provider_opts or fast
  local out, err, code = A.skyrun(env, { job, config(t) })
  A.no_secrets(a, out .. err, "the job's output")
  return out, err, code
end

local function after_each()
  A.nothing_running(ec2, 10)
  ec2:faults({})
end

T.test("no capacity in the cheapest zone moves the plan to the next zone", function()
  ec2:faults { { id = "cap", action = "RunInstances", code = "InsufficientInstanceCapacity",
                 message = "We currently do not have sufficient p4d.24xlarge capacity in the Availability Zone you requested (us-east-1b).",
                 match = { AvailabilityZone = "us-east-1b" } } }
  local before = #ec2:requests("RunInstances")
  local out, err, code = run { pool = { accelerator = "A100" } }
  T.eq(code, 0, err .. out)
  T.contains(out, "no capacity for p4d.24xlarge (8x A100 40GB, 96 vCPUs, 1152 GB) spot in us-east-1b; trying the next offer")
  T.contains(out, "square 49")
  local runs = ec2:requests("RunInstances")
  T.eq(#runs - before, 2)
  T.contains(runs[#runs].body, "NetworkInterface.1.SubnetId=subnet-0a1b2c3d4e5f6071")  -- us-east-1a's
  after_each()
end)

T.test("throttled calls are retried with backoff", function()
  ec2:faults { { id = "slow", action = "DescribeSpotPriceHistory", code = "RequestLimitExceeded", status = 503,
                 message = "Request limit exceeded.", times = 2 } }
  local before = #ec2:requests("DescribeSpotPriceHistory")
  local out, err, code = run { pool = { accelerator = "A100" } }
  T.eq(code, 0, err .. out)
  T.contains(out, "square 49")
  T.eq(#ec2:requests("DescribeSpotPriceHistory") - before, 3)
  after_each()
end)

T.test("a machine that never answers on SSH is terminated and replaced", function()
  ec2:faults { { id = "dark", no_ssh = 1 } }
  local out, err, code = run { pool = { accelerator = "A100" }, provider_opts = { ssh_timeout = 2, poll_interval = 0.2 } }
  T.eq(code, 0, err .. out)
  T.contains(out, "is replaced: it did not answer on SSH within 2 s")
  T.contains(out, "square 49")
  local insts = ec2:instances()
  local dark = insts[#insts - 1]
  T.eq(dark.answers_ssh, false)
  T.eq(dark.reason, "user")  -- terminated by the driver
  after_each()
end)

T.test("a spot instance reclaimed mid-task is replaced and the pool goes on", function()
  local marker = T.tmpdir() .. "/marker"
  ec2:faults { { id = "reclaim", interrupt_when = marker } }
  local out, err, code = run { pool = { accelerator = "A100", allocation = "spot" }, steps = { "interruptible", "square" },
                               marker = marker }
  T.eq(code, 0, err .. out)
  T.contains(out, "is terminated (spot interruption: AWS reclaimed the capacity); replacing it")
  -- the pool's retry (retry_on_interruption) ran the task again on the replacement
  T.contains(err, "was interrupted on node 1")
  T.contains(err, "running it again (retry 1 of 3)")
  T.contains(out, "finished on 10.77.")
  T.contains(out, "square 49")
  local reclaimed = 0
  for _, i in ipairs(ec2:instances()) do if i.reason == "spot-interruption" then reclaimed = reclaimed + 1 end end
  T.eq(reclaimed, 1)
  after_each()
end)

T.test("a plan above max_hourly_cost is refused before anything is created", function()
  local before = #ec2:requests("RunInstances")
  local out, err, code = run { pool = { accelerator = "A100", max_hourly_cost = 5 } }
  T.ok(code ~= 0)
  T.contains(err, "refused: the cheapest plan, 1 x p4d.24xlarge (8x A100 40GB, 96 vCPUs, 1152 GB) spot in us-east-1b at $10.81/h each ($10.81/h), is above max_hourly_cost = $5.00/h; nothing was created")
  T.eq(#ec2:requests("RunInstances") - before, 0)
  -- within the cap: as many nodes as it pays for, at least nodes.min
  out, err, code = run { pool = { accelerator = "A100", nodes = { min = 1, max = 3 }, max_hourly_cost = 25 } }
  T.eq(code, 0, err .. out)
  T.contains(out, "plan: 2 x p4d.24xlarge")
  T.contains(out, "ready sky-")
  T.contains(out, " nodes 2")
  after_each()
end)

T.test("missing permissions and quotas are reported plainly", function()
  local denied = A.standin(a, { deny = "RunInstances", preinstalled = true })
  local env2 = A.home(a, denied)
  local out, err, code = A.skyrun(env2, { job, config { provider = "aws", provider_opts = fast, pool = { accelerator = "A100" } } })
  T.ok(code ~= 0)
  T.contains(err, "AWS EC2 RunInstances: UnauthorizedOperation: You are not authorized to perform this operation.")
  T.contains(err, "lack ec2:RunInstances")
  T.not_contains(err, "Encoded authorization failure message")
  A.no_secrets(a, out .. err)
  A.nothing_running(denied, 5)
  denied:stop()
  ec2:faults { { id = "quota", action = "RunInstances", code = "VcpuLimitExceeded", times = 100,
                 message = "You have requested more vCPU capacity than your current vCPU limit of 0 allows." } }
  out, err, code = run { pool = { accelerator = "A100" } }
  T.ok(code ~= 0)
  T.contains(err, "VcpuLimitExceeded: You have requested more vCPU capacity than your current vCPU limit of 0 allows.")
  T.contains(err, "an account limit")
  after_each()
end)

local function background(t)
  t.provider = t.provider or "aws"
  t.provider_opts = t.provider_opts or fast
  return A.background(env, t)
end

T.test("a driver killed with SIGKILL leaves machines that end themselves at their ttl", function()
  local before = A.instance_ids(ec2)  -- what earlier tests launched (os.time() is too coarse to tell)
  local pid, output, wait_for = background { pool = { accelerator = "A100", nodes = 2, ttl = 12 }, steps = { "sleep" } }
  wait_for("ready sky-", 60)
  os.execute("kill -9 " .. pid)
  T.eq(#ec2:running(), 2)
  A.nothing_running(ec2, 25)
  local n = 0
  for _, i in ipairs(ec2:instances()) do
    if not before[i.id] then
      n = n + 1
      T.eq(i.reason, "instance-initiated-shutdown")
      T.ok(i.ended - i.launched >= 12 and i.ended - i.launched < 20, "ended after its ttl")
    end
  end
  T.eq(n, 2)
  local o, e = output()
  A.no_secrets(a, o .. e)
  after_each()
end)

T.test("Ctrl-C and a failing job terminate the machines at once", function()
  local pid, output, wait_for, wait_exit = background { pool = { accelerator = "A100", ttl = 120 }, steps = { "sleep" } }
  wait_for("ready sky-", 60)
  os.execute("kill -INT " .. pid)
  T.ok(wait_exit(20), "the driver ended after Ctrl-C")
  local o, e = output()
  T.contains(e, "interrupted")
  T.contains(o, "terminated i-")
  A.nothing_running(ec2, 5)
  local out, err, code = run { pool = { accelerator = "A100", ttl = 120 }, steps = { "fail" } }
  T.ok(code ~= 0)
  T.contains(err, "the task failed on purpose")
  T.contains(out, "terminated i-")
  A.no_secrets(a, o .. e)
  after_each()
end)

T.test("skyrun instances lists what a pool left and skyrun down ends it", function()
  local pid, _, wait_for = background { pool = { accelerator = "A100", nodes = 2, ttl = 120 }, steps = { "sleep" } }
  local o = wait_for("ready sky-", 60)
  A.no_secrets_in_command_lines(a)  -- the driver, its SSH workers and the machines' processes
  local pool_id = o:match("ready (sky%-%x+)")
  os.execute("kill -9 " .. pid)
  local out, err, code = A.skyrun(env, { "instances" })
  T.eq(code, 0, err)
  T.contains(out, "POOL")
  local n = 0
  for line in out:gmatch("[^\n]+") do
    if line:find(pool_id, 1, true) then
      n = n + 1
      T.contains(line, "p4d.24xlarge")
      T.contains(line, "running")
    end
  end
  T.eq(n, 2)
  out, err, code = A.skyrun(env, { "down", "sky-00000000" })
  T.eq(code, 1)
  T.contains(err, "no pool or instance 'sky-00000000'")
  out, err, code = A.skyrun(env, { "down", pool_id })
  T.eq(code, 0, err)
  T.contains(out, "terminated i-")
  T.contains(out, "(pool " .. pool_id .. ", aws)")
  A.nothing_running(ec2, 5)
  out = A.skyrun(env, { "instances" })
  T.contains(out, "no machine that skyrun started is running")
  A.no_secrets(a, out .. err)
  after_each()
end)

T.run()
ec2:stop()
