-- Acceptance 1 of the providers issue: the huggingface-plugin seed's pools, written with
-- provider = sky.providers.aws{}, run end to end against the EC2 stand-in (tools/ec2_server.py):
-- offer, plan, key pair, security group, RunInstances, SSH, bootstrap, the task's result, and
-- termination; nothing is left running and no secret appears anywhere.
local T = require "testlib"
local A = require "cloud_testing"

local seed = A.here .. "/jobs/hf_seed.lua"

T.test("the seed's single-node A100 pool fine-tunes on an EC2 instance and terminates it", function()
  local a = A.account()
  local ec2 = A.standin(a)
  local env = A.home(a, ec2)
  local out, err, code = A.skyrun(env, { seed, "single" })
  T.eq(code, 0, "exit code; stderr: " .. err .. "\nstdout: " .. out)
  -- the plan came first, with the type, count, price and ttl
  local plan = out:find("plan: 1 x p4d.24xlarge (8x A100 40GB, 96 vCPUs, 1152 GB) spot in us-east-1b at $10.81/h each = $10.81/h; ttl 600 s", 1, true)
  T.ok(plan, "the plan line: " .. out)
  T.ok(plan < out:find("created i-", 1, true), "the plan is printed before anything is created")
  T.contains(out, "single: node 1 accelerator A100 train_loss ")
  T.contains(out, "token true")
  -- the worker masks the HF token, and was never given the AWS keys
  local core = require "sky.cloud.core"
  local given = out:match("worker secrets %(sha256%): ([^\n]*)")
  T.contains(given, core.sha256_hex(a.hf_token))
  T.not_contains(given, core.sha256_hex(a.secret_access_key))
  T.not_contains(given, core.sha256_hex(a.session_token))
  T.contains(out, "terminated i-")
  A.nothing_running(ec2, 5)
  -- what EC2 saw: every call validated against the model and signed (else the job had failed),
  -- one RunInstances for a spot p4d.24xlarge tagged with the pool's id, ttl in the user data
  local runs = ec2:requests("RunInstances")
  T.eq(#runs, 1)
  T.contains(runs[1].body, "InstanceType=p4d.24xlarge")
  T.contains(runs[1].body, "InstanceMarketOptions.MarketType=spot")
  T.contains(runs[1].body, "InstanceInitiatedShutdownBehavior=terminate")
  T.contains(runs[1].body, "TagSpecification.1.Tag.1.Key=skyrun-pool")
  local inst = ec2:instances()[1]
  T.contains(inst.user_data, "sleep 600; shutdown -h now")
  T.eq(#ec2:requests("ImportKeyPair"), 1)
  T.eq(#ec2:requests("TerminateInstances"), 1)
  A.no_secrets(a, out .. err, "the job's output")
  A.no_secrets(a, ec2:all_text(), "what the stand-in received (bodies)")
  ec2:stop()
end)

T.test("the seed's 4-node pool with the torch plugin broadcasts over a Gloo group of 4 instances", function()
  local a = A.account()
  local ec2 = A.standin(a)
  local env = A.home(a, ec2)
  local out, err, code = A.skyrun(env, { seed, "multi" })
  T.eq(code, 0, "exit code; stderr: " .. err .. "\nstdout: " .. out)
  T.contains(out, "plan: 4 x p4d.24xlarge")
  for rank = 0, 3 do T.contains(out, "rank " .. rank .. "/4") end
  local means = {}
  for m in out:gmatch("mean (%d+%.%d+)") do means[m] = true end
  T.eq(#(function() local t = {} for k in pairs(means) do t[#t + 1] = k end return t end)(), 1, "one mean over the group")
  A.nothing_running(ec2, 5)
  T.eq(#ec2:instances(), 4)
  A.no_secrets(a, out .. err, "the job's output")
  A.no_secrets(a, ec2:all_text(), "what the stand-in received")
  ec2:stop()
end)

T.run()
