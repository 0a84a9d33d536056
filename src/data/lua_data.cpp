// data: the Lua binding of the columnar core ("datasets.core"). A Dataset handle is a table plus an
// optional row mapping (select/shuffle/filter make mappings, not copies); lua/datasets/init.lua
// builds the HF-shaped methods on the primitives here (their names start with '_').
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "data/lua_data.hpp"
#include "data/readers.hpp"
#include "host/bind.hpp"
#include "host/modules.hpp"

namespace sky::data {
int lua_parallel_map(lua_State* L);
}

namespace sky {
namespace {

using data::Column;
using data::ColumnBuilder;
using data::ColumnPtr;
using data::DType;
using data::Table;
using data::TablePtr;

extern const ClassSpec kDatasetSpec;
extern const ClassSpec kBuilderSpec;
extern const ClassSpec kWriterSpec;

// Registry key of the Lua function (self, key) answering keys the natives lack (per state).
constexpr const char* kIndexHandlerKey = "skyrun.Dataset.index_handler";

data::DatasetPtr check_ds_ptr(lua_State* L, int idx) { return class_check_shared<data::Dataset>(L, idx, kDatasetSpec); }
const data::Dataset& check_ds(lua_State* L, int idx) { return class_check<data::Dataset>(L, idx, kDatasetSpec); }

// ---- values ----------------------------------------------------------------------------------------

// Pushes row i of c (nil for null). Pushes 1.
void push_value(lua_State* L, const Column& c, int64_t i) {
  if (!c.is_valid(i)) {
    lua_pushnil(L);
    return;
  }
  switch (c.type) {
    case DType::Null: lua_pushnil(L); return;
    case DType::Bool: lua_pushboolean(L, c.values.data[i]); return;
    case DType::Int64: lua_pushnumber(L, static_cast<lua_Number>(c.values.as<int64_t>()[i])); return;
    case DType::Float64: lua_pushnumber(L, c.values.as<double>()[i]); return;
    case DType::String: {
      auto s = c.str(i);
      lua_pushlstring(L, s.data(), s.size());
      return;
    }
    case DType::List: {
      int64_t b = c.offset(i), e = c.offset(i + 1);
      lua_createtable(L, static_cast<int>(e - b), 0);  // [list]
      for (int64_t k = b; k < e; k++) {
        push_value(L, *c.child, k);
        lua_rawseti(L, -2, static_cast<int>(k - b + 1));
      }
      return;
    }
  }
}

// Pushes an array of rows[k] of c for k < n (rows == nullptr: start..start+n). Pushes 1.
void push_column_rows(lua_State* L, const Column& c, const int64_t* rows, int64_t start, int64_t n) {
  lua_createtable(L, static_cast<int>(n), 0);  // [arr]
  if (!rows && c.type == DType::String && !c.validity.size) {
    const int64_t* o = c.offsets.as<int64_t>();
    const char* v = reinterpret_cast<const char*>(c.values.data);
    for (int64_t k = 0; k < n; k++) {
      lua_pushlstring(L, v + o[start + k], static_cast<size_t>(o[start + k + 1] - o[start + k]));
      lua_rawseti(L, -2, static_cast<int>(k + 1));
    }
    return;
  }
  for (int64_t k = 0; k < n; k++) {
    int64_t r = rows ? rows[k] : start + k;
    if (!c.is_valid(r)) continue;
    push_value(L, c, r);
    lua_rawseti(L, -2, static_cast<int>(k + 1));
  }
}

const char* lua_kind(lua_State* L, int idx) { return type_name_at(L, idx); }

// Appends the Lua value at idx to b. `what` names the column for errors.
void append_lua(lua_State* L, int idx, ColumnBuilder& b, const std::string& what, int depth = 0) {
  int t = lua_type(L, idx);
  switch (t) {
    case LUA_TNIL: b.append_null(); return;
    case LUA_TBOOLEAN: b.append_bool(lua_toboolean(L, idx)); return;
    case LUA_TNUMBER: {
      double d = lua_tonumber(L, idx);
      if (b.type() != DType::Float64 && d == std::floor(d) && std::fabs(d) < 9.2e18) b.append_int(static_cast<int64_t>(d));
      else b.append_double(d);
      return;
    }
    case LUA_TSTRING: {
      size_t n;
      const char* s = lua_tolstring(L, idx, &n);
      b.append_string({s, n});
      return;
    }
    case LUA_TTABLE: {
      if (depth > 8) throw data::Error(what + ": lists nested too deeply");
      int n = static_cast<int>(lua_objlen(L, idx));
      if (n == 0) {  // {} is an empty list; a table with only keys is a struct we do not store
        lua_pushnil(L);
        if (lua_next(L, idx < 0 ? idx - 1 : idx) != 0) {
          lua_pop(L, 2);
          throw data::Error("not supported yet: tables with keys (struct values) in " + what);
        }
      }
      b.list_begin();
      ColumnBuilder& c = b.child();
      int top = lua_gettop(L);
      int abs = idx < 0 ? top + idx + 1 : idx;
      for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, abs, i);  // [.., v]
        if (lua_isnil(L, -1)) {
          lua_pop(L, 1);
          throw data::Error("not supported yet: nil inside a list in " + what);
        }
        append_lua(L, -1, c, what, depth + 1);
        lua_pop(L, 1);
      }
      b.list_end();
      return;
    }
    case 10: /* LUA_TCDATA: int64 from the FFI */ {
      int abs = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
      b.append_int(check_int64(L, abs));
      return;
    }
    default:
      throw data::Error(std::string("not supported yet: ") + lua_kind(L, idx) + " values in " + what);
  }
}

