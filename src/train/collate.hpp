// Batch building shared by both data paths: the collators' padding rules (HF's
// DataCollatorWithPadding, DataCollatorForLanguageModeling(mlm=False), default_data_collator)
// applied to columns gathered for one batch, from Lua row tables (lua_train.cpp) or straight from a
// dataset's memory-mapped columns (loader.cpp). No Lua here.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "train/engine.hpp"

namespace sky::train {

enum class CollateMode { COLLATE_PAD, COLLATE_LM, COLLATE_STACK };

struct CollateSpec {
  CollateMode mode = CollateMode::COLLATE_PAD;
  int64_t pad_token_id = 0;
  bool has_pad = false;            // lm: pad-id positions of the labels become -100
  int64_t pad_to_multiple_of = 0;  // 0: the longest row
  bool pad_left = false;
  std::set<std::string> keep;      // columns to keep (after renaming label/label_ids); empty: all
  std::string where = "data collator";  // names the collator in errors
  bool pin = false;                // page-locked host memory (CUDA), for non-blocking copies
};

CollateMode collate_mode_from_name(const std::string& name);  // "pad" | "lm" | "stack"; throws

// The model input a dataset column becomes: "label"/"label_ids" are "labels"; "" when the spec
// leaves it out.
std::string collate_column_name(const std::string& column, const CollateSpec& spec);

// One column of the n rows of a batch: a scalar a row, or a sequence a row (row r's values are
// values[starts[r] .. starts[r + 1])).
struct GatheredColumn {
  bool sequence = false;
  bool floating = false;  // a non-integral value was seen: float32, else int64
  std::vector<double> values;
  std::vector<int64_t> starts{0};
};

// Pads (or stacks) the gathered columns into a Batch: input_ids with the pad id, labels with -100,
// special_tokens_mask with 1, the rest with 0; pad/lm add an all-ones attention_mask when the rows
// have none; lm adds labels. Throws naming spec.where and the column.
Batch collate_gathered(std::map<std::string, GatheredColumn>& cols, int64_t n, const CollateSpec& spec);

}  // namespace sky::train
