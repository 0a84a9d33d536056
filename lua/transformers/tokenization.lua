-- transformers.tokenization: AutoTokenizer and PreTrainedTokenizerFast with HuggingFace's call
-- shapes, on the native tokenizer (src/tokenize, `require "tokenizers.core"`), which gives the
-- ids HF tokenizers gives. This file owns the transformers layer: tokenizer_config.json and
-- special_tokens_map.json, special-token attributes, truncation/padding arguments, decode clean-up.

local core = require "tokenizers.core"
local sky_core = require "sky.core"
local chat = require "transformers.chat_template"

local M = {}

local SPECIAL_NAMES = { "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token" }
local IS_SPECIAL_NAME = {}
for _, n in ipairs(SPECIAL_NAMES) do IS_SPECIAL_NAME[n] = true end
local VERY_LARGE_INTEGER = 1e30
local ROLE_DEFAULTS = {
  pad_token = { "[PAD]", "<pad>", "<|pad|>" },
  unk_token = { "[UNK]", "<unk>", "<|endoftext|>" },
  cls_token = { "[CLS]", "<cls>" },
  sep_token = { "[SEP]", "<sep>" },
  mask_token = { "[MASK]", "<mask>" },
  bos_token = { "<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>", "<|endoftext|>" },
  eos_token = { "</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>" },
}  -- transformers' model_max_length when none is known

