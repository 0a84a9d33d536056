-- Helpers for the model parity tests: load a fixture folder made by HF transformers
-- (tests/fixtures/models/<name>, see tools/fixtures/gen_models.py) and compare our outputs
-- with its reference.safetensors where the attention mask is 1.
local T = require "testlib"
local torch = require "torch"
local nn = require "skyrun.nn"
local transformers = require "transformers"

local N = {}

N.root = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/fixtures/models/"
-- SKYRUN_TEST_DEVICE=cuda runs the parity tests on the GPU (tools/device/nn-gpu.sh).
N.device = os.getenv("SKYRUN_TEST_DEVICE") or "cpu"

function N.reference(name)
  local ref = nn.safetensors_load(N.root .. name .. "/reference.safetensors")
  return ref
end

-- Largest |a - b| over positions where mask [B, T] is 1 (a, b: [B, T, ...] or [B, L]).
function N.masked_max_diff(a, b, mask)
  local d = (a:to("cpu"):float() - b:to("cpu"):float()):abs()
  if mask and d:dim() == 3 then d = d * mask:float():unsqueeze(3) end
  return d:max():item()
end

local LOADERS = {
  causal = transformers.AutoModelForCausalLM,
  cls = transformers.AutoModelForSequenceClassification,
  base = transformers.AutoModel,
}

-- Registers the parity tests of one fixture: fp32 right/left padding (logits or
-- last_hidden_state within 1e-4, loss within 1e-4) with the default attention (SDPA where
-- LibTorch has it) and with attn_implementation = "eager", bf16 (within the fixture's bf16 tolerance,
-- 5e-2), and for causal LMs greedy generation equal to HF's.
function N.parity_tests(name, kind)
  local key = kind == "base" and "last_hidden_state" or "logits"
  local folder = N.root .. name
  T.test(name .. ": fp32 outputs and loss match HF on right- and left-padded batches", function()
    local ref = N.reference(name)
    for _, attn in ipairs { "default", "eager" } do
    local model = LOADERS[kind].from_pretrained(folder,
      { device = N.device, attn_implementation = attn ~= "default" and attn or nil })
    T.eq(model.dtype, "float32")
    for _, side in ipairs { "right", "left" } do
      local out = model { input_ids = ref[side .. ".input_ids"], attention_mask = ref[side .. ".attention_mask"],
        labels = ref[side .. ".labels"] }
      T.eq(out[key].shape, ref[side .. "." .. key].shape, side .. " shape")
      local diff = N.masked_max_diff(out[key], ref[side .. "." .. key], kind ~= "cls" and ref[side .. ".attention_mask"])
      T.ok(diff < 1e-4, string.format("%s attention, %s %s max |diff| %.3g >= 1e-4", attn, side, key, diff))
      if ref[side .. ".loss"] then
        T.near(out.loss:item(), ref[side .. ".loss"]:item(), 1e-4, attn .. " attention, " .. side .. " loss")
      end
    end
    end
  end)
  T.test(name .. ": bf16 outputs match HF's CUDA bf16 run within bf16 tolerance", function()
    local ref = N.reference(name)
    local model = LOADERS[kind].from_pretrained(folder, { dtype = "bfloat16", device = N.device })
    T.eq(model.dtype, "bfloat16")
    local out = model { input_ids = ref["right.input_ids"], attention_mask = ref["right.attention_mask"] }
    T.eq(out[key].dtype, "bfloat16")
    local diff = N.masked_max_diff(out[key], ref["bf16." .. key], kind ~= "cls" and ref["right.attention_mask"])
    T.ok(diff < 5e-2, string.format("bf16 max |diff| %.3g >= 5e-2", diff))
  end)
  if kind == "causal" then
    T.test(name .. ": greedy generation with the KV cache gives HF's tokens", function()
      local ref = N.reference(name)
      local model = LOADERS[kind].from_pretrained(folder, { device = N.device })
      local out = model:generate(ref["gen.input_ids"], { max_new_tokens = 8, eos_token_id = false, pad_token_id = 0 })
      T.eq(out:tolist(), ref["gen.output_ids"]:tolist())
    end)
  end
end

return N
