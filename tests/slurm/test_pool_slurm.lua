-- ComputePool over sky.providers.slurm against real Slurm (munged, slurmctld and three slurmd in
-- network namespaces, each node with two pretend GPUs; tests/lib/slurm.lua): the portable job with
-- one rank per GPU, a node lost mid-task, nothing left in squeue after close, Ctrl-C or a driver
-- SIGKILL, the time limit ending the allocation, and no secret anywhere Slurm or ps shows.
local T = require "testlib"
local Sshd = require "sshd"
local Slurm = require "slurm"
local sky = require "sky"
local pcore = require "sky.pool.core"
local monotonic = require("sky.core").monotonic

local q = T.shell_quote
local ROOT = os.getenv("SKYRUN_SOURCE_ROOT") or ".."
local cluster = Slurm.start { nodes = 3, gpus_per_node = 2 }

-- An HF token in the driver's environment, as users have it: it must reach the workers through
-- the huggingface plugin only, never Slurm's records, an environment or a command line. It is in
-- this process's environment only while a driver starts, so that the shells the checks run in
-- do not carry it themselves.
local token = "hf_" .. string.format("%08x%08x", math.random(0, 0x7fffffff), pcore.getpid()) .. "SkyTestToken"
local function with_token(fn)
  pcore.setenv("HF_TOKEN", token)
  local r = { pcall(fn) }
  pcore.setenv("HF_TOKEN", nil)
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2)
end

-- srun through a wrapper that keeps the line the driver writes on a worker's stdin: the pool's
-- secret, which the checks below then look for everywhere else.
local wrap = Sshd.tmpdir("bin")
local captured = wrap .. "/secrets"
local real_srun = T.sh("command -v srun"):match("%S+")
T.write_file(wrap .. "/srun", table.concat({
  "#!/bin/sh",
  'case " $* " in *" worker --connect "*)',
  "  IFS= read -r line",
  "  printf '%s\\n' \"$line\" >> " .. q(captured),
  "  exec " .. q(real_srun) .. ' "$@" <<EOF',
  "$line",
  "EOF",
  ";; esac",
  "exec " .. q(real_srun) .. ' "$@"',
  "",
}, "\n"))
T.exec("chmod 755 " .. q(wrap .. "/srun"))
pcore.setenv("PATH", wrap .. ":" .. os.getenv("PATH"))

local function now() return monotonic() end

local function provider(extra)
  local o = { quiet = true, queue_timeout = 60, time = 10 }
  for k, v in pairs(extra or {}) do
    if v == false then o[k] = nil else o[k] = v end
  end
  return sky.providers.slurm(o)
end

local function provider_file(src)
  local path = Sshd.tmpdir("prov") .. "/provider.lua"
  T.write_file(path, src)
  return path
end

local function job_state(id)
  return (cluster:sh("scontrol -o show job " .. id):match("JobState=(%S+)"))
end

-- The time limit: a pool whose job may run one minute, opened now and checked by the last test
-- (Slurm enforces limits in whole minutes, so it runs beside the other tests).
local limited = sky.ComputePool { provider = provider { time = 1 }, nodes = 1, output = false }
limited:open()
local limited_job = limited.provider.job_id
local limited_opened = now()
local others = { [limited_job] = true }  -- the jobs the other tests leave out of their squeue checks

