-- sky.cloud.machines: the life cycle every cloud provider shares. A cloud "driver" (aws, runpod,
-- lambda, vastai) knows its API; this module turns it into a pool provider:
--   offers -> plan (printed before anything is created; refused above max_hourly_cost) -> create
--   (a capacity error moves on to the next offer) -> wait until each machine answers on SSH (one
--   that never does is terminated and replaced) -> the SSH provider's path (binary upload, image
--   bootstrap, `skyrun ssh-worker`) -> tasks -> terminate on close, on Ctrl-C and on errors.
-- A node whose machine is gone (a reclaimed spot instance) is replaced when the pool asks for a
-- new worker there. Everything is recorded with sky.cloud.state for `skyrun instances`/`down`.
--
-- A driver is a table with:
--   name, config() -> the non-secret fields saved in the state record, describe() -> text (no secrets)
--   offers(spec) -> { {type, gpu_name, gpus, gpu_memory_gb, vcpus, memory_gb, price (USD/h per
--                     node), spot (bool), where (zone or region), ...driver fields}, ... }
--   prepare(ctx)   once before the first create: ctx = {pool_id, public_key, spec} (key pairs,
--                  firewall rules)
--   create(offer, count, min_count, ctx) -> { ids } ; raises an error table {capacity = true}
--                  (try the next offer) or {quota = true} (an account limit), or anything else
--   status(ids) -> { [id] = {state = "pending"|"running"|"terminated"|"stopped"|..., address,
--                  private_address, port, reason} } (ids it does not know: absent)
--   terminate(ids)
--   list(pool_id) -> { {id, state, type, address, launched, price}, ... } (for `skyrun instances`)
--   after_ssh(session, id, ctx)  optional: a step over SSH once the machine answers
--   nodes_reach_each_other  true when the machines of a pool can open any port on each other
--                  (what a process group needs)
--   ssh_user, ssh_port
local core = require "sky.core"
local pcore = require "sky.pool.core"
local monotonic = require("sky.core").monotonic
local ssh = require "sky.ssh.core"
local secret = require "sky.secret"
local state = require "sky.cloud.state"
local cloud = require "sky.cloud.core"
local fs = require "sky.fs"

local M = {}

-- pcall that lets Ctrl-C through: an "interrupted!" raised inside f goes on up (the pool then
-- terminates what was created), any other error is returned as pcall does.
local function try(f, ...)
  local res = { pcall(f, ...) }
  if not res[1] and tostring(res[2]):find("interrupted!", 1, true) then error(res[2], 0) end
  return unpack(res)
end

local Machines = {}
Machines.__index = Machines

M.spec_fields = { "nodes", "vcpus", "memory_gb", "disk_gb", "region", "allocation", "ttl", "max_hourly_cost" }

--- Options every cloud provider takes (merged into its own option schema).
M.options = {
  key = "string", ssh_user = "string", connect_timeout = "number", ssh_timeout = "number",
  provision_timeout = "number", poll_interval = "number", max_attempts = "integer", workdir = "string",
  install_libraries = "boolean", quiet = "boolean",
}

--- A provider over driver. opts: the provider's options (see M.options).
function M.new(driver, module_name, opts)
  for _, k in ipairs({ "connect_timeout", "ssh_timeout", "provision_timeout", "poll_interval" }) do
    if opts[k] ~= nil and opts[k] <= 0 then error("sky.providers." .. driver.name .. ": option '" .. k .. "' must be positive", 3) end
  end
  return setmetatable({
    name = driver.name, driver = driver, module = module_name, spec_fields = M.spec_fields,
    key = opts.key, ssh_user = opts.ssh_user or driver.ssh_user or "root",
    connect_timeout = opts.connect_timeout or 10, ssh_timeout = opts.ssh_timeout or 600,
    provision_timeout = opts.provision_timeout or 900, poll_interval = opts.poll_interval or 2,
    max_attempts = opts.max_attempts or 3, workdir = opts.workdir, install_libraries = opts.install_libraries == true,
    quiet = opts.quiet == true, nodes = {},
  }, Machines)
