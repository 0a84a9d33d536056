-- sky.cloud.cli: `skyrun instances` (the machines skyrun started that are still there, asked of each
-- cloud by the pool's tag) and `skyrun down [POOL_ID|INSTANCE_ID ...]` (terminates them; with no
-- argument, all). Pools come from sky.cloud.state's records; a record whose machines are all gone
-- after its pool closed is forgotten.
local state = require "sky.cloud.state"
local secret = require "sky.secret"

local M = {}

local function out(...) io.stdout:write(secret.mask(table.concat({ ... })), "\n") end
local function err(...) io.stderr:write(secret.mask(table.concat({ ... })), "\n") end

-- The live instances of a record, or nil and an error message.
local function live(rec)
  local ok, mod = pcall(require, rec.module or ("sky.providers." .. tostring(rec.provider)))
  if not ok then return nil, tostring(mod) end
  local okl, list = pcall(mod.list, rec)
  if not okl then return nil, tostring(list) end
  return list, nil, mod
end

local function stamp(t)
  if type(t) == "number" then return os.date("!%Y-%m-%dT%H:%M:%SZ", t) end
  return tostring(t or "-")
end

local function table_out(rows)
  local widths = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do widths[i] = math.max(widths[i] or 0, #tostring(c)) end
  end
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(r) do cells[i] = i < #r and (tostring(c) .. string.rep(" ", widths[i] - #tostring(c))) or tostring(c) end
    out(table.concat(cells, "  "))
  end
end

function M.instances(args)
  local rows = { { "POOL", "PROVIDER", "INSTANCE", "TYPE", "STATE", "ADDRESS", "LAUNCHED" } }
  local failures = 0
  for _, rec in ipairs(state.all()) do
    local list, e = live(rec)
    if not list then
      failures = failures + 1
      err("skyrun instances: pool ", rec.pool_id, " (", tostring(rec.provider), "): ", e)
    else
      for _, i in ipairs(list) do
        rows[#rows + 1] = { rec.pool_id, rec.provider, i.id, i.type or "-", i.state or "-", i.address or "-", stamp(i.launched) }
      end
      if #list == 0 and rec.closed then state.forget(rec.pool_id) end
    end
  end
  if #rows == 1 then
    out("no machine that skyrun started is running (records in ", state.dir(), ")")
  else
    table_out(rows)
  end
  return failures > 0 and 1 or 0
end

function M.down(args)
  local records = state.all()
  local want_pool, want_instance = {}, {}
  for _, a in ipairs(args) do
    local found = false
    for _, rec in ipairs(records) do
      if rec.pool_id == a then want_pool[a], found = true, true end
      for _, id in ipairs(rec.instances or {}) do
        if id == a then want_instance[a], found = true, true end
      end
    end
    if not found then
      err("skyrun down: no pool or instance '", a, "' in ", state.dir(), " (skyrun instances lists them)")
      return 1
    end
  end
  local everything = #args == 0
  local status, ended = 0, 0
  for _, rec in ipairs(records) do
    local list, e, mod = live(rec)
    if not list then
      status = 1
      err("skyrun down: pool ", rec.pool_id, " (", tostring(rec.provider), "): ", e)
    else
      local ids = {}
      for _, i in ipairs(list) do
        if everything or want_pool[rec.pool_id] or want_instance[i.id] then ids[#ids + 1] = i.id end
      end
      if #ids > 0 then
        local ok, te = pcall(mod.terminate, rec, ids)
        if ok then
          ended = ended + #ids
          out("terminated ", table.concat(ids, ", "), " (pool ", rec.pool_id, ", ", tostring(rec.provider), ")")
          if #ids == #list then state.forget(rec.pool_id) end
        else
          status = 1
          err("skyrun down: pool ", rec.pool_id, ": ", tostring(te))
        end
      elseif #list == 0 and (everything or want_pool[rec.pool_id]) then
        state.forget(rec.pool_id)
      end
    end
  end
  if ended == 0 and status == 0 then out("nothing to terminate") end
  return status
end

local usage = {
  instances = "usage: skyrun instances\n  lists the cloud machines skyrun started that are still there",
  down = "usage: skyrun down [POOL_ID|INSTANCE_ID ...]\n  terminates them (every one skyrun started when none is named)",
}

function M.main(command, ...)
  local args = { ... }
  for _, a in ipairs(args) do
    if a == "-h" or a == "--help" then
      out(usage[command])
      return 0
    elseif a:sub(1, 1) == "-" then
      err("skyrun ", command, ": unknown option ", a, "\n", usage[command])
      return 2
    end
  end
  if command == "instances" then
    if #args > 0 then
      err(usage.instances)
      return 2
    end
    return M.instances(args)
  end
  return M.down(args)
end

return M
