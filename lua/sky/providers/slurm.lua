-- sky.providers.slurm{...}: workers on the nodes of a Slurm allocation, through Slurm's own
-- commands. Opening the pool submits a batch job (sbatch) whose script is `skyrun hold`, a keeper
-- that dials the driver and ends the job when that connection ends (pool closed, driver killed,
-- driver's host gone); each worker is then one job step (srun --exact) on its node running
-- `skyrun worker --connect`, one per GPU when gpus_per_node is given (each step bound to its own
-- GPU by Slurm). Workers dial the driver over TCP and prove they hold the pool's secret, which srun
-- hands them on stdin (src/pool/tcp_transport.hpp): no secret is on a command line, in a job's
-- environment or in its batch script. Closing the pool runs scancel and waits until squeue no
-- longer lists the job; the job's time limit (time =) bounds it even if nothing else does.
--
--   partition, account, qos, constraint, reservation   passed to sbatch as such
--   time            the job's time limit: minutes (a number) or Slurm's "[D-]HH:MM:SS" (default:
--                   the pool's ttl if it sets one, else the partition's); when it is reached Slurm
--                   ends the workers
--   gpus_per_node   GPUs on each node (--gres=gpu:N; default: the pool's accelerator count, as in
--                   "A100:8"): one worker per GPU, each a rank
--   gpu_type        the site's GRES type name ("a100": --gres=gpu:a100:N; default: any type)
--   cpus_per_task   CPUs of each worker (default: the pool's vcpus shared by its workers, else one)
--   mem             memory per node ("16G", Slurm's --mem; default: the pool's memory_gb)
-- The pool's nodes may be a range {min=, max=} (--nodes=min-max: the pool has what Slurm gave).
--   sbatch_args     more sbatch arguments, as a list ({"--exclusive"})
--   job_name        (default "skyrun-<pool name>")
--   binary          where the nodes find skyrun (default: this binary's path; the nodes must see
--                   it, as they see home folders on a shared filesystem)
--   driver_address  the address workers dial (default: this host's address on the route to
--                   slurmctld); port (default: any free port)
--   dead_after      seconds of silence after which a node is declared lost (3)
--   queue_timeout   seconds to wait for the allocation (default: no limit; Ctrl-C stops waiting)
--   quiet           no "[slurm] ..." progress lines
local core = require "sky.core"
local pcore = require "sky.pool.core"
local monotonic = require("sky.core").monotonic
local secret = require "sky.secret"

local Slurm = {}
Slurm.__index = Slurm

local shq = require("sky.ssh.core").shell_quote

-- Variables never handed to Slurm (srun and sbatch export the caller's environment into the job,
-- where ps and the job's record show it): credentials by name, and any value that is a secret.
local credential_names = {
  HF_TOKEN = true, HUGGING_FACE_HUB_TOKEN = true, AWS_SECRET_ACCESS_KEY = true, AWS_SESSION_TOKEN = true,
}
local function is_credential(name, value)
  if credential_names[name] or name:match("_TOKEN$") or name:match("_SECRET$") or name:match("_PASSWORD$")
      or name:match("_API_KEY$") or name:match("SECRET_ACCESS_KEY") then
    return true
  end
  return value ~= "" and secret.mask(value) ~= value
end

-- `env -u NAME ...` for the credentials in this process's environment (names only, no values).
local function env_strip()
  local argv = { "env" }
  for _, entry in ipairs(pcore.environ()) do
    local name, value = entry:match("^([^=]+)=(.*)$")
    if name and is_credential(name, value) then
      argv[#argv + 1] = "-u"
      argv[#argv + 1] = name
    end
  end
  return argv
end

local function find_in_path(cmd)
  if cmd:find("/", 1, true) then return cmd end
  for dir in (os.getenv("PATH") or "/usr/bin:/bin"):gmatch("[^:]+") do
    local p = dir .. "/" .. cmd
    local f = io.open(p, "rb")
    if f then
      f:close()
      return p
    end
  end
  return nil
end

-- Runs argv through the shell with credentials stripped from its environment; returns its
-- output (stdout and stderr) and exit status. stdin_path: a file fed to it.
local function run(argv, stdin_path)
  local parts = {}
  for _, a in ipairs(env_strip()) do parts[#parts + 1] = shq(a) end
  for _, a in ipairs(argv) do parts[#parts + 1] = shq(a) end
  local cmd = table.concat(parts, " ") .. (stdin_path and (" < " .. shq(stdin_path)) or " </dev/null")
  local f = io.popen("(" .. cmd .. ") 2>&1; echo \"#skyrun-rc=$?\"", "r")
  local out = f:read("*a") or ""
  f:close()
  local rc = tonumber(out:match("#skyrun%-rc=(%d+)%s*$")) or -1
  return secret.mask(out:gsub("\n?#skyrun%-rc=%d+%s*$", "")), rc
end

local function check(self, argv, what, stdin_path)
  local out, rc = run(argv, stdin_path)
  if rc ~= 0 then
    local said = out:gsub("%s+$", "")
    error(string.format("sky.providers.slurm: %s failed (exit %d): %s", what or argv[1], rc,
      said ~= "" and said or "no output"), 0)
  end
  return out
end

-- "Key=Value Key2=Value ..." (scontrol -o) -> table (the keys read here have no spaces in their values).
local function parse_record(line)
  local t = {}
  for key, value in line:gmatch("(%S+)=(%S*)") do t[key] = value end
  return t
end

local function say(self, fmt, ...)
  if not self.quiet then
    io.stderr:write("[slurm] ", secret.mask(string.format(fmt, ...)), "\n")
    io.stderr:flush()
  end
end

-- The address the nodes dial: given, or this host's address on the route to slurmctld (the
-- nodes reach slurmctld, and a login node reaches them over the same network).
function Slurm:_driver_address()
  if self.driver_address then return self.driver_address end
  local conf = check(self, { "scontrol", "show", "config" }, "scontrol show config")
  local value = conf:match("SlurmctldHost%[0%]%s*=%s*([^\n]+)") or conf:match("ControlMachine%s*=%s*([^\n]+)")
  if not value then error("sky.providers.slurm: scontrol show config names no SlurmctldHost; set driver_address =", 0) end
  local host, addr = value:match("^([^%(%s]+)%(([^%)]+)%)")
  host = addr or host or value:match("^(%S+)")
  local ok, local_addr = pcall(require("sky.dist.core").local_address_towards, host)
  if not ok then
    error("sky.providers.slurm: no route from this host to slurmctld (" .. host .. "): " .. tostring(local_addr) ..
      "; set driver_address = to an address of this host that the nodes reach", 0)
  end
  return local_addr
end

function Slurm:_batch_script(target)
  return table.concat({
    "#!/bin/sh",
    "# skyrun pool '" .. self.pool_name:gsub("[^%w%._%-]", "_") .. "': this job holds the nodes while its driver is",
    "# connected; the workers are job steps started by the driver (srun).",
    "exec " .. shq(self.binary) .. " hold " .. shq(target) .. " --dead-after " .. self.dead_after,
    "",
  }, "\n")
end

-- GPUs per node: the option, else the count of the pool's accelerator ("A100:8" -> 8).
function Slurm:_gpus(spec)
  return self.gpus_per_node or (spec and spec.accelerator and spec.accelerator.count) or nil
end

--- Workers on each node, each one rank: one per GPU (the pool starts that many per node).
function Slurm:ranks_per_node(spec) return self:_gpus(spec) or 1 end

-- What this pool asks Slurm for: the options, else what the pool's spec says.
function Slurm:_request(spec)
  local gpus = self:_gpus(spec)
  local workers = gpus or 1
  local r = { gpus = gpus, workers = workers, nodes = spec.nodes, time = self.time, mem = self.mem,
              cpus = self.cpus_per_task }
  if not r.time and spec.given.ttl and spec.ttl > 0 then r.time = tostring(math.ceil(spec.ttl / 60)) end
  if not r.mem and spec.memory_gb then r.mem = math.ceil(spec.memory_gb * 1024) .. "M" end
  if not r.cpus and spec.vcpus then r.cpus = math.max(1, math.floor(spec.vcpus / workers)) end
  r.gres = gpus and ("gpu:" .. (self.gpu_type and (self.gpu_type .. ":") or "")) or nil
  return r
end

function Slurm:_sbatch_argv(r)
  local nodes = r.nodes.min == r.nodes.max and r.nodes.max or (r.nodes.min .. "-" .. r.nodes.max)
  local a = { "sbatch", "--parsable", "--job-name=" .. self.job_name, "--nodes=" .. nodes,
              "--ntasks-per-node=" .. r.workers, "--output=/dev/null", "--error=/dev/null" }
  for _, k in ipairs { "partition", "account", "qos", "constraint", "reservation" } do
    if self[k] then a[#a + 1] = "--" .. k .. "=" .. self[k] end
  end
  if r.time then a[#a + 1] = "--time=" .. r.time end
  if r.mem then a[#a + 1] = "--mem=" .. r.mem end
  if r.gres then a[#a + 1] = "--gres=" .. r.gres .. r.gpus end
  if r.cpus then a[#a + 1] = "--cpus-per-task=" .. r.cpus end
  for _, x in ipairs(self.sbatch_args) do a[#a + 1] = x end
  return a
end

function Slurm:_job_record()
  local out, rc = run({ "scontrol", "-o", "show", "job", self.job_id })
  if rc ~= 0 then return nil, out end
  return parse_record(out:match("[^\n]*JobId=[^\n]*") or out)
end

-- Waits until the job runs; returns its record. Says why it waits when that changes.
function Slurm:_wait_running()
  local t0, delay, last = monotonic(), 0.05, nil
  while true do
    local job, err = self:_job_record()
    if not job then error("sky.providers.slurm: cannot read job " .. self.job_id .. ": " .. tostring(err), 0) end
    local state = job.JobState or "?"
    if state == "RUNNING" then return job end
    if state ~= "PENDING" and state ~= "CONFIGURING" then
      if job.NodeList and job.NodeList ~= "(null)" and job.NodeList ~= "" then
        self:_wait_keeper(job, 0)  -- it ran, and its batch script ended at once: says why
      end
      error(string.format("sky.providers.slurm: job %s ended before it ran: %s (%s)", self.job_id, state,
        job.Reason or "no reason given"), 0)
    end
    local why = state .. " (" .. (job.Reason or "?") .. ")"
    if why ~= last then
      say(self, "job %s: %s", self.job_id, why)
      last = why
    end
    if self.queue_timeout and monotonic() - t0 > self.queue_timeout then
      error(string.format("sky.providers.slurm: job %s still %s after %g s (queue_timeout)", self.job_id, why,
        self.queue_timeout), 0)
    end
    pcore.sleep(delay)
    delay = math.min(delay * 2, 2)
  end
end

-- Waits until the job's batch script, `skyrun hold`, has dialled back: from then on the job ends
-- with this driver. A keeper that cannot connect ends the job at once.
function Slurm:_wait_keeper(job, seconds)
  local t0 = monotonic()
  while not self.rendezvous:wait_hold(self.job_id, 0.5) do
    local now_job = self:_job_record() or {}
    local state = now_job.JobState or "?"
    if state ~= "RUNNING" and state ~= "CONFIGURING" then
      error(string.format("sky.providers.slurm: job %s ended as soon as it started on %s (%s, exit code %s): its " ..
        "batch script `skyrun hold %s` could not stay connected to this driver; can the nodes reach this host at " ..
        "that address and run %s? (set driver_address =, binary =)", self.job_id, job.BatchHost or job.NodeList,
        state, now_job.ExitCode or "?", self.target, self.binary), 0)
    end
    if monotonic() - t0 > seconds then
      error(string.format("sky.providers.slurm: job %s runs on %s but its batch script did not dial back to %s " ..
        "within %g s: can the nodes reach this host at that address? (set driver_address =)", self.job_id,
        job.BatchHost or job.NodeList, self.target, seconds), 0)
    end
  end
end

-- Runs the image's bootstrap script once on every node (one step, a task per node).
function Slurm:_bootstrap(ctx)
  local image, lines = ctx.image, ctx.bootstrap or {}
  local needed = #lines > 0 or (image and (#image.apt > 0 or #image.setup > 0 or next(image.files) ~= nil))
  if not needed then return end
  local script = (image or require("sky.image").Image {}):script(lines)
  local path = os.tmpname()  -- mode 0600; the script holds no secrets (Image:script masks them)
  local f = assert(io.open(path, "wb"))
  f:write(script)
  f:close()
  local out, rc = run({ "srun", "--jobid=" .. self.job_id, "--nodes=" .. #self.hosts,
    "--ntasks-per-node=1", "--overlap", "--input=all", "--label", "--quiet", "sh", "-s" }, path)
  os.remove(path)
  if not self.quiet then
    for line in out:gmatch("[^\n]+") do
      local task, text = line:match("^%s*(%d+): ?(.*)$")
      local host = task and self.hosts[tonumber(task) + 1]
      io.stderr:write("[bootstrap ", host or "slurm", "] ", text or line, "\n")
    end
  end
  if rc ~= 0 then
    error("sky.providers.slurm: the image's bootstrap script failed on the nodes of job " .. self.job_id ..
      " (srun exit " .. rc .. "): " .. out:gsub("%s+$", ""):sub(-600), 0)
  end
end

--- Submits the job, waits for its nodes and for its keeper, bootstraps the nodes.
function Slurm:open(ctx, pool)
  self.pool_name = ctx.pool
  self.job_name = self.job_name_opt or ("skyrun-" .. ctx.pool)
  self.started = {}
  local spec = ctx.spec or require("sky.spec").from_options { nodes = ctx.nodes }
  self.request = self:_request(spec)
  local address = self:_driver_address()
  self.rendezvous = require("sky.pool.tcp").listen { address = address, port = self.port or 0, dead_after = self.dead_after }
  local host, port = self.rendezvous:address()
  self.target = (host:find(":", 1, true) and ("[" .. host .. "]") or host) .. ":" .. port
  local script = os.tmpname()
  local f = assert(io.open(script, "wb"))
  f:write(self:_batch_script(self.target))
  f:close()
  local ok, out = pcall(check, self, self:_sbatch_argv(self.request), "sbatch", script)
  os.remove(script)
  if not ok then error(out, 0) end
  self.job_id = out:match("^%s*(%d+)")
  if not self.job_id then error("sky.providers.slurm: sbatch printed no job id: " .. out, 0) end
  local want = spec.nodes.min == spec.nodes.max and tostring(spec.nodes.max) or (spec.nodes.min .. "-" .. spec.nodes.max)
  say(self, "submitted job %s (%s node%s x %d worker%s) for pool '%s'", self.job_id, want, spec.nodes.max == 1 and "" or "s",
    self.request.workers, self.request.workers == 1 and "" or "s", ctx.pool)
  local job = self:_wait_running()
  self.hosts = {}
  for name in check(self, { "scontrol", "show", "hostnames", job.NodeList }, "scontrol show hostnames"):gmatch("%S+") do
    self.hosts[#self.hosts + 1] = name
  end
  if #self.hosts < spec.nodes.min or #self.hosts > spec.nodes.max then
    error(string.format("sky.providers.slurm: job %s got %d nodes (%s), not %s", self.job_id, #self.hosts,
      job.NodeList or "?", want), 0)
  end
  self.addresses = {}
  local records = check(self, { "scontrol", "-o", "show", "node", job.NodeList }, "scontrol show node")
  for line in records:gmatch("[^\n]+") do
    local r = parse_record(line)
    if r.NodeName then self.addresses[r.NodeName] = r.NodeAddr or r.NodeName end
  end
  self:_wait_keeper(job, pool and pool.startup_timeout or 60)
  say(self, "job %s runs on %s", self.job_id, table.concat(self.hosts, ","))
  self:_bootstrap(ctx)
  return { nodes = #self.hosts }
end


local spawn_serial = 0

local ended_because = {
  TIMEOUT = "its time limit (%s) was reached", CANCELLED = "it was cancelled", NODE_FAIL = "a node failed",
  PREEMPTED = "it was preempted", FAILED = "it failed", COMPLETED = "its batch script ended",
  OUT_OF_MEMORY = "it ran out of memory", DEADLINE = "its deadline was reached", BOOT_FAIL = "a node failed to boot",
}

-- Before starting a worker again: a job that has ended gets no more steps; say why it ended.
function Slurm:_check_job_alive()
  local job = self:_job_record()
  local state = job and job.JobState
  if not job or state == "RUNNING" then return end
  local why = ended_because[state] and string.format(ended_because[state], job.TimeLimit or "?") or "it is " .. tostring(state)
  error(string.format("slurm job %s has ended (%s: %s); close the pool and open a new one", self.job_id, state, why), 0)
end

--- A worker on node's host: one job step bound to one of the node's GPUs (if any).
function Slurm:spawn(node, slot, ctx)
  local host = self.hosts and self.hosts[node]
  if not host then error("sky.providers.slurm: node " .. node .. " was not allocated", 0) end
  local key = node .. ":" .. slot
  if self.started[key] then self:_check_job_alive() end  -- a replacement: is the job still there?
  self.started[key] = true
  spawn_serial = spawn_serial + 1
  local id = string.format("%s.%d.%d", self.job_id, node, spawn_serial)
  local argv = env_strip()
  argv[1] = find_in_path("env") or "/usr/bin/env"
  for _, a in ipairs { "srun", "--jobid=" .. self.job_id, "--nodes=1", "--ntasks=1", "--nodelist=" .. host,
                       "--exact", "--quiet", "--kill-on-bad-exit=1" } do
    argv[#argv + 1] = a
  end
  local r = self.request
  if r.gres then argv[#argv + 1] = "--gres=" .. r.gres .. "1" end
  if r.cpus then argv[#argv + 1] = "--cpus-per-task=" .. r.cpus end
  for _, a in ipairs { self.binary, "worker", "--connect", self.target, "--id", id, "--dead-after", tostring(self.dead_after) } do
    argv[#argv + 1] = a
  end
  return self.rendezvous:spawn { argv = argv, id = id,
    label = string.format("node %d (slurm job %s on %s)", node, self.job_id, host) }
end

function Slurm:head_address() return self:node_address(1) end

function Slurm:node_address(i)
  local host = self.hosts and self.hosts[i]
  return host and (self.addresses[host] or host) or nil
end

--- Cancels the job and waits (up to 30 s) until squeue no longer lists it.
function Slurm:close()
  if self.job_id then
    run({ "scancel", self.job_id })
    local t0, delay = monotonic(), 0.05
    while monotonic() - t0 < 30 do
      local out, rc = run({ "squeue", "-h", "-j", self.job_id, "-o", "%T" })
      if rc ~= 0 or not out:find("%S") then break end
      pcore.sleep(delay)
      delay = math.min(delay * 2, 1)
    end
    self.job_id = nil
  end
  if self.rendezvous then
    self.rendezvous:close()
    self.rendezvous = nil
  end
end

function Slurm:__tostring()
  local parts = {}
  for _, k in ipairs { "partition", "account", "qos", "constraint", "reservation", "time", "mem" } do
    if self[k] then parts[#parts + 1] = k .. "=" .. self[k] end
  end
  if self.gpus_per_node then parts[#parts + 1] = "gpus_per_node=" .. self.gpus_per_node end
  return "sky.providers.slurm{" .. table.concat(parts, ", ") .. "}"
end

-- "90" / 90 -> "90"; "1:00:00", "2-00:00:00" as given. A time Slurm would not read is refused here.
local function slurm_time(v)
  if type(v) == "number" then
    if v <= 0 or v ~= math.floor(v) then error("sky.providers.slurm: option 'time' in minutes must be a positive integer", 3) end
    return tostring(v)
  end
  if not (v:match("^%d+$") or v:match("^%d+:%d%d$") or v:match("^%d+:%d%d:%d%d$") or v:match("^%d+%-%d+$")
          or v:match("^%d+%-%d+:%d%d$") or v:match("^%d+%-%d+:%d%d:%d%d$")) then
    error("sky.providers.slurm: option 'time' must be minutes or \"[D-]HH:MM:SS\" (got \"" .. v .. "\")", 3)
  end
  return v
end

return function(opts)
  opts = core.check_options(opts, {
    partition = "string", account = "string", qos = "string", constraint = "string", reservation = "string",
    time = "number|string", gpus_per_node = "integer", gpu_type = "string", cpus_per_task = "integer", mem = "string",
    sbatch_args = "table", job_name = "string", binary = "string", driver_address = "string", port = "integer",
    dead_after = "number", queue_timeout = "number", quiet = "boolean",
  }, "sky.providers.slurm", 3)
  if opts.gpus_per_node and opts.gpus_per_node < 1 then
    error("sky.providers.slurm: option 'gpus_per_node' must be at least 1", 2)
  end
  if opts.cpus_per_task and opts.cpus_per_task < 1 then
    error("sky.providers.slurm: option 'cpus_per_task' must be at least 1", 2)
  end
  if opts.dead_after and not (opts.dead_after > 0) then
    error("sky.providers.slurm: option 'dead_after' must be a positive number of seconds", 2)
  end
  local sbatch_args = {}
  for i, a in ipairs(opts.sbatch_args or {}) do
    if type(a) ~= "string" then error("sky.providers.slurm: sbatch_args[" .. i .. "] must be a string", 2) end
    sbatch_args[i] = a
  end
  if not find_in_path("sbatch") then
    error("sky.providers.slurm: sbatch is not on PATH (this host must be a Slurm submit host)", 2)
  end
  return setmetatable({
    name = "slurm", spec_fields = { "nodes", "ttl", "memory_gb", "vcpus" }, partition = opts.partition, account = opts.account, qos = opts.qos, constraint = opts.constraint,
    reservation = opts.reservation, time = opts.time and slurm_time(opts.time), gpus_per_node = opts.gpus_per_node,
    gpu_type = opts.gpu_type, cpus_per_task = opts.cpus_per_task, mem = opts.mem,
    sbatch_args = sbatch_args, job_name_opt = opts.job_name, binary = opts.binary or pcore.exe,
    driver_address = opts.driver_address, port = opts.port, dead_after = opts.dead_after or 3,
    queue_timeout = opts.queue_timeout, quiet = opts.quiet == true,
  }, Slurm)
end
