-- cloud_hosts: the "machines" of the cloud stand-ins (tools/cloud_standin.py). Run as a child of a
-- stand-in (`skyrun tests/lib/cloud_hosts.lua`, LUA_PATH with tests/lib), it owns one private
-- network (tests/lib/netns.lua) and answers one JSON line per command line read on stdin:
--   {"op":"up","id":"i-1","pubkey":"ssh-ed25519 ...","ssh":true,"login_as":["ubuntu"],
--    "user_data":"#!/bin/sh ...","env":{"K":"V"},"preinstall":false}
--       -> {"id":"i-1","ok":true,"addr":"10.77.x.N","dir":"<instance folder>"}
--     a namespace with an sshd on port 22 (tests/lib/sshd.lua; no sshd when ssh is false: a
--     machine that never answers) that accepts pubkey for root and the login_as names; then
--     user_data runs there in the background as root, with `shutdown`, `poweroff` and `halt`
--     replaced (PATH first, and bind-mounted over the real ones in a private mount namespace)
--     by a script that appends its arguments to <dir>/shutdown: the stand-in watches that file.
--     container: the machine is a container (a RunPod pod): user_data is its start command, run with
--     its own /root, /etc/ssh (no host keys) and /run, and it is what starts sshd (no sshd of ours).
--     preinstall: the machine's image holds this skyrun already (SKYRUN_BIN in the cache where the
--     pool's bootstrap looks), so the pool neither uploads nor checks it.
--   {"op":"down","id":"i-1"}  -> {"id":"i-1","ok":true}   every process there killed, namespace gone
-- The first line written is {"gateway":"10.77.x.1"}: the stand-in serves its API there, so the
-- machines reach it too. Everything is removed when stdin closes or this process dies.
local T = require "testlib"
local Netns = require "netns"
local Sshd = require "sshd"
local json = require "transformers.train_core"

local q = T.shell_quote

local net = Netns.create { hosts = 0 }
local hosts = {}  -- id -> { index, dir, sshd }

local fakebin = Sshd.tmpdir("fakebin")
local fake = "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> \"$SKYTEST_INSTANCE_DIR/shutdown\"\n"
for _, name in ipairs({ "shutdown", "poweroff", "halt" }) do
  T.write_file(fakebin .. "/" .. name, fake)
  T.exec("chmod 755 " .. q(fakebin .. "/" .. name))
end

local function reply(t)
  io.stdout:write(json.json_encode(t), "\n")
  io.stdout:flush()
end

local function up(cmd)
  local h = net:add_host()
  local dir = Sshd.tmpdir("instance-" .. tostring(cmd.id):gsub("[^%w%-]", "_") .. "-")
  local entry = { index = h.index, dir = dir }
  hosts[cmd.id] = entry
  local home
  if cmd.container then
    -- a container: its own /root, /etc/ssh (the configuration without host keys) and /run
    home = dir .. "/root"
    T.exec("mkdir -p " .. q(home) .. " " .. q(dir .. "/etc-ssh") .. " && cp -a /etc/ssh/sshd_config /etc/ssh/moduli " ..
      q(dir .. "/etc-ssh/") .. " && { cp -a /etc/ssh/sshd_config.d " .. q(dir .. "/etc-ssh/") .. " 2>/dev/null || true; }")
  elseif cmd.ssh ~= false then
    entry.sshd = Sshd.start { netns = h.ns, address = h.addr, port = 22, name = cmd.id,
                              authorized = { { line = cmd.pubkey } }, login_as = cmd.login_as }
    home = entry.sshd.home
  end
  if cmd.preinstall and home then
    -- an image that already holds this skyrun (as a custom AMI would): the pool's bootstrap finds
    -- it in the content-addressed cache and neither uploads nor checks it
    local bin = os.getenv("SKYRUN_BIN")
    local cache = home .. "/.cache/skyrun/bin/" .. require("sky.ssh.core").sha256_file(bin)
    T.exec("mkdir -p " .. q(cache) .. " && ln -sf " .. q(bin) .. " " .. q(cache .. "/skyrun") .. " && : > " ..
      q(cache .. "/skyrun.checked"))
  end
  if cmd.user_data and cmd.user_data ~= "" and not (cmd.container and cmd.ssh == false) then
    T.write_file(dir .. "/user_data", cmd.user_data)
    local env = { "PATH=" .. fakebin .. ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "HOME=" .. (cmd.container and "/root" or home or dir), "SKYTEST_INSTANCE_DIR=" .. dir }
    for k, v in pairs(cmd.env or {}) do env[#env + 1] = k .. "=" .. v end
    local quoted = {}
    for i, e in ipairs(env) do quoted[i] = q(e) end
    -- the real power tools are covered by the fake in this mount namespace: user data can never
    -- shut this machine down
    local cover = {}
    for _, name in ipairs({ "shutdown", "poweroff", "halt" }) do
      for _, d in ipairs({ "/sbin", "/usr/sbin", "/bin", "/usr/bin" }) do
        cover[#cover + 1] = string.format("if [ -e %s/%s ]; then mount --bind %s %s/%s; fi", d, name,
          q(fakebin .. "/" .. name), d, name)
      end
    end
    local private = ""
    if cmd.container then
      private = string.format("mount --bind %s /root && mount --bind %s /etc/ssh && mount -t tmpfs tmpfs /run && ",
        q(home), q(dir .. "/etc-ssh"))
    end
    local inner = private .. "{ " .. table.concat(cover, "; ") .. "; } && exec env -i " .. table.concat(quoted, " ") ..
      " sh " .. q(dir .. "/user_data")
    T.exec(string.format("ip netns exec %s setsid unshare -m --propagation private sh -c %s </dev/null >%s 2>&1 &",
      q(h.ns), q(inner), q(dir .. "/user_data.log")))
  end
  return { id = cmd.id, ok = true, addr = h.addr, dir = dir }
end

local function down(cmd)
  local entry = hosts[cmd.id]
  if entry then
    net:remove_host(entry.index)
    if entry.sshd then entry.sshd:kill() end
    hosts[cmd.id] = nil
  end
  return { id = cmd.id, ok = true }
end

reply { gateway = net.gateway }
for line in io.stdin:lines() do
  local ok, cmd = pcall(json.json_decode, line, "command")
  local res
  if not ok then
    res = { ok = false, error = tostring(cmd) }
  else
    local okr, r = pcall(cmd.op == "up" and up or cmd.op == "down" and down or function() error("unknown op " .. tostring(cmd.op)) end, cmd)
    res = okr and r or { id = cmd.id, ok = false, error = tostring(r) }
  end
  reply(res)
end
for id in pairs(hosts) do down { id = id } end
net:destroy()
Sshd.cleanup_now()
