// data: the Dataset object shared by the Lua binding and the map workers: a table plus an optional
// row mapping (0-based rows of the table), and the fingerprint naming its content for the cache.
#pragma once

#include <lua.hpp>

#include <memory>
#include <string>
#include <vector>

#include "data/table.hpp"

namespace sky::data {

struct Dataset {
  TablePtr table;
  std::shared_ptr<const std::vector<int64_t>> indices;  // nullptr: every row in order
  std::string fingerprint;                              // empty: not reproducible (no cache)
  std::string cache_dir;                                // where map results go (empty: the default)

  int64_t size() const { return indices ? static_cast<int64_t>(indices->size()) : table->num_rows; }
  int64_t row(int64_t i) const { return indices ? (*indices)[i] : i; }
};
using DatasetPtr = std::shared_ptr<Dataset>;

void push_dataset(lua_State* L, DatasetPtr ds);  // pushes 1
DatasetPtr check_dataset(lua_State* L, int idx);

}  // namespace sky::data
