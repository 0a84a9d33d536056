-- What SFTTrainer feeds the model, against the rows TRL 1.x builds (trl/trainer/sft_trainer.py
-- _prepare_dataset and DataCollatorForLanguageModeling, trl/data_utils.py pack_dataset): the
-- expected rows below are worked out from TRL's rules on a word-level tokenizer (one id a word),
-- and the packing and collator cases are the examples of TRL's own docstrings.
local T = require "testlib"
local transformers = require "transformers"
local trl = require "trl"
local words = require "word_tokenizer"

local ids = words.ids
local X = -100

-- Chat turns end with <|end|>; assistant turns sit in {% generation %} (assistant masks).
local TEMPLATE = "{% for m in messages %}{{ m.role }}: {% if m.role == 'assistant' %}{% generation %}" ..
  "{{ m.content }} <|end|>{% endgeneration %}{% else %}{{ m.content }} <|end|>{% endif %}\n{% endfor %}" ..
  "{% if add_generation_prompt %}assistant: {% endif %}"

local function tokenizer()
  local dir = words.write(T.tmpdir() .. "/tok", { bos_token = "<s>", eos_token = "</s>", pad_token = "<pad>",
    chat_template = TEMPLATE }, { bos = true })
  return transformers.AutoTokenizer.from_pretrained(dir)
end

-- The rows SFTTrainer would train on, without training (model = a stand-in that is never run).
local function prepared(rows, config, extra)
  local tok = tokenizer()
  local cfg = { output_dir = T.tmpdir(), report_to = "none", bf16 = false, gradient_checkpointing = false }
  for k, v in pairs(config or {}) do cfg[k] = v end
  local opts = { model = {}, args = trl.SFTConfig(cfg), train_dataset = rows, processing_class = tok }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local trainer = trl.SFTTrainer(opts)
  return trainer.train_dataset, trainer, tok
end

T.test("language modeling: BOS from the tokenizer, EOS appended once, labels = input_ids, cut at max_length", function()
  local rows = prepared({ { text = "hi there" }, { text = "hello how are you </s>" } }, { max_length = 5 })
  T.eq(rows[1].input_ids, ids "<s> hi there </s>")
  T.eq(rows[1].labels, rows[1].input_ids)
  T.eq(rows[2].input_ids, ids "<s> hello how are you")  -- "</s>" was there already, then keep_start cut it
  local kept_end = prepared({ { text = "hello how are you" } }, { max_length = 3, truncation_mode = "keep_end" })
  T.eq(kept_end[1].input_ids, ids "are you </s>")
  local formatted = prepared({ { q = "hi", a = "there" } }, {},
    { formatting_func = function(ex) return ex.q .. " " .. ex.a end })
  T.eq(formatted[1].input_ids, ids "<s> hi there </s>")
  local field = prepared({ { body = "ok bye" } }, { dataset_text_field = "body" })
  T.eq(field[1].input_ids, ids "<s> ok bye </s>")
end)

