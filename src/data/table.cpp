// data: column builders, slicing/take/concat, and the table folder format (write in chunks, map on
// open). Must not know Lua.
#include "data/table.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "host/json.hpp"

namespace fs = std::filesystem;

namespace sky::data {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Null: return "null";
    case DType::Bool: return "bool";
    case DType::Int64: return "int64";
    case DType::Float64: return "float64";
    case DType::String: return "string";
    case DType::List: return "list";
  }
  return "?";
}

std::string Column::type_string() const {
  if (type == DType::List) return "list<" + (child ? child->type_string() : std::string("null")) + ">";
  return dtype_name(type);
}

Buffer Buffer::from_vector(std::vector<uint8_t>&& v) { return from_pod<uint8_t>(std::move(v)); }

void Buffer::release_pages() const {
  if (!mapped || size == 0) return;
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  // the mapping starts on a page and ends in its last page, so rounding outwards stays inside it
  uintptr_t b = reinterpret_cast<uintptr_t>(data) & ~(page - 1);
  uintptr_t e = (reinterpret_cast<uintptr_t>(data) + size + page - 1) & ~(page - 1);
  ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

void column_release_pages(const Column& c) {
  c.validity.release_pages();
  c.values.release_pages();
  c.offsets.release_pages();
  if (c.child) column_release_pages(*c.child);
}

int Table::find(std::string_view name) const {
  for (size_t i = 0; i < names.size(); i++)
    if (names[i] == name) return static_cast<int>(i);
  return -1;
}

void Table::add(std::string name, ColumnPtr col) {
  if (columns.empty()) num_rows = col->length;
  if (col->length != num_rows)
    throw Error("column '" + name + "' has " + std::to_string(col->length) + " rows, the table has " +
                std::to_string(num_rows));
  names.push_back(std::move(name));
  columns.push_back(std::move(col));
}

// ---- builder ---------------------------------------------------------------------------------------

static size_t fixed_width(DType t) {
  switch (t) {
    case DType::Bool: return 1;
    case DType::Int64:
    case DType::Float64: return 8;
    default: return 0;
  }
}

void ColumnBuilder::set_type(DType t) {
  if (type_ == t) return;
  if (type_ == DType::Int64 && t == DType::Float64) {  // widen what we have
    auto* p = reinterpret_cast<int64_t*>(values_.data());
    for (int64_t i = 0; i < length_; i++) {
      double d = static_cast<double>(p[i]);
      std::memcpy(&p[i], &d, 8);
    }
    type_ = t;
    return;
  }
  if (type_ != DType::Null)
    throw Error(what_ + ": expected " + dtype_name(type_) + ", got " + dtype_name(t) + " at row " +
                std::to_string(length_ + 1));
  type_ = t;  // every row so far is null: their slots hold zeros, masked by the validity bitmap (as Arrow)
  if (size_t w = fixed_width(t)) values_.assign(length_ * w, 0);
  else offsets_.assign(length_ + 1, 0);
  if (t == DType::List && !child_) child_ = std::make_unique<ColumnBuilder>(what_ + " (list element)");
}

void ColumnBuilder::mark_valid() {
  if (!validity_.empty()) validity_.push_back(1);
}

void ColumnBuilder::append_null() {
  if (in_list_) throw Error(what_ + ": null inside an unfinished list");
  if (validity_.empty()) validity_.assign(length_, 1);
  validity_.push_back(0);
  null_count_++;
  length_++;
  if (size_t w = fixed_width(type_)) values_.resize(values_.size() + w, 0);
  else if (type_ == DType::String) offsets_.push_back(static_cast<int64_t>(values_.size()));
  else if (type_ == DType::List) offsets_.push_back(child_->length());
}

void ColumnBuilder::append_bool(bool v) {
  if (type_ != DType::Bool) set_type(DType::Bool);
  values_.push_back(v ? 1 : 0);
  mark_valid();
  length_++;
}

void ColumnBuilder::append_int(int64_t v) {
  if (type_ == DType::Float64) return append_double(static_cast<double>(v));
  if (type_ != DType::Int64) set_type(DType::Int64);
  size_t n = values_.size();
  values_.resize(n + 8);
  std::memcpy(values_.data() + n, &v, 8);
  mark_valid();
  length_++;
}

void ColumnBuilder::append_double(double v) {
  if (type_ != DType::Float64) set_type(DType::Float64);
  size_t n = values_.size();
  values_.resize(n + 8);
  std::memcpy(values_.data() + n, &v, 8);
  mark_valid();
  length_++;
}

void ColumnBuilder::append_string(std::string_view v) {
  if (type_ != DType::String) set_type(DType::String);
  values_.insert(values_.end(), v.begin(), v.end());
  offsets_.push_back(static_cast<int64_t>(values_.size()));
  mark_valid();
  length_++;
}

void ColumnBuilder::list_begin() {
  if (type_ != DType::List) set_type(DType::List);
  in_list_ = true;
}

ColumnBuilder& ColumnBuilder::child() {
  if (!child_) child_ = std::make_unique<ColumnBuilder>(what_ + " (list element)");
  return *child_;
}

void ColumnBuilder::list_end() {
  in_list_ = false;
  offsets_.push_back(child_->length());
  mark_valid();
  length_++;
}

void ColumnBuilder::append_value_from(const Column& c, int64_t i) {
  if (!c.is_valid(i)) return append_null();
  switch (c.type) {
    case DType::Null: return append_null();
    case DType::Bool: return append_bool(c.values.data[i] != 0);
    case DType::Int64: return append_int(c.values.as<int64_t>()[i]);
    case DType::Float64: return append_double(c.values.as<double>()[i]);
    case DType::String: return append_string(c.str(i));
    case DType::List: {
      list_begin();
      int64_t b = c.offset(i), e = c.offset(i + 1);
      child().append_from(*c.child, b, e);
      return list_end();
    }
  }
}

void ColumnBuilder::append_from(const Column& c, int64_t begin, int64_t end) {
  if (begin >= end) {
    if (c.type != DType::Null && type_ == DType::Null && length_ == 0) set_type(c.type);
    return;
  }
  bool same = c.type == type_ || (type_ == DType::Null && length_ == 0 && c.type != DType::Null);
  if (!same || in_list_ || c.type == DType::List) {
    for (int64_t i = begin; i < end; i++) append_value_from(c, i);
    return;
  }
  if (type_ == DType::Null) set_type(c.type);
  int64_t n = end - begin;
  if (c.validity.size || !validity_.empty()) {
    if (validity_.empty()) validity_.assign(length_, 1);
    if (c.validity.size) validity_.insert(validity_.end(), c.validity.data + begin, c.validity.data + end);
    else validity_.insert(validity_.end(), n, 1);
    for (int64_t i = begin; i < end; i++) null_count_ += c.validity.size && !c.validity.data[i];
  }
  if (size_t w = fixed_width(c.type)) {
    values_.insert(values_.end(), c.values.data + begin * w, c.values.data + end * w);
  } else {  // String
    const int64_t* o = c.offsets.as<int64_t>();
    int64_t base = static_cast<int64_t>(values_.size()) - o[begin];
    values_.insert(values_.end(), c.values.data + o[begin], c.values.data + o[end]);
    for (int64_t i = begin + 1; i <= end; i++) offsets_.push_back(o[i] + base);
  }
  length_ += n;
}

ColumnPtr ColumnBuilder::finish() {
  auto c = std::make_shared<Column>();
  c->type = type_;
  c->length = length_;
  c->null_count = type_ == DType::Null ? length_ : null_count_;
  if (type_ != DType::Null && null_count_ > 0) c->validity = Buffer::from_vector(std::move(validity_));
  if (fixed_width(type_) || type_ == DType::String) c->values = Buffer::from_vector(std::move(values_));
  if (type_ == DType::String || type_ == DType::List) c->offsets = Buffer::from_pod(std::move(offsets_));
  if (type_ == DType::List) c->child = child_->finish();
  validity_.clear();
  values_.clear();
  offsets_.assign(1, 0);
  length_ = null_count_ = 0;
  return c;
}

// ---- slice, take, concat -------------------------------------------------------------------------------

static Buffer sub_buffer(const Buffer& b, size_t off, size_t len) {
  Buffer r;
  if (!b.size) return r;
  r.data = b.data + off;
  r.size = len;
  r.owner = b.owner;
  r.mapped = b.mapped;
  return r;
}

ColumnPtr column_slice(const ColumnPtr& c, int64_t begin, int64_t end) {
  if (begin == 0 && end == c->length) return c;
  auto r = std::make_shared<Column>();
  r->type = c->type;
  r->length = end - begin;
  r->child = c->child;
  if (c->validity.size) {
    r->validity = sub_buffer(c->validity, begin, end - begin);
    for (int64_t i = 0; i < r->length; i++) r->null_count += !r->validity.data[i];
  } else if (c->type == DType::Null) {
    r->null_count = r->length;
  }
  if (size_t w = fixed_width(c->type)) r->values = sub_buffer(c->values, begin * w, (end - begin) * w);
  if (c->type == DType::String) r->values = c->values;
  if (c->type == DType::String || c->type == DType::List)
    r->offsets = sub_buffer(c->offsets, begin * 8, (end - begin + 1) * 8);
  return r;
}

ColumnPtr column_take(const Column& c, const int64_t* idx, int64_t n) {
  ColumnBuilder b;
  if (c.type == DType::Int64 || c.type == DType::Float64 || c.type == DType::Bool) {
    size_t w = fixed_width(c.type);
    std::vector<uint8_t> vals(n * w);
    for (int64_t k = 0; k < n; k++) std::memcpy(&vals[k * w], c.values.data + idx[k] * w, w);
    auto r = std::make_shared<Column>();
    r->type = c.type;
    r->length = n;
    r->values = Buffer::from_vector(std::move(vals));
    if (c.validity.size) {
      std::vector<uint8_t> v(n);
      for (int64_t k = 0; k < n; k++) {
        v[k] = c.validity.data[idx[k]];
        r->null_count += !v[k];
      }
      if (r->null_count) r->validity = Buffer::from_vector(std::move(v));
    }
    return r;
  }
  if (c.type == DType::Null) {
    auto r = std::make_shared<Column>();
    r->length = r->null_count = n;
    return r;
  }
  for (int64_t k = 0; k < n; k++) b.append_value_from(c, idx[k]);
  if (n == 0 && b.type() == DType::Null) {
    auto r = std::make_shared<Column>(*column_slice(std::make_shared<Column>(c), 0, 0));
    return r;
  }
  return b.finish();
}

ColumnPtr column_concat(const std::vector<ColumnPtr>& parts, const std::string& name) {
  if (parts.size() == 1) return parts[0];
  ColumnBuilder b("column '" + name + "'");
  for (auto& p : parts) b.append_from(*p, 0, p->length);
  return b.finish();
}

TablePtr table_take(const Table& t, const int64_t* idx, int64_t n) {
  auto r = std::make_shared<Table>();
  for (size_t i = 0; i < t.columns.size(); i++) r->add(t.names[i], column_take(*t.columns[i], idx, n));
  r->num_rows = n;
  return r;
}

TablePtr table_concat(const std::vector<TablePtr>& parts) {
  if (parts.empty()) return std::make_shared<Table>();
  auto r = std::make_shared<Table>();
  const Table& first = *parts[0];
  for (auto& p : parts) {
    if (p->names != first.names) {
      std::string a, b;
      for (auto& n : first.names) a += (a.empty() ? "" : ", ") + n;
      for (auto& n : p->names) b += (b.empty() ? "" : ", ") + n;
      throw Error("cannot concatenate datasets with different columns: [" + a + "] and [" + b + "]");
    }
  }
  for (size_t i = 0; i < first.names.size(); i++) {
    std::vector<ColumnPtr> cols;
    for (auto& p : parts) cols.push_back(p->columns[i]);
    r->add(first.names[i], column_concat(cols, first.names[i]));
  }
  if (first.names.empty())
    for (auto& p : parts) r->num_rows += p->num_rows;
  return r;
}

// ---- table folder: writer ------------------------------------------------------------------------------

namespace {

// A file written front to back. Large writes are copied into a mapped window of the file (blocks
// reserved with fallocate first, so a full disk raises here instead of faulting later): on the VMs
// we run on this fills the page cache 2-3 times faster than write(), whose copy dominated reading a
// parquet file into a table folder. The window is unmapped at once, so the pages do not count in
// this process's memory. Small writes gather in a 256 KB buffer first; filesystems without fallocate get
// plain pwrite.
struct OutFile {
  static constexpr size_t kStage = size_t{256} << 10, kWindow = size_t{8} << 20;
  int fd = -1;
  std::string path;
  size_t done = 0;  // in the file (staged bytes not yet)
  bool mappable = true;
  std::vector<uint8_t> stage;

  int64_t bytes() const { return static_cast<int64_t>(done + stage.size()); }  // written so far
  [[noreturn]] void fail() const { throw Error("cannot write " + path + ": " + std::strerror(errno)); }
  void open(const std::string& p) {
    path = p;
    // A fresh name in our own new folder: O_EXCL | O_NOFOLLOW refuse anything planted there.
    fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ELOOP) throw Error("cannot write " + path + ": it is a symbolic link, which is refused here");
    if (fd < 0) fail();
    stage.reserve(kStage);
  }
  void write(const void* d, size_t n) {
    if (!n) return;
    auto* src = static_cast<const uint8_t*>(d);
    if (stage.size() + n > kStage) flush();
    if (n < kStage) stage.insert(stage.end(), src, src + n);
    else put(src, n);
  }
  void fill(uint8_t byte, size_t n) {
    uint8_t buf[4096];
    std::memset(buf, byte, sizeof buf);
    while (n) {
      size_t k = n < sizeof buf ? n : sizeof buf;
      write(buf, k);
      n -= k;
    }
  }
  void flush() {
    if (stage.empty()) return;
    put(stage.data(), stage.size());
    stage.clear();
  }
  void put(const uint8_t* d, size_t n) {
    static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    while (n) {
      size_t k = std::min(n, kWindow);
      bool copied = false;
      if (mappable) {
        int rc;
        do rc = ::fallocate(fd, 0, static_cast<off_t>(done), static_cast<off_t>(k));
        while (rc != 0 && errno == EINTR);
        if (rc != 0) {
          if (errno != EOPNOTSUPP && errno != ENOSYS) fail();
          mappable = false;
        } else {
          size_t off = done & ~(page - 1), len = done + k - off;
          void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(off));
          if (p == MAP_FAILED) {
            mappable = false;
          } else {
#ifdef MADV_POPULATE_WRITE
            ::madvise(p, len, MADV_POPULATE_WRITE);  // one call instead of a fault per page
#endif
            std::memcpy(static_cast<uint8_t*>(p) + (done - off), d, k);
            ::munmap(p, len);
            copied = true;
          }
        }
      }
      for (size_t w = 0; !copied && w < k;) {
        ssize_t r = ::pwrite(fd, d + w, k - w, static_cast<off_t>(done + w));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) fail();
        w += static_cast<size_t>(r);
      }
      done += k;
      d += k;
      n -= k;
    }
  }
  void close() {
    if (fd < 0) return;
    flush();
    int rc = ::close(fd);
    fd = -1;
    if (rc != 0) fail();
  }
  ~OutFile() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

