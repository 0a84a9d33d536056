-- peft: HF PEFT's LoRA for skyrun's models (peft 0.21 names, defaults, matching rules and files).
-- The adapters live inside the native model (src/nn/lora.cpp: A, B, merge, unload, disable,
-- adapter files); this module holds PEFT's policy: LoraConfig, which modules a config targets,
-- adapter_config.json, PeftModel and prepare_model_for_kbit_training.
--
--   local peft = require "peft"
--   local model = peft.get_peft_model(base, peft.LoraConfig { r = 16, lora_alpha = 32,
--     target_modules = { "q_proj", "v_proj" }, task_type = "CAUSAL_LM" })
--   model:print_trainable_parameters()
--   model:save_pretrained("out")                     -- adapter_config.json + adapter_model.safetensors
--   local again = peft.PeftModel.from_pretrained(base2, "out", { is_trainable = true })

local core = require "sky.core"
local tcore = require "transformers.train_core"
local hub = require "huggingface_hub"

local M = {}

local function native() return require "skyrun.peft" end
local function nn() return require "skyrun.nn" end
local json_null = tcore.json_null
local ARRAY = { __jsontype = "array" }

M.TaskType = { SEQ_CLS = "SEQ_CLS", SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM", CAUSAL_LM = "CAUSAL_LM", TOKEN_CLS = "TOKEN_CLS",
  QUESTION_ANS = "QUESTION_ANS", FEATURE_EXTRACTION = "FEATURE_EXTRACTION" }
M.PeftType = { LORA = "LORA" }

-- ---- LoraConfig --------------------------------------------------------------------------------

-- The keys we implement, with PEFT's defaults (json_null: None).
local LORA_DEFAULTS = {
  r = 8, lora_alpha = 8, lora_dropout = 0.0, target_modules = json_null, exclude_modules = json_null,
  fan_in_fan_out = false, bias = "none", use_rslora = false, modules_to_save = json_null, init_lora_weights = true,
  layers_to_transform = json_null, layers_pattern = json_null, task_type = json_null, peft_type = "LORA",
  inference_mode = false, base_model_name_or_path = json_null, revision = json_null, auto_mapping = json_null,
}
local LORA_TYPES = {
  r = "integer", lora_alpha = "number", lora_dropout = "number", target_modules = "string|table",
  exclude_modules = "string|table", fan_in_fan_out = "boolean", bias = "string", use_rslora = "boolean",
  modules_to_save = "table", init_lora_weights = "any", layers_to_transform = "any", layers_pattern = "string|table",
  task_type = "string", peft_type = "string", inference_mode = "boolean", base_model_name_or_path = "string",
  revision = "string", auto_mapping = "any",
}
-- PEFT's LoraConfig keys we do not implement, with the defaults PEFT writes for them: a config
-- that keeps the default is fine, another value says `not supported yet: <key>`.
local LORA_UNSUPPORTED = {
  rank_pattern = {}, alpha_pattern = {}, megatron_config = json_null, megatron_core = "megatron.core",
  trainable_token_indices = json_null, loftq_config = {}, eva_config = json_null, corda_config = json_null,
  lora_ga_config = json_null, use_dora = false, velora_config = json_null, alora_invocation_tokens = json_null,
  use_qalora = false, qalora_group_size = 16, monteclora_config = json_null, layer_replication = json_null,
  lora_bias = false, target_parameters = json_null, use_bdlora = json_null, arrow_config = json_null,
  kasa_config = json_null, ensure_weight_tying = false,
}
-- Keys PEFT writes that carry no behaviour here.
local LORA_IGNORED = { peft_version = true, runtime_config = true }

local function is_default(v, d)
  if v == nil or v == json_null then return d == json_null end
  if type(v) == "table" and type(d) == "table" then return next(v) == nil end
  return v == d
end

