-- Frames from workers are data: a compromised worker (tests/lib/hostile_worker.lua) that answers
-- with code (a module with source, a reducer, a function) or breaks the protocol runs nothing in
-- the driver, is reported as misbehaving with its node, and the pool goes on with a fresh worker.
local T = require "testlib"
local sky = require "sky"
local pcore = require "sky.pool.core"
local monotonic = require("sky.core").monotonic

local lib = (os.getenv("SKYRUN_SOURCE_ROOT") or ".") .. "/tests/lib"
local q = T.shell_quote


-- A worker command that is hostile (MODE) the first time it starts and the real worker after:
-- the pool's replacement for a misbehaving worker is a good one.
local function hostile_command(mode)
  local dir = T.tmpdir()
  local marker = dir .. "/ran-in-driver"
  local wrapper = dir .. "/worker.sh"
  T.write_file(wrapper, string.format([[
if mkdir %s 2>/dev/null; then exec %s %s %s %s; fi
exec %s worker
]], q(dir .. "/first"), q(T.skyrun_bin), q(lib .. "/hostile_worker.lua"), q(mode), q(marker), q(T.skyrun_bin)))
  return { "/bin/sh", wrapper }, marker
end


local echo = sky.compute(function(x) return x end, { name = "echo" })

for _, mode in ipairs({ "ready-module", "ready-reducer" }) do
  T.test("a READY carrying code (" .. mode .. ") runs nothing; the pool open fails naming the node; the driver goes on", function()
    local command, marker = hostile_command(mode)
    local pool = sky.ComputePool { provider = sky.providers.local_ { command = command }, startup_timeout = 20 }
    local t0, c0 = monotonic(), T.cpu_seconds()
    local err = T.raises(function() pool:open() end, "worker on node 1 (local pid")
    T.contains(err, "misbehaved: it sent a READY frame that is not plain data (refused to decode")
    T.contains(err, "nothing it sent was run")
    T.ok(monotonic() - t0 < 10, "no wait for the startup timeout")
    T.eq(T.file_exists(marker), false, "the attack ran in the driver")
    -- the driver goes on: nothing spins, and the next pool (a good worker now) works
    local c1 = T.cpu_seconds()
    pcore.sleep(0.5)
    T.ok(T.cpu_seconds() - c1 < 0.2, "the driver spins after the refusal")
    T.ok(c1 - c0 < 5, "the refusal cost " .. (c1 - c0) .. " CPU seconds")
    local pool2 = sky.ComputePool { provider = sky.providers.local_ { command = command } }
    pool2:with(function() T.eq(pool2:run(echo("fine")), "fine") end)
    T.eq(T.file_exists(marker), false)
  end)
end

local task_modes = {
  ["result-reducer"] = "a RESULT frame that is not plain data (refused to decode a reduced value from untrusted bytes)",
  ["result-function"] = "a RESULT frame that is not plain data (refused to decode a function from untrusted bytes)",
  ["result-garbage"] = "a RESULT frame that is not plain data (malformed value",
  ["result-noid"] = "a RESULT frame without its task id",
  ["task-kind"] = "a TASK frame, which only the driver sends",
  ["call-function"] = "a CALL frame that is not plain data (refused to decode a function from untrusted bytes)",
  ["bad-length"] = "a malformed frame: length 0",
  ["second-hello"] = "a second greeting (HELLO)",
}
for _, mode in ipairs({ "result-reducer", "result-function", "result-garbage", "result-noid", "task-kind",
                        "call-function", "bad-length", "second-hello" }) do
  T.test("a worker answering a task with " .. mode .. " is stopped as misbehaving; the next task runs", function()
    local command, marker = hostile_command(mode)
    local reported = {}
    local pool = sky.ComputePool { provider = sky.providers.local_ { command = command }, nodes = 1 }
    pool:with(function()
      local t0 = monotonic()
      local err = T.raises(function() pool:run(echo("x")) end, "task 'echo' failed on node 1 (local pid")
      T.contains(err, "misbehaved: it sent " .. task_modes[mode])
      T.ok(monotonic() - t0 < 10)
      T.eq(pool:run(echo("after")), "after", "a fresh worker runs the next task")
      T.eq(#pool.misbehaviors, 1)
      T.eq(pool.misbehaviors[1].node, 1)
    end)
    T.eq(T.file_exists(marker), false, "the attack ran in the driver")
  end)
end

T.test("a map batch answered with a reducer fails its items as misbehaving and runs nothing", function()
  local command, marker = hostile_command("batch-reducer")
  local pool = sky.ComputePool { provider = sky.providers.local_ { command = command } }
  pool:with(function()
    local r = pool:map(function(x) return x * 2 end, { 1 }, { return_errors = true })
    T.contains(tostring(r[1]), "misbehaved: it sent a BATCH_RESULT frame that is not plain data")
    T.eq(pool:map(function(x) return x * 2 end, { 1, 2 })[2], 4)
  end)
  T.eq(T.file_exists(marker), false)
end)

T.test("a node that misbehaves every time gets no more workers after 3, and says so", function()
  local dir = T.tmpdir()
  local marker = dir .. "/ran"
  local pool = sky.ComputePool { provider = sky.providers.local_ {
    command = { T.skyrun_bin, lib .. "/hostile_worker.lua", "result-reducer", marker } } }
  pool:with(function()
    for _ = 1, 3 do T.raises(function() pool:run(echo(1)) end, "misbehaved") end
    T.raises(function() pool:run(echo(1)) end, "misbehaved 3 times; node 1 gets no more workers")
  end)
  T.eq(T.file_exists(marker), false)
end)

T.test("results carry data only by default; results_may_carry_code = true lets functions come back", function()
  local pool = sky.ComputePool {}
  pool:with(function()
    local f = sky.compute(function() return { add = function(a, b) return a + b end } end)
    local err = T.raises(function() pool:run(f()) end, "cannot send result \u{2192} [2] \u{2192} [1] \u{2192} field 'add': function")
    T.contains(err, "open it with sky.ComputePool{ results_may_carry_code = true }")
    T.eq(pool:run(echo({ 1, "two", { three = 3 } })), { 1, "two", { three = 3 } })
    -- an error object with methods still brings its message back
    local raising = sky.compute(function() error(setmetatable({ code = 7 }, { __tostring = function() return "E7" end })) end)
    T.raises(function() pool:run(raising()) end, "E7")
  end)
  local trusting = sky.ComputePool { results_may_carry_code = true }
  trusting:with(function()
    local f = sky.compute(function() return { add = function(a, b) return a + b end } end)
    T.eq(trusting:run(f()).add(2, 3), 5)
  end)
end)

T.run()
