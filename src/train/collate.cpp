// The collators' padding rules over gathered columns (collate.hpp).
#include "train/collate.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

namespace sky::train {

namespace {

double pad_value_for(const std::string& col, int64_t pad_token_id) {
  if (col == "input_ids") return static_cast<double>(pad_token_id);
  if (col == "labels") return -100;
  if (col == "special_tokens_mask") return 1;
  return 0;  // attention_mask, token_type_ids, position_ids, ...
}

at::TensorOptions host_options(at::ScalarType dtype, bool pin) {
  return at::TensorOptions().dtype(dtype).pinned_memory(pin);
}

// values (n x len, already laid out) into a new host tensor of dtype
template <class T>
void fill_padded(T* out, const GatheredColumn& c, int64_t n, int64_t longest, double pad, bool left) {
  std::fill(out, out + n * longest, static_cast<T>(pad));
  for (int64_t r = 0; r < n; ++r) {
    const int64_t b = c.starts[r], len = c.starts[r + 1] - b;
    T* row = out + r * longest + (left ? longest - len : 0);
    for (int64_t i = 0; i < len; ++i) row[i] = static_cast<T>(c.values[b + i]);
  }
}

}  // namespace

CollateMode collate_mode_from_name(const std::string& name) {
  if (name == "pad") return CollateMode::COLLATE_PAD;
  if (name == "lm") return CollateMode::COLLATE_LM;
  if (name == "stack") return CollateMode::COLLATE_STACK;
  throw std::runtime_error("collate: unknown mode '" + name + "'");
}

std::string collate_column_name(const std::string& column, const CollateSpec& spec) {
  std::string name = (column == "label" || column == "label_ids") ? "labels" : column;
  if (!spec.keep.empty() && !spec.keep.count(name)) return "";
  return name;
}

Batch collate_gathered(std::map<std::string, GatheredColumn>& cols, int64_t n, const CollateSpec& spec) {
  const auto& where = spec.where;
  if (n == 0) throw std::runtime_error(where + ": no rows to collate");
  const bool pads = spec.mode != CollateMode::COLLATE_STACK;
  auto ids = cols.find("input_ids");
  if (pads && ids != cols.end() && ids->second.sequence && !cols.count("attention_mask")) {
    GatheredColumn m;
    m.sequence = true;
    m.starts = ids->second.starts;
    m.values.assign(ids->second.values.size(), 1.0);
    cols["attention_mask"] = std::move(m);
  }
  Batch batch;
  batch.rows = n;
  for (auto& [name, c] : cols) {
    const auto dtype = c.floating ? at::kFloat : at::kLong;
    if (!c.sequence) {
      at::Tensor t = at::empty({n}, host_options(dtype, spec.pin));
      if (c.floating) std::copy(c.values.begin(), c.values.end(), t.data_ptr<float>());
      else std::transform(c.values.begin(), c.values.end(), t.data_ptr<int64_t>(), [](double v) { return static_cast<int64_t>(v); });
      batch.tensors[name] = t;
      continue;
    }
    int64_t longest = 0, shortest = INT64_MAX;
    for (int64_t r = 0; r < n; ++r) {
      const int64_t len = c.starts[r + 1] - c.starts[r];
      longest = std::max(longest, len), shortest = std::min(shortest, len);
    }
    if (!pads && longest != shortest)
      throw std::runtime_error(where + ": column '" + name + "' has rows of different lengths (" + std::to_string(shortest) +
                               " and " + std::to_string(longest) + "): pad them (DataCollatorWithPadding)");
    const int64_t m = spec.pad_to_multiple_of;
    if (m > 0) longest = (longest + m - 1) / m * m;
    at::Tensor t = at::empty({n, longest}, host_options(dtype, spec.pin));
    const double pad = pad_value_for(name, spec.pad_token_id);
    if (c.floating) fill_padded(t.data_ptr<float>(), c, n, longest, pad, spec.pad_left);
    else fill_padded(t.data_ptr<int64_t>(), c, n, longest, pad, spec.pad_left);
    batch.tensors[name] = t;
  }
  if (spec.mode == CollateMode::COLLATE_LM) {
    auto it = batch.tensors.find("input_ids");
    if (it == batch.tensors.end()) throw std::runtime_error(where + ": rows have no input_ids");
    at::Tensor labels = at::empty(it->second.sizes(), host_options(at::kLong, spec.pin));
    labels.copy_(it->second);
    if (spec.has_pad) labels.masked_fill_(labels.eq(spec.pad_token_id), -100);
    batch.tensors["labels"] = labels;
  }
  return batch;
}

}  // namespace sky::train
