-- transformers.pipelines: pipeline(task, {model=, tokenizer=, ...}) for inference jobs, as
-- HF's: "text-classification" (alias "sentiment-analysis") and "text-generation". A model or
-- tokenizer given by name is loaded with the Auto classes (models from the Hub or a folder).
-- Inputs are run one at a time (no padding), so batched and single calls give the same numbers.

local sky_core = require "sky.core"
local modeling = require "transformers.modeling"

local M = {}

-- HF's defaults for a task without a model (transformers/pipelines/__init__.py SUPPORTED_TASKS).
local DEFAULT_MODEL = {
  ["text-classification"] = "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
  ["text-generation"] = "openai-community/gpt2",
}
local ALIASES = { ["sentiment-analysis"] = "text-classification" }

local OPTIONS = { model = "any", tokenizer = "any", device = "any", dtype = "string", torch_dtype = "string",
  revision = "string", token = "any", top_k = "any", function_to_apply = "string", max_new_tokens = "integer",
  do_sample = "boolean", temperature = "number", top_p = "number" }

local function tokenizer_for(tok, name)
  if type(tok) == "table" or type(tok) == "userdata" then return tok end
  local transformers = require "transformers"
  return transformers.AutoTokenizer.from_pretrained(tok or name)
end

local function as_list(inputs, fname)
  if type(inputs) == "string" then return { inputs }, true end
  if type(inputs) ~= "table" then
    error(string.format("bad argument #1 to '%s' (string or list of strings expected, got %s)", fname, type(inputs)), 3)
  end
  return inputs, false
end

local function merged(base, extra)
  local out = {}
  for k, v in pairs(base or {}) do out[k] = v end
  for k, v in pairs(extra or {}) do out[k] = v end
  return out
end

-- ---- text-classification ---------------------------------------------------------------------

