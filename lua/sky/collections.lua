-- sky.collections: Skyward's distributed collections (dict, counter, queue, barrier, lock), held
-- by the driver and shared by every worker of a pool. Every operation is one request that the
-- driver applies in the order it reads them, so they are linearizable (Skyward's "strong"
-- consistency). Workers send requests over their own pool connection (CALL/REPLY frames), so
-- the collections work on every provider; on the driver they apply to the pool directly.
-- Values travel wire-encoded and are kept encoded on the driver: it never runs or decodes what a
-- worker stored, only keys (strings, numbers, booleans) and counter numbers.
local wire = require "sky.wire"

local M = {}

-- ---- the store, on the driver -------------------------------------------------------------------

local Store = {}
Store.__index = Store

function M.new_store()
  return setmetatable({ dict = {}, counter = {}, queue = {}, barrier = {}, lock = {}, waiters = {} }, Store)
end

local function fail(msg) error({ collection_error = msg }, 0) end

local function check_key(k)
  local t = type(k)
  if t ~= "string" and t ~= "number" and t ~= "boolean" then fail("keys must be strings, numbers or booleans (got " .. t .. ")") end
  if k ~= k then fail("a key cannot be NaN") end
  return k
end

local function get(store, kind, name, make)
  local c = store[kind][name]
  if not c then
    c = make()
    store[kind][name] = c
  end
  return c
end

-- A waiter: a request that answers later (queue get, barrier wait, lock acquire). deadline nil:
-- waits until it is answered or its client is gone.
function Store:_wait(client, reply, deadline, on_timeout)
  local w = { client = client, reply = reply, deadline = deadline, on_timeout = on_timeout }
  self.waiters[w] = true
  return w
end

function Store:_answer(w, ...)
  if not self.waiters[w] then return false end
  self.waiters[w] = nil
  w.reply(true, ...)
  return true
end

local ops = {}

function ops.dict(store, client, r, reply)
  local d = get(store, "dict", r.name, function() return {} end)
  local op = r.op
  if op == "get" then
    local v = d[check_key(r.key)]
    if v == nil then return reply(true, nil, false) end
    return reply(true, v, true)
  elseif op == "set" then
    d[check_key(r.key)] = r.value
    return reply(true)
  elseif op == "delete" or op == "pop" then
    local k = check_key(r.key)
    local v = d[k]
    d[k] = nil
    return reply(true, v, v ~= nil)
  elseif op == "contains" then
    return reply(true, d[check_key(r.key)] ~= nil)
  elseif op == "setdefault" then
    local k = check_key(r.key)
    if d[k] == nil then d[k] = r.value end
    return reply(true, d[k], true)
  elseif op == "update" then
    for _, kv in ipairs(r.items) do check_key(kv[1]) end
    for _, kv in ipairs(r.items) do d[kv[1]] = kv[2] end
    return reply(true)
  elseif op == "keys" or op == "items" or op == "len" then
    local keys, n = {}, 0
    for k in pairs(d) do n = n + 1 keys[n] = k end
    if op == "len" then return reply(true, n) end
    table.sort(keys, function(a, b)
      if type(a) == type(b) and type(a) ~= "boolean" then return a < b end
      return type(a) < type(b)
    end)
    if op == "keys" then return reply(true, keys) end
    local items = {}
    for i, k in ipairs(keys) do items[i] = { k, d[k] } end
    return reply(true, items)
  elseif op == "clear" then
    store.dict[r.name] = {}
    return reply(true)
  end
  fail("dict has no operation '" .. tostring(op) .. "'")
end

function ops.counter(store, client, r, reply)
  local c = get(store, "counter", r.name, function() return { value = 0 } end)
  local op = r.op
  if op == "value" then return reply(true, c.value) end
  local n = r.n
  if type(n) ~= "number" or n ~= n then fail("counter amounts must be numbers") end
  if op == "increment" then c.value = c.value + n
  elseif op == "decrement" then c.value = c.value - n
  elseif op == "reset" then c.value = n
  else fail("counter has no operation '" .. tostring(op) .. "'") end
  return reply(true, c.value)
end

