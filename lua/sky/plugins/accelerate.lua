-- sky.plugins.accelerate: HuggingFace Accelerate's launcher for a pool, as skyward's plugin: the
-- torch plugin's process group (one rank per node, or per GPU) plus the environment
-- `accelerate launch` gives its processes for a config dict, so the task's Trainer code stays
-- plain HF code and the Trainer picks FSDP up from the environment (trainer.is_fsdp_enabled):
--
--   plugins = { sky.plugins.accelerate { config = { mixed_precision = "bf16", fsdp = {
--     sharding_strategy = "FULL_SHARD", auto_wrap_policy = "TRANSFORMER_BASED_WRAP",
--     transformer_layer_cls_to_wrap = "GPT2Block", backward_prefetch = "BACKWARD_PRE",
--     state_dict_type = "SHARDED_STATE_DICT", sync_module_states = true, use_orig_params = true,
--     cpu_ram_efficient_loading = true } } } }
--
-- Options: config (accelerate's keys; fsdp keys with or without "fsdp_"), and the torch plugin's
-- backend ("auto": NCCL where CUDA is, else Gloo), port, timeout. The config is checked when the
-- plugin is made: a bad key is named with a suggestion, a value we lack says `not supported yet`.
-- Do not list sky.plugins.torch beside it: this plugin makes the process group.
local M = {}

local function new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("sky.plugins.accelerate: expected an option table, got " .. type(opts), 2) end
  local known = { config = true, backend = true, port = true, timeout = true }
  for k in pairs(opts) do
    if not known[k] then
      local hint = require("sky.core").suggest(tostring(k), { "config", "backend", "port", "timeout" })
      error(string.format("sky.plugins.accelerate: unknown option '%s' (expected config, backend, port, timeout)%s",
        tostring(k), hint and (" (did you mean '" .. hint .. "'?)") or ""), 2)
    end
  end
  local fsdp = require "transformers.fsdp"
  local ok, env = pcall(fsdp.accelerate_env, opts.config)
  if ok then ok, env = pcall(function() fsdp.resolve(env); return env end) end  -- values we lack fail here
  if not ok then error(env, 2) end
  local torch = require("sky.plugins.torch") { backend = opts.backend or "auto", port = opts.port, timeout = opts.timeout }

  local plugin = { name = "accelerate", config = opts.config, open = torch.open, setup = torch.setup,
    teardown = torch.teardown, close = torch.close }
  function plugin.env(info, pool)
    local e = torch.env(info, pool)
    for k, v in pairs(env) do e[k] = v end
    return e
  end
  return setmetatable(plugin, {
    __tostring = function() return "sky.plugins.accelerate{...}" end,
  })
end

M.new = new

return setmetatable(M, { __call = function(_, opts) return new(opts) end })
