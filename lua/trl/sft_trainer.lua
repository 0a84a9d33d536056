-- trl.sft_trainer: SFTTrainer and TRL's DataCollatorForLanguageModeling. The trainer prepares
-- the datasets as TRL 1.x's _prepare_dataset does (formatting_func, from/value to ChatML, EOS on
-- non-conversational text, tokenizing plain text, prompt-completion and conversations through
-- the chat template, labels from the completion and assistant masks, truncation, dropping rows
-- with nothing to learn, packing), builds the collator (padded, or padding-free with
-- position_ids restarting per sequence), then hands both to transformers.Trainer.

local core = require "sky.core"
local transformers = require "transformers"
local sft_config = require "trl.sft_config"
local data_utils = require "trl.data_utils"

local M = {}

local function native() return require "skyrun.train" end

-- ---- the collator -------------------------------------------------------------------------------------

local Collator = {}
Collator.__index = Collator
Collator.__name = "DataCollatorForLanguageModeling"

--- TRL's DataCollatorForLanguageModeling{pad_token_id=, padding_free=, pad_to_multiple_of=}:
--- rows of input_ids (and labels, else labels = input_ids, and seq_lengths after packing) become
--- a right-padded batch with attention_mask, or, padding-free, one row of every sequence with
--- position_ids restarting at each sequence (from seq_lengths) and labels -100 where they restart.
function M.DataCollatorForLanguageModeling(opts)
  opts = core.check_options(opts, { pad_token_id = "integer", padding_free = "boolean", pad_to_multiple_of = "integer",
    return_tensors = "string" }, "DataCollatorForLanguageModeling", 3)
  if opts.pad_token_id == nil then error("DataCollatorForLanguageModeling needs pad_token_id", 2) end
  if opts.return_tensors ~= nil and opts.return_tensors ~= "pt" then
    error("not supported yet: return_tensors='" .. opts.return_tensors .. "' (batches are LibTorch tensors)", 2)
  end
  return setmetatable({ pad_token_id = opts.pad_token_id, padding_free = opts.padding_free == true,
    pad_to_multiple_of = opts.pad_to_multiple_of }, Collator)
end

