// data: map with num_proc. The rows are cut into num_proc contiguous shards; each shard runs on its
// own thread in its own LuaJIT state, with the function shipped as bytecode and upvalues through the
// wire encoding (src/wire). The shards' results are joined in order. The dataset itself is shared,
// not copied: its buffers are immutable and memory-mapped or reference-counted.
#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "data/lua_data.hpp"
#include "host/bind.hpp"
#include "host/runtime.hpp"
#include "wire/wire.hpp"

namespace sky::data {
namespace {

struct ShardResult {
  DatasetPtr out;
  std::string error;
};

// Runs require("datasets")._map_shard(shard, fn, opts, remove) in a fresh state.
void run_shard(const std::string& payload, DatasetPtr shard, ShardResult& res) {
  lua_State* L = runtime_new_state();
  if (!L) {
    res.error = "out of memory creating a Lua state";
    return;
  }
  try {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "datasets");
    if (!runtime_pcall(L, 1, 1)) throw Error(runtime_error_string(L, -1));
    lua_getfield(L, -1, "_map_shard");  // [datasets, fn]
    push_dataset(L, shard);             // [datasets, fn, shard]
    wire::decode(L, payload);           // [datasets, fn, shard, {fn, opts, remove}]
    int args = lua_gettop(L);
    lua_rawgeti(L, args, 1);
    lua_rawgeti(L, args, 2);
    lua_rawgeti(L, args, 3);
    lua_remove(L, args);  // [datasets, _map_shard, shard, fn, opts, remove]
    if (!runtime_pcall(L, 4, 1)) throw Error(runtime_error_string(L, -1));
    res.out = check_dataset(L, -1);
  } catch (const std::exception& e) {
    res.error = e.what();
  }
  runtime_free_state(L);
}

// parallel_map(ds, fn, opts, remove, num_proc) -> { Dataset per shard, in row order }
int core_parallel_map(lua_State* L) {
  DatasetPtr ds = check_dataset(L, 1);
  check_function(L, 2);
  int64_t num_proc = check_int64(L, 5);
  if (num_proc < 1) luaL_error(L, "num_proc must be at least 1");
  std::string payload;
  lua_createtable(L, 3, 0);  // [.., {fn, opts, remove}]
  for (int i = 0; i < 3; i++) {
    lua_pushvalue(L, 2 + i);
    lua_rawseti(L, -2, i + 1);
  }
  try {
    wire::EncodeOptions eo;
    eo.root = "map function";
    payload = wire::encode(L, lua_gettop(L), eo);
  } catch (const std::exception& e) {
    std::string m = std::string("map with num_proc: ") + e.what();
    lua_pop(L, 1);
    raise_error(L, m);
  }
  lua_pop(L, 1);
  int64_t n = ds->size();
  int64_t shards = std::min<int64_t>(num_proc, std::max<int64_t>(n, 1));
  std::vector<DatasetPtr> parts(shards);
  for (int64_t s = 0; s < shards; s++) {
    int64_t b = n * s / shards, e = n * (s + 1) / shards;
    auto p = std::make_shared<Dataset>(*ds);
    if (ds->indices) {
      p->indices = std::make_shared<const std::vector<int64_t>>(ds->indices->begin() + b, ds->indices->begin() + e);
    } else {
      auto t = std::make_shared<Table>();
      for (size_t i = 0; i < ds->table->columns.size(); i++)
        t->add(ds->table->names[i], column_slice(ds->table->columns[i], b, e));
      t->num_rows = e - b;
      p->table = t;
    }
    parts[s] = p;
  }
  std::vector<ShardResult> results(shards);
  std::vector<std::thread> threads;
  for (int64_t s = 0; s < shards; s++) threads.emplace_back(run_shard, std::cref(payload), parts[s], std::ref(results[s]));
  for (auto& t : threads) t.join();
  for (int64_t s = 0; s < shards; s++)
    if (!results[s].error.empty())
      raise_error(L, "map worker " + std::to_string(s) + " of " + std::to_string(shards) + " failed: " + results[s].error);
  lua_createtable(L, static_cast<int>(shards), 0);  // [results]
  for (int64_t s = 0; s < shards; s++) {
    push_dataset(L, results[s].out);
    lua_rawseti(L, -2, static_cast<int>(s + 1));
  }
  return 1;
}

}  // namespace

int lua_parallel_map(lua_State* L) { return safe<core_parallel_map>(L); }

}  // namespace sky::data
