-- sshd: real OpenSSH servers for tests, with throwaway host and user keys in a temp folder.
--   local Sshd = require "sshd"
--   local key = Sshd.user_key()                       -- { private = path, public = path, line = "ssh-ed25519 ..." }
--   local s = Sshd.start { authorized = { key } }     -- 127.0.0.1 on a free high port
--   s.spec             -- "root@127.0.0.1:<port>"
--   s.fingerprint      -- "SHA256:..." of its host key; s:known_hosts_line()
--   s:processes()      -- pids of every process started through this server (listener excluded)
--   s:kill()           -- SIGKILL the listener and every session (a host that dies)
--   s:stop()
-- Each server runs as root with its own sshd_config (no PAM, AuthorizedKeysFile in the temp
-- folder) and gives its sessions their own HOME (SetEnv), so several servers on one machine look
-- like separate hosts. Everything started here is killed when the test process ends, even when
-- it dies on an error or a timeout (a watcher process runs the cleanup script).

local T = require "testlib"

local M = {}
local S = {}
S.__index = S

local q = T.shell_quote

local function sleep(s) os.execute("sleep " .. s) end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function own_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = tonumber(f:read("*a"):match("^(%d+)"))
  f:close()
  return pid
end

-- ---- cleanup that survives the test process ------------------------------------------------

-- One folder per test process holding a cleanup script; a detached watcher runs the script when
-- the process is gone. M.cleanup_now() runs it early (and empties it).
local run_dir, cleanup_path
local function ensure_run_dir()
  if run_dir then return run_dir end
  run_dir = os.tmpname()
  os.remove(run_dir)
  T.exec("mkdir -p " .. q(run_dir))
  cleanup_path = run_dir .. "/cleanup.sh"
  T.write_file(cleanup_path, "")
  local watcher = string.format(
    "setsid sh -c 'while kill -0 %d 2>/dev/null; do sleep 0.3; done; sh %s >/dev/null 2>&1; rm -rf %s' " ..
    "</dev/null >/dev/null 2>&1 &", own_pid(), cleanup_path, run_dir)
  T.exec(watcher)
  return run_dir
end
M.ensure_run_dir = ensure_run_dir

