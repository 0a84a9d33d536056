-- A compromised worker, for tests: speaks the protocol like `skyrun worker` (a real greeting, so
-- the handshake passes) and then answers with frames that try to run code in the driver, or that
-- break the protocol. Run as `skyrun hostile_worker.lua MODE MARKER`: every attack, if it ever ran
-- in the driver, would create the file MARKER.
--   ready-module    READY carries a module reference with source (runs when decoded)
--   ready-reducer   READY carries a reducer (a function the decoder calls)
--   result-reducer  a proper READY, then the first TASK's RESULT carries a reducer
--   result-function a proper READY, then the RESULT carries a function with a __tostring
--   batch-reducer   a proper READY, then the first BATCH_RESULT carries a reducer
--   result-garbage  a proper READY, then a RESULT whose value is not a valid encoding
--   result-noid     a proper READY, then a RESULT without its task id
--   task-kind       a proper READY, then a frame of a kind only the driver sends
--   call-function   a proper READY, then a collection request (CALL) carrying a function
--   bad-length      a proper READY, then a frame header claiming 0 bytes
--   second-hello    a proper READY, then another greeting
local wire = require "sky.wire"
local K = require "sky.protocol"
local pcore = require "sky.pool.core"

local mode, marker = arg[1], arg[2]
assert(mode and marker, "usage: hostile_worker.lua MODE MARKER")

local out = io.stdout
local function send(kind, payload)
  out:write(wire.frame(kind, payload))
  out:flush()
end

local inbuf, inpos = "", 1
local function recv()
  while true do
    local kind, payload, nextpos = wire.unframe(inbuf, inpos)
    if kind then
      inpos = nextpos
      return kind, payload
    end
    local chunk = io.stdin:read(1)
    if not chunk then return nil end
    inbuf = inbuf .. chunk
  end
end

-- Code that creates the marker when it runs (in whichever process decodes it).
local touch = "local f = io.open(" .. string.format("%q", marker) .. ", 'w') if f then f:write('ran') f:close() end"

-- A value that runs `touch` while it is decoded: a reducer (called by the decoder to rebuild a
-- userdata). Here the reducer of open files sends one as a call of a function we choose.
wire.register("FILE*", function()
  return loadstring(touch .. " return 1"), "argument"
end)
local function reducer_value() return io.stderr end

-- A module that the driver cannot find travels with its source, which the decoder runs. It is
-- loaded here under a flag so that this process does not run the attack itself.
local function module_value()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local name = "sky_hostile_" .. pcore.getpid()
  local f = assert(io.open(dir .. "/" .. name .. ".lua", "w"))
  f:write("if rawget(_G, 'SKY_HOSTILE_SIDE') then return {} end\n", touch, "\nreturn {}\n")
  f:close()
  package.path = dir .. "/?.lua;" .. package.path
  SKY_HOSTILE_SIDE = true
  return require(name)
end

send(K.HELLO, wire.hello())
local kind = recv()
assert(kind == K.SETUP, "expected SETUP")
if mode == "ready-module" then
  send(K.READY, wire.encode({ pid = pcore.getpid(), extra = module_value() }))
elseif mode == "ready-reducer" then
  send(K.READY, wire.encode({ pid = pcore.getpid(), extra = reducer_value() }))
else
  send(K.READY, wire.encode({ pid = pcore.getpid() }))
end

while true do
  local k, payload = recv()
  if not k then break end
  if k == K.TASK or k == K.BATCH then
    local header = payload:match("^(%d+:)") or "0:"
    if k == K.BATCH then header = payload:match("^(%d+:%d+:)") end
    if mode == "result-reducer" then
      send(K.RESULT, header .. wire.encode({ true, { n = 1, reducer_value() } }))
    elseif mode == "batch-reducer" then
      send(K.BATCH_RESULT, header .. wire.encode({ n = 1, values = { reducer_value() } }))
    elseif mode == "result-function" then
      local f = loadstring(touch)
      send(K.RESULT, header .. wire.encode({ true, { n = 1, setmetatable({}, { __tostring = f, __index = f }) } }))
    elseif mode == "result-garbage" then
      send(K.RESULT, header .. "\6\255\255\255\255\15")
    elseif mode == "result-noid" then
      send(K.RESULT, wire.encode({ true, { n = 1, "no id" } }))
    elseif mode == "task-kind" then
      send(K.TASK, header .. wire.encode({ fn = loadstring(touch), args = { n = 0 } }))
    elseif mode == "call-function" then
      send(K.CALL, "1:" .. wire.encode({ op = "get", name = "d", key = loadstring(touch) }))
    elseif mode == "bad-length" then
      out:write("\0\0\0\0\5")
      out:flush()
    elseif mode == "second-hello" then
      send(K.HELLO, wire.hello())
    end
  elseif k == K.SHUTDOWN then
    send(K.BYE, "")
    break
  end
end