struct TableWriter::Col {
  std::string prefix, what;
  DType type = DType::Null;
  int64_t rows = 0, nulls = 0;
  bool has_validity = false;
  OutFile validity, values, offsets;
  std::unique_ptr<Col> child;
  std::string dir;

  Col(std::string d, std::string p, std::string w) : prefix(std::move(p)), what(std::move(w)), dir(std::move(d)) {}

  void open_files() {
    if (fixed_width(type) || type == DType::String) values.open(dir + "/" + prefix + ".v.bin");
    if (type == DType::String || type == DType::List) {
      offsets.open(dir + "/" + prefix + ".o.bin");
      int64_t zero = 0;
      offsets.write(&zero, 8);
    }
    if (type == DType::List) child = std::make_unique<Col>(dir, prefix + "_", what + " (list element)");
  }

  void ensure_validity() {
    if (has_validity) return;
    has_validity = true;
    validity.open(dir + "/" + prefix + ".n.bin");
    validity.fill(1, rows);
  }

  // The value slots of n null rows: zeros (empty strings/lists), masked by the validity bitmap.
  void write_null_values(int64_t n) {
    if (size_t w = fixed_width(type)) values.fill(0, n * w);
    else if (type == DType::String || type == DType::List) {
      int64_t end = type == DType::String ? values.bytes() : child->rows;
      for (int64_t i = 0; i < n; i++) offsets.write(&end, 8);
    }
  }

