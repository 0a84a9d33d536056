-- transformers.fsdp: FSDP settings as accelerate reads them. Two ways in, one way out:
--   * sky.plugins.accelerate{config = {mixed_precision =, fsdp = {...}}} turns its config into the
--     environment accelerate's launcher sets (ACCELERATE_USE_FSDP, FSDP_*, ACCELERATE_MIXED_PRECISION);
--   * TrainingArguments{fsdp = "full_shard auto_wrap", fsdp_config = {...}} as HF's __post_init__;
-- and resolve() reads either into the plugin the Trainer's engine uses. Pure Lua.
local core = require "sky.core"

local M = {}

local function suggest(k, names)
  local hint = core.suggest(k, names)
  return hint and (" (did you mean '" .. hint .. "'?)") or ""
end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local SHARDING = { FULL_SHARD = true, SHARD_GRAD_OP = true, NO_SHARD = true, HYBRID_SHARD = true,
  _HYBRID_SHARD_ZERO2 = true }
local SHARDING_BY_NUMBER = { ["1"] = "FULL_SHARD", ["2"] = "SHARD_GRAD_OP", ["3"] = "NO_SHARD", ["4"] = "HYBRID_SHARD",
  ["5"] = "_HYBRID_SHARD_ZERO2" }
local WRAP = { TRANSFORMER_BASED_WRAP = true, SIZE_BASED_WRAP = true, NO_WRAP = true }
local PREFETCH = { BACKWARD_PRE = true, BACKWARD_POST = true, NO_PREFETCH = true }
local STATE_DICT = { FULL_STATE_DICT = true, SHARDED_STATE_DICT = true, LOCAL_STATE_DICT = true }
local MIXED = { no = true, fp16 = true, bf16 = true, fp8 = true }

-- accelerate's fsdp_config keys (its YAML drops the "fsdp_" prefix in skyward's dict), their kind
-- and the FSDP_* variable each becomes.
local FSDP_KEYS = {
  sharding_strategy = { "choice", "FSDP_SHARDING_STRATEGY", SHARDING },
  reshard_after_forward = { "boolean", "FSDP_RESHARD_AFTER_FORWARD" },
  auto_wrap_policy = { "choice", "FSDP_AUTO_WRAP_POLICY", WRAP },
  transformer_layer_cls_to_wrap = { "classes", "FSDP_TRANSFORMER_CLS_TO_WRAP" },
  min_num_params = { "integer", "FSDP_MIN_NUM_PARAMS" },
  backward_prefetch = { "choice", "FSDP_BACKWARD_PREFETCH", PREFETCH },
  forward_prefetch = { "boolean", "FSDP_FORWARD_PREFETCH" },
  state_dict_type = { "choice", "FSDP_STATE_DICT_TYPE", STATE_DICT },
  sync_module_states = { "boolean", "FSDP_SYNC_MODULE_STATES" },
  use_orig_params = { "boolean", "FSDP_USE_ORIG_PARAMS" },
  cpu_ram_efficient_loading = { "boolean", "FSDP_CPU_RAM_EFFICIENT_LOADING" },
  activation_checkpointing = { "boolean", "FSDP_ACTIVATION_CHECKPOINTING" },
  offload_params = { "boolean", "FSDP_OFFLOAD_PARAMS" },
  limit_all_gathers = { "boolean", "FSDP_LIMIT_ALL_GATHERS" },
  version = { "integer", "FSDP_VERSION" },
}
M.FSDP_KEYS = FSDP_KEYS

local function check_value(where, key, spec, v)
  local kind = spec[1]
  if kind == "boolean" then
    if type(v) ~= "boolean" then error(string.format("%s: %s must be a boolean (got %s)", where, key, type(v)), 0) end
    return v and "true" or "false"
  elseif kind == "integer" then
    if type(v) ~= "number" or v ~= math.floor(v) or v < 0 then
      error(string.format("%s: %s must be an integer >= 0 (got %s)", where, key, tostring(v)), 0)
    end
    return tostring(v)
  elseif kind == "classes" then
    if type(v) == "string" then return v end
    if type(v) ~= "table" or #v == 0 then
      error(string.format("%s: %s must be a class name or a list of them (got %s)", where, key, type(v)), 0)
    end
    for i, c in ipairs(v) do
      if type(c) ~= "string" then error(string.format("%s: %s[%d] must be a string", where, key, i), 0) end
    end
    return table.concat(v, ",")
  else
    local s = type(v) == "number" and key == "sharding_strategy" and SHARDING_BY_NUMBER[tostring(v)] or v
    if type(s) ~= "string" then error(string.format("%s: %s must be a string (got %s)", where, key, type(v)), 0) end
    s = s:upper()
    if not spec[3][s] then
      error(string.format("%s: %s '%s' is not one of %s%s", where, key, tostring(v), table.concat(sorted_keys(spec[3]), ", "),
        suggest(s, sorted_keys(spec[3]))), 0)
    end
    return s
  end