T.test("the portable job runs unchanged on Slurm with one rank per pretend GPU, and as on local processes", function()
  local job = ROOT .. "/jobs/distributed_finetune.lua"
  local slurm = provider_file("return require('sky').providers.slurm { gpus_per_node = 2, time = 10, quiet = true, queue_timeout = 60 }")
  local out, err, code = with_token(function()
    return T.skyrun({ job, "--provider", slurm, "--nodes", "2", "--max-samples", "128", "--output-dir", T.tmpdir() })
  end)
  T.eq(code, 0, err .. out)
  local ranks = {}
  for r, world, node, lr, gpus, tok, steps, tl, el in out:gmatch(
      "rank (%d+)/(%d+) node (%d+) local_rank (%d+) gpus=(%S+) token=(%S+) steps=(%d+) train_loss=(%S+) eval_loss=(%S+)") do
    ranks[#ranks + 1] = { rank = tonumber(r), world = tonumber(world), node = tonumber(node), local_rank = tonumber(lr),
                          gpus = gpus, token = tok, steps = tonumber(steps), train = tonumber(tl), eval = tonumber(el) }
  end
  T.eq(#ranks, 4, out)
  local gpus = { {}, {} }
  for i, r in ipairs(ranks) do
    T.eq({ r.rank, r.world, r.node, r.local_rank, r.token }, { i - 1, 4, math.floor((i - 1) / 2) + 1, (i - 1) % 2, "yes" })
    gpus[r.node][#gpus[r.node] + 1] = r.gpus
    T.near(r.eval, ranks[1].eval, 1e-6, "DDP: every rank has the same weights")
  end
  for node = 1, 2 do  -- each worker sees one GPU of its node, its own
    table.sort(gpus[node])
    T.eq(gpus[node], { "0", "1" }, "the GPUs Slurm bound on node " .. node)
  end
  T.not_contains(out .. err, token)
  print("     " .. out:gsub("\n", "\n     "))
  -- the same file on four local worker processes: the same ranks, the same losses
  local lout, lerr, lcode = T.skyrun({ job, "--nodes", "4", "--max-samples", "128", "--output-dir", T.tmpdir() })
  T.eq(lcode, 0, lerr .. lout)
  local local_train = {}
  for tl in lout:gmatch("train_loss=(%S+)") do local_train[#local_train + 1] = tonumber(tl) end
  T.eq(#local_train, 4, lout)
  T.near(local_train[1], ranks[1].train, 1e-5, "the same training on local processes and on Slurm")
  T.eq(cluster:wait_no_jobs(10, others), {}, "squeue after the job")
end)

T.test("a pool's workers are job steps on the allocated nodes; close leaves nothing in squeue", function()
  local pool = sky.ComputePool { provider = provider(), nodes = 3, output = false }
  local where = pool:with(function()
    local r = pool:broadcast(sky.compute(function()
      local f = io.popen("ip -4 -o addr show dev eth0")
      local out = f:read("*a")
      f:close()
      return { node = sky.info().node, job = os.getenv("SLURM_JOB_ID"), step = os.getenv("SLURM_STEP_ID"),
               addr = out:match("inet (%d+%.%d+%.%d+%.%d+)"), head = sky.info().head_address, address = sky.info().address }
    end)())
    T.eq(#pool:map(function(x) return x * 2 end, { 1, 2, 3, 4, 5, 6, 7 }), 7)
    return r
  end)
  for i, r in ipairs(where) do
    T.eq({ r.node, r.addr, r.head, r.address }, { i, cluster.nodes[i].addr, cluster.nodes[1].addr, cluster.nodes[i].addr })
    T.ok(r.job and r.step, "SLURM_JOB_ID and SLURM_STEP_ID in the worker")
  end
  T.eq(cluster:wait_no_jobs(0.5, others), {}, "squeue right after close")
end)

T.test("the image's files and the plugins' bootstrap lines run on every node before the workers start", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/src.txt", "image file\n")
  pcore.setenv("SKYRUN_STATE", dir .. "/state")  -- the image script's markers, not in this machine's home
  local boot = { name = "boot", bootstrap = function() return { 'echo "$SLURMD_NODENAME" >> ' .. q(dir .. "/booted") } end }
  local pool = sky.ComputePool { provider = provider { quiet = false }, nodes = 2, plugins = { boot }, output = false,
                                 image = sky.Image { files = { [dir .. "/copied.txt"] = dir .. "/src.txt" } } }
  pool:with(function()
    T.eq(pool:run(sky.compute(function(path)
      local f = assert(io.open(path))
      local text = f:read("*a")
      f:close()
      return text
    end)(dir .. "/copied.txt")), "image file\n")
  end)
  local nodes = {}
  for n in T.read_file(dir .. "/booted"):gmatch("%S+") do nodes[#nodes + 1] = n end
  table.sort(nodes)
  T.eq(nodes, { "n1", "n2" })
end)

T.test("the pool's machine spec becomes the job's request: a node range, accelerator count, ttl, memory, vCPUs", function()
  local pool = sky.ComputePool { provider = provider { time = false }, nodes = { min = 2, max = 3 }, accelerator = "A100:2",
                                 ttl = 1800, memory_gb = 1, vcpus = 4, output = false }
  pool:with(function()
    local job = cluster:sh("scontrol -o show job " .. pool.provider.job_id)
    T.contains(job, "TimeLimit=00:30:00")
    T.contains(job, "NumNodes=3")
    T.contains(job, "TresPerNode=gres:gpu:2")
    T.contains(job, "MinMemoryNode=1G")
    T.contains(job, "CPUs/Task=2")
    T.eq(pool.nodes, 3)
    T.eq(#pool:broadcast(sky.compute(function() return sky.info().rank end)()), 6, "a rank per GPU")
  end)
  T.eq(cluster:wait_no_jobs(5, others), {}, "squeue after close")
end)

-- A busy task on each of the pool's three nodes; `lost`'s link is cut half a second in. Returns
-- each task's result or error text and seconds from the cut, the lost node's first; the link is
-- back, the pool closed and squeue empty again when it returns.
local function cut_mid_task(pool, lost, seconds)
  pool:open()
  local busy = sky.compute(function(s)
    local t0 = os.time()
    while os.time() - t0 < s do end
    return sky.info().node
  end)
  local futures = {}
  for i = 1, 3 do futures[i] = pool:submit(busy(seconds)) end  -- task i on node i: each is idle
  pcore.sleep(0.5)
  cluster:cut(lost)
  local t0 = now()
  local out = { job = pool.provider.job_id }
  for _, i in ipairs { lost, lost % 3 + 1, (lost + 1) % 3 + 1 } do
    local ok, r = pcall(futures[i].get, futures[i])
    out[i] = { ok = ok, value = ok and r or tostring(r), t = now() - t0 }
  end
  cluster:restore(lost)
  pool:close()
  T.eq(cluster:wait_no_jobs(20, others), {}, "squeue after close")
  return out
end

T.test("a node lost mid-task fails its task within 5 s naming it; the other nodes finish", function()
  local pool = sky.ComputePool { provider = provider(), nodes = 3, output = false, retry_on_interruption = 0 }
  local r = cut_mid_task(pool, 2, 4)
  local failed = not r[2].ok and { err = r[2].value, t = r[2].t }
  local finished = { r[1].ok and r[1].value, r[3].ok and r[3].value }
  T.ok(failed, "a task failed")
  print(string.format("     (node 2's task failed %.1f s after its link was cut)", failed.t))
  T.ok(failed.t < 5, "failed after " .. failed.t .. " s")
  T.contains(failed.err, "node 2 (slurm job " .. r.job .. " on n2)")
  T.contains(failed.err, "the connection was lost")
  T.eq(finished, { 1, 3 })
end)

T.test("with retries (the default), the lost node's task runs again on another node", function()
  local pool = sky.ComputePool { provider = provider(), nodes = 3, output = false }
  local r = cut_mid_task(pool, 3, 3)
  local results = { r[1].value, r[2].value, r[3].value }
  T.ok(results[1] == 1 and results[2] == 2 and (results[3] == 1 or results[3] == 2), table.concat(results, ", "))
end)

-- A driver script in the background: opens a pool, says its job id, then waits on a long task.
local function background_driver(dir)
  local script = dir .. "/driver.lua"
  T.write_file(script, [[
local sky = require "sky"
local pool = sky.ComputePool { provider = sky.providers.slurm { quiet = true, queue_timeout = 60, time = 10 },
                               nodes = 2, output = false }
pool:with(function()
  io.stdout:write("job ", pool.provider.job_id, "\n")
  io.stdout:flush()
  pool:run(sky.compute(function() os.execute("sleep 120") end)())
end)
]])
  T.exec(string.format("(%s %s > %s 2> %s & echo $! > %s; wait $!; echo $? > %s) &", q(T.skyrun_bin), q(script),
    q(dir .. "/out"), q(dir .. "/err"), q(dir .. "/pid"), q(dir .. "/rc")))
  local job, pid
  for _ = 1, 300 do
    local f = io.open(dir .. "/out")
    job = f and f:read("*a"):match("job (%d+)")
    if f then f:close() end
    if job then break end
    pcore.sleep(0.1)
  end
  pid = tonumber(T.read_file(dir .. "/pid"):match("%d+"))
  if not job then
    pcore.signal(pid, "KILL")
    error("the driver did not open its pool: " .. T.read_file(dir .. "/err") .. "\n" .. cluster:sh("squeue; sinfo"), 2)
  end
  return job, pid
end

T.test("a driver killed with SIGKILL leaves nothing in squeue: its job's keeper ends the job", function()
  local dir = T.tmpdir()
  local job, pid = background_driver(dir)
  T.eq(job_state(job), "RUNNING")
  pcore.signal(pid, "KILL")
  local t0 = now()
  T.eq(cluster:wait_no_jobs(15, others), {}, "squeue after the driver died")
  print(string.format("     (job %s gone from squeue %.1f s after the SIGKILL)", job, now() - t0))
  T.not_contains(T.sh("ps -eo args"), "--jobid=" .. job .. " ", "no srun of the job left")
end)

T.test("Ctrl-C in the driver closes the pool and cancels its job", function()
  local dir = T.tmpdir()
  local job, pid = background_driver(dir)
  pcore.signal(pid, "INT")
  for _ = 1, 150 do
    if io.open(dir .. "/rc") then break end
    pcore.sleep(0.1)
  end
  T.contains(T.read_file(dir .. "/err"), "interrupted")
  T.eq(cluster:wait_no_jobs(1, others), {}, "squeue once the driver has exited")
  T.ok(job_state(job) == "CANCELLED" or job_state(job) == nil, "job " .. job .. " was cancelled")
end)

T.test("no secret (HF token, pool secret) in output, logs, command lines, environments or Slurm's records", function()
  local lines = {}
  local pool = with_token(function()
    local p = sky.ComputePool { provider = provider { gpus_per_node = 2 }, nodes = 2,
      plugins = { sky.plugins.huggingface {} }, output = function(_, line) lines[#lines + 1] = line end }
    return p:open()  -- the launchers start with HF_TOKEN in this process's environment
  end)
  local seen = pool:with(function()
    local job = pool.provider.job_id
    local r = pool:broadcast(sky.compute(function()
      print("token here: " .. tostring(os.getenv("HF_TOKEN")))
      return os.getenv("HF_TOKEN") ~= nil
    end)())
    -- while the workers run: every process's command line and environment, Slurm's view of the job
    local views = {
      T.sh("ps -eo args"),
      T.sh("cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'"),
      cluster:sh("scontrol show job -d " .. job),
      cluster:sh("scontrol show step " .. job),
      cluster:sh("squeue -o '%all'"),
      cluster:sh("scontrol write batch_script " .. job .. " -"),
    }
    return { r = r, views = table.concat(views, "\n") }
  end)
  T.eq(seen.r, { true, true, true, true }, "every rank has the token")
  local secrets = {}
  for s in T.read_file(captured):gmatch("[^\n]+") do secrets[s] = true end
  T.ok(next(secrets), "the pool secrets were captured")
  T.contains(table.concat(lines, "\n"), "token here: ***")
  local everywhere = table.concat({ seen.views, table.concat(lines, "\n"), cluster:logs(), cluster:state() }, "\n")
  T.ok(everywhere:find("JobId=", 1, true) and everywhere:find("--connect", 1, true), "the views are not empty")
  -- (plain finds: the texts are too long to print when a check fails)
  for s in pairs(secrets) do T.ok(not everywhere:find(s, 1, true), "a pool secret was found") end
  T.ok(not everywhere:find(token, 1, true), "the HF token was found")
end)

T.test("bad options name the option; a driver address the nodes cannot reach fails the open, naming it", function()
  T.raises(function() sky.providers.slurm { partiton = "x" } end, "did you mean 'partition'")
  T.raises(function() sky.providers.slurm { time = "soon" } end, "option 'time' must be minutes")
  T.raises(function() sky.providers.slurm { gpus_per_node = 0 } end, "gpus_per_node' must be at least 1")
  T.raises(function() sky.ComputePool { provider = provider { gpus_per_node = 2 }, concurrency = 2 } end,
    "concurrency > 1 with several ranks per node")
  -- the loopback: the driver listens where the nodes cannot dial
  local pool = sky.ComputePool { provider = provider { driver_address = "127.0.0.1" }, nodes = 1, startup_timeout = 3 }
  local err = T.raises(function() pool:open() end, "127.0.0.1:")
  T.contains(err, "driver_address")
  T.eq(cluster:wait_no_jobs(10, others), {}, "squeue after the failed open")
  err = T.raises(function()
    sky.ComputePool { provider = provider { partition = "nosuch" }, nodes = 1 }:open()
  end, "sbatch failed")
  T.contains(err, "nosuch")
end)

T.test("the job's time limit ends the allocation: its workers stop and squeue no longer lists it", function()
  local ok, err = pcall(function()
    while now() - limited_opened < 150 do
      limited:run(sky.compute(function() return 1 end)())
      pcore.sleep(1)
    end
  end)
  T.ok(not ok, "the pool stopped working")
  T.contains(tostring(err):lower(), "time limit")
  print(string.format("     (the workers stopped %.0f s after the pool opened with time = 1)", now() - limited_opened))
  T.eq(cluster:wait_no_jobs(10), {}, "squeue")
  T.eq(job_state(limited_job), "TIMEOUT")
  limited:close()
end)

T.run()
