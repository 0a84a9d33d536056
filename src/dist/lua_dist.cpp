// `require "skyrun.dist"`: the process's default c10d group seen from Lua. Numbers and arrays of
// numbers travel as float64 tensors (integers up to 2^53 exactly). Every collective starts with
// the ranks agreeing on what it is (Group::agree: kind, op, shape), so ranks in different
// collectives get the same clear error on every rank, not a crash, a hang or a wrong answer.
#include <lua.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "dist/dist.hpp"
#include "host/bind.hpp"
#include "host/runtime.hpp"
#include "torch/lua_tensor.hpp"

namespace sky::dist {

namespace {

std::shared_ptr<Group> check_group(const char* fname) {
  auto g = default_group();
  if (!g)
    throw Error(std::string("dist.") + fname +
                ": no process group in this process: call init_process_group first (in a pool, add the "
                "torch plugin: plugins = { sky.plugins.torch { backend = \"gloo\" } })");
  return g;
}

int dist_init_process_group(lua_State* L) {
  Options opts(L, 1, "init_process_group",
               {{"backend", OptType::String}, {"rank", OptType::Integer}, {"world_size", OptType::Integer},
                {"local_rank", OptType::Integer}, {"master_addr", OptType::String},
                {"master_port", OptType::Integer}, {"timeout", OptType::Number}, {"secret", OptType::String}});
  InitOptions o;
  o.backend = opts.string("backend", "");
  o.rank = static_cast<int>(opts.integer("rank", -1));
  o.world_size = static_cast<int>(opts.integer("world_size", -1));
  o.local_rank = static_cast<int>(opts.integer("local_rank", -1));
  o.master_addr = opts.string("master_addr", "");
  o.master_port = static_cast<int>(opts.integer("master_port", -1));
  o.secret = opts.string("secret", "");
  double timeout = opts.number("timeout", 300.0);
  if (!(timeout > 0) || timeout > 1e7) throw Error("init_process_group: timeout must be a positive number of seconds");
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000.0));
  o.cancelled = [L] { return runtime_interrupt_pending(L); };
  std::shared_ptr<Group> g;
  try {
    g = init_process_group(o);
  } catch (const std::exception& e) {
    // Ctrl-C stopped the wait: one "interrupted!" error, not a second one from the hook.
    if (runtime_interrupt_take(L)) throw Error(std::string(e.what()) + ": interrupted!");
    throw;
  }
  lua_pushinteger(L, g->rank());        // [rank]
  lua_pushinteger(L, g->world_size());  // [rank, world_size]
  return 2;
}

int dist_is_initialized(lua_State* L) {
  lua_pushboolean(L, default_group() != nullptr);
  return 1;
}

int dist_rank(lua_State* L) {
  lua_pushinteger(L, check_group("rank")->rank());
  return 1;
}

int dist_world_size(lua_State* L) {
  lua_pushinteger(L, check_group("world_size")->world_size());
  return 1;
}

int dist_backend(lua_State* L) {
  auto g = check_group("backend");
  lua_pushlstring(L, g->backend_name().data(), g->backend_name().size());
  return 1;
}

int dist_barrier(lua_State* L) {
  check_group("barrier")->barrier();
  return 0;
}

int dist_destroy_process_group(lua_State* L) {
  destroy_process_group();
  return 0;
}

// A number or an array of numbers at idx, as doubles. Returns false for a number.
bool read_numbers(lua_State* L, int idx, const char* fname, std::vector<double>& out) {
  int t = lua_type(L, idx);
  if (t == LUA_TNUMBER) {
    out.push_back(lua_tonumber(L, idx));
    return false;
  }
  if (t != LUA_TTABLE) arg_type_error(L, idx, "number or array of numbers");
  size_t n = lua_objlen(L, idx);
  out.reserve(n);
  for (size_t i = 1; i <= n; ++i) {
    lua_rawgeti(L, idx, static_cast<int>(i));  // [v]
    if (lua_type(L, -1) != LUA_TNUMBER) {
      const char* msg = lua_pushfstring(L, "array of numbers expected, element %d is %s", static_cast<int>(i),
                                        type_name_at(L, -1));
      luaL_argerror(L, idx, msg);
    }
    out.push_back(lua_tonumber(L, -1));
    lua_pop(L, 1);
  }
  // Keys beyond 1..n (a record, or a hole) would be silently dropped: refuse them.
  size_t keys = 0;
  lua_pushnil(L);  // [nil]
  while (lua_next(L, idx) != 0) {  // [k, v]
    lua_pop(L, 1);                 // [k]
    ++keys;
  }
  if (keys != n) luaL_argerror(L, idx, "array of numbers expected, got a table with keys other than 1..n");
  return true;
}

