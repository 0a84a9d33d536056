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
#include "torch/lua_tensor.hpp"
#include "nn/model.hpp"
#include "train/collate.hpp"
#include "train/ddp.hpp"
#include "train/engine.hpp"
#include "train/loader.hpp"
#include "train/model_lookup.hpp"

namespace sky::train {
namespace {

extern const ClassSpec kBatchSpec;
extern const ClassSpec kEngineSpec;
extern const ClassSpec kLoaderSpec;

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

// The collator options at idx, shared by collate() and loader(): mode ("pad"|"lm"|"stack"),
// pad_token_id, pad_to_multiple_of, padding_side, columns (names to keep), where (the collator's
// name in errors).
CollateSpec check_collate_spec(lua_State* L, int idx, const char* fname) {
  Options o(L, idx, fname, {{"mode", OptType::String}, {"pad_token_id", OptType::Integer},
                            {"pad_to_multiple_of", OptType::Integer}, {"padding_side", OptType::String},
                            {"columns", OptType::Table}, {"where", OptType::String}});
  CollateSpec spec;
  const std::string mode = o.string("mode", "pad");
  if (mode != "pad" && mode != "lm" && mode != "stack") luaL_error(L, "%s: unknown mode '%s'", fname, mode.c_str());
  spec.mode = collate_mode_from_name(mode);
  spec.where = o.string("where", "data collator");
  spec.has_pad = o.has("pad_token_id");
  spec.pad_token_id = o.integer("pad_token_id", 0);
  spec.pad_to_multiple_of = o.integer("pad_to_multiple_of", 0);
  spec.pad_left = o.string("padding_side", "right") == "left";
  if (o.has("columns")) {
    o.push("columns");  // [cols]
    for (int i = 1; i <= static_cast<int>(lua_objlen(L, -1)); ++i) {
      lua_rawgeti(L, -1, i);  // [cols, name]
      if (lua_type(L, -1) == LUA_TSTRING) spec.keep.insert(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  return spec;
}

// collate(rows, {mode="pad"|"lm"|"stack", pad_token_id=, pad_to_multiple_of=, padding_side=,
//               columns={names to keep} | nil}) -> Batch. The slow path: rows are Lua tables.
int lua_collate(lua_State* L) {
  check_table(L, 1);
  const CollateSpec spec = check_collate_spec(L, 2, "collate");
  const char* where = spec.where.c_str();
  const int n = static_cast<int>(lua_objlen(L, 1));
  if (n == 0) luaL_error(L, "%s: no rows to collate", where);
  std::map<std::string, GatheredColumn> cols;
  std::map<std::string, int> rows_seen;
  for (int r = 1; r <= n; ++r) {
    lua_rawgeti(L, 1, r);  // [row]
    if (!lua_istable(L, -1)) luaL_error(L, "%s: row %d is a %s, not a table of columns", where, r, luaL_typename(L, -1));
    for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {  // [row, key, value]
      if (lua_type(L, -2) != LUA_TSTRING) continue;
      const std::string name = collate_column_name(lua_tostring(L, -2), spec);
      if (name.empty()) continue;
      int t = lua_type(L, -1);
      if (t == LUA_TSTRING || t == LUA_TBOOLEAN || t == LUA_TLIGHTUSERDATA) continue;  // text, flags: not model inputs
      GatheredColumn& c = cols[name];
      int& seen = rows_seen[name];
      if (seen != r - 1) luaL_error(L, "%s: column '%s' is missing from some rows before row %d", where, name.c_str(), r);
      ++seen;
      if (t == LUA_TNUMBER) {
        if (c.sequence) luaL_error(L, "%s: column '%s' mixes numbers and lists (row %d)", where, name.c_str(), r);
        double v = lua_tonumber(L, -1);
        if (v != std::floor(v)) c.floating = true;
        c.values.push_back(v);
      } else if (t == LUA_TTABLE) {
        if (!c.values.empty() && !c.sequence) luaL_error(L, "%s: column '%s' mixes numbers and lists (row %d)", where, name.c_str(), r);
        c.sequence = true;
        const int len = static_cast<int>(lua_objlen(L, -1));
        for (int i = 1; i <= len; ++i) {
          lua_rawgeti(L, -1, i);  // [row, key, value, item]
          if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "%s: column '%s' row %d item %d is a %s, not a number", where, name.c_str(), r, i, luaL_typename(L, -1));
          double v = lua_tonumber(L, -1);
          if (v != std::floor(v)) c.floating = true;
          c.values.push_back(v);
          lua_pop(L, 1);
        }
        c.starts.push_back(static_cast<int64_t>(c.values.size()));
      } else {
        luaL_error(L, "%s: column '%s' row %d holds a %s (numbers or lists of numbers expected)", where, name.c_str(), r, type_name_at(L, -1));
      }
    }
    lua_pop(L, 1);  // []
  }
  for (const auto& [name, seen] : rows_seen)
    if (seen != n) luaL_error(L, "%s: column '%s' is missing from %d of %d rows", where, name.c_str(), n - seen, n);
  auto batch = torch_call([&] { return std::make_shared<Batch>(collate_gathered(cols, n, spec)); });
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

// batch:tensor(name) -> the column as a torch Tensor (no copy), nil when absent
int batch_tensor(lua_State* L) {
  auto& b = class_check<Batch>(L, 1, kBatchSpec);
  const at::Tensor* t = b.find(std::string(check_string_view(L, 2)));
  if (t) lua_push_tensor(L, *t);
  else lua_pushnil(L);
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
    {{"get", safe<batch_get>}, {"tensor", safe<batch_tensor>}, {"keys", safe<batch_keys>}, {"shape", safe<batch_shape>},
     {"num_tokens", safe<batch_num_tokens>}},
    {{"rows", safe<batch_rows>, nullptr}},
    nullptr, nullptr, safe<batch_rows>, safe<batch_index>,
};

// ---- the native data path ----------------------------------------------------------------------

// loader(dataset, collator_opts, pin) -> Loader: batches from a datasets.Dataset's columns with a
// built-in collator's options (those of collate()); pin: page-locked memory (with CUDA only).
int lua_loader_new(lua_State* L) {
  data::DatasetPtr ds = data::check_dataset(L, 1);
  CollateSpec spec = check_collate_spec(L, 2, "loader");
  spec.pin = opt_boolean(L, 3, false) && torch::cuda::is_available();
  class_push(L, kLoaderSpec, torch_call([&] { return std::make_shared<Loader>(std::move(ds), std::move(spec)); }));
  return 1;
}

// loader:start(order, micro): order lists 1-based dataset rows; micro lists {first, last} ranges
// (1-based, inclusive) of order, one a micro-batch, in the order they will be taken.
int loader_start(lua_State* L) {
  Loader& ld = class_check<Loader>(L, 1, kLoaderSpec);
  check_table(L, 2);
  check_table(L, 3);
  const int64_t n = static_cast<int64_t>(lua_objlen(L, 2));
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) {
    lua_rawgeti(L, 2, static_cast<int>(i + 1));  // [.., row]
    order[i] = check_int64(L, -1) - 1;
    lua_pop(L, 1);
  }
  std::vector<std::vector<int64_t>> plan;
  const int m = static_cast<int>(lua_objlen(L, 3));
  plan.reserve(m);
  for (int k = 1; k <= m; ++k) {
    lua_rawgeti(L, 3, k);  // [.., range]
    if (!lua_istable(L, -1)) luaL_error(L, "loader:start: micro-batch %d is a %s, not {first, last}", k, luaL_typename(L, -1));
    lua_rawgeti(L, -1, 1);  // [.., range, first]
    lua_rawgeti(L, -2, 2);  // [.., range, first, last]
    const int64_t first = check_int64(L, -2), last = check_int64(L, -1);
    lua_pop(L, 3);
    if (first < 1 || last > n || first > last)
      luaL_error(L, "loader:start: micro-batch %d spans %d..%d of an order of %d rows", k, static_cast<int>(first),
                 static_cast<int>(last), static_cast<int>(n));
    plan.emplace_back(order.begin() + (first - 1), order.begin() + last);
  }
  torch_call([&] { ld.start(std::move(plan)); });
  return 0;
}

// loader:next(count) -> {Batch, ...}: the next count batches of the plan
int loader_next(lua_State* L) {
  Loader& ld = class_check<Loader>(L, 1, kLoaderSpec);
  const int64_t count = lua_isnoneornil(L, 2) ? 1 : check_int64(L, 2);
  lua_createtable(L, static_cast<int>(count), 0);  // [.., list]
  for (int64_t i = 1; i <= count; ++i) {
    auto b = torch_call([&] { return std::make_shared<Batch>(ld.next()); });
    class_push(L, kBatchSpec, b);  // [.., list, batch]
    lua_rawseti(L, -2, static_cast<int>(i));
  }
  return 1;
}

int loader_len(lua_State* L) {
  lua_pushnumber(L, static_cast<double>(class_check<Loader>(L, 1, kLoaderSpec).size()));
  return 1;
}

const ClassSpec kLoaderSpec = {
    "skyrun.Loader", "Loader", {{"start", safe<loader_start>}, {"next", safe<loader_next>}}, {},
    nullptr, nullptr, safe<loader_len>, nullptr,
};

// ---- engine --------------------------------------------------------------------------------------

std::shared_ptr<TrainableModel> check_model(lua_State* L, int idx) {
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
                             {"device", OptType::String}, {"world_size", OptType::Integer},
                             {"cuda_graphs", OptType::Boolean}, {"ddp_bucket_cap_mb", OptType::Number},
                             {"fsdp", OptType::Boolean}, {"fsdp_reshard_after_forward", OptType::Boolean},
                             {"fsdp_backward_prefetch", OptType::String}, {"fsdp_forward_prefetch", OptType::Boolean},
                             {"fsdp_param_dtype", OptType::String}, {"fsdp_sync_module_states", OptType::Boolean},
                             {"fsdp_block_classes", OptType::String}, {"fsdp_wrap", OptType::Boolean},
                             {"average_tokens_across_devices", OptType::Boolean}});
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
  cfg.cuda_graphs = o.boolean("cuda_graphs", false);
  cfg.average_tokens_across_devices = o.boolean("average_tokens_across_devices", true);
  if (o.has("ddp_bucket_cap_mb")) cfg.ddp_bucket_bytes = static_cast<size_t>(o.number("ddp_bucket_cap_mb", 25) * (1 << 20));
  if (o.boolean("fsdp", false)) {
    FsdpConfig f;
    f.reshard_after_forward = o.boolean("fsdp_reshard_after_forward", true);
    const std::string pre = o.string("fsdp_backward_prefetch", "BACKWARD_PRE");
    if (pre == "BACKWARD_PRE") f.backward_prefetch = BackwardPrefetch::BACKWARD_PREFETCH_PRE;
    else if (pre == "BACKWARD_POST") f.backward_prefetch = BackwardPrefetch::BACKWARD_PREFETCH_POST;
    else if (pre == "NO_PREFETCH") f.backward_prefetch = BackwardPrefetch::BACKWARD_PREFETCH_NONE;
    else luaL_error(L, "engine: fsdp_backward_prefetch must be BACKWARD_PRE, BACKWARD_POST or NO_PREFETCH (got %s)", pre.c_str());
    f.forward_prefetch = o.boolean("fsdp_forward_prefetch", true);
    if (o.has("fsdp_param_dtype")) f.param_dtype = nn::dtype_from_string(o.string("fsdp_param_dtype", "float32"));
    f.sync_module_states = o.boolean("fsdp_sync_module_states", true);
    cfg.fsdp = f;
    cfg.fsdp_wrap = o.boolean("fsdp_wrap", true);
    const std::string classes = o.string("fsdp_block_classes", "");
    size_t start = 0;
    while (start < classes.size()) {
      size_t end = classes.find(',', start);
      if (end == std::string::npos) end = classes.size();
      std::string c = classes.substr(start, end - start);
      if (!c.empty()) cfg.fsdp_block_classes.push_back(c);
      start = end + 1;
    }
  }
  std::string dev = o.string("device", "cpu");
  cfg.device = at::Device(dev);
  class_push(L, kEngineSpec, torch_call([&] { return std::make_shared<Engine>(std::move(model), cfg); }));
  return 1;
}

Engine& check_engine(lua_State* L) { return class_check<Engine>(L, 1, kEngineSpec); }

// engine:train_step({batch, ...}, num_items|nil, accumulation_steps, steps_since_log)
//   -> lr used, skipped (fp16 overflow), graphed (a CUDA graph replay)
// One optimizer step over the micro-batches; reads nothing back from the device.
int engine_train_step(lua_State* L) {
  Engine& e = check_engine(L);
  check_table(L, 2);
  std::vector<Batch> micro;
  const int n = static_cast<int>(lua_objlen(L, 2));
  micro.reserve(n);
  for (int i = 1; i <= n; ++i) {
    lua_rawgeti(L, 2, i);  // [.., batch]
    micro.push_back(class_check<Batch>(L, -1, kBatchSpec));
    lua_pop(L, 1);
  }
  std::optional<double> items;
  if (!lua_isnoneornil(L, 3)) items = luaL_checknumber(L, 3);
  const int64_t accum = lua_isnoneornil(L, 4) ? 1 : check_int64(L, 4);
  const int64_t since = lua_isnoneornil(L, 5) ? 1 : check_int64(L, 5);
  StepResult r = torch_call([&] { return e.train_step(micro, items, accum, since); });
  lua_pushnumber(L, r.lr);
  lua_pushboolean(L, r.skipped);
  lua_pushboolean(L, r.graphed);
  return 3;
}

// engine:take_loss() -> the summed step losses since the last call (HF's tr_loss), then zero
int engine_take_loss(lua_State* L) {
  Engine& e = check_engine(L);
  lua_pushnumber(L, torch_call([&] { return e.take_loss(); }));
  return 1;
}

// engine:grad_norm() -> the last step's norm before clipping, nil when clipping is off or skipped
int engine_grad_norm(lua_State* L) {
  Engine& e = check_engine(L);
  std::optional<double> g = torch_call([&] { return e.grad_norm(); });
  if (g) lua_pushnumber(L, *g);
  else lua_pushnil(L);
  return 1;
}

int engine_eval_begin(lua_State* L) {
  check_engine(L).eval_begin();
  return 0;
}

// engine:eval_batch(batch, want_logits) -> logits as a torch Tensor on the device, or nil. The
// loss stays on the device (eval_end).
int engine_eval_batch(lua_State* L) {
  Engine& e = check_engine(L);
  auto& b = class_check<Batch>(L, 2, kBatchSpec);
  const bool want = opt_boolean(L, 3, false);
  at::Tensor logits = torch_call([&] { return e.eval_batch(b, want); });
  if (logits.defined()) lua_push_tensor(L, logits);
  else lua_pushnil(L);
  return 1;
}

// engine:eval_end() -> sum of (batch loss x rows), rows with a loss
int engine_eval_end(lua_State* L) {
  Engine& e = check_engine(L);
  auto [sum, rows] = torch_call([&] { return e.eval_end(); });
  lua_pushnumber(L, sum);
  lua_pushnumber(L, static_cast<double>(rows));
  return 2;
}

// engine:host_rows(tensor) -> nested Lua tables (float32 on the host first; counted in
// info().host_logits_bytes)
int engine_host_rows(lua_State* L) {
  Engine& e = check_engine(L);
  at::Tensor t = lua_check_tensor(L, 2);
  at::Tensor h = torch_call([&] { return e.to_host(t); });
  push_tensor_table(L, h);
  return 1;
}

int engine_count_items(lua_State* L) {
  Engine& e = check_engine(L);
  lua_pushnumber(L, static_cast<double>(e.count_items(class_check<Batch>(L, 2, kBatchSpec))));
  return 1;
}

// engine:state_save(dir[, sharded]) / engine:state_load(dir[, sharded]); under FSDP every rank calls them
int engine_state_save(lua_State* L) {
  Engine& e = check_engine(L);
  std::string dir(check_string_view(L, 2));
  const bool sharded = opt_boolean(L, 3, false);
  torch_call([&] { e.state_save(dir, sharded); });
  return 0;
}

int engine_state_load(lua_State* L) {
  Engine& e = check_engine(L);
  std::string dir(check_string_view(L, 2));
  const bool sharded = opt_boolean(L, 3, false);
  torch_call([&] { e.state_load(dir, sharded); });
  return 0;
}

Fsdp& check_fsdp(lua_State* L, Engine& e) {
  if (!e.fsdp()) luaL_error(L, "the engine does not shard the model (FSDP is off)");
  return *e.fsdp();
}

// engine:fsdp_gather([trainable_only]) / engine:fsdp_release(): every parameter (or the trainable
// ones') full tensor in the model between the two, to save a FULL state dict; every rank calls both.
int engine_fsdp_gather(lua_State* L) {
  Engine& e = check_engine(L);
  check_fsdp(L, e);
  const bool trainable_only = opt_boolean(L, 2, false);
  torch_call([&] { e.fsdp_gather(trainable_only); });
  return 0;
}

int engine_fsdp_release(lua_State* L) {
  Engine& e = check_engine(L);
  torch_call([&] { e.fsdp_release(); });
  return 0;
}

// engine:fsdp_save_shards(dir) / engine:fsdp_load_shards(dir): this rank's parameter shards in
// dir/pytorch_model_fsdp_0/ (SHARDED_STATE_DICT); rank 0 also writes the index.
int engine_fsdp_save_shards(lua_State* L) {
  Engine& e = check_engine(L);
  Fsdp& f = check_fsdp(L, e);
  std::string dir(check_string_view(L, 2));
  torch_call([&] { fsdp_save_shards(f, dir); });
  return 0;
}

int engine_fsdp_load_shards(lua_State* L) {
  Engine& e = check_engine(L);
  Fsdp& f = check_fsdp(L, e);
  std::string dir(check_string_view(L, 2));
  torch_call([&] { fsdp_load_shards(f, dir); });
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
  if (e.fsdp()) {  // the model's own tensors are empty while sharded
    for (const Fsdp::ParamInfo& p : e.fsdp()->params_info()) {
      int64_t n = 1;
      for (int64_t d : p.shape) n *= d;
      total += n;
      if (p.trainable) trainable += n;
    }
  } else {
    for (const NamedParam& p : e.model().named_parameters()) {
      total += p.param.numel();
      if (p.param.requires_grad()) trainable += p.param.numel();
    }
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
  lua_pushnumber(L, static_cast<double>(e.host_logits_bytes()));
  lua_setfield(L, -2, "host_logits_bytes");
  lua_pushnumber(L, static_cast<double>(e.graph_replays()));
  lua_setfield(L, -2, "graph_replays");
  lua_pushboolean(L, e.fsdp() != nullptr);
  lua_setfield(L, -2, "fsdp");
  if (e.fsdp()) {
    lua_pushnumber(L, static_cast<double>(e.fsdp()->world_size()));
    lua_setfield(L, -2, "fsdp_world_size");
    int64_t local = 0;
    for (const NamedParam& p : e.fsdp()->trainable_shards()) local += p.param.numel();
    lua_pushnumber(L, static_cast<double>(local));
    lua_setfield(L, -2, "local_trainable_parameters");
  }
  if (e.ddp()) {
    lua_pushnumber(L, static_cast<double>(e.ddp()->bucket_count()));
    lua_setfield(L, -2, "ddp_buckets");
    lua_pushnumber(L, static_cast<double>(e.ddp()->launched_in_backward()));
    lua_setfield(L, -2, "ddp_launched_in_backward");
  }
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
    {{"train_step", safe<engine_train_step>}, {"take_loss", safe<engine_take_loss>},
     {"grad_norm", safe<engine_grad_norm>}, {"eval_begin", safe<engine_eval_begin>},
     {"eval_batch", safe<engine_eval_batch>}, {"eval_end", safe<engine_eval_end>},
     {"host_rows", safe<engine_host_rows>}, {"count_items", safe<engine_count_items>},
     {"state_save", safe<engine_state_save>}, {"state_load", safe<engine_state_load>}, {"lr", safe<engine_lr>},
     {"info", safe<engine_info>}, {"decay_names", safe<engine_decay_names>},
     {"fsdp_gather", safe<engine_fsdp_gather>}, {"fsdp_release", safe<engine_fsdp_release>},
     {"fsdp_save_shards", safe<engine_fsdp_save_shards>}, {"fsdp_load_shards", safe<engine_fsdp_load_shards>}},
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
      {"loader", safe<train::lua_loader_new>},
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
  class_register(L, train::kLoaderSpec);
  lua_createtable(L, 0, 8);
  luaL_register(L, nullptr, fns);
  return 1;
}