// ---- Dataset ------------------------------------------------------------------------------------------

void push_ds(lua_State* L, data::DatasetPtr ds) { class_push(L, kDatasetSpec, std::move(ds)); }

data::DatasetPtr ds_from_table(TablePtr t, std::string fp = {}) {
  auto d = std::make_shared<data::Dataset>();
  d->table = std::move(t);
  d->fingerprint = std::move(fp);
  return d;
}

int ds_len(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(check_ds(L, 1).size()));
  return 1;
}

int ds_num_rows(lua_State* L) { return ds_len(L); }

int ds_column_names(lua_State* L) {
  const auto& d = check_ds(L, 1);
  lua_createtable(L, static_cast<int>(d.table->names.size()), 0);
  for (size_t i = 0; i < d.table->names.size(); i++) {
    lua_pushlstring(L, d.table->names[i].data(), d.table->names[i].size());
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

int ds_fingerprint(lua_State* L) {
  const auto& d = check_ds(L, 1);
  if (d.fingerprint.empty()) lua_pushnil(L);
  else lua_pushlstring(L, d.fingerprint.data(), d.fingerprint.size());
  return 1;
}

// self:_set_fingerprint(fp [, cache_dir]) -> a new handle with them (cache_dir absent: kept)
int ds_set_fingerprint(lua_State* L) {
  auto p = check_ds_ptr(L, 1);
  auto copy = std::make_shared<data::Dataset>(*p);
  copy->fingerprint = lua_isnil(L, 2) ? std::string() : std::string(check_string_view(L, 2));
  if (lua_isstring(L, 3)) copy->cache_dir = lua_tostring(L, 3);
  push_ds(L, copy);
  return 1;
}

int ds_cache_dir(lua_State* L) {
  const auto& d = check_ds(L, 1);
  if (d.cache_dir.empty()) lua_pushnil(L);
  else lua_pushlstring(L, d.cache_dir.data(), d.cache_dir.size());
  return 1;
}

int ds_features(lua_State* L) {
  const auto& d = check_ds(L, 1);
  lua_createtable(L, 0, static_cast<int>(d.table->names.size()));
  for (size_t i = 0; i < d.table->names.size(); i++) {
    std::string ts = d.table->columns[i]->type_string();
    lua_pushlstring(L, ts.data(), ts.size());
    lua_setfield(L, -2, d.table->names[i].c_str());
  }
  return 1;
}

// self:_row(i0) -> { col = value, ... }
int ds_row(lua_State* L) {
  const auto& d = check_ds(L, 1);
  int64_t i = check_int64(L, 2);
  if (i < 0 || i >= d.size()) return luaL_error(L, "index %d out of range for a dataset of %d rows", (int)(i + 1), (int)d.size());
  int64_t r = d.row(i);
  lua_createtable(L, 0, static_cast<int>(d.table->columns.size()));
  for (size_t c = 0; c < d.table->columns.size(); c++) {
    push_value(L, *d.table->columns[c], r);
    lua_setfield(L, -2, d.table->names[c].c_str());
  }
  return 1;
}

// self:_batch(start0, n [, names]) -> { col = {values...}, ... }
int ds_batch(lua_State* L) {
  const auto& d = check_ds(L, 1);
  int64_t start = check_int64(L, 2), n = check_int64(L, 3);
  if (start < 0 || n < 0 || start + n > d.size()) return luaL_error(L, "batch out of range");
  std::vector<int> which;
  if (lua_istable(L, 4)) {
    int k = static_cast<int>(lua_objlen(L, 4));
    for (int i = 1; i <= k; i++) {
      lua_rawgeti(L, 4, i);
      size_t len;
      const char* s = lua_tolstring(L, -1, &len);
      int ci = s ? d.table->find({s, len}) : -1;
      lua_pop(L, 1);
      if (ci < 0) return luaL_error(L, "no column named '%s'", s ? s : "?");
      which.push_back(ci);
    }
  } else {
    for (size_t i = 0; i < d.table->columns.size(); i++) which.push_back(static_cast<int>(i));
  }
  const int64_t* rows = d.indices ? d.indices->data() + start : nullptr;
  lua_createtable(L, 0, static_cast<int>(which.size()));  // [batch]
  for (int ci : which) {
    push_column_rows(L, *d.table->columns[ci], rows, start, n);
    lua_setfield(L, -2, d.table->names[ci].c_str());
  }
  return 1;
}

// self:_range(start0, n) -> Dataset of those rows (a slice, or a slice of the mapping)
int ds_range(lua_State* L) {
  auto p = check_ds_ptr(L, 1);
  int64_t start = check_int64(L, 2), n = check_int64(L, 3);
  if (start < 0 || n < 0 || start + n > p->size()) return luaL_error(L, "range out of bounds");
  auto r = std::make_shared<data::Dataset>(*p);
  if (p->indices) {
    r->indices = std::make_shared<const std::vector<int64_t>>(p->indices->begin() + start, p->indices->begin() + start + n);
  } else {
    auto t = std::make_shared<Table>();
    for (size_t i = 0; i < p->table->columns.size(); i++)
      t->add(p->table->names[i], data::column_slice(p->table->columns[i], start, start + n));
    t->num_rows = n;
    r->table = t;
  }
  push_ds(L, r);
  return 1;
}

std::shared_ptr<const std::vector<int64_t>> compose(const data::Dataset& d, std::vector<int64_t>&& pos) {
  if (d.indices)
    for (auto& p : pos) p = (*d.indices)[p];
  return std::make_shared<const std::vector<int64_t>>(std::move(pos));
}

// self:_take({i1, i2, ...} 1-based) -> Dataset through a mapping
int ds_take(lua_State* L) {
  auto p = check_ds_ptr(L, 1);
  check_table(L, 2);
  int64_t n = static_cast<int64_t>(lua_objlen(L, 2)), size = p->size();
  std::vector<int64_t> pos(n);
  for (int64_t k = 0; k < n; k++) {
    lua_rawgeti(L, 2, static_cast<int>(k + 1));
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (v != std::floor(v) || v < 1 || v > static_cast<double>(size))
      return luaL_error(L, "index %f out of range for a dataset of %d rows", v, (int)size);
    pos[k] = static_cast<int64_t>(v) - 1;
  }
  auto r = std::make_shared<data::Dataset>(*p);
  r->indices = compose(*p, std::move(pos));
  push_ds(L, r);
  return 1;
}

// self:_shuffle(seed) -> Dataset through a random permutation (mt19937_64, Fisher-Yates)
int ds_shuffle(lua_State* L) {
  auto p = check_ds_ptr(L, 1);
  uint64_t seed = static_cast<uint64_t>(check_int64(L, 2));
  int64_t n = p->size();
  std::vector<int64_t> pos(n);
  for (int64_t i = 0; i < n; i++) pos[i] = i;
  std::mt19937_64 rng(seed);
  for (int64_t i = n - 1; i > 0; i--) {
    uint64_t bound = static_cast<uint64_t>(i) + 1, lim = UINT64_MAX - UINT64_MAX % bound, x;
    do x = rng();
    while (x >= lim);
    std::swap(pos[i], pos[static_cast<int64_t>(x % bound)]);
  }
  auto r = std::make_shared<data::Dataset>(*p);
  r->indices = compose(*p, std::move(pos));
  push_ds(L, r);
  return 1;
}

// The table with the mapping applied (rows copied); the table itself when there is none.
TablePtr flat_table(const data::Dataset& d) {
  if (!d.indices) return d.table;
  return data::table_take(*d.table, d.indices->data(), static_cast<int64_t>(d.indices->size()));
}

std::vector<std::string> string_list(lua_State* L, int idx) {
  std::vector<std::string> out;
  if (lua_isnoneornil(L, idx)) return out;
  check_table(L, idx);
  int n = static_cast<int>(lua_objlen(L, idx));
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "expected a list of column names");
    out.emplace_back(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return out;
}

// self:_columns({names}, {new names or nil}) -> Dataset with those columns, in that order, renamed
int ds_columns(lua_State* L) {
  auto p = check_ds_ptr(L, 1);
  auto names = string_list(L, 2);
  auto renamed = string_list(L, 3);
  auto t = std::make_shared<Table>();
  for (size_t i = 0; i < names.size(); i++) {
    int ci = p->table->find(names[i]);
    if (ci < 0) return luaL_error(L, "no column named '%s'", names[i].c_str());
    t->add(i < renamed.size() ? renamed[i] : names[i], p->table->columns[ci]);
  }
  t->num_rows = p->table->num_rows;
  auto r = std::make_shared<data::Dataset>(*p);
  r->table = t;
  push_ds(L, r);
  return 1;
}

// self:_merge(out, remove_names) -> the rows of self (mapping applied) with out's columns set over
// them (same name: replaced in place; new: appended) and remove_names dropped first.
int ds_merge(lua_State* L) {
  auto p = check_ds_ptr(L, 1);
  const auto& out = check_ds(L, 2);
  auto remove = string_list(L, 3);
  auto t = std::make_shared<Table>();
  std::vector<bool> keep(p->table->names.size(), true);
  for (auto& name : remove) {
    int ci = p->table->find(name);
    if (ci < 0) return luaL_error(L, "remove_columns: no column named '%s'", name.c_str());
    keep[ci] = false;
  }
  bool any_kept = false;
  for (bool k : keep) any_kept = any_kept || k;
  if (any_kept && out.size() != p->size() && !out.table->names.empty())
    return luaL_error(L, "the function returned %d rows for a batch of %d: remove the input columns "
                      "(remove_columns) to change the number of rows", (int)out.size(), (int)p->size());
  TablePtr src = any_kept ? flat_table(*p) : nullptr;
  TablePtr o = flat_table(out);
  for (size_t i = 0; i < keep.size(); i++) {
    if (!keep[i]) continue;
    int oi = o->find(src->names[i]);
    t->add(src->names[i], oi >= 0 ? o->columns[oi] : src->columns[i]);
  }
  for (size_t i = 0; i < o->names.size(); i++)
    if (t->find(o->names[i]) < 0) t->add(o->names[i], o->columns[i]);
  t->num_rows = t->columns.empty() ? (any_kept ? p->size() : out.size()) : t->columns[0]->length;
  push_ds(L, ds_from_table(t));
  return 1;
}

// self:_add_column(name, values)
int ds_add_column(lua_State* L) {
  auto p = check_ds_ptr(L, 1);
  std::string name(check_string_view(L, 2));
  check_table(L, 3);
  if (p->table->find(name) >= 0) return luaL_error(L, "column '%s' already exists", name.c_str());
  int64_t n = p->size();
  ColumnBuilder b("column '" + name + "'");
  for (int64_t i = 1; i <= n; i++) {
    lua_rawgeti(L, 3, static_cast<int>(i));
    append_lua(L, -1, b, "column '" + name + "'");
    lua_pop(L, 1);
  }
  if (static_cast<int64_t>(lua_objlen(L, 3)) != n)
    return luaL_error(L, "add_column: %d values for a dataset of %d rows", (int)lua_objlen(L, 3), (int)n);
  auto t = std::make_shared<Table>(*flat_table(*p));
  t->add(name, b.finish());
  t->num_rows = n;
  auto r = std::make_shared<data::Dataset>(*p);
  r->table = t;
  r->indices.reset();
  push_ds(L, r);
  return 1;
}

// self:_column(name) -> array of every value
int ds_column(lua_State* L) {
  const auto& d = check_ds(L, 1);
  auto name = check_string_view(L, 2);
  int ci = d.table->find(name);
  if (ci < 0) return luaL_error(L, "no column named '%s'", std::string(name).c_str());
  push_column_rows(L, *d.table->columns[ci], d.indices ? d.indices->data() : nullptr, 0, d.size());
  return 1;
}

int ds_to_json(lua_State* L) {
  const auto& d = check_ds(L, 1);
  std::string path(check_string_view(L, 2));
  data::write_json(*flat_table(d), path, opt_boolean(L, 3, true));
  return 0;
}

int ds_to_parquet(lua_State* L) {
  const auto& d = check_ds(L, 1);
  std::string path(check_string_view(L, 2));
  std::string comp = lua_isstring(L, 3) ? lua_tostring(L, 3) : "snappy";
  int64_t rg = lua_isnumber(L, 4) ? check_int64(L, 4) : 100000;
  data::write_parquet(*flat_table(d), path, comp, rg);
  return 0;
}

// self:_save(dir, meta_json): the rows in chunks into a table folder
int ds_save(lua_State* L) {
  const auto& d = check_ds(L, 1);
  std::string dir(check_string_view(L, 2));
  std::string meta = lua_isstring(L, 3) ? lua_tostring(L, 3) : "{}";
  data::TableWriter w(dir);
  const int64_t chunk = 1 << 16;
  int64_t n = d.size();
  for (int64_t s = 0; s == 0 || s < n; s += chunk) {
    int64_t e = std::min(n, s + chunk);
    if (d.indices) {
      w.append(*data::table_take(*d.table, d.indices->data() + s, e - s));
    } else {
      Table t;
      for (size_t i = 0; i < d.table->columns.size(); i++)
        t.add(d.table->names[i], data::column_slice(d.table->columns[i], s, e));
      t.num_rows = e - s;
      w.append(t);
    }
    if (n == 0) break;
  }
  w.finish(meta);
  return 0;
}

int ds_index(lua_State* L) {
  lua_getfield(L, LUA_REGISTRYINDEX, kIndexHandlerKey);  // [self, key, fn]
  if (lua_isnil(L, -1)) return 1;
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_call(L, 2, 1);
  return 1;
}

int ds_tostring(lua_State* L) {
  const auto& d = check_ds(L, 1);
  std::string s = "Dataset({ features: [";
  for (size_t i = 0; i < d.table->names.size(); i++) s += (i ? ", '" : "'") + d.table->names[i] + "'";
  s += "], num_rows: " + std::to_string(d.size()) + " })";
  lua_pushlstring(L, s.data(), s.size());
  return 1;
}

// self:_release_pages(): drops the mapped pages of the table from memory (see Buffer::release_pages)
int ds_release_pages(lua_State* L) {
  const auto& d = check_ds(L, 1);
  for (auto& c : d.table->columns) data::column_release_pages(*c);
  return 0;
}

const ClassSpec kDatasetSpec{
    "skyrun.Dataset",
    "Dataset",
    {{"_row", safe<ds_row>},
     {"_batch", safe<ds_batch>},
     {"_range", safe<ds_range>},
     {"_take", safe<ds_take>},
     {"_shuffle", safe<ds_shuffle>},
     {"_columns", safe<ds_columns>},
     {"_merge", safe<ds_merge>},
     {"_add_column", safe<ds_add_column>},
     {"_column", safe<ds_column>},
     {"_to_json", safe<ds_to_json>},
     {"_to_parquet", safe<ds_to_parquet>},
     {"_save", safe<ds_save>},
     {"_release_pages", safe<ds_release_pages>},
     {"_set_fingerprint", safe<ds_set_fingerprint>}},
    {{"num_rows", safe<ds_num_rows>, nullptr},
     {"column_names", safe<ds_column_names>, nullptr},
     {"_fingerprint", safe<ds_fingerprint>, nullptr},
     {"_cache_dir", safe<ds_cache_dir>, nullptr},
     {"_types", safe<ds_features>, nullptr}},
    safe<ds_tostring>,
    nullptr,
    safe<ds_len>,
    ds_index,
};

// ---- builder: map results, batch by batch ----------------------------------------------------------------

struct TableBuilder {
  std::vector<std::string> names;
  std::map<std::string, size_t> index;
  std::vector<std::unique_ptr<ColumnBuilder>> cols;
  int64_t rows = 0;

  ColumnBuilder& col(const std::string& name) {
    auto it = index.find(name);
    if (it != index.end()) return *cols[it->second];
    index.emplace(name, cols.size());
    names.push_back(name);
    cols.push_back(std::make_unique<ColumnBuilder>("column '" + name + "'"));
    for (int64_t i = 0; i < rows; i++) cols.back()->append_null();
    return *cols.back();
  }
  size_t bytes() const {
    size_t b = 0;
    for (auto& c : cols) b += c->byte_size();
    return b;
  }
};

std::vector<std::string> sorted_keys(lua_State* L, int idx) {
  std::vector<std::string> keys;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "the function must return a table keyed by column names");
    keys.emplace_back(lua_tostring(L, -1));
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

// builder:append_batch(tbl) -> rows added. Columns seen before keep their place; new ones sort by name.
int builder_append_batch(lua_State* L) {
  auto& b = class_check<TableBuilder>(L, 1, kBuilderSpec);
  check_table(L, 2);
  auto keys = sorted_keys(L, 2);
  int64_t n = -1;
  for (auto& k : keys) {
    lua_getfield(L, 2, k.c_str());  // [col]
    if (!lua_istable(L, -1))
      return luaL_error(L, "a batched map function must return lists: column '%s' is a %s", k.c_str(), lua_kind(L, -1));
    int64_t m = static_cast<int64_t>(lua_objlen(L, -1));
    if (n >= 0 && m != n)
      return luaL_error(L, "the function returned columns of different lengths ('%s' has %d, expected %d)", k.c_str(),
                        (int)m, (int)n);
    n = m;
    lua_pop(L, 1);
  }
  if (n < 0) n = 0;
  for (auto& k : keys) {
    ColumnBuilder& c = b.col(k);
    std::string what = "column '" + k + "'";
    lua_getfield(L, 2, k.c_str());
    int t = lua_gettop(L);
    for (int64_t i = 1; i <= n; i++) {
      lua_rawgeti(L, t, static_cast<int>(i));
      append_lua(L, t + 1, c, what);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  b.rows += n;
  for (auto& c : b.cols)
    while (c->length() < b.rows) c->append_null();
  lua_pushnumber(L, static_cast<lua_Number>(n));
  return 1;
}

// builder:append_row(tbl)
int builder_append_row(lua_State* L) {
  auto& b = class_check<TableBuilder>(L, 1, kBuilderSpec);
  check_table(L, 2);
  auto keys = sorted_keys(L, 2);
  for (auto& k : keys) {
    ColumnBuilder& c = b.col(k);
    lua_getfield(L, 2, k.c_str());
    append_lua(L, lua_gettop(L), c, "column '" + k + "'");
    lua_pop(L, 1);
  }
  b.rows++;
  for (auto& c : b.cols)
    while (c->length() < b.rows) c->append_null();
  return 0;
}

// builder:finish() -> Dataset of what was appended (the builder starts over, keeping its columns)
int builder_finish(lua_State* L) {
  auto& b = class_check<TableBuilder>(L, 1, kBuilderSpec);
  auto t = std::make_shared<Table>();
  for (size_t i = 0; i < b.cols.size(); i++) t->add(b.names[i], b.cols[i]->finish());
  t->num_rows = b.rows;
  b.rows = 0;
  push_ds(L, ds_from_table(t));
  return 1;
}

int builder_rows(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(class_check<TableBuilder>(L, 1, kBuilderSpec).rows));
  return 1;
}
int builder_bytes(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(class_check<TableBuilder>(L, 1, kBuilderSpec).bytes()));
  return 1;
}

const ClassSpec kBuilderSpec{
    "skyrun.TableBuilder",
    "TableBuilder",
    {{"append_batch", safe<builder_append_batch>},
     {"append_row", safe<builder_append_row>},
     {"finish", safe<builder_finish>}},
    {{"rows", safe<builder_rows>, nullptr}, {"bytes", safe<builder_bytes>, nullptr}},
};

// ---- writer: a table folder written chunk by chunk -----------------------------------------------------

int writer_append(lua_State* L) {
  auto& w = class_check<data::TableWriter>(L, 1, kWriterSpec);
  w.append(*flat_table(check_ds(L, 2)));
  return 0;
}

int writer_finish(lua_State* L) {
  auto& w = class_check<data::TableWriter>(L, 1, kWriterSpec);
  std::string meta = lua_isstring(L, 2) ? lua_tostring(L, 2) : "{}";
  w.finish(meta, lua_toboolean(L, 3) != 0);  // writer:finish(meta, keep_existing)
  class_close(L, 1, kWriterSpec);
  return 0;
}

const ClassSpec kWriterSpec{
    "skyrun.TableWriter",
    "TableWriter",
    {{"append", safe<writer_append>}, {"finish", safe<writer_finish>}},
    {},
};

// ---- module functions ---------------------------------------------------------------------------------------

int core_new_builder(lua_State* L) {
  class_push(L, kBuilderSpec, std::make_shared<TableBuilder>());
  return 1;
}

int core_new_writer(lua_State* L) {
  class_push(L, kWriterSpec, std::make_shared<data::TableWriter>(std::string(check_string_view(L, 1))));
  return 1;
}

// load_table(dir) -> Dataset, meta_json
int core_load_table(lua_State* L) {
  std::string meta;
  auto t = data::table_open(std::string(check_string_view(L, 1)), &meta);
  push_ds(L, ds_from_table(t));
  lua_pushlstring(L, meta.data(), meta.size());
  return 2;
}

int core_table_exists(lua_State* L) {
  lua_pushboolean(L, data::table_exists(std::string(check_string_view(L, 1))));
  return 1;
}

// concat({ds, ...}) -> Dataset
int core_concat(lua_State* L) {
  check_table(L, 1);
  std::vector<TablePtr> parts;
  int n = static_cast<int>(lua_objlen(L, 1));
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    parts.push_back(flat_table(check_ds(L, lua_gettop(L))));
    lua_pop(L, 1);
  }
  push_ds(L, ds_from_table(data::table_concat(parts)));
  return 1;
}

// from_columns({col = values}, {names in order}) -> Dataset
int core_from_columns(lua_State* L) {
  check_table(L, 1);
  auto names = lua_istable(L, 2) ? string_list(L, 2) : sorted_keys(L, 1);
  auto t = std::make_shared<Table>();
  for (auto& name : names) {
    lua_getfield(L, 1, name.c_str());
    if (!lua_istable(L, -1)) return luaL_error(L, "column '%s' must be a list of values", name.c_str());
    int top = lua_gettop(L);
    int64_t n = static_cast<int64_t>(lua_objlen(L, top));
    ColumnBuilder b("column '" + name + "'");
    for (int64_t i = 1; i <= n; i++) {
      lua_rawgeti(L, top, static_cast<int>(i));
      append_lua(L, top + 1, b, "column '" + name + "'");
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    t->add(name, b.finish());
  }
  push_ds(L, ds_from_table(t));
  return 1;
}

int core_read_json(lua_State* L) {
  data::JsonOptions o;
  if (lua_isstring(L, 2)) o.field = lua_tostring(L, 2);
  push_ds(L, ds_from_table(data::read_json(std::string(check_string_view(L, 1)), o)));
  return 1;
}

int core_read_csv(lua_State* L) {
  data::CsvOptions o;
  if (lua_isstring(L, 2)) {
    auto s = check_string_view(L, 2);
    if (s.size() != 1) return luaL_error(L, "csv: the separator must be one character");
    o.sep = s[0];
  }
  push_ds(L, ds_from_table(data::read_csv(std::string(check_string_view(L, 1)), o)));
  return 1;
}

int core_read_text(lua_State* L) {
  data::TextOptions o;
  if (lua_isstring(L, 2)) o.sample_by = lua_tostring(L, 2);
  o.keep_linebreaks = opt_boolean(L, 3, false);
  push_ds(L, ds_from_table(data::read_text(std::string(check_string_view(L, 1)), o)));
  return 1;
}

// read_parquet(path [, dir]) -> Dataset; with dir, row groups stream into a table folder there and the
// result is mapped from it.
int core_read_parquet(lua_State* L) {
  std::string path(check_string_view(L, 1));
  if (lua_isstring(L, 2)) {
    std::string dir = lua_tostring(L, 2);
    std::string meta = lua_isstring(L, 3) ? lua_tostring(L, 3) : "{}";
    {
      data::TableWriter w(dir);
      data::read_parquet(path, [&](const Table& chunk) { w.append(chunk); });
      w.finish(meta);
    }
    push_ds(L, ds_from_table(data::table_open(dir)));
    return 1;
  }
  push_ds(L, ds_from_table(data::read_parquet(path)));
  return 1;
}

// read_parquet_into(writer, path [, columns]): streams the file's row groups (only the named
// columns, in that order, when given) into a table writer
int core_read_parquet_into(lua_State* L) {
  auto& w = class_check<data::TableWriter>(L, 1, kWriterSpec);
  std::string path(check_string_view(L, 2));
  std::vector<std::string> columns;
  bool some = lua_istable(L, 3);
  if (some) {
    int k = static_cast<int>(lua_objlen(L, 3));
    for (int i = 1; i <= k; i++) {
      lua_rawgeti(L, 3, i);
      size_t len;
      const char* s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : nullptr;
      if (!s) return luaL_error(L, "read_parquet_into: columns[%d] is not a string", i);
      columns.emplace_back(s, len);
      lua_pop(L, 1);
    }
  }
  data::read_parquet(path, [&](const Table& chunk) { w.append(chunk); }, some ? &columns : nullptr);
  return 0;
}

int core_hash(lua_State* L) {
  auto h = data::hash_hex(check_string_view(L, 1));
  lua_pushlstring(L, h.data(), h.size());
  return 1;
}

int core_set_index_handler(lua_State* L) {
  check_function(L, 1);
  lua_pushvalue(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, kIndexHandlerKey);
  return 0;
}

int core_is_dataset(lua_State* L) {
  lua_pushboolean(L, class_test_handle(L, 1, kDatasetSpec) != nullptr);
  return 1;
}

int core_cpu_time(lua_State* L) {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  lua_pushnumber(L, static_cast<lua_Number>(ts.tv_sec) + ts.tv_nsec * 1e-9);
  return 1;
}

// stat(path) -> { size=, mtime=, dir= } or nil
int core_stat(lua_State* L) {
  std::string path(check_string_view(L, 1));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 3);
  lua_pushnumber(L, static_cast<lua_Number>(st.st_size));
  lua_setfield(L, -2, "size");
  lua_pushnumber(L, static_cast<lua_Number>(st.st_mtim.tv_sec) + st.st_mtim.tv_nsec * 1e-9);
  lua_setfield(L, -2, "mtime");
  lua_pushboolean(L, S_ISDIR(st.st_mode));
  lua_setfield(L, -2, "dir");
  return 1;
}

// glob(pattern) -> sorted paths (files and folders)
int core_glob(lua_State* L) {
  std::string pat(check_string_view(L, 1));
  glob_t g;
  int rc = ::glob(pat.c_str(), GLOB_NOSORT, nullptr, &g);
  std::vector<std::string> out;
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; i++) out.emplace_back(g.gl_pathv[i]);
  if (rc == 0 || rc == GLOB_NOMATCH) ::globfree(&g);
  std::sort(out.begin(), out.end());
  lua_createtable(L, static_cast<int>(out.size()), 0);
  for (size_t i = 0; i < out.size(); i++) {
    lua_pushlstring(L, out[i].data(), out[i].size());
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

// list_files(dir) -> every regular file below dir, relative paths, sorted
int core_list_files(lua_State* L) {
  std::string dir(check_string_view(L, 1));
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file(ec)) out.push_back(std::filesystem::relative(it->path(), dir, ec).string());
  }
  if (ec) return luaL_error(L, "cannot list %s: %s", dir.c_str(), ec.message().c_str());
  std::sort(out.begin(), out.end());
  lua_createtable(L, static_cast<int>(out.size()), 0);
  for (size_t i = 0; i < out.size(); i++) {
    lua_pushlstring(L, out[i].data(), out[i].size());
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}


}  // namespace