void push_numbers(lua_State* L, const at::Tensor& t, bool array) {
  at::Tensor c = t.to(at::kCPU).contiguous();
  const double* p = c.data_ptr<double>();
  if (!array) {
    lua_pushnumber(L, p[0]);
    return;
  }
  int n = static_cast<int>(c.numel());
  lua_createtable(L, n /* narr */, 0);  // [arr]
  for (int i = 0; i < n; ++i) {
    lua_pushnumber(L, p[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

std::vector<at::Tensor> check_tensor_list(lua_State* L, int idx, const char* fname) {
  check_table(L, idx);
  std::vector<at::Tensor> out;
  int n = static_cast<int>(lua_objlen(L, idx));
  for (int i = 1; i <= n; ++i) {
    lua_rawgeti(L, idx, i);  // [t]
    if (!lua_is_tensor(L, -1)) {
      const char* msg = lua_pushfstring(L, "list of Tensors expected, element %d is %s", i, type_name_at(L, -1));
      luaL_argerror(L, idx, msg);
    }
    out.push_back(lua_check_tensor(L, -1));
    lua_pop(L, 1);
  }
  return out;
}

// sync_parameters(params [, src]): DDP's start, every tensor takes rank src's values.
int dist_sync_parameters(lua_State* L) {
  auto g = check_group("sync_parameters");
  std::vector<at::Tensor> ts = check_tensor_list(L, 1, "sync_parameters");
  int64_t src = lua_isnoneornil(L, 2) ? 0 : check_int64(L, 2);
  if (src < 0 || src >= g->world_size())
    throw Error("dist.sync_parameters: source rank " + std::to_string(src) + " is not in 0.." +
                std::to_string(g->world_size() - 1));
  sync_parameters(ts, static_cast<int>(src));
  return 0;
}

// sync_gradients(params): DDP's gradient all-reduce, the gradients averaged over ranks in place.
int dist_sync_gradients(lua_State* L) {
  auto g = check_group("sync_gradients");
  std::vector<at::Tensor> ts = check_tensor_list(L, 1, "sync_gradients");
  sync_gradients(ts);
  return 0;
}

int dist_all_reduce(lua_State* L) {
  auto g = check_group("all_reduce");
  if (lua_is_tensor(L, 1)) {  // in place, as torch.distributed.all_reduce
    at::Tensor t = lua_check_tensor(L, 1);
    ReduceOp op = reduce_op_from_name(luaL_optstring(L, 2, "sum"));
    {
      torch::NoGradGuard no_grad;
      g->all_reduce(t, op);
    }
    lua_pushvalue(L, 1);  // [t]
    return 1;
  }
  std::vector<double> values;
  bool array = read_numbers(L, 1, "all_reduce", values);
  std::string op_name = luaL_optstring(L, 2, "sum");
  ReduceOp op = reduce_op_from_name(op_name);
  at::Tensor data = torch::tensor(values, torch::kFloat64);  // [n]
  g->all_reduce(data, op, array ? CollectiveCall::kArray : CollectiveCall::kNumber);
  push_numbers(L, data, array);
  return 1;
}

// all_reduce_mean(arrays, {bucket_bytes=}): the gradient-sync path of the Trainer (bucketed
// float64 all_reduce, divided by world size) over a list of number arrays; returns new arrays.
int dist_all_reduce_mean(lua_State* L) {
  auto g = check_group("all_reduce_mean");
  check_table(L, 1);
  Options opts(L, 2, "all_reduce_mean", {{"bucket_bytes", OptType::Integer}});
  int64_t bucket_bytes = opts.integer("bucket_bytes", 25 << 20);
  if (bucket_bytes < 8) throw Error("all_reduce_mean: bucket_bytes must be at least 8");
  int k = static_cast<int>(lua_objlen(L, 1));
  std::vector<at::Tensor> tensors;
  for (int i = 1; i <= k; ++i) {
    lua_rawgeti(L, 1, i);  // [arr]
    std::vector<double> values;
    if (lua_type(L, -1) != LUA_TTABLE || !read_numbers(L, lua_gettop(L), "all_reduce_mean", values)) {
      const char* msg = lua_pushfstring(L, "list of number arrays expected, element %d is %s", i, type_name_at(L, -1));
      luaL_argerror(L, 1, msg);
    }
    lua_pop(L, 1);
    tensors.push_back(torch::tensor(values, torch::kFloat64));  // [n_i]
  }
  g->all_reduce_mean(tensors, static_cast<size_t>(bucket_bytes), CollectiveCall::kArrays);
  lua_createtable(L, k /* narr */, 0);  // [out]
  for (int i = 0; i < k; ++i) {
    push_numbers(L, tensors[i], true);  // [out, arr]
    lua_rawseti(L, -2, i + 1);          // [out]
  }
  return 1;
}

enum BroadcastKind : int64_t { kind_nil = 0, kind_number = 1, kind_array = 2, kind_string = 3, kind_boolean = 4 };

int dist_broadcast(lua_State* L) {
  auto g = check_group("broadcast");
  int64_t src = lua_isnoneornil(L, 2) ? 0 : check_int64(L, 2);
  if (src < 0 || src >= g->world_size())
    throw Error("dist.broadcast: source rank " + std::to_string(src) + " is not in 0.." +
                std::to_string(g->world_size() - 1));
  if (lua_is_tensor(L, 1)) {  // in place on every rank, as torch.distributed.broadcast
    at::Tensor t = lua_check_tensor(L, 1);
    {
      torch::NoGradGuard no_grad;
      g->broadcast(t, static_cast<int>(src));
    }
    lua_pushvalue(L, 1);  // [t]
    return 1;
  }
  bool is_src = g->rank() == src;

  std::vector<double> numbers;
  std::string bytes;
  int64_t kind = kind_nil, n = 0;
  if (is_src) {
    switch (lua_type(L, 1)) {
      case LUA_TNIL:
      case LUA_TNONE: kind = kind_nil; break;
      case LUA_TBOOLEAN: kind = kind_boolean; n = lua_toboolean(L, 1); break;
      case LUA_TSTRING: {
        size_t len = 0;
        const char* s = lua_tolstring(L, 1, &len);
        bytes.assign(s, len);
        kind = kind_string;
        n = static_cast<int64_t>(len);
        break;
      }
      case LUA_TNUMBER:
      case LUA_TTABLE:
        kind = read_numbers(L, 1, "broadcast", numbers) ? kind_array : kind_number;
        n = static_cast<int64_t>(numbers.size());
        break;
      default: arg_type_error(L, 1, "nil, boolean, string, number or array of numbers");
    }
  }
  CollectiveCall call;
  call.kind = CollectiveCall::kBroadcast;
  call.src = src;
  call.form = CollectiveCall::kValue;
  g->agree(call, "broadcast");
  at::Tensor header = torch::tensor({kind, n}, torch::kInt64);  // [2]
  g->broadcast_unchecked(header, static_cast<int>(src));
  kind = header[0].item<int64_t>();
  n = header[1].item<int64_t>();

  switch (kind) {
    case kind_nil: lua_pushnil(L); return 1;
    case kind_boolean: lua_pushboolean(L, n != 0); return 1;
    case kind_string: {
      at::Tensor data = is_src ? torch::from_blob(bytes.data(), {n}, torch::kUInt8).clone()
                               : torch::empty({n}, torch::kUInt8);  // [n]
      if (n > 0) g->broadcast_unchecked(data, static_cast<int>(src));
      lua_pushlstring(L, reinterpret_cast<const char*>(data.data_ptr<uint8_t>()), static_cast<size_t>(n));
      return 1;
    }
    case kind_number:
    case kind_array: {
      at::Tensor data = is_src ? torch::tensor(numbers, torch::kFloat64) : torch::empty({n}, torch::kFloat64);  // [n]
      if (n > 0) g->broadcast_unchecked(data, static_cast<int>(src));
      push_numbers(L, data, kind == kind_array);
      return 1;
    }
    default: throw Error("dist.broadcast: received an unknown value kind " + std::to_string(kind));
  }
}

}  // namespace

}  // namespace sky::dist

extern "C" __attribute__((visibility("default"))) int luaopen_skyrun_dist(lua_State* L) {
  using namespace sky::dist;
  static const luaL_Reg fns[] = {
      {"init_process_group", sky::safe<dist_init_process_group>},
      {"is_initialized", sky::safe<dist_is_initialized>},
      {"rank", sky::safe<dist_rank>},
      {"world_size", sky::safe<dist_world_size>},
      {"backend", sky::safe<dist_backend>},
      {"barrier", sky::safe<dist_barrier>},
      {"all_reduce", sky::safe<dist_all_reduce>},
      {"broadcast", sky::safe<dist_broadcast>},
      {"all_reduce_mean", sky::safe<dist_all_reduce_mean>},
      {"sync_parameters", sky::safe<dist_sync_parameters>},
      {"sync_gradients", sky::safe<dist_sync_gradients>},
      {"destroy_process_group", sky::safe<dist_destroy_process_group>},
      {nullptr, nullptr},
  };
  lua_createtable(L, 0 /* narr */, 12);  // [M]
  luaL_register(L, nullptr, fns);
  return 1;
}
