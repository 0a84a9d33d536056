-- ComputePool over sky.providers.ssh on three hosts, each an sshd in its own network namespace:
-- the same job file as on the local provider, faults (a host dying mid-task, host keys, wrong
-- key, unreachable address), and no stray process in any namespace afterwards.
local T = require "testlib"
local Sshd = require "sshd"
local Netns = require "netns"
local sky = require "sky"

local q = T.shell_quote
local key = Sshd.user_key()
local net = Netns.cluster { hosts = 3, authorized = { key } }
local kh = Sshd.tmpdir("kh") .. "/known_hosts"
T.write_file(kh, net:known_hosts())
local specs = {}
for i, h in ipairs(net.hosts) do specs[i] = h.sshd.spec end
local job = (os.getenv("SKYRUN_SOURCE_ROOT") or "..") .. "/tests/ssh/jobs/portable.lua"

local function now()
  local f = io.popen("date +%s.%N")
  local t = tonumber(f:read("*a"))
  f:close()
  return t
end

local function provider(extra)
  local o = { hosts = specs, key = key.private, known_hosts = kh, quiet = true }
  for k, v in pairs(extra or {}) do o[k] = v end
  return sky.providers.ssh(o)
end

-- No skyrun process left in any host's namespace (sshd itself stays).
local function assert_no_strays(seconds)
  local left
  for _ = 1, math.floor((seconds or 5) / 0.1) do
    left = {}
    for i = 1, #net.hosts do
      for _, pid in ipairs(net:pids(i)) do
        local f = io.open("/proc/" .. pid .. "/cmdline", "rb")
        local cmd = f and f:read("*a"):gsub("%z", " ") or ""
        if f then f:close() end
        if cmd:find("skyrun", 1, true) then left[#left + 1] = net.hosts[i].ns .. ": " .. cmd end
      end
    end
    if #left == 0 then return end
    os.execute("sleep 0.1")
  end
  error("stray processes: " .. table.concat(left, "; "), 2)
end

T.test("the same job file runs unchanged on the local provider and on three ssh hosts", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/local.lua", "return require('sky').providers.local_ {}")
  T.write_file(dir .. "/ssh.lua", string.format(
    "return require('sky').providers.ssh { hosts = { %q, %q, %q }, key = %q, known_hosts = %q, quiet = true }",
    specs[1], specs[2], specs[3], key.private, kh))
  local lout, lerr, lcode = T.skyrun({ job, dir .. "/local.lua" })
  T.eq(lcode, 0, lerr)
  local sout, serr, scode = T.skyrun({ job, dir .. "/ssh.lua" })
  T.eq(scode, 0, serr)
  -- identical except where the work ran
  local function common(out)
    return (out:gsub("distinct addresses: %d+\n", ""):gsub("addresses: [^\n]*\n", ""):gsub("head: [^\n]*\n", "")
      :gsub("node 1 %b()", "node 1 (worker)"))
  end
  T.eq(common(sout), common(lout))
  T.contains(sout, "broadcast 3: node=3 nodes=3 rank=2 tag=b")
  T.contains(sout, "gather: 4 9 16")
  T.contains(sout, "map sum: 20300")
  T.contains(sout, "error caught: true")
  T.contains(sout, "portable.lua:25: n is too large: 5")   -- the remote error keeps the job's file:line
  T.contains(sout, "distinct addresses: 3")
  T.contains(sout, "addresses: " .. net.hosts[1].addr .. " " .. net.hosts[2].addr .. " " .. net.hosts[3].addr)
  T.contains(sout, "head: " .. net.hosts[1].addr)
  T.contains(lout, "distinct addresses: 1")
  assert_no_strays(5)
end)

T.test("two nodes on three hosts use the first two; the head address is node 1's", function()
  local pool = sky.ComputePool { provider = provider(), nodes = 2 }
  pool:with(function()
    local r = pool:broadcast(sky.compute(function()
      local f = io.popen("ip -4 -o addr show dev eth0")
      local out = f:read("*a")
      f:close()
      return { node = sky.info().node, addr = out:match("inet (%d+%.%d+%.%d+%.%d+)"), head = sky.info().head_address }
    end)())
    T.eq(r, { { node = 1, addr = net.hosts[1].addr, head = net.hosts[1].addr },
              { node = 2, addr = net.hosts[2].addr, head = net.hosts[1].addr } })
  end)
end)

T.test("a host whose sshd dies mid-task fails that task within 5 s naming it (no retries); the others finish", function()
  local pool = sky.ComputePool { provider = provider(), nodes = 3, output = false, retry_on_interruption = 0 }
  pool:open()
  local nap = sky.compute(function(s)
    local t0 = os.time()
    while os.time() - t0 < s do end
    return sky.info().node
  end)
  local futures = {}
  for i = 1, 3 do futures[i] = pool:submit(nap(3)) end
  os.execute("sleep 0.5")
  local t0 = now()
  net.hosts[2].sshd:kill()
  local failed, ok_nodes = nil, {}
  for _, i in ipairs { 2, 1, 3 } do   -- node 2's first: its failure time is measured from the kill
    local ok, r = pcall(futures[i].get, futures[i])
    if ok then ok_nodes[#ok_nodes + 1] = r else failed = { err = tostring(r), t = now() - t0 } end
  end
  T.ok(failed, "one task failed")
  T.ok(failed.t < 5, "failed after " .. failed.t .. " s")
  T.contains(failed.err, net.hosts[2].addr)
  table.sort(ok_nodes)
  T.eq(ok_nodes, { 1, 3 })
  pool:close()
  assert_no_strays(5)
  net.hosts[2].sshd = Sshd.start { netns = net.hosts[2].ns, address = net.hosts[2].addr, port = 22, name = "host2b",
                                   authorized = { key } }
  T.write_file(kh, net:known_hosts())
end)

T.test("pool start faults: unknown and changed host keys, wrong key, unreachable host", function()
  local empty = Sshd.tmpdir("kh") .. "/known_hosts"
  local function open_err(p)
    local pool = sky.ComputePool { provider = p, nodes = 1 }
    local t0 = now()
    local err = T.raises(function() pool:open() end)
    return err, now() - t0
  end
  local err = open_err(provider { known_hosts = empty })
  T.contains(err, "unknown host key")
  T.contains(err, net.hosts[1].sshd.fingerprint)
  -- accept-new records the key, then refuses another one at the same address
  local learned = Sshd.tmpdir("kh") .. "/known_hosts"
  local pool = sky.ComputePool { provider = provider { known_hosts = learned, host_key_policy = "accept-new" }, nodes = 1 }
  pool:with(function() T.eq(pool:run(sky.compute(function() return 1 end)()), 1) end)
  T.contains(T.read_file(learned), net.hosts[1].sshd.host_key_line:match("^%S+%s+(%S+)"))
  local other = Sshd.tmpdir("kh") .. "/known_hosts"   -- host 1's address with host 2's key
  T.write_file(other, net.hosts[1].addr .. " " .. net.hosts[2].sshd.host_key_line:match("^(%S+%s+%S+)") .. "\n")
  err = open_err(provider { known_hosts = other, host_key_policy = "accept-new" })
  T.contains(err, "HOST KEY CHANGED")
  err = open_err(provider { key = Sshd.user_key().private })
  T.contains(err, "authentication failed for root@" .. net.hosts[1].addr)
  local took
  err, took = open_err(sky.providers.ssh { hosts = { "root@" .. net:unused_address() }, key = key.private,
                                           known_hosts = kh, connect_timeout = 1 })
  T.contains(err, "root@" .. net:unused_address() .. ":22: connect timed out after 1 s")
  T.ok(took < 2, "took " .. took .. " s")
  assert_no_strays(3)
end)

T.run()
