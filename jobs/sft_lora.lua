-- jobs/sft_lora.lua: the NVIDIA playbook's LoRA fine-tuning script (Llama 3.1 8B): LoRA (r = --lora-rank,
-- alpha 16, no dropout, on q/k/v/o and the MLP projections) with TRL's SFTTrainer on Alpaca rows in
-- the playbook's prompt (trl.playbook).
--
--   skyrun jobs/sft_lora.lua                                   # offline: tiny Llama, rows made here
--   skyrun jobs/sft_lora.lua --model meta-llama/Llama-3.1-8B-Instruct --dataset tatsu-lab/alpaca
--
-- Flags as the playbook's; TensorBoard logs go to --log-dir, the adapter folder (PEFT's files) and
-- the tokenizer to <output-dir>/final.
require("trl.playbook").main("lora", arg)
