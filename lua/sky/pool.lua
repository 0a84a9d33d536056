-- sky.pool: ComputePool, the driver side of the worker protocol. One event loop (Pool:_pump) runs
-- whenever the driver waits on the pool: it dispatches queued tasks and map batches to idle
-- workers, reads frames, streams worker output, enforces timeouts and replaces dead workers.
-- Workers are slots: nodes x concurrency processes; broadcast runs on slot 1 of every node. A
-- provider whose nodes have several GPUs gives ranks_per_node: one worker per GPU, each a rank,
-- and broadcast runs on every one.
local core = require "sky.core"
local pcore = require "sky.pool.core"
local monotonic = require("sky.core").monotonic
local wire = require "sky.wire"
local K = require "sky.protocol"
local secret = require "sky.secret"
local compute = require "sky.compute"
local collections = require "sky.collections"

local M = {}

local Pool = {}
Pool.__index = Pool
local Future = {}
Future.__index = Future

local now = monotonic
local poll = pcore.poll
local encode, decode = wire.encode, wire.decode

local function pack(...) return { n = select("#", ...), ... } end

local pool_count = 0

-- "sky-" and 8 random hex digits: the tag on everything a provider creates for this pool.
local function new_pool_id()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(4) or tostring(os.time() + pcore.getpid())
  if f then f:close() end
  return "sky-" .. bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end):sub(1, 8)
end

-- The most workers one pool drives (nodes x concurrency): each is a process with a connection
-- the driver polls on every turn of its loop.
M.MAX_WORKERS = 4096