local function text_classification(model, tok, defaults)
  local config = model.config
  local function call(_, inputs, opts)
    local list, single = as_list(inputs, "pipeline")
    opts = merged(defaults, sky_core.check_options(opts, { top_k = "any", function_to_apply = "string",
      truncation = "boolean", max_length = "integer" }, "text-classification pipeline"))
    local apply = opts.function_to_apply
    if not apply then
      apply = (config.problem_type == "multi_label_classification" or config.num_labels == 1) and "sigmoid" or "softmax"
    end
    local results = {}
    for i, text in ipairs(list) do
      local enc = tok(text, { truncation = opts.truncation ~= false, max_length = opts.max_length })
      local out = model { input_ids = { enc.input_ids }, attention_mask = enc.attention_mask and { enc.attention_mask } }
      local logits = out.logits:select(1, 1):float()
      local scores
      if apply == "softmax" then scores = logits:softmax(1)
      elseif apply == "sigmoid" then scores = logits:sigmoid()
      elseif apply == "none" then scores = logits
      else error("function_to_apply must be 'softmax', 'sigmoid' or 'none' (got '" .. apply .. "')", 2) end
      local ranked = {}
      for j, s in ipairs(scores:tolist()) do
        local label = config.id2label and config.id2label[j - 1] or ("LABEL_" .. (j - 1))
        ranked[#ranked + 1] = { label = label, score = s }
      end
      table.sort(ranked, function(a, b) return a.score > b.score end)
      -- HF: top_k=1 (the default) gives the best {label, score}; top_k=nil/false all labels;
      -- top_k=n the best n.
      local k = opts.top_k
      if k == nil then k = 1 end
      if k == 1 then
        results[i] = ranked[1]
      else
        local n = (k == false or k == "all") and #ranked or math.min(k, #ranked)
        local r = {}
        for j = 1, n do r[j] = ranked[j] end
        results[i] = r
      end
    end
    -- HF: one text gives a list of one {label, score} (top_k 1), or that text's ranked list.
    if single and type(opts.top_k) ~= "nil" and opts.top_k ~= 1 then return results[1] end
    return results
  end
  return setmetatable({ task = "text-classification", model = model, tokenizer = tok }, { __call = call })
end

-- ---- text-generation -------------------------------------------------------------------------------

local function text_generation(model, tok, defaults)
  local function call(_, inputs, opts)
    local list, single = as_list(inputs, "pipeline")
    opts = merged(defaults, sky_core.check_options(opts, { max_new_tokens = "integer", do_sample = "boolean",
      temperature = "number", top_p = "number", top_k = "integer", return_full_text = "boolean",
      eos_token_id = "any", pad_token_id = "integer" }, "text-generation pipeline"))
    local results = {}
    for i, prompt in ipairs(list) do
      local enc = tok(prompt)
      local ids = enc.input_ids
      local out = model:generate({ ids }, { max_new_tokens = opts.max_new_tokens or 256, do_sample = opts.do_sample,
        temperature = opts.temperature, top_p = opts.top_p, top_k = opts.top_k, eos_token_id = opts.eos_token_id,
        pad_token_id = opts.pad_token_id })
      local all = out:tolist()[1]
      -- HF: decode everything, cut the decoded prompt off, put the prompt text back in front.
      local full = tok:decode(all, { skip_special_tokens = true })
      local prompt_text = tok:decode(ids, { skip_special_tokens = true })
      local generated = full:sub(#prompt_text + 1)
      results[i] = { { generated_text = (opts.return_full_text == false) and generated or (prompt .. generated) } }
    end
    if single then return results[1] end
    return results
  end
  return setmetatable({ task = "text-generation", model = model, tokenizer = tok }, { __call = call })
end

--- pipeline(task, {model=, tokenizer=, device=, dtype=, ...}): a callable as HF's pipeline.
---   local clf = transformers.pipeline("sentiment-analysis", { model = "distilbert/..." })
---   clf("I love this")          --> { { label = "POSITIVE", score = 0.9998 } }
---   local gen = transformers.pipeline("text-generation", { model = "gpt2" })
---   gen("Hello", { max_new_tokens = 20 })  --> { { generated_text = "Hello ..." } }
function M.pipeline(task, opts)
  if type(task) ~= "string" then error("bad argument #1 to 'pipeline' (task name expected)", 2) end
  task = ALIASES[task] or task
  if not DEFAULT_MODEL[task] then
    error("not supported yet: pipeline task '" .. task .. "' (supported: text-classification, sentiment-analysis, text-generation)", 2)
  end
  opts = sky_core.check_options(opts, OPTIONS, "pipeline")
  -- HF's device: a GPU index (-1: the CPU), "cpu", "cuda", "cuda:N".
  local device = opts.device
  if type(device) == "number" then
    if device ~= math.floor(device) then error("pipeline: device must be a whole GPU index (got " .. device .. ")", 2) end
    device = device < 0 and "cpu" or ("cuda:" .. device)
  elseif device ~= nil and type(device) ~= "string" then
    error("pipeline: device must be a GPU index, \"cpu\" or \"cuda:N\" (got " .. type(device) .. ")", 2)
  end
  local name = opts.model
  local model = opts.model
  if model == nil or type(model) == "string" then
    name = name or DEFAULT_MODEL[task]
    local load = task == "text-generation" and modeling.AutoModelForCausalLM or modeling.AutoModelForSequenceClassification
    model = load.from_pretrained(name, { device = device, dtype = opts.dtype or opts.torch_dtype,
      revision = opts.revision, token = opts.token })
  elseif device ~= nil then
    model:to(device)
  end
  model:eval()
  local tok = opts.tokenizer
  if tok == nil and type(name) ~= "string" then
    error("pipeline: give a tokenizer (or the model by name, so its tokenizer can be loaded)", 2)
  end
  tok = tokenizer_for(tok, name)
  local defaults = {}
  for _, k in ipairs { "top_k", "function_to_apply", "max_new_tokens", "do_sample", "temperature", "top_p" } do
    defaults[k] = opts[k]
  end
  if task == "text-classification" then return text_classification(model, tok, defaults) end
  return text_generation(model, tok, defaults)
end

return M
