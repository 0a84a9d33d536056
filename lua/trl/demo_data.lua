-- trl.demo_data: what the SFT jobs (jobs/sft_*.lua) use when no hub id is given, so they run
-- offline: the NVIDIA playbook's Alpaca prompt, a seeded Alpaca-format instruction set made here
-- (sums, opposites, comparisons, repetitions, greetings: answers a small model can learn), and a
-- random-init Llama (2 layers, dim 64) with a word-level tokenizer over the texts it will see.

local tcore = require "transformers.train_core"

local M = {}

-- The playbook's prompt: instruction, input, response (then the EOS token).
M.ALPACA_PROMPT_TEMPLATE = "Below is an instruction that describes a task, paired with an input that provides " ..
  "further context. Write a response that appropriately completes the request.\n### Instruction: %s\n\n### Input: %s" ..
  "\n\n### Response: %s"

--- The playbook's text for one Alpaca row (without the EOS token).
function M.format_alpaca(instruction, input, output)
  return M.ALPACA_PROMPT_TEMPLATE:format(instruction or "", input or "", output or "")
end

local NUMBERS = { "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
  "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen" }
local OPPOSITES = { { "hot", "cold" }, { "big", "small" }, { "fast", "slow" }, { "happy", "sad" }, { "light", "dark" },
  { "early", "late" }, { "up", "down" }, { "open", "closed" }, { "full", "empty" }, { "old", "new" } }
local THINGS = { "apple", "river", "cloud", "stone", "garden", "window", "candle", "forest" }
local GREETINGS = { "Write a short greeting.", "Greet a new user.", "Say hello politely." }

local rng = require("transformers.demo_data").rng

--- n Alpaca-format rows {instruction=, input=, output=} from seed.
function M.alpaca_rows(n, seed)
  local r = rng(seed or 1)
  local rows = {}
  for i = 1, n do
    local kind = r(5)
    if kind == 1 then
      local a, b = r(9) - 1, r(9) - 1
      rows[i] = { instruction = "Add the two numbers.", input = NUMBERS[a + 1] .. " and " .. NUMBERS[b + 1],
        output = "The sum of " .. NUMBERS[a + 1] .. " and " .. NUMBERS[b + 1] .. " is " .. NUMBERS[a + b + 1] .. "." }
    elseif kind == 2 then
      local pair = OPPOSITES[r(#OPPOSITES)]
      rows[i] = { instruction = "Give the opposite of the word.", input = pair[1],
        output = "The opposite of " .. pair[1] .. " is " .. pair[2] .. "." }
    elseif kind == 3 then
      local a, b = r(18) - 1, r(18) - 1
      if a == b then b = (b + 1) % 18 end
      rows[i] = { instruction = "Which number is larger?", input = NUMBERS[a + 1] .. " or " .. NUMBERS[b + 1],
        output = "The larger number is " .. NUMBERS[math.max(a, b) + 1] .. "." }
    elseif kind == 4 then
      local w = THINGS[r(#THINGS)]
      rows[i] = { instruction = "Repeat the word three times.", input = w, output = w .. " " .. w .. " " .. w }
    else
      rows[i] = { instruction = GREETINGS[r(#GREETINGS)], input = "", output = "Hello! How can I help you today?" }
    end
  end
  return rows
end

local SPECIALS = { "<pad>", "<s>", "</s>", "[UNK]" }

--- tokenizer.json and tokenizer_config.json texts for a lowercase word-level tokenizer over the
--- texts: the max_words most frequent words (ties in byte order) after <pad> <s> </s> [UNK], with
--- <s> in front of every sequence (TemplateProcessing) and </s> as EOS. Returns both and the size.
function M.tokenizer_files(texts, max_words)
  local counts = {}
  for _, text in ipairs(texts) do
    for w in text:lower():gmatch("%S+") do counts[w] = (counts[w] or 0) + 1 end
  end
  local list = {}
  for w, c in pairs(counts) do
    if w ~= "</s>" and w ~= "<s>" and w ~= "<pad>" then list[#list + 1] = { w, c } end
  end
  table.sort(list, function(a, b) if a[2] ~= b[2] then return a[2] > b[2] end return a[1] < b[1] end)
  local vocab, added = {}, setmetatable({}, { __jsontype = "array" })
  for i, s in ipairs(SPECIALS) do
    vocab[s] = i - 1
    if s ~= "[UNK]" then
      added[#added + 1] = { id = i - 1, content = s, single_word = false, lstrip = false, rstrip = false,
        normalized = false, special = true }
    end
  end
  local n = math.min(#list, max_words or #list)
  for i = 1, n do vocab[list[i][1]] = #SPECIALS + i - 1 end
  local tok = { version = "1.0", truncation = tcore.json_null, padding = tcore.json_null, added_tokens = added,
    normalizer = { type = "Lowercase" }, pre_tokenizer = { type = "WhitespaceSplit" },
    post_processor = { type = "TemplateProcessing",
      single = { { SpecialToken = { id = "<s>", type_id = 0 } }, { Sequence = { id = "A", type_id = 0 } } },
      pair = { { SpecialToken = { id = "<s>", type_id = 0 } }, { Sequence = { id = "A", type_id = 0 } },
        { Sequence = { id = "B", type_id = 1 } } },
      special_tokens = { ["<s>"] = { id = "<s>", ids = { 1 }, tokens = { "<s>" } } } },
    decoder = { type = "WordPiece", prefix = "##", cleanup = false },
    model = { type = "WordLevel", vocab = vocab, unk_token = "[UNK]" } }
  local config = { bos_token = "<s>", eos_token = "</s>", pad_token = "<pad>", unk_token = "[UNK]",
    model_max_length = 4096, tokenizer_class = "PreTrainedTokenizerFast" }
  return tcore.json_encode(tok, 2), tcore.json_encode(config, 2), #SPECIALS + n
end

local function mkdir_p(dir) require("sky.fs").makedirs(dir) end

--- Writes a random-init Llama (2 layers, hidden 64, 4 heads over 2 key/value heads) and a word
--- tokenizer over `texts` to dir; opts: {seed=, max_positions=, max_words=}.
function M.make_tiny_llama(dir, texts, opts)
  opts = opts or {}
  mkdir_p(dir)
  local tok_json, tok_config, V = M.tokenizer_files(texts, opts.max_words or 2000)
  tcore.write_file_atomic(dir .. "/tokenizer.json", tok_json)
  tcore.write_file_atomic(dir .. "/tokenizer_config.json", tok_config)
  local config = { architectures = { "LlamaForCausalLM" }, model_type = "llama", hidden_size = 64, intermediate_size = 128,
    num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 2, head_dim = 16, hidden_act = "silu",
    max_position_embeddings = opts.max_positions or 2048, rms_norm_eps = 1e-6, rope_theta = 10000.0,
    attention_bias = false, attention_dropout = 0.0, mlp_bias = false, tie_word_embeddings = false, vocab_size = V,
    bos_token_id = 1, eos_token_id = 2, pad_token_id = 0, initializer_range = 0.02, dtype = "float32" }
  local nn = require "skyrun.nn"
  nn.set_seed(opts.seed or 42)
  nn.from_config(tcore.json_encode(config), "causal_lm", { dtype = "float32" }):save_pretrained(dir)
  return dir
end

return M