local LoraConfig = {}
LoraConfig.__index = LoraConfig
LoraConfig.__name = "LoraConfig"
function LoraConfig.__tostring(self) return "LoraConfig(r=" .. self.r .. ", lora_alpha=" .. self.lora_alpha .. ")" end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- Checks and fills a config table. `lenient`: a file PEFT wrote (unknown keys warn, as PEFT does).
local function make_lora_config(opts, where, level, lenient)
  level = level + 1
  if opts ~= nil and type(opts) ~= "table" then error(where .. ": expected a table of options", level) end
  local cfg = setmetatable({}, LoraConfig)
  local known = {}
  for k in pairs(LORA_DEFAULTS) do known[#known + 1] = k end
  for k in pairs(LORA_UNSUPPORTED) do known[#known + 1] = k end
  for k, v in pairs(opts or {}) do
    if LORA_DEFAULTS[k] ~= nil then
      local want = LORA_TYPES[k]
      if v ~= json_null and want ~= "any" then
        local ok = (want == "integer" and type(v) == "number" and v == math.floor(v)) or type(v) == want or
          (want == "string|table" and (type(v) == "string" or type(v) == "table"))
        if not ok then error(string.format("%s: '%s' must be %s (got %s)", where, k, want, type(v)), level) end
      end
      cfg[k] = v
    elseif LORA_UNSUPPORTED[k] ~= nil then
      if not is_default(v, LORA_UNSUPPORTED[k]) then error("not supported yet: LoraConfig." .. k, level) end
    elseif LORA_IGNORED[k] then
      -- nothing to do
    elseif lenient then
      io.stderr:write(string.format("%s: ignoring unknown key '%s'\n", where, tostring(k)))
    else
      local hint = type(k) == "string" and core.suggest(k, known)
      error(string.format("%s: unknown option '%s'%s", where, tostring(k), hint and (" (did you mean '" .. hint .. "'?)") or ""),
        level)
    end
  end
  for k, d in pairs(LORA_DEFAULTS) do
    if cfg[k] == nil or cfg[k] == json_null then cfg[k] = d end
  end
  if cfg.peft_type ~= "LORA" then error("not supported yet: peft_type " .. tostring(cfg.peft_type) .. " (LoRA works)", level) end
  if cfg.r <= 0 then error("`r` should be a positive integer value but the value passed is " .. cfg.r, level) end
  if cfg.bias ~= "none" and cfg.bias ~= "all" and cfg.bias ~= "lora_only" then
    error(where .. ": bias must be \"none\", \"all\" or \"lora_only\" (got \"" .. tostring(cfg.bias) .. "\")", level)
  end
  local init = cfg.init_lora_weights
  if init ~= true and init ~= false and init ~= "gaussian" then
    error("not supported yet: init_lora_weights = " .. tostring(init) .. " (true, false and \"gaussian\" work)", level)
  end
  if cfg.task_type ~= json_null and not M.TaskType[cfg.task_type] then
    error(string.format("%s: unknown task_type '%s'", where, tostring(cfg.task_type)), level)
  end
  local ltt = cfg.layers_to_transform
  if ltt ~= json_null then
    if type(ltt) == "number" then
      ltt = { ltt }
    elseif type(ltt) ~= "table" then
      error(where .. ": layers_to_transform must be an integer or a list of integers", level)
    end
    cfg.layers_to_transform = ltt
  end
  if type(cfg.target_modules) == "string" and cfg.target_modules ~= "all-linear" and cfg.layers_to_transform ~= json_null then
    error("`layers_to_transform` cannot be used when `target_modules` is a str.", level)
  end
  if cfg.layers_pattern ~= json_null and cfg.layers_to_transform == json_null then
    error("When `layers_pattern` is specified, `layers_to_transform` must also be specified. ", level)
  end
  if cfg.modules_to_save ~= json_null then
    local copy = {}
    for i, v in ipairs(cfg.modules_to_save) do copy[i] = v end
    cfg.modules_to_save = copy
  end
  return cfg
end

--- LoraConfig{ r = 8, lora_alpha = 8, lora_dropout = 0, target_modules = {...} | "regex" | "all-linear",
---   bias = "none", use_rslora = false, modules_to_save = {...}, init_lora_weights = true | "gaussian" | false,
---   layers_to_transform = n | {...}, layers_pattern = "layers", exclude_modules = ..., task_type = "CAUSAL_LM" }
M.LoraConfig = setmetatable({}, {
  __call = function(_, opts) local c = make_lora_config(opts, "LoraConfig", 2, false) return c end,
  __tostring = function() return "LoraConfig" end,
})

function M.is_lora_config(v) return getmetatable(v) == LoraConfig end

--- The dict PEFT's save_pretrained writes: every LoraConfig key (ours and the defaults of the rest).
function LoraConfig:to_dict()
  local out = {}
  for k in pairs(LORA_DEFAULTS) do out[k] = self[k] end
  for k, d in pairs(LORA_UNSUPPORTED) do out[k] = d end
  local function list(v)
    if type(v) ~= "table" then return v end
    local l = {}
    for i, x in ipairs(v) do l[i] = x end
    return setmetatable(l, ARRAY)
  end
  out.target_modules = list(self.target_modules)
  out.modules_to_save = list(self.modules_to_save)
  out.layers_to_transform = list(self.layers_to_transform)
  out.exclude_modules = list(self.exclude_modules)
  out.rank_pattern, out.alpha_pattern, out.loftq_config = {}, {}, {}
  return out
end

-- ---- which modules a config targets (peft.tuners.tuners_utils.check_target_module_exists) ---------

local function ends_with(s, tail) return tail == "" or s:sub(-#tail) == tail end

local function escape(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

-- PEFT's re.match(rf"(^|.*\.){m}($|\..*)", key) for a module name m (taken literally)
local function names_module(key, m)
  return key == m or ends_with(key, "." .. m) or key:sub(1, #m + 1) == m .. "." or key:find("." .. m .. ".", 1, true) ~= nil
end

local function layer_index(cfg, key)
  local pats = cfg.layers_pattern
  if pats == json_null or pats == "" or (type(pats) == "table" and #pats == 0) then
    -- re.match(r".*?\.[^.]*\.(\d+)\.", key): the first numbered segment
    return key:match("%.[^.]*%.(%d+)%.")
  end
  if type(pats) == "string" then pats = { pats } end
  for _, p in ipairs(pats) do
    local idx = key:match("%." .. escape(p) .. "%.(%d+)%.")
    if idx then return idx end
  end
  return nil
end

-- true (targeted), false (not), or "excluded"
local function check_target(cfg, key)
  local ex = cfg.exclude_modules
  if ex ~= json_null then
    if type(ex) == "string" then
      if native().fullmatch(ex, key) then return "excluded" end
    else
      for _, e in ipairs(ex) do
        if key == e or ends_with(key, "." .. e) then return "excluded" end
      end
    end
  end
  if cfg.modules_to_save ~= json_null then
    for _, m in ipairs(cfg.modules_to_save) do
      if names_module(key, m) then return "excluded" end
    end
  end
  local tm = cfg.target_modules
  if type(tm) == "string" then return native().fullmatch(tm, key) end
  local found = false
  for _, t in ipairs(tm) do
    if key == t then return true end
    if ends_with(key, "." .. t) then found = true end
  end
  local ltt = cfg.layers_to_transform
  if found and ltt ~= json_null and #ltt > 0 then
    local idx = layer_index(cfg, key)
    if not idx then return false end
    idx = tonumber(idx)
    found = false
    for _, want in ipairs(ltt) do
      if want == idx then found = true end
    end
  end
  return found
end

-- PEFT's _find_minimal_target_modules: the fewest name suffixes that pick exactly these modules.
local function minimal_targets(targets, others)
  local function suffixes(s)
    local parts = {}
    for p in s:gmatch("[^.]+") do parts[#parts + 1] = p end
    local out = {}
    for i = #parts, 1, -1 do out[#out + 1] = table.concat(parts, ".", i) end
    return out  -- shortest first
  end
  local other_suffixes = {}
  for _, o in ipairs(others) do
    for _, s in ipairs(suffixes(o)) do other_suffixes[s] = true end
  end
  local items = {}
  for _, t in ipairs(targets) do items[#items + 1] = { t, suffixes(t) } end
  table.sort(items, function(a, b)
    local x, y = a[2], b[2]
    for i = 1, math.min(#x, #y) do
      if x[i] ~= y[i] then return x[i] < y[i] end
    end
    return #x < #y
  end)
  local required, order = {}, {}
  for _, it in ipairs(items) do
    local item = it[1]
    for _, s in ipairs(it[2]) do
      if not required[s] and not other_suffixes[s] then
        local covered = false
        for r in pairs(required) do
          if ends_with(item, "." .. r) then covered = true break end
        end
        if not covered then
          required[s] = true
          order[#order + 1] = s
          break
        end
      end
    end
  end
  if #order == 0 then return targets end
  table.sort(order)
  return order
end

local SEQ_CLS_HEADS = { "classifier", "score" }  -- PeftModelForSequenceClassification's order

-- The LoRA targets (HF module names) and the modules_to_save of cfg on model; updates cfg as PEFT
-- does (all-linear becomes the list of names, long lists become minimal suffixes).
local function resolve(model, cfg, level)
  level = level + 1
  local mods = native().modules(model)
  local names = {}
  for _, m in ipairs(mods) do names[#names + 1] = m.name end
  if cfg.task_type == "SEQ_CLS" then  -- PeftModelForSequenceClassification's classifier_module_names
    local mts = cfg.modules_to_save ~= json_null and cfg.modules_to_save or {}
    for _, h in ipairs(SEQ_CLS_HEADS) do mts[#mts + 1] = h end
    cfg.modules_to_save = mts
  end
  if cfg.target_modules == json_null then
    error("not supported yet: target_modules left out (PEFT picks them by architecture); name them, e.g. " ..
      "{\"q_proj\", \"v_proj\"} or \"all-linear\"", level)
  end
  if type(cfg.target_modules) == "string" and cfg.target_modules:lower() == "all-linear" then
    -- every Linear/Conv1D but the output layer (lm_head; the classifier head for SEQ_CLS)
    local list = {}
    for _, m in ipairs(mods) do
      local leaf = m.name:match("[^.]+$")
      local head = m.output_layer and (leaf == "lm_head" or (cfg.task_type == "SEQ_CLS" and (leaf == "score" or leaf == "classifier")))
      if (m.kind == "linear" or m.kind == "conv1d") and not head then list[#list + 1] = m.name end
    end
    cfg.target_modules = list
  end
  local targets, excluded, unmatched = {}, {}, {}
  for _, m in ipairs(mods) do
    local r = check_target(cfg, m.name)
    if r == "excluded" then excluded[#excluded + 1] = m.name
    elseif r then
      if m.kind ~= "linear" and m.kind ~= "conv1d" then
        if m.kind == "embedding" then
          error("not supported yet: LoRA on the embedding '" .. m.name .. "' (target Linear or Conv1D layers)", level)
        end
        error("Target module '" .. m.name .. "' is not supported. Currently, only the following modules are supported: " ..
          "`torch.nn.Linear`, `transformers.pytorch_utils.Conv1D`.", level)
      end
      targets[#targets + 1] = m.name
    else unmatched[#unmatched + 1] = m.name end
  end
  if #targets == 0 then
    local tm = cfg.target_modules
    local shown = type(tm) == "table" and ("{" .. table.concat(tm, ", ") .. "}") or tostring(tm)
    local lin = {}
    for _, m in ipairs(mods) do
      if m.kind == "linear" or m.kind == "conv1d" then lin[#lin + 1] = m.name end
    end
    local msg = #excluded > 0 and #unmatched == 0 and "All modules were excluded. This is likely unintended."
      or string.format("Target modules %s not found in the base model.", shown)
    if cfg.layers_to_transform ~= json_null then
      msg = msg .. " Note: You specified 'layers_to_transform': {" .. table.concat(cfg.layers_to_transform, ", ") .. "}."
    end
    error(msg .. " The model's linear modules are: " .. table.concat(lin, ", "), level)
  end
  -- modules_to_save (PEFT's _set_trainable: key.endswith(name), over every module and container)
  local saved = {}
  if cfg.modules_to_save ~= json_null then
    local all, seen = {}, {}
    for _, n in ipairs(names) do
      local prefix = ""
      for part in n:gmatch("[^.]+") do
        prefix = prefix == "" and part or (prefix .. "." .. part)
        if not seen[prefix] then
          seen[prefix] = true
          all[#all + 1] = prefix
        end
      end
    end
    local matched = {}
    for _, key in ipairs(all) do
      for _, want in ipairs(cfg.modules_to_save) do
        if ends_with(key, want) then matched[#matched + 1] = key break end
      end
    end
    for _, key in ipairs(matched) do  -- inside another match: already copied with it
      local inner = false
      for _, other in ipairs(matched) do
        if other ~= key and key:sub(1, #other + 1) == other .. "." then inner = true end
      end
      if not inner then saved[#saved + 1] = key end
    end
  end
  if type(cfg.target_modules) == "table" and #cfg.target_modules >= 20 then
    local tset = set_of(targets)
    local others = {}
    for _, n in ipairs(names) do
      if not tset[n] then others[#others + 1] = n end
    end
    cfg.target_modules = minimal_targets(targets, others)
  end
  return targets, saved
end

-- ---- PeftModel ---------------------------------------------------------------------------------

local PeftModel = {}
local PEFT_CLASS = { CAUSAL_LM = "PeftModelForCausalLM", SEQ_CLS = "PeftModelForSequenceClassification",
  FEATURE_EXTRACTION = "PeftModelForFeatureExtraction", TOKEN_CLS = "PeftModelForTokenClassification",
  QUESTION_ANS = "PeftModelForQuestionAnswering", SEQ_2_SEQ_LM = "PeftModelForSeq2SeqLM" }

local function base_of(self)
  local m = rawget(self, "_model")
  if m == nil then error("this PeftModel was unloaded (merge_and_unload/unload return the base model)", 3) end
  return m
end

local peft_mt = {
  __index = function(self, key)
    local method = PeftModel[key]
    if method ~= nil then return method end
    local base = base_of(self)
    local v = base[key]
    if type(v) == "function" then
      -- a method of the base model called on the PeftModel: run it on the base
      return function(s, ...)
        if s == self then return v(base, ...) end
        return v(s, ...)
      end
    end
    return v
  end,
  __call = function(self, inputs) return base_of(self)(inputs) end,
  __tostring = function(self)
    local m = rawget(self, "_model")
    return string.format("%s(%s)", rawget(self, "_class"), m and tostring(m) or "unloaded")
  end,
  __name = "PeftModel",
}

function M.is_peft_model(v) return getmetatable(v) == peft_mt end

local function wrap(model, cfg, adapter)
  return setmetatable({ _model = model, _class = PEFT_CLASS[cfg.task_type] or "PeftModel",
    peft_config = { [adapter] = cfg }, active_adapter = adapter, base_model = model }, peft_mt)
end

-- The name or path a model was loaded from (transformers.modeling records it).
local function name_or_path(model)
  local ok, modeling = pcall(require, "transformers.modeling")
  if ok and modeling.name_or_path then return modeling.name_or_path(model) end
  return nil
end

local function inject(model, cfg, adapter, level)
  level = level + 1
  if M.is_peft_model(model) then error("not supported yet: a second adapter on one model (add_adapter)", level) end
  if type(model) ~= "userdata" or not pcall(function() return model.class_name end) then
    error("get_peft_model: expected a transformers model (got " .. type(model) .. ")", level)
  end
  if native().has_lora(model) then error("not supported yet: a second adapter on one model (this one has one)", level) end
  local targets, saved = resolve(model, cfg, level)
  native().lora_add(model, {
    adapter = adapter, r = cfg.r, lora_alpha = cfg.lora_alpha, use_rslora = cfg.use_rslora,
    lora_dropout = cfg.lora_dropout, init = tostring(cfg.init_lora_weights), targets = targets, bias = cfg.bias,
    modules_to_save = saved, trainable = not cfg.inference_mode,
  })
  if cfg.base_model_name_or_path == json_null then cfg.base_model_name_or_path = name_or_path(model) or json_null end
  return wrap(model, cfg, adapter)
end

--- get_peft_model(model, config, {adapter_name = "default"}) → PeftModel (the model itself is changed,
--- as in PEFT: the adapters live in it).
function M.get_peft_model(model, config, opts)
  if not M.is_lora_config(config) then
    if type(config) == "table" then config = make_lora_config(config, "get_peft_model", 2, false)
    else error("get_peft_model: expected a LoraConfig (got " .. type(config) .. ")", 2) end
  end
  opts = core.check_options(opts, { adapter_name = "string", autocast_adapter_dtype = "boolean", revision = "string",
    mixed = "boolean", low_cpu_mem_usage = "boolean" }, "get_peft_model", 3)
  if opts.mixed then error("not supported yet: get_peft_model(..., {mixed = true})", 2) end
  if opts.autocast_adapter_dtype == false then error("not supported yet: autocast_adapter_dtype = false", 2) end
  local cfg = make_lora_config(config, "get_peft_model", 2, false)  -- a copy: the caller's config stays as given
  if opts.revision then cfg.revision = opts.revision end
  local pm = inject(model, cfg, opts.adapter_name or "default", 2)
  return pm
end

function PeftModel:get_base_model() return base_of(self) end

--- get_nb_trainable_parameters() → trainable, all (4-bit weights counted unpacked)
function PeftModel:get_nb_trainable_parameters() return native().parameter_counts(base_of(self)) end

local function thousands(n)
  local s = string.format("%d", n)
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end

--- print_trainable_parameters(): PEFT's line
function PeftModel:print_trainable_parameters()
  local t, all = self:get_nb_trainable_parameters()
  print(string.format("trainable params: %s || all params: %s || trainable%%: %.4f", thousands(t), thousands(all),
    100 * t / all))
end

--- save_pretrained(dir): adapter_config.json and adapter_model.safetensors, as PEFT writes them
function PeftModel:save_pretrained(dir, opts)
  if type(dir) ~= "string" then error("save_pretrained: expected a folder path", 2) end
  opts = core.check_options(opts, { safe_serialization = "boolean", selected_adapters = "table",
    save_embedding_layers = "any", is_main_process = "boolean" }, "save_pretrained", 3)
  if opts.safe_serialization == false then error("not supported yet: save_pretrained without safetensors", 2) end
  if opts.is_main_process == false then return end
  local cfg = self.peft_config[self.active_adapter]
  local d = cfg:to_dict()
  d.inference_mode = true  -- PEFT saves the config in inference mode
  native().lora_save(base_of(self), dir .. "/adapter_model.safetensors")  -- makes the folder
  tcore.write_file_atomic(dir .. "/adapter_config.json", tcore.json_encode(d, 2))
end

--- merge_and_unload() → the base model with each adapter folded into its weight
function PeftModel:merge_and_unload(opts)
  opts = core.check_options(opts, { progressbar = "boolean", safe_merge = "boolean", adapter_names = "table" },
    "merge_and_unload", 3)
  local base = base_of(self)
  native().merge_and_unload(base)
  rawset(self, "_model", nil)
  return base
end

--- unload() → the base model without the adapters (weights untouched)
function PeftModel:unload()
  local base = base_of(self)
  native().unload(base)
  rawset(self, "_model", nil)
  return base
end

--- disable_adapter(fn): runs fn() with the adapters off (the base model's output), as
--- `with model.disable_adapter():` does; returns what fn returns.
function PeftModel:disable_adapter(fn)
  if type(fn) ~= "function" then
    error("disable_adapter(fn): pass the code to run without the adapter as a function (Python's `with` block)", 2)
  end
  local base = base_of(self)
  local was = native().set_adapters_enabled(base, false)
  local function finish(ok, ...)
    native().set_adapters_enabled(base, was)
    if not ok then error((...), 0) end
    return ...
  end
  return finish(pcall(fn))
end

function PeftModel:disable_adapter_layers() native().set_adapters_enabled(base_of(self), false) end
function PeftModel:enable_adapter_layers() native().set_adapters_enabled(base_of(self), true) end

function PeftModel:set_adapter(name)
  if name ~= self.active_adapter then error("not supported yet: several adapters (this model has '" .. self.active_adapter .. "')", 2) end
end

function PeftModel:load_adapter() error("not supported yet: load_adapter (one adapter per model)", 2) end
function PeftModel:add_adapter() error("not supported yet: add_adapter (one adapter per model)", 2) end

-- In-place load of an adapter folder's weights (the Trainer's resume and load_best_model_at_end).
function PeftModel:_load_adapter_weights(dir)
  native().lora_load(base_of(self), dir .. "/adapter_model.safetensors")
end

-- ---- loading adapters --------------------------------------------------------------------------

local read_file = require("sky.fs").read

local function adapter_folder(id, opts)
  local f = io.open(id .. "/adapter_config.json", "rb")
  if f then
    f:close()
    return id
  end
  return hub.resolve_model_folder(id, { "adapter_config.json", "adapter_model.safetensors" }, hub.download_options(opts))
end

--- PeftConfig.from_pretrained(folder_or_id) → LoraConfig
M.PeftConfig = {}
function M.PeftConfig.from_pretrained(id, opts)
  opts = core.check_options(opts, hub.DOWNLOAD_OPTIONS, "PeftConfig.from_pretrained", 3)
  local folder = adapter_folder(id, opts)
  local path = folder .. "/adapter_config.json"
  local text = read_file(path)
  if not text then error(path .. ": cannot read", 2) end
  local ok, d = pcall(tcore.json_decode, text, path)
  if not ok then error(d, 2) end
  if type(d) ~= "table" then error(path .. ": not a JSON object", 2) end
  local cfg = make_lora_config(d, path, 2, true)
  return cfg, folder
end
M.LoraConfig.from_pretrained = M.PeftConfig.from_pretrained

M.PeftModel = {}
local LOAD_OPTS = { is_trainable = "boolean", adapter_name = "string", config = "any", autocast_adapter_dtype = "boolean",
  ephemeral_gpu_offload = "boolean", low_cpu_mem_usage = "boolean", subfolder = "string" }
for k, v in pairs(hub.DOWNLOAD_OPTIONS) do LOAD_OPTS[k] = v end

--- PeftModel.from_pretrained(model, folder_or_hub_id, {is_trainable = false, adapter_name = "default"})
function M.PeftModel.from_pretrained(model, id, opts)
  if type(id) ~= "string" then error("PeftModel.from_pretrained: expected an adapter folder or hub id", 2) end
  opts = core.check_options(opts, LOAD_OPTS, "PeftModel.from_pretrained", 3)
  if opts.subfolder then id = id .. "/" .. opts.subfolder end
  local dl = {}
  for k in pairs(hub.DOWNLOAD_OPTIONS) do dl[k] = opts[k] end
  local cfg, folder = M.PeftConfig.from_pretrained(id, dl)
  if opts.config ~= nil then cfg = make_lora_config(opts.config, "PeftModel.from_pretrained", 2, false) end
  cfg.inference_mode = not opts.is_trainable
  local weights = folder .. "/adapter_model.safetensors"
  if not require("sky.fs").stat(weights) then
    if require("sky.fs").stat(folder .. "/adapter_model.bin") then
      error(folder .. ": not supported yet: adapter_model.bin (only safetensors)", 2)
    end
    error(folder .. ": no adapter_model.safetensors", 2)
  end
  local pm = inject(model, cfg, opts.adapter_name or "default", 2)
  local ok, err = pcall(native().lora_load, model, weights)
  if not ok then
    native().unload(model)  -- leave the base model as it was
    error(err, 2)
  end
  return pm
end

-- ---- QLoRA -------------------------------------------------------------------------------------

--- prepare_model_for_kbit_training(model, {use_gradient_checkpointing = true,
---   gradient_checkpointing_kwargs = {}}): freezes every parameter, casts 16-bit ones to float32 (not
--- the 4-bit weights), and turns gradient checkpointing on for a 4-bit model, as PEFT does.
function M.prepare_model_for_kbit_training(model, opts)
  opts = core.check_options(opts, { use_gradient_checkpointing = "boolean", gradient_checkpointing_kwargs = "table",
    auto_clear_cache = "boolean" }, "prepare_model_for_kbit_training", 3)
  if M.is_peft_model(model) then error("prepare_model_for_kbit_training: call it on the base model, before get_peft_model", 2) end
  native().freeze(model)
  local dt = model.dtype
  if dt == "bfloat16" or dt == "float16" then model:to("float32") end
  if model.is_loaded_in_4bit and opts.use_gradient_checkpointing ~= false then
    model:gradient_checkpointing_enable({ gradient_checkpointing_kwargs = opts.gradient_checkpointing_kwargs })
  end
  return model
end

-- The native model behind a model or PeftModel (the Trainer uses this).
function M.unwrap(model)
  if M.is_peft_model(model) then return base_of(model) end
  return model
end

return M
