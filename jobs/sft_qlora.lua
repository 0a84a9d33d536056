-- jobs/sft_qlora.lua: the NVIDIA playbook's QLoRA fine-tuning script (Llama 3.1 70B): LoRA on a 4-bit base
-- (NF4 with double quantization, as bitsandbytes; a checkpoint already in 4 bits loads as it is),
-- prepare_model_for_kbit_training, then TRL's SFTTrainer on Alpaca rows in the playbook's prompt.
--
--   skyrun jobs/sft_qlora.lua                                  # offline: tiny Llama, rows made here
--   skyrun jobs/sft_qlora.lua --model unsloth/Meta-Llama-3.1-70B-bnb-4bit --dataset tatsu-lab/alpaca
--
-- Flags as the playbook's; TensorBoard logs go to --log-dir, the adapter folder (PEFT's files) and
-- the tokenizer to <output-dir>/final.
require("trl.playbook").main("qlora", arg)