--- sky.ComputePool{provider=, nodes=, concurrency=, accelerator=, image=, plugins=, env=, name=,
--- output=, startup_timeout=, retry_on_interruption=, results_may_carry_code=, and the machine spec
--- (lua/sky/spec.lua): vcpus=, memory_gb=, disk_gb=, region=, allocation=, ttl=, max_hourly_cost=}
---   provider     sky.providers.local_{} (default) or another provider
---   nodes        number of nodes (default 1), or {min=, max=}: as many as the provider gives, at
---                least min; concurrency: worker processes per node
---   accelerator  "A100", "H100:8", sky.accelerators.H100{count=8} (lua/sky/accelerators.lua), or a
---                label ("auto", the default: the worker says what it sees)
---   env          environment variables for the workers, delivered over the protocol (never on a
---                command line)
---   output       true (default): worker output printed as "[node N] line"; false: dropped;
---                a function(node, line, stream) receives each line; {only = "head" | node |
---                function(info) -> boolean}: printed, but stdout only from the workers it picks
---                (Skyward's @sky.stdout(only="head")); stderr always shows
---   retry_on_interruption  how many times a task, or a map batch, whose worker died is run again
---                on the replacement or another worker (default 3, as Skyward's; 0: never). Errors
---                raised by the task and timeouts are not interruptions: they fail at once.
---   max_restarts  gang restarts of a broadcast (default 0, as torchrun's --max-restarts): in a
---                pool whose ranks form a group (the torch plugin) or with max_restarts > 0, the
---                ranks are a gang. When a rank's worker dies, the pool ends the other ranks and
---                starts them all again (a new group; a lost node replaced where the provider
---                can); a broadcast that was running then runs again on the new gang, up to
---                max_restarts times (sky.info().restarts counts the gangs so far; the task
---                resumes from its last checkpoint), else it fails naming the rank that died.
---   results_may_carry_code  false (default): what workers send is decoded as data only (no
---                functions, modules or userdata; nothing runs while decoding), so a compromised
---                host cannot run code in the driver; true: results may carry functions
function M.ComputePool(opts)
  opts = core.check_options(opts, {
    provider = "table", nodes = "any", concurrency = "integer", accelerator = "any", image = "table",
    plugins = "table", env = "table", name = "string", output = "any", startup_timeout = "seconds",
    retry_on_interruption = "integer", results_may_carry_code = "boolean", max_restarts = "integer",
    vcpus = "any", memory_gb = "any", disk_gb = "any", region = "any", allocation = "any", ttl = "any",
    max_hourly_cost = "any",
  }, "ComputePool", 3)
  local spec = require("sky.spec").from_options(opts)
  local conc = opts.concurrency or 1
  if conc < 1 then error("ComputePool: concurrency must be at least 1 (got " .. conc .. ")", 2) end
  local retries = opts.retry_on_interruption or 3
  if retries < 0 then error("ComputePool: retry_on_interruption must be 0 or more (got " .. retries .. ")", 2) end
  local max_restarts = opts.max_restarts or 0
  if max_restarts < 0 then error("ComputePool: max_restarts must be 0 or more (got " .. max_restarts .. ")", 2) end
  local provider = opts.provider or require("sky.providers")["local"]()
  local ranks = provider.ranks_per_node and provider:ranks_per_node(spec) or 1
  if ranks > 1 then
    if conc > 1 then
      error("ComputePool: concurrency > 1 with several ranks per node (" .. ranks .. " GPUs) is not supported yet", 2)
    end
    conc = ranks
  end
  if spec.nodes.max * conc > M.MAX_WORKERS then
    error(string.format("ComputePool: nodes x concurrency = %d workers, more than one pool runs (%d)",
      spec.nodes.max * conc, M.MAX_WORKERS), 2)
  end
  local out, only = opts.output, nil
  if type(out) == "table" then
    only = core.check_options(out, { only = "any" }, "ComputePool: output", 3).only
    local nodes = spec.nodes.max
    if only ~= "head" and type(only) ~= "function" and not (type(only) == "number" and only >= 1 and only <= nodes) then
      error('ComputePool: output.only must be "head", a node number (1 to ' .. nodes .. ') or a function(info) -> boolean', 2)
    end
    out = true
  elseif out ~= nil and type(out) ~= "boolean" and type(out) ~= "function" then
    error('ComputePool: output must be a boolean, a function(node, line, stream) or {only = "head"}', 2)
  end
  pool_count = pool_count + 1
  local self = setmetatable({
    name = opts.name or ("pool-" .. pool_count),
    id = new_pool_id(),
    provider = provider,
    spec = spec,
    nodes = spec.nodes.max, concurrency = conc, ranks_per_node = ranks,
    accelerator = spec.label,
    image = opts.image,
    plugins = opts.plugins or {},
    env = opts.env or {},
    output = out == nil and true or out,
    output_only = only,
    startup_timeout = opts.startup_timeout or 60,
    retry_on_interruption = retries,
    max_restarts = max_restarts, restarts = 0,
    results_may_carry_code = opts.results_may_carry_code == true,
    state = "new",
    workers = {}, queue = {}, maps = {},
    next_id = 0, next_map = 0,
    conns = {}, conn_workers = {}, conns_dirty = true,
  }, Pool)
  require("sky.spec").check_provider(spec, self.provider)
  if self.image ~= nil and not require("sky.image").is_image(self.image) then
    error("ComputePool: image must be a sky.Image{...}", 2)
  end
  local plugins = require "sky.plugins"
  for i, p in ipairs(self.plugins) do
    plugins.check(p, "ComputePool: plugins[" .. i .. "]")
    for _, s in ipairs(p.secrets or {}) do secret.add(s) end
  end
  self.env = require("sky.image").check_env(self.env, "ComputePool", 3)
  -- Workers die with the pool object even when nobody closes it (tables have no __gc in LuaJIT).
  local sentinel = newproxy(true)
  local workers = self.workers
  getmetatable(sentinel).__gc = function()
    for _, w in pairs(workers) do if w.conn then pcall(w.conn.release, w.conn) end end
  end
  self._sentinel = sentinel
  return self
end

function Pool:__tostring()
  return secret.mask(string.format("ComputePool(%s, %s, %d node%s x %d, %s)", self.name,
    tostring(self.provider), self.nodes, self.nodes == 1 and "" or "s", self.concurrency, self.state))
end

-- ---- workers -----------------------------------------------------------------------------------

local function worker_where(w)
  return w.where or ("node " .. w.node)
end

-- Starts (or restarts) the worker of slot index k.
function Pool:_spawn(k)
  local conc = self.concurrency
  local node, slot = math.floor((k - 1) / conc) + 1, (k - 1) % conc + 1
  local old = self.workers[k]
  local w = {
    index = k, node = node, slot = slot, rank = k - 1, state = "starting", busy = 0, inflight = {},
    partial = {}, started = now(), failures = old and old.failures or 0, sent_fn = {},
    misbehaved = old and old.misbehaved or 0,
  }
  self.workers[k] = w
  self.conns_dirty = true
  local ok, conn = pcall(self.provider.spawn, self.provider, node, slot, self:_context())
  if not ok then
    w.state = "failed"
    w.error = tostring(conn)
    return w
  end
  w.conn = conn
  w.where = secret.mask(conn:describe())
  w.quiet = self:_quiet(w)
  return w
end

-- Whether output = {only = ...} silences w's stdout.
function Pool:_quiet(w)
  local only = self.output_only
  if only == nil then return false end
  if only == "head" then return not (w.node == 1 and w.slot == 1) end
  if type(only) == "number" then return w.node ~= only end
  local ok, pick = pcall(only, self:_info(w))
  if not ok then error("ComputePool: output.only failed: " .. tostring(pick), 0) end
  return not pick
end

function Pool:_context()
  return { pool = self.name, pool_id = self.id, nodes = self.nodes, concurrency = self.concurrency,
           image = self._image or self.image, bootstrap = self._bootstrap, head_address = self:head_address(),
           accelerator = self.accelerator, spec = self.spec }
end

-- The image after the plugins' image hooks, and the plugins' bootstrap lines.
function Pool:_effective_image()
  local ctx = { pool = self.name, nodes = self.nodes, concurrency = self.concurrency, head_address = self:head_address() }
  local image = self.image
  for _, p in ipairs(self.plugins) do
    if p.image then
      image = p.image(image or require("sky.image").Image {}, ctx) or image
    end
  end
  local lines = {}
  for _, p in ipairs(self.plugins) do
    if p.bootstrap then
      for _, l in ipairs(p.bootstrap(ctx) or {}) do lines[#lines + 1] = l end
    end
  end
  return image, lines
end

--- The bootstrap script the pool's nodes run: the image (after plugins' image hooks) plus the
--- plugins' bootstrap lines. Secrets never appear in it.
function Pool:script()
  local image, lines = self:_effective_image()
  image = image or require("sky.image").Image {}
  return image:script(lines)
end

function Pool:head_address()
  local p = self.provider
  return p.head_address and p:head_address() or "127.0.0.1"
end

-- The address the other nodes reach node i at (its host's private address on a cluster).
function Pool:node_address(i)
  local p = self.provider
  if p.node_address then return p:node_address(i) end
  return i == 1 and self:head_address() or "127.0.0.1"
end

function Pool:_info(w)
  local peers = {}
  for i = 1, self.nodes do peers[i] = { node = i, address = self:node_address(i) } end
  return {
    node = w.node, nodes = self.nodes, slot = w.slot, rank = w.rank, world_size = self.nodes * self.concurrency,
    local_rank = w.slot - 1, ranks_per_node = self.ranks_per_node, head_address = self:head_address(), pool = self.name,
    address = self:node_address(w.node), is_head = w.node == 1 and w.slot == 1,
    concurrency = self.concurrency, job_id = self.job_id, peers = peers, restarts = self.restarts,
    accelerator = self.accelerator,  -- "auto": the worker says what it sees
  }
end

function Pool:_setup_payload(w)
  local info = self:_info(w)
  local env = {}
  local image = self._image or self.image
  if image and image.env then for k, v in pairs(image.env) do env[k] = tostring(v) end end
  for k, v in pairs(self.env) do env[k] = v end
  local plugins = {}
  local check_env = require("sky.image").check_env
  for _, p in ipairs(self.plugins) do
    if p.env then
      for k, v in pairs(check_env(p.env(info, self) or {}, "plugin '" .. tostring(p.name) .. "'", 2)) do env[k] = v end
    end
    plugins[#plugins + 1] = { name = p.name, setup = p.setup, wrap = p.wrap, teardown = p.teardown }
  end
  local modules = image and image._lua_modules and image:_lua_modules() or nil
  return encode({ versions = wire.versions(), env = env, info = info, plugins = plugins,
                  secrets = secret.list(), modules = modules, results_may_carry_code = self.results_may_carry_code },
                "pool setup")
end

function Pool:_refresh_conns()
  if not self.conns_dirty then return end
  local conns, owners = {}, {}
  for _, w in pairs(self.workers) do
    if w.conn then
      conns[#conns + 1] = w.conn
      owners[#owners + 1] = w
    end
  end
  self.conns, self.conn_workers, self.conns_dirty = conns, owners, false
end

-- A line of worker output longer than this goes out in pieces of about this size as it arrives,
-- so a huge line costs linear time and bounded driver memory.
local LINE_PIECE = 1048576

-- Writes a worker's output as "[node N] line", line by line. A partial line waits in
-- w.partial[stream] (its pieces and their bytes); once it reaches LINE_PIECE, what it holds is
-- written (printed: continued on the same line; an output function gets it as a line) except
-- a tail that may start a secret.
function Pool:_output(w, stream, data, flush)
  if w.quiet and stream == K.STDOUT then return end
  local out = self.output
  local p = w.partial[stream]
  local pos = 1
  while true do
    local nl = data:find("\n", pos, true)
    if not nl then break end
    local line = data:sub(pos, nl - 1)
    if p then
      p[#p + 1] = line
      line = table.concat(p)
    end
    self:_emit(w, secret.mask(line), stream, out, p and p.started, true)
    p = nil
    pos = nl + 1
  end
  if pos <= #data then
    p = p or { bytes = 0 }
    p[#p + 1] = pos == 1 and data or data:sub(pos)
    p.bytes = p.bytes + #data - pos + 1
    if p.bytes >= LINE_PIECE then
      local shown, rest = secret.mask_prefix(table.concat(p))
      self:_emit(w, shown, stream, out, p.started, false)
      p = { rest, bytes = #rest, started = true }
    end
  end
  if flush and p then
    self:_emit(w, secret.mask(table.concat(p)), stream, out, p.started, true)
    p = nil
  end
  w.partial[stream] = p
end

-- Shows text (already masked) from w: a whole line, or a piece of a long one (continued: not
-- its first piece; ends: its last).
function Pool:_emit(w, text, stream, out, continued, ends)
  if out == false or (text == "" and not ends) then return end
  if type(out) == "function" then
    local ok, err = pcall(out, w.node, text, stream == K.STDERR and "stderr" or "stdout")
    if not ok then io.stderr:write("[pool] the output function failed: ", secret.mask(tostring(err)), "\n") end
    return
  end
  local f = stream == K.STDERR and io.stderr or io.stdout
  if not continued then f:write("[node ", w.node, "] ") end
  f:write(text, ends and "\n" or "")
  f:flush()
end

function Pool:_flush_output(w)
  for _, s in ipairs({ K.STDOUT, K.STDERR }) do
    if w.partial[s] then self:_output(w, s, "", true) end
  end
end

-- Fails every unit running on w with make(name) -> remote error fields.
function Pool:_fail_inflight(w, make)
  for _, u in ipairs(w.inflight) do
    if u.rec then
      self:_finish(u.rec, nil, compute.remote_error(make(u.rec.name)))
    elseif u.job then
      for j = 0, u.count - 1 do
        self:_map_item(u.job, u.base + j, nil, compute.remote_error(make(u.job.name)))
      end
      u.job.inflight = u.job.inflight - 1
    end
  end
  w.inflight = {}
  w.busy = 0
end

-- The worker's process ended or must end: fail its work, drop it, start a replacement.
function Pool:_worker_lost(w, why, kind)
  if w.state == "dead" then return end
  local reason = why
  if not reason and w.conn then reason = w.conn:exit_reason(1000) end
  self:_flush_output(w)
  local was_starting = w.state == "starting" or w.state == "setup"
  local was_rank = w.state == "ready" and self:_is_gang_rank(w)
  w.state = "dead"
  if w.conn then
    pcall(w.conn.release, w.conn)
    w.conn = nil
  end
  self.conns_dirty = true
  local where = worker_where(w)
  if self.store then self.store:drop_client(w) end
  if kind == "misbehaving" then
    -- what a misbehaving worker held fails at once: it was not interrupted, it answered falsely
    self:_fail_inflight(w, function(task_name)
      return { kind = kind, task = task_name, node = w.node, where = where, message = reason, traceback = "" }
    end)
  else
    self:_requeue_inflight(w, kind or "died", "worker died (" .. tostring(reason) .. ")")
  end
  if was_rank and self.state == "open" and not self.ending_gang then self:_end_gang(w, reason) end
  if was_starting then
    w.failures = w.failures + 1
    self.startup_error = self.startup_error or (kind == "misbehaving" and reason or
      ("worker on " .. where .. " ended before it was ready (" .. tostring(reason) .. ")"))
  end
  if self.state == "open" and w.misbehaved >= 3 then
    w.state = "failed"
    w.error = "worker on " .. where .. " misbehaved 3 times; node " .. w.node .. " gets no more workers (last: " ..
      tostring(reason) .. ")"
  elseif self.state == "open" and w.failures < 3 then
    self:_spawn(w.index)
  elseif self.state == "open" then
    w.state = "failed"
    w.error = "worker on " .. where .. " failed to start 3 times: " .. tostring(reason)
  end
end

-- ---- gangs -------------------------------------------------------------------------------------

-- Whether the pool's ranks are a gang: a plugin makes them a group (gang = true), or restarts
-- were asked for.
function Pool:_gang_mode()
  if self.max_restarts > 0 then return true end
  for _, p in ipairs(self.plugins) do if p.gang then return true end end
  return false
end

function Pool:_is_gang_rank(w)
  if not self:_gang_mode() then return false end
  for _, k in ipairs(self:_rank_slots()) do if k == w.index then return true end end
  return false
end

-- A rank died: the others are ended too (they cannot go on in a group with a member gone), the
-- plugins start a new group for the workers that replace them, and a broadcast that was running
-- fails as a whole (Pool:broadcast runs it again while restarts last).
function Pool:_end_gang(dead, reason)
  self.ending_gang = true
  self.restarts = self.restarts + 1
  for _, p in ipairs(self.plugins) do
    if p.restart then p.restart(self) end
  end
  io.stderr:write(secret.mask(string.format("[pool] %s: rank %d on %s died (%s); ending the other ranks and starting " ..
    "gang %d\n", self.name, dead.index - 1, worker_where(dead), tostring(reason), self.restarts + 1)))
  for _, k in ipairs(self:_rank_slots()) do
    local w = self.workers[k]
    if w and w ~= dead and w.conn and w.state ~= "dead" and w.state ~= "failed" then
      w.conn:kill()
      self:_worker_lost(w, "ended with its gang (rank " .. (dead.index - 1) .. " died)")
    end
  end
  self.ending_gang = false
end

-- The work of a worker that died goes back to the queue (tasks first in line, map batches before
-- the map's next items) while its retries last; past them it fails with `message`.
function Pool:_requeue_inflight(w, kind, message)
  local where = worker_where(w)
  local again = {}
  local function exhausted(name, runs, limit)
    local why = message
    if limit > 0 then why = why .. string.format("; it ran %d times (retry_on_interruption = %d)", runs, limit) end
    return compute.remote_error({ kind = kind, task = name, node = w.node, where = where, message = why, traceback = "" })
  end
  local function note(name, attempt, limit)
    io.stderr:write(secret.mask(string.format("[pool] %s: %s was interrupted on %s (%s); running it again (retry %d of %d)\n",
      self.name, name, where, message, attempt, limit)))
  end
  for _, u in ipairs(w.inflight) do
    if u.rec and u.rec.gang then
      -- a rank of a broadcast: the gang restarts as a whole (Pool:broadcast), not this task alone
      local gang = u.rec.gang
      gang.failed = gang.failed or string.format("rank %d on %s: %s", u.rec.pin - 1, where, message)
      self:_finish(u.rec, nil, compute.remote_error({ kind = kind, task = u.rec.name, node = w.node, where = where,
        message = message, traceback = "" }))
      for _, rec in ipairs(gang.recs) do  -- ranks not started yet must not start in the next gang
        if rec.state == "queued" then
          self:_finish(rec, nil, compute.remote_error({ kind = kind, task = rec.name, node = 0, where = "the pool",
            message = "its gang ended: " .. gang.failed, traceback = "" }))
        end
      end
    elseif u.rec then
      local rec = u.rec
      local limit = rec.retries or self.retry_on_interruption
      rec.interrupted = (rec.interrupted or 0) + 1
      if rec.interrupted <= limit and not rec.done and self.state == "open" then
        note("task '" .. rec.name .. "'", rec.interrupted, limit)
        rec.state, rec.worker, rec.deadline = "queued", nil, nil
        again[#again + 1] = rec
      else
        self:_finish(rec, nil, exhausted(rec.name, rec.interrupted, limit))
      end
    elseif u.job then
      local job = u.job
      job.inflight = job.inflight - 1
      local interrupted = (u.interrupted or 0) + 1
      if interrupted <= job.retries and not job.stop and self.state == "open" then
        note(string.format("map '%s' (items %d-%d)", job.name, u.base, u.base + u.count - 1), interrupted, job.retries)
        job.again[#job.again + 1] = { base = u.base, count = u.count, interrupted = interrupted }
      else
        for j = 0, u.count - 1 do
          self:_map_item(job, u.base + j, nil, exhausted(job.name, interrupted, job.retries))
        end
      end
    end
  end
  w.inflight = {}
  w.busy = 0
  if #again > 0 then
    for _, rec in ipairs(self.queue) do again[#again + 1] = rec end
    self.queue = again
  end
end

-- A worker broke the protocol (a frame it may not send, a malformed one, or one carrying code
-- that the pool does not accept): it is stopped and reported, its tasks fail as "misbehaving",
-- and its slot gets a fresh worker (a node that misbehaves 3 times gets none). Nothing it sent
-- was run; the driver and the other workers go on.
function Pool:_misbehaved(w, what)
  if w.state == "dead" or w.state == "failed" then return end
  local msg = "worker on " .. worker_where(w) .. " misbehaved: it sent " .. what .. "; it was stopped and nothing " ..
    "it sent was run"
  msg = secret.mask(msg)
  w.misbehaved = w.misbehaved + 1
  self.misbehaviors = self.misbehaviors or {}
  self.misbehaviors[#self.misbehaviors + 1] = { node = w.node, where = worker_where(w), message = msg }
  io.stderr:write("[pool] ", msg, "\n")
  io.stderr:flush()
  if w.conn then w.conn:kill() end
  self:_worker_lost(w, msg, "misbehaving")
end

function Pool:_fatal(w, msg)
  self.startup_error = self.startup_error or msg
  w.failures = 99
  self:_worker_lost(w, msg, "died")
  w.state = "failed"
  w.error = msg
end

-- A frame handler's verdict on a worker that broke the protocol (caught by Pool:_read).
local Broken = {}
local function broken(what) error(setmetatable({ what = what }, Broken), 0) end

-- Decodes the value a worker sent. Data only unless allow_code (a pool with
-- results_may_carry_code, for RESULT and BATCH_RESULT); malformed bytes or refused code break
-- the protocol. Other failures (a module the driver lacks) return false and the message.
local function decode_from_worker(body, frame, allow_code)
  local ok, v = pcall(decode, body, nil, not allow_code)
  if ok then return true, v end
  local msg = tostring(v)
  if msg:find("malformed value", 1, true) or msg:find("refused to decode", 1, true) or not allow_code then
    broken("a " .. frame .. " frame that is not plain data (" .. msg .. ")")
  end
  return false, msg
end

local frame_handlers = {}

frame_handlers[K.STDOUT] = function(self, w, body, kind) self:_output(w, kind, body) end
frame_handlers[K.STDERR] = frame_handlers[K.STDOUT]

frame_handlers[K.HELLO] = function(self, w, body)
  if w.state ~= "starting" then broken("a second greeting (HELLO)") end
  local ok, v = pcall(wire.parse_hello, body)
  if not ok then
    self:_fatal(w, "worker on " .. worker_where(w) .. " does not speak the skyrun protocol: " .. tostring(v))
    return false
  end
  local mismatch = wire.mismatch(wire.versions(), v)
  if mismatch then
    self:_fatal(w, "cannot start worker on " .. worker_where(w) .. ": " .. mismatch)
    return false
  end
  local okp, setup = pcall(self._setup_payload, self, w)
  if not okp then
    self:_fatal(w, "cannot set up worker on " .. worker_where(w) .. ": " .. tostring(setup))
    return false
  end
  w.state = "setup"
  w.conn:send(K.SETUP, setup)
end

frame_handlers[K.READY] = function(self, w, body)
  if w.state ~= "setup" then broken("READY " .. (w.state == "starting" and "before its greeting" or "twice")) end
  local _, r = decode_from_worker(body, "READY", false)
  if type(r) ~= "table" or type(r.pid) ~= "number" or r.pid ~= math.floor(r.pid) or r.pid < 1 then
    broken("a READY frame without its process id")
  end
  w.pid = r.pid
  w.state = "ready"
  w.failures = 0
end

frame_handlers[K.FAIL] = function(self, w, body)
  if w.state ~= "setup" then broken("FAIL outside its setup") end
  self:_fatal(w, "worker on " .. worker_where(w) .. " failed to set up: " .. secret.mask(body))
  return false
end

frame_handlers[K.BYE] = function(self, w) w.bye = true end

frame_handlers[K.RESULT] = function(self, w, body, _, id)
  self:_on_result(w, id, body)
end

frame_handlers[K.BATCH_RESULT] = function(self, w, body, _, id, base)
  self:_on_batch(w, id, base, body)
end

frame_handlers[K.CALL] = function(self, w, body, _, id)
  self:_on_call(w, id, body)
end

-- Reads every frame w has ready. Each frame's kind and header are checked (wire.worker_frame)
-- before its handler runs; a worker whose frame breaks the protocol is stopped as misbehaving.
function Pool:_read(w)
  local conn = w.conn
  while conn and w.conn == conn do
    local kind, payload = conn:recv()
    if kind == nil then return end
    if kind == false then
      if payload ~= "eof" and payload:find("malformed frame", 1, true) and w.state == "starting" then
        self:_fatal(w, "worker on " .. worker_where(w) .. " does not speak the skyrun protocol: what it wrote " ..
          "before its greeting is not a frame (" .. payload .. "; a login script printing to stdout?)")
      elseif payload ~= "eof" and payload:find("malformed frame", 1, true) then
        self:_misbehaved(w, "a " .. payload)
      else
        self:_worker_lost(w, payload ~= "eof" and payload or nil)
      end
      return
    end
    local ok, err = pcall(function()
      local okf, id, base, body = pcall(wire.worker_frame, kind, payload)
      if not okf then broken(tostring(id)) end
      if w.state ~= "ready" and (kind == K.RESULT or kind == K.BATCH_RESULT or kind == K.CALL) then
        broken("a " .. K[kind] .. " frame before it was ready")
      end
      return frame_handlers[kind](self, w, body, kind, id, base)
    end)
    if not ok then
      local what = getmetatable(err) == Broken and err.what or ("a frame the driver could not handle (" .. tostring(err) .. ")")
      self:_misbehaved(w, what)
      return
    end
    if err == false then return end  -- the handler ended the worker
  end
end

-- ---- distributed collections (sky.collections) ----------------------------------------------------

-- A worker's request: applied to the pool's store; the answer goes back as REPLY (now, or when a
-- blocking operation completes, if that worker is still the one connected).
-- A collection request from a task (sky.collections): plain data, answered from the store.
function Pool:_on_call(w, id, body)
  local _, r = decode_from_worker(body, "CALL", false)
  local conn = w.conn
  local function reply(...)
    if w.conn ~= conn or not conn then return end
    local ok, bytes = pcall(encode, { ... }, "collection answer")
    if not ok then bytes = encode({ false, tostring(bytes) }) end
    if not conn:send(K.REPLY, string.format("%d:", id) .. bytes) then self:_worker_lost(w) end
  end
  if not self.store then return reply(false, "the pool is closing") end
  self.store:handle(w, r, reply, now())
end

-- A request made on the driver: answered from the store; a blocking one turns the event loop
-- until it is answered.
function Pool:_collection_call(r)
  local answer
  self.store:handle("driver", r, function(...) answer = pack(...) end, now())
  while not answer do
    if self.state ~= "open" then return false, "the pool was closed" end
    self:_pump(-1)
  end
  return answer[1], answer[2], answer[3]
end

-- ---- tasks -------------------------------------------------------------------------------------

function Pool:_finish(rec, values, err)
  if rec.done then return end
  rec.done = true
  rec.values = values
  rec.err = err
  rec.state = "done"
end

-- A value count a worker may claim for a task's results (unpack's limit).
local MAX_RESULTS = 7999

-- Checks a result fully before the task is taken off the worker: a frame that breaks the
-- protocol then fails the task with the worker, as misbehaving.
function Pool:_on_result(w, id, body)
  local u = w.inflight[1]
  if not u or not u.rec or u.rec.id ~= id then broken("a RESULT for task " .. id .. ", which it was not running") end
  local ok, r = decode_from_worker(body, "RESULT", self.results_may_carry_code)
  local v = ok and type(r) == "table" and r[2]
  if ok then
    if type(r[1]) ~= "boolean" or type(v) ~= "table" then broken("a RESULT that is not {ok, values}") end
    if r[1] then
      local n = v.n
      if type(n) ~= "number" or n ~= math.floor(n) or n < 0 or n > MAX_RESULTS then
        broken("a RESULT whose value count is not 0.." .. MAX_RESULTS)
      end
    elseif type(v.message) ~= "string" or (v.traceback ~= nil and type(v.traceback) ~= "string") then
      broken("a failed RESULT without a message")
    end
  end
  table.remove(w.inflight, 1)
  w.busy = w.busy - 1
  self:_flush_output(w)
  local rec, where = u.rec, worker_where(w)
  if not ok then
    self:_finish(rec, nil, compute.remote_error({ kind = "error", task = rec.name, node = w.node, where = where,
      message = "its result cannot be decoded on the driver: " .. r, traceback = "" }))
  elseif r[1] then
    self:_finish(rec, v)
  else
    self:_finish(rec, nil, compute.remote_error({ kind = "error", task = rec.name, node = w.node, where = where,
      message = v.message, traceback = v.traceback or "", value = v.value }))
  end
end

-- Encodes a task on the driver, so an unsendable value is refused before anything is sent.
function Pool:_make_rec(task, level)
  if not compute.is_task(task) then
    local hint = type(task) == "function" and " (wrap it with sky.compute and call that to make a task)" or ""
    error("expected a task, got " .. type(task) .. hint, level + 1)
  end
  local c = task.compute
  local okb, bytes = pcall(encode, { fn = c.fn, args = task.args })
  if not okb then
    -- Encode the parts alone to name the path from the function or the argument.
    local ok, err = pcall(encode, c.fn, "")
    if not ok then error(err, level + 1) end
    for i = 1, task.args.n do
      ok, err = pcall(encode, task.args[i], "argument #" .. i)
      if not ok then error(err, level + 1) end
    end
    error(bytes, level + 1)
  end
  self.next_id = self.next_id + 1
  return { id = self.next_id, name = c.name, timeout = c.timeout, retries = c.retries, bytes = bytes, state = "queued" }
end

function Pool:_check_open(what, level)
  if self.state ~= "open" then
    error(what .. ": the pool is " .. self.state .. " (use pool:with(function() ... end) or pool:open())", level + 1)
  end
end

function Pool:_usable(w) return w and w.state == "ready" and w.conn ~= nil end

-- Sends queued tasks and map batches to idle workers.
function Pool:_dispatch()
  local q = self.queue
  if #q > 0 then
    local keep = {}
    for _, rec in ipairs(q) do
      local target
      if rec.cancelled then
        -- dropped
      elseif rec.pin then
        local w = self.workers[rec.pin]
        if self:_usable(w) and w.busy == 0 then target = w
        elseif w and w.state == "failed" then
          self:_finish(rec, nil, compute.remote_error({ kind = "died", task = rec.name, node = w.node,
            where = worker_where(w), message = w.error or "worker failed", traceback = "" }))
        end
      elseif rec.node then
        -- Any idle worker of that node; the task fails when every worker of the node has failed.
        local failed
        for k = (rec.node - 1) * self.concurrency + 1, rec.node * self.concurrency do
          local w = self.workers[k]
          if self:_usable(w) and w.busy == 0 then target = w break end
          if w and w.state == "failed" and (failed == nil or failed) then failed = w else failed = false end
        end
        if not target and failed then
          self:_finish(rec, nil, compute.remote_error({ kind = "died", task = rec.name, node = failed.node,
            where = worker_where(failed), message = failed.error or "worker failed", traceback = "" }))
        end
      else
        for k = 1, #self.workers do
          local w = self.workers[k]
          if self:_usable(w) and w.busy == 0 then target = w break end
        end
      end
      if target then
        self:_send_task(target, rec)
      elseif not rec.done and not rec.cancelled then
        keep[#keep + 1] = rec
      end
    end
    self.queue = keep
  end
  for _, job in pairs(self.maps) do self:_dispatch_map(job) end
end

function Pool:_send_task(w, rec)
  rec.state = "running"
  rec.worker = w
  if rec.timeout then rec.deadline = now() + rec.timeout end
  w.busy = w.busy + 1
  w.inflight[#w.inflight + 1] = { rec = rec }
  if not w.conn:send(K.TASK, rec.id .. ":" .. rec.bytes) then self:_worker_lost(w) end
end

function Pool:_submit(task, level, pin, node)
  self:_check_open("cannot run a task", level + 1)
  local rec = self:_make_rec(task, level + 1)
  rec.pin, rec.node = pin, node
  self.queue[#self.queue + 1] = rec
  self:_dispatch()
  return rec
end

-- One turn of the event loop; waits at most `wait` seconds (< 0: until something happens).
function Pool:_pump(wait)
  self:_dispatch()
  local t = now()
  local timeout = wait
  for _, w in pairs(self.workers) do
    for _, u in ipairs(w.inflight) do
      local d = u.rec and u.rec.deadline or u.deadline
      if d then
        local left = d - t
        if timeout < 0 or left < timeout then timeout = left end
      end
    end
  end
  local store_deadline = self.store and self.store:next_deadline()
  if store_deadline then
    local left = store_deadline - t
    if timeout < 0 or left < timeout then timeout = left end
  end
  if timeout ~= wait and timeout < 0 then timeout = 0 end
  self:_refresh_conns()
  if #self.conns == 0 then
    if timeout < 0 then timeout = 0.05 end
    pcore.sleep(math.min(timeout, 0.05))
  else
    local ready = poll(self.conns, timeout)
    local owners = self.conn_workers
    for _, i in ipairs(ready) do self:_read(owners[i]) end
  end
  if self.store then self.store:expire(now()) end
  self:_check_deadlines()
end

function Pool:_check_deadlines()
  local t = now()
  for _, w in pairs(self.workers) do
    local u = w.inflight[1]
    local d = u and (u.rec and u.rec.deadline or u.deadline)
    if d and t >= d and w.conn then
      local name = u.rec and u.rec.name or u.job.name
      local limit = u.rec and u.rec.timeout or u.job.timeout
      local where = worker_where(w)
      -- The timed-out unit fails as a timeout; the rest queued behind it on that worker as died.
      local first = table.remove(w.inflight, 1)
      w.busy = w.busy - 1
      local err = compute.remote_error({ kind = "timeout", task = name, node = w.node, where = where,
        message = string.format("no result after %g s; the worker was stopped and replaced", limit), traceback = "" })
      if first.rec then
        self:_finish(first.rec, nil, err)
      else
        self:_map_item(first.job, first.base, nil, err)
        first.job.inflight = first.job.inflight - 1
      end
      w.conn:kill()
      self:_worker_lost(w, "stopped after a task timed out")
    end
  end
end

-- Waits until every rec in recs is done. A task whose worker slot cannot come back fails.
function Pool:_wait(recs)
  for _, rec in ipairs(recs) do
    while not rec.done do
      if self.state ~= "open" then
        self:_finish(rec, nil, compute.remote_error({ kind = "closed", task = rec.name, node = 0, where = "the driver",
          message = "the pool was closed", traceback = "" }))
        break
      end
      if not self:_any_alive() then
        self:_finish(rec, nil, compute.remote_error({ kind = "died", task = rec.name, node = 0, where = "the pool",
          message = "no worker is left: " .. tostring(self:_last_error()), traceback = "" }))
        break
      end
      self:_pump(-1)
    end
  end
end

function Pool:_any_alive()
  for _, w in pairs(self.workers) do
    if w.state ~= "failed" and w.state ~= "dead" then return true end
  end
  return false
end

function Pool:_last_error()
  for _, w in pairs(self.workers) do if w.error then return w.error end end
  return self.startup_error or "unknown"
end

local function result_of(rec)
  if rec.err then error(rec.err, 0) end
  return unpack(rec.values, 1, rec.values.n)
end

-- The node of a {target = "head" | node} option (nil: any node).
function Pool:_target_node(opts, what, level)
  opts = core.check_options(opts, { target = "any" }, what, level + 1)
  local t = opts.target
  if t == nil then return nil end
  if t == "head" then return 1 end
  if type(t) ~= "number" or t ~= math.floor(t) then
    error(what .. ': target must be "head" or a node number (got ' .. tostring(t) .. ")", level + 1)
  end
  if t < 1 or t > self.nodes then
    error(string.format("%s: no node %d (the pool's nodes are 1 to %d)", what, t, self.nodes), level + 1)
  end
  return t
end

--- pool:run(task, {target = "head" | node}) -> the task's results (Python's `task >> pool`).
--- target: run it on the head (node 1) or on that node (any of its workers); default any node.
function Pool:run(task, opts)
  local node = self:_target_node(opts, "pool:run", 2)
  local rec = self:_submit(task, 2, nil, node)
  self:_wait({ rec })
  return result_of(rec)
end

--- pool:submit(task, {target = "head" | node}) -> a future with :get(), :done(), :cancel()
function Pool:submit(task, opts)
  local node = self:_target_node(opts, "pool:submit", 2)
  local rec = self:_submit(task, 2, nil, node)
  return setmetatable({ pool = self, rec = rec }, Future)
end

function Future:get()
  self.pool:_wait({ self.rec })
  return result_of(self.rec)
end

function Future:done()
  if not self.rec.done and self.pool.state == "open" then self.pool:_pump(0) end
  return self.rec.done == true
end

--- Cancels a queued task, or stops a running one (its worker is replaced). False when done.
function Future:cancel()
  local rec, pool = self.rec, self.pool
  if rec.done then return false end
  local err = compute.remote_error({ kind = "cancelled", task = rec.name, node = rec.worker and rec.worker.node or 0,
    where = rec.worker and worker_where(rec.worker) or "the driver", message = "cancelled", traceback = "" })
  if rec.state == "queued" then
    rec.cancelled = true
    pool:_finish(rec, nil, err)
    return true
  end
  local w = rec.worker
  for i, u in ipairs(w.inflight) do
    if u.rec == rec then
      table.remove(w.inflight, i)
      w.busy = w.busy - 1
      break
    end
  end
  pool:_finish(rec, nil, err)
  if w.conn then w.conn:kill() end
  pool:_worker_lost(w, "stopped to cancel a task")
  return true
end

function Future:__tostring()
  return "Future(" .. self.rec.name .. ", " .. (self.rec.done and "done" or self.rec.state) .. ")"
end

-- The slots broadcast reaches, in rank order: every worker when each is a rank (ranks_per_node
-- > 1), else the first worker of each node.
function Pool:_rank_slots()
  local slots = {}
  for node = 1, self.nodes do
    local first = (node - 1) * self.concurrency + 1
    for k = first, first + (self.ranks_per_node > 1 and self.concurrency - 1 or 0) do slots[#slots + 1] = k end
  end
  return slots
end

--- pool:broadcast(task) -> {result of node 1, result of node 2, ...} (Python's `task @ pool`); with
--- several ranks per node, {result of rank 0, rank 1, ...}. In a gang (see max_restarts), a rank
--- that dies makes the whole broadcast run again on a new gang while restarts last.
function Pool:broadcast(task)
  self:_check_open("cannot broadcast", 2)
  local gang_mode, runs = self:_gang_mode(), 0
  while true do
    local recs = {}
    local gang = gang_mode and { recs = recs } or nil
    for _, k in ipairs(self:_rank_slots()) do
      local rec = self:_make_rec(task, 2)
      rec.pin, rec.gang = k, gang
      self.queue[#self.queue + 1] = rec
      recs[#recs + 1] = rec
    end
    self:_wait(recs)
    if gang and gang.failed and self.state == "open" then
      -- every rank's task of this gang ends (the survivors' workers were ended with it)
      for _, rec in ipairs(recs) do
        self:_finish(rec, nil, compute.remote_error({ kind = "died", task = rec.name, node = 0, where = "the pool",
          message = "its gang ended: " .. gang.failed, traceback = "" }))
      end
      runs = runs + 1
      if runs > self.max_restarts then
        error(compute.remote_error({ kind = "died", task = recs[1].name, node = 0, where = "the pool",
          message = string.format("a rank died: %s; %s", gang.failed, self.max_restarts == 0 and
            "no gang restarts (max_restarts = 0)" or string.format("it ran %d times (max_restarts = %d)", runs, self.max_restarts)),
          traceback = "" }), 0)
      end
      io.stderr:write(secret.mask(string.format("[pool] %s: broadcast '%s' runs again on the new gang (restart %d of %d)\n",
        self.name, recs[1].name, runs, self.max_restarts)))
    else
      local out = {}
      for i, rec in ipairs(recs) do
        if rec.err then error(rec.err, 0) end
        out[i] = rec.values[1]
      end
      return out
    end
  end
end

--- pool:gather(t1, t2, ... [, {stream = true, ordered = false}]) -> r1, r2, ... run in parallel
--- (Python's `t1 & t2`). With stream = true it returns an iterator of (result, index) in the
--- order the tasks finish (ordered = true: in the order given, each as soon as it and those
--- before it are done); a failed task raises when the iterator reaches it.
function Pool:gather(...)
  self:_check_open("cannot gather", 2)
  local n = select("#", ...)
  local last = n > 0 and select(n, ...) or nil
  local opts
  if type(last) == "table" and getmetatable(last) == nil then
    opts = core.check_options(last, { stream = "boolean", ordered = "boolean" }, "pool:gather", 3)
    n = n - 1
  end
  local recs = {}
  for i = 1, n do
    local rec = self:_make_rec((select(i, ...)), 2)
    self.queue[#self.queue + 1] = rec
    recs[i] = rec
  end
  self:_dispatch()
  if opts and opts.stream then return self:_stream(recs, opts.ordered == true) end
  self:_wait(recs)
  local out = {}
  for i, rec in ipairs(recs) do
    if rec.err then error(rec.err, 0) end
    out[i] = rec.values[1]
  end
  return unpack(out, 1, #recs)
end

-- The iterator of gather{stream = true}: (result, index) as each task finishes.
function Pool:_stream(recs, ordered)
  local given, next_index = {}, 1
  return function()
    while true do
      local pick
      if ordered then
        if recs[next_index] and recs[next_index].done then pick = next_index end
      else
        for i, rec in ipairs(recs) do
          if not given[i] and rec.done then pick = i break end
        end
      end
      if pick then
        given[pick] = true
        next_index = next_index + 1
        local rec = recs[pick]
        if rec.err then error(rec.err, 0) end
        return rec.values[1], pick
      end
      if next_index > #recs then return nil end
      -- Nothing finished yet: wait for the next (one turn of the loop at a time).
      local waiting
      for i, rec in ipairs(recs) do
        if not given[i] and not rec.done then waiting = rec break end
      end
      if self.state ~= "open" or not self:_any_alive() then
        self:_wait({ waiting })  -- fails it with the reason
      else
        self:_pump(-1)
      end
    end
  end
end

-- ---- map ---------------------------------------------------------------------------------------

function Pool:_map_item(job, i, value, err)
  if job.have[i] then return end
  job.have[i] = true
  job.done = job.done + 1
  if err then
    if not job.first_err then job.first_err = err end
    if not job.return_errors then job.stop = true end
    value = err
  end
  if job.ordered then
    job.results[i] = value
  else
    job.count = job.count + 1
    job.results[job.count] = value
  end
end

function Pool:_dispatch_map(job)
  if job.stop then return end
  local ready = 0
  for k = 1, #self.workers do if self:_usable(self.workers[k]) then ready = ready + 1 end end
  if ready == 0 then return end
  for k = 1, #self.workers do
    local w = self.workers[k]
    while (job.again[1] or job.next <= job.n) and self:_usable(w) and w.busy < 2 and #self.queue == 0 do
      local base, size, interrupted
      local retry = table.remove(job.again, 1)
      if retry then
        base, size, interrupted = retry.base, retry.count, retry.interrupted
      else
        local remaining = job.n - job.next + 1
        size = job.batch or (job.timeout and 1) or math.max(1, math.min(256, math.ceil(remaining / (4 * ready))))
        size = math.min(size, remaining)
        base = job.next
      end
      local items = { n = size }
      local src = job.items
      for j = 1, size do items[j] = src[base + j - 1] end
      local ok, bytes = pcall(encode, items, "")
      if not ok then
        -- Name the item that cannot travel.
        for j = 1, size do
          local okj, e = pcall(encode, src[base + j - 1], "item #" .. (base + j - 1))
          if not okj then bytes = e break end
        end
        job.refused = bytes
        job.stop = true
        return
      end
      if not w.sent_fn[job.id] then
        if not w.conn:send(K.MAP_FN, job.id .. ":" .. job.fn_bytes) then self:_worker_lost(w) break end
        w.sent_fn[job.id] = true
      end
      if not retry then job.next = base + size end
      job.inflight = job.inflight + 1
      w.busy = w.busy + 1
      w.inflight[#w.inflight + 1] = { job = job, base = base, count = size, interrupted = interrupted,
                                      deadline = job.timeout and (now() + job.timeout) or nil }
      if not w.conn:send(K.BATCH, job.id .. ":" .. base .. ":" .. bytes) then self:_worker_lost(w) break end
    end
  end
end

function Pool:_on_batch(w, map_id, base, body)
  local u = w.inflight[1]
  if not u or not u.job or u.job.id ~= map_id or u.base ~= base then
    broken("a BATCH_RESULT for map " .. map_id .. " item " .. base .. ", which it was not running")
  end
  local ok, r = decode_from_worker(body, "BATCH_RESULT", self.results_may_carry_code)
  if ok then
    if type(r) ~= "table" or r.n ~= u.count or type(r.values) ~= "table" or (r.errors ~= nil and type(r.errors) ~= "table") then
      broken("a BATCH_RESULT that is not {n = " .. u.count .. ", values = {...}, errors = {...}}")
    end
    for j = 1, u.count do
      local e = r.errors and r.errors[j]
      if e and (type(e) ~= "table" or type(e.message) ~= "string") then broken("a BATCH_RESULT error without a message") end
    end
  end
  table.remove(w.inflight, 1)
  w.busy = w.busy - 1
  self:_flush_output(w)
  local job = u.job
  job.inflight = job.inflight - 1
  local where = worker_where(w)
  for j = 1, u.count do
    local i = base + j - 1
    local e = ok and r.errors and r.errors[j]
    if not ok then
      self:_map_item(job, i, nil, compute.remote_error({ kind = "error", task = job.name, node = w.node, where = where,
        message = "its result cannot be decoded on the driver: " .. r, traceback = "" }))
    elseif e then
      self:_map_item(job, i, nil, compute.remote_error({ kind = "error", task = job.name, node = w.node, where = where,
        message = e.message, traceback = type(e.traceback) == "string" and e.traceback or "", value = e.value, item = i }))
    else
      self:_map_item(job, i, r.values[j])
    end
  end
end

--- pool:map(fn, items, {ordered = true, return_errors = false, batch = n}) -> results
--- fn: a function or a sky.compute (its timeout applies to each item). Items are spread over
--- every worker in batches. ordered = false: results in the order they finished.
--- return_errors = true: a failed item's result is its error instead of raising.
function Pool:map(fn, items, opts)
  self:_check_open("cannot map", 2)
  opts = core.check_options(opts, { ordered = "boolean", return_errors = "boolean", batch = "integer" }, "pool:map", 3)
  local c = compute.is_compute(fn) and fn or nil
  local f = c and c.fn or fn
  if type(f) ~= "function" then error("pool:map expects a function or a sky.compute (got " .. type(fn) .. ")", 2) end
  if type(items) ~= "table" then error("pool:map expects a table of items (got " .. type(items) .. ")", 2) end
  local okf, fn_bytes = pcall(encode, f, "")
  if not okf then error(fn_bytes, 2) end
  local info = debug.getinfo(f, "S")
  self.next_map = self.next_map + 1
  local job = {
    id = self.next_map, fn_bytes = fn_bytes, items = items, n = #items, next = 1, done = 0, count = 0,
    results = {}, have = {}, inflight = 0, ordered = opts.ordered ~= false, return_errors = opts.return_errors == true,
    batch = opts.batch, timeout = c and c.timeout, name = c and c.name or (info.short_src .. ":" .. info.linedefined),
    retries = c and c.retries or self.retry_on_interruption, again = {},
  }
  self.maps[job.id] = job
  local ok, err = pcall(function()
    while job.done < job.n and not (job.stop and job.inflight == 0) do
      if not self:_any_alive() then
        error("map '" .. job.name .. "': no worker is left: " .. tostring(self:_last_error()), 0)
      end
      self:_pump(-1)
    end
  end)
  self.maps[job.id] = nil
  for _, w in pairs(self.workers) do
    if w.sent_fn[job.id] and w.conn then
      w.sent_fn[job.id] = nil
      w.conn:send(K.MAP_END, tostring(job.id))
    end
  end
  if not ok then error(err, 0) end
  if job.refused then error(job.refused, 2) end
  if job.first_err and not job.return_errors then error(job.first_err, 0) end
  job.results.n = job.n
  return job.results
end

-- ---- lifecycle -----------------------------------------------------------------------------------

--- Starts the workers and waits until every one is set up. Returns the pool.
function Pool:open()
  if self.state == "open" then return self end
  if self.state == "closed" then error("pool '" .. self.name .. "' is closed; make a new ComputePool", 2) end
  self.state = "opening"
  self.startup_error = nil
  self.job_id = string.format("%s-%d-%d", self.name, pcore.getpid(), os.time())
  self.store = collections.new_store()
  collections.driver_pool = self
  local p = self.provider
  local ok, err = pcall(function()
    for _, pl in ipairs(self.plugins) do
      if pl.open then pl.open(self) end
    end
    self._image, self._bootstrap = self:_effective_image()
    if p.open then
      -- a provider of a node range says how many nodes it gave
      local given = p:open(self:_context(), self)
      if type(given) == "table" and given.nodes then self.nodes = given.nodes end
    end
    for k = 1, self.nodes * self.concurrency do
      -- the first worker that cannot start (a process limit, no memory) stops the start at once
      local w = self:_spawn(k)
      if w.state == "failed" then error("cannot start the worker of node " .. w.node .. ": " .. w.error, 0) end
    end
    local deadline = now() + self.startup_timeout
    while true do
      local waiting = false
      for _, w in pairs(self.workers) do
        if w.state == "failed" then error(w.error or self.startup_error or "worker failed", 0) end
        if w.state ~= "ready" then waiting = true end
      end
      if self.startup_error then error(self.startup_error, 0) end
      if not waiting then break end
      local left = deadline - now()
      if left <= 0 then
        local late = {}
        for _, w in pairs(self.workers) do
          if w.state ~= "ready" then late[#late + 1] = worker_where(w) .. (w.state == "starting" and " never greeted" or " never finished its setup") end
        end
        error(string.format("workers of pool '%s' were not ready after %g s (startup_timeout): %s", self.name,
          self.startup_timeout, table.concat(late, ", ")), 0)
      end
      self:_pump(math.min(left, 1))
    end
  end)
  if not ok then
    self.state = "open"  -- so close() tears down what started
    self:close()
    self.state = "new"
    error(secret.mask(tostring(err)), 2)
  end
  self.state = "open"
  return self
end

--- Stops every worker (their plugins' teardown hooks run) and releases the provider. Idempotent.
function Pool:close()
  if self.state ~= "open" then return end
  self.state = "closing"
  for _, rec in ipairs(self.queue) do
    self:_finish(rec, nil, compute.remote_error({ kind = "closed", task = rec.name, node = 0, where = "the driver",
      message = "the pool was closed before the task ran", traceback = "" }))
  end
  self.queue = {}
  for _, w in pairs(self.workers) do
    if w.conn and w.state == "ready" and w.busy == 0 then
      w.conn:send(K.SHUTDOWN, "")
    elseif w.conn then
      w.conn:kill()
    end
  end
  local deadline = now() + 5
  while now() < deadline do
    local waiting = false
    for _, w in pairs(self.workers) do
      if w.conn and not w.bye then waiting = true end
    end
    if not waiting then break end
    self:_refresh_conns()
    local ready = poll(self.conns, 0.1)
    for _, i in ipairs(ready) do
      local w = self.conn_workers[i]
      local ok = pcall(self._read, self, w)
      if not ok then w.bye = true end
    end
  end
  for _, w in pairs(self.workers) do
    self:_flush_output(w)
    self:_fail_inflight(w, function(task_name)
      return { kind = "closed", task = task_name, node = w.node, where = worker_where(w),
               message = "the pool was closed while the task ran", traceback = "" }
    end)
    if w.conn then
      w.conn:close()
      pcall(w.conn.release, w.conn)
      w.conn = nil
    end
    w.state = "dead"
  end
  self.conns_dirty = true
  self.workers = {}
  self.store = nil
  if collections.driver_pool == self then collections.driver_pool = nil end
  local errs = {}
  for _, pl in ipairs(self.plugins) do
    if pl.close then
      local ok, e = pcall(pl.close, self)
      if not ok then errs[#errs + 1] = tostring(e) end
    end
  end
  if self.provider.close then pcall(self.provider.close, self.provider, self) end
  self.state = "closed"
  if #errs > 0 then error("closing pool '" .. self.name .. "': " .. table.concat(errs, "; "), 2) end
end

--- pool:with(function(pool) ... end): opens the pool, runs the function, and closes the pool even
--- when the function raises (the error is raised again after teardown). Returns fn's results.
function Pool:with(fn)
  if type(fn) ~= "function" then error("pool:with expects a function", 2) end
  local ok, err = pcall(self.open, self)
  if not ok then error(err, 2) end
  local res = pack(xpcall(fn, function(e)
    if type(e) == "string" then return debug.traceback(e, 2) end
    return e
  end, self))
  self:close()
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end

--- Node/slot/state of each worker (for diagnostics).
function Pool:workers_info()
  local t = {}
  for k, w in pairs(self.workers) do
    t[k] = { node = w.node, slot = w.slot, rank = w.rank, state = w.state, pid = w.pid, where = w.where }
  end
  return t
end

M.Pool = Pool
return M
