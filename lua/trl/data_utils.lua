-- trl.data_utils: TRL's dataset helpers with its exact rules: which rows are conversational,
-- from/value to role/content, and packing (best-fit decreasing with seq_lengths, its split
-- variant, and wrapped). Rows are Lua tables; list columns are Lua arrays.

local M = {}

local CONVERSATIONAL_KEYS = { "prompt", "chosen", "rejected", "completion", "messages" }

local function is_message(m)
  if type(m) == "table" then return m.role ~= nil end
  if type(m) == "userdata" then return m:kind() == "dict" and m:get("role") ~= nil end
  return false
end

local function first_item(v)
  if type(v) == "table" then return v[1] end
  if type(v) == "userdata" and (v:kind() == "list") then return v:get(1) end
  return nil
end

--- TRL's is_conversational: the first supported key holds a list whose first item has a role.
function M.is_conversational(example)
  for _, key in ipairs(CONVERSATIONAL_KEYS) do
    local v = example[key]
    if v ~= nil then return is_message(first_item(v)) end
  end
  return false
end

--- TRL's is_conversational_from_value: a "conversations" list of {from=, value=} messages.
function M.is_conversational_from_value(example)
  local msgs = example.conversations
  local m = type(msgs) == "table" and msgs[1]
  return type(m) == "table" and m.from ~= nil and m.value ~= nil
end

--- TRL's maybe_convert_to_chatml: from/value become role/content; conversations becomes messages.
function M.maybe_convert_to_chatml(example)
  for _, key in ipairs { "prompt", "completion", "chosen", "rejected", "messages", "conversations" } do
    local msgs = example[key]
    if type(msgs) == "table" then
      for _, m in ipairs(msgs) do
        if type(m) == "table" then
          if m.from ~= nil then m.role, m.from = m.from, nil end
          if m.value ~= nil then m.content, m.value = m.value, nil end
        end
      end
    end
  end
  if example.conversations ~= nil then example.messages, example.conversations = example.conversations, nil end
  return example
end

-- ---- packing -----------------------------------------------------------------------------------------

-- A max segment tree over the free spaces 1..L: search(n) gives the smallest free space >= n
-- (L, a fresh bin, is always free), as TRL's _SegmentTree.
local function segment_tree(L)
  local size = 1
  while size < L do size = size * 2 end
  local tree = {}
  for i = 1, 2 * size do tree[i] = 0 end
  local function set(val, x)
    local i = size + val - 1
    tree[i] = x
    while i > 1 do
      i = math.floor(i / 2)
      local l, r = tree[2 * i], tree[2 * i + 1]
      tree[i] = l >= r and l or r
    end
  end
  return {
    add = function(val) set(val, val) end,
    remove = function(val) set(val, 0) end,
    search = function(val)
      local i = 1
      while i < size do
        if tree[2 * i] >= val then i = 2 * i else i = 2 * i + 1 end
      end
      return tree[i]
    end,
  }
end

local function list_columns(row)
  local cols = {}
  for k, v in pairs(row) do
    if type(v) == "table" then cols[#cols + 1] = k end
  end
  table.sort(cols)
  return cols
end

local function slice(list, first, last)
  local out = {}
  for i = first, last do out[#out + 1] = list[i] end
  return out
end

-- One batch of rows packed best-fit-decreasing into bins of seq_length; overflow is cut off
-- ("truncate") or split into pieces of seq_length that are packed too ("split").
local function pack_bfd(rows, L, overflow)
  local cols = #rows > 0 and list_columns(rows[1]) or {}
  local seqs = {}
  for _, r in ipairs(rows) do
    local n = #r.input_ids
    if n > 0 then
      if overflow == "truncate" then
        local s = {}
        for _, c in ipairs(cols) do s[c] = slice(r[c], 1, math.min(n, L)) end
        seqs[#seqs + 1] = s
      else
        for start = 1, n, L do
          local s = {}
          for _, c in ipairs(cols) do s[c] = slice(r[c], start, math.min(n, start + L - 1)) end
          seqs[#seqs + 1] = s
        end
      end
    end
  end
  -- longest first; equal lengths keep their order (a stable sort, as Arrow's)
  local order = {}
  for i = 1, #seqs do order[i] = i end
  table.sort(order, function(a, b)
    local la, lb = #seqs[a].input_ids, #seqs[b].input_ids
    if la ~= lb then return la > lb end
    return a < b
  end)
  local tree = segment_tree(L)
  tree.add(L)
  local by_space = {}  -- free space -> FIFO of bins with that much room
  local bins = {}
  for _, idx in ipairs(order) do
    local len = #seqs[idx].input_ids
    local space = tree.search(len)
    local bin
    if space < L then
      local q = by_space[space]
      bin = table.remove(q, 1)
      if #q == 0 then tree.remove(space) end
    else
      bin = { ids = {}, length = 0 }
      bins[#bins + 1] = bin
    end
    bin.ids[#bin.ids + 1] = idx
    bin.length = bin.length + len
    space = space - len
    by_space[space] = by_space[space] or {}
    table.insert(by_space[space], bin)
    if space > 0 then tree.add(space) end
  end
  local out = {}
  for b, bin in ipairs(bins) do
    local row = { seq_lengths = {} }
    for _, c in ipairs(cols) do row[c] = {} end
    for _, idx in ipairs(bin.ids) do
      local s = seqs[idx]
      for _, c in ipairs(cols) do
        local dst, src = row[c], s[c]
        for i = 1, #src do dst[#dst + 1] = src[i] end
      end
      row.seq_lengths[#row.seq_lengths + 1] = #s.input_ids
    end
    out[b] = row
  end
  return out
end

-- One batch of rows concatenated and cut every seq_length tokens (TRL's "wrapped").
local function pack_wrapped(rows, L)
  local cols = #rows > 0 and list_columns(rows[1]) or {}
  local flat = {}
  for _, c in ipairs(cols) do flat[c] = {} end
  for _, r in ipairs(rows) do
    for _, c in ipairs(cols) do
      local dst = flat[c]
      for _, v in ipairs(r[c]) do dst[#dst + 1] = v end
    end
  end
  local out = {}
  local n = #(flat.input_ids or {})
  for start = 1, n, L do
    local row = {}
    for _, c in ipairs(cols) do row[c] = slice(flat[c], start, math.min(n, start + L - 1)) end
    out[#out + 1] = row
  end
  return out
end

M.PACKING_STRATEGIES = { bfd = true, bfd_split = true, wrapped = true }

--- TRL's pack_dataset on a list of rows (every list column is packed; "bfd" and "bfd_split" add
--- seq_lengths). As TRL runs it through datasets.map(batched=True), rows are packed in batches of
--- batch_size (1000) rows.
function M.pack_rows(rows, seq_length, strategy, batch_size)
  strategy = strategy or "bfd"
  if not M.PACKING_STRATEGIES[strategy] then
    error(string.format("Invalid packing strategy '%s', must be one of ('bfd', 'bfd_split', 'wrapped').", tostring(strategy)), 2)
  end
  if type(seq_length) ~= "number" or seq_length < 1 then error("pack_rows: seq_length must be a positive integer", 2) end
  batch_size = batch_size or 1000
  local out = {}
  for start = 1, #rows, batch_size do
    local chunk = slice(rows, start, math.min(#rows, start + batch_size - 1))
    local packed
    if strategy == "wrapped" then packed = pack_wrapped(chunk, seq_length)
    else packed = pack_bfd(chunk, seq_length, strategy == "bfd" and "truncate" or "split") end
    for _, r in ipairs(packed) do out[#out + 1] = r end
  end
  return out
end

return M
