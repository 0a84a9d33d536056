-- transformers.modeling: AutoConfig and the AutoModel classes, dispatching on config.json's
-- model_type to the LibTorch models of src/nn (skyrun.nn). A model is a "skyrun.Model"
-- userdata: model(inputs) → {loss=, logits=}, model:generate(ids, opts),
-- model:save_pretrained(dir, {max_shard_size=}), model:train()/eval(), model.config.

local nn = require "skyrun.nn"
local hub = require "huggingface_hub"
local sky_core = require "sky.core"

local M = {}

local LOAD = {
  dtype = "string", torch_dtype = "string", device = "string", device_map = "string",
  num_labels = "integer", id2label = "table", label2id = "table", problem_type = "string",
  output_loading_info = "boolean", low_cpu_mem_usage = "boolean", trust_remote_code = "boolean",
  attn_implementation = "string", quantization_config = "table",
}
for k, v in pairs(hub.DOWNLOAD_OPTIONS) do LOAD[k] = v end

-- The model folder: a local folder as it is, or a Hub repo's snapshot (config + weights).
local function resolve(path_or_id, opts, files)
  local folder = hub.resolve_model_folder(path_or_id, files, hub.download_options(opts))
  return folder
end

local WEIGHTS = { "config.json", "model.safetensors", { "generation_config.json", optional = true } }

