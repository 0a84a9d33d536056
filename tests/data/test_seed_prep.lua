-- Acceptance: the seeds' data preparation, ported line by line.
--   wikitext-like: load text, filter(len(text) > 50), select(1, 2000), batched map with the tokenizer
--   (truncation, max_length 256, padding "max_length"), map adding labels;
--   IMDB-like: shuffle(seed 42), select, map with the tokenizer, train_test_split(0.1).
-- The tokenizer is transformers.AutoTokenizer over ../shared/data/tokenizers/bert-base-uncased.json
-- when the tokenizer module is in this build; until then a whitespace tokenizer with the same call
-- shape stands in (said on stdout), so the data flow is checked either way.
local T = require "testlib"
local datasets = require "datasets"

local shared = os.getenv("SKYRUN_SHARED_DATA")
local MAX_LEN = 256

local function load_tokenizer()
  local ok, transformers = pcall(require, "transformers")
  local ok2, AutoTokenizer = pcall(function() return transformers.AutoTokenizer end)
  if ok and ok2 and AutoTokenizer then
    local dir = T.tmpdir()
    T.exec("cp " .. T.shell_quote(shared .. "/tokenizers/bert-base-uncased.json") .. " " .. T.shell_quote(dir .. "/tokenizer.json"))
    T.exec("cp " .. T.shell_quote(shared .. "/tokenizers/bert-base-uncased.tokenizer_config.json") .. " " ..
      T.shell_quote(dir .. "/tokenizer_config.json"))
    local ok3, tok = pcall(AutoTokenizer.from_pretrained, dir)
    if ok3 then return tok, "AutoTokenizer" end
    print("     (AutoTokenizer failed: " .. tostring(tok) .. "; using the stand-in)")
  end
  -- stand-in: words to ids by a table, [CLS]=101 ... [SEP]=102, padded with 0
  local vocab, next_id = {}, 1000
  local function tok(texts, opts)
    local ids, mask = {}, {}
    for i, text in ipairs(texts) do
      local row = { 101 }
      for w in text:lower():gmatch("%S+") do
        if not vocab[w] then vocab[w] = next_id; next_id = next_id + 1 end
        row[#row + 1] = vocab[w]
      end
      if opts.truncation and #row > opts.max_length - 1 then
        for k = #row, opts.max_length, -1 do row[k] = nil end
      end
      row[#row + 1] = 102
      local m = {}
      for k = 1, #row do m[k] = 1 end
      if opts.padding == "max_length" then
        for k = #row + 1, opts.max_length do row[k] = 0; m[k] = 0 end
      end
      ids[i], mask[i] = row, m
    end
    return { input_ids = ids, attention_mask = mask }
  end
  return tok, "stand-in"
end

local raw_tok, which = load_tokenizer()

-- What the map functions return: plain columns of Lua lists, whatever the tokenizer hands back
-- (a table, a BatchEncoding-like object, tensors with :tolist()).
local function plain(v)
  if type(v) ~= "table" then
    local ok, t = pcall(function() return v:tolist() end)
    if ok then return t end
  end
  return v
end
local function tok(texts, opts)
  local enc = raw_tok(texts, opts)
  return { input_ids = plain(enc.input_ids), attention_mask = plain(enc.attention_mask) }
end
print("     tokenizer: " .. which)

T.test("wikitext-like: filter, select, tokenize with padding to 256, add labels", function()
  local cache = T.tmpdir()
  -- wikitext rows are paragraphs: sample_by = "paragraph"
  local raw = datasets.load_dataset("text", { data_files = { train = shared .. "/text/tinyshakespeare.txt" },
    cache_dir = cache, sample_by = "paragraph" })
  local ds = raw.train:filter(function(x) return #x.text > 50 end)
  T.ok(#ds > 2000, "enough long lines: " .. #ds)
  ds = ds:select(1, 2000)
  local function tokenize(batch)
    return tok(batch.text, { truncation = true, max_length = MAX_LEN, padding = "max_length" })
  end
  local tokenized = ds:map(tokenize, { batched = true, remove_columns = { "text" } })
  local function add_labels(batch)
    local labels = {}
    for i, ids in ipairs(batch.input_ids) do
      local l = {}
      for k, v in ipairs(ids) do l[k] = v end
      labels[i] = l
    end
    batch.labels = labels
    return batch
  end
  local lm = tokenized:map(add_labels, { batched = true })
  T.eq(#lm, 2000)
  local names = lm.column_names
  table.sort(names)
  T.ok(names[#names] == "labels" or table.concat(names, ","):find("labels"), table.concat(names, ","))
  T.ok(not table.concat(names, ","):find("text"), "the text column was removed")
  for _, i in ipairs { 1, 777, 2000 } do
    local row = lm[i]
    T.eq(#row.input_ids, MAX_LEN, "row " .. i .. " padded to max_length")
    T.eq(#row.attention_mask, MAX_LEN)
    T.eq(row.labels, row.input_ids)
  end
  T.eq(lm._types.input_ids, "list<int64>")
  -- the long paragraphs of the file, in order: the first selected row is the first over 50 bytes
  local first
  local text = T.read_file(shared .. "/text/tinyshakespeare.txt")
  for para in (text .. "\n\n"):gmatch("(.-)\n\n") do
    if #para > 50 then first = para break end
  end
  T.eq(ds[1].text, first)
  -- the trainer-facing view
  local torch_view = lm:with_format("torch")
  T.ok(torch_view[1].input_ids ~= nil)
end)

T.test("IMDB-like: shuffle(seed 42), select, tokenize, train_test_split(0.1)", function()
  local dir = T.tmpdir()
  local lines = {}
  local n = 0
  for line in io.lines(shared .. "/text/tinyshakespeare.txt") do
    if #line > 20 then
      n = n + 1
      lines[#lines + 1] = string.format('{"text":%q,"label":%d}', line, n % 2):gsub("\\\n", "\\n")
      if n == 3000 then break end
    end
  end
  T.write_file(dir .. "/imdb.jsonl", table.concat(lines, "\n") .. "\n")
  local ds = datasets.load_dataset("json", { data_files = { train = dir .. "/imdb.jsonl", test = dir .. "/imdb.jsonl" },
    cache_dir = dir .. "/cache" })
  local train = ds.train:shuffle { seed = 42 }:select(1, 2000):map(function(b)
    return tok(b.text, { truncation = true, max_length = MAX_LEN })
  end, { batched = true })
  T.eq(#train, 2000)
  T.eq(train.column_names[1], "text")
  local again = ds.train:shuffle { seed = 42 }:select(1, 2000)
  T.eq(again[1].text, train[1].text, "the same seed gives the same order")
  local split = train:train_test_split { test_size = 0.1 }
  T.eq(#split.train, 1800)
  T.eq(#split.test, 200)
  T.ok(split.train[1].input_ids ~= nil and split.train[1].label ~= nil)
  local dd = ds:map(function(b) return tok(b.text, { truncation = true, max_length = 16 }) end, { batched = true })
  T.eq(#dd.test, 3000)
end)

T.run()