end

-- accelerate's top-level config keys we do not implement (a typo gets a suggestion instead).
local ACCELERATE_OTHER = { "deepspeed_config", "fp8_config", "megatron_lm_config", "dynamo_config", "distributed_type",
  "downcast_bf16", "gpu_ids", "machine_rank", "main_process_ip", "main_process_port", "main_training_function",
  "num_machines", "num_processes", "rdzv_backend", "same_network", "tpu_env", "use_cpu", "parallelism_config" }

--- The environment accelerate's launcher would give the processes for `config` ({mixed_precision =,
--- fsdp = {...}}, keys with or without the "fsdp_" prefix). Errors name the bad key.
function M.accelerate_env(config, where)
  where = where or "sky.plugins.accelerate"
  if config == nil then return {} end
  if type(config) ~= "table" then error(where .. ": config must be a table (got " .. type(config) .. ")", 0) end
  local env = {}
  for k, v in pairs(config) do
    if k == "mixed_precision" then
      if type(v) ~= "string" or not MIXED[v] then
        error(string.format("%s: config.mixed_precision must be \"no\", \"fp16\" or \"bf16\" (got %s)", where, tostring(v)), 0)
      end
      if v == "fp8" then error("not supported yet: mixed_precision = \"fp8\"", 0) end
      env.ACCELERATE_MIXED_PRECISION = v
    elseif k == "fsdp" or k == "fsdp_config" then
      if type(v) ~= "table" then error(where .. ": config." .. k .. " must be a table (got " .. type(v) .. ")", 0) end
      env.ACCELERATE_USE_FSDP = "true"
      for fk, fv in pairs(v) do
        if type(fk) ~= "string" then error(where .. ": config." .. k .. " keys must be strings", 0) end
        local name = fk:gsub("^fsdp_", "")
        local spec = FSDP_KEYS[name]
        if not spec then
          error(string.format("%s: unknown key '%s' in config.%s%s", where, fk, k, suggest(name, sorted_keys(FSDP_KEYS))), 0)
        end
        env[spec[2]] = check_value(where .. ": config." .. k, fk, spec, fv)
      end
    else
      local names = { "mixed_precision", "fsdp" }
      for _, n in ipairs(ACCELERATE_OTHER) do
        if n == k then error("not supported yet: accelerate config key '" .. k .. "'", 0) end
        names[#names + 1] = n
      end
      error(string.format("%s: unknown config key '%s'%s", where, tostring(k), suggest(tostring(k), names)), 0)
    end
  end
  return env
end

-- HF's FSDPOption words in TrainingArguments.fsdp.
local HF_OPTIONS = { full_shard = "FULL_SHARD", shard_grad_op = "SHARD_GRAD_OP", no_shard = "NO_SHARD",
  hybrid_shard = "HYBRID_SHARD", hybrid_shard_zero2 = "_HYBRID_SHARD_ZERO2", offload = true, auto_wrap = true }
local HF_XLA = { xla = true, xla_fsdp_v2 = true, xla_fsdp_grad_ckpt = true, xla_fsdp_settings = true }

--- TrainingArguments.fsdp (a string of words, a list, or a boolean) and fsdp_config as HF's
--- __post_init__ reads them, as the same environment; nil when fsdp is off.
function M.training_args_env(fsdp, fsdp_config)
  local where = "TrainingArguments"
  local words = {}
  if fsdp == true then
    words = { "full_shard" }
  elseif type(fsdp) == "string" then
    for w in fsdp:gmatch("%S+") do words[#words + 1] = w end
  elseif type(fsdp) == "table" then
    for i, w in ipairs(fsdp) do
      if type(w) ~= "string" then error(string.format("%s: fsdp[%d] must be a string", where, i), 0) end
      words[#words + 1] = w
    end
  end
  if #words == 0 then
    if fsdp_config ~= nil then
      error(where .. ": fsdp_config is set but fsdp is empty (set fsdp = \"full_shard auto_wrap\")", 0)
    end
    return nil
  end
  local env = { ACCELERATE_USE_FSDP = "true", FSDP_AUTO_WRAP_POLICY = "NO_WRAP" }
  local auto_wrap = false
  for _, w in ipairs(words) do
    local o = HF_OPTIONS[w]
    if not o then
      error(string.format("%s: fsdp option '%s' is not one of full_shard, shard_grad_op, no_shard, hybrid_shard, " ..
        "hybrid_shard_zero2, offload, auto_wrap%s", where, w, suggest(w, sorted_keys(HF_OPTIONS))), 0)
    end
    if w == "offload" then error("not supported yet: fsdp \"offload\" (parameters on the CPU)", 0) end
    if w == "auto_wrap" then auto_wrap = true elseif type(o) == "string" then env.FSDP_SHARDING_STRATEGY = o end
  end
  local cfg = {}
  for k, v in pairs(fsdp_config or {}) do
    if type(k) ~= "string" then error(where .. ": fsdp_config keys must be strings", 0) end
    local name = k:gsub("^fsdp_", "")
    if HF_XLA[name] then error("not supported yet: fsdp_config." .. k .. " (XLA)", 0) end
    if not FSDP_KEYS[name] then
      error(string.format("%s: unknown key '%s' in fsdp_config%s", where, k, suggest(name, sorted_keys(FSDP_KEYS))), 0)
    end
    cfg[name] = v
  end
  for name, v in pairs(cfg) do
    env[FSDP_KEYS[name][2]] = check_value(where .. ": fsdp_config", name, FSDP_KEYS[name], v)
  end
  if auto_wrap then
    if (tonumber(env.FSDP_MIN_NUM_PARAMS) or 0) > 0 then
      env.FSDP_AUTO_WRAP_POLICY = "SIZE_BASED_WRAP"
    else
      env.FSDP_AUTO_WRAP_POLICY = "TRANSFORMER_BASED_WRAP"
    end
  end
  return env
end

local function truthy(s) return s == "true" or s == "1" or s == "True" or s == "TRUE" end

--- The FSDP plugin the Trainer uses, from an environment (a table, or os.getenv when nil); nil
--- when ACCELERATE_USE_FSDP is not true. Raises `not supported yet` for what the engine lacks.
function M.resolve(env)
  local get = env and function(k) return env[k] end or os.getenv
  if not truthy(get("ACCELERATE_USE_FSDP") or "") then return nil end
  local p = {}
  local s = get("FSDP_SHARDING_STRATEGY") or "FULL_SHARD"
  s = SHARDING_BY_NUMBER[s] or s:upper()
  if not SHARDING[s] then error("FSDP_SHARDING_STRATEGY: '" .. s .. "' is not a sharding strategy", 0) end
  if s == "HYBRID_SHARD" or s == "_HYBRID_SHARD_ZERO2" then
    error("not supported yet: sharding_strategy " .. s .. " (sharding within a node, replicas across nodes)", 0)
  end
  p.sharding_strategy = s
  p.reshard_after_forward = s == "FULL_SHARD"
  local raf = get("FSDP_RESHARD_AFTER_FORWARD")
  if raf and raf ~= "" then p.reshard_after_forward = truthy(raf) end
  p.auto_wrap_policy = (get("FSDP_AUTO_WRAP_POLICY") or "NO_WRAP"):upper()
  if p.auto_wrap_policy == "SIZE_BASED_WRAP" then
    error("not supported yet: auto_wrap_policy SIZE_BASED_WRAP (use TRANSFORMER_BASED_WRAP)", 0)
  end
  local cls = get("FSDP_TRANSFORMER_CLS_TO_WRAP")
  if cls and cls ~= "" then
    p.transformer_layer_cls_to_wrap = {}
    for c in cls:gmatch("[^,%s]+") do p.transformer_layer_cls_to_wrap[#p.transformer_layer_cls_to_wrap + 1] = c end
  end
  p.backward_prefetch = (get("FSDP_BACKWARD_PREFETCH") or "BACKWARD_PRE"):upper()
  p.forward_prefetch = truthy(get("FSDP_FORWARD_PREFETCH") or "false")
  p.state_dict_type = (get("FSDP_STATE_DICT_TYPE") or "FULL_STATE_DICT"):upper()
  if p.state_dict_type == "LOCAL_STATE_DICT" then error("not supported yet: state_dict_type LOCAL_STATE_DICT", 0) end
  p.sync_module_states = truthy(get("FSDP_SYNC_MODULE_STATES") or "true")
  p.use_orig_params = truthy(get("FSDP_USE_ORIG_PARAMS") or "true")
  p.cpu_ram_efficient_loading = truthy(get("FSDP_CPU_RAM_EFFICIENT_LOADING") or "false")
  if p.cpu_ram_efficient_loading and not p.sync_module_states then
    error("FSDP: cpu_ram_efficient_loading = true needs sync_module_states = true (the other ranks get rank 0's weights)", 0)
  end
  p.activation_checkpointing = truthy(get("FSDP_ACTIVATION_CHECKPOINTING") or "false")
  if truthy(get("FSDP_OFFLOAD_PARAMS") or "false") then error("not supported yet: FSDP offload_params (CPU offload)", 0) end
  local mp = get("ACCELERATE_MIXED_PRECISION")
  if mp and mp ~= "" and mp ~= "no" then p.mixed_precision = mp end
  return p
end

return M
