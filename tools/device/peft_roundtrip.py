#!/usr/bin/env python3
"""Adapters saved by skyrun load in PEFT with identical logits (issue 13): for each folder written by
tools/device/peft_export.lua, loads the base fixture model with transformers, the adapter with
PeftModel.from_pretrained, runs the same batch and prints the largest |difference| from skyrun's
logits (where attention_mask is 1). Exit 1 when any is over 1e-5.
usage: python3 tools/device/peft_roundtrip.py EXPORTED_DIR"""
import json
import os
import sys

import torch
import transformers
from peft import PeftModel
from safetensors.torch import load_file

root = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "models")
worst, status = 0.0, 0
for name in sorted(os.listdir(sys.argv[1])):
    d = os.path.join(sys.argv[1], name)
    info = json.load(open(os.path.join(d, "info.json")))
    ours = load_file(os.path.join(d, "ours.safetensors"))
    cls = getattr(transformers, info["class"])
    base = cls.from_pretrained(os.path.join(root, info["base"]), dtype=torch.float32)
    pm = PeftModel.from_pretrained(base, os.path.join(d, "adapter")).eval()
    with torch.no_grad():
        out = pm(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"])
    theirs = out.last_hidden_state if info["kind"] == "base" else out.logits
    diff = (theirs.float() - ours["out"].float()).abs()
    if diff.dim() == 3:
        diff = diff * ours["attention_mask"].unsqueeze(-1)
    m = diff.max().item()
    worst = max(worst, m)
    ok = m < 1e-5
    status |= 0 if ok else 1
    print(f"{'ok  ' if ok else 'FAIL'} {name}: PEFT loads skyrun's adapter, max |logits diff| {m:.3g}", flush=True)
print(f"worst {worst:.3g}")
sys.exit(status)
