-- sky.secret: strings that must never be shown (HF tokens, keys). Plugins add them; the pool
-- masks them in worker output, task errors and every tostring it renders.
local M = {}

local secrets = {}

--- Remembers s as a secret (strings shorter than 4 bytes are not worth masking). Returns s.
function M.add(s)
  if type(s) == "string" and #s >= 4 then
    for _, v in ipairs(secrets) do if v == s then return s end end
    secrets[#secrets + 1] = s
    table.sort(secrets, function(a, b) return #a > #b end)  -- longest first: no partial leftovers
  end
  return s
end

--- text with every secret replaced by "***" (text is converted with tostring).
function M.mask(text)
  text = tostring(text)
  for _, s in ipairs(secrets) do
    local out, pos = {}, 1
    while true do
      local i, j = text:find(s, pos, true)
      if not i then break end
      out[#out + 1] = text:sub(pos, i - 1)
      out[#out + 1] = "***"
      pos = j + 1
    end
    if pos > 1 then
      out[#out + 1] = text:sub(pos)
      text = table.concat(out)
    end
  end
  return text
end

--- A copy of the list (sent to workers so their own messages are masked too).
function M.list()
  local t = {}
  for i, v in ipairs(secrets) do t[i] = v end
  return t
end

return M
