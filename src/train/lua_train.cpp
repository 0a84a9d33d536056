// skyrun.train: the Lua face of the native training step (engine.hpp) and of batch building
// (collators' padding). Loaded from skyrun_torch.so on first require; lua/transformers/trainer.lua
// and data_collator.lua are its only users.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "host/bind.hpp"
#include "sky_config.h"

#if SKY_HAVE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif
#include "train/engine.hpp"
#include "train/model_lookup.hpp"

namespace sky::train {
namespace {

extern const ClassSpec kBatchSpec;
extern const ClassSpec kEngineSpec;
extern const ClassSpec kTinySpec;

// LibTorch's errors carry a C++ backtrace in what(); users get the message alone.
template <class F>
auto torch_call(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::Error& e) {
    throw std::runtime_error(e.what_without_backtrace());
  }
}

// ---- batches ---------------------------------------------------------------------------------

struct Column {
  bool sequence = false;  // per-row arrays (padded) vs per-row scalars
  bool floating = false;
  std::vector<std::vector<double>> seqs;
  std::vector<double> scalars;
};

double pad_value_for(const std::string& col, int64_t pad_token_id) {
  if (col == "input_ids") return static_cast<double>(pad_token_id);
  if (col == "labels") return -100;
  if (col == "special_tokens_mask") return 1;
  return 0;  // attention_mask, token_type_ids, position_ids, ...
}

// collate(rows, {mode="pad"|"lm"|"stack", pad_token_id=, pad_to_multiple_of=, padding_side=,
//               columns={names to keep} | nil}) -> Batch
int lua_collate(lua_State* L) {
  check_table(L, 1);
  Options o(L, 2, "collate", {{"mode", OptType::String}, {"pad_token_id", OptType::Integer},
                              {"pad_to_multiple_of", OptType::Integer}, {"padding_side", OptType::String},
                              {"columns", OptType::Table}, {"where", OptType::String}});
  const std::string mode = o.string("mode", "pad");
  const std::string where = o.string("where", "data collator");
  const bool has_pad = o.has("pad_token_id");
  const int64_t pad_id = o.integer("pad_token_id", 0);
  const int64_t multiple = o.integer("pad_to_multiple_of", 0);
  const bool left = o.string("padding_side", "right") == "left";
  if (mode != "pad" && mode != "lm" && mode != "stack") luaL_error(L, "collate: unknown mode '%s'", mode.c_str());
  std::set<std::string> keep;
  if (o.has("columns")) {
    o.push("columns");  // [cols]
    for (int i = 1; i <= static_cast<int>(lua_objlen(L, -1)); ++i) {
      lua_rawgeti(L, -1, i);
      if (lua_type(L, -1) == LUA_TSTRING) keep.insert(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  const int n = static_cast<int>(lua_objlen(L, 1));
  if (n == 0) luaL_error(L, "%s: no rows to collate", where.c_str());
  std::map<std::string, Column> cols;
  for (int r = 1; r <= n; ++r) {
    lua_rawgeti(L, 1, r);  // [row]
    if (!lua_istable(L, -1)) luaL_error(L, "%s: row %d is a %s, not a table of columns", where.c_str(), r, luaL_typename(L, -1));
    for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {  // [row, key, value]
      if (lua_type(L, -2) != LUA_TSTRING) continue;
      std::string name = lua_tostring(L, -2);
      if (name == "label" || name == "label_ids") name = "labels";
      if (!keep.empty() && !keep.count(name)) continue;
      int t = lua_type(L, -1);
      if (t == LUA_TSTRING || t == LUA_TBOOLEAN || t == LUA_TLIGHTUSERDATA) continue;  // text, flags: not model inputs
      Column& c = cols[name];
      if (t == LUA_TNUMBER) {
        if (c.sequence) luaL_error(L, "%s: column '%s' mixes numbers and lists (row %d)", where.c_str(), name.c_str(), r);
        if (static_cast<int>(c.scalars.size()) != r - 1)
          luaL_error(L, "%s: column '%s' is missing from some rows before row %d", where.c_str(), name.c_str(), r);
        double v = lua_tonumber(L, -1);
        if (v != std::floor(v)) c.floating = true;
        c.scalars.push_back(v);
      } else if (t == LUA_TTABLE) {
        if (!c.scalars.empty()) luaL_error(L, "%s: column '%s' mixes numbers and lists (row %d)", where.c_str(), name.c_str(), r);
        c.sequence = true;
        if (static_cast<int>(c.seqs.size()) != r - 1)
          luaL_error(L, "%s: column '%s' is missing from some rows before row %d", where.c_str(), name.c_str(), r);
        std::vector<double> seq;
        int len = static_cast<int>(lua_objlen(L, -1));
        seq.reserve(len);
        for (int i = 1; i <= len; ++i) {
          lua_rawgeti(L, -1, i);
          if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "%s: column '%s' row %d item %d is a %s, not a number", where.c_str(), name.c_str(), r, i, luaL_typename(L, -1));
          double v = lua_tonumber(L, -1);
          if (v != std::floor(v)) c.floating = true;
          seq.push_back(v);
          lua_pop(L, 1);
        }
        c.seqs.push_back(std::move(seq));
      } else {
        luaL_error(L, "%s: column '%s' row %d holds a %s (numbers or lists of numbers expected)", where.c_str(), name.c_str(), r, type_name_at(L, -1));
      }
    }
    lua_pop(L, 1);  // []
  }
  for (auto& [name, c] : cols) {
    size_t have = c.sequence ? c.seqs.size() : c.scalars.size();
    if (static_cast<int>(have) != n) luaL_error(L, "%s: column '%s' is missing from %d of %d rows", where.c_str(), name.c_str(), n - static_cast<int>(have), n);
  }
  if ((mode == "pad" || mode == "lm") && cols.count("input_ids") && cols["input_ids"].sequence && !cols.count("attention_mask")) {
    Column m;
    m.sequence = true;
    for (const auto& s : cols["input_ids"].seqs) m.seqs.emplace_back(s.size(), 1.0);
    cols["attention_mask"] = std::move(m);
  }
  auto batch = std::make_shared<Batch>();
  batch->rows = n;
  for (auto& [name, c] : cols) {
    const auto dtype = c.floating ? at::kFloat : at::kLong;
    if (!c.sequence) {
      batch->tensors[name] = at::tensor(c.scalars, at::kDouble).to(dtype);
      continue;
    }
    size_t longest = 0, shortest = SIZE_MAX;
    for (const auto& s : c.seqs) longest = std::max(longest, s.size()), shortest = std::min(shortest, s.size());
    if (mode == "stack" && longest != shortest)
      luaL_error(L, "%s: column '%s' has rows of different lengths (%d and %d): pad them (DataCollatorWithPadding)",
                 where.c_str(), name.c_str(), static_cast<int>(shortest), static_cast<int>(longest));
    if (multiple > 0) longest = (longest + multiple - 1) / multiple * multiple;
    const double pad = pad_value_for(name, pad_id);
    std::vector<double> flat(static_cast<size_t>(n) * longest, pad);
    for (int r = 0; r < n; ++r) {
      const auto& s = c.seqs[r];
      size_t off = left ? longest - s.size() : 0;
      std::copy(s.begin(), s.end(), flat.begin() + r * longest + off);
    }
    batch->tensors[name] = at::tensor(flat, at::kDouble).view({n, static_cast<int64_t>(longest)}).to(dtype);
  }
  if (mode == "lm") {
    auto it = batch->tensors.find("input_ids");
    if (it == batch->tensors.end()) luaL_error(L, "%s: rows have no input_ids", where.c_str());
    at::Tensor labels = it->second.clone();
    if (has_pad) labels.masked_fill_(labels.eq(pad_id), -100);
    batch->tensors["labels"] = labels;
  }
  class_push(L, kBatchSpec, batch);
  return 1;
}

void push_tensor_table(lua_State* L, const at::Tensor& t0) {
  at::Tensor t = t0.to(at::kCPU).contiguous();
  const bool is_float = t.is_floating_point();
  if (is_float) t = t.to(at::kDouble);
  else t = t.to(at::kLong);
  if (t.dim() == 0) {
    lua_pushnumber(L, is_float ? t.item<double>() : static_cast<double>(t.item<int64_t>()));
    return;
  }
  luaL_checkstack(L, 4, "tensor nesting");
  const int64_t n = t.size(0);
  lua_createtable(L, static_cast<int>(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    if (t.dim() == 1) {
      lua_pushnumber(L, is_float ? t.data_ptr<double>()[i] : static_cast<double>(t.data_ptr<int64_t>()[i]));
    } else {
      push_tensor_table(L, t[i]);
    }
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
}

int batch_get(lua_State* L) {
  auto& b = class_check<Batch>(L, 1, kBatchSpec);
  std::string name(check_string_view(L, 2));
  const at::Tensor* t = b.find(name);
  if (!t) {
    lua_pushnil(L);
    return 1;
  }
  push_tensor_table(L, *t);
  return 1;
}

int batch_keys(lua_State* L) {
  auto& b = class_check<Batch>(L, 1, kBatchSpec);
  lua_createtable(L, static_cast<int>(b.tensors.size()), 0);
  int i = 1;
  for (const auto& [k, v] : b.tensors) {
    lua_pushlstring(L, k.data(), k.size());
    lua_rawseti(L, -2, i++);
  }
  return 1;
}

int batch_shape(lua_State* L) {
  auto& b = class_check<Batch>(L, 1, kBatchSpec);
  std::string name(check_string_view(L, 2));
  const at::Tensor* t = b.find(name);
  if (!t) return 0;
  lua_createtable(L, static_cast<int>(t->dim()), 0);
  for (int64_t i = 0; i < t->dim(); ++i) {
    lua_pushnumber(L, static_cast<double>(t->size(i)));
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

// tokens fed to the model (attention_mask's sum, else input_ids' numel)
int batch_num_tokens(lua_State* L) {
  auto& b = class_check<Batch>(L, 1, kBatchSpec);
  if (const at::Tensor* m = b.find("attention_mask")) lua_pushnumber(L, static_cast<double>(m->sum().item<int64_t>()));
  else if (const at::Tensor* ids = b.find("input_ids")) lua_pushnumber(L, static_cast<double>(ids->numel()));
  else lua_pushnumber(L, 0);
  return 1;
}

int batch_rows(lua_State* L) {
  lua_pushnumber(L, static_cast<double>(class_check<Batch>(L, 1, kBatchSpec).rows));
  return 1;
}

// batch[name] reads a column as nested tables, like a dict of tensors in Python
int batch_index(lua_State* L) {
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  return batch_get(L);
}

const ClassSpec kBatchSpec = {
    "skyrun.Batch",
    "Batch",
    {{"get", safe<batch_get>}, {"keys", safe<batch_keys>}, {"shape", safe<batch_shape>},
     {"num_tokens", safe<batch_num_tokens>}},
    {{"rows", safe<batch_rows>, nullptr}},
    nullptr, nullptr, safe<batch_rows>, safe<batch_index>,
};

// ---- tiny classifier (tests) --------------------------------------------------------------------

int lua_tiny_classifier(lua_State* L) {
  Options o(L, 1, "tiny_classifier", {{"vocab_size", OptType::Integer}, {"hidden_size", OptType::Integer},
                                      {"num_labels", OptType::Integer}, {"seed", OptType::Integer}});
  auto m = tiny_classifier_new(o.integer("vocab_size", 64), o.integer("hidden_size", 16), o.integer("num_labels", 2),
                               static_cast<uint64_t>(o.integer("seed", 0)));
  class_push(L, kTinySpec, m);
  return 1;
}

int tiny_save(lua_State* L) {
  auto& m = class_check<TrainableModel>(L, 1, kTinySpec);
  tiny_classifier_save(m, std::string(check_string_view(L, 2)));
  return 0;
}

int tiny_load(lua_State* L) {
  auto& m = class_check<TrainableModel>(L, 1, kTinySpec);
  tiny_classifier_load(m, std::string(check_string_view(L, 2)));
  return 0;
}

const ClassSpec kTinySpec = {
    "skyrun.TinyClassifier", "TinyClassifier", {{"save", safe<tiny_save>}, {"load", safe<tiny_load>}}, {},
};

// ---- engine --------------------------------------------------------------------------------------

std::shared_ptr<TrainableModel> check_model(lua_State* L, int idx) {
  if (Handle* h = class_test_handle(L, idx, kTinySpec)) return std::static_pointer_cast<TrainableModel>(h->ptr);
  if (auto m = model_lookup(L, idx)) return m;
  arg_type_error(L, idx, "model");
}

// engine_new(model, {optim, learning_rate, weight_decay, adam_beta1, adam_beta2, adam_epsilon,
//   lr_scheduler_type, warmup_steps, total_steps, num_cycles, min_lr_rate, max_grad_norm, bf16, device})
int lua_engine_new(lua_State* L) {
  auto model = check_model(L, 1);
  Options o(L, 2, "engine", {{"optim", OptType::String}, {"learning_rate", OptType::Number},
                             {"weight_decay", OptType::Number}, {"adam_beta1", OptType::Number},
                             {"adam_beta2", OptType::Number}, {"adam_epsilon", OptType::Number},
                             {"lr_scheduler_type", OptType::String}, {"warmup_steps", OptType::Integer},
                             {"total_steps", OptType::Integer}, {"num_cycles", OptType::Number},
                             {"min_lr_rate", OptType::Number}, {"max_grad_norm", OptType::Number},
                             {"bf16", OptType::Boolean}, {"fp16", OptType::Boolean},
                             {"loss_scaling", OptType::Boolean}, {"init_scale", OptType::Number},
                             {"device", OptType::String}, {"world_size", OptType::Integer}});
  EngineConfig cfg;
  cfg.optim.kind = optim_kind_from_name(o.string("optim", "adamw_torch"));
  cfg.optim.lr = o.number("learning_rate", 5e-5);
  cfg.optim.weight_decay = o.number("weight_decay", 0.0);
  cfg.optim.beta1 = o.number("adam_beta1", 0.9);
  cfg.optim.beta2 = o.number("adam_beta2", 0.999);
  cfg.optim.eps = o.number("adam_epsilon", 1e-8);
  cfg.schedule.kind = schedule_kind_from_name(o.string("lr_scheduler_type", "linear"));
  cfg.schedule.warmup_steps = o.integer("warmup_steps", 0);
  cfg.schedule.total_steps = o.integer("total_steps", 1);
  cfg.schedule.num_cycles = o.number("num_cycles", 0.5);
  cfg.schedule.min_lr_rate = o.number("min_lr_rate", 0.0);
  cfg.max_grad_norm = o.number("max_grad_norm", 1.0);
  cfg.bf16 = o.boolean("bf16", false);
  cfg.fp16 = o.boolean("fp16", false);
  cfg.loss_scaling = o.boolean("loss_scaling", false);
  cfg.init_scale = o.number("init_scale", 65536.0);
  cfg.world_size = o.integer("world_size", 1);
  std::string dev = o.string("device", "cpu");
  cfg.device = at::Device(dev);
  class_push(L, kEngineSpec, torch_call([&] { return std::make_shared<Engine>(std::move(model), cfg); }));
  return 1;
}

Engine& check_engine(lua_State* L) { return class_check<Engine>(L, 1, kEngineSpec); }

// engine:forward_backward(batch, num_items|nil, accumulation_steps) -> loss
int engine_forward_backward(lua_State* L) {
  Engine& e = check_engine(L);
  auto& b = class_check<Batch>(L, 2, kBatchSpec);
  std::optional<double> items;
  if (!lua_isnoneornil(L, 3)) items = luaL_checknumber(L, 3);
  int64_t accum = lua_isnoneornil(L, 4) ? 1 : check_int64(L, 4);
  lua_pushnumber(L, torch_call([&] { return e.forward_backward(b, items, accum); }));
  return 1;
}

// engine:optimizer_step() -> grad_norm (nil when clipping is off), lr used, skipped (fp16 overflow)
int engine_optimizer_step(lua_State* L) {
  Engine& e = check_engine(L);
  StepResult r = torch_call([&] { return e.optimizer_step(); });
  if (std::isnan(r.grad_norm)) lua_pushnil(L);
  else lua_pushnumber(L, r.grad_norm);
  lua_pushnumber(L, r.lr);
  lua_pushboolean(L, r.skipped);
  return 3;
}

// engine:eval_batch(batch, want_logits) -> loss|nil, logits table|nil
int engine_eval_batch(lua_State* L) {
  Engine& e = check_engine(L);
  auto& b = class_check<Batch>(L, 2, kBatchSpec);
  bool want = opt_boolean(L, 3, false);
  ModelOutput out = torch_call([&] { return e.eval_batch(b); });
  if (out.loss.defined()) lua_pushnumber(L, out.loss.item<double>());
  else lua_pushnil(L);
  if (want && out.logits.defined()) push_tensor_table(L, out.logits);
  else lua_pushnil(L);
  return 2;
}

int engine_count_items(lua_State* L) {
  Engine& e = check_engine(L);
  lua_pushnumber(L, static_cast<double>(e.count_items(class_check<Batch>(L, 2, kBatchSpec))));
  return 1;
}

int engine_state_save(lua_State* L) {
  check_engine(L).state_save(std::string(check_string_view(L, 2)));
  return 0;
}

int engine_state_load(lua_State* L) {
  Engine& e = check_engine(L);
  std::string dir(check_string_view(L, 2));
  torch_call([&] { e.state_load(dir); });
  return 0;
}

int engine_lr(lua_State* L) {
  lua_pushnumber(L, check_engine(L).current_lr());
  return 1;
}

int engine_info(lua_State* L) {
  Engine& e = check_engine(L);
  lua_createtable(L, 0, 4);
  int64_t total = 0, trainable = 0;
  for (const NamedParam& p : e.model().named_parameters()) {
    total += p.param.numel();
    if (p.param.requires_grad()) trainable += p.param.numel();
  }
  lua_pushnumber(L, static_cast<double>(total));
  lua_setfield(L, -2, "num_parameters");
  lua_pushnumber(L, static_cast<double>(trainable));
  lua_setfield(L, -2, "trainable_parameters");
  lua_pushnumber(L, static_cast<double>(e.optimizer().decay_count()));
  lua_setfield(L, -2, "decay_tensors");
  lua_pushnumber(L, static_cast<double>(e.optimizer().params().size()));
  lua_setfield(L, -2, "tensors");
  std::string dev = e.config().device.str();
  lua_pushlstring(L, dev.data(), dev.size());
  lua_setfield(L, -2, "device");
  lua_pushnumber(L, static_cast<double>(e.scheduler_steps()));
  lua_setfield(L, -2, "scheduler_steps");
  lua_pushboolean(L, e.model().accepts_loss_kwargs());
  lua_setfield(L, -2, "model_accepts_loss_kwargs");
  lua_pushnumber(L, e.loss_scale());
  lua_setfield(L, -2, "loss_scale");
  return 1;
}

// engine:decay_names() -> names of the parameters that get weight decay (HF's decay group)
int engine_decay_names(lua_State* L) {
  Engine& e = check_engine(L);
  lua_newtable(L);
  int i = 1;
  for (const NamedParam& p : e.optimizer().params()) {
    if (!param_gets_weight_decay(p.name)) continue;
    lua_pushlstring(L, p.name.data(), p.name.size());
    lua_rawseti(L, -2, i++);
  }
  return 1;
}

const ClassSpec kEngineSpec = {
    "skyrun.TrainEngine",
    "TrainEngine",
    {{"forward_backward", safe<engine_forward_backward>}, {"optimizer_step", safe<engine_optimizer_step>},
     {"eval_batch", safe<engine_eval_batch>}, {"count_items", safe<engine_count_items>},
     {"state_save", safe<engine_state_save>}, {"state_load", safe<engine_state_load>}, {"lr", safe<engine_lr>},
     {"info", safe<engine_info>}, {"decay_names", safe<engine_decay_names>}},
    {},
};

int lua_set_seed(lua_State* L) {
  engine_set_seed(static_cast<uint64_t>(check_int64(L, 1)));
  return 0;
}

// randperm(n, seed) -> 1-based permutation from torch's CPU generator seeded with seed (as
// torch.randperm(n, generator=torch.Generator().manual_seed(seed)))
int lua_randperm(lua_State* L) {
  int64_t n = check_int64(L, 1);
  uint64_t seed = static_cast<uint64_t>(check_int64(L, 2));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor p = at::randperm(n, gen, at::kLong);
  lua_createtable(L, static_cast<int>(n), 0);
  const int64_t* d = p.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    lua_pushnumber(L, static_cast<double>(d[i] + 1));
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

// load_weights(model, folder): the saved weights copied into the model in place
int lua_load_weights(lua_State* L) {
  std::string folder(check_string_view(L, 2));
  if (class_test_handle(L, 1, kTinySpec)) {
    tiny_classifier_load(class_check<TrainableModel>(L, 1, kTinySpec), folder + "/model.pt");
    return 0;
  }
  model_load_weights(L, 1, folder);
  return 0;
}

// cuda_memory([reset]) -> {allocated=, peak_allocated=, reserved=} in bytes on device 0 (nil
// without CUDA); reset=true starts a new peak.
int lua_cuda_memory(lua_State* L) {
#if SKY_HAVE_CUDA
  if (!torch::cuda::is_available()) return 0;
  c10::cuda::device_synchronize();
  const bool reset = opt_boolean(L, 1, false);  // read before the result table takes slot 1
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  const size_t agg = 0;  // StatType::AGGREGATE (its namespace moved between LibTorch 2.x releases)
  lua_createtable(L, 0, 3);
  lua_pushnumber(L, static_cast<double>(stats.allocated_bytes[agg].current));
  lua_setfield(L, -2, "allocated");
  lua_pushnumber(L, static_cast<double>(stats.allocated_bytes[agg].peak));
  lua_setfield(L, -2, "peak_allocated");
  lua_pushnumber(L, static_cast<double>(stats.reserved_bytes[agg].current));
  lua_setfield(L, -2, "reserved");
  if (reset) c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  return 1;
#else
  return 0;
#endif
}

int lua_cuda_synchronize(lua_State* L) {
#if SKY_HAVE_CUDA
  if (torch::cuda::is_available()) c10::cuda::device_synchronize();
#endif
  return 0;
}

int lua_cuda_available(lua_State* L) {
  lua_pushboolean(L, torch::cuda::is_available());
  return 1;
}

}  // namespace
}  // namespace sky::train

extern "C" __attribute__((visibility("default"))) int luaopen_skyrun_train(lua_State* L) {
  using namespace sky;
  static const luaL_Reg fns[] = {
      {"collate", safe<train::lua_collate>},
      {"engine", safe<train::lua_engine_new>},
      {"tiny_classifier", safe<train::lua_tiny_classifier>},
      {"set_seed", safe<train::lua_set_seed>},
      {"randperm", safe<train::lua_randperm>},
      {"cuda_available", safe<train::lua_cuda_available>},
      {"load_weights", safe<train::lua_load_weights>},
      {"cuda_memory", safe<train::lua_cuda_memory>},
      {"cuda_synchronize", safe<train::lua_cuda_synchronize>},
      {nullptr, nullptr},
  };
  class_register(L, train::kBatchSpec);
  class_register(L, train::kEngineSpec);
  class_register(L, train::kTinySpec);
  lua_createtable(L, 0, 8);
  luaL_register(L, nullptr, fns);
  return 1;
}