void data::push_dataset(lua_State* L, DatasetPtr ds) { push_ds(L, std::move(ds)); }
data::DatasetPtr data::check_dataset(lua_State* L, int idx) { return check_ds_ptr(L, idx); }

}  // namespace sky

extern "C" int luaopen_datasets_core(lua_State* L) {
  static const luaL_Reg fns[] = {
      {"new_builder", sky::safe<sky::core_new_builder>},
      {"new_writer", sky::safe<sky::core_new_writer>},
      {"load_table", sky::safe<sky::core_load_table>},
      {"table_exists", sky::safe<sky::core_table_exists>},
      {"concat", sky::safe<sky::core_concat>},
      {"from_columns", sky::safe<sky::core_from_columns>},
      {"read_json", sky::safe<sky::core_read_json>},
      {"read_csv", sky::safe<sky::core_read_csv>},
      {"read_text", sky::safe<sky::core_read_text>},
      {"read_parquet", sky::safe<sky::core_read_parquet>},
      {"hash", sky::safe<sky::core_hash>},
      {"read_parquet_into", sky::safe<sky::core_read_parquet_into>},
      {"parallel_map", sky::data::lua_parallel_map},
      {"set_index_handler", sky::safe<sky::core_set_index_handler>},
      {"is_dataset", sky::core_is_dataset},
      {"cpu_time", sky::core_cpu_time},
      {"stat", sky::safe<sky::core_stat>},
      {"glob", sky::safe<sky::core_glob>},
      {"list_files", sky::safe<sky::core_list_files>},
      {nullptr, nullptr},
  };
  lua_createtable(L, 0, sizeof(fns) / sizeof(fns[0]) - 1);
  luaL_register(L, nullptr, fns);
  return 1;
}

SKY_NATIVE_MODULE("datasets.core", luaopen_datasets_core);