  void append(const Column& c) {
    int64_t n = c.length;
    if (type == DType::Null && c.type != DType::Null) {
      type = c.type;
      open_files();
      write_null_values(rows);  // earlier rows were all null
    } else if (c.type != DType::Null && c.type != type &&
               !(type == DType::Float64 && c.type == DType::Int64)) {
      throw Error(what + " changes type from " + dtype_name(type) + " to " + dtype_name(c.type) + " at row " +
                  std::to_string(rows + 1));
    }
    if (c.type == DType::Null) {
      if (n == 0) return;
      ensure_validity();
      validity.fill(0, n);
      write_null_values(n);
      rows += n;
      nulls += n;
      return;
    }
    if (c.validity.size) {
      ensure_validity();
      validity.write(c.validity.data, n);
      for (int64_t i = 0; i < n; i++) nulls += !c.validity.data[i];
    } else if (has_validity) {
      validity.fill(1, n);
    }
    if (type == DType::Float64 && c.type == DType::Int64) {
      for (int64_t i = 0; i < n; i++) {
        double d = static_cast<double>(c.values.as<int64_t>()[i]);
        values.write(&d, 8);
      }
    } else if (size_t w = fixed_width(type)) {
      values.write(c.values.data, n * w);
    } else if (type == DType::String) {
      const int64_t* o = c.offsets.as<int64_t>();
      int64_t base = values.bytes() - o[0];
      values.write(c.values.data + o[0], o[n] - o[0]);
      std::vector<int64_t> re(n);
      for (int64_t i = 0; i < n; i++) re[i] = o[i + 1] + base;
      offsets.write(re.data(), n * 8);
    } else if (type == DType::List) {
      const int64_t* o = c.offsets.as<int64_t>();
      int64_t base = child->rows - o[0];
      child->append(*column_slice(c.child, o[0], o[n]));
      std::vector<int64_t> re(n);
      for (int64_t i = 0; i < n; i++) re[i] = o[i + 1] + base;
      offsets.write(re.data(), n * 8);
    }
    rows += n;
  }

