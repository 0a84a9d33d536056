-- sky.providers.ssh{hosts=, ...}: workers are `skyrun worker` processes on remote hosts, each
-- host reached through one libssh session (OpenSSH's defaults: ~/.ssh/config aliases, user,
-- port and IdentityFile, the agent, ~/.ssh/known_hosts). Opening the pool bootstraps every host
-- over that session (sky.ssh_bootstrap: same OS/arch, the binary uploaded once into
-- ~/.cache/skyrun/bin/<sha256>/, the image script, a shared-library check), then each worker runs
-- on an exec channel of the same session: no second login, no extra port. The task environment
-- (HF token, plugin variables) travels inside the protocol, never on a command line.
--   hosts            {"user@host:port", "alias", ...}; node i runs on hosts[i] (nodes <= #hosts)
--   key              private key file (default: the agent, then IdentityFile / ~/.ssh/id_*)
--   known_hosts      known_hosts file (default ~/.ssh/known_hosts)
--   host_key_policy  "strict" (default: unknown keys refused) or "accept-new" (unknown keys added,
--                    changed keys refused)
--   connect_timeout  seconds (10)
--   dead_after       seconds of silence after which a host that vanished without closing its
--                    connection (power loss, network cut) is declared lost (30)
--   ssh_config       ssh_config file (default ~/.ssh/config; "none" for none)
--   sudo             run the image script (and apt) through `sudo -n` unless the login is root (default false)
--   install_libraries  apt-get install the packages of missing shared libraries (needs root or sudo)
--   workdir          the workers' working folder on each host (default: the remote home)
--   quiet            do not stream bootstrap output
--   gpus_per_node    workers per host, each a rank bound to its GPU (default: the pool's accelerator
--                    count, e.g. "H100:8"; the hosts' GPUs are not detected: one worker otherwise)
local core = require "sky.core"
local ssh = require "sky.ssh.core"
local boot = require "sky.ssh_bootstrap"

local Ssh = {}
Ssh.__index = Ssh

local function connect(self, i)
  return ssh.connect {
    target = self.hosts[i], key = self.key, known_hosts = self.known_hosts, config = self.ssh_config,
    host_key_policy = self.host_key_policy, connect_timeout = self.connect_timeout, dead_after = self.dead_after,
  }
end

--- Connects to the hosts of nodes 1..ctx.nodes, then bootstraps them side by side.
function Ssh:open(ctx, pool)
  local nodes = ctx.nodes or #self.hosts
  local least = ctx.spec and ctx.spec.nodes.min or nodes
  if nodes > #self.hosts and least <= #self.hosts then nodes = #self.hosts end  -- nodes = {min=, max=}
  if nodes > #self.hosts then
    error(string.format("sky.providers.ssh: nodes=%d but only %d host%s given", nodes, #self.hosts,
      #self.hosts == 1 and " is" or "s are"), 0)
  end
  self.sessions, self.prepared = {}, {}
  for i = 1, nodes do self.sessions[i] = connect(self, i) end
  self.boot_opts = { image = ctx.image, bootstrap = ctx.bootstrap, workdir = self.workdir, sudo = self.sudo,
                     install_libraries = self.install_libraries, quiet = self.quiet }
  self.prepared = boot.prepare_all(self.sessions, self.boot_opts)
  return { nodes = nodes }
end

--- Puts node's host at `target` (a machine that replaced a lost one, or the same host after its
--- connection broke): connects and bootstraps it as open did.
function Ssh:replace_host(node, target)
  local old = self.sessions and self.sessions[node]
  if old then pcall(old.close, old) end
  self.hosts[node] = target
  self.sessions[node] = connect(self, node)
  self.prepared[node] = boot.prepare_all({ self.sessions[node] }, self.boot_opts)[1]
end

--- A fresh worker on node's host, on a new exec channel of that host's session. A host whose
--- session was lost is not dialled again here: a connect blocks the pool's loop for up to
--- connect_timeout, so the node fails at once and the other nodes carry on.
function Ssh:spawn(node, slot, ctx)
  local s = self.sessions and self.sessions[node]
  if not s then error("sky.providers.ssh: node " .. node .. " was not opened", 0) end
  if not s.connected then
    error("ssh " .. s:describe() .. ": the connection was lost; node " .. node .. " has no worker now", 0)
  end
  return s:start_worker { path = self.prepared[node].path, workdir = self.workdir, label = "node " .. node }
end

--- The address other nodes reach node 1 at: its host as this driver reached it.
function Ssh:head_address() return self:node_address(1) end

function Ssh:ranks_per_node(spec) return require("sky.providers").gpus_per_node(self.gpus_per_node, spec) end

--- The address node i's host was reached at (after ssh_config resolution).
function Ssh:node_address(i)
  local s = self.sessions and self.sessions[i]
  if s then return s.host end
  local ok, t = pcall(ssh.parse_target, self.hosts[i] or "")
  return ok and t.host or nil
end

--- Whether this pool start uploaded the binary to node i's host (false: it was cached there).
function Ssh:uploaded(i) return self.prepared and self.prepared[i] and self.prepared[i].uploaded end

--- Closes every session: the workers' channels close and they exit. Nothing is removed on the hosts.
function Ssh:close()
  for _, s in pairs(self.sessions or {}) do pcall(s.close, s) end
  self.sessions = {}
end

function Ssh:__tostring()
  local parts = { "hosts={" .. table.concat(self.hosts, ", ") .. "}" }
  if self.host_key_policy ~= "strict" then parts[#parts + 1] = 'host_key_policy="' .. self.host_key_policy .. '"' end
  if self.workdir then parts[#parts + 1] = "workdir=" .. self.workdir end
  if self.sudo then parts[#parts + 1] = "sudo=true" end
  return "sky.providers.ssh{" .. table.concat(parts, ", ") .. "}"
end

return function(opts)
  opts = core.check_options(opts, {
    hosts = "table", key = "string", known_hosts = "string", host_key_policy = "string", connect_timeout = "seconds",
    ssh_config = "string", sudo = "boolean", dead_after = "seconds", install_libraries = "boolean", workdir = "string", quiet = "boolean",
    gpus_per_node = "integer",
  }, "sky.providers.ssh", 3)
  if type(opts.hosts) ~= "table" or #opts.hosts == 0 then
    error("sky.providers.ssh: option 'hosts' must list at least one host (\"user@host:port\" or an ssh_config alias)", 2)
  end
  local hosts = {}
  for i, h in ipairs(opts.hosts) do
    if type(h) ~= "string" then error("sky.providers.ssh: hosts[" .. i .. "] must be a string", 2) end
    local ok, err = pcall(ssh.parse_target, h)
    if not ok then error("sky.providers.ssh: hosts[" .. i .. "]: " .. tostring(err), 2) end
    hosts[i] = h
  end
  local policy = opts.host_key_policy or "strict"
  if policy ~= "strict" and policy ~= "accept-new" then
    error("sky.providers.ssh: option 'host_key_policy' must be \"strict\" or \"accept-new\" (got \"" .. policy .. "\")", 2)
  end
  return setmetatable({
    name = "ssh", spec_fields = { "nodes" }, hosts = hosts, key = opts.key, known_hosts = opts.known_hosts, host_key_policy = policy,
    connect_timeout = opts.connect_timeout or 10, dead_after = opts.dead_after or 30, ssh_config = opts.ssh_config, sudo = opts.sudo == true,
    install_libraries = opts.install_libraries == true, workdir = opts.workdir, quiet = opts.quiet == true,
    gpus_per_node = require("sky.providers").check_gpus_per_node(opts.gpus_per_node, "sky.providers.ssh"),
  }, Ssh)
end
