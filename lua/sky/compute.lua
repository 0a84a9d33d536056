-- sky.compute: compute functions, the task values calling them makes, the error a failed task
-- raises on the driver, and sky.info(). Nothing here talks to workers (see sky.pool).
local core = require "sky.core"
local secret = require "sky.secret"

local M = {}

local Compute = {}
Compute.__index = Compute
local Task = {}
Task.__index = Task

--- sky.compute(fn, {timeout = seconds, name = "...", retry_on_interruption = n}) -> a callable;
--- calling it makes a task, which runs when a pool runs it (pool:run, broadcast, gather, submit,
--- map). retry_on_interruption overrides the pool's for this function's tasks (0: a task that
--- must not run twice fails when its worker dies instead of running again).
function M.compute(fn, opts)
  if type(fn) ~= "function" then
    error("sky.compute expects a function (got " .. type(fn) .. ")", 2)
  end
  opts = core.check_options(opts, { timeout = "seconds", name = "string", retry_on_interruption = "integer" },
    "sky.compute", 3)
  if opts.retry_on_interruption ~= nil and opts.retry_on_interruption < 0 then
    error("sky.compute: retry_on_interruption must be 0 or more (got " .. opts.retry_on_interruption .. ")", 2)
  end
  local info = debug.getinfo(fn, "S")
  local name = opts.name or (info.short_src .. ":" .. info.linedefined)
  return setmetatable({ fn = fn, name = name, timeout = opts.timeout, retries = opts.retry_on_interruption },
    Compute)
end

function Compute.__call(self, ...)
  return setmetatable({ compute = self, args = { n = select("#", ...), ... } }, Task)
end

function Compute.__tostring(self) return "Compute(" .. self.name .. ")" end
function Task.__tostring(self) return "Task(" .. self.compute.name .. ", " .. self.args.n .. " arguments)" end

function M.is_compute(v) return getmetatable(v) == Compute end
function M.is_task(v) return getmetatable(v) == Task end

-- ---- the error of a failed task ------------------------------------------------------------------

local RemoteError = {}
RemoteError.__index = RemoteError

local function render(e)
  local s = string.format("task '%s' %s on %s: %s", e.task, e.kind == "timeout" and "timed out" or "failed",
    e.where, e.message)
  if e.traceback and e.traceback ~= "" then
    s = s .. "\nremote " .. (e.traceback:gsub("^stack traceback:", "traceback (" .. e.where .. "):"))
  end
  return secret.mask(s)
end

RemoteError.__tostring = render
RemoteError.__concat = function(a, b)
  return (getmetatable(a) == RemoteError and render(a) or tostring(a)) ..
         (getmetatable(b) == RemoteError and render(b) or tostring(b))
end

--- A task's failure: fields kind ("error", "timeout", "died", "cancelled", "closed"), task (its
--- name), node (index), where ("node 2 (local pid 4242)"), message, traceback (remote), value (the
--- error object the task raised, when it was a table that could travel).
function M.remote_error(fields) return setmetatable(fields, RemoteError) end
function M.is_remote_error(v) return getmetatable(v) == RemoteError end

-- ---- sky.info() -------------------------------------------------------------------------------------

local function accelerator_seen()
  local f = io.open("/dev/nvidiactl", "rb")
  if f then f:close() return "cuda" end
  return "cpu"
end

-- The NVIDIA GPUs this process may use: CUDA_VISIBLE_DEVICES's entries when it is set, else the
-- machine's device files /dev/nvidia0, /dev/nvidia1, ...
local function gpus_seen()
  local visible = os.getenv("CUDA_VISIBLE_DEVICES")
  if visible then
    local n = 0
    for entry in visible:gmatch("[^,]+") do
      if entry:match("^%s*%-") then break end  -- CUDA stops at the first invalid (negative) index
      n = n + 1
    end
    return n
  end
  local n = 0
  for _, name in ipairs(require("sky.fs").listdir("/dev") or {}) do
    if name:match("^nvidia%d+$") then n = n + 1 end
  end
  return n
end

--- Inside a task: {node, nodes, slot, rank, world_size, local_rank, is_head, concurrency, job_id,
--- peers = {{node, address}, ...}, head_address, address, accelerator, gpus (the GPUs this worker
--- may use), pool, pid, restarts (the gang restarts of the pool so far: 0 in the first gang)}.
--- node and slot count from 1 as Lua does (Skyward's node and worker count from 0); rank and
--- local_rank count from 0 as torch's. On the driver: node 0 and role "driver".
function M.info()
  local w = package.loaded["sky.worker"]
  local src = w and w.info
  local t = {}
  if src then
    for k, v in pairs(src) do t[k] = v end
    t.role = "worker"
    t.gpus = gpus_seen()
    return t
  end
  return { node = 0, nodes = 0, rank = 0, world_size = 1, local_rank = 0, slot = 0, head_address = "127.0.0.1",
           is_head = false, peers = {}, restarts = 0,
           accelerator = accelerator_seen(), gpus = gpus_seen(), role = "driver", pid = require("sky.pool.core").getpid() }
end

M.accelerator_seen = accelerator_seen
M.gpus_seen = gpus_seen

return M