end

function Machines:__tostring() return "sky.providers." .. self.driver:describe() end

function Machines:say(fmt, ...)
  if self.quiet then return end
  io.stdout:write(secret.mask("[" .. self.name .. " " .. tostring(self.pool_id) .. "] " .. string.format(fmt, ...)), "\n")
  io.stdout:flush()
end

-- ---- the key the machines accept ---------------------------------------------------------------------

--- The ed25519 key skyrun logs in with: key= (a private key file), else ~/.ssh/skyrun_ed25519,
--- made on first use. Returns private path, public line.
function M.ensure_key(path)
  if not path then
    local home = os.getenv("HOME") or "."
    fs.makedirs(home .. "/.ssh", "700")
    path = home .. "/.ssh/skyrun_ed25519"
  end
  return path, cloud.ssh_keygen(path, "skyrun")
end

-- ---- offers and the plan -----------------------------------------------------------------------------

local function money(x) return string.format("$%.2f", x) end

--- Describes an offer: "p4d.24xlarge (8x A100 40GB, 96 vCPUs, 1152 GB) spot in us-east-1a".
function M.describe_offer(o)
  local parts = {}
  if o.gpus and o.gpus > 0 then
    parts[#parts + 1] = o.gpus .. "x " .. o.gpu_name .. (o.gpu_memory_gb and (" " .. math.floor(o.gpu_memory_gb + 0.5) .. "GB") or "")
  end
  if o.vcpus then parts[#parts + 1] = o.vcpus .. " vCPUs" end
  if o.memory_gb then parts[#parts + 1] = math.floor(o.memory_gb + 0.5) .. " GB" end
  return string.format("%s (%s) %s%s", o.type, table.concat(parts, ", "), o.spot and "spot" or "on-demand",
    o.where and (" in " .. o.where) or "")
end

--- The offers that fit spec, cheapest first (spot-if-available: spot ones first), each with
--- .nodes (how many of it the plan takes). Raises a plain message when none fits; "refused"
--- when the cheapest fit is above max_hourly_cost (before anything is created).
function M.choose(offers, spec, provider_name)
  local acc = spec.accelerator
  local fit, why = {}, {}
  for _, o in ipairs(offers) do
    local ok = true
    if acc and (not o.gpus or o.gpus < acc.count) then ok = false end
    if acc and acc.memory_gb and o.gpu_memory_gb and math.abs(o.gpu_memory_gb - acc.memory_gb) > 2 then ok = false end
    if not acc and o.gpus and o.gpus > 0 and not o.cpu_ok then ok = false end
    if spec.vcpus and (o.vcpus or 0) < spec.vcpus then ok = false end
    if spec.memory_gb and (o.memory_gb or 0) < spec.memory_gb * 0.97 then ok = false end
    if spec.allocation == "spot" and not o.spot then ok = false end
    if spec.allocation == "on-demand" and o.spot then ok = false end
    if not o.price then ok = false end
    if ok then fit[#fit + 1] = o else why[#why + 1] = o end
  end
  if #fit == 0 then
    local seen = {}
    for i = 1, math.min(#why, 5) do seen[#seen + 1] = M.describe_offer(why[i]) end
    error("no " .. provider_name .. " offer fits " .. require("sky.spec").describe(spec) ..
      (#seen > 0 and ("; nearest: " .. table.concat(seen, "; ")) or ""), 0)
  end
  local exact = function(o) return acc and o.gpus == acc.count and 0 or 1 end
  table.sort(fit, function(a, b)
    if spec.allocation == "spot-if-available" and a.spot ~= b.spot then return a.spot end
    if a.price ~= b.price then return a.price < b.price end
    if exact(a) ~= exact(b) then return exact(a) < exact(b) end
    return tostring(a.type) .. " " .. tostring(a.where) < tostring(b.type) .. " " .. tostring(b.where)  -- stable plans
  end)
  local n = spec.nodes
  local cap = spec.max_hourly_cost
  local out = {}
  for _, o in ipairs(fit) do
    local nodes = n.max
    if cap then nodes = math.min(n.max, math.floor(cap / o.price + 1e-9)) end
    if nodes >= n.min then
      o.nodes = nodes
      out[#out + 1] = o
    end
  end
  if #out == 0 then
    local o = fit[1]
    for _, x in ipairs(fit) do if x.price < o.price then o = x end end
    error(string.format("refused: the cheapest plan, %d x %s at %s/h each (%s/h), is above max_hourly_cost = %s/h; " ..
      "nothing was created", n.min, M.describe_offer(o), money(o.price), money(o.price * n.min), money(cap)), 0)
  end
  return out
end

-- ---- creating machines ----------------------------------------------------------------------------------

-- Creates count machines (at least min_count) from the candidates, from `first` on: a capacity
-- error moves to the next one. Returns the offer used and the new ids.
function Machines:_create(candidates, first, count, min_count)
  local reasons = {}
  for i = first, #candidates do
    local o = candidates[i]
    local c = math.min(count, o.nodes)
    if c >= min_count then
      local ok, ids = try(self.driver.create, self.driver, o, c, min_count, self.create_ctx)
      if ok then
        state.add_instances(self.pool_id, ids)
        return o, ids, i
      end
      local e = ids
      if type(e) == "table" and (e.capacity or e.quota) then
        reasons[#reasons + 1] = M.describe_offer(o) .. ": " .. tostring(e.message or e)
        self:say("%s %s; %s", e.quota and "account limit for" or "no capacity for", M.describe_offer(o),
          i < #candidates and "trying the next offer" or "no offer left")
      else
        error(e, 0)
      end
    end
  end
  error("could not create " .. count .. " machine" .. (count == 1 and "" or "s") .. " on " .. self.name .. ":\n  " ..
    table.concat(reasons, "\n  "), 0)
end

-- Tries an SSH login; true when the machine answers.
function Machines:_probe(m)
  local ok, s = try(ssh.connect, { target = self.ssh_user .. "@" .. m.address .. ":" .. (m.port or 22), key = self.key_path,
    known_hosts = self.known_hosts, host_key_policy = "accept-new", connect_timeout = math.min(self.connect_timeout, 5),
    config = "none" })
  if not ok then
    m.last_ssh_error = tostring(s)
    return false
  end
  if self.driver.after_ssh then self.driver:after_ssh(s, m.id, self.create_ctx) end
  s:close()
  return true
end

-- Waits until every machine of `machines` (list of {id, offer, node}) runs and answers on SSH. A
-- machine that ends, or does not answer within ssh_timeout, is terminated and replaced (up to
-- max_attempts per node). Returns when all are ready; raises otherwise.
function Machines:_wait_ready(machines)
  local pending, polls = {}, 0
  for _, m in ipairs(machines) do
    m.started = monotonic()
    m.attempts = m.attempts or 1
    pending[#pending + 1] = m
  end
  while #pending > 0 do
    local ids = {}
    for i, m in ipairs(pending) do ids[i] = m.id end
    local desc = self.driver:status(ids)
    local still = {}
    for _, m in ipairs(pending) do
      local d = desc[m.id]
      local t = monotonic() - m.started
      local failed
      if d and d.state == "running" and d.address then
        m.address, m.private_address, m.port = d.address, d.private_address or d.address, d.port
        if self:_probe(m) then
          m.ready = true
          self:say("%s answers on SSH at %s (node %d)", m.id, m.address, m.node)
        elseif t > self.ssh_timeout then
          failed = "it did not answer on SSH within " .. self.ssh_timeout .. " s (" .. tostring(m.last_ssh_error) .. ")"
        end
      elseif d and d.state ~= "pending" and d.state ~= "running" then
        failed = "it is " .. d.state .. (d.reason and (" (" .. d.reason .. ")") or "")
      elseif t > self.provision_timeout then
        failed = "it was not running after " .. self.provision_timeout .. " s"
      end
      if failed then
        self:say("%s (node %d) is replaced: %s", m.id, m.node, failed)
        if try(self.driver.terminate, self.driver, { m.id }) then self.gone[m.id] = true end
        if m.attempts >= self.max_attempts then
          error(string.format("node %d: %d machine%s failed; the last: %s", m.node, m.attempts,
            m.attempts == 1 and "" or "s", failed), 0)
        end
        local o, new = self:_create(self.candidates, m.offer_index, 1, 1)
        local r = { id = new[1], offer = o, offer_index = m.offer_index, node = m.node, attempts = m.attempts + 1,
                    started = monotonic() }
        self.all_ids[#self.all_ids + 1] = r.id
        self.nodes[m.node] = r
        still[#still + 1] = r
      elseif not m.ready then
        still[#still + 1] = m
      end
    end
    pending = still
    -- machines boot in seconds to minutes: ask often at first, then every poll_interval
    polls = polls + 1
    if #pending > 0 then pcore.sleep(math.min(self.poll_interval, 0.25 * 2 ^ (polls - 1))) end
  end
end

-- ---- the provider --------------------------------------------------------------------------------------

function Machines:open(ctx, pool)
  self.pool_id = ctx.pool_id
  self.ctx = ctx
  local spec = ctx.spec
  if not self.driver.nodes_reach_each_other and spec.nodes.max > 1 then
    for _, p in ipairs(pool and pool.plugins or {}) do
      if p.name == "torch" then
        error("not supported yet: a process group across " .. self.name .. " machines (the torch plugin with nodes > 1): " ..
          "they expose only their SSH port to each other", 0)
      end
    end
  end
  self.all_ids, self.gone = {}, {}
  self.key_path, self.public_key = M.ensure_key(self.key)
  local offers = self.driver:offers(spec)
  self.candidates = M.choose(offers, spec, self.name)
  local plan = self.candidates[1]
  local n = plan.nodes
  self:say("plan: %d x %s at %s/h each = %s/h; ttl %s%s", n, M.describe_offer(plan), money(plan.price),
    money(plan.price * n), spec.ttl > 0 and (spec.ttl .. " s (machines end themselves then)") or "none",
    spec.max_hourly_cost and ("; max_hourly_cost " .. money(spec.max_hourly_cost) .. "/h") or "")
  state.record { pool_id = self.pool_id, pool = ctx.pool, provider = self.name, module = self.module,
                 config = self.driver:config() }
  self.recorded = true
  self.known_hosts = state.known_hosts(self.pool_id)
  self.create_ctx = { pool_id = self.pool_id, pool = ctx.pool, public_key = self.public_key, spec = spec,
                      ttl = spec.ttl, disk_gb = spec.disk_gb }
  self.driver:prepare(self.create_ctx)
  local o, ids, index = self:_create(self.candidates, 1, n, spec.nodes.min)
  if #ids < n then self:say("got %d of %d nodes (nodes.min = %d)", #ids, n, spec.nodes.min) end
  self:say("created %s", table.concat(ids, ", "))
  local machines = {}
  for i, id in ipairs(ids) do
    machines[i] = { id = id, offer = o, offer_index = index, node = i }
    self.nodes[i] = machines[i]
    self.all_ids[#self.all_ids + 1] = id
  end
  self:_wait_ready(machines)
  local hosts = {}
  for i = 1, #ids do hosts[i] = self.ssh_user .. "@" .. self.nodes[i].address .. ":" .. (self.nodes[i].port or 22) end
  self.ssh = require("sky.providers.ssh") {
    hosts = hosts, key = self.key_path, known_hosts = self.known_hosts, host_key_policy = "accept-new",
    ssh_config = "none", sudo = true, connect_timeout = self.connect_timeout, workdir = self.workdir,
    install_libraries = self.install_libraries, quiet = self.quiet,
  }
  local sctx = {}
  for k, v in pairs(ctx) do sctx[k] = v end
  sctx.nodes, sctx.spec = #ids, nil
  self.ssh:open(sctx, pool)
  return { nodes = #ids }
end

--- A worker on node's machine; a machine that is gone (reclaimed, ended) is replaced first.
function Machines:spawn(node, slot, ctx)
  if not self.ssh then error(self.name .. ": node " .. node .. " was not opened", 0) end
  local s = self.ssh.sessions[node]
  if s and s.connected then return self.ssh:spawn(node, slot, ctx) end
  local m = self.nodes[node]
  local d = self.driver:status({ m.id })[m.id]
  local why = d and (d.state .. (d.reason and (" (" .. d.reason .. ")") or "")) or "gone"
  if d and d.state == "running" and d.address then
    -- the connection broke but the machine runs: log in again; one that does not answer (a
    -- reclaimed machine the API still shows running) is replaced like a gone one
    local ok, err = try(self.ssh.replace_host, self.ssh, node, self.ssh.hosts[node])
    if ok then return self.ssh:spawn(node, slot, ctx) end
    why = "running but does not answer on SSH (" .. tostring(err) .. ")"
  end
  self:say("node %d: %s is %s; replacing it", node, m.id, why)
  if try(self.driver.terminate, self.driver, { m.id }) then self.gone[m.id] = true end
  local o, ids = self:_create(self.candidates, m.offer_index, 1, 1)
  local r = { id = ids[1], offer = o, offer_index = m.offer_index, node = node }
  self.nodes[node] = r
  self.all_ids[#self.all_ids + 1] = r.id
  self:_wait_ready({ r })
  r = self.nodes[node]
  self.ssh:replace_host(node, self.ssh_user .. "@" .. r.address .. ":" .. (r.port or 22))
  return self.ssh:spawn(node, slot, ctx)
end

function Machines:head_address() return self:node_address(1) end

-- A machine has the GPUs the pool asked for ("H100:8"): a rank on each.
function Machines:ranks_per_node(spec) return require("sky.providers").gpus_per_node(nil, spec) end

function Machines:node_address(i)
  local m = self.nodes[i]
  return m and (m.private_address or m.address) or nil
end

--- Ends every machine this pool created (also after a failed open, on Ctrl-C and on errors).
function Machines:close()
  if self.ssh then pcall(self.ssh.close, self.ssh) end
  local ids = {}
  for _, id in ipairs(self.all_ids or {}) do
    if not (self.gone or {})[id] then ids[#ids + 1] = id end  -- not those already ended and replaced
  end
  if self.recorded then
    -- also what carries the pool's tag but was never handed back (a create cut short by Ctrl-C)
    local seen = {}
    for _, id in ipairs(self.all_ids or {}) do seen[id] = true end
    local ok, list = pcall(self.driver.list, self.driver, self.pool_id)
    for _, i in ipairs(ok and list or {}) do
      if not seen[i.id] and i.state ~= "terminated" then ids[#ids + 1] = i.id end
    end
  end
  if #ids == 0 then return end
  local ok, err = pcall(self.driver.terminate, self.driver, ids)
  if not ok then
    -- one more try: a Ctrl-C or a network blip must not leave machines running
    ok, err = pcall(self.driver.terminate, self.driver, ids)
  end
  if ok then
    self:say("terminated %s", table.concat(ids, ", "))
    pcall(state.closed, self.pool_id)
  else
    io.stderr:write(secret.mask(string.format("[%s %s] could not terminate %s: %s\n  run: skyrun down %s\n", self.name,
      self.pool_id, table.concat(ids, ", "), tostring(err), self.pool_id)))
  end
  self.all_ids = {}
end

M.Machines = Machines
return M
