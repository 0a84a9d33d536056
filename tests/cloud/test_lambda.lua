-- sky.providers.lambda against tools/lambda_server.py (Lambda Cloud's REST API, machines as
-- network namespaces running sshd with an "ubuntu" login): the plan and a task's result, no
-- capacity in a region moving the plan on, no spot machines, the ttl (set up over SSH) ending the
-- machines of a killed driver through the API, and skyrun instances / down. No key appears in any
-- output or command line.
local T = require "testlib"
local A = require "cloud_testing"
local Standin = require "cloud_standin"

local account = { api_key = "secret_" .. A.secret_like(40) }
local dir = T.tmpdir()
T.write_file(dir .. "/key", account.api_key)
local lambda = Standin.start("lambda", { flags = { ["api-key-file"] = dir .. "/key", ["preinstalled-skyrun"] = true } })
local env = { HOME = T.tmpdir(), LAMBDA_API_KEY = account.api_key, XDG_STATE_HOME = "" }
local fast = { endpoint = lambda.endpoint .. "/api/v1", ssh_timeout = 20, poll_interval = 0.2, provision_timeout = 20 }

local function run(t)
  t.provider, t.provider_opts = "lambda", t.provider_opts or fast
  local out, err, code = A.skyrun(env, { A.here .. "/jobs/cloud_job.lua", A.config(t) })
  A.no_secrets(account, out .. err, "the job's output")
  return out, err, code
end

local function after_each()
  A.nothing_running(lambda, 10)
  A.no_secrets(account, lambda:all_text(), "what the stand-in received")
  lambda:faults({})
end

T.test("a Lambda pool launches on-demand machines, runs tasks as ubuntu and terminates them", function()
  local out, err, code = run { pool = { accelerator = "A100", nodes = 2 }, steps = { "square", "where" } }
  T.eq(code, 0, err .. out)
  T.contains(out, "plan: 2 x gpu_1x_a100 (1x A100 40GB, 30 vCPUs, 200 GB) on-demand in us-east-1 at $1.29/h each = $2.58/h")
  T.contains(out, "square 49")
  T.contains(out, "where 1@10.77.")
  local launches = 0
  for _, r in ipairs(lambda:requests()) do
    if r.path == "/api/v1/instance-operations/launch" then
      launches = launches + 1
      T.contains(r.body, '"quantity":2')
      T.contains(r.body, '"name":"skyrun sky-')
    end
  end
  T.eq(launches, 1)
  after_each()
end)

T.test("no capacity in a region moves the plan on; spot is refused plainly", function()
  lambda:faults { { id = "full", action = "launch", code = "instance-operations/launch/insufficient-capacity",
    message = "Not enough capacity to fulfill launch request.", match = { region_name = "us-east-1" } } }
  local out, err, code = run { pool = { accelerator = "A100" } }
  T.eq(code, 0, err .. out)
  T.contains(out, "no capacity for gpu_1x_a100 (1x A100 40GB, 30 vCPUs, 200 GB) on-demand in us-east-1; trying the next offer")
  T.contains(out, "square 49")
  out, err, code = run { pool = { accelerator = "A100", allocation = "spot" } }
  T.ok(code ~= 0)
  T.contains(err, "Lambda Cloud sells no spot machines")
  after_each()
end)

T.test("machines of a killed driver terminate themselves at their ttl; skyrun down finds nothing left", function()
  local before = A.instance_ids(lambda)  -- what earlier tests launched (os.time() is too coarse to tell)
  local pid, output, wait_for = A.background(env, { provider = "lambda", provider_opts = fast,
    pool = { accelerator = "H100", ttl = 12 }, steps = { "sleep" } })
  wait_for("ready sky-", 60)
  A.no_secrets_in_command_lines(account)
  os.execute("kill -9 " .. pid)
  A.nothing_running(lambda, 25)
  local by_itself = 0
  for _, i in ipairs(lambda:instances()) do
    if not before[i.id] then
      T.eq(i.reason, "terminated from the instance itself")
      T.ok(i.ended - i.launched >= 11, "ended after its ttl")
      by_itself = by_itself + 1
    end
  end
  T.eq(by_itself, 1)
  local out, err, code = A.skyrun(env, { "down" })
  T.eq(code, 0, err)
  T.contains(out, "nothing to terminate")
  local o, e = output()
  A.no_secrets(account, o .. e)
  after_each()
end)

T.run()
lambda:stop()
