-- transformers.chat_template: tok:apply_chat_template with transformers 5.x's arguments, defaults
-- and checks (get_chat_template, render_jinja_template, the assistant mask from `{% generation %}`
-- spans), on the native Jinja2 engine (src/jinja, `require "jinja.core"`). Conversations and
-- tools may be Lua tables or JSON text; JSON text keeps its key order (Lua tables give sorted
-- keys), so `tojson` in a template writes what transformers writes.

local jinja = require "jinja.core"
local sky_core = require "sky.core"

local M = {}

local NO_TEMPLATE = "Cannot use chat template functions because tokenizer.chat_template is not set and no template " ..
  "argument was passed! For information about writing templates and setting the tokenizer.chat_template attribute, " ..
  "please see the documentation at https://huggingface.co/docs/transformers/main/en/chat_templating"

local compiled = setmetatable({}, { __mode = "v" })  -- template source -> JinjaTemplate

--- The compiled template for a source text (cached). Syntax errors name line and column.
function M.compile(source)
  local t = compiled[source]
  if t == nil then
    t = jinja.template(source)
    compiled[source] = t
  end
  return t
end

--- A tokenizer's chat template by name or text, as transformers' get_chat_template picks it:
--- a table of named templates gives `chat_template` by name, else "tool_use" when tools are
--- given, else "default".
function M.get_chat_template(tok, chat_template, tools)
  local own = tok.chat_template
  if type(own) == "table" then
    if chat_template ~= nil and own[chat_template] ~= nil then return own[chat_template] end
    if chat_template == nil then
      if tools ~= nil and own.tool_use ~= nil then return own.tool_use end
      if own.default ~= nil then return own.default end
      local names = {}
      for k in pairs(own) do names[#names + 1] = "'" .. tostring(k) .. "'" end
      table.sort(names)
      error("This model has multiple chat templates with no default specified! Please either pass a chat template " ..
        "or the name of the template you wish to use to the `chat_template` argument. Available template names are [" ..
        table.concat(names, ", ") .. "].", 3)
    end
    return chat_template
  end
  if chat_template ~= nil then return chat_template end
  if own == nil then error(NO_TEMPLATE, 3) end
  return own
end

local function is_jinja_value(v) return type(v) == "userdata" and tostring(v):sub(1, 11) == "JinjaValue(" end

-- JSON text becomes a parsed (ordered) value; Lua values pass through.
local function as_value(v, what)
  if type(v) == "string" then
    local ok, parsed = pcall(jinja.json, v)
    if not ok then error(string.format("%s: not valid JSON text (%s)", what, tostring(parsed)), 4) end
    return parsed
  end
  return v
end

local function kind_of(v)
  if is_jinja_value(v) then
    local k = v:kind()
    if k == "list" or k == "tuple" then return "list" end
    if k == "dict" then return "dict" end
    return k
  end
  if type(v) == "table" then
    if next(v) == nil or v[1] ~= nil then return "list" end
    return "dict"
  end
  return type(v)
end

local function field(v, key)
  if is_jinja_value(v) then return v:get(key) end
  return v[key]
end

local function length(v)
  if is_jinja_value(v) then return v:len() end
  return #v
end

local BAD_CONVERSATION = "a conversation is a list of messages, each a table (or JSON object) with a string 'role' " ..
  "and a 'content'"

-- Checks one conversation: a list of {role = string, content = ...} rows.
local function check_conversation(conv, label)
  if kind_of(conv) ~= "list" then
    error(string.format("apply_chat_template: %s is a %s, not a list of messages (%s)", label, kind_of(conv),
      BAD_CONVERSATION), 4)
  end
  for i = 1, length(conv) do
    local m = field(conv, i)
    if kind_of(m) ~= "dict" then
      error(string.format("apply_chat_template: %s message %d is a %s, not a table with role and content (%s)", label, i,
        kind_of(m), BAD_CONVERSATION), 4)
    end
    local role = field(m, "role")
    local role_kind = role ~= nil and kind_of(role) or "nil"
    if role_kind ~= "str" and role_kind ~= "string" then
      error(string.format("apply_chat_template: %s message %d has no string 'role' (%s)", label, i, BAD_CONVERSATION), 4)
    end
    local has_content = is_jinja_value(m) and m:get("content") ~= nil or (not is_jinja_value(m) and m.content ~= nil)
    local has_calls = field(m, "tool_calls") ~= nil
    if not has_content and not has_calls then
      error(string.format("apply_chat_template: %s message %d has neither 'content' nor 'tool_calls' (%s)", label, i,
        BAD_CONVERSATION), 4)
    end
  end
end

-- Whether the input is a batch (a list of conversations), as transformers decides it.
local function is_batched(conv)
  if kind_of(conv) ~= "list" or length(conv) == 0 then return false end
  return kind_of(field(conv, 1)) == "list"
end

-- Token index (0-based) whose offsets hold code point pos, or nil (Encoding.char_to_token).
local function char_to_token(offsets, pos)
  local lo, hi = 1, #offsets
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    local o = offsets[mid]
    if pos < o[1] then hi = mid - 1
    elseif pos >= o[2] then lo = mid + 1
    else
      -- the first token holding pos (empty-offset tokens never hold it)
      while mid > 1 and offsets[mid - 1][1] <= pos and pos < offsets[mid - 1][2] do mid = mid - 1 end
      return mid - 1
    end
  end
  for i, o in ipairs(offsets) do
    if pos >= o[1] and pos < o[2] then return i - 1 end
  end
  return nil
end

-- transformers' assistant_masks from the generation spans and the tokens' offsets.
local function assistant_mask(n_tokens, offsets, spans)
  local mask = {}
  for i = 1, n_tokens do mask[i] = 0 end
  for _, s in ipairs(spans) do
    local first = char_to_token(offsets, s[1])
    local last = char_to_token(offsets, s[2] - 1)
    if first == nil then break end
    local stop = (last ~= nil and last ~= 0) and last + 1 or n_tokens
    for t = first, stop - 1 do mask[t + 1] = 1 end
  end
  return mask
end

local APPLY = {
  tools = "any", documents = "any", chat_template = "string", add_generation_prompt = "boolean",
  continue_final_message = "boolean", tokenize = "boolean", padding = "any", truncation = "any",
  max_length = "number", return_tensors = "any", return_dict = "boolean", return_assistant_tokens_mask = "boolean",
  tokenizer_kwargs = "table",
}

--- tok:apply_chat_template(conversation [, opts]); see the module comment. Keys of opts other than
--- transformers' arguments reach the template as variables.
function M.apply_chat_template(tok, conversation, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #2 to 'apply_chat_template' (option table expected)", 2) end
  local known, extra_keys = {}, {}
  for k, v in pairs(opts) do
    if APPLY[k] then known[k] = v else extra_keys[k] = v end
  end
  sky_core.check_options(known, APPLY, "apply_chat_template", 3)
  local tokenize = opts.tokenize ~= false
  local return_dict = opts.return_dict ~= false
  if not tokenize then return_dict = false end
  local want_mask = opts.return_assistant_tokens_mask == true
  if want_mask and not return_dict then
    error("`return_assistant_tokens_mask=True` is incompatible with `return_dict=False` and `tokenize=False`", 2)
  end
  if opts.return_tensors ~= nil then error("not supported yet: return_tensors (the result holds Lua lists)", 2) end
  local cfm = opts.continue_final_message == true
  local agp = opts.add_generation_prompt == true
  if cfm and agp then
    error("continue_final_message and add_generation_prompt are not compatible. Use continue_final_message when you " ..
      "want the model to continue the final message, and add_generation_prompt when you want to add a header that " ..
      "will prompt it to start a new assistant message instead.", 2)
  end
  if cfm and want_mask then error("continue_final_message is not compatible with return_assistant_tokens_mask.", 2) end

  conversation = as_value(conversation, "conversation")
  local tools = opts.tools ~= nil and as_value(opts.tools, "tools") or nil
  local documents = opts.documents ~= nil and as_value(opts.documents, "documents") or nil
  if tools ~= nil and kind_of(tools) ~= "list" then error("apply_chat_template: tools must be a list of tool schemas", 2) end
  if documents ~= nil then
    if kind_of(documents) ~= "list" then error("Documents should be a list of dicts with 'title' and 'text' keys!", 2) end
    for i = 1, length(documents) do
      if kind_of(field(documents, i)) ~= "dict" then error("Documents should be a list of dicts with 'title' and 'text' keys!", 2) end
    end
  end
  local source = M.get_chat_template(tok, opts.chat_template, tools)
  local template = M.compile(source)

  local batched = is_batched(conversation)
  local conversations = {}
  if batched then
    for i = 1, length(conversation) do conversations[i] = field(conversation, i) end
  else
    conversations[1] = conversation
  end
  -- Special tokens first, then the caller's keywords (which win), as transformers merges them.
  local extra = {}
  for _, name in ipairs { "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token" } do
    if tok[name] ~= nil then extra[name] = tok[name] end
  end
  local more = tok.additional_special_tokens
  if more and #more > 0 then extra.additional_special_tokens = setmetatable(more, { __jsontype = "array" }) end
  for k, v in pairs(extra_keys) do extra[k] = v end

  local texts, all_spans = {}, {}
  for i, conv in ipairs(conversations) do
    check_conversation(conv, batched and ("conversation " .. i) or "the conversation")
    local text, spans = template:render_chat({ messages = conv, tools = tools, documents = documents,
      add_generation_prompt = agp, continue_final_message = cfm, extra = extra },
      { track_generation = want_mask })
    texts[i], all_spans[i] = text, spans
  end
  if not tokenize then return batched and texts or texts[1] end

  local call = { add_special_tokens = false, padding = opts.padding, truncation = opts.truncation,
    max_length = opts.max_length }
  for k, v in pairs(opts.tokenizer_kwargs or {}) do call[k] = v end
  local asked_offsets = call.return_offsets_mapping
  if want_mask then call.return_offsets_mapping = true end
  local out = tok(batched and texts or texts[1], call)
  if not return_dict then return out.input_ids end
  if want_mask then
    if batched then
      out.assistant_masks = {}
      for i = 1, #texts do
        out.assistant_masks[i] = assistant_mask(#out.input_ids[i], out.offset_mapping[i], all_spans[i])
      end
    else
      out.assistant_masks = assistant_mask(#out.input_ids, out.offset_mapping, all_spans[1])
    end
    if not asked_offsets then out.offset_mapping = nil end
  end
  return out
end

-- ---- loading and saving -------------------------------------------------------------------------

--- The chat template from tokenizer_config.json's value (a string, or a list of {name, template})
--- and chat_template.jinja's text (which wins, as in transformers). Returns the template (string
--- or table of name -> template) and where it came from ("config" or "jinja_file").
function M.from_config(config_value, jinja_text)
  if jinja_text ~= nil then return jinja_text, "jinja_file" end
  if type(config_value) == "string" then return config_value, "config" end
  if type(config_value) == "table" then
    local named = {}
    for i, e in ipairs(config_value) do
      if type(e) ~= "table" or type(e.name) ~= "string" or type(e.template) ~= "string" then
        error(string.format("tokenizer_config.json: chat_template[%d] must be {\"name\": ..., \"template\": ...}", i), 3)
      end
      named[e.name] = e.template
    end
    return named, "config"
  end
  return nil, nil
end

--- What save_pretrained writes for a chat template: the tokenizer_config.json value (nil when it
--- goes to chat_template.jinja) and the chat_template.jinja text (nil when it goes in the config).
function M.to_files(template, source)
  if template == nil then return nil, nil end
  if type(template) == "string" then
    if source == "jinja_file" then return nil, template end
    return template, nil
  end
  local names = {}
  for k in pairs(template) do names[#names + 1] = k end
  table.sort(names)
  local list = setmetatable({}, { __jsontype = "array" })
  for _, n in ipairs(names) do list[#list + 1] = { name = n, template = template[n] } end
  return list, nil
end

return M
