-- trl: TRL 1.x's supervised fine-tuning on skyrun: SFTConfig, SFTTrainer (datasets prepared as
-- TRL prepares them, then transformers.Trainer), TRL's DataCollatorForLanguageModeling and its
-- dataset helpers (pack_rows as pack_dataset, is_conversational, maybe_convert_to_chatml).

local sft_config = require "trl.sft_config"
local sft_trainer = require "trl.sft_trainer"
local data_utils = require "trl.data_utils"

return {
  SFTConfig = sft_config.SFTConfig,
  SFTTrainer = sft_trainer.SFTTrainer,
  DataCollatorForLanguageModeling = sft_trainer.DataCollatorForLanguageModeling,
  pack_rows = data_utils.pack_rows,
  is_conversational = data_utils.is_conversational,
  is_conversational_from_value = data_utils.is_conversational_from_value,
  maybe_convert_to_chatml = data_utils.maybe_convert_to_chatml,
}
