-- slurm: a real Slurm cluster for tests, configured and started here as root: one munged, one
-- slurmctld on the driver's side of a private bridge, and one slurmd per network namespace
-- (tests/lib/netns.lua), each node with pretend GPUs (character devices made with mknod, listed as
-- gres/gpu, so Slurm binds each step to its own and sets CUDA_VISIBLE_DEVICES).
--   local Slurm = require "slurm"
--   local c = Slurm.start { nodes = 3, gpus_per_node = 2 }   -- sets SLURM_CONF in this process
--   c:sh("squeue -h")                 -- stdout, stderr, code of a Slurm command against this cluster
--   c.nodes[2].name, c.nodes[2].addr, c.net                 -- "n2", "10.77.x.12", the Netns
--   c:cut(2) / c:restore(2)           -- take node 2's link down (a lost node) and back up
-- Everything is unique to the test process (cluster name, slurmctld port, config, state and spool
-- folders, munge key and socket, namespaces), so several suites run at once; everything is killed
-- and removed when the test process ends, even when it dies (Sshd.on_exit).
local T = require "testlib"
local Sshd = require "sshd"
local Netns = require "netns"

local M = {}
local C = {}
C.__index = C

local q = T.shell_quote

local pcore = require "sky.pool.core"
local sh_ok = T.sh_ok
local sleep = pcore.sleep

