-- sky.shard: this node's part of a list or a dataset, as Skyward's shard(). The permutation of
-- shuffle = true depends only on the seed, so every node cuts the same order.
local core = require "sky.core"

local OPTIONS = { shuffle = "boolean", seed = "integer", drop_last = "boolean", node = "integer", nodes = "integer" }

-- A permutation of 1..n from the seed (Fisher-Yates over Park-Miller's minimal standard
-- generator, exact in doubles), the same on every machine.
local function permutation(n, seed)
  local p = {}
  for i = 1, n do p[i] = i end
  local state = seed % 2147483647
  if state <= 0 then state = state + 2147483646 end
  for i = n, 2, -1 do
    state = (state * 48271) % 2147483647
    local j = state % i + 1
    p[i], p[j] = p[j], p[i]
  end
  return p
end

-- The 1-based positions of node's part: every nodes-th item from node on, or with drop_last an
-- equal contiguous block per node (the tail that does not divide evenly is dropped).
local function positions(n, node, nodes, o)
  local order = o.shuffle and permutation(n, o.seed or 0) or nil
  local out = {}
  if o.drop_last then
    local per = math.floor(n / nodes)
    for k = (node - 1) * per + 1, node * per do out[#out + 1] = order and order[k] or k end
  else
    for k = node, n, nodes do out[#out + 1] = order and order[k] or k end
  end
  return out
end

local function is_dataset(v)
  local core_ = package.loaded["datasets.core"]
  return core_ ~= nil and core_.is_dataset(v)
end

local function cut(data, idx, argn)
  if is_dataset(data) then return data:select(idx) end
  if type(data) ~= "table" then
    error(string.format("sky.shard: argument #%d must be a list or a datasets.Dataset (got %s)", argn, type(data)), 3)
  end
  local out = {}
  for k, i in ipairs(idx) do out[k] = data[i] end
  return out
end

local function length(data)
  if is_dataset(data) then return #data end
  if type(data) == "table" then return data.n or #data end
  return 0
end

--- sky.shard(data [, data2, ...] [, {shuffle=, seed=, drop_last=, node=, nodes=}]) -> this node's
--- part of each (a list, or a Dataset through ds:select). Inside a task node and nodes come from
--- sky.info() (node counts from 1); on the driver, or to test, pass them. Default: items node,
--- node + nodes, ... (Skyward's data[node::total_nodes]); drop_last: equal contiguous blocks.
--- A last argument that is a plain table without list items is read as the options.
return function(...)
  local n = select("#", ...)
  if n == 0 then error("sky.shard expects a list or a dataset", 2) end
  local args = { ... }
  local o = {}
  local last = args[n]
  if n > 1 and type(last) == "table" and getmetatable(last) == nil and last[1] == nil then
    o = core.check_options(last, OPTIONS, "sky.shard", 3)
    n = n - 1
  end
  local info = require("sky.compute").info()
  local node = o.node or (info.node > 0 and info.node or nil)
  local nodes = o.nodes or (info.nodes > 0 and info.nodes or nil)
  if not node or not nodes then
    error("sky.shard: outside a task, pass {node = i, nodes = n} (node counts from 1)", 2)
  end
  if nodes < 1 or node < 1 or node > nodes then
    error(string.format("sky.shard: node must be 1 to nodes (got node %d of %d)", node, nodes), 2)
  end
  local out = {}
  for a = 1, n do out[a] = cut(args[a], positions(length(args[a]), node, nodes, o), a) end
  return unpack(out, 1, n)
end
