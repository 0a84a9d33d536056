-- sky.plugins.huggingface{token = ...}: the HF token in every worker's environment (HF_TOKEN,
-- delivered over the protocol) and in the token file where huggingface_hub and skyrun's Hub
-- client look ($HF_TOKEN_PATH, else $HF_HOME/token, else ~/.cache/huggingface/token), written by
-- each worker before its first task. The token is a secret: masked in every log, error and
-- tostring, never in a bootstrap script or a command line.
--   token  the token (default: $HF_TOKEN of the driver)
--   write_token_file  false: only the environment (default true)
--   models  repo ids ("org/name" or {"org/name", revision =, allow_patterns =, ignore_patterns =})
--           downloaded into the HF cache of every node when the pool opens (Skyward's newest
--           plugin does this), so tasks start from a warm cache; a failed download fails open()
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
  local fs = require "sky.fs"
  if fs.read(path) == token then return end
  local dir = path:match("^(.*)/[^/]*$")
  -- The file is created with mode 0600 under a fresh temporary name (O_EXCL, never through a
  -- link) and renamed into place: no other user can read it at any moment.
  local ok, err = pcall(function()
    if dir and dir ~= "" then fs.makedirs(dir) end
    fs.write_atomic(path, token, "0600")
  end)
  if not ok then error("cannot write the HF token file: " .. tostring(err), 0) end
end

-- The token lives only in closures (not in a field), so printing or inspecting the plugin
-- table never shows it.
local Plugin = {}
Plugin.__index = Plugin
function Plugin.__tostring() return "huggingface{token=***}" end

-- Runs on each worker before its first task: every model snapshot into the HF cache (the file
-- locks of the cache let the workers of one node share the downloads).
local function download_models(models, info)
  local hub = require "huggingface_hub"
  for _, m in ipairs(models) do
    local folder = hub.snapshot_download(m.repo_id, m.opts)
    if info.slot == 1 then print("cached " .. m.repo_id .. " -> " .. folder) end
  end
end

local MODEL_OPTIONS = { revision = "string", repo_type = "string", allow_patterns = "string|table",
  ignore_patterns = "string|table" }

return function(opts)
  opts = core.check_options(opts, { token = "string", write_token_file = "boolean", models = "table" },
    "sky.plugins.huggingface", 3)
  local token = opts.token or os.getenv("HF_TOKEN")
  if token == "" then token = nil end
  local models = {}
  for i, m in ipairs(opts.models or {}) do
    if type(m) == "string" then
      models[i] = { repo_id = m }
    elseif type(m) == "table" and type(m[1]) == "string" then
      local o = {}
      for k, v in pairs(m) do if k ~= 1 then o[k] = v end end
      models[i] = { repo_id = m[1], opts = core.check_options(o, MODEL_OPTIONS, "sky.plugins.huggingface: models[" .. i .. "]", 3) }
    else
      error("sky.plugins.huggingface: models[" .. i .. "] must be a repo id or {repo_id, revision = ..., allow_patterns = ...}", 2)
    end
  end
  if not token and #models == 0 then
    error("sky.plugins.huggingface needs a token (token = ... or HF_TOKEN in the driver's environment) or models to download", 2)
  end
  local p = setmetatable({ name = "huggingface" }, Plugin)
  if token then
    secret.add(token)
    function p.env() return { HF_TOKEN = token } end
  end
  local write_token = token and opts.write_token_file ~= false
  if write_token or #models > 0 then
    function p.setup(info)
      if write_token then write_token_file() end
      if #models > 0 then download_models(models, info) end
    end
  end
  return p
end
