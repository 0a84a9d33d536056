// data: the columnar table behind datasets. Typed columns (bool, int64, float64, string, lists of
// those) with a validity byte per row, held in memory or memory-mapped from a table folder on disk.
// Knows nothing of Lua; readers (json, csv, text, parquet) build tables through ColumnBuilder.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sky::data {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An allocator whose resize() leaves new elements uninitialized (for buffers about to be overwritten,
// such as decoded values: zero-filling them first would cost a pass over the memory).
template <class T>
struct DefaultInitAlloc : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = DefaultInitAlloc<U>;
  };
  DefaultInitAlloc() = default;
  template <class U>
  DefaultInitAlloc(const DefaultInitAlloc<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};
template <class T>
using PodVec = std::vector<T, DefaultInitAlloc<T>>;

enum class DType : uint8_t { Null, Bool, Int64, Float64, String, List };

const char* dtype_name(DType t);

// Bytes owned by `owner` (an mmap, a vector, ...). Immutable once built.
struct Buffer {
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::shared_ptr<const void> owner;
  bool mapped = false;  // memory-mapped from a file: release_pages() may drop it from memory

  // Drops the pages of a mapped buffer from this process (they come back from the file on the
  // next read); keeps a long scan over a mapped table from holding all of it. No-op otherwise.
  void release_pages() const;

  template <class T>
  const T* as() const { return reinterpret_cast<const T*>(data); }
  static Buffer from_vector(std::vector<uint8_t>&& v);
  template <class T, class A>
  static Buffer from_pod(std::vector<T, A>&& v) {
    auto holder = std::make_shared<std::vector<T, A>>(std::move(v));
    Buffer b;
    b.data = reinterpret_cast<const uint8_t*>(holder->data());
    b.size = holder->size() * sizeof(T);
    b.owner = holder;
    return b;
  }
};

// One column. Layout per type:
//   Bool: values = uint8 per row; Int64/Float64: values = 8 bytes per row;
//   String: offsets = int64[length + 1], values = the bytes; List: offsets = int64[length + 1], child.
//   validity: uint8 per row (1 = present), empty when the column has no nulls. Null: nothing.
struct Column {
  DType type = DType::Null;
  int64_t length = 0;
  int64_t null_count = 0;
  Buffer validity, values, offsets;
  std::shared_ptr<const Column> child;  // List only

  bool is_valid(int64_t i) const { return type != DType::Null && (validity.size == 0 || validity.data[i]); }
  int64_t offset(int64_t i) const { return offsets.as<int64_t>()[i]; }
  std::string_view str(int64_t i) const {
    const int64_t* o = offsets.as<int64_t>();
    return {reinterpret_cast<const char*>(values.data) + o[i], static_cast<size_t>(o[i + 1] - o[i])};
  }
  std::string type_string() const;  // "int64", "list<string>"
};
using ColumnPtr = std::shared_ptr<const Column>;

// Releases the pages of every mapped buffer of the column (children included).
void column_release_pages(const Column& c);

struct Table {
  std::vector<std::string> names;
  std::vector<ColumnPtr> columns;
  int64_t num_rows = 0;

  int find(std::string_view name) const;  // -1 when absent
  void add(std::string name, ColumnPtr col);
};
using TablePtr = std::shared_ptr<const Table>;

// Builds one column value by value. The type comes from the first non-null value; ints widen to
// floats when a float follows. Lists: list_begin, the elements through child(), list_end.
class ColumnBuilder {
 public:
  explicit ColumnBuilder(std::string what = "column") : what_(std::move(what)) {}
  void append_null();
  void append_bool(bool v);
  void append_int(int64_t v);
  void append_double(double v);
  void append_string(std::string_view v);
  void list_begin();
  ColumnBuilder& child();
  void list_end();
  // Appends rows [begin, end) of a column of any type.
  void append_from(const Column& c, int64_t begin, int64_t end);
  void append_value_from(const Column& c, int64_t i);

  int64_t length() const { return length_; }
  size_t byte_size() const { return values_.size() + offsets_.size() * 8 + validity_.size(); }
  DType type() const { return type_; }
  ColumnPtr finish();  // leaves the builder empty, of the same type

 private:
  void set_type(DType t);
  void mark_valid();
  std::string what_;
  DType type_ = DType::Null;
  int64_t length_ = 0, null_count_ = 0;
  std::vector<uint8_t> validity_;  // filled only once a null is seen
  std::vector<uint8_t> values_;
  std::vector<int64_t> offsets_{0};
  std::unique_ptr<ColumnBuilder> child_;
  bool in_list_ = false;
};

// Rows [begin, end) of c, sharing its buffers when possible.
ColumnPtr column_slice(const ColumnPtr& c, int64_t begin, int64_t end);
// c[indices[k]] for each k (0-based indices, checked by the caller).
ColumnPtr column_take(const Column& c, const int64_t* indices, int64_t n);
// The columns one after the other; types must agree (nulls and int64 -> float64 adapt).
ColumnPtr column_concat(const std::vector<ColumnPtr>& parts, const std::string& name);
TablePtr table_take(const Table& t, const int64_t* indices, int64_t n);
TablePtr table_concat(const std::vector<TablePtr>& parts);

// ---- the table folder on disk ----------------------------------------------------------------------
// <dir>/table.json describes columns; each buffer is a file <dir>/c<k>.<role>.bin mapped on open.
// Written in chunks (a row group, a map batch), so a table larger than memory streams to disk.
class TableWriter {
 public:
  explicit TableWriter(std::string dir);  // writes into <dir>.tmp-<pid>, renamed by finish()
  ~TableWriter();
  void append(const Table& chunk);
  // user metadata stored beside the schema. keep_existing: the folder is content-addressed (a
  // cache entry); when another process finished it first, theirs stays and ours is dropped.
  void finish(const std::string& meta_json = "{}", bool keep_existing = false);
  int64_t num_rows() const { return rows_; }

 private:
  struct Col;
  std::string dir_, tmp_;
  std::vector<std::string> names_;
  std::vector<std::unique_ptr<Col>> cols_;
  int64_t rows_ = 0;
  bool started_ = false, finished_ = false;
};

// Maps the table written at dir. meta_json (optional) gets the stored user metadata.
TablePtr table_open(const std::string& dir, std::string* meta_json = nullptr);
bool table_exists(const std::string& dir);

// 128-bit hash as 32 hex digits (stable across runs and machines).
std::string hash_hex(std::string_view data);

}  // namespace sky::data
