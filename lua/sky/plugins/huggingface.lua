-- sky.plugins.huggingface{token = ...}: the HF token in every worker's environment (HF_TOKEN,
-- delivered over the protocol) and in the token file where huggingface_hub and skyrun's Hub
-- client look ($HF_TOKEN_PATH, else $HF_HOME/token, else ~/.cache/huggingface/token), written by
-- each worker before its first task. The token is a secret: masked in every log, error and
-- tostring, never in a bootstrap script or a command line.
--   token  the token (default: $HF_TOKEN of the driver)
--   write_token_file  false: only the environment (default true)
local core = require "sky.core"
local secret = require "sky.secret"

-- Runs on each worker (sent like a task: it reads the token from the environment the pool just
-- set, so the token is not an upvalue).
local function write_token_file()
  local token = os.getenv("HF_TOKEN")
  if not token or token == "" then return end
  local path = os.getenv("HF_TOKEN_PATH")
  if not path or path == "" then
    local home = os.getenv("HF_HOME")
    if not home or home == "" then
      local xdg = os.getenv("XDG_CACHE_HOME")
      home = ((xdg and xdg ~= "") and xdg or ((os.getenv("HOME") or ".") .. "/.cache")) .. "/huggingface"
    end
    path = home .. "/token"
  end
  local f = io.open(path, "rb")
  if f then
    local old = f:read("*a")
    f:close()
    if old == token then return end
  end
  local dir = path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "'") end
  local tmp = path .. ".tmp" .. tostring(require("sky.pool.core").getpid())
  local out, err = io.open(tmp, "wb")
  if not out then error("cannot write the HF token file " .. path .. ": " .. tostring(err), 0) end
  out:write(token)
  out:close()
  os.execute("chmod 600 '" .. tmp:gsub("'", "'\\''") .. "'")
  local ok, rerr = os.rename(tmp, path)
  if not ok then error("cannot write the HF token file " .. path .. ": " .. tostring(rerr), 0) end
end

-- The token lives only in closures (not in a field), so printing or inspecting the plugin
-- table never shows it.
local Plugin = {}
Plugin.__index = Plugin
function Plugin.__tostring() return "huggingface{token=***}" end

return function(opts)
  opts = core.check_options(opts, { token = "string", write_token_file = "boolean" }, "sky.plugins.huggingface", 3)
  local token = opts.token or os.getenv("HF_TOKEN")
  if not token or token == "" then
    error("sky.plugins.huggingface needs a token (token = ... or HF_TOKEN in the driver's environment)", 2)
  end
  secret.add(token)
  local p = setmetatable({ name = "huggingface" }, Plugin)
  function p.env() return { HF_TOKEN = token } end
  if opts.write_token_file ~= false then p.setup = write_token_file end
  return p
end
