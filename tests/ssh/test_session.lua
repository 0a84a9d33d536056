-- libssh sessions against real sshd servers: connect, host key policies, authentication, ssh_config,
-- the agent, timeouts, commands and uploads.
local T = require "testlib"
local Sshd = require "sshd"
local Netns = require "netns"
local ssh = require "sky.ssh.core"
local ffi = require "ffi"

ffi.cdef [[
int setenv(const char *name, const char *value, int overwrite);
int unsetenv(const char *name);
]]

local q = T.shell_quote
local key = Sshd.user_key()
local server = Sshd.start { authorized = { key }, name = "lo" }

local function known_hosts_with(...)
  local path = Sshd.tmpdir("kh") .. "/known_hosts"
  local lines = {}
  for _, s in ipairs { ... } do lines[#lines + 1] = s:known_hosts_line() end
  T.write_file(path, table.concat(lines, "\n") .. "\n")
  return path
end

local function now()
  local f = io.popen("date +%s.%N")
  local t = tonumber(f:read("*a"))
  f:close()
  return t
end

T.test("a session runs commands with stdin, stdout, stderr and exit status", function()
  local s = ssh.connect { target = server.spec, key = key.private, known_hosts = known_hosts_with(server) }
  T.eq(s:describe(), server.spec)
  T.eq(s.fingerprint, server.fingerprint)
  local code, out, err = s:run("echo hi; echo oops >&2; exit 3")
  T.eq({ code, out, err }, { 3, "hi\n", "oops\n" })
  code, out = s:run("tr a-z A-Z", { stdin = ("abc"):rep(50000) })
  T.eq(code, 0)
  T.eq(out, ("ABC"):rep(50000))
  code, out = s:run("echo $HOME")
  T.eq(out, server.home .. "\n")
  s:close()
  T.raises(function() s:run("true") end, "closed")
end)

T.test("closed sessions leave no descriptor open", function()
  local pid = io.open("/proc/self/stat"):read("*a"):match("^(%d+)")
  local function fds()  -- how many descriptors, and what they point at
    collectgarbage()
    collectgarbage()
    local f = io.popen("ls -l /proc/" .. pid .. "/fd | sed -n 's/.* -> //p'")
    local list = f:read("*a")
    f:close()
    return select(2, list:gsub("\n", "")), list
  end
  local kh = known_hosts_with(server)
  local s = ssh.connect { target = server.spec, key = key.private, known_hosts = kh }
  s:close()
  local before = fds()
  for _ = 1, 5 do
    s = ssh.connect { target = server.spec, key = key.private, known_hosts = kh }
    s:run("true")
    s:close()
  end
  -- A leak stays; a descriptor of something else in flight (the machine may be loaded) goes
  -- away: look again a few times before calling it a leak.
  local after, list = fds()
  for _ = 1, 20 do
    if after <= before then break end
    os.execute("sleep 0.1")
    after, list = fds()
  end
  T.ok(after <= before, string.format("%d descriptors before, %d after:\n%s", before, after, list))
end)

T.test("an upload lands under the remote home with its mode, through a temp name", function()
  local s = ssh.connect { target = server.spec, key = key.private, known_hosts = known_hosts_with(server) }
  local dir = T.tmpdir()
  local data = {}
  for i = 0, 255 do data[#data + 1] = string.char(i) end
  T.write_file(dir .. "/blob", table.concat(data):rep(4000))
  T.eq(s:upload(dir .. "/blob", "~/.cache/skyrun/test/blob", tonumber("755", 8)), 256 * 4000)
  T.eq(T.read_file(server.home .. "/.cache/skyrun/test/blob"), table.concat(data):rep(4000))
  local _, mode = s:run("stat -c %a ~/.cache/skyrun/test/blob")
  T.eq(mode, "755\n")
  local _, listing = s:run("ls -a ~/.cache/skyrun/test")
  T.eq(listing, ".\n..\nblob\n")
  s:close()
end)

T.test("strict refuses an unknown host key and shows its SHA256 fingerprint", function()
  local kh = Sshd.tmpdir("kh") .. "/known_hosts"
  local err = T.raises(function()
    ssh.connect { target = server.spec, key = key.private, known_hosts = kh, host_key_policy = "strict" }
  end, "unknown host key")
  T.contains(err, server.fingerprint)
  T.contains(err, server.spec)
  T.contains(err, "strict")
end)

T.test("accept-new adds an unknown key, then refuses a changed one", function()
  local kh = Sshd.tmpdir("kh") .. "/known_hosts"
  local s = ssh.connect { target = server.spec, key = key.private, known_hosts = kh, host_key_policy = "accept-new" }
  T.eq(s.host_key_added, true)
  s:close()
  T.contains(T.read_file(kh), server.host_key_line:match("^%S+%s+(%S+)"))
  s = ssh.connect { target = server.spec, key = key.private, known_hosts = kh, host_key_policy = "strict" }
  T.eq(s.host_key_added, false)
  s:close()
  -- the same address and port now answers with another host key
  local port = server.port
  server:stop()
  local impostor = Sshd.start { authorized = { key }, name = "impostor", port = port }
  local err = T.raises(function()
    ssh.connect { target = impostor.spec, key = key.private, known_hosts = kh, host_key_policy = "accept-new" }
  end, "HOST KEY CHANGED")
  T.contains(err, impostor.fingerprint)
  T.contains(err, impostor.spec)
  impostor:stop()
  server = Sshd.start { authorized = { key }, name = "lo-again" }
end)

T.test("a key the server does not accept is an authentication error naming user and host", function()
  local other = Sshd.user_key()
  local err = T.raises(function()
    ssh.connect { target = server.spec, key = other.private, known_hosts = known_hosts_with(server) }
  end, "authentication failed for root@127.0.0.1")
  T.contains(err, other.private)
  T.raises(function()
    ssh.connect { target = server.spec, key = "/nonexistent/key", known_hosts = known_hosts_with(server) }
  end, "cannot read the private key /nonexistent/key")
end)

T.test("an unreachable address times out within connect_timeout, naming the host", function()
  local net = Netns.create { hosts = 1 }
  local target = "root@" .. net:unused_address() .. ":22"
  local t0 = now()
  local err = T.raises(function()
    ssh.connect { target = target, key = key.private, known_hosts = known_hosts_with(server), connect_timeout = 1 }
  end, "connect timed out after 1 s")
  local took = now() - t0
  T.contains(err, target)
  T.ok(took >= 0.9 and took < 2, "took " .. took .. " s")
  net:destroy()
  -- a closed port fails at once, also naming the host
  err = T.raises(function()
    ssh.connect { target = "root@127.0.0.1:1", key = key.private, known_hosts = known_hosts_with(server) }
  end, "cannot connect")
  T.contains(err, "root@127.0.0.1:1")
end)

T.test("~/.ssh/config aliases give host, port, user and IdentityFile; known_hosts from ~/.ssh", function()
  local home = Sshd.tmpdir("home")
  T.exec("mkdir -p " .. q(home .. "/.ssh"))
  T.write_file(home .. "/.ssh/config", table.concat({
    "Host gpubox", "  HostName 127.0.0.1", "  Port " .. server.port, "  User root", "  IdentityFile " .. key.private, "",
  }, "\n"))
  T.write_file(home .. "/.ssh/known_hosts", server:known_hosts_line() .. "\n")
  local old_home = os.getenv("HOME")
  ffi.C.setenv("HOME", home, 1)
  ffi.C.unsetenv("SSH_AUTH_SOCK")
  local ok, s = pcall(ssh.connect, { target = "gpubox" })
  ffi.C.setenv("HOME", old_home or "/root", 1)
  T.ok(ok, tostring(s))
  T.eq(s:describe(), "gpubox (" .. server.spec .. ")")
  T.eq(select(2, s:run("echo ok")), "ok\n")
  s:close()
end)

T.test("the agent is used when present", function()
  local home = Sshd.tmpdir("home")
  T.exec("mkdir -p " .. q(home .. "/.ssh"))
  T.write_file(home .. "/.ssh/known_hosts", server:known_hosts_line() .. "\n")
  local sock = home .. "/agent.sock"
  local out = T.sh("ssh-agent -a " .. q(sock))
  local agent_pid = out:match("SSH_AGENT_PID=(%d+)")
  T.ok(agent_pid, out)
  Sshd.on_exit("kill " .. agent_pid)
  local _, err, code = T.sh("SSH_AUTH_SOCK=" .. q(sock) .. " ssh-add " .. q(key.private))
  T.eq(code, 0, err)
  local old_home = os.getenv("HOME")
  ffi.C.setenv("HOME", home, 1)
  ffi.C.setenv("SSH_AUTH_SOCK", sock, 1)
  local ok, s = pcall(ssh.connect, { target = server.spec })
  ffi.C.setenv("HOME", old_home or "/root", 1)
  ffi.C.unsetenv("SSH_AUTH_SOCK")
  os.execute("kill " .. agent_pid)
  T.ok(ok, tostring(s))
  T.eq(select(2, s:run("echo agent")), "agent\n")
  s:close()
end)

T.test("targets parse as user@host:port, bracketed IPv6 and bare names; bad ones are refused", function()
  T.eq(ssh.parse_target("alice@10.0.0.1:2222"), { user = "alice", host = "10.0.0.1", port = 2222 })
  T.eq(ssh.parse_target("gpubox"), { host = "gpubox" })
  T.eq(ssh.parse_target("bob@[fe80::1]:22"), { user = "bob", host = "fe80::1", port = 22 })
  T.raises(function() ssh.parse_target("host:99999") end, "bad port '99999'")
  T.raises(function() ssh.parse_target("@host") end, "empty user")
  T.raises(function() ssh.connect { target = server.spec, host_key_policy = "yolo" } end, "host_key_policy")
  T.raises(function() ssh.connect { target = server.spec, hosts = 1 } end, "unknown option 'hosts'")
end)

T.run()
