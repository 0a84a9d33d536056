-- A word-level tokenizer folder for tests: one token per whitespace-separated word, so ids,
-- masks and labels can be read off by hand. Ids are the positions in WORDS (0-based); "<s>" is
-- added in front of plain text when bos = true (TemplateProcessing, as Llama's tokenizer does).
local T = require "testlib"
local tcore = require "transformers.train_core"

local M = {}

M.WORDS = { "[UNK]", "<s>", "</s>", "<pad>", "user:", "assistant:", "system:", "hi", "there", "hello", "how",
  "are", "you", "fine", "thanks", "<|end|>", "bye", "ok" }
M.SPECIALS = { "<s>", "</s>", "<pad>", "<|end|>" }

M.ID = {}
for i, w in ipairs(M.WORDS) do M.ID[w] = i - 1 end

--- Writes tokenizer.json and tokenizer_config.json (config as given) into dir; returns dir.
function M.write(dir, config, opts)
  opts = opts or {}
  T.exec("mkdir -p " .. T.shell_quote(dir))
  local added = setmetatable({}, { __jsontype = "array" })
  for _, w in ipairs(M.SPECIALS) do
    added[#added + 1] = { id = M.ID[w], content = w, single_word = false, lstrip = false, rstrip = false,
      normalized = false, special = true }
  end
  local post = tcore.json_null
  if opts.bos then
    post = { type = "TemplateProcessing",
      single = { { SpecialToken = { id = "<s>", type_id = 0 } }, { Sequence = { id = "A", type_id = 0 } } },
      pair = { { SpecialToken = { id = "<s>", type_id = 0 } }, { Sequence = { id = "A", type_id = 0 } },
        { Sequence = { id = "B", type_id = 1 } } },
      special_tokens = { ["<s>"] = { id = "<s>", ids = { M.ID["<s>"] }, tokens = { "<s>" } } } }
  end
  T.write_file(dir .. "/tokenizer.json", tcore.json_encode({ version = "1.0", truncation = tcore.json_null,
    padding = tcore.json_null, added_tokens = added, normalizer = tcore.json_null,
    pre_tokenizer = { type = "WhitespaceSplit" }, post_processor = post, decoder = tcore.json_null,
    model = { type = "WordLevel", vocab = M.ID, unk_token = "[UNK]" } }))
  T.write_file(dir .. "/tokenizer_config.json", tcore.json_encode(config or {}))
  return dir
end

--- ids of a space-separated string of words
function M.ids(text)
  local out = {}
  for w in text:gmatch("%S+") do out[#out + 1] = assert(M.ID[w], "not a test word: " .. w) end
  return out
end

return M
