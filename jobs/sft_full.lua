-- jobs/sft_full.lua: the NVIDIA playbook's Llama3_3B_full_finetuning.py: full supervised
-- fine-tuning with TRL's SFTTrainer on Alpaca rows in the playbook's prompt (trl.playbook).
--
--   skyrun jobs/sft_full.lua                                   # offline: tiny Llama, rows made here
--   skyrun jobs/sft_full.lua --model meta-llama/Llama-3.2-3B-Instruct --dataset tatsu-lab/alpaca
--
-- Flags as the playbook's (--model --dataset --dataset-size --batch-size --seq-length --num-epochs
-- --learning-rate --gradient-accumulation-steps --gradient-checkpointing --output-dir --log-dir
-- --logging-steps); TensorBoard logs go to --log-dir, the model and tokenizer to <output-dir>/final.
require("trl.playbook").main("full", arg)