-- The columns of one padding-free batch: every row's ids one after the other.
function Collator:padding_free_row(rows)
  local ids, labels, pos = {}, {}, {}
  for r, row in ipairs(rows) do
    local x = row.input_ids
    if type(x) ~= "table" then error(string.format("DataCollatorForLanguageModeling: row %d has no input_ids list", r), 3) end
    local l = row.labels or x
    local lengths = row.seq_lengths or { #x }
    local at = 0
    for _, n in ipairs(lengths) do
      for k = 0, n - 1 do pos[#pos + 1] = k end
      at = at + n
    end
    if at ~= #x then
      error(string.format("DataCollatorForLanguageModeling: row %d's seq_lengths add up to %d, its input_ids hold %d", r, at, #x), 3)
    end
    for i = 1, #x do
      ids[#ids + 1] = x[i]
      labels[#labels + 1] = l[i]
    end
  end
  for i = 1, #pos do
    if pos[i] == 0 then labels[i] = -100 end
  end
  return { input_ids = ids, labels = labels, position_ids = pos }
end

function Collator:__call(rows)
  if type(rows) ~= "table" or #rows == 0 then error("DataCollatorForLanguageModeling: expected a list of rows", 2) end
  if self.padding_free then
    return native().collate({ self:padding_free_row(rows) }, { mode = "stack", pad_token_id = self.pad_token_id,
      pad_to_multiple_of = self.pad_to_multiple_of, where = "DataCollatorForLanguageModeling" })
  end
  local out = {}
  for i, row in ipairs(rows) do out[i] = { input_ids = row.input_ids, labels = row.labels or row.input_ids } end
  return native().collate(out, { mode = "pad", pad_token_id = self.pad_token_id, pad_to_multiple_of = self.pad_to_multiple_of,
    padding_side = "right", where = "DataCollatorForLanguageModeling" })
end

function Collator:__tostring() return "DataCollatorForLanguageModeling" end

-- ---- datasets ---------------------------------------------------------------------------------------------

local datasets_mod
local function datasets() datasets_mod = datasets_mod or require "datasets"; return datasets_mod end

local function is_dataset(v)
  if type(v) ~= "userdata" then return false end
  local ok, names = pcall(function() return v.column_names end)
  return ok and type(names) == "table"
end

local function rows_of(ds, what)
  if is_dataset(ds) then return ds:to_list() end
  if type(ds) == "table" and getmetatable(ds) == nil then return ds end
  error(string.format("SFTTrainer: %s must be a datasets.Dataset or a list of rows (got %s)", what, type(ds)), 4)
end

local function column_names(rows, ds)
  if is_dataset(ds) then return ds.column_names end
  local names, seen = {}, {}
  for k in pairs(rows[1] or {}) do
    if not seen[k] then seen[k] = true names[#names + 1] = k end
  end
  table.sort(names)
  return names
end

local function ends_with(s, suffix) return suffix == "" or s:sub(-#suffix) == suffix end

local function concat_lists(a, b)
  local out = {}
  for _, v in ipairs(a) do out[#out + 1] = v end
  for _, v in ipairs(b) do out[#out + 1] = v end
  return out
end

local function json_or(v)
  if type(v) == "string" then return require("jinja.core").json(v) end
  return v
end

-- The list columns a JSON-text column could hold (our Dataset stores lists of messages as text).
local function maybe_decode(v)
  if type(v) == "string" and v:match("^%s*%[") then
    local ok, val = pcall(function() return require("jinja.core").json(v):lua() end)
    if ok then return val end
  end
  return v
end

local KNOWN = "'text' (or the dataset_text_field), 'prompt' with 'completion', 'messages', 'conversations' or 'input_ids'"

-- TRL's _prepare_dataset for one dataset; returns a datasets.Dataset of {input_ids, labels[, seq_lengths]}.
function M.prepare_dataset(self, ds, args, packing, formatting_func, name)
  local tok = self.processing_class
  local rows = rows_of(ds, name .. " dataset")
  if #rows == 0 then error(string.format("SFTTrainer: the %s dataset is empty", name), 3) end
  local names = column_names(rows, ds)
  local has = {}
  for _, n in ipairs(names) do has[n] = true end
  local is_processed = has.input_ids
  local text_field = args.dataset_text_field
  if not is_processed and not formatting_func and not has[text_field] and not (has.prompt and has.completion)
      and not has.messages and not has.conversations and not has.prompt then
    error(string.format("SFTTrainer: the %s dataset has none of the columns SFT reads (%s); its columns are: %s",
      name, KNOWN, #names > 0 and ("'" .. table.concat(names, "', '") .. "'") or "(none)"), 3)
  end
  local out = {}
  for i, row0 in ipairs(rows) do
    local ex = {}
    for k, v in pairs(row0) do ex[k] = v end
    if not is_processed then
      if formatting_func then
        local text = formatting_func(ex)
        if type(text) ~= "string" then
          error(string.format("SFTTrainer: formatting_func returned a %s for %s row %d (a string expected)", type(text), name, i), 3)
        end
        ex = { text = text }
        text_field = "text"
      end
      for _, k in ipairs { "messages", "conversations", "prompt", "completion" } do ex[k] = maybe_decode(ex[k]) end
      if data_utils.is_conversational_from_value(ex) then data_utils.maybe_convert_to_chatml(ex) end
      local conversational = data_utils.is_conversational(ex)
      if not conversational then
        local eos = tok.eos_token
        if ex[text_field] ~= nil and ex.prompt == nil then
          if type(ex[text_field]) ~= "string" then
            error(string.format("SFTTrainer: %s row %d: '%s' is a %s, not text", name, i, text_field, type(ex[text_field])), 3)
          end
          if not ends_with(ex[text_field], eos) then ex[text_field] = ex[text_field] .. eos end
        elseif ex.completion ~= nil then
          if not ends_with(ex.completion, eos) then ex.completion = ex.completion .. eos end
        end
      end
      local template_kwargs = { chat_template = self.chat_template, tools = json_or(ex.tools) }
      for k, v in pairs(type(ex.chat_template_kwargs) == "table" and ex.chat_template_kwargs or {}) do
        template_kwargs[k] = v
      end
      local function chat(messages, extra)
        local o = {}
        for k, v in pairs(template_kwargs) do o[k] = v end
        for k, v in pairs(extra) do o[k] = v end
        o.tokenize, o.return_dict = true, true
        return tok:apply_chat_template(messages, o)
      end
      local r = {}
      if ex.prompt ~= nil then
        if ex.completion == nil then
          error(string.format("SFTTrainer: %s row %d has a 'prompt' but no 'completion'", name, i), 3)
        end
        local prompt_ids, pc_ids
        if conversational then
          prompt_ids = chat(ex.prompt, { add_generation_prompt = true }).input_ids
          local pc = chat(concat_lists(ex.prompt, ex.completion), { return_assistant_tokens_mask = args.assistant_only_loss })
          pc_ids = pc.input_ids
          r.assistant_masks = pc.assistant_masks
        else
          prompt_ids = tok(ex.prompt).input_ids
          pc_ids = tok(ex.prompt .. ex.completion).input_ids
        end
        r.input_ids = pc_ids
        r.completion_mask = {}
        for k = 1, #pc_ids do r.completion_mask[k] = k <= #prompt_ids and 0 or 1 end
      elseif conversational then
        local o = chat(ex.messages, { return_assistant_tokens_mask = args.assistant_only_loss })
        r.input_ids, r.assistant_masks = o.input_ids, o.assistant_masks
      else
        r.input_ids = tok(ex[text_field]).input_ids
      end
      if r.assistant_masks then
        local any = false
        for _, m in ipairs(r.assistant_masks) do if m == 1 then any = true break end end
        if not any then
          error("You're using `assistant_only_loss=True`, but at least one example has no assistant tokens. This usually " ..
            "means the tokenizer's chat template doesn't generate assistant masks — it may be missing the " ..
            "`{% generation %}` keyword. Please check the template and ensure it's correctly configured to support " ..
            "assistant masking.", 3)
        end
      end
      ex = r
    end
    -- labels: -100 outside the completion (completion_only_loss) and outside assistant turns
    if ex.labels == nil then
      local masks = {}
      if self.completion_only_loss and ex.completion_mask then masks[#masks + 1] = ex.completion_mask end
      if ex.assistant_masks then masks[#masks + 1] = ex.assistant_masks end
      local labels = {}
      for k, id in ipairs(ex.input_ids) do
        local keep = true
        for _, m in ipairs(masks) do if m[k] ~= 1 then keep = false end end
        labels[k] = keep and id or -100
      end
      ex.labels = labels
    end
    out[#out + 1] = { input_ids = ex.input_ids, labels = ex.labels }
  end
  -- truncation, then rows with nothing to learn are dropped (not when packing: packing cuts)
  if args.max_length ~= nil and not packing then
    local L = args.max_length
    local kept = {}
    for _, r in ipairs(out) do
      local n = #r.input_ids
      if n > L then
        local first = args.truncation_mode == "keep_end" and n - L + 1 or 1
        local ids, labels = {}, {}
        for k = first, first + L - 1 do
          ids[#ids + 1] = r.input_ids[k]
          labels[#labels + 1] = r.labels[k]
        end
        r.input_ids, r.labels = ids, labels
      end
      local any = false
      for _, l in ipairs(r.labels) do if l ~= -100 then any = true break end end
      if any then kept[#kept + 1] = r end
    end
    out = kept
  end
  if packing then
    if args.max_length == nil then error("When packing is enabled, `max_length` can't be `None`.", 3) end
    if args.shuffle_dataset then out = datasets().Dataset.from_list(out):shuffle { seed = args.seed }:to_list() end
    out = data_utils.pack_rows(out, args.max_length, args.packing_strategy)
  end
  if #out == 0 then
    error(string.format("SFTTrainer: no row of the %s dataset is left to train on (each had no label after truncation " ..
      "to max_length %s)", name, tostring(args.max_length)), 3)
  end
  local ds_out = datasets().Dataset.from_list(out)  -- columns the Trainer's native data path reads
  if args.shuffle_dataset then ds_out = ds_out:shuffle { seed = args.seed } end
  return ds_out
end

-- ---- the trainer ---------------------------------------------------------------------------------------

local OPTIONS = { model = "any", args = "any", train_dataset = "any", eval_dataset = "any", processing_class = "any",
  data_collator = "any", formatting_func = "function", peft_config = "any", compute_metrics = "function",
  callbacks = "table", preprocess_logits_for_metrics = "function", optimizers = "any", compute_loss_func = "any" }

local function has_generation_markers(template)
  return type(template) == "string" and template:find("{%%%-?%s*generation%s*%-?%%}") ~= nil
end

local function in_vocab(tok, token) return tok:get_added_vocab()[token] ~= nil or tok._tok:token_to_id(token) ~= nil end

local function build(opts)
  opts = core.check_options(opts, OPTIONS, "SFTTrainer", 4)
  if opts.optimizers ~= nil then error("not supported yet: SFTTrainer optimizers (the Trainer builds its own)", 3) end
  if opts.compute_loss_func ~= nil then error("not supported yet: SFTTrainer compute_loss_func", 3) end
  local model = opts.model
  if model == nil then error("SFTTrainer needs a model (an id, a folder or a model)", 3) end
  local args = opts.args
  local model_id = type(model) == "string" and model or nil
  if args == nil then
    args = sft_config.SFTConfig { output_dir = (model_id and model_id:match("[^/]+$") or "model") .. "-SFT" }
  elseif not sft_config.is_sft_config(args) then
    if type(args) == "table" and getmetatable(args) == nil then
      args = sft_config.SFTConfig(args)
    else
      error("SFTTrainer: args must be an SFTConfig (or a table of its options)", 3)
    end
  end
  if model_id then
    local kw = {}
    for k, v in pairs(args.model_init_kwargs or {}) do kw[k] = v end
    model = transformers.AutoModelForCausalLM.from_pretrained(model_id, kw)
  elseif args.model_init_kwargs ~= nil then
    io.stderr:write("SFTTrainer: model_init_kwargs are ignored: the model is already instantiated\n")
  end
  local tok = opts.processing_class
  if tok == nil then
    local src = model_id or (type(model) == "table" and model.name_or_path)
    if type(src) ~= "string" then error("SFTTrainer: pass processing_class (the model does not say where it was loaded from)", 3) end
    tok = transformers.AutoTokenizer.from_pretrained(src)
  end
  if not require("transformers.tokenization").is_tokenizer(tok) then error("SFTTrainer: processing_class must be a tokenizer", 3) end
  if args.eos_token ~= nil then
    if not in_vocab(tok, args.eos_token) then
      error(string.format("The specified `eos_token` ('%s') is not found in the vocabulary of the given `processing_class` " ..
        "(PreTrainedTokenizerFast). Ensure that the `eos_token` exists in the vocabulary before using it as an EOS token.",
        args.eos_token), 3)
    end
    tok.eos_token = args.eos_token
  end
  if args.chat_template_path ~= nil then
    local p = args.chat_template_path
    if p:match("%.jinja$") or p:match("%.j2$") then
      local f = io.open(p, "rb")
      if not f then error("SFTTrainer: chat_template_path " .. p .. " cannot be read", 3) end
      tok.chat_template = f:read("*a")
      f:close()
    else
      error("not supported yet: chat_template_path naming a tokenizer (clone_chat_template resizes the embeddings)", 3)
    end
  end
  if opts.peft_config ~= nil then
    local ok, peft = pcall(require, "peft")
    if not ok or type(peft) ~= "table" or type(peft.get_peft_model) ~= "function" then
      error("not supported yet: peft_config (the peft module is not in this build)", 3)
    end
    model = peft.get_peft_model(model, opts.peft_config)
  end

  local padding_free = args.padding_free or (args.packing and (args.packing_strategy == "bfd" or args.packing_strategy == "bfd_split"))
  local train_rows = opts.train_dataset
  if train_rows == nil then error("SFTTrainer needs a train_dataset", 3) end
  local sample = is_dataset(train_rows) and (#train_rows > 0 and train_rows[1] or {}) or train_rows[1] or {}
  local completion_only_loss = args.completion_only_loss
  if completion_only_loss == nil then completion_only_loss = sample.prompt ~= nil and sample.completion ~= nil end
  local collator = opts.data_collator
  if padding_free and collator ~= nil then error("Passing a custom data collator is not supported when using padding-free.", 3) end
  if collator == nil then
    local pad = args.pad_token or tok.pad_token or tok.eos_token
    if pad == nil or not in_vocab(tok, pad) then
      error(string.format("The specified `pad_token` ('%s') is not found in the vocabulary of the given `processing_class` " ..
        "(PreTrainedTokenizerFast). Ensure that the `pad_token` exists in the vocabulary before using it as a padding token.",
        tostring(pad)), 3)
    end
    tok.pad_token = pad
    if padding_free then
      collator = M.DataCollatorForLanguageModeling { pad_token_id = tok.pad_token_id, padding_free = true,
        pad_to_multiple_of = args.pad_to_multiple_of }
    else
      -- TRL's padded batches follow DataCollatorWithPadding's rules (right padding, attention_mask,
      -- labels -100): the built-in collator lets the Trainer build them natively from the dataset.
      collator = transformers.DataCollatorWithPadding({ pad_token_id = tok.pad_token_id, padding_side = "right" },
        { pad_to_multiple_of = args.pad_to_multiple_of })
    end
  end
  local decoded = {}
  for k, v in pairs(sample) do decoded[k] = maybe_decode(v) end
  if args.assistant_only_loss and not data_utils.is_conversational(decoded) then
    error("You set `assistant_only_loss=True`, but the dataset is not conversational. This option is only supported for " ..
      "conversational datasets.", 3)
  end
  local chat_template = nil
  if args.assistant_only_loss then
    local template = tok.chat_template
    if type(template) == "table" then template = template.default end
    if not has_generation_markers(template) then
      error("not supported yet: assistant_only_loss with a chat template that has no {% generation %} markers " ..
        "(TRL's patched training templates are not bundled): pass a template with them (chat_template_path)", 3)
    end
  end
  if padding_free and not args.packing and args.max_length ~= nil then
    error("When `padding_free=True` without packing, `max_length` is not enforced. Either enable packing (e.g., " ..
      "`packing=True, packing_strategy='bfd'`), provide already truncated inputs, or set `max_length=None`.", 3)
  end

  local prep = { processing_class = tok, completion_only_loss = completion_only_loss, chat_template = chat_template }
  local skip = args.dataset_kwargs and args.dataset_kwargs.skip_prepare_dataset
  local train = opts.train_dataset
  if not skip then train = M.prepare_dataset(prep, train, args, args.packing, opts.formatting_func, "train") end
  local eval = opts.eval_dataset
  if eval ~= nil and not skip then
    local eval_packing = args.eval_packing
    if eval_packing == nil then eval_packing = args.packing end
    if type(eval) == "table" and getmetatable(eval) == nil and eval[1] == nil and next(eval) ~= nil then
      error("not supported yet: a table of named eval datasets", 3)
    end
    eval = M.prepare_dataset(prep, eval, args, eval_packing, opts.formatting_func, "eval")
  end
  local trainer = transformers.Trainer { model = model, args = args, train_dataset = train, eval_dataset = eval,
    processing_class = tok, data_collator = collator, compute_metrics = opts.compute_metrics, callbacks = opts.callbacks,
    preprocess_logits_for_metrics = opts.preprocess_logits_for_metrics }
  trainer.padding_free = padding_free
  trainer.completion_only_loss = completion_only_loss
  trainer._formatting_func = opts.formatting_func
  return trainer
end

M.SFTTrainer = setmetatable({}, {
  __call = function(_, opts)
    local t = build(opts)  -- not a tail call: errors name the job's line
    return t
  end,
  __tostring = function() return "SFTTrainer" end,
})

return M