T.test("prompt-completion: loss on the completion only by default, EOS after the completion", function()
  local rows = prepared({ { prompt = "hi there", completion = " hello" } })
  T.eq(rows[1].input_ids, ids "<s> hi there hello </s>")
  T.eq(rows[1].labels, { X, X, X, words.ID.hello, words.ID["</s>"] })
  local all = prepared({ { prompt = "hi there", completion = " hello" } }, { completion_only_loss = false })
  T.eq(all[1].labels, all[1].input_ids)
  -- a prompt that fills max_length leaves nothing to learn: the row is dropped, as TRL drops it
  local dropped = prepared({ { prompt = "hi there", completion = " hello" }, { prompt = "ok", completion = " bye" } },
    { max_length = 3 })
  T.eq(#dropped, 1)
  T.eq(dropped[1].labels, { X, X, words.ID.bye })
end)

T.test("conversational: through the chat template; assistant_only_loss keeps the {% generation %} tokens", function()
  local chat = { messages = { { role = "user", content = "hi there" }, { role = "assistant", content = "hello how" },
    { role = "user", content = "fine" }, { role = "assistant", content = "bye" } } }
  local rows = prepared({ chat })
  local want = ids "user: hi there <|end|> assistant: hello how <|end|> user: fine <|end|> assistant: bye <|end|>"
  T.eq(rows[1].input_ids, want)  -- no BOS: apply_chat_template tokenizes without special tokens
  T.eq(rows[1].labels, want)
  local masked = prepared({ chat }, { assistant_only_loss = true })
  T.eq(masked[1].labels, { X, X, X, X, X, words.ID.hello, words.ID.how, words.ID["<|end|>"], X, X, X, X,
    words.ID.bye, words.ID["<|end|>"] })
  -- ShareGPT's from/value rows are converted to role/content first
  local sharegpt = prepared({ { conversations = { { from = "user", value = "hi" }, { from = "assistant", value = "ok" } } } })
  T.eq(sharegpt[1].input_ids, ids "user: hi <|end|> assistant: ok <|end|>")
  -- conversations stored as JSON text (a datasets column cannot hold structs)
  local as_text = prepared({ { messages = '[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]' } })
  T.eq(as_text[1].input_ids, sharegpt[1].input_ids)
end)

T.test("conversational prompt-completion: the prompt ends with the generation prompt and is masked", function()
  local rows = prepared({ { prompt = { { role = "user", content = "hi there" } },
    completion = { { role = "assistant", content = "hello" } } } })
  T.eq(rows[1].input_ids, ids "user: hi there <|end|> assistant: hello <|end|>")
  T.eq(rows[1].labels, { X, X, X, X, X, words.ID.hello, words.ID["<|end|>"] })
end)

T.test("TRL's pack_dataset examples: bfd, bfd_split and wrapped", function()
  local rows = {
    { input_ids = { 1, 2, 3, 4, 5 }, attention_mask = { 1, 1, 1, 0, 0 } }, { input_ids = { 6, 7 }, attention_mask = { 1, 0 } },
    { input_ids = { 8, 9, 10 }, attention_mask = { 1, 1, 0 } }, { input_ids = { 11 }, attention_mask = { 1 } },
  }
  local bfd = trl.pack_rows(rows, 4, "bfd")
  T.eq(#bfd, 3)
  T.eq({ bfd[1].input_ids, bfd[2].input_ids, bfd[3].input_ids }, { { 1, 2, 3, 4 }, { 8, 9, 10, 11 }, { 6, 7 } })
  T.eq({ bfd[1].attention_mask, bfd[2].attention_mask, bfd[3].attention_mask }, { { 1, 1, 1, 0 }, { 1, 1, 0, 1 }, { 1, 0 } })
  T.eq({ bfd[1].seq_lengths, bfd[2].seq_lengths, bfd[3].seq_lengths }, { { 4 }, { 3, 1 }, { 2 } })
  local split = trl.pack_rows(rows, 4, "bfd_split")
  T.eq({ split[1].input_ids, split[2].input_ids, split[3].input_ids }, { { 1, 2, 3, 4 }, { 8, 9, 10, 5 }, { 6, 7, 11 } })
  T.eq({ split[1].seq_lengths, split[2].seq_lengths, split[3].seq_lengths }, { { 4 }, { 3, 1 }, { 2, 1 } })
  local wrapped = trl.pack_rows(rows, 4, "wrapped")
  T.eq({ wrapped[1].input_ids, wrapped[2].input_ids, wrapped[3].input_ids }, { { 1, 2, 3, 4 }, { 5, 6, 7, 8 }, { 9, 10, 11 } })
  T.eq(wrapped[1].seq_lengths, nil)
  T.raises(function() trl.pack_rows(rows, 4, "bfd-fast") end, "Invalid packing strategy 'bfd-fast'")
end)

T.test("packing in SFTTrainer: best fit decreasing over max_length, every sequence kept whole", function()
  local rows = prepared({ { text = "hi there" }, { text = "hello how are you" }, { text = "ok" } },
    { packing = true, max_length = 8 })
  -- lengths with BOS and EOS: 4, 6, 3 -> bins {6}, {4, 3}
  T.eq(#rows, 2)
  T.eq(rows[1].input_ids, ids "<s> hello how are you </s>")
  T.eq(rows[1].seq_lengths, { 6 })
  T.eq(rows[2].input_ids, ids "<s> hi there </s> <s> ok </s>")
  T.eq(rows[2].seq_lengths, { 4, 3 })
end)

T.test("TRL's collator examples: padded with attention_mask, or padding-free with position_ids", function()
  local c = trl.DataCollatorForLanguageModeling { pad_token_id = 0 }
  local b = c { { input_ids = { 1, 2, 3 } }, { input_ids = { 4, 5 } } }
  T.eq(b:get("input_ids"), { { 1, 2, 3 }, { 4, 5, 0 } })
  T.eq(b:get("attention_mask"), { { 1, 1, 1 }, { 1, 1, 0 } })
  T.eq(b:get("labels"), { { 1, 2, 3 }, { 4, 5, X } })
  local rows = { { input_ids = { 1, 2, 3 }, labels = { X, 2, 3 } }, { input_ids = { 4, 5 }, labels = { X, 5 } } }
  local free = trl.DataCollatorForLanguageModeling { pad_token_id = 0, padding_free = true }(rows)
  T.eq(free:get("input_ids"), { { 1, 2, 3, 4, 5 } })
  T.eq(free:get("position_ids"), { { 0, 1, 2, 0, 1 } })
  T.eq(free:get("labels"), { { X, 2, 3, X, 5 } })
  T.eq(free:get("attention_mask"), nil)
  -- packed rows: positions restart at each of seq_lengths, and so do the ignored labels
  local packed = trl.DataCollatorForLanguageModeling { pad_token_id = 0, padding_free = true, pad_to_multiple_of = 4 } {
    { input_ids = { 7, 8, 9, 10, 11 }, labels = { 7, 8, 9, 10, 11 }, seq_lengths = { 3, 2 } } }
  T.eq(packed:get("position_ids"), { { 0, 1, 2, 0, 1, 0, 0, 0 } })
  T.eq(packed:get("labels"), { { X, 8, 9, X, 11, X, X, X } })
  T.eq(packed:get("input_ids"), { { 7, 8, 9, 10, 11, 0, 0, 0 } })
end)

T.test("bad input: unknown dataset columns are listed; formats and options are checked", function()
  T.raises(function() prepared({ { instruction = "hi", output = "ok" } }) end,
    "none of the columns SFT reads ('text' (or the dataset_text_field), 'prompt' with 'completion', 'messages', " ..
    "'conversations' or 'input_ids'); its columns are: 'instruction', 'output'")
  T.raises(function() prepared({ { text = "hi" } }, { assistant_only_loss = true }) end,
    "assistant_only_loss=True`, but the dataset is not conversational")
  T.raises(function() prepared({ { text = "hi" } }, { padding_free = true }) end,
    "When `padding_free=True` without packing, `max_length` is not enforced")
  T.raises(function() prepared({ { messages = { { role = "user", content = "hi" } } } }, { assistant_only_loss = true }) end,
    "at least one example has no assistant tokens")
  T.raises(function() trl.SFTConfig { packing_strategy = "fast" } end, "Invalid packing strategy 'fast'")
  T.raises(function() trl.SFTConfig { max_lenght = 10 } end, "unknown option 'max_lenght' to 'SFTConfig' (did you mean 'max_length'?)")
  T.raises(function() trl.SFTConfig { loss_type = "dft" } end, "not supported yet: SFTConfig loss_type 'dft'")
  T.raises(function() prepared({ { text = "hi" } }, { eos_token = "<nope>" }) end, "The specified `eos_token` ('<nope>') is not found")
end)

T.test("SFTConfig keeps TRL's defaults on top of TrainingArguments", function()
  local c = trl.SFTConfig { output_dir = T.tmpdir(), report_to = "none" }
  T.eq(c.learning_rate, 2e-5)
  T.eq(c.logging_steps, 10)
  T.eq(c.max_length, 1024)
  T.eq(c.dataset_text_field, "text")
  T.eq(c.packing, false)
  T.eq(c.packing_strategy, "bfd")
  T.eq(c.bf16, true)
  T.eq(c.loss_type, "chunked_nll")
  T.eq(c.completion_only_loss, nil)
  T.eq(c:to_dict().max_length, 1024)
  T.eq(trl.SFTConfig { output_dir = T.tmpdir(), fp16 = true, report_to = "none" }.bf16, false)
end)

T.run()
