#!/usr/bin/env python3
"""Save with skyrun, load with HF transformers: the same logits (issue 6, acceptance 2).

Needs transformers + torch importable (the GPU machine) and a built skyrun.
For every fixture folder in tests/fixtures/models (and a BERT classifier whose head skyrun
initialises itself, and a sharded save), skyrun:
  loads the folder, runs the fixture's right-padded batch, saves the model with save_pretrained
  (optionally sharded, optionally bf16) and writes its own logits beside it;
then this script loads the saved folder with transformers' Auto class for the saved architecture,
runs the same batch and compares: logits within 1e-5 (fp32) / 2e-2 (bf16) where the attention
mask is 1, every weight bit-identical to skyrun's, and config fields (model_type, num_labels,
id2label) as skyrun wrote them.

    python3 tools/nn_hf_roundtrip.py --skyrun build-gpu/skyrun [--device cpu|cuda]

Prints one line per case and "N passed, N failed"; exits 1 on any failure.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "models")

# (name, fixture folder, skyrun Auto class, load options as Lua, save options as Lua, dtype)
CASES = [
    ("gpt2", "gpt2", "AutoModelForCausalLM", "{}", "{}", "float32"),
    ("llama", "llama", "AutoModelForCausalLM", "{}", "{}", "float32"),
    ("llama3-rope", "llama3-rope", "AutoModelForCausalLM", "{}", "{}", "float32"),
    ("mistral", "mistral", "AutoModelForCausalLM", "{}", "{}", "float32"),
    ("qwen2", "qwen2", "AutoModelForCausalLM", "{}", "{}", "float32"),
    ("qwen3", "qwen3", "AutoModelForCausalLM", "{}", "{}", "float32"),
    ("qwen3-sharded", "qwen3", "AutoModelForCausalLM", "{}", "{ max_shard_size = '100KB' }", "float32"),
    ("qwen3-bf16", "qwen3", "AutoModelForCausalLM", "{ dtype = 'bfloat16' }", "{}", "bfloat16"),
    ("bert", "bert", "AutoModel", "{}", "{}", "float32"),
    ("bert-cls", "bert-cls", "AutoModelForSequenceClassification", "{}", "{}", "float32"),
    ("bert-new-head", "bert", "AutoModelForSequenceClassification",
     "{ id2label = { [0] = 'bad', [1] = 'ok', [2] = 'good' } }", "{}", "float32"),
    ("distilbert-cls", "distilbert-cls", "AutoModelForSequenceClassification", "{}", "{}", "float32"),
]

LUA = r"""
local transformers = require "transformers"
local nn = require "skyrun.nn"
local out_dir, fixture, cls = arg[1], arg[2], arg[3]
local load_opts = assert(loadstring("return " .. arg[4]))()
local save_opts = assert(loadstring("return " .. arg[5]))()
transformers.set_seed(1)
local model = transformers[cls].from_pretrained(fixture, load_opts)
local ref = nn.safetensors_load(fixture .. "/reference.safetensors")
local out = model { input_ids = ref["right.input_ids"], attention_mask = ref["right.attention_mask"] }
model:save_pretrained(out_dir, save_opts)
local main = out.logits or out.last_hidden_state
local params = {}
for _, p in ipairs(model:named_parameters()) do params[p[1]] = p[2] end
nn.safetensors_save(out_dir .. "/skyrun_outputs.safetensors", {
  main = main:float(), input_ids = ref["right.input_ids"], attention_mask = ref["right.attention_mask"] })
nn.safetensors_save(out_dir .. "/skyrun_params.safetensors", params)
print(model.class_name)
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skyrun", default=os.path.join(ROOT, "build", "skyrun"))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="skyrun-roundtrip-")
    script = os.path.join(work, "save.lua")
    with open(script, "w") as f:
        f.write(LUA)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, device {args.device}, skyrun {args.skyrun}")
    passed = failed = 0
    for name, fixture, cls, load_opts, save_opts, dtype in CASES:
        out_dir = os.path.join(work, name)
        try:
            r = subprocess.run([args.skyrun, script, out_dir, os.path.join(FIXTURES, fixture), cls, load_opts, save_opts],
                               capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                raise RuntimeError("skyrun failed: " + r.stderr.strip()[-2000:])
            class_name = r.stdout.strip().splitlines()[-1]
            with open(os.path.join(out_dir, "config.json")) as f:
                cfg = json.load(f)
            assert cfg["architectures"] == [class_name], f"architectures {cfg['architectures']} vs {class_name}"
            hf_cls = getattr(transformers, class_name)
            model = hf_cls.from_pretrained(out_dir, dtype=getattr(torch, dtype)).to(args.device).eval()
            ours = load_file(os.path.join(out_dir, "skyrun_outputs.safetensors"))
            params = load_file(os.path.join(out_dir, "skyrun_params.safetensors"))
            hf_params = dict(model.named_parameters())
            for k, v in params.items():
                assert k in hf_params, f"skyrun parameter {k} is not a parameter of HF's {class_name}"
                assert torch.equal(hf_params[k].detach().cpu(), v), f"weight {k} differs after HF's load"
            missing = [k for k in hf_params if k not in params]
            assert not missing, f"HF parameters skyrun did not save: {missing}"
            with torch.no_grad():
                o = model(input_ids=ours["input_ids"].to(args.device), attention_mask=ours["attention_mask"].to(args.device))
            theirs = (o.logits if hasattr(o, "logits") and o.logits is not None else o.last_hidden_state).float().cpu()
            mine = ours["main"]
            assert theirs.shape == mine.shape, f"shape {tuple(theirs.shape)} vs ours {tuple(mine.shape)}"
            diff = (theirs - mine).abs()
            if diff.dim() == 3:
                diff = diff * ours["attention_mask"].unsqueeze(-1).float()
            d = diff.max().item()
            tol = 1e-5 if dtype == "float32" else 2e-2
            extra = ""
            if "cls" in name or "head" in name:
                assert model.config.num_labels == mine.shape[-1], "num_labels"
                extra = f", id2label {model.config.id2label}"
            shards = len([f for f in os.listdir(out_dir) if f.startswith("model") and f.endswith(".safetensors")])
            status = "ok" if d <= tol else "FAIL"
            print(f"{status:4} {name}: skyrun saved {class_name} ({shards} safetensors file(s), {dtype}); "
                  f"HF loads it: weights identical, max |logits diff| {d:.3g} (tol {tol}){extra}", flush=True)
            if d <= tol:
                passed += 1
            else:
                failed += 1
        except Exception as e:  # one case failing must not hide the others
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