function ops.queue(store, client, r, reply)
  local q = get(store, "queue", r.name, function() return { first = 1, last = 0, getters = {} } end)
  local op = r.op
  if op == "put" then
    -- A waiting getter takes the value at once (the first one still waiting).
    while #q.getters > 0 do
      local w = table.remove(q.getters, 1)
      if store:_answer(w, r.value, true) then return reply(true) end
    end
    q.last = q.last + 1
    q[q.last] = r.value
    return reply(true)
  elseif op == "get" then
    if q.first <= q.last then
      local v = q[q.first]
      q[q.first] = nil
      q.first = q.first + 1
      return reply(true, v, true)
    end
    if r.timeout == 0 then return reply(true, nil, false) end
    local w
    w = store:_wait(client, reply, r.timeout and (r.now + r.timeout), function()
      for i, g in ipairs(q.getters) do if g == w then table.remove(q.getters, i) break end end
      reply(true, nil, false)
    end)
    q.getters[#q.getters + 1] = w
    return
  elseif op == "len" then
    return reply(true, q.last - q.first + 1)
  end
  fail("queue has no operation '" .. tostring(op) .. "'")
end

function ops.barrier(store, client, r, reply)
  if r.op ~= "wait" then fail("barrier has no operation '" .. tostring(r.op) .. "'") end
  local n = r.n
  if type(n) ~= "number" or n < 1 or n ~= math.floor(n) then fail("a barrier needs a whole number of parties (got " .. tostring(n) .. ")") end
  local b = get(store, "barrier", r.name, function() return { n = n, generation = 1, arrived = {} } end)
  if b.n ~= n then fail(string.format("made for %d parties, not %d", b.n, n)) end
  local arrived = b.arrived
  arrived[#arrived + 1] = store:_wait(client, reply, nil, nil)
  if #arrived == n then
    local generation = b.generation
    b.generation, b.arrived = generation + 1, {}
    for _, w in ipairs(arrived) do store:_answer(w, generation) end
  end
end

function ops.lock(store, client, r, reply)
  local l = get(store, "lock", r.name, function() return { waiting = {} } end)
  if r.op == "acquire" then
    if l.owner == client then fail("already held by this worker") end
    if l.owner == nil then
      l.owner = client
      return reply(true, true)
    end
    if r.timeout == 0 then return reply(true, false) end
    local w
    w = store:_wait(client, reply, r.timeout and (r.now + r.timeout), function()
      for i, g in ipairs(l.waiting) do if g == w then table.remove(l.waiting, i) break end end
      reply(true, false)
    end)
    l.waiting[#l.waiting + 1] = w
    return
  elseif r.op == "release" then
    if l.owner ~= client then fail("not held by this worker") end
    store:_release(l)
    return reply(true)
  elseif r.op == "locked" then
    return reply(true, l.owner ~= nil)
  end
  fail("lock has no operation '" .. tostring(r.op) .. "'")
end

-- Hands a released lock to the first client still waiting for it.
function Store:_release(l)
  l.owner = nil
  while #l.waiting > 0 do
    local w = table.remove(l.waiting, 1)
    if self.waiters[w] then
      l.owner = w.client
      self:_answer(w, true)
      return
    end
  end
end

--- Applies request r from client at time now; reply(ok, ...) is called once, now or later (a
--- blocking operation). r: {kind=, name=, op=, key=, value=, n=, items=, timeout=}.
function Store:handle(client, r, reply, now)
  local op = ops[r.kind]
  local ok, err = pcall(function()
    if type(r) ~= "table" then fail("a request must be a table") end
    r.now = now
    if r.timeout ~= nil and (type(r.timeout) ~= "number" or r.timeout < 0) then fail("timeout must be seconds >= 0") end
    if not op then fail("no collection kind '" .. tostring(r.kind) .. "'") end
    if type(r.name) ~= "string" then fail("a collection name must be a string") end
    op(self, client, r, reply)
  end)
  if not ok then
    reply(false, type(err) == "table" and err.collection_error or tostring(err))
  end
end

--- The earliest deadline of a waiting request, or nil.
function Store:next_deadline()
  local d
  for w in pairs(self.waiters) do
    if w.deadline and (not d or w.deadline < d) then d = w.deadline end
  end
  return d
end

--- Answers the waiting requests whose deadline passed.
function Store:expire(now)
  for w in pairs(self.waiters) do
    if w.deadline and now >= w.deadline then
      self.waiters[w] = nil
      w.on_timeout()
    end
  end
end

--- A client is gone (its worker died): its locks go to the next waiter and its waiting
--- requests are dropped. A barrier it already reached keeps its arrival.
function Store:drop_client(client)
  for w in pairs(self.waiters) do
    if w.client == client then self.waiters[w] = nil end
  end
  for _, l in pairs(self.lock) do
    if l.owner == client then self:_release(l) end
  end
end

-- ---- the proxies, in tasks and on the driver ------------------------------------------------------

-- The transport: on a worker sky.worker.request; on the driver, the open pool.
local function call(r)
  local w = package.loaded["sky.worker"]
  local ok, a, b
  if w and w.info then
    ok, a, b = w.request(r)
  else
    local pool = M.driver_pool
    if not pool or pool.state ~= "open" then
      error("sky." .. r.kind .. "('" .. tostring(r.name) .. "'): no open pool (collections live in a pool: use them " ..
        "inside tasks, or on the driver while a pool is open)", 3)
    end
    ok, a, b = pool:_collection_call(r)
  end
  if not ok then error("sky." .. r.kind .. " '" .. tostring(r.name) .. "': " .. tostring(a), 3) end
  return a, b
end

local function enc(v, what) return wire.encode(v, what) end
-- On the driver values from workers are decoded as data only (no code runs on the driver).
local function dec(bytes)
  if bytes == nil then return nil end
  local w = package.loaded["sky.worker"]
  return wire.decode(bytes, nil, not (w and w.info))
end

local function check_name(kind, name)
  if type(name) ~= "string" or name == "" then
    error("sky." .. kind .. " expects a name (a non-empty string)", 3)
  end
end

-- A proxy class of a kind: instances are {name = ...} tables; tostring gives sky.kind('name').
local function proxy_class(kind)
  local C = {}
  C.__index = C
  C.__tostring = function(self) return "sky." .. kind .. "('" .. self.name .. "')" end
  return C
end

-- dict --------------------------------------------------------------------------------------------

local Dict = {}
local dict_state = setmetatable({}, { __mode = "k" })

local dict_methods = {}
function dict_methods:get(k, default)
  local v, found = call { kind = "dict", name = dict_state[self], op = "get", key = k }
  if not found then return default end
  return dec(v)
end
function dict_methods:set(k, v)
  if v == nil then return self:delete(k) end
  call { kind = "dict", name = dict_state[self], op = "set", key = k, value = enc(v, "value of key " .. tostring(k)) }
end
function dict_methods:delete(k) return (select(2, call { kind = "dict", name = dict_state[self], op = "delete", key = k })) end
function dict_methods:pop(k, default)
  local v, found = call { kind = "dict", name = dict_state[self], op = "pop", key = k }
  if not found then return default end
  return dec(v)
end
function dict_methods:contains(k) return (call { kind = "dict", name = dict_state[self], op = "contains", key = k }) end
function dict_methods:setdefault(k, v)
  return dec((call { kind = "dict", name = dict_state[self], op = "setdefault", key = k, value = enc(v, "default") }))
end
function dict_methods:update(t)
  local items = {}
  for k, v in pairs(t) do items[#items + 1] = { k, enc(v, "value of key " .. tostring(k)) } end
  call { kind = "dict", name = dict_state[self], op = "update", items = items }
end
function dict_methods:keys() return (call { kind = "dict", name = dict_state[self], op = "keys" }) end
function dict_methods:len() return (call { kind = "dict", name = dict_state[self], op = "len" }) end
--- A plain table copy of the dict.
function dict_methods:items()
  local t = {}
  for _, kv in ipairs((call { kind = "dict", name = dict_state[self], op = "items" })) do t[kv[1]] = dec(kv[2]) end
  return t
end
function dict_methods:clear() call { kind = "dict", name = dict_state[self], op = "clear" } end

-- d[k] reads and d[k] = v writes (keys that are method names need get/set).
Dict.__index = function(self, k)
  local m = dict_methods[k]
  if m then return m end
  return dict_methods.get(self, k)
end
Dict.__newindex = function(self, k, v) dict_methods.set(self, k, v) end
Dict.__tostring = function(self) return "sky.dict('" .. dict_state[self] .. "')" end

--- sky.dict(name): a dict shared by the pool. d[k], d[k] = v, d:get(k, default), d:set(k, v),
--- d:delete(k), d:pop(k, default), d:contains(k), d:setdefault(k, v), d:update(t), d:keys(),
--- d:len(), d:items() (a plain copy), d:clear(). Keys: strings, numbers, booleans; values:
--- anything a task argument may be.
function M.dict(name)
  check_name("dict", name)
  local d = setmetatable({}, Dict)
  dict_state[d] = name
  return d
end

-- counter -----------------------------------------------------------------------------------------

local Counter = proxy_class("counter")
function Counter:value() return (call { kind = "counter", name = self.name, op = "value" }) end
function Counter:increment(n) return (call { kind = "counter", name = self.name, op = "increment", n = n or 1 }) end
function Counter:decrement(n) return (call { kind = "counter", name = self.name, op = "decrement", n = n or 1 }) end
function Counter:reset(v) return (call { kind = "counter", name = self.name, op = "reset", n = v or 0 }) end

--- sky.counter(name): c:increment(n = 1) and c:decrement(n = 1) return the new value; c:value(),
--- c:reset(v = 0).
function M.counter(name)
  check_name("counter", name)
  return setmetatable({ name = name }, Counter)
end

-- queue -------------------------------------------------------------------------------------------

local Queue = proxy_class("queue")
function Queue:put(v)
  if v == nil then error("sky.queue:put: nil cannot be queued (get returns nil for an empty queue)", 2) end
  call { kind = "queue", name = self.name, op = "put", value = enc(v, "value") }
end
--- q:get(timeout): the first value; waits up to timeout seconds (nil: until there is one; 0:
--- not at all) and returns nil when none came.
function Queue:get(timeout)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error("sky.queue:get: timeout must be seconds >= 0 or nil", 2)
  end
  local v, found = call { kind = "queue", name = self.name, op = "get", timeout = timeout }
  if not found then return nil end
  return dec(v)
end
function Queue:len() return (call { kind = "queue", name = self.name, op = "len" }) end
function Queue:empty() return self:len() == 0 end

--- sky.queue(name): a FIFO queue: q:put(v), q:get(timeout), q:len(), q:empty().
function M.queue(name)
  check_name("queue", name)
  return setmetatable({ name = name }, Queue)
end

-- barrier -----------------------------------------------------------------------------------------

local Barrier = proxy_class("barrier")
--- Waits until n parties reached it; returns which round this was (1, 2, ...): the barrier can
--- be used again.
function Barrier:wait() return (call { kind = "barrier", name = self.name, op = "wait", n = self.n }) end

--- sky.barrier(name, n): b:wait() blocks until n callers have reached it.
function M.barrier(name, n)
  check_name("barrier", name)
  if type(n) ~= "number" or n < 1 or n ~= math.floor(n) then
    error("sky.barrier: n must be a whole number of parties, 1 or more (got " .. tostring(n) .. ")", 2)
  end
  return setmetatable({ name = name, n = n }, Barrier)
end

-- lock --------------------------------------------------------------------------------------------

local Lock = proxy_class("lock")
--- Takes the lock, waiting up to the lock's timeout; raises when it could not.
function Lock:acquire(timeout)
  timeout = timeout or self.timeout
  if not call { kind = "lock", name = self.name, op = "acquire", timeout = timeout } then
    error(string.format("sky.lock '%s': not acquired within %g s", self.name, timeout), 2)
  end
  return true
end
function Lock:release() call { kind = "lock", name = self.name, op = "release" } end
function Lock:locked() return (call { kind = "lock", name = self.name, op = "locked" }) end
--- Runs fn(...) holding the lock (Python's `with lock:`); released even when fn raises.
function Lock:with(fn, ...)
  self:acquire()
  local res = { n = 0 }
  local function pack(...) res = { n = select("#", ...), ... } end
  local ok, err = pcall(function(...) pack(fn(...)) end, ...)
  self:release()
  if not ok then error(err, 0) end
  return unpack(res, 1, res.n)
end

--- sky.lock(name, timeout = 30): l:acquire(), l:release(), l:locked(), l:with(fn). A worker that
--- dies holding it releases it.
function M.lock(name, timeout)
  check_name("lock", name)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error("sky.lock: timeout must be seconds >= 0", 2)
  end
  return setmetatable({ name = name, timeout = timeout or 30 }, Lock)
end

return M
