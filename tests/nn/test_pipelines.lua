-- transformers.pipeline for text-classification/sentiment-analysis and text-generation, on the
-- HF fixture models with a small character tokenizer (the pipeline only needs HF's call shapes:
-- tok(text) → {input_ids=, attention_mask=}, tok:decode(ids, {skip_special_tokens=})).
package.path = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/nn/?.lua;" .. package.path
local T = require "testlib"
local N = require "nn_testing"
local transformers = require "transformers"

-- ids: byte value % 200 + 5 (the fixtures' vocabularies have 256 entries, 0..4 special)
local CharTok = {}
CharTok.__index = CharTok
CharTok.__call = function(self, text, opts)
  local ids, mask = {}, {}
  for i = 1, #text do ids[i] = text:byte(i) % 200 + 5; mask[i] = 1 end
  return { input_ids = ids, attention_mask = mask }
end
function CharTok:decode(ids, opts)
  local out = {}
  for _, id in ipairs(ids) do
    if id >= 5 then out[#out + 1] = string.char((id - 5) % 200 >= 32 and (id - 5) % 200 or 63) end
  end
  return table.concat(out)
end
local tok = setmetatable({}, CharTok)

T.test("sentiment-analysis gives the label and softmax score of the model's logits", function()
  local model = transformers.AutoModelForSequenceClassification.from_pretrained(N.root .. "distilbert-cls")
  local clf = transformers.pipeline("sentiment-analysis", { model = model, tokenizer = tok })
  local out = clf("I love this")
  T.eq(#out, 1)
  local logits = model(tok("I love this")).logits:softmax(2):tolist()[1]
  local best = logits[1] > logits[2] and 1 or 2
  T.eq(out[1].label, ({ "NEGATIVE", "POSITIVE" })[best])
  T.near(out[1].score, logits[best], 1e-6)
  local two = clf({ "I love this", "awful" })
  T.eq(#two, 2)
  T.eq(two[1].label, out[1].label)
  local all = clf("awful", { top_k = false })
  T.eq(#all, 2)
  T.near(all[1].score + all[2].score, 1, 1e-6)
  T.ok(all[1].score >= all[2].score)
end)

T.test("text-classification on a three-label BERT uses its id2label", function()
  local clf = transformers.pipeline("text-classification", {
    model = transformers.AutoModelForSequenceClassification.from_pretrained(N.root .. "bert-cls"), tokenizer = tok })
  local r = clf("so-so", { top_k = 3 })
  T.eq(#r, 3)
  local labels = {}
  for _, x in ipairs(r) do labels[x.label] = true end
  T.eq(labels, { negative = true, neutral = true, positive = true })
end)

T.test("text-generation continues the prompt with the model's greedy tokens", function()
  local model = transformers.AutoModelForCausalLM.from_pretrained(N.root .. "gpt2")
  local gen = transformers.pipeline("text-generation", { model = model, tokenizer = tok })
  local out = gen("Hello", { max_new_tokens = 4, eos_token_id = false })
  local ids = model:generate({ tok("Hello").input_ids }, { max_new_tokens = 4, eos_token_id = false }):tolist()[1]
  T.eq(out[1].generated_text, "Hello" .. tok:decode({ ids[6], ids[7], ids[8], ids[9] }))
  local only = gen("Hello", { max_new_tokens = 4, eos_token_id = false, return_full_text = false })
  T.eq("Hello" .. only[1].generated_text, out[1].generated_text)
end)

T.test("unknown tasks and options are clear errors", function()
  T.raises(function() transformers.pipeline("translation", {}) end, "not supported yet: pipeline task 'translation'")
  T.raises(function() transformers.pipeline("text-generation", { modle = "x" }) end, "did you mean 'model'")
end)

T.run()
