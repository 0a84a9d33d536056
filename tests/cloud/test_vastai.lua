-- sky.providers.vastai against tools/vastai_server.py (Vast.ai's REST API, machines as network
-- namespaces running sshd): the plan and a task's result, the cheapest offer taken first and the
-- next one when it is gone, an outbid (reclaimed) instance replaced with its task run again, the
-- ttl ending the instances of a killed driver through their own API key, max_hourly_cost, and
-- skyrun instances / down. No key appears in any output or command line.
local T = require "testlib"
local A = require "cloud_testing"
local Standin = require "cloud_standin"

local account = { api_key = A.secret_like(64):lower() }
local dir = T.tmpdir()
T.write_file(dir .. "/key", account.api_key)
local vast = Standin.start("vastai", { flags = { ["api-key-file"] = dir .. "/key", ["preinstalled-skyrun"] = true } })
local env = { HOME = T.tmpdir(), VAST_API_KEY = account.api_key, XDG_STATE_HOME = "" }
local fast = { endpoint = vast.endpoint, ssh_timeout = 20, poll_interval = 0.2, provision_timeout = 20 }

local function run(t)
  t.provider, t.provider_opts = "vastai", t.provider_opts or fast
  local out, err, code = A.skyrun(env, { A.here .. "/jobs/cloud_job.lua", A.config(t) })
  A.no_secrets(account, out .. err, "the job's output")
  return out, err, code
end

local function after_each()
  A.nothing_running(vast, 10)
  A.no_secrets(account, vast:all_text(), "what the stand-in received")
  vast:faults({})
end

T.test("a Vast.ai pool rents the cheapest fitting offer, runs its task and destroys the instance", function()
  local out, err, code = run { pool = { accelerator = "A100", nodes = 2 }, steps = { "square", "where" } }
  T.eq(code, 0, err .. out)
  T.contains(out, "plan: 2 x A100 PCIE (1x A100 PCIE 40GB, 12 vCPUs, 63 GB) spot in CA at $0.42/h each = $0.84/h; ttl 600 s")
  T.contains(out, "square 49")
  T.contains(out, "where 1@10.77.")
  local creates = vast:requests()
  local n = 0
  for _, r in ipairs(creates) do
    if r.method == "PUT" then
      n = n + 1
      T.contains(r.body, '"label":"skyrun sky-')
      T.contains(r.body, '"price":0.42')
      T.contains(r.body, "sleep 600;")
      T.contains(r.body, "CONTAINER_API_KEY")
    end
  end
  T.eq(n, 2)
  after_each()
end)

T.test("an offer gone before it is rented moves the plan to the next one", function()
  vast:faults { { id = "gone", action = "create", code = "no_such_ask", message = "Instance type no longer available",
                  match = { offer = 5002 } } }
  local out, err, code = run { pool = { accelerator = "A100", allocation = "on-demand" } }
  T.eq(code, 0, err .. out)
  T.contains(out, "no capacity for A100 PCIE (1x A100 PCIE 40GB, 12 vCPUs, 63 GB) on-demand in CA; trying the next offer")
  T.contains(out, "square 49")
  after_each()
end)

T.test("an outbid instance is replaced and its task runs again", function()
  local marker = T.tmpdir() .. "/marker"
  vast:faults { { id = "outbid", interrupt_when = marker } }
  local out, err, code = run { pool = { accelerator = "A100", allocation = "spot" }, steps = { "interruptible", "square" },
                               marker = marker }
  T.eq(code, 0, err .. out)
  T.contains(out, "is stopped (outbid: the instance was stopped); replacing it")
  T.contains(err, "running it again (retry 1 of 3)")
  T.contains(out, "finished on 10.77.")
  after_each()
end)

T.test("instances of a killed driver destroy themselves at their ttl with their own key", function()
  local before = A.instance_ids(vast)  -- what earlier tests launched (os.time() is too coarse to tell)
  local pid, output, wait_for = A.background(env, { provider = "vastai", provider_opts = fast,
    pool = { accelerator = "A100", ttl = 10 }, steps = { "sleep" } })
  wait_for("ready sky-", 60)
  A.no_secrets_in_command_lines(account)
  os.execute("kill -9 " .. pid)
  A.nothing_running(vast, 25)
  local by_itself = 0
  for _, i in ipairs(vast:instances()) do
    if not before[i.id] then
      T.eq(i.reason, "destroyed by its own key")
      T.ok(i.ended - i.launched >= 10, "ended after its ttl")
      by_itself = by_itself + 1
    end
  end
  T.eq(by_itself, 1)
  local o, e = output()
  A.no_secrets(account, o .. e)
  after_each()
end)

T.test("max_hourly_cost and multi-node process groups are refused; skyrun instances and down see Vast.ai pools", function()
  local out, err, code = run { pool = { accelerator = "H100", max_hourly_cost = 1 } }
  T.ok(code ~= 0)
  T.contains(err, "refused: the cheapest plan, 1 x H100 SXM")
  T.contains(err, "nothing was created")
  out, err, code = run { pool = { accelerator = "A100", nodes = 2 }, torch = true }
  T.ok(code ~= 0)
  T.contains(err, "not supported yet: a process group across vastai machines (the torch plugin with nodes > 1)")
  local pid, _, wait_for = A.background(env, { provider = "vastai", provider_opts = fast,
    pool = { accelerator = "RTX 4090", ttl = 120 }, steps = { "sleep" } })
  local pool_id = wait_for("ready sky-", 60):match("ready (sky%-%x+)")
  os.execute("kill -9 " .. pid)
  out, err, code = A.skyrun(env, { "instances" })
  T.eq(code, 0, err)
  T.contains(out, pool_id .. "  vastai")
  T.contains(out, "1x RTX 4090")
  out, err, code = A.skyrun(env, { "down" })
  T.eq(code, 0, err)
  T.contains(out, "(pool " .. pool_id .. ", vastai)")
  A.no_secrets(account, out .. err)
  after_each()
end)

T.run()
vast:stop()
