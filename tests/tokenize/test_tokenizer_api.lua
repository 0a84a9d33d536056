-- The transformers-shaped tokenizer API (AutoTokenizer, tok(...), encode/decode, special tokens,
-- truncation and padding) and clear errors for malformed tokenizer.json files. Expected ids are
-- what HF tokenizers 0.23.2 gives for the same files (test_tokenizers_vs_hf.lua checks that at scale).
local T = require "testlib"
local transformers = require "transformers"
local core = require "tokenizers.core"

local data = assert(os.getenv("SKYRUN_SHARED_DATA"), "SKYRUN_SHARED_DATA not set")
local tokdir = data .. "/tokenizers"

-- A model folder as the Hub lays it out: tokenizer.json (+ tokenizer_config.json).
local function folder(name, config)
  local dir = T.tmpdir()
  T.write_file(dir .. "/tokenizer.json", T.read_file(tokdir .. "/" .. name .. ".json"))
  if config then T.write_file(dir .. "/tokenizer_config.json", config) end
  return dir
end

local bert_dir = folder("bert-base-uncased", [[{"do_lower_case": true, "model_max_length": 512,
  "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
  "cls_token": "[CLS]", "mask_token": "[MASK]"}]])
local gpt2_dir = folder("gpt2", [[{"model_max_length": 1024, "bos_token": "<|endoftext|>",
  "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "tokenizer_class": "GPT2Tokenizer"}]])

T.test("AutoTokenizer.from_pretrained loads a folder and encodes like HF", function()
  local tok = transformers.AutoTokenizer.from_pretrained(bert_dir)
  local enc = tok("Hello world!")
  T.eq(enc.input_ids, { 101, 7592, 2088, 999, 102 })
  T.eq(enc.attention_mask, { 1, 1, 1, 1, 1 })
  T.eq(enc.token_type_ids, { 0, 0, 0, 0, 0 })
  T.eq(tok:encode("Hello world!", { add_special_tokens = false }), { 7592, 2088, 999 })
  T.eq(tok:decode(enc.input_ids), "[CLS] hello world! [SEP]")
  T.eq(tok:decode(enc.input_ids, { skip_special_tokens = true }), "hello world!")
  T.eq(tok.model_max_length, 512)
  T.eq(tok:len(), 30522)  -- Python's len(tok); LuaJIT ignores __len on tables
end)

T.test("a batch gives lists of lists, padded and truncated as asked", function()
  local tok = transformers.AutoTokenizer.from_pretrained(bert_dir)
  local enc = tok({ "Hello world!", "a much longer sentence than the first one", "" },
    { padding = true, truncation = true, max_length = 8 })
  T.eq(enc.input_ids[1], { 101, 7592, 2088, 999, 102, 0, 0, 0 })
  T.eq(#enc.input_ids[2], 8)
  T.eq(enc.input_ids[2][8], 102)
  T.eq(enc.input_ids[3], { 101, 102, 0, 0, 0, 0, 0, 0 })
  T.eq(enc.attention_mask[1], { 1, 1, 1, 1, 1, 0, 0, 0 })
  local fixed = tok({ "Hello" }, { padding = "max_length", max_length = 6 })
  T.eq(fixed.input_ids[1], { 101, 7592, 102, 0, 0, 0 })
  tok.padding_side = "left"
  T.eq(tok({ "Hello", "Hello world" }, { padding = "longest" }).input_ids[1], { 0, 101, 7592, 102 })
end)

T.test("text_pair gives type ids and truncates the longest first", function()
  local tok = transformers.AutoTokenizer.from_pretrained(bert_dir)
  local enc = tok("Hello world", { text_pair = "good morning" })
  T.eq(enc.input_ids, { 101, 7592, 2088, 102, 2204, 2851, 102 })
  T.eq(enc.token_type_ids, { 0, 0, 0, 0, 1, 1, 1 })
  local cut = tok("one two three four five", { text_pair = "six", truncation = true, max_length = 6 })
  T.eq(#cut.input_ids, 6)
end)

T.test("offsets are character offsets into the text", function()
  local tok = transformers.AutoTokenizer.from_pretrained(gpt2_dir)
  local enc = tok("héllo wörld", { return_offsets_mapping = true })
  T.eq(enc.input_ids, { 71, 2634, 18798, 266, 30570, 335 })
  -- GPT-2's ByteLevel post-processor trims the space out of "Ġw"'s offsets, as HF does.
  T.eq(enc.offset_mapping, { { 0, 1 }, { 1, 2 }, { 2, 5 }, { 6, 7 }, { 7, 9 }, { 9, 11 } })
  T.eq(enc.token_type_ids, nil)
end)

T.test("special token attributes read and set; pad_token_id follows pad_token", function()
  local tok = transformers.AutoTokenizer.from_pretrained(gpt2_dir)
  T.eq(tok.eos_token, "<|endoftext|>")
  T.eq(tok.eos_token_id, 50256)
  T.eq(tok.pad_token, nil)
  T.raises(function() tok({ "a", "b c" }, { padding = true }) end, "does not have a padding token")
  tok.pad_token = tok.eos_token
  T.eq(tok.pad_token_id, 50256)
  T.eq(tok({ "a", "b c" }, { padding = true }).input_ids, { { 64, 50256 }, { 65, 269 } })
  tok.pad_token_id = 0
  T.eq(tok.pad_token, "!")
  T.eq(tok:convert_tokens_to_ids({ "Hello", "zzzznotatoken" }), { 15496, 50256 })
  T.eq(tok:convert_ids_to_tokens({ 15496, 995 }), { "Hello", "Ġworld" })
  T.eq(tok:batch_decode({ { 15496, 995 }, { 50256 } }, { skip_special_tokens = true }), { "Hello world", "" })
end)

T.test("add_special_tokens adds a pad token to the vocabulary", function()
  local tok = transformers.AutoTokenizer.from_pretrained(gpt2_dir)
  T.eq(tok:add_special_tokens({ pad_token = "[PAD]" }), 1)
  T.eq(tok.pad_token_id, 50257)
  T.eq(tok:encode("a[PAD]b"), { 64, 50257, 65 })
  T.eq(tok:decode({ 64, 50257, 65 }, { skip_special_tokens = true }), "ab")
end)

T.test("add_bos_token and add_eos_token in tokenizer_config.json rebuild the template", function()
  local dir = folder("llama2-style-bytefallback", [[{"add_bos_token": true, "add_eos_token": true,
    "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}]])
  local tok = transformers.AutoTokenizer.from_pretrained(dir)
  local ids = tok:encode("Hello")
  T.eq(ids[1], 1)
  T.eq(ids[#ids], 2)
  local plain = tok:encode("Hello", { add_special_tokens = false })
  T.eq(#ids, #plain + 2)
  local none = transformers.AutoTokenizer.from_pretrained(folder("llama2-style-bytefallback",
    [[{"add_bos_token": false, "add_eos_token": false, "bos_token": "<s>", "eos_token": "</s>"}]]))
  T.eq(none:encode("Hello"), plain)
end)

T.test("a tokenizer travels over sky.wire as its file and keeps added tokens and template", function()
  local wire = require "sky.wire"
  local tok = transformers.AutoTokenizer.from_pretrained(folder("llama2-style-bytefallback",
    [[{"add_bos_token": true, "add_eos_token": true, "bos_token": "<s>", "eos_token": "</s>"}]]))
  tok:add_special_tokens({ pad_token = "<pad>" })
  local copy = wire.decode(wire.encode(tok._tok))
  T.ok(copy ~= tok._tok, "a new handle")
  T.eq(copy:encode("Hello <pad>", nil, {}).input_ids, tok:encode("Hello <pad>"))
  local from_string = core.from_string(T.read_file(tokdir .. "/gpt2.json"), "gpt2-in-memory")
  T.eq(wire.decode(wire.encode(from_string)):encode("Hello world", nil, {}).input_ids, { 15496, 995 })
end)

T.test("unknown options and bad arguments are refused with the name", function()
  local tok = transformers.AutoTokenizer.from_pretrained(bert_dir)
  T.raises(function() tok("x", { max_lenght = 3 }) end, "max_length")
  T.raises(function() tok(42) end, "string or list of strings expected")
  T.raises(function() tok("x", { padding = "sideways" }) end, "padding must be")
  T.raises(function() tok:decode("x") end, "list of ids expected")
  T.raises(function() tok("x", { return_tensors = "pt" }) end, "not supported yet: return_tensors")
end)

T.test("a missing folder names the path", function()
  T.raises(function() transformers.AutoTokenizer.from_pretrained("/nonexistent/folder/xyz") end, "/nonexistent/folder/xyz")
end)

-- Malformed files: each a clear error naming the JSON path, never a crash.
local gpt2_json = T.read_file(tokdir .. "/gpt2.json")
local bert_json = T.read_file(tokdir .. "/bert-base-uncased.json")

T.test("truncated JSON is an error with the byte offset", function()
  local err = T.raises(function() core.from_string(gpt2_json:sub(1, 5000), "gpt2.json") end, "gpt2.json: invalid JSON at byte")
  T.ok(#err < 300, "short message")
end)

T.test("a merge naming an unknown token names the merge", function()
  local bad = gpt2_json:gsub('%[%s*"Ġ",%s*"t"%s*%]', '["Ġ", "no-such-token"]', 1)
  T.ok(bad ~= gpt2_json, "fixture edited")
  T.raises(function() core.from_string(bad, "gpt2.json") end,
    "gpt2.json: model.merges[0]: merge names a token that is not in the vocabulary: 'no-such-token'")
end)

T.test("an unknown normalizer type names its type and path", function()
  local bad = bert_json:gsub('"type": "BertNormalizer"', '"type": "FancyNormalizer"', 1)
  T.raises(function() core.from_string(bad, "bert.json") end, "bert.json: normalizer.type: unsupported normalizer type 'FancyNormalizer'")
  local bad2 = bert_json:gsub('"type": "BertPreTokenizer"', '"type": "Nope"', 1)
  T.raises(function() core.from_string(bad2, "bert.json") end, "pre_tokenizer.type: unsupported pre_tokenizer type 'Nope'")
end)

T.test("wrong field types name the field", function()
  T.raises(function() core.from_string('{"model": {"type": "BPE", "vocab": [], "merges": []}}') end, "model.vocab: expected an object")
  T.raises(function() core.from_string('{"model": {"type": "WordPiece", "vocab": {"a": -1}}}') end, 'model.vocab["a"]')
  T.raises(function() core.from_string('{"model": {"type": "Unigram", "vocab": [["a", 0]], "unk_id": 5}}') end, "model.unk_id")
  T.raises(function() core.from_string('{"normalizer": {"type": "Replace", "pattern": {"Regex": "("}, "content": ""}, "model": {"type": "WordLevel", "vocab": {}}}') end,
    "normalizer.pattern.Regex: invalid regex")
  T.raises(function() core.from_string('[1, 2]') end, "expected an object")
  -- Found by fuzz_tokenizer_load: a regex with invalid UTF-8 crashed PCRE2; such files are refused.
  T.raises(function() core.from_string('{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a\255\255"}, "behavior": "Isolated"}, "model": {"type": "WordLevel", "vocab": {}}}') end,
    "invalid JSON at byte")
  T.raises(function() core.from_string('{"model": {"type": "BPE", "vocab": {}, "merges": {}}}') end, "model.merges: expected an array, got an object")
end)

T.test("the tokenizer.json truncation and padding blocks do not leak into transformers calls", function()
  local dir = folder("all-minilm-l6-v2")
  local tok = transformers.AutoTokenizer.from_pretrained(dir)
  T.eq(#tok("hello").input_ids, 3)
end)

T.test("Replace rules that expand their own output fail early instead of growing without bound", function()
  local function with_normalizer(normalizer)
    return core.from_string([[{"version": "1.0", "added_tokens": [], "normalizer": ]] .. normalizer ..
      [[, "pre_tokenizer": null, "post_processor": null, "decoder": null,
      "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1}, "unk_token": "[UNK]"}}]], "grow.json")
  end
  local rule = '{"type": "Replace", "pattern": {"Regex": "a"}, "content": "' .. string.rep("a", 1000) .. '"}'
  local tok = with_normalizer('{"type": "Sequence", "normalizers": [' .. rule .. "," .. rule .. "," .. rule .. "]}")
  local t0 = os.clock()
  T.raises(function() tok:encode(string.rep("a", 5000), nil, {}) end,
    "Replace: the normalized text would grow to 5000000 bytes from an input of 5000 bytes (the limit is 64 times the input)")
  T.ok(os.clock() - t0 < 5, "it fails before building the text")
  -- an expansion inside the limit (a few times the input, as real normalizers do) works
  local ok = with_normalizer('{"type": "Replace", "pattern": {"String": "a"}, "content": "aaa"}')
  T.eq(#ok:encode(string.rep("a", 100), nil, {}).input_ids, 1)
end)

T.run()
