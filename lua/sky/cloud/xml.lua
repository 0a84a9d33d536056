-- sky.cloud.xml: reads the XML that AWS's query APIs answer (EC2) into Lua tables. Enough XML for
-- those answers: elements, text, the five entities and numeric references, CDATA, comments and the
-- declaration; attributes are read and dropped (EC2 uses only xmlns).
--   decode(text) -> name, value  where value is
--     a string                  for an element with no child elements (its text),
--     an array                  for an element whose children are all <item> (EC2's lists),
--     a table name -> value     otherwise (a repeated name becomes an array of its values).
-- An empty element is "" (an empty list or an empty string: M.list("") is {}).
local M = {}

local entities = { amp = "&", lt = "<", gt = ">", quot = '"', apos = "'" }

local function unescape(s)
  return (s:gsub("&(#?x?)(%w+);", function(kind, v)
    if kind == "" then return entities[v] or ("&" .. v .. ";") end
    local n = kind == "#x" and tonumber(v, 16) or tonumber(v)
    if not n then return "&" .. kind .. v .. ";" end
    if n < 0x80 then return string.char(n) end
    if n < 0x800 then return string.char(0xC0 + math.floor(n / 64), 0x80 + n % 64) end
    if n < 0x10000 then
      return string.char(0xE0 + math.floor(n / 4096), 0x80 + math.floor(n / 64) % 64, 0x80 + n % 64)
    end
    return string.char(0xF0 + math.floor(n / 262144), 0x80 + math.floor(n / 4096) % 64, 0x80 + math.floor(n / 64) % 64,
      0x80 + n % 64)
  end))
end

local function shape(node)
  local kids = node.kids
  if #kids == 0 then return table.concat(node.text) end
  local all_items = true
  for _, k in ipairs(kids) do if k.name ~= "item" and k.name ~= "member" then all_items = false break end end
  if all_items then
    local arr = {}
    for i, k in ipairs(kids) do arr[i] = shape(k) end
    return arr
  end
  local t, count = {}, {}
  for _, k in ipairs(kids) do count[k.name] = (count[k.name] or 0) + 1 end
  for _, k in ipairs(kids) do
    if count[k.name] > 1 then
      t[k.name] = t[k.name] or {}
      table.insert(t[k.name], shape(k))
    else
      t[k.name] = shape(k)
    end
  end
  return t
end

--- Parses text; returns the root element's name and its value. Raises "xml: ..." on bad input.
function M.decode(text)
  local pos, len = 1, #text
  local stack = { { name = "#document", kids = {}, text = {} } }
  while pos <= len do
    local lt = text:find("<", pos, true)
    if not lt then
      stack[#stack].text[#stack[#stack].text + 1] = unescape(text:sub(pos))
      break
    end
    if lt > pos then
      local top = stack[#stack]
      top.text[#top.text + 1] = unescape(text:sub(pos, lt - 1))
    end
    if text:sub(lt, lt + 3) == "<!--" then
      local e = text:find("-->", lt + 4, true)
      if not e then error("xml: unterminated comment", 2) end
      pos = e + 3
    elseif text:sub(lt, lt + 8) == "<![CDATA[" then
      local e = text:find("]]>", lt + 9, true)
      if not e then error("xml: unterminated CDATA", 2) end
      local top = stack[#stack]
      top.text[#top.text + 1] = text:sub(lt + 9, e - 1)
      pos = e + 3
    elseif text:sub(lt, lt + 1) == "<?" or text:sub(lt, lt + 1) == "<!" then
      local e = text:find(">", lt, true)
      if not e then error("xml: unterminated declaration", 2) end
      pos = e + 1
    elseif text:sub(lt, lt + 1) == "</" then
      local e = text:find(">", lt, true)
      if not e then error("xml: unterminated end tag", 2) end
      local name = text:sub(lt + 2, e - 1):match("^%s*([^%s]+)%s*$")
      local top = table.remove(stack)
      if #stack == 0 or top.name ~= name then
        error("xml: </" .. tostring(name) .. "> does not close <" .. tostring(top.name) .. ">", 2)
      end
      local parent = stack[#stack]
      parent.kids[#parent.kids + 1] = top
      pos = e + 1
    else
      local e = text:find(">", lt, true)
      if not e then error("xml: unterminated tag", 2) end
      local inner = text:sub(lt + 1, e - 1)
      local self_closing = inner:sub(-1) == "/"
      if self_closing then inner = inner:sub(1, -2) end
      local name = inner:match("^([^%s/>]+)")
      if not name then error("xml: a tag without a name at byte " .. lt, 2) end
      local node = { name = name:gsub("^.*:", ""), kids = {}, text = {} }
      if self_closing then
        local parent = stack[#stack]
        parent.kids[#parent.kids + 1] = node
      else
        stack[#stack + 1] = node
      end
      pos = e + 1
    end
  end
  if #stack ~= 1 then error("xml: <" .. stack[#stack].name .. "> is not closed", 2) end
  local root = stack[1].kids[1]
  if not root then error("xml: no element", 2) end
  return root.name, shape(root)
end

--- v as an array: an EC2 list (array), an empty element ("") or nil -> {}, a single value -> {v}.
function M.list(v)
  if v == nil or v == "" then return {} end
  if type(v) == "table" and (v[1] ~= nil or next(v) == nil) then return v end
  return { v }
end

return M