--- Starts the cluster. opts: nodes (3), gpus_per_node (2), cpus (8 per node), memory (4000 MB per node).
function M.start(opts)
  opts = opts or {}
  local n, gpus = opts.nodes or 3, opts.gpus_per_node or 2
  local self = setmetatable({ nodes = {} }, C)
  self.net = Netns.create { hosts = n }
  self.dir = Sshd.tmpdir("slurm")
  self.name = "sky" .. pcore.getpid() .. self.dir:match("(%d+)$")  -- the cluster name
  local d = self.dir
  sh_ok("mkdir -p " .. q(d .. "/munge") .. " " .. q(d .. "/state") .. " " .. q(d .. "/dev") .. " && chmod 700 " .. q(d .. "/munge"))

  -- munge: its own key and socket
  sh_ok("dd if=/dev/urandom of=" .. q(d .. "/munge/key") .. " bs=1024 count=1 2>/dev/null && chmod 400 " .. q(d .. "/munge/key"))
  self.munge_socket = d .. "/munge/socket"
  sh_ok(string.format("munged --force --socket=%s --key-file=%s --pid-file=%s --log-file=%s --seed-file=%s",
    q(self.munge_socket), q(d .. "/munge/key"), q(d .. "/munge/pid"), q(d .. "/munge/log"), q(d .. "/munge/seed")))
  Sshd.on_exit("kill -9 $(cat " .. q(d .. "/munge/pid") .. ")")

  -- nodes and their pretend GPUs
  local node_lines, gres_lines = {}, {}
  for i, h in ipairs(self.net.hosts) do
    local name = "n" .. i
    local files = {}
    for g = 0, gpus - 1 do
      local dev = string.format("%s/dev/%s-gpu%d", d, name, g)
      sh_ok(string.format("mknod %s c 195 %d", q(dev), (i - 1) * gpus + g))
      files[#files + 1] = dev
    end
    self.nodes[i] = { name = name, addr = h.addr, ns = h.ns, veth = h.veth }
    node_lines[#node_lines + 1] = string.format("NodeName=%s NodeAddr=%s CPUs=%d RealMemory=%d%s State=UNKNOWN",
      name, h.addr, opts.cpus or 8, opts.memory or 4000, gpus > 0 and (" Gres=gpu:" .. gpus) or "")
    for _, f in ipairs(files) do gres_lines[#gres_lines + 1] = "NodeName=" .. name .. " Name=gpu File=" .. f end
  end
  T.write_file(d .. "/gres.conf", table.concat(gres_lines, "\n") .. "\n")

  self.port = Sshd.free_port()
  local host = T.sh("hostname -s"):match("%S+")
  self.conf = d .. "/slurm.conf"
  T.write_file(self.conf, table.concat({
    "ClusterName=" .. self.name,
    "SlurmctldHost=" .. host .. "(" .. self.net.gateway .. ")",
    "SlurmctldPort=" .. self.port,
    "SlurmdPort=6818",  -- inside each node's own namespace
    "AuthType=auth/munge", "CredType=cred/munge", "AuthInfo=socket=" .. self.munge_socket,
    "SlurmUser=root", "SlurmdUser=root",
    "StateSaveLocation=" .. d .. "/state",
    "SlurmdSpoolDir=" .. d .. "/spool.%n",
    "SlurmctldPidFile=" .. d .. "/slurmctld.pid", "SlurmdPidFile=" .. d .. "/slurmd.%n.pid",
    "SlurmctldLogFile=" .. d .. "/slurmctld.log", "SlurmdLogFile=" .. d .. "/slurmd.%n.log",
    -- no cgroups: the nodes share this machine's; processes are tracked by parentage
    "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
    "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
    "SlurmdParameters=config_overrides", "ReturnToService=2", "MpiDefault=none",
    "JobCompType=jobcomp/none", "AccountingStorageType=accounting_storage/none",
    "KillWait=2", "GresTypes=gpu", "DefMemPerCPU=100",
    table.concat(node_lines, "\n"),
    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    "",
  }, "\n"))
  pcore.setenv("SLURM_CONF", self.conf)

  sh_ok("slurmctld -i -f " .. q(self.conf))
  Sshd.on_exit("kill -9 $(cat " .. q(d .. "/slurmctld.pid") .. ")")
  for _, node in ipairs(self.nodes) do self:_start_slurmd(node) end
  self:wait_idle(30)
  return self
end

-- slurmd in the node's network namespace only (nsenter keeps this machine's mounts, where the
-- cgroup file systems Slurm checks for are; `ip netns exec` would remount /sys).
function C:_start_slurmd(node)
  sh_ok("mkdir -p " .. q(self.dir .. "/spool." .. node.name))
  sh_ok(string.format("nsenter --net=/var/run/netns/%s slurmd -f %s -N %s", node.ns, q(self.conf), node.name))
end

--- Runs a shell command with this cluster's SLURM_CONF; returns stdout, stderr, code.
function C:sh(cmd) return T.sh("SLURM_CONF=" .. q(self.conf) .. " " .. cmd) end

--- Waits until every node is idle (or mixed/allocated: up and answering).
function C:wait_idle(seconds)
  local out
  for _ = 1, math.floor(seconds / 0.2) do
    out = self:sh("sinfo -h -N -o '%N %T'")
    local up = 0
    for _, state in out:gmatch("(%S+) (%S+)") do
      if state == "idle" or state == "mixed" or state == "allocated" then up = up + 1 end
    end
    if up == #self.nodes then return end
    sleep(0.2)
  end
  error("slurm: nodes not up after " .. seconds .. " s: " .. tostring(out) .. "\n" ..
    T.sh("tail -n 20 " .. q(self.dir .. "/slurmctld.log")))
end

--- Jobs squeue lists now (every state it shows by default: pending, running, completing), as
--- "id state name" lines; the ids in `except` are left out.
function C:jobs(except)
  local out = self:sh("squeue -h -o '%i %T %j'")
  local jobs = {}
  for line in out:gmatch("[^\n]+") do
    if not (except and except[line:match("^(%d+)")]) then jobs[#jobs + 1] = line end
  end
  return jobs
end

--- Waits up to `seconds` until squeue lists nothing (but the jobs in `except`, a set of ids);
--- returns what it lists then.
function C:wait_no_jobs(seconds, except)
  local jobs
  for _ = 1, math.floor((seconds or 10) / 0.1) do
    jobs = self:jobs(except)
    if #jobs == 0 then return jobs end
    sleep(0.1)
  end
  return jobs
end

--- Node i's link goes down: its processes run on but nothing reaches them (a lost node).
function C:cut(i) sh_ok("ip link set " .. q(self.nodes[i].veth) .. " down") end
function C:restore(i) sh_ok("ip link set " .. q(self.nodes[i].veth) .. " up") end

--- Every log the daemons wrote, concatenated (for checks that no secret reached them).
function C:logs()
  return T.sh("cat " .. q(self.dir) .. "/*.log " .. q(self.dir) .. "/munge/log 2>/dev/null")
end

--- Every file of slurmctld's saved state (job scripts and environments), concatenated.
function C:state()
  return T.sh("find " .. q(self.dir .. "/state") .. " " .. q(self.dir) .. "/spool.* -type f -exec cat {} + 2>/dev/null")
end

return M