-- Classes whose model_input_names include token_type_ids (transformers' defaults).
local TYPE_IDS_CLASSES = { "Bert", "Electra", "Albert", "XLNet", "Funnel", "LayoutLM", "SqueezeBert", "MobileBert",
  "ConvBert", "Deberta", "MPNet", "Splinter", "RemBert", "Nezha", "RoFormer", "Lxmert" }

local read_json = core.read_json  -- nil when the file is absent

-- A token in tokenizer_config.json is a string or {content = ..., ...} (AddedToken).
local function token_text(v)
  if type(v) == "table" then return v.content end
  if type(v) == "string" then return v end
  return nil
end

local Tokenizer = {}  -- methods of PreTrainedTokenizerFast objects
local TokenizerMT = {}

local function is_tokenizer(t) return getmetatable(t) == TokenizerMT end

local function check_self(self, fname)
  if not is_tokenizer(self) then
    error(string.format("bad self to '%s' (a tokenizer expected; use tok:%s(...))", fname, fname), 3)
  end
end

TokenizerMT.__index = function(self, key)
  local m = Tokenizer[key]
  if m ~= nil then return m end
  local special = rawget(self, "_special")
  if IS_SPECIAL_NAME[key] then return special[key] end
  if type(key) == "string" then
    local base = key:match("^(.-_token)_id$")
    if base and IS_SPECIAL_NAME[base] then
      local t = special[base]
      if t == nil then return nil end
      return self:convert_tokens_to_ids(t)
    end
    if key == "additional_special_tokens" then return special.additional_special_tokens end
    if key == "additional_special_tokens_ids" then return self:convert_tokens_to_ids(special.additional_special_tokens) end
    if key == "all_special_tokens" then return Tokenizer.all_special_tokens_list(self) end
    if key == "all_special_ids" then return self:convert_tokens_to_ids(Tokenizer.all_special_tokens_list(self)) end
    if key == "vocab_size" then return rawget(self, "_tok"):vocab_size(false) end
  end
  return nil
end

TokenizerMT.__newindex = function(self, key, value)
  if IS_SPECIAL_NAME[key] then
    if value ~= nil and type(value) ~= "string" then
      error(string.format("%s must be a string or nil (got %s)", key, type(value)), 2)
    end
    rawget(self, "_special")[key] = value
    return
  end
  local base = type(key) == "string" and key:match("^(.-_token)_id$")
  if base and IS_SPECIAL_NAME[base] then
    if value == nil then rawget(self, "_special")[base] = nil; return end
    local t = rawget(self, "_tok"):id_to_token(value)
    if t == nil then error(string.format("%s: %s is not a token id of this tokenizer", key, tostring(value)), 2) end
    rawget(self, "_special")[base] = t
    return
  end
  if key == "additional_special_tokens" then
    rawget(self, "_special").additional_special_tokens = value or {}
    return
  end
  if key == "padding_side" or key == "truncation_side" then
    if value ~= "right" and value ~= "left" then error(key .. " must be 'right' or 'left'", 2) end
  end
  rawset(self, key, value)
end

TokenizerMT.__len = function(self) return rawget(self, "_tok"):vocab_size(true) end

--- tok:len(): Python's len(tok), the vocabulary with added tokens (LuaJIT has no __len for tables).
function Tokenizer:len() return rawget(self, "_tok"):vocab_size(true) end

TokenizerMT.__tostring = function(self)
  return string.format("PreTrainedTokenizerFast(name_or_path='%s', vocab_size=%d, model_max_length=%s, padding_side='%s')",
    self.name_or_path, self._tok:vocab_size(false), tostring(self.model_max_length), self.padding_side)
end

local function new_tokenizer(native, config, name_or_path, chat_template_text)
  local self = setmetatable({ _tok = native, _special = { additional_special_tokens = {} } }, TokenizerMT)
  config = config or {}
  rawset(self, "name_or_path", name_or_path or "")
  rawset(self, "model_max_length", tonumber(config.model_max_length) or VERY_LARGE_INTEGER)
  if rawget(self, "model_max_length") > VERY_LARGE_INTEGER then rawset(self, "model_max_length", VERY_LARGE_INTEGER) end
  rawset(self, "padding_side", config.padding_side or "right")
  rawset(self, "truncation_side", config.truncation_side or "right")
  local template, template_source = chat.from_config(config.chat_template, chat_template_text)
  rawset(self, "chat_template", template)
  rawset(self, "_chat_template_source", template_source)
  rawset(self, "clean_up_tokenization_spaces", config.clean_up_tokenization_spaces == true)
  rawset(self, "is_fast", true)
  rawset(self, "init_kwargs", config)
  local names = config.model_input_names
  if type(names) ~= "table" then
    names = { "input_ids", "attention_mask" }
    local cls = type(config.tokenizer_class) == "string" and config.tokenizer_class or ""
    for _, prefix in ipairs(TYPE_IDS_CLASSES) do
      if cls:sub(1, #prefix) == prefix then names = { "input_ids", "token_type_ids", "attention_mask" } break end
    end
  end
  rawset(self, "model_input_names", names)
  -- Tokens listed in added_tokens_decoder that tokenizer.json lacks are added first.
  if type(config.added_tokens_decoder) == "table" then
    local ids = {}
    for id in pairs(config.added_tokens_decoder) do ids[#ids + 1] = tonumber(id) end
    table.sort(ids)
    local list = {}
    for _, id in ipairs(ids) do
      local e = config.added_tokens_decoder[tostring(id)] or config.added_tokens_decoder[id]
      if type(e) == "table" and type(e.content) == "string" and native:token_to_id(e.content) == nil then
        list[#list + 1] = { content = e.content, special = e.special == true, single_word = e.single_word == true,
          lstrip = e.lstrip == true, rstrip = e.rstrip == true, normalized = e.normalized }
      end
    end
    if #list > 0 then native:add_tokens(list) end
  end
  for _, n in ipairs(SPECIAL_NAMES) do self._special[n] = token_text(config[n]) end
  -- A role the config leaves unset takes the conventional token of that role when the file has it
  -- as a special token, as the model classes' defaults give it (BertTokenizer's [PAD], T5's <pad>,
  -- Llama's <s>/</s>, GPT-2's <|endoftext|> ...).
  local special_added = {}
  for _, t in ipairs(native:added_tokens()) do if t.special then special_added[t.content] = true end end
  local cls = type(config.tokenizer_class) == "string" and config.tokenizer_class or ""
  if cls:match("^GPT2") or cls:match("^GPTNeoX") or cls:match("^CodeGen") then
    if native:token_to_id("<|endoftext|>") then special_added["<|endoftext|>"] = true end
  end
  for role, names in pairs(ROLE_DEFAULTS) do
    if self._special[role] == nil then
      for _, name in ipairs(names) do
        if special_added[name] then self._special[role] = name break end
      end
    end
  end
  if type(config.additional_special_tokens) == "table" then
    for _, v in ipairs(config.additional_special_tokens) do
      self._special.additional_special_tokens[#self._special.additional_special_tokens + 1] = token_text(v)
    end
  end
  -- As transformers does at init: the configured special tokens become special added tokens (an
  -- existing vocabulary entry keeps its id), so they match whole and skip_special_tokens drops them.
  local specials, known = {}, {}
  for _, t in ipairs(native:added_tokens()) do known[t.content] = t.special end
  for _, t in ipairs(Tokenizer.all_special_tokens_list(self)) do
    if not known[t] then specials[#specials + 1] = { content = t, special = true, normalized = false } end
  end
  if #specials > 0 then native:add_tokens(specials, true) end
  -- add_bos_token / add_eos_token given in the config rebuild the template, as transformers'
  -- update_post_processor does.
  if config.add_bos_token ~= nil or config.add_eos_token ~= nil then
    rawset(self, "add_bos_token", config.add_bos_token == true)
    rawset(self, "add_eos_token", config.add_eos_token == true)
    Tokenizer.update_post_processor(self)
  end
  return self
end

---@class AutoTokenizer
local AutoTokenizer = {}

local FROM_PRETRAINED = { use_fast = "boolean", trust_remote_code = "boolean", padding_side = "string",
  truncation_side = "string", model_max_length = "number", legacy = "boolean", add_prefix_space = "boolean" }
for _, n in ipairs(SPECIAL_NAMES) do FROM_PRETRAINED[n] = "string" end

local function file_exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

--- AutoTokenizer.from_pretrained(folder_or_hub_id [, opts]): tokenizer.json with
--- tokenizer_config.json and special_tokens_map.json when present. Hub ids go through
--- huggingface_hub (revision, token, cache_dir, local_files_only, ... in opts).
function AutoTokenizer.from_pretrained(name_or_path, opts)
  if type(name_or_path) ~= "string" then
    error(string.format("bad argument #1 to 'from_pretrained' (folder or hub id expected, got %s)", type(name_or_path)), 2)
  end
  local hub = require "huggingface_hub"
  local schema = {}
  for k, v in pairs(FROM_PRETRAINED) do schema[k] = v end
  for k, v in pairs(hub.DOWNLOAD_OPTIONS) do schema[k] = v end
  sky_core.check_options(opts, schema, "from_pretrained")
  opts = opts or {}
  local folder, json_path
  if name_or_path:match("%.json$") and file_exists(name_or_path) then
    json_path = name_or_path
    folder = name_or_path:match("^(.*)/[^/]*$") or "."
  else
    folder = hub.resolve_model_folder(name_or_path,
      { "tokenizer.json", { "tokenizer_config.json", optional = true }, { "special_tokens_map.json", optional = true },
        { "chat_template.jinja", optional = true } },
      hub.download_options(opts))
    json_path = folder .. "/tokenizer.json"
  end
  local native = core.from_file(json_path)
  local config = (not name_or_path:match("%.json$")) and read_json(folder .. "/tokenizer_config.json") or {}
  local stm = (not name_or_path:match("%.json$")) and read_json(folder .. "/special_tokens_map.json") or {}
  for k, v in pairs(stm) do if config[k] == nil then config[k] = v end end
  for k, v in pairs(opts) do if FROM_PRETRAINED[k] and k ~= "use_fast" and k ~= "trust_remote_code" then config[k] = v end end
  local jinja_text
  if not name_or_path:match("%.json$") then
    local f = io.open(folder .. "/chat_template.jinja", "rb")
    if f then
      jinja_text = f:read("*a")
      f:close()
    end
  end
  return new_tokenizer(native, config, name_or_path, jinja_text)
end

M.AutoTokenizer = AutoTokenizer

--- PreTrainedTokenizerFast { tokenizer_file = path } or { tokenizer_object = native }, plus
--- special tokens and model_max_length/padding_side as keyword options.
local PreTrainedTokenizerFast = setmetatable({
  from_pretrained = AutoTokenizer.from_pretrained,
}, {
  __call = function(_, opts)
    if type(opts) ~= "table" then error("PreTrainedTokenizerFast expects an option table", 2) end
    local native = opts.tokenizer_object
    if native == nil then
      if type(opts.tokenizer_file) ~= "string" then error("PreTrainedTokenizerFast needs tokenizer_file or tokenizer_object", 2) end
      native = core.from_file(opts.tokenizer_file)
    end
    local config = {}
    for k, v in pairs(opts) do if k ~= "tokenizer_object" and k ~= "tokenizer_file" then config[k] = v end end
    return new_tokenizer(native, config, opts.tokenizer_file or "")
  end,
})
M.PreTrainedTokenizerFast = PreTrainedTokenizerFast

-- ---- calling the tokenizer ------------------------------------------------------------------------

local CALL = { text_pair = "string|table", add_special_tokens = "boolean", padding = "any", truncation = "any",
  max_length = "number", stride = "number", pad_to_multiple_of = "number", return_tensors = "any",
  return_token_type_ids = "boolean", return_attention_mask = "boolean", return_overflowing_tokens = "boolean",
  return_special_tokens_mask = "boolean", return_offsets_mapping = "boolean", return_length = "boolean",
  verbose = "boolean", is_split_into_words = "boolean", padding_side = "string", text_target = "any" }

local function native_options(self, opts, batched, n_texts)
  local o = { add_special_tokens = opts.add_special_tokens ~= false }
  local max_length = opts.max_length
  if max_length ~= nil and (max_length ~= math.floor(max_length) or max_length < 0) then
    error("max_length must be a non-negative integer", 3)
  end
  -- padding: false | true | "longest" | "max_length" | "do_not_pad"
  local padding = opts.padding
  if padding == true then padding = "longest" end
  if padding == false or padding == nil then padding = "do_not_pad" end
  if padding ~= "longest" and padding ~= "max_length" and padding ~= "do_not_pad" then
    error(string.format("padding must be true, false, 'longest', 'max_length' or 'do_not_pad' (got %s)", tostring(opts.padding)), 3)
  end
  -- truncation: false | true | "longest_first" | "only_first" | "only_second" | "do_not_truncate"
  local truncation = opts.truncation
  if truncation == nil and max_length ~= nil and padding == "do_not_pad" then truncation = true end
  if truncation == true then truncation = "longest_first" end
  if truncation == false or truncation == nil then truncation = "do_not_truncate" end
  if truncation ~= "longest_first" and truncation ~= "only_first" and truncation ~= "only_second" and truncation ~= "do_not_truncate" then
    error(string.format("truncation must be true, false, 'longest_first', 'only_first', 'only_second' or 'do_not_truncate' (got %s)", tostring(opts.truncation)), 3)
  end
  local limit = max_length
  if limit == nil and (truncation ~= "do_not_truncate" or padding == "max_length") then
    if self.model_max_length < VERY_LARGE_INTEGER then limit = self.model_max_length end
  end
  if truncation ~= "do_not_truncate" and limit ~= nil then
    o.truncation = { max_length = limit, stride = opts.stride or 0, strategy = truncation, direction = self.truncation_side }
  end
  if padding == "max_length" and limit == nil then padding = "do_not_pad" end
  if padding ~= "do_not_pad" then
    local pad = self._special.pad_token
    local pad_id = pad and self._tok:token_to_id(pad)
    if pad == nil or pad_id == nil then
      error("Asking to pad but the tokenizer does not have a padding token. Please select a token to use as " ..
        "`pad_token` `(tok.pad_token = tok.eos_token e.g.)` or add a new pad token via " ..
        "`tok:add_special_tokens({pad_token = '[PAD]'})`.", 3)
    end
    o.padding = { pad_id = pad_id, pad_token = pad, pad_type_id = 0, pad_to_multiple_of = opts.pad_to_multiple_of or 0,
      direction = opts.padding_side or self.padding_side, length = padding == "max_length" and limit or nil }
  end
  local names = self.model_input_names
  local has = {}
  for _, n in ipairs(names) do has[n] = true end
  if opts.return_attention_mask == nil then o.return_attention_mask = has.attention_mask == true
  else o.return_attention_mask = opts.return_attention_mask end
  if opts.return_token_type_ids == nil then o.return_token_type_ids = has.token_type_ids == true
  else o.return_token_type_ids = opts.return_token_type_ids end
  o.return_offsets_mapping = opts.return_offsets_mapping == true
  o.return_special_tokens_mask = opts.return_special_tokens_mask == true
  o.threads = batched and math.min(core.hardware_threads(), math.max(1, math.floor(n_texts / 8))) or 1
  return o
end

local function encode_call(self, text, opts, fname)
  check_self(self, fname)
  sky_core.check_options(opts, CALL, fname, 3)
  opts = opts or {}
  if opts.return_tensors ~= nil then error("not supported yet: return_tensors (the result holds Lua lists)", 3) end
  if opts.return_overflowing_tokens then error("not supported yet: return_overflowing_tokens", 3) end
  if opts.is_split_into_words then error("not supported yet: is_split_into_words", 3) end
  local batched = type(text) == "table"
  if type(text) ~= "string" and not batched then
    error(string.format("bad argument #1 to '%s' (string or list of strings expected, got %s)", fname, type(text)), 3)
  end
  local pair = opts.text_pair
  if pair ~= nil and type(pair) ~= type(text) then
    error("text_pair must be a string when text is a string, a list when text is a list", 3)
  end
  local o = native_options(self, opts, batched, batched and #text or 1)
  local out = self._tok:encode(text, pair, o)
  if opts.return_length then
    if batched then
      out.length = {}
      for i, ids in ipairs(out.input_ids) do out.length[i] = #ids end
    else
      out.length = #out.input_ids
    end
  end
  return out
end

TokenizerMT.__call = function(self, text, opts) return encode_call(self, text, opts, "__call") end

--- tok:encode(text [, opts]) -> list of ids (opts as for tok(text, opts); text_pair too).
function Tokenizer:encode(text, opts)
  if type(text) ~= "string" then
    error(string.format("bad argument #1 to 'encode' (string expected, got %s)", type(text)), 2)
  end
  return encode_call(self, text, opts, "encode").input_ids
end

local function clean_up_tokenization(s)
  return (s:gsub(" %.", "."):gsub(" %?", "?"):gsub(" !", "!"):gsub(" ,", ","):gsub(" ' ", "'")
    :gsub(" n't", "n't"):gsub(" 'm", "'m"):gsub(" 's", "'s"):gsub(" 've", "'ve"):gsub(" 're", "'re"))
end

local DECODE = { skip_special_tokens = "boolean", clean_up_tokenization_spaces = "boolean" }

--- tok:decode(ids [, {skip_special_tokens=, clean_up_tokenization_spaces=}]) -> string
function Tokenizer:decode(ids, opts)
  check_self(self, "decode")
  sky_core.check_options(opts, DECODE, "decode")
  opts = opts or {}
  if type(ids) == "number" then ids = { ids } end
  if type(ids) ~= "table" then error(string.format("bad argument #1 to 'decode' (list of ids expected, got %s)", type(ids)), 2) end
  local s = self._tok:decode(ids, opts.skip_special_tokens == true)
  local clean = opts.clean_up_tokenization_spaces
  if clean == nil then clean = self.clean_up_tokenization_spaces end
  if clean then s = clean_up_tokenization(s) end
  return s
end

--- tok:batch_decode(list_of_id_lists [, opts]) -> list of strings
function Tokenizer:batch_decode(seqs, opts)
  check_self(self, "batch_decode")
  if type(seqs) ~= "table" then error("bad argument #1 to 'batch_decode' (list of id lists expected)", 2) end
  local out = {}
  for i, ids in ipairs(seqs) do out[i] = self:decode(ids, opts) end
  return out
end

local function unk_id(self)
  local u = self._special.unk_token
  return u and self._tok:token_to_id(u) or nil
end

--- tok:convert_tokens_to_ids(token | list) -> id | list (unknown tokens give unk_token_id)
function Tokenizer:convert_tokens_to_ids(tokens)
  check_self(self, "convert_tokens_to_ids")
  if tokens == nil then return nil end
  if type(tokens) == "string" then
    local id = self._tok:token_to_id(tokens)
    if id == nil then return unk_id(self) end
    return id
  end
  local out = {}
  for i, t in ipairs(tokens) do
    local id = self._tok:token_to_id(t)
    if id == nil then id = unk_id(self) end
    out[i] = id
  end
  return out
end

--- tok:convert_ids_to_tokens(id | list [, {skip_special_tokens=}]) -> token | list
function Tokenizer:convert_ids_to_tokens(ids, opts)
  check_self(self, "convert_ids_to_tokens")
  local skip = opts and opts.skip_special_tokens
  if type(ids) == "number" then return self._tok:id_to_token(ids) end
  local special = {}
  if skip then for _, t in ipairs(self:all_special_tokens_list()) do special[t] = true end end
  local out = {}
  for _, id in ipairs(ids) do
    local t = self._tok:id_to_token(id)
    if t ~= nil and not special[t] then out[#out + 1] = t end
  end
  return out
end

--- tok:tokenize(text [, opts]) -> list of token strings (no special tokens by default)
function Tokenizer:tokenize(text, opts)
  check_self(self, "tokenize")
  local o = { add_special_tokens = false }
  for k, v in pairs(opts or {}) do o[k] = v end
  o.return_offsets_mapping = nil
  local native = native_options(self, o, false, 1)
  native.return_tokens = true
  return self._tok:encode(text, o.text_pair, native).tokens
end

function Tokenizer:all_special_tokens_list()
  local seen, out = {}, {}
  for _, n in ipairs(SPECIAL_NAMES) do
    local t = self._special[n]
    if t and not seen[t] then seen[t] = true out[#out + 1] = t end
  end
  for _, t in ipairs(self._special.additional_special_tokens or {}) do
    if not seen[t] then seen[t] = true out[#out + 1] = t end
  end
  return out
end

--- tok:add_tokens(token | list [, {special_tokens=}]) -> number of tokens added to the vocabulary
function Tokenizer:add_tokens(tokens, opts)
  check_self(self, "add_tokens")
  if type(tokens) == "string" then tokens = { tokens } end
  return self._tok:add_tokens(tokens, opts and opts.special_tokens == true)
end

--- tok:add_special_tokens({pad_token = "[PAD]", additional_special_tokens = {...}}) -> number added
function Tokenizer:add_special_tokens(map)
  check_self(self, "add_special_tokens")
  if type(map) ~= "table" then error("bad argument #1 to 'add_special_tokens' (table expected)", 2) end
  local list = {}
  for k, v in pairs(map) do
    if IS_SPECIAL_NAME[k] then
      if type(v) ~= "string" then error(k .. " must be a string", 2) end
      self._special[k] = v
      list[#list + 1] = v
    elseif k == "additional_special_tokens" then
      for _, t in ipairs(v) do
        list[#list + 1] = t
        table.insert(self._special.additional_special_tokens, t)
      end
    else
      error(string.format("add_special_tokens: unknown key '%s'", tostring(k)), 2)
    end
  end
  return self._tok:add_tokens(list, true)
end

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

--- Rebuilds the post-processor from add_bos_token/add_eos_token and bos_token/eos_token
--- (transformers' update_post_processor).
function Tokenizer:update_post_processor()
  check_self(self, "update_post_processor")
  local bos, eos = self._special.bos_token, self._special.eos_token
  if self.add_bos_token and bos == nil then error("add_bos_token = true but bos_token = nil", 2) end
  if self.add_eos_token and eos == nil then error("add_eos_token = true but eos_token = nil", 2) end
  local function piece(kind, id, type_id)
    if kind == "seq" then return string.format('{"Sequence":{"id":"%s","type_id":%d}}', id, type_id) end
    return string.format('{"SpecialToken":{"id":%s,"type_id":%d}}', json_string(id), type_id)
  end
  local single, pair, specials = {}, {}, {}
  if self.add_bos_token then single[#single + 1] = piece("tok", bos, 0) end
  single[#single + 1] = piece("seq", "A", 0)
  if self.add_eos_token then single[#single + 1] = piece("tok", eos, 0) end
  for _, p in ipairs(single) do pair[#pair + 1] = p end
  if self.add_bos_token then pair[#pair + 1] = piece("tok", bos, 1) end
  pair[#pair + 1] = piece("seq", "B", 1)
  if self.add_eos_token then pair[#pair + 1] = piece("tok", eos, 1) end
  local function entry(t)
    local id = self._tok:token_to_id(t)
    if id == nil then error(string.format("special token %q is not in the vocabulary", t), 3) end
    return string.format('%s:{"id":%s,"ids":[%d],"tokens":[%s]}', json_string(t), json_string(t), id, json_string(t))
  end
  if self.add_bos_token then specials[#specials + 1] = entry(bos) end
  if self.add_eos_token and eos ~= bos then specials[#specials + 1] = entry(eos) end
  self._tok:set_post_processor(string.format('{"type":"TemplateProcessing","single":[%s],"pair":[%s],"special_tokens":{%s}}',
    table.concat(single, ","), table.concat(pair, ","), table.concat(specials, ",")))
end

function Tokenizer:num_special_tokens_to_add(pair)
  check_self(self, "num_special_tokens_to_add")
  return self._tok:num_special_tokens_to_add(pair == true)
end

function Tokenizer:get_added_vocab()
  check_self(self, "get_added_vocab")
  local out = {}
  for _, t in ipairs(self._tok:added_tokens()) do out[t.content] = t.id end
  return out
end

--- The native tokenizer (skyrun.Tokenizer), as HF's backend_tokenizer.
function Tokenizer:backend_tokenizer() return self._tok end

--- tok:apply_chat_template(conversation [, opts]) as transformers 5.x (lua/transformers/chat_template.lua).
function Tokenizer:apply_chat_template(conversation, opts)
  check_self(self, "apply_chat_template")
  return chat.apply_chat_template(self, conversation, opts)
end

--- tok:get_chat_template([name_or_template [, tools]]) -> the template text apply_chat_template uses.
function Tokenizer:get_chat_template(chat_template, tools)
  check_self(self, "get_chat_template")
  return chat.get_chat_template(self, chat_template, tools)
end

local function added_token_entry(t)
  return { content = t.content, lstrip = t.lstrip, normalized = t.normalized, rstrip = t.rstrip,
    single_word = t.single_word, special = t.special }
end

--- tok:push_to_hub(repo_id [, {commit_message=, private=, token=, revision=, ...}]): the tokenizer's
--- files saved and uploaded in one commit ("Upload tokenizer"), the repository created if missing.
function Tokenizer:push_to_hub(repo_id, opts)
  check_self(self, "push_to_hub")
  return require("transformers.hub_push").push(self, "tokenizer", repo_id, opts, "push_to_hub")
end

--- tok:save_pretrained(dir) -> list of the files written: tokenizer.json, tokenizer_config.json
--- (with the chat template, or chat_template.jinja when it was loaded from one) and
--- special_tokens_map.json, as transformers writes them and can load them again.
function Tokenizer:save_pretrained(dir)
  check_self(self, "save_pretrained")
  if type(dir) ~= "string" or dir == "" then error("bad argument #1 to 'save_pretrained' (folder path expected)", 2) end
  local tcore = require "transformers.train_core"
  require("sky.fs").makedirs(dir)
  local config = {}
  for k, v in pairs(self.init_kwargs or {}) do config[k] = v end
  config.chat_template = nil
  local decoder = {}
  for _, t in ipairs(self._tok:added_tokens()) do decoder[tostring(t.id)] = added_token_entry(t) end
  config.added_tokens_decoder = decoder
  local stm = {}
  for _, n in ipairs(SPECIAL_NAMES) do
    config[n] = self._special[n]
    stm[n] = self._special[n]
  end
  local extra = self._special.additional_special_tokens or {}
  config.additional_special_tokens = #extra > 0 and setmetatable(extra, { __jsontype = "array" }) or nil
  stm.additional_special_tokens = config.additional_special_tokens
  config.model_max_length = self.model_max_length
  config.padding_side = self.padding_side
  config.truncation_side = self.truncation_side
  config.clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
  config.tokenizer_class = config.tokenizer_class or "PreTrainedTokenizerFast"
  if self.add_bos_token ~= nil then config.add_bos_token = self.add_bos_token end
  if self.add_eos_token ~= nil then config.add_eos_token = self.add_eos_token end
  local in_config, jinja_text = chat.to_files(self.chat_template, self._chat_template_source)
  config.chat_template = in_config
  local written = {}
  local function write(name, data)
    tcore.write_file_atomic(dir .. "/" .. name, data)
    written[#written + 1] = dir .. "/" .. name
  end
  write("tokenizer_config.json", tcore.json_encode(config, 2))
  write("special_tokens_map.json", tcore.json_encode(stm, 2))
  write("tokenizer.json", self._tok:to_json())
  if jinja_text ~= nil then write("chat_template.jinja", jinja_text) end
  return written
end

M.is_tokenizer = is_tokenizer
return M
