-- transformers.demo_data: the small model and data the main job (jobs/finetune.lua) and
-- jobs/causal_lm.lua use when no hub id is given, so they run offline on any machine:
--   * a synthetic sentiment set: "the plot was not dull but the acting felt awful" -> 0. The label
--     is the polarity of the second clause (its adjective, flipped by "not"), so a model must use
--     word order, not just count words. Made by a seeded generator; nothing is downloaded.
--   * a word-level tokenizer over that vocabulary and a random-init DistilBERT (2 layers, dim 64)
--     or GPT-2 (2 layers, dim 64), written as a HF folder (config.json, model.safetensors,
--     tokenizer.json, tokenizer_config.json).

local tcore = require "transformers.train_core"

local M = {}

local SPECIALS = { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" }
local NOUNS = { "plot", "acting", "music", "story", "cast", "ending", "script", "film", "movie", "dialogue", "pacing",
  "camera", "soundtrack", "characters", "effects" }
local POSITIVE = { "good", "great", "superb", "lovely", "brilliant", "moving", "fun", "clever", "charming", "wonderful" }
local NEGATIVE = { "bad", "awful", "dull", "boring", "weak", "clumsy", "terrible", "bland", "silly", "poor" }
local INTENS = { "very", "really", "quite", "so", "truly" }
local VERBS = { "was", "felt", "seemed", "is" }
local GLUE = { "the", "and", "but", "not", "." }

function M.vocabulary()
  local words = {}
  for _, list in ipairs { SPECIALS, GLUE, NOUNS, POSITIVE, NEGATIVE, INTENS, VERBS } do
    for _, w in ipairs(list) do words[#words + 1] = w end
  end
  return words
end

-- A small deterministic generator (LCG), the same on every machine and LuaJIT build:
-- rng(seed) gives r with r(n) in 1..n.
local function rng(seed)
  local state = (seed * 2654435761) % 4294967296
  return function(n)
    state = (state * 1103515245 + 12345) % 2147483648
    return 1 + math.floor(state / 65536) % n
  end
end

--- n rows {text = "...", label = 0|1} from seed.
function M.sentiment_rows(n, seed)
  local r = rng(seed)
  local function pick(list) return list[r(#list)] end
  local function clause(polarity)
    local negate = r(4) == 1
    local adj_pol = negate and -polarity or polarity
    local words = { "the", pick(NOUNS), pick(VERBS) }
    if negate then words[#words + 1] = "not" end
    if r(3) == 1 then words[#words + 1] = pick(INTENS) end
    words[#words + 1] = pick(adj_pol > 0 and POSITIVE or NEGATIVE)
    return table.concat(words, " ")
  end
  local rows = {}
  for i = 1, n do
    local p1 = r(2) == 1 and 1 or -1
    local but = r(2) == 1
    local p2 = but and -p1 or p1
    rows[i] = { text = clause(p1) .. (but and " but " or " and ") .. clause(p2) .. " .", label = p2 > 0 and 1 or 0 }
  end
  return rows
end

--- Plain English lines for the causal-LM job, from the same grammar.
function M.lm_rows(n, seed)
  local rows = {}
  for i, row in ipairs(M.sentiment_rows(n, seed)) do rows[i] = { text = row.text } end
  return rows
end

M.rng = rng

local write = tcore.write_file_atomic

local function tokenizer_files(dir, with_cls)
  local words = M.vocabulary()
  local vocab = {}
  for i, w in ipairs(words) do vocab[w] = i - 1 end
  local added = setmetatable({}, { __jsontype = "array" })
  for i, s in ipairs(SPECIALS) do
    added[i] = { id = i - 1, content = s, single_word = false, lstrip = false, rstrip = false, normalized = false, special = true }
  end
  local A = { Sequence = { id = "A", type_id = 0 } }
  local B = { Sequence = { id = "B", type_id = 1 } }
  local cls, sep = { SpecialToken = { id = "[CLS]", type_id = 0 } }, { SpecialToken = { id = "[SEP]", type_id = 0 } }
  local post
  if with_cls then
    post = { type = "TemplateProcessing", single = { cls, A, sep }, pair = { cls, A, sep, B, { SpecialToken = { id = "[SEP]", type_id = 1 } } },
      special_tokens = { ["[CLS]"] = { id = "[CLS]", ids = { 2 }, tokens = { "[CLS]" } },
        ["[SEP]"] = { id = "[SEP]", ids = { 3 }, tokens = { "[SEP]" } } } }
  else
    post = { type = "TemplateProcessing", single = { A }, pair = { A, B }, special_tokens = setmetatable({}, {}) }
  end
  local tok = { version = "1.0", truncation = tcore.json_null, padding = tcore.json_null, added_tokens = added,
    normalizer = { type = "Lowercase" }, pre_tokenizer = { type = "WhitespaceSplit" }, post_processor = post,
    decoder = tcore.json_null, model = { type = "WordLevel", vocab = vocab, unk_token = "[UNK]" } }
  write(dir .. "/tokenizer.json", tcore.json_encode(tok, 2))
  write(dir .. "/tokenizer_config.json", tcore.json_encode({ pad_token = "[PAD]", unk_token = "[UNK]", cls_token = "[CLS]",
    sep_token = "[SEP]", mask_token = "[MASK]", eos_token = with_cls and nil or "[SEP]", model_max_length = 64,
    tokenizer_class = "PreTrainedTokenizerFast" }, 2))
  return #words
end

local function mkdir_p(dir) require("sky.fs").makedirs(dir) end

--- Writes a random-init DistilBERT sequence classifier and its tokenizer to dir.
function M.make_classifier_folder(dir, opts)
  opts = opts or {}
  mkdir_p(dir)
  local V = tokenizer_files(dir, true)
  local config = { architectures = { "DistilBertForSequenceClassification" }, model_type = "distilbert",
    activation = "gelu", attention_dropout = 0.1, dropout = 0.1, seq_classif_dropout = 0.2, dim = 64, hidden_dim = 256,
    n_heads = 4, n_layers = 2, max_position_embeddings = 64, vocab_size = V, pad_token_id = 0, initializer_range = 0.02,
    sinusoidal_pos_embds = false, tie_word_embeddings = true, dtype = "float32",
    id2label = { ["0"] = "NEGATIVE", ["1"] = "POSITIVE" }, label2id = { NEGATIVE = 0, POSITIVE = 1 } }
  local nn = require "skyrun.nn"
  nn.set_seed(opts.seed or 42)
  local model = nn.from_config(tcore.json_encode(config), "sequence_classification", { dtype = "float32" })
  model:save_pretrained(dir)
  return dir
end

--- Writes a random-init GPT-2 (2 layers, dim 64) causal LM and its tokenizer to dir;
--- opts.model_type = "llama" writes a Llama of the same size instead (2 key/value heads, SwiGLU 128).
function M.make_causal_lm_folder(dir, opts)
  opts = opts or {}
  mkdir_p(dir)
  local V = tokenizer_files(dir, false)
  local config = { architectures = { "GPT2LMHeadModel" }, model_type = "gpt2", activation_function = "gelu_new",
    n_embd = 64, n_head = 4, n_layer = 2, n_positions = 64, vocab_size = V, bos_token_id = 3, eos_token_id = 3,
    pad_token_id = 0, attn_pdrop = 0.0, embd_pdrop = 0.0, resid_pdrop = 0.0, layer_norm_epsilon = 1e-5,
    initializer_range = 0.02, tie_word_embeddings = true, dtype = "float32" }
  if opts.model_type == "llama" then
    config = { architectures = { "LlamaForCausalLM" }, model_type = "llama", hidden_size = 64, intermediate_size = 128,
      num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 64,
      vocab_size = V, bos_token_id = 3, eos_token_id = 3, pad_token_id = 0, rms_norm_eps = 1e-6, hidden_act = "silu",
      initializer_range = 0.02, tie_word_embeddings = false, dtype = "float32",
      rope_parameters = { rope_theta = 10000.0, rope_type = "default" } }
  end
  local nn = require "skyrun.nn"
  nn.set_seed(opts.seed or 42)
  local model = nn.from_config(tcore.json_encode(config), "causal_lm", { dtype = "float32" })
  model:save_pretrained(dir)
  return dir
end

return M