  void close() {
    validity.close();
    values.close();
    offsets.close();
    if (child) child->close();
  }

  void describe(rapidjson::Writer<rapidjson::StringBuffer>& w) const {
    w.StartObject();
    w.Key("type");
    w.String(dtype_name(type));
    w.Key("length");
    w.Int64(rows);
    w.Key("null_count");
    w.Int64(type == DType::Null ? rows : nulls);
    w.Key("file");
    w.String(prefix.c_str());
    w.Key("validity");
    w.Bool(has_validity);
    if (child) {
      w.Key("child");
      child->describe(w);
    }
    w.EndObject();
  }
};

TableWriter::TableWriter(std::string dir) : dir_(std::move(dir)) {
  tmp_ = dir_ + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp_, ec);  // a leftover of a crashed run of this pid; a link is removed, not followed
  fs::create_directories(fs::path(tmp_).parent_path(), ec);
  if (ec) throw Error("cannot create " + tmp_ + ": " + ec.message());
  // mkdir, not create_directories: whatever appeared at this name meanwhile is refused, not used.
  if (::mkdir(tmp_.c_str(), 0755) != 0) throw Error("cannot create " + tmp_ + ": " + std::strerror(errno));
}

TableWriter::~TableWriter() {
  if (!finished_) {
    cols_.clear();
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

void TableWriter::append(const Table& chunk) {
  if (!started_) {
    started_ = true;
    names_ = chunk.names;
    for (size_t i = 0; i < names_.size(); i++)
      cols_.push_back(std::make_unique<Col>(tmp_, "c" + std::to_string(i), "column '" + names_[i] + "'"));
  } else if (chunk.names != names_) {
    throw Error("a chunk with other columns than the table being written");
  }
  for (size_t i = 0; i < cols_.size(); i++) cols_[i]->append(*chunk.columns[i]);
  rows_ += chunk.num_rows;
}

void TableWriter::finish(const std::string& meta_json, bool keep_existing) {
  for (auto& c : cols_) c->close();
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.StartObject();
  w.Key("format");
  w.String("skyrun.table/1");
  w.Key("num_rows");
  w.Int64(rows_);
  w.Key("columns");
  w.StartArray();
  for (size_t i = 0; i < cols_.size(); i++) {
    w.StartObject();
    w.Key("name");
    w.String(names_[i].data(), static_cast<rapidjson::SizeType>(names_[i].size()));
    w.Key("column");
    cols_[i]->describe(w);
    w.EndObject();
  }
  w.EndArray();
  w.Key("meta");
  w.RawValue(meta_json.data(), meta_json.size(), rapidjson::kObjectType);
  w.EndObject();
  OutFile f;
  f.open(tmp_ + "/table.json");
  f.write(sb.GetString(), sb.GetSize());
  f.close();
  std::error_code ec;
  if (!keep_existing) fs::remove_all(dir_, ec);
  fs::rename(tmp_, dir_, ec);  // atomic: onto a missing or empty folder only
  if (ec && keep_existing && fs::exists(dir_ + "/table.json")) {
    std::error_code ignored;
    fs::remove_all(tmp_, ignored);  // another process made the same entry first: theirs is used
    ec.clear();
  }
  if (ec) throw Error("cannot rename " + tmp_ + " to " + dir_ + ": " + ec.message());
  finished_ = true;
}

// ---- table folder: reader -------------------------------------------------------------------------------

static Buffer map_file(const std::string& path, size_t expect, const std::string& what) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error("cannot stat " + path);
  }
  if (static_cast<size_t>(st.st_size) != expect) {
    ::close(fd);
    throw Error(path + ": " + what + " has " + std::to_string(st.st_size) + " bytes, expected " +
                std::to_string(expect) + " (truncated or corrupt table)");
  }
  Buffer b;
  b.size = expect;
  if (expect == 0) {
    ::close(fd);
    static const uint64_t empty = 0;
    b.data = reinterpret_cast<const uint8_t*>(&empty);
    return b;
  }
  void* p = ::mmap(nullptr, expect, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw Error("cannot map " + path + ": " + std::strerror(errno));
  b.data = static_cast<const uint8_t*>(p);
  b.mapped = true;
  b.owner = std::shared_ptr<const void>(p, [expect](const void* q) { ::munmap(const_cast<void*>(q), expect); });
  return b;
}

static DType parse_dtype(const std::string& s) {
  for (DType t : {DType::Null, DType::Bool, DType::Int64, DType::Float64, DType::String, DType::List})
    if (s == dtype_name(t)) return t;
  throw Error("unknown column type '" + s + "'");
}

static ColumnPtr open_column(const std::string& dir, const rapidjson::Value& v) {
  if (!v.IsObject() || !v.HasMember("type") || !v["type"].IsString() || !v.HasMember("length") ||
      !v["length"].IsInt64() || !v.HasMember("file") || !v["file"].IsString())
    throw Error(dir + "/table.json: malformed column entry");
  auto c = std::make_shared<Column>();
  c->type = parse_dtype(v["type"].GetString());
  c->length = v["length"].GetInt64();
  c->null_count = v.HasMember("null_count") && v["null_count"].IsInt64() ? v["null_count"].GetInt64() : 0;
  std::string p = dir + "/" + v["file"].GetString();
  if (c->length < 0) throw Error(dir + "/table.json: negative length");
  if (c->type != DType::Null && v.HasMember("validity") && v["validity"].IsBool() && v["validity"].GetBool())
    c->validity = map_file(p + ".n.bin", c->length, "validity");
  if (size_t w = fixed_width(c->type)) c->values = map_file(p + ".v.bin", c->length * w, "values");
  if (c->type == DType::String || c->type == DType::List) {
    c->offsets = map_file(p + ".o.bin", (c->length + 1) * 8, "offsets");
    const int64_t* o = c->offsets.as<int64_t>();
    for (int64_t i = 0; i < c->length; i++)
      if (o[i + 1] < o[i]) throw Error(p + ".o.bin: offsets go backwards (corrupt table)");
    if (o[0] != 0) throw Error(p + ".o.bin: offsets do not start at 0 (corrupt table)");
  }
  if (c->type == DType::String) {
    struct stat st;
    std::string vp = p + ".v.bin";
    size_t expect = static_cast<size_t>(c->offsets.as<int64_t>()[c->length]);
    if (::stat(vp.c_str(), &st) != 0) throw Error("cannot open " + vp);
    c->values = map_file(vp, expect, "string data");
  }
  if (c->type == DType::List) {
    if (!v.HasMember("child")) throw Error(dir + "/table.json: list column without element");
    c->child = open_column(dir, v["child"]);
    if (c->offsets.as<int64_t>()[c->length] != c->child->length) throw Error(p + ": list offsets past the elements");
  }
  return c;
}

bool table_exists(const std::string& dir) { return fs::exists(dir + "/table.json"); }

TablePtr table_open(const std::string& dir, std::string* meta_json) {
  std::string path = dir + "/table.json";
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error("cannot open " + path + ": " + std::strerror(errno));
  std::string text;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  rapidjson::Document d;
  if (JsonParsed r = json_parse(d, text); !r)
    throw Error(path + ": not a skyrun table (" + r.reason() + " at byte " + std::to_string(r.offset) + ")");
  if (!d.IsObject() || !d.HasMember("columns") || !d["columns"].IsArray() ||
      !d.HasMember("num_rows") || !d["num_rows"].IsInt64())
    throw Error(path + ": not a skyrun table");
  auto t = std::make_shared<Table>();
  for (auto& c : d["columns"].GetArray()) {
    if (!c.IsObject() || !c.HasMember("name") || !c["name"].IsString() || !c.HasMember("column"))
      throw Error(path + ": malformed column entry");
    t->add(c["name"].GetString(), open_column(dir, c["column"]));
  }
  t->num_rows = d["num_rows"].GetInt64();
  if (meta_json) {
    rapidjson::StringBuffer sb;
    rapidjson::Writer<rapidjson::StringBuffer> w(sb);
    if (d.HasMember("meta")) d["meta"].Accept(w);
    *meta_json = d.HasMember("meta") ? std::string(sb.GetString(), sb.GetSize()) : "{}";
  }
  return t;
}

// ---- hashing ------------------------------------------------------------------------------------------

static uint64_t mix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

std::string hash_hex(std::string_view data) {
  uint64_t a = 0xcbf29ce484222325ULL, b = 0x84222325cbf29ce4ULL ^ data.size();
  for (unsigned char ch : data) {
    a = (a ^ ch) * 0x100000001b3ULL;
    b = (b + ch) * 0x9E3779B97F4A7C15ULL;
    b ^= b >> 29;
  }
  a = mix64(a ^ mix64(b));
  b = mix64(b ^ a);
  char out[33];
  std::snprintf(out, sizeof out, "%016llx%016llx", static_cast<unsigned long long>(a),
                static_cast<unsigned long long>(b));
  return out;
}

}  // namespace sky::data
