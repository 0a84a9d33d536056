-- tok:apply_chat_template and tok:save_pretrained with transformers 5.x's behaviour: where the
-- template comes from (option, tokenizer_config.json string or named list, chat_template.jinja),
-- return shapes (return_dict defaults to true), extra keywords as template variables, JSON text
-- keeping key order, continue_final_message, assistant masks from `{% generation %}` spans, and
-- the errors for bad templates and bad conversations. Rendering itself is checked against
-- jinja2 by test_chat_template_goldens.lua.
local T = require "testlib"
local transformers = require "transformers"
local tcore = require "transformers.train_core"

local data = assert(os.getenv("SKYRUN_SHARED_DATA"), "SKYRUN_SHARED_DATA not set")
local build = os.getenv("SKYRUN_BUILD_ROOT")

local words = require "word_tokenizer"
local function word_tokenizer(dir, config) return words.write(dir, config) end

-- The assistant's words are inside {% generation %}; "<|end|>" closes every turn.
local GEN_TEMPLATE = "{% for m in messages %}{{ m.role }}: {% if m.role == 'assistant' %}{% generation %}" ..
  "{{ m.content }} <|end|>{% endgeneration %}{% else %}{{ m.content }} <|end|>{% endif %}\n{% endfor %}" ..
  "{% if add_generation_prompt %}assistant: {% endif %}"

local CHAT = {
  { role = "user", content = "hi there" },
  { role = "assistant", content = "hello how are you" },
  { role = "user", content = "fine thanks" },
  { role = "assistant", content = "bye" },
}

local function word_tok(template)
  local dir = word_tokenizer(T.tmpdir() .. "/tok", { bos_token = "<s>", eos_token = "</s>", pad_token = "<pad>",
    chat_template = template or GEN_TEMPLATE })
  return transformers.AutoTokenizer.from_pretrained(dir), dir
end

