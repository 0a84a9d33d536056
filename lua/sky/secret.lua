-- sky.secret: strings that must never be shown (HF tokens, keys). Plugins add them; the pool
-- masks them in worker output, task errors and every tostring it renders.
local M = {}

local secrets = {}
local sent = {}  -- the secrets workers get too (list()); the driver's own credentials stay here

--- Remembers s as a secret (strings shorter than 4 bytes are not worth masking). Returns s.
--- opts.driver_only: a credential only the driver uses (a cloud API key): masked here, never
--- sent to workers with list().
function M.add(s, opts)
  if type(s) == "string" and #s >= 4 then
    if not (opts and opts.driver_only) then sent[s] = true end
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

--- Splits text that more text will follow into (masked part to show now, rest to keep): the rest
--- is the shortest tail that may hold the start of a secret the next text completes, and no secret
--- is cut between the two. Without secrets everything is shown at once.
function M.mask_prefix(text)
  local longest = secrets[1] and #secrets[1] or 0
  if longest == 0 then return text, "" end
  local cut = #text - (longest - 1)
  if cut <= 0 then return "", text end
  -- a secret that starts before the cut and ends after it stays whole in the rest
  local moved = true
  while moved and cut > 0 do
    moved = false
    for _, s in ipairs(secrets) do
      local i = text:find(s, math.max(1, cut - #s + 2), true)
      if i and i <= cut then
        cut = i - 1
        moved = true
      end
    end
  end
  return M.mask(text:sub(1, cut)), text:sub(cut + 1)
end

--- A copy of the list (sent to workers so their own messages are masked too), without the
--- driver-only ones.
function M.list()
  local t = {}
  for _, v in ipairs(secrets) do
    if sent[v] then t[#t + 1] = v end
  end
  return t
end

return M
