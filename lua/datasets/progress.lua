-- datasets.progress: a tqdm-like bar on stderr for long maps and loads
-- ("Map: 42%|████▏     | 420000/1000000 [00:01<00:01, 380000 examples/s]"). Drawn only when stderr
-- is a terminal and HF_DATASETS_DISABLE_PROGRESS_BARS is unset; otherwise every call is a no-op.

local core = require "datasets.core"

local M = {}

local function enabled()
  local v = os.getenv("HF_DATASETS_DISABLE_PROGRESS_BARS")
  if v and v ~= "" and v ~= "0" and v:lower() ~= "false" then return false end
  return require("sky.core").isatty(2)
end

local function clock(s)
  s = math.floor(s + 0.5)
  return string.format("%02d:%02d", math.floor(s / 60), s % 60)
end

local Bar = {}
Bar.__index = Bar

--- A bar for `total` items labelled `label`; quiet unless enabled and the work is large enough.
function M.new(label, total, min_total)
  local self = setmetatable({ label = label, total = total, done = 0, on = false }, Bar)
  if total >= (min_total or 10000) and enabled() then
    self.on = true
    self.start = require("sky.core").monotonic()
    self.last = 0
  end
  return self
end

function Bar:draw(final)
  local now = require("sky.core").monotonic()
  if not final and now - self.last < 0.1 then return end
  self.last = now
  local el = now - self.start
  local frac = self.total > 0 and self.done / self.total or 1
  local width = 20
  local full = math.floor(frac * width)
  local rate = el > 0 and self.done / el or 0
  local eta = rate > 0 and (self.total - self.done) / rate or 0
  local line = string.format("\r%s: %3d%%|%s%s| %d/%d [%s<%s, %.0f examples/s]", self.label, math.floor(frac * 100),
    string.rep("#", full), string.rep(" ", width - full), self.done, self.total, clock(el), clock(eta), rate)
  io.stderr:write(line)
  if final then io.stderr:write("\n") end
  io.stderr:flush()
end

function Bar:update(n)
  if not self.on then return end
  self.done = self.done + n
  self:draw(false)
end

function Bar:close()
  if not self.on then return end
  self.done = self.total
  self:draw(true)
  self.on = false
end

return M
