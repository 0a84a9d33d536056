-- sky.cloud.state: what skyrun created, per pool, so that `skyrun instances` and `skyrun down` find
-- it after the driver is gone. One JSON file per pool under $XDG_STATE_HOME/skyrun/pools/ (default
-- ~/.local/state/skyrun/pools/), written atomically; no secret is ever stored (a provider's record
-- holds its region, profile name and endpoint, never keys).
--   record = { pool_id, pool (name), provider ("aws"), module ("sky.providers.aws": it has
--              list(record) and terminate(record, ids)), config = {...}, created, instances = {ids},
--              closed (time, once the pool closed) }
local fs = require "sky.fs"
local json = require "transformers.train_core"

local M = {}

function M.dir()
  local base = os.getenv("XDG_STATE_HOME")
  if not base or base == "" then base = (os.getenv("HOME") or ".") .. "/.local/state" end
  return base .. "/skyrun/pools"
end

local function path_of(pool_id)
  if not tostring(pool_id):match("^[%w%-_]+$") then error("not a pool id: " .. tostring(pool_id), 3) end
  return M.dir() .. "/" .. pool_id .. ".json"
end

local function write(rec)
  fs.makedirs(M.dir(), "700")
  fs.write_atomic(path_of(rec.pool_id), json.json_encode(rec, 1), "600")
end

M.KEEP_CLOSED = 7 * 24 * 3600  -- a closed pool's record is dropped after a week

--- Saves a new record (fields as above; instances defaults to {}). Records of pools closed more
--- than KEEP_CLOSED ago go.
function M.record(rec)
  rec.instances = rec.instances or {}
  rec.created = rec.created or os.time()
  write(rec)
  for _, old in ipairs(M.all()) do
    if old.closed and os.time() - old.closed > M.KEEP_CLOSED then M.forget(old.pool_id) end
  end
  return rec
end

--- The record of a pool, or nil.
function M.load(pool_id)
  local text = fs.read(path_of(pool_id))
  if not text then return nil end
  local ok, rec = pcall(json.json_decode, text, path_of(pool_id))
  if not ok or type(rec) ~= "table" then return nil end
  rec.instances = rec.instances or {}
  return rec
end

--- Adds instance ids to a pool's record.
function M.add_instances(pool_id, ids)
  local rec = M.load(pool_id)
  if not rec then return end
  local seen = {}
  for _, id in ipairs(rec.instances) do seen[id] = true end
  for _, id in ipairs(ids) do
    if not seen[id] then rec.instances[#rec.instances + 1] = id end
  end
  write(rec)
end

--- Marks a pool closed (its instances were asked to terminate).
function M.closed(pool_id)
  local rec = M.load(pool_id)
  if not rec then return end
  rec.closed = os.time()
  write(rec)
end

--- Where the host keys of a pool's machines are kept (a known_hosts file).
function M.known_hosts(pool_id) return M.dir() .. "/" .. pool_id .. ".known_hosts" end

--- Forgets a pool (nothing of it is left): its record and the host keys of its machines.
function M.forget(pool_id)
  os.remove(path_of(pool_id))
  os.remove(M.known_hosts(pool_id))
end

--- Every record, oldest first.
function M.all()
  local names = fs.listdir(M.dir()) or {}
  local out = {}
  for _, n in ipairs(names) do
    local id = n:match("^(.+)%.json$")
    if id then
      local rec = M.load(id)
      if rec then out[#out + 1] = rec end
    end
  end
  table.sort(out, function(a, b) return (a.created or 0) < (b.created or 0) end)
  return out
end

return M
