-- sky.providers.runpod against tools/runpod_server.py (RunPod's GraphQL and REST APIs; each pod a
-- network namespace run as a container, whose start command, ours, starts sshd with PUBLIC_KEY):
-- the plan and a task's result, a GPU type out of stock moving the plan on, an interruptible pod
-- reclaimed mid-task and replaced, the ttl terminating the pods of a killed driver through their
-- own pod-scoped key, and skyrun instances / down. No key appears in any output or command line.
local T = require "testlib"
local A = require "cloud_testing"
local Standin = require "cloud_standin"

local account = { api_key = "rpa_" .. A.secret_like(40):upper() }
local dir = T.tmpdir()
T.write_file(dir .. "/key", account.api_key)
local runpod = Standin.start("runpod", { flags = { ["api-key-file"] = dir .. "/key", ["preinstalled-skyrun"] = true } })
local env = { HOME = T.tmpdir(), RUNPOD_API_KEY = account.api_key, XDG_STATE_HOME = "" }
local fast = { endpoint = runpod.endpoint .. "/v1", graphql_endpoint = runpod.endpoint .. "/graphql", ssh_timeout = 30,
               poll_interval = 0.2, provision_timeout = 30 }

local function run(t)
  t.provider, t.provider_opts = "runpod", t.provider_opts or fast
  local out, err, code = A.skyrun(env, { A.here .. "/jobs/cloud_job.lua", A.config(t) })
  A.no_secrets(account, out .. err, "the job's output")
  return out, err, code
end

local function after_each()
  A.nothing_running(runpod, 10)
  A.no_secrets(account, runpod:all_text(), "what the stand-in received")
  runpod:faults({})
end

T.test("a RunPod pool deploys interruptible pods that start sshd, runs tasks and terminates them", function()
  local out, err, code = run { pool = { accelerator = "A100", nodes = 2 }, steps = { "square", "where" } }
  T.eq(code, 0, err .. out)
  T.contains(out, "plan: 2 x NVIDIA A100 80GB PCIe (1x A100 PCIe 80GB, 8 vCPUs, 117 GB) spot at $0.82/h each = $1.64/h; ttl 600 s")
  T.contains(out, "square 49")
  T.contains(out, "where 1@10.77.")
  local deploys = 0
  for _, r in ipairs(runpod:requests()) do
    if r.body:find("podRentInterruptable", 1, true) then
      deploys = deploys + 1
      T.contains(r.body, '"bidPerGpu":0.82')
      T.contains(r.body, '"ports":"22/tcp"')
      T.contains(r.body, '"key":"PUBLIC_KEY"')
    end
  end
  T.eq(deploys, 2)
  after_each()
end)

T.test("a GPU type out of stock moves the plan to the next one", function()
  runpod:faults { { id = "stock", action = "podFindAndDeployOnDemand", match = { gpuTypeId = "NVIDIA A100 80GB PCIe" },
    message = "There are no longer any instances available with the requested specifications. Please refresh and try again." } }
  local out, err, code = run { pool = { accelerator = "A100", allocation = "on-demand" } }
  T.eq(code, 0, err .. out)
  T.contains(out, "no capacity for NVIDIA A100 80GB PCIe (1x A100 PCIe 80GB, 8 vCPUs, 117 GB) on-demand; trying the next offer")
  T.contains(out, "square 49")
  after_each()
end)

T.test("a reclaimed interruptible pod is replaced and its task runs again", function()
  local marker = T.tmpdir() .. "/marker"
  runpod:faults { { id = "reclaim", interrupt_when = marker } }
  local out, err, code = run { pool = { accelerator = "A100", allocation = "spot" }, steps = { "interruptible", "square" },
                               marker = marker }
  T.eq(code, 0, err .. out)
  T.contains(out, "is stopped (interruptible pod stopped (outbid)); replacing it")
  T.contains(err, "running it again (retry 1 of 3)")
  T.contains(out, "finished on 10.77.")
  after_each()
end)

T.test("pods of a killed driver terminate themselves at their ttl; skyrun instances and down see them", function()
  local before = A.instance_ids(runpod)  -- what earlier tests launched (os.time() is too coarse to tell)
  local pid, output, wait_for = A.background(env, { provider = "runpod", provider_opts = fast,
    pool = { accelerator = "H100", ttl = 12 }, steps = { "sleep" } })
  local pool_id = wait_for("ready sky-", 60):match("ready (sky%-%x+)")
  A.no_secrets_in_command_lines(account)
  os.execute("kill -9 " .. pid)
  local out, err, code = A.skyrun(env, { "instances" })
  T.eq(code, 0, err)
  T.contains(out, pool_id .. "  runpod")
  A.nothing_running(runpod, 25)
  local by_itself = 0
  for _, i in ipairs(runpod:instances()) do
    if not before[i.id] then
      T.eq(i.reason, "terminated by its own key")
      T.ok(i.ended - i.launched >= 12, "ended after its ttl")
      by_itself = by_itself + 1
    end
  end
  T.eq(by_itself, 1)
  out, err, code = A.skyrun(env, { "down" })
  T.eq(code, 0, err)
  T.contains(out, "nothing to terminate")
  local o, e = output()
  A.no_secrets(account, o .. e .. out .. err)
  after_each()
end)

T.run()
runpod:stop()