-- A repository whose architecture exists only as Python code in the repo (config.json's auto_map
-- and a model_type skyrun does not run) is refused naming that code, whatever trust_remote_code
-- says: skyrun runs its native architectures, never a repository's Python.
local function refuse_remote_code(folder, path_or_id, fname)
  local f = io.open(folder .. "/config.json", "rb")
  if not f then return end
  local text = f:read("*a")
  f:close()
  local ok, config = pcall(require("transformers.train_core").json_decode, text, folder .. "/config.json")
  if not ok or type(config) ~= "table" or type(config.auto_map) ~= "table" then return end
  if pcall(nn.load_config, folder) then return end  -- a native architecture: auto_map is not needed
  local entries = {}
  for k, v in pairs(config.auto_map) do
    entries[#entries + 1] = string.format("%s = %s", tostring(k), type(v) == "table" and table.concat(v, ", ") or tostring(v))
  end
  table.sort(entries)
  error(string.format("%s: '%s' needs remote code (config.json auto_map: %s; model_type '%s'); skyrun runs only " ..
    "its native architectures, not Python code from a repository", fname, path_or_id, table.concat(entries, "; "),
    tostring(config.model_type)), 3)
end

-- Where each model was loaded from (PEFT's base_model_name_or_path), without keeping it alive.
local loaded_from = setmetatable({}, { __mode = "k" })
function M.name_or_path(model) return loaded_from[model] end

-- The quantization_config option: a BitsAndBytesConfig → its to_dict() as JSON for the native side.
local function quantization_json(q, fname)
  if q == nil then return nil end
  local quant = require "transformers.quantization"
  if not quant.is_bnb_config(q) then
    error(string.format("%s: quantization_config must be a transformers.BitsAndBytesConfig", fname), 3)
  end
  return q:to_json_string()
end

local function load(head, fname)
  return function(path_or_id, opts)
    if type(path_or_id) ~= "string" then
      error(string.format("bad argument #1 to '%s' (path or repo id expected, got %s)", fname, type(path_or_id)), 2)
    end
    opts = sky_core.check_options(opts, LOAD, fname)
    local config_folder = resolve(path_or_id, opts, { "config.json" })
    refuse_remote_code(config_folder, path_or_id, fname)
    -- FSDP's cpu_ram_efficient_loading (accelerate's environment): only each node's local rank 0
    -- reads the weights; the others build the model from its config and get rank 0's values when
    -- the Trainer shards it (sync_module_states)
    local fsdp_env = os.getenv("ACCELERATE_USE_FSDP") == "true" and os.getenv("FSDP_CPU_RAM_EFFICIENT_LOADING") == "true"
    if fsdp_env and (tonumber(os.getenv("LOCAL_RANK")) or 0) ~= 0 and (head == "causal_lm" or head == "base") and
      opts.quantization_config == nil then
      local f = assert(io.open(config_folder .. "/config.json", "rb"))
      local text = f:read("*a")
      f:close()
      local config = require("transformers.train_core").json_decode(text, config_folder .. "/config.json")
      local dtype = opts.dtype or opts.torch_dtype
      if dtype == nil or dtype == "auto" then dtype = config.dtype or config.torch_dtype or "float32" end
      local model = nn.from_config(text, head, { dtype = dtype, device = opts.device or opts.device_map,
        attn_implementation = opts.attn_implementation })
      loaded_from[model] = path_or_id
      return model
    end
    local folder = resolve(path_or_id, opts, WEIGHTS)
    local device = opts.device or opts.device_map
    local model, info = nn.from_pretrained(folder, head, {
      dtype = opts.dtype or opts.torch_dtype or "auto", device = device,
      num_labels = opts.num_labels, id2label = opts.id2label, label2id = opts.label2id,
      problem_type = opts.problem_type, attn_implementation = opts.attn_implementation,
      quantization_config = quantization_json(opts.quantization_config, fname),
    })
    loaded_from[model] = path_or_id
    if info.warnings ~= "" then io.stderr:write(info.warnings) end
    if opts.output_loading_info then return model, info end
    return model
  end
end

-- from_config(config, {dtype=, device=}): a randomly initialised model (HF's _init_weights) for
-- a config table as AutoConfig.from_pretrained returns it (or config.json text).
local function from_config(head, fname)
  return function(config, opts)
    if type(config) ~= "table" and type(config) ~= "string" then
      error(string.format("bad argument #1 to '%s' (config table expected, got %s)", fname, type(config)), 2)
    end
    opts = sky_core.check_options(opts, { dtype = "string", torch_dtype = "string", device = "string",
      attn_implementation = "string", quantization_config = "table" }, fname)
    return nn.from_config(config, head, { dtype = opts.dtype or opts.torch_dtype, device = opts.device,
      attn_implementation = opts.attn_implementation,
      quantization_config = quantization_json(opts.quantization_config, fname) })
  end
end

M.AutoModel = { from_pretrained = load("base", "AutoModel.from_pretrained"),
  from_config = from_config("base", "AutoModel.from_config") }
M.AutoModelForCausalLM = { from_pretrained = load("causal_lm", "AutoModelForCausalLM.from_pretrained"),
  from_config = from_config("causal_lm", "AutoModelForCausalLM.from_config") }
M.AutoModelForSequenceClassification = {
  from_pretrained = load("sequence_classification", "AutoModelForSequenceClassification.from_pretrained"),
  from_config = from_config("sequence_classification", "AutoModelForSequenceClassification.from_config"),
}

M.AutoConfig = {}

--- AutoConfig.from_pretrained(path_or_id, opts) → the config.json as a table (id2label keys are
--- integers, as HF's); model_type must be one skyrun runs.
function M.AutoConfig.from_pretrained(path_or_id, opts)
  if type(path_or_id) ~= "string" then
    error(string.format("bad argument #1 to 'AutoConfig.from_pretrained' (path or repo id expected, got %s)",
      type(path_or_id)), 2)
  end
  opts = sky_core.check_options(opts, hub.DOWNLOAD_OPTIONS, "AutoConfig.from_pretrained")
  return nn.load_config(resolve(path_or_id, opts, { "config.json" }))
end

--- set_seed(n): seeds LibTorch's generator (weight init of new heads, dropout, sampling).
function M.set_seed(seed)
  if type(seed) ~= "number" then error("bad argument #1 to 'set_seed' (number expected)", 2) end
  nn.set_seed(seed)
end

return M
