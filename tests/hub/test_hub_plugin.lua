-- sky.plugins.huggingface{models = ...}: every node downloads the models into its HF cache when
-- the pool opens, against a loopback Hub, so tasks find them offline.
local T = require "testlib"
local sky = require "sky"
local HubServer = require "hub_server"
local H = require "hub_testing"

local hub = HubServer.start {}
local WEIGHTS = H.bytes(20000, 9)
hub:commit("org/tiny", { ["config.json"] = '{"model_type": "gpt2"}', ["model.safetensors"] = WEIGHTS,
                         ["README.md"] = "# tiny" })
hub:commit("org/gated", { ["config.json"] = '{"model_type": "llama"}' })
hub:gate("org/gated")

-- Reads a file of a model from the cache only (HF_HUB_OFFLINE: no request may go out).
local offline_read = sky.compute(function(repo, file)
  local hf = require "huggingface_hub"
  local path = hf.hf_hub_download(repo, file, { local_files_only = true })
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end)

T.test("models = {...} are in every node's cache before the first task; tasks read them offline", function()
  local lines = {}
  local caches = {}
  local pool = sky.ComputePool {
    nodes = 2, output = function(node, line) lines[#lines + 1] = node .. ":" .. line end,
    env = { HF_ENDPOINT = hub.endpoint, HF_HOME = T.tmpdir() },  -- the token file goes there
    plugins = {
      -- each node has its own cache, as separate machines would
      { name = "per-node-cache", env = function(info)
          caches[info.node] = caches[info.node] or T.tmpdir()
          return { HF_HUB_CACHE = caches[info.node] }
        end },
      sky.plugins.huggingface { token = hub.token, models = { "org/tiny", { "org/gated", allow_patterns = "*.json" } } },
    },
  }
  pool:open()
  local downloads = hub:count("GET", "/cdn/")
  T.ok(downloads >= 2, "each node fetched the weights when the pool opened (" .. downloads .. ")")
  local per_node = pool:broadcast(sky.compute(function(repo)
    local hf = require "huggingface_hub"
    require("sky.pool.core").setenv("HF_HUB_OFFLINE", "1")
    local f = assert(io.open(hf.hf_hub_download(repo, "model.safetensors"), "rb"))
    local data = f:read("*a")
    f:close()
    return #data
  end)("org/tiny"))
  T.eq(per_node, { #WEIGHTS, #WEIGHTS })
  T.eq(pool:run(offline_read("org/gated", "config.json")), '{"model_type": "llama"}')
  T.eq(hub:count("GET", "/cdn/"), downloads, "nothing fetched after open")
  pool:close()
  table.sort(lines)
  T.eq(#lines, 4, table.concat(lines, "\n"))
  T.contains(lines[1], "1:cached org/gated -> " .. caches[1] .. "/models--org--gated/snapshots/")
  T.contains(lines[3], "2:cached org/gated -> " .. caches[2])
  for _, l in ipairs(lines) do T.not_contains(l, hub.token) end
end)

T.test("a model that cannot be downloaded fails pool:open naming the plugin and the repo", function()
  local pool = sky.ComputePool {
    nodes = 1, output = false, env = { HF_ENDPOINT = hub.endpoint, HF_HUB_CACHE = T.tmpdir(), HF_HOME = T.tmpdir() },
    plugins = { sky.plugins.huggingface { models = { "org/gated" } } },
  }
  local err = T.raises(function() pool:open() end, "plugin 'huggingface' setup failed")
  T.contains(err, "org/gated")
  T.raises(function() sky.plugins.huggingface { models = { 42 } } end, "models[1] must be a repo id")
  T.raises(function() sky.plugins.huggingface { models = { { "org/x", revison = "v1" } } } end, "did you mean 'revision'")
end)

T.run()
