-- sky.Image (script, local application), the plugin hooks, the huggingface plugin and its
-- secret, sky.info() ranks with several workers per node.
local T = require "testlib"
local sky = require "sky"

local function shq(s) return T.shell_quote(s) end

T.test("image:script() is idempotent: files rewritten only when different, setup run once", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/src.txt", "payload \0 with bytes\n")
  local image = sky.Image {
    env = { GREETING = "it's here" },
    files = { [dir .. "/out/dest.txt"] = dir .. "/src.txt" },
    setup = { "echo ran >> " .. shq(dir .. "/setup.log") },
  }
  local script = image:script()
  T.contains(script, "#!/bin/sh")
  T.write_file(dir .. "/boot.sh", script)
  for _ = 1, 2 do T.exec("HOME=" .. shq(dir) .. " sh " .. shq(dir .. "/boot.sh")) end
  T.eq(T.read_file(dir .. "/out/dest.txt"), "payload \0 with bytes\n")
  T.eq(T.read_file(dir .. "/setup.log"), "ran\n")
  T.contains(T.read_file(dir .. "/.cache/skyrun/env"), "export GREETING='it'\\''s here'")
  local apt = sky.Image { apt = { "libgomp1", "zlib1g" } }:script()
  T.contains(apt, "for p in libgomp1 zlib1g; do dpkg -s")
  T.raises(function() sky.Image { apt = { "bad; rm -rf /" } } end, "apt[1] is not a Debian package name")
  T.raises(function() sky.Image { aptt = {} } end, "unknown option 'aptt' to 'sky.Image' (did you mean 'apt'?)")
  T.raises(function() sky.Image { files = { ["/x"] = dir .. "/missing" } }:script() end, "cannot read file")
end)

T.test("the local provider applies env and files, runs setup only when it may modify the host", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/src.txt", "shipped")
  local image = sky.Image { env = { SKY_IMAGE_VAR = "from image" }, files = { [dir .. "/dest.txt"] = dir .. "/src.txt" },
                            setup = "echo did >> " .. shq(dir .. "/setup.log") }
  local pool = sky.ComputePool { image = image }
  pool:with(function()
    T.eq(pool:run(sky.compute(function() return os.getenv("SKY_IMAGE_VAR") end)()), "from image")
  end)
  T.eq(T.read_file(dir .. "/dest.txt"), "shipped")
  T.eq(io.open(dir .. "/setup.log") == nil, true, "setup skipped without modify_host")
  local allowed = sky.ComputePool { image = image, provider = sky.providers.local_ { modify_host = true } }
  allowed:with(function() end)
  T.eq(T.read_file(dir .. "/setup.log"), "did\n")
end)

T.test("image Lua modules reach the workers", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/shipped_helper.lua", "return { answer = function() return 42 end }")
  local pool = sky.ComputePool { image = sky.Image { lua = { shipped_helper = dir .. "/shipped_helper.lua" } } }
  pool:with(function()
    T.eq(pool:run(sky.compute(function() return require("shipped_helper").answer() end)()), 42)
  end)
end)

