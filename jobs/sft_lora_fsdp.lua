-- jobs/sft_lora_fsdp.lua: the NVIDIA playbook's LoRA + FSDP fine-tuning script (Llama 3.1 70B over
-- several GPUs): the LoRA script's SFTTrainer on every rank of a pool with the accelerate plugin's
-- FSDP config (FULL_SHARD, the decoder layers wrapped, the frozen base sharded with the adapter).
--
--   skyrun jobs/sft_lora_fsdp.lua                  # offline: 2 local ranks, tiny Llama, rows made here
--   skyrun jobs/sft_lora_fsdp.lua --nodes 4 --model meta-llama/Llama-3.1-70B-Instruct --dataset tatsu-lab/alpaca
--
-- Flags as the playbook's, plus --nodes (ranks); TensorBoard logs go to --log-dir, the adapter
-- folder and the tokenizer to <output-dir>/final (written by rank 0).
require("trl.playbook").main("lora_fsdp", arg)