-- Adds a shell line to the exit cleanup (lines run in order, each one's failure ignored).
function M.on_exit(line)
  ensure_run_dir()
  local f = assert(io.open(cleanup_path, "ab"))
  f:write(line, "\n")
  f:close()
end

function M.cleanup_now()
  if not cleanup_path then return end
  os.execute("sh " .. q(cleanup_path) .. " >/dev/null 2>&1")
  T.write_file(cleanup_path, "")
end

-- A fresh folder under this run's folder (removed by the watcher).
local serial = 0
function M.tmpdir(prefix)
  serial = serial + 1
  local d = ensure_run_dir() .. "/" .. (prefix or "d") .. serial
  T.exec("mkdir -p " .. q(d))
  return d
end

-- ---- keys ---------------------------------------------------------------------------------

--- A new ed25519 key pair (no passphrase). Returns { private, public, line, fingerprint }.
function M.user_key(dir)
  dir = dir or M.tmpdir("key")
  local path = dir .. "/id_ed25519"
  T.exec("ssh-keygen -q -t ed25519 -N '' -C skyrun-test -f " .. q(path) .. " >/dev/null")
  local fp = T.sh("ssh-keygen -l -E sha256 -f " .. q(path .. ".pub"))
  return { private = path, public = path .. ".pub", line = T.read_file(path .. ".pub"):gsub("%s+$", ""),
           fingerprint = fp:match("(SHA256:%S+)") }
end

-- ---- ports ----------------------------------------------------------------------------------

local function port_in_use(port)
  local out = T.sh("ss -Htln 'sport = :" .. port .. "'")
  return out:find("%S") ~= nil
end

-- Below the kernel's ephemeral range (32768 up by default), so that no outgoing connection of
-- this machine holds the port we pick; seeded once per process.
local seeded = false
local function pick_port()
  if not seeded then
    math.randomseed(own_pid() * 7919 + os.time())
    seeded = true
  end
  for _ = 1, 50 do
    local p = math.random(20000, 32000)
    if not port_in_use(p) then return p end
  end
  error("sshd: no free port found")
end
M.free_port = pick_port  -- for the other daemons the tests start (slurmctld)

-- ---- servers --------------------------------------------------------------------------------

--- Starts an sshd. opts:
---   authorized: list of user keys (from M.user_key) allowed to log in as root
---   address ("127.0.0.1"), port (a free high port; 22 inside a namespace), netns (run inside it)
---   name (for messages and the HOME folder), host_key_type ("ed25519")
---   login_as: more user names that log in as root (uid 0), as a cloud image's "ubuntu" user
---   hide_libraries: sonames the host lacks (the server runs in a mount namespace where they are
---   absent from /usr/lib/<multiarch>), for tests of missing shared libraries
function M.start(opts)
  opts = opts or {}
  local self = setmetatable({}, S)
  self.name = opts.name or "sshd"
  self.dir = M.tmpdir("sshd-" .. self.name:gsub("[^%w]", "_") .. "-")
  self.netns = opts.netns
  self.address = opts.address or "127.0.0.1"
  self.home = self.dir .. "/home"
  self.marker = "skytest" .. own_pid() .. "_" .. self.dir:match("(%d+)$")
  T.exec("mkdir -p /run/sshd " .. q(self.home))
  T.exec("chmod 0755 /run/sshd")
  local hostkey = self.dir .. "/ssh_host_" .. (opts.host_key_type or "ed25519") .. "_key"
  T.exec(string.format("ssh-keygen -q -t %s -N '' -f %s >/dev/null", opts.host_key_type or "ed25519", q(hostkey)))
  self.host_key = hostkey
  self.host_key_line = T.read_file(hostkey .. ".pub"):gsub("%s+$", "")
  self.fingerprint = T.sh("ssh-keygen -l -E sha256 -f " .. q(hostkey .. ".pub")):match("(SHA256:%S+)")
  local lines = {}
  for _, k in ipairs(opts.authorized or {}) do lines[#lines + 1] = k.line end
  T.write_file(self.dir .. "/authorized_keys", table.concat(lines, "\n") .. "\n")
  local tries = 0
  while true do
    tries = tries + 1
    self.port = opts.port or (self.netns and 22) or pick_port()
    T.write_file(self.dir .. "/sshd_config", table.concat({
      "ListenAddress " .. self.address .. ":" .. self.port,
      "HostKey " .. hostkey,
      "PidFile " .. self.dir .. "/sshd.pid",
      "AuthorizedKeysFile " .. self.dir .. "/authorized_keys",
      "UsePAM no",
      "StrictModes no",
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PubkeyAuthentication yes",
      "AllowAgentForwarding no",
      "AllowTcpForwarding no",
      "X11Forwarding no",
      "PrintMotd no",
      "UseDNS no",
      "MaxStartups 100",
      "MaxSessions 100",
      "Subsystem sftp internal-sftp",
      -- Each server is a separate host: its own HOME, and a marker in every session's
      -- environment so tests can find every process a server started.
      "SetEnv HOME=" .. self.home .. " SKYTEST_SSHD=" .. self.marker,
      "",
    }, "\n"))
    local prefix = self.netns and ("ip netns exec " .. q(self.netns) .. " ") or ""
    local log = self.dir .. "/sshd.log"
    os.remove(log)
    local sshd_cmd = "/usr/sbin/sshd -D -e -f " .. q(self.dir .. "/sshd_config")
    local mounts = {}  -- shell steps run in a private mount namespace before sshd starts
    if opts.hide_libraries then
      -- the library folder becomes a folder of links to the real one, minus the hidden sonames
      local libdir = T.sh("dirname \"$(readlink -f /lib/x86_64-linux-gnu/libc.so.6 2>/dev/null || " ..
        "ldd /bin/sh | awk '/libc.so/ {print $3}')\""):match("[^\n]+")
      local orig, stage = self.dir .. "/libdir", self.dir .. "/libstage"
      T.exec("mkdir -p " .. q(orig) .. " " .. q(stage))
      local rm = {}
      for _, so in ipairs(opts.hide_libraries) do rm[#rm + 1] = q(stage .. "/" .. so) end
      mounts[#mounts + 1] = string.format("mount --bind %s %s && ln -s %s/* %s/ && rm -f %s && mount --bind %s %s",
        q(libdir), q(orig), q(orig), q(stage), table.concat(rm, " "), q(stage), q(libdir))
    end
    if opts.login_as then
      -- more user names for uid 0 (a cloud image's "ubuntu" user): a passwd file with them
      local passwd = T.read_file("/etc/passwd")
      for _, u in ipairs(opts.login_as) do
        passwd = passwd .. u .. ":x:0:0:skyrun test:" .. self.home .. ":/bin/sh\n"
      end
      T.write_file(self.dir .. "/passwd", passwd)
      mounts[#mounts + 1] = "mount --bind " .. q(self.dir .. "/passwd") .. " /etc/passwd"
    end
    if #mounts > 0 then
      mounts[#mounts + 1] = "exec " .. sshd_cmd
      sshd_cmd = "unshare -m --propagation private sh -c " .. q(table.concat(mounts, " && "))
    end
    T.exec(string.format("%ssetsid %s </dev/null >%s 2>&1 & echo $! > %s",
      prefix, sshd_cmd, q(log), q(self.dir .. "/listener.pid")))
    self.pid = tonumber(T.read_file(self.dir .. "/listener.pid"))
    M.on_exit("kill -9 " .. self.pid)
    M.on_exit(string.format("for p in $(grep -lsa %s /proc/[0-9]*/environ | cut -d/ -f3); do kill -9 $p; done",
      q("SKYTEST_SSHD=" .. self.marker)))
    local ready = false
    for _ = 1, 200 do
      local text = exists(log) and T.read_file(log) or ""
      if text:find("Server listening on", 1, true) then ready = true break end
      if text:find("Address already in use", 1, true) or text:find("Cannot bind", 1, true) then break end
      if os.execute("kill -0 " .. self.pid .. " 2>/dev/null") ~= 0 then break end
      sleep(0.05)
    end
    if ready then break end
    os.execute("kill -9 " .. self.pid .. " 2>/dev/null")
    -- a fixed port may still be held for a moment by a server just killed: try again shortly
    if opts.port and tries < 20 then sleep(0.1) elseif opts.port or tries >= 5 then
      error("sshd " .. self.name .. " did not start: " .. (exists(log) and T.read_file(log) or "?"))
    end
  end
  self.user = "root"
  self.spec = self.user .. "@" .. self.address .. ":" .. self.port
  return self
end

--- The known_hosts line for this server ("[addr]:port key" as OpenSSH writes it).
function S:known_hosts_line()
  local hostpart = (self.port == 22) and self.address or ("[" .. self.address .. "]:" .. self.port)
  return hostpart .. " " .. self.host_key_line:match("^(%S+%s+%S+)")
end

--- The server's log so far (sshd -e).
function S:log() return exists(self.dir .. "/sshd.log") and T.read_file(self.dir .. "/sshd.log") or "" end

--- Pids of every live process whose environment carries this server's marker (its sessions and
--- whatever they started), excluding zombies.
function S:processes()
  local out = T.sh(string.format("grep -lsa %s /proc/[0-9]*/environ | cut -d/ -f3",
    q("SKYTEST_SSHD=" .. self.marker)))
  local pids = {}
  for pid in out:gmatch("%d+") do
    local f = io.open("/proc/" .. pid .. "/stat")
    if f then
      local stat = f:read("*a") or ""
      f:close()
      local state = stat:match("^%d+ %b() (%a)")
      if state and state ~= "Z" then pids[#pids + 1] = tonumber(pid) end
    end
  end
  return pids
end

--- Command lines of this server's processes (for `ps`-style checks), one string each.
function S:command_lines()
  local lines = {}
  for _, pid in ipairs(self:processes()) do
    local f = io.open("/proc/" .. pid .. "/cmdline", "rb")
    if f then
      lines[#lines + 1] = (f:read("*a") or ""):gsub("%z", " ")
      f:close()
    end
  end
  return lines
end

--- Waits up to `seconds` until this server has no session process left; returns the pids left.
function S:wait_no_processes(seconds)
  local left
  for _ = 1, math.floor((seconds or 5) / 0.1) do
    left = self:processes()
    if #left == 0 then return left end
    sleep(0.1)
  end
  return left
end

-- Pids of every descendant of pid (children first found, from one `ps` listing).
local function descendants(pid)
  local children = {}
  for p, pp in T.sh("ps -e -o pid=,ppid="):gmatch("(%d+)%s+(%d+)") do
    children[tonumber(pp)] = children[tonumber(pp)] or {}
    table.insert(children[tonumber(pp)], tonumber(p))
  end
  local out, queue = {}, { pid }
  while #queue > 0 do
    local p = table.remove(queue)
    for _, c in ipairs(children[p] or {}) do
      out[#out + 1] = c
      queue[#queue + 1] = c
    end
  end
  return out
end

--- SIGKILLs the listener, its connections and every session: the host is gone.
function S:kill()
  local pids = descendants(self.pid)
  os.execute("kill -9 " .. self.pid .. " 2>/dev/null")
  for _, pid in ipairs(pids) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
  -- gone (reaped by init, its port free) before this returns
  for _ = 1, 100 do
    local f = io.open("/proc/" .. self.pid .. "/stat")
    if not f then break end
    local state = (f:read("*a") or ""):match("^%d+ %b() (%a)")
    f:close()
    if state == "Z" or state == nil then break end
    sleep(0.02)
  end
  for _, pid in ipairs(self:processes()) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
end

function S:stop() self:kill() end

--- Runs a command on this server with OpenSSH's client; returns stdout, stderr, code.
function S:ssh(key, command, extra)
  local kh = self.dir .. "/client_known_hosts"
  T.write_file(kh, self:known_hosts_line() .. "\n")
  return T.sh(string.format(
    "ssh -F none -o BatchMode=yes -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o ConnectTimeout=5 " ..
    "-i %s -p %d %s%s %s", q(kh), q(key.private), self.port, extra or "", q(self.user .. "@" .. self.address),
    q(command)))
end

return M
