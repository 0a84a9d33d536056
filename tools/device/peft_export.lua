-- Used by tools/device/peft-gpu.sh: for each adapter case PEFT made (tools/fixtures/gen_peft.py),
-- loads the adapter on its base, trains it a few steps here (so the weights are ours, not PEFT's),
-- saves it with our save_pretrained and writes our logits beside it, for peft_roundtrip.py to load
-- the folder in PEFT and compare.
--   usage: skyrun tools/device/peft_export.lua FIXTURES OUT
local nn = require "skyrun.nn"
local transformers = require "transformers"
local peft = require "peft"
local tcore = require "transformers.train_core"

local fix, out = arg[1], arg[2]
local src = (os.getenv("SKYRUN_SOURCE_ROOT") or ".") .. "/tests/fixtures/models/"
local LOADERS = { causal = transformers.AutoModelForCausalLM, cls = transformers.AutoModelForSequenceClassification,
  base = transformers.AutoModel }
local p = io.popen("ls -1 '" .. fix .. "'")
for name in p:lines() do
  local f = io.open(fix .. "/" .. name .. "/reference.json")
  if f then
    local info = tcore.json_decode(f:read("*a"))
    f:close()
    local ref = nn.safetensors_load(fix .. "/" .. name .. "/reference.safetensors")
    local pm = peft.PeftModel.from_pretrained(LOADERS[info.kind].from_pretrained(src .. info.base),
      fix .. "/" .. name .. "/adapter", { is_trainable = true })
    local rows = {}
    for i = 1, 8 do
      local ids = {}
      for j = 1, 6 do ids[j] = 5 + (i * 7 + j * 13) % 200 end
      rows[i] = { input_ids = ids, labels = info.kind == "cls" and (i % 2) or ids }
    end
    if info.kind ~= "base" then
      transformers.Trainer { model = pm, train_dataset = rows, data_collator = info.kind == "cls" and
        transformers.DataCollatorWithPadding({ pad_token_id = 0 }) or transformers.DataCollatorForLanguageModeling({ pad_token_id = 0 }, { mlm = false }),
        args = transformers.TrainingArguments { output_dir = os.tmpname() .. "-run", use_cpu = true, per_device_train_batch_size = 4,
          max_steps = 3, learning_rate = 1e-2, save_strategy = "no", report_to = "none" } }:train()
    end
    pm:eval()
    local o = pm { input_ids = ref.input_ids, attention_mask = ref.attention_mask }
    local dir = out .. "/" .. name
    pm:save_pretrained(dir .. "/adapter")
    nn.safetensors_save(dir .. "/ours.safetensors", { input_ids = ref.input_ids, attention_mask = ref.attention_mask,
      out = o.logits or o.last_hidden_state })
    local g = io.open(dir .. "/info.json", "w")
    g:write(tcore.json_encode({ base = info.base, class = info.class, kind = info.kind }))
    g:close()
    print("exported " .. name)
  end
end
p:close()
