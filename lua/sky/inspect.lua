-- sky.inspect: renders any Lua value as readable text for the REPL and for logs.
-- Tables are pretty-printed with sorted keys, nested to a depth limit; a table met again on its
-- own path is shown as <cycle>, one seen elsewhere as <table N> (its first number).

local concat, sort, format = table.concat, table.sort, string.format

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do KEYWORDS[w] = true end

local function is_identifier(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil and not KEYWORDS[s]
end

local function scalar(v)
  local t = type(v)
  if t == "string" then return format("%q", v):gsub("\\\n", "\\n") end
  if t == "number" then
    if v ~= v then return "nan" end
    if v == math.huge then return "inf" end
    if v == -math.huge then return "-inf" end
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return format("%d", v) end
    return format("%.17g", v)
  end
  return tostring(v)
end

local key_order = { number = 1, string = 2 }
local function compare_keys(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (key_order[ta] or 3) < (key_order[tb] or 3) end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

---@param value any
---@param opts? {depth?: integer, indent?: string, max_items?: integer}
---@return string
local function inspect(value, opts)
  opts = opts or {}
  local max_depth = opts.depth or 4
  local indent_unit = opts.indent or "  "
  local max_items = opts.max_items or 200
  local ids, next_id = {}, 0
  local on_path = {}

  local function render(v, depth, indent)
    if type(v) ~= "table" then return scalar(v) end
    if on_path[v] then return "<cycle>" end
    if ids[v] then return format("<table %d>", ids[v]) end
    next_id = next_id + 1
    ids[v] = next_id
    local mt = getmetatable(v)
    if mt and type(mt) == "table" and rawget(mt, "__tostring") then return tostring(v) end
    if depth >= max_depth then return "{...}" end
    on_path[v] = true

    local n = #v
    local keys = {}
    for k in pairs(v) do
      if not (type(k) == "number" and k >= 1 and k <= n and k == math.floor(k)) then keys[#keys + 1] = k end
    end
    sort(keys, compare_keys)

    local inner = indent .. indent_unit
    local parts, shown = {}, 0
    for i = 1, n do
      shown = shown + 1
      if shown > max_items then break end
      parts[#parts + 1] = render(v[i], depth + 1, inner)
    end
    for _, k in ipairs(keys) do
      shown = shown + 1
      if shown > max_items then break end
      local ks = is_identifier(k) and k or ("[" .. render(k, depth + 1, inner) .. "]")
      parts[#parts + 1] = ks .. " = " .. render(v[k], depth + 1, inner)
    end
    if shown > max_items then parts[#parts + 1] = format("... (%d more)", n + #keys - max_items) end
    on_path[v] = nil

    local one_line = "{" .. concat(parts, ", ") .. "}"
    if #one_line + #indent <= 100 and not one_line:find("\n", 1, true) then return one_line end
    return "{\n" .. inner .. concat(parts, ",\n" .. inner) .. "\n" .. indent .. "}"
  end

  return render(value, 0, "")
end

return inspect