T.test("return_dict defaults to true; tokenize=false gives the text; return_dict=false the ids", function()
  local tok = word_tok()
  local text = tok:apply_chat_template(CHAT, { tokenize = false })
  -- trim_blocks eats the newline after {% endif %}, as in jinja2
  T.eq(text, "user: hi there <|end|>assistant: hello how are you <|end|>user: fine thanks <|end|>assistant: bye <|end|>")
  local out = tok:apply_chat_template(CHAT)
  T.eq(out.input_ids, tok:encode(text, { add_special_tokens = false }))
  T.eq(#out.attention_mask, #out.input_ids)
  T.eq(tok:apply_chat_template(CHAT, { return_dict = false }), out.input_ids)
  T.eq(tok:apply_chat_template({ CHAT[1] }, { tokenize = false, add_generation_prompt = true }),
    "user: hi there <|end|>assistant: ")
end)

T.test("assistant masks cover the {% generation %} spans, token by token", function()
  local tok = word_tok()
  local out = tok:apply_chat_template(CHAT, { return_assistant_tokens_mask = true })
  -- user: hi there <|end|> assistant: hello how are you <|end|> user: fine thanks <|end|> assistant: bye <|end|>
  T.eq(out.assistant_masks, { 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1 })
  T.eq(out.offset_mapping, nil)
  local batch = tok:apply_chat_template({ CHAT, { CHAT[1], CHAT[2] } }, { return_assistant_tokens_mask = true })
  T.eq(batch.assistant_masks[1], out.assistant_masks)
  T.eq(batch.assistant_masks[2], { 0, 0, 0, 0, 0, 1, 1, 1, 1, 1 })
  -- A real byte-level BPE: the masked tokens decode to exactly the assistant turns.
  local dir = T.tmpdir()
  T.write_file(dir .. "/tokenizer.json", T.read_file(data .. "/tokenizers/gpt2.json"))
  T.write_file(dir .. "/tokenizer_config.json", tcore.json_encode({ chat_template =
    "{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}" ..
    "{% else %}{{ m.content }}{% endif %}\n{% endfor %}" }))
  local gpt2 = transformers.AutoTokenizer.from_pretrained(dir)
  local chat = { { role = "user", content = "Wie geht's? 🙂" }, { role = "assistant", content = "Très bien, danke!" } }
  local o = gpt2:apply_chat_template(chat, { return_assistant_tokens_mask = true })
  local kept = {}
  for i, m in ipairs(o.assistant_masks) do if m == 1 then kept[#kept + 1] = o.input_ids[i] end end
  T.eq(gpt2:decode(kept), "Très bien, danke!")
  -- As in transformers: a span starting on a space that the byte-level offsets trim away maps to
  -- no token (char_to_token gives None), and the mask stays empty.
  chat[2].content = " Très bien"
  local masks = gpt2:apply_chat_template(chat, { return_assistant_tokens_mask = true }).assistant_masks
  for _, m in ipairs(masks) do T.eq(m, 0) end
end)

T.test("other keys reach the template; special tokens are variables; JSON text keeps key order", function()
  local tok = word_tok("{{ bos_token }}|{{ eos_token }}|{{ enable_thinking }}|{{ messages[0]|tojson }}|{{ tools|tojson }}")
  local text = tok:apply_chat_template({ { role = "user", content = "hi", zeta = 1, alpha = 2 } },
    { tokenize = false, enable_thinking = false, tools = '[{"type": "function", "function": {"name": "f", "description": "d"}}]' })
  T.eq(text, '<s>|</s>|False|{"alpha": 2, "content": "hi", "role": "user", "zeta": 1}|' ..
    '[{"type": "function", "function": {"name": "f", "description": "d"}}]')
  local ordered = tok:apply_chat_template('[{"role": "user", "zeta": 1, "content": "hi", "alpha": 2}]', { tokenize = false })
  T.contains(ordered, '{"role": "user", "zeta": 1, "content": "hi", "alpha": 2}')
  -- the caller's keywords win over special tokens, as in transformers
  T.contains(tok:apply_chat_template({ { role = "user", content = "x" } }, { tokenize = false, bos_token = "B" }), "B|</s>")
end)

T.test("continue_final_message leaves the last turn open; incompatible options are errors", function()
  local tok = word_tok("{% for m in messages %}{{ m.role }}: {{ m.content }} <|end|>\n{% endfor %}")
  T.eq(tok:apply_chat_template({ CHAT[1], { role = "assistant", content = "hello how" } },
    { tokenize = false, continue_final_message = true }), "user: hi there <|end|>\nassistant: hello how")
  T.raises(function() tok:apply_chat_template(CHAT, { continue_final_message = true, add_generation_prompt = true }) end,
    "continue_final_message and add_generation_prompt are not compatible")
  T.raises(function() tok:apply_chat_template(CHAT, { continue_final_message = true, return_assistant_tokens_mask = true }) end,
    "not compatible with return_assistant_tokens_mask")
  T.raises(function() tok:apply_chat_template(CHAT, { tokenize = false, return_assistant_tokens_mask = true }) end,
    "return_assistant_tokens_mask")
end)

T.test("the template comes from the option, the config (string or named list) or chat_template.jinja", function()
  local tok = word_tok("config {{ messages|length }}")
  T.eq(tok:apply_chat_template(CHAT, { tokenize = false }), "config 4")
  T.eq(tok:apply_chat_template(CHAT, { tokenize = false, chat_template = "option {{ messages[0].role }}" }), "option user")
  local dir = word_tokenizer(T.tmpdir() .. "/named", { chat_template = {
    { name = "default", template = "default {{ messages|length }}" }, { name = "tool_use", template = "tools {{ tools|length }}" },
    { name = "rag", template = "rag {{ documents[0].title }}" } } })
  local named = transformers.AutoTokenizer.from_pretrained(dir)
  T.eq(named:apply_chat_template(CHAT, { tokenize = false }), "default 4")
  T.eq(named:apply_chat_template(CHAT, { tokenize = false, tools = { { type = "function" } } }), "tools 1")
  T.eq(named:apply_chat_template(CHAT, { tokenize = false, chat_template = "rag", documents = { { title = "T", text = "x" } } }), "rag T")
  local nodefault = word_tokenizer(T.tmpdir() .. "/nodefault", { chat_template = { { name = "a", template = "x" } } })
  T.raises(function() transformers.AutoTokenizer.from_pretrained(nodefault):apply_chat_template(CHAT) end,
    "multiple chat templates with no default specified")
  T.write_file(dir .. "/chat_template.jinja", "from file {{ messages[-1].content }}")
  T.eq(transformers.AutoTokenizer.from_pretrained(dir):apply_chat_template(CHAT, { tokenize = false }), "from file bye")
  local none = transformers.AutoTokenizer.from_pretrained(word_tokenizer(T.tmpdir() .. "/none", {}))
  T.raises(function() none:apply_chat_template(CHAT) end, "tokenizer.chat_template is not set")
end)

T.test("bad templates name the line and column, or the unknown filter", function()
  local tok = word_tok()
  T.raises(function() tok:apply_chat_template(CHAT, { chat_template = "ok\n{% for m in messages %}\n{{ m.role + }}\n{% endfor %}" }) end,
    "TemplateSyntaxError: unexpected 'end of print statement' (line 3, column 13)")
  T.raises(function() tok:apply_chat_template(CHAT, { chat_template = "{% for m in messages %}{{ m }}" }) end,
    "(line 1, column 31)")
  T.raises(function() tok:apply_chat_template(CHAT, { chat_template = "\n  {{ messages|shout }}" }) end,
    "No filter named 'shout'. (line 2, column 15)")
  T.raises(function() tok:apply_chat_template(CHAT, { chat_template = "{{ raise_exception('no system role') }}" }) end,
    "TemplateError: no system role")
  T.raises(function() tok:apply_chat_template(CHAT, { chat_template = "{{ {'a': 1}|xmlattr }}" }) end,
    "not supported yet: the jinja2 filter 'xmlattr'")
end)

T.test("a conversation that is not a list of role/content rows is refused with the reason", function()
  local tok = word_tok()
  T.raises(function() tok:apply_chat_template("hello") end, "conversation: not valid JSON text")
  T.raises(function() tok:apply_chat_template({ role = "user", content = "hi" }) end,
    "the conversation is a dict, not a list of messages")
  T.raises(function() tok:apply_chat_template({ "hi", "there" }) end, "message 1 is a string, not a table")
  T.raises(function() tok:apply_chat_template({ { content = "hi" } }) end, "message 1 has no string 'role'")
  T.raises(function() tok:apply_chat_template({ { role = "user" } }) end, "message 1 has neither 'content' nor 'tool_calls'")
  T.raises(function() tok:apply_chat_template('[{"role": 1, "content": "x"}]') end, "message 1 has no string 'role'")
  T.raises(function() tok:apply_chat_template(CHAT, { tools = '{"name": "f"}' }) end, "tools must be a list")
end)

T.test("save_pretrained writes files that load back to the same tokenizer and template", function()
  local tok, src = word_tok()
  tok:add_special_tokens { additional_special_tokens = { "<tool>" } }
  local out = T.tmpdir() .. "/saved"
  local files = tok:save_pretrained(out)
  T.eq(#files, 3)
  local back = transformers.AutoTokenizer.from_pretrained(out)
  T.eq(back:apply_chat_template(CHAT), tok:apply_chat_template(CHAT))
  T.eq(back:encode("hi <tool> there </s>"), tok:encode("hi <tool> there </s>"))
  T.eq(back.eos_token, "</s>")
  T.eq(back.additional_special_tokens, { "<tool>" })
  local config = tcore.json_decode(T.read_file(out .. "/tokenizer_config.json"))
  T.eq(config.chat_template, GEN_TEMPLATE)
  T.eq(config.added_tokens_decoder["18"].content, "<tool>")
  T.eq(tcore.json_decode(T.read_file(out .. "/special_tokens_map.json")).pad_token, "<pad>")
  -- a template read from chat_template.jinja is written back there, not into the config
  T.write_file(src .. "/chat_template.jinja", "jinja file {{ messages|length }}")
  local out2 = T.tmpdir() .. "/saved2"
  transformers.AutoTokenizer.from_pretrained(src):save_pretrained(out2)
  T.eq(T.read_file(out2 .. "/chat_template.jinja"), "jinja file {{ messages|length }}")
  T.eq(tcore.json_decode(T.read_file(out2 .. "/tokenizer_config.json")).chat_template, nil)
  T.eq(transformers.AutoTokenizer.from_pretrained(out2):apply_chat_template(CHAT, { tokenize = false }), "jinja file 4")
end)

T.test("tokenizer.json from save_pretrained loads in HF tokenizers (npm) with the same ids", function()
  local hf = build and build .. "/tokenize-hf/node_modules/tokenizers"
  local h = hf and io.open(hf .. "/package.json")
  if not h then
    print("  (HF tokenizers from npm not installed under build/tokenize-hf: checked by test_tokenizers_vs_hf's install)")
    return
  end
  h:close()
  local dir = T.tmpdir()
  T.write_file(dir .. "/tokenizer.json", T.read_file(data .. "/tokenizers/llama3-style-split-regex.json"))
  local tok = transformers.AutoTokenizer.from_pretrained(dir)
  tok:add_tokens({ "<|tool_call|>", "zzqq" })
  tok:add_special_tokens { additional_special_tokens = { "<|end_turn|>" } }
  local out = T.tmpdir() .. "/hf"
  tok:save_pretrained(out)
  local text = "Hello <|tool_call|> world zzqq! <|end_turn|> 1234"
  local script = string.format([[
const { Tokenizer } = require(%q);
const t = Tokenizer.fromFile(%q);
t.encode(%q).then(e => console.log(JSON.stringify(e.getIds())));]], hf, out .. "/tokenizer.json", text)
  T.write_file(dir .. "/check.js", script)
  local stdout = T.sh("node " .. T.shell_quote(dir .. "/check.js"))
  T.eq(tcore.json_decode(stdout), tok:encode(text))
end)

T.run()
