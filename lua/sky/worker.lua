-- sky.worker: the task loop of `skyrun worker` (started by src/pool/worker_main.cpp after it sent
-- the greeting). Reads frames from the driver, runs tasks, sends results. Each task runs with
-- fresh globals (a table whose __index is _G), so globals it sets do not leak into the next
-- task; modules it requires stay loaded for the life of the worker.
local wire = require "sky.wire"
local io_ = require "sky.worker.io"
local core = require "sky.pool.core"
local secret = require "sky.secret"
local K = require "sky.protocol"

local M = {}

-- sky.info() inside tasks reads this (set from the driver's SETUP).
M.info = nil

local send = io_.send

-- Frames that came while a task waited for a REPLY: the main loop takes them first.
local backlog, backlog_first, backlog_last = {}, 1, 0
local function recv()
  local f = backlog[backlog_first]
  if f then
    backlog[backlog_first] = nil
    backlog_first = backlog_first + 1
    return f[1], f[2]
  end
  return io_.recv()
end

local next_call = 0
--- Sends a collection request to the driver and waits for its answer (other frames that come
--- meanwhile are kept for the task loop). Returns ok, a, b as the driver's store answered.
function M.request(r)
  next_call = next_call + 1
  local id = tostring(next_call)
  -- the driver takes only data from workers: a value that is not data is refused here, with its path
  if not send(K.CALL, id .. ":" .. wire.encode(r, "request", nil, true)) then error("the driver is gone", 0) end
  while true do
    local kind, payload = io_.recv()
    if not kind then error("the driver is gone", 0) end
    if kind == K.REPLY then
      local rid, body = payload:match("^(%d+):(.*)$")
      if rid == id then
        local answer = wire.decode(body)
        return answer[1], answer[2], answer[3]
      end
    else
      backlog_last = backlog_last + 1
      backlog[backlog_last] = { kind, payload }
    end
  end
end
local wraps = {}      -- plugins' wrap hooks, in plugin order
local teardowns = {}  -- plugins' teardown hooks
-- The driver decodes results as data only unless its pool was opened with
-- results_may_carry_code = true (SETUP says which); results are encoded to match, so a function
-- in a result is refused here with its path instead of being refused by the driver.
local data_only = true

local function task_env()
  local env = setmetatable({}, { __index = _G })
  env._G = env
  return env
end

local function error_text(e)
  if type(e) == "string" or type(e) == "number" then return tostring(e) end
  local mt = getmetatable(e)
  if mt and mt.__tostring then return tostring(e) end
  return "(error object is a " .. type(e) .. " value)"
end

-- xpcall handler: the message and the traceback of the task's own frames.
local function handler(e)
  local text = error_text(e)
  local global = type(e) == "string" and (e:match("global '([%w_]+)' %(a nil value%)"))
  if global then
    text = text .. " (globals of the driver's script do not travel with a task: make '" .. global ..
      "' a local the function uses, or put it in a module)"
  end
  local tb = debug.traceback("", 2)
  local cut = tb:find("\n%s*%[C%]: in function 'xpcall'")
  if cut then tb = tb:sub(1, cut - 1) end
  tb = tb:gsub("^\n", "")
  -- A structured error (a table) travels too when it can: the driver's error carries it as .value.
  return { message = secret.mask(text), traceback = secret.mask(tb), value = type(e) == "table" and e or nil }
end

local function pack(...) return { n = select("#", ...), ... } end

-- Calls fn(...) inside the plugins' wrap hooks (the first plugin outermost).
local function invoke(fn, ...)
  local n = #wraps
  if n == 0 then return fn(...) end
  local run = fn
  for i = n, 1, -1 do
    local w, inner = wraps[i], run
    run = function(...) return w(inner, ...) end
  end
  return run(...)
end

local function split_header(payload)
  local colon = payload:find(":", 1, true)
  return payload:sub(1, colon - 1), payload:sub(colon + 1)
end

-- The message of a result that cannot travel, with the way out when the driver takes data only.
local function refusal_text(err)
  local text = tostring(err)
  if data_only and text:find("only data may travel here", 1, true) then
    text = text .. "; this pool takes only data from its workers: return plain values, or open it with " ..
      "sky.ComputePool{ results_may_carry_code = true }"
  end
  return secret.mask(text)
end

local function encode_result(ok, value)
  local okenc, bytes = pcall(wire.encode, { ok, value }, "result", nil, data_only)
  if okenc then return bytes end
  if not ok and value.value ~= nil then  -- an error object that cannot travel: its text still does
    value.value = nil
    okenc, bytes = pcall(wire.encode, { ok, value }, "result", nil, data_only)
    if okenc then return bytes end
  end
  return wire.encode({ false, { message = refusal_text(bytes), traceback = "" } })
end

local function run_task(payload)
  local id, body = split_header(payload)
  local env = task_env()
  local okdec, t = pcall(wire.decode, body, env)
  if not okdec then
    send(K.RESULT, id .. ":" .. wire.encode({ false, { message = secret.mask(tostring(t)), traceback = "" } }))
    return
  end
  local args = t.args
  local res = pack(xpcall(invoke, handler, t.fn, unpack(args, 1, args.n)))
  if res[1] then
    -- results without the leading true: {n = count, ...}
    local vals = { n = res.n - 1 }
    for i = 2, res.n do vals[i - 1] = res[i] end
    send(K.RESULT, id .. ":" .. encode_result(true, vals))
  else
    send(K.RESULT, id .. ":" .. encode_result(false, res[2]))
  end
end

local maps = {}

local function run_batch(payload)
  local map_id, rest = split_header(payload)
  local base, body = split_header(rest)
  local m = maps[map_id]
  local fn = m.fn
  local items = wire.decode(body, m.env)
  local values, errors = {}, nil
  for j = 1, items.n do
    local ok, v = xpcall(invoke, handler, fn, items[j])
    if ok then
      values[j] = v
    else
      errors = errors or {}
      errors[j] = v
    end
  end
  local okenc, bytes = pcall(wire.encode, { n = items.n, values = values, errors = errors }, "result", nil, data_only)
  if not okenc then
    errors = {}
    for j = 1, items.n do errors[j] = { message = refusal_text(bytes), traceback = "" } end
    bytes = wire.encode({ n = items.n, values = {}, errors = errors })
  end
  send(K.BATCH_RESULT, map_id .. ":" .. base .. ":" .. bytes)
end

local function setup(payload)
  local s = wire.decode(payload)
  local mismatch = wire.mismatch(s.versions, wire.versions())
  if mismatch then return mismatch end
  for _, v in ipairs(s.secrets or {}) do secret.add(v) end
  data_only = s.results_may_carry_code ~= true
  for k, v in pairs(s.env or {}) do core.setenv(k, v) end
  for name, m in pairs(s.modules or {}) do
    local chunk, err = loadstring(m.source, m.chunkname)
    if not chunk then return "Lua module '" .. name .. "' of the image does not load: " .. err end
    package.preload[name] = chunk
  end
  M.info = s.info
  M.info.pid = core.getpid()
  if M.info.accelerator == nil or M.info.accelerator == "auto" then
    M.info.accelerator = require("sky.compute").accelerator_seen()
  end
  for _, p in ipairs(s.plugins or {}) do
    if p.setup then
      local ok, e = xpcall(p.setup, handler, M.info)
      if not ok then
        return "plugin '" .. tostring(p.name) .. "' setup failed: " .. e.message .. "\n" .. e.traceback
      end
    end
    if p.wrap then wraps[#wraps + 1] = p.wrap end
    if p.teardown then teardowns[#teardowns + 1] = { name = p.name, fn = p.teardown } end
  end
  return nil
end

local function teardown()
  for i = #teardowns, 1, -1 do
    local ok, e = xpcall(teardowns[i].fn, handler, M.info)
    if not ok then io.stderr:write("plugin '", tostring(teardowns[i].name), "' teardown failed: ", e.message, "\n") end
  end
end

function M.main()
  local kind, payload = recv()
  if kind ~= K.SETUP then return 0 end
  local okset, err = pcall(setup, payload)
  if not okset or err then
    send(K.FAIL, secret.mask(tostring(err)))
    return 1
  end
  send(K.READY, wire.encode({ pid = core.getpid() }))
  while true do
    kind, payload = recv()
    if not kind then break end
    if kind == K.TASK then
      run_task(payload)
    elseif kind == K.BATCH then
      run_batch(payload)
    elseif kind == K.MAP_FN then
      local map_id, body = split_header(payload)
      local env = task_env()
      local ok, fn = pcall(wire.decode, body, env)
      if ok then
        maps[map_id] = { fn = fn, env = env }
      else
        local msg = secret.mask(tostring(fn))
        maps[map_id] = { fn = function() error(msg, 0) end, env = env }
      end
    elseif kind == K.MAP_END then
      maps[payload] = nil
    elseif kind == K.SHUTDOWN then
      teardown()
      send(K.BYE, "")
      return 0
    end
  end
  teardown()
  return 0
end

return M