T.test("every plugin hook runs where the API says", function()
  local dir = T.tmpdir()
  local log = {}
  local plugin = {
    name = "probe",
    open = function(pool) log[#log + 1] = "open " .. pool.name end,
    image = function(image, ctx) return image:extend { env = { PROBE_IMAGE = "yes" } } end,
    bootstrap = function(ctx) return { "echo probe-bootstrap" } end,
    env = function(info) return { PROBE_RANK = info.rank } end,
    setup = function(info) _G.probe_setup = "setup on node " .. info.node end,
    wrap = function(run, ...) local r = run(...) return "wrapped(" .. tostring(r) .. ")" end,
    teardown = function(info)
      local f = io.open(dir .. "/teardown." .. info.node, "w") f:write("bye") f:close()
    end,
    close = function(pool) log[#log + 1] = "close" end,
  }
  local pool = sky.ComputePool { name = "probe-pool", nodes = 2, plugins = { plugin } }
  T.contains(pool:script(), "echo probe-bootstrap")
  T.contains(pool:script(), "PROBE_IMAGE")
  pool:with(function()
    local r = pool:broadcast(sky.compute(function()
      return os.getenv("PROBE_RANK") .. " " .. os.getenv("PROBE_IMAGE") .. " " .. _G.probe_setup
    end)())
    T.eq(r, { "wrapped(0 yes setup on node 1)", "wrapped(1 yes setup on node 2)" })
    T.eq(pool:map(function(x) return x end, { 1 })[1], "wrapped(1)")
  end)
  T.eq(T.read_file(dir .. "/teardown.1"), "bye")
  T.eq(T.read_file(dir .. "/teardown.2"), "bye")
  T.eq(log, { "open probe-pool", "close" })
end)

T.test("a failing plugin setup fails pool:open naming the plugin; a misspelt hook is refused", function()
  local pool = sky.ComputePool { plugins = { { name = "broken", setup = function() error("no GPU here") end } } }
  local msg = T.raises(function() pool:open() end, "plugin 'broken' setup failed")
  T.contains(msg, "no GPU here")
  T.raises(function() sky.ComputePool { plugins = { { name = "typo", setpu = function() end } } } end,
    "plugins[1] 'typo' has an unknown hook 'setpu' (did you mean 'setup'?)")
end)

T.test("sky.info() gives ranks, world size, local rank and the head address", function()
  local pool = sky.ComputePool { nodes = 2, concurrency = 2, name = "ranks" }
  pool:with(function()
    local infos = pool:map(function() return sky.info() end, { 1, 2, 3, 4, 5, 6, 7, 8 }, { batch = 1 })
    local seen = {}
    for _, i in ipairs(infos) do
      T.eq(i.world_size, 4); T.eq(i.nodes, 2); T.eq(i.pool, "ranks"); T.eq(i.head_address, "127.0.0.1"); T.eq(i.address, "127.0.0.1")
      T.eq(i.rank, (i.node - 1) * 2 + i.local_rank)
      seen[i.rank] = true
    end
    local b = pool:broadcast(sky.compute(function() return sky.info().local_rank end)())
    T.eq(b, { 0, 0 })
  end)
  T.eq(sky.info().role, "driver")
end)

T.test("the HF token never appears in the pool, the image script, task errors or worker logs", function()
  local dir = T.tmpdir()
  local token = "hf_SkyTestTokenNeverShown1234567"
  T.write_file(dir .. "/job.lua", [[
    local sky = require "sky"
    local hf = sky.plugins.huggingface { token = os.getenv("TEST_TOKEN") }
    local pool = sky.ComputePool { nodes = 2, plugins = { hf }, image = sky.Image { env = { X = "1" } } }
    print(pool)
    print(hf)
    print(sky.inspect(hf))
    print(pool:script())
    pool:with(function()
      pool:broadcast(sky.compute(function()
        print("worker sees " .. os.getenv("HF_TOKEN"))
        io.stderr:write("stderr sees " .. os.getenv("HF_TOKEN") .. "\n")
      end)())
      local f = io.open(os.getenv("HF_HOME") .. "/token")
      print("token file " .. (f and (f:read("*a") == os.getenv("TEST_TOKEN") and "matches" or "differs") or "missing"))
      local ok, err = pcall(pool.run, pool, sky.compute(function() error("auth failed for " .. os.getenv("HF_TOKEN")) end)())
      print(err)
      pool:run(sky.compute(function() error({ token = os.getenv("HF_TOKEN") }) end)())
    end)
  ]])
  local out, err, rc = T.sh("cd " .. shq(dir) .. " && env -u HF_TOKEN TEST_TOKEN=" .. token .. " HF_HOME=" .. shq(dir .. "/hf") ..
    " " .. shq(T.skyrun_bin) .. " job.lua")
  T.eq(rc, 1)
  local all = out .. err
  T.not_contains(all, token)
  T.not_contains(all, token:sub(4, 20))
  T.contains(out, "[node 1] worker sees ***")
  T.contains(err, "[node 2] stderr sees ***")
  T.contains(out, "auth failed for ***")
  T.contains(out, "token file matches")
  T.contains(out, "huggingface{token=***}")
  T.eq(T.read_file(dir .. "/hf/token"), token)
  T.exec("test \"$(stat -c %a " .. shq(dir .. "/hf/token") .. ")\" = 600")
end)

-- Runs fn(name) with a fresh unprivileged user (useradd; root needed), removed afterwards.
local function with_user(fn)
  local name = string.format("skyt%d%04d", os.time() % 100000, math.random(0, 9999))
  T.exec("useradd --no-create-home --shell /bin/sh " .. name)
  local ok, err = xpcall(fn, debug.traceback, name)
  os.execute("userdel " .. name .. " 2>/dev/null")
  if not ok then error(err, 0) end
end

T.test("another user never reads the HF token file, not even while it is being written", function()
  local ffi = require "ffi"
  pcall(ffi.cdef, "int setenv(const char*, const char*, int);")
  local dir = T.tmpdir()
  local hf_home = dir .. "/hf"
  T.exec("mkdir -p " .. shq(hf_home) .. " && chmod 755 " .. shq(dir) .. " " .. shq(hf_home))
  local plugin = sky.plugins.huggingface { token = "hf_placeholder_for_the_driver" }
  local old_home, old_token = os.getenv("HF_HOME"), os.getenv("HF_TOKEN")
  with_user(function(user)
    -- The other user reads every name in the folder as fast as it can while tokens are written.
    local loot, stop = dir .. "/loot", dir .. "/stop"
    T.exec("runuser -u " .. user .. " -- sh -c " .. shq("while [ ! -e " .. shq(stop) .. " ]; do cat " ..
      shq(hf_home) .. "/* " .. shq(hf_home) .. "/.[!.]* 2>/dev/null; done") .. " > " .. shq(loot) .. " 2>&1 &")
    ffi.C.setenv("HF_HOME", hf_home, 1)
    local ok, err = pcall(function()
      for i = 1, 150 do
        ffi.C.setenv("HF_TOKEN", "hf_SECRET" .. i, 1)
        plugin.setup()
        T.eq(T.read_file(hf_home .. "/token"), "hf_SECRET" .. i)
      end
    end)
    T.write_file(stop, "")
    os.execute("sleep 0.3")
    if old_home then ffi.C.setenv("HF_HOME", old_home, 1) end
    if old_token then ffi.C.setenv("HF_TOKEN", old_token, 1) end
    if not ok then error(err, 0) end
    T.not_contains(T.read_file(loot), "hf_SECRET")
    T.exec("test \"$(stat -c %a " .. shq(hf_home .. "/token") .. ")\" = 600")
    T.eq(require("sky.fs").listdir(hf_home), { "token" })  -- no temporary left behind
  end)
end)

T.test("a token file path that is a planted symbolic link is replaced, its target left alone", function()
  local ffi = require "ffi"
  pcall(ffi.cdef, "int setenv(const char*, const char*, int);")
  local dir = T.tmpdir()
  T.write_file(dir .. "/victim", "precious")
  T.exec("ln -s victim " .. shq(dir .. "/token"))
  local plugin = sky.plugins.huggingface { token = "hf_placeholder_for_the_driver" }
  local old_path, old_token = os.getenv("HF_TOKEN_PATH"), os.getenv("HF_TOKEN")
  ffi.C.setenv("HF_TOKEN_PATH", dir .. "/token", 1)
  ffi.C.setenv("HF_TOKEN", "hf_PLANTED_TEST", 1)
  local ok, err = pcall(plugin.setup)
  ffi.C.setenv("HF_TOKEN_PATH", old_path or "", 1)
  if old_token then ffi.C.setenv("HF_TOKEN", old_token, 1) end
  if not ok then error(err, 0) end
  T.eq(T.read_file(dir .. "/victim"), "precious")
  T.eq(require("sky.fs").lstat(dir .. "/token").kind, "file")
  T.eq(T.read_file(dir .. "/token"), "hf_PLANTED_TEST")
end)

T.run()
