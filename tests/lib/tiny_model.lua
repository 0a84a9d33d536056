-- The Trainer tests' small model: a randomly initialised DistilBERT sequence classifier (vocab 64,
-- dim 16, one layer, no dropout), a real src/nn model that saves and loads as HF's, small enough
-- that a test trains it in milliseconds on the CPU.
local transformers = require "transformers"

local M = {}

--- tiny_classifier{seed =, vocab_size =, hidden_size =, num_labels =} -> DistilBertForSequenceClassification
function M.tiny_classifier(opts)
  opts = opts or {}
  local dim = opts.hidden_size or 16
  transformers.set_seed(opts.seed or 0)
  return transformers.AutoModelForSequenceClassification.from_config({
    model_type = "distilbert", vocab_size = opts.vocab_size or 64, dim = dim, n_layers = 1, n_heads = 2,
    hidden_dim = 2 * dim, max_position_embeddings = 64, dropout = 0.0, attention_dropout = 0.0,
    seq_classif_dropout = 0.0, pad_token_id = 0, num_labels = opts.num_labels or 2,
  })
end

return M
