// safetensors: the format is an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}),
// then the data section. Parsing trusts nothing: every offset, size and product is checked.
#include "nn/safetensors.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include "host/bind.hpp"
#include "host/fs.hpp"
#include "host/json.hpp"

namespace sky::nn {

namespace {

struct DtypeInfo {
  Dtype dtype;
  const char* name;
  size_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {Dtype::F64, "F64", 8},         {Dtype::F32, "F32", 4},         {Dtype::F16, "F16", 2},
    {Dtype::BF16, "BF16", 2},       {Dtype::F8_E4M3, "F8_E4M3", 1}, {Dtype::F8_E5M2, "F8_E5M2", 1},
    {Dtype::I64, "I64", 8},         {Dtype::I32, "I32", 4},         {Dtype::I16, "I16", 2},
    {Dtype::I8, "I8", 1},           {Dtype::U64, "U64", 8},         {Dtype::U32, "U32", 4},
    {Dtype::U16, "U16", 2},         {Dtype::U8, "U8", 1},           {Dtype::BOOL, "BOOL", 1},
};

constexpr uint64_t kMaxHeader = 100u * 1000 * 1000;  // the reference implementation's limit

[[noreturn]] void fail(const std::string& file, const std::string& msg) { throw sky::Error(file + ": " + msg); }

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string errno_str() { return std::strerror(errno); }

}  // namespace

const char* dtype_name(Dtype d) {
  for (const auto& i : kDtypes)
    if (i.dtype == d) return i.name;
  return "?";
}

std::optional<Dtype> dtype_from_name(std::string_view s) {
  for (const auto& i : kDtypes)
    if (s == i.name) return i.dtype;
  return std::nullopt;
}

size_t dtype_size(Dtype d) {
  for (const auto& i : kDtypes)
    if (i.dtype == d) return i.size;
  return 0;
}

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const TensorEntry* SafetensorsHeader::find(std::string_view name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

namespace {

// The header's checks need only its own bytes ([data, data + avail), at least 8 + its length) and
// the size of the whole file, so a file read with pread needs no mapping.
SafetensorsHeader parse_header(const uint8_t* data, size_t avail, uint64_t size, const std::string& file) {
  if (size < 8)
    fail(file, "truncated file (" + std::to_string(size) + " bytes; a safetensors file starts with an 8-byte header length)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kMaxHeader) fail(file, "header length " + std::to_string(n) + " is over the 100 MB limit (not a safetensors file?)");
  if (n > size - 8)
    fail(file, "header of " + std::to_string(n) + " bytes is longer than the file (" + std::to_string(size) +
                   " bytes): truncated or not a safetensors file");
  if (avail < 8 + n) fail(file, "changed while its header was read");
  SafetensorsHeader h;
  h.data_start = 8 + n;
  const uint64_t data_size = size - h.data_start;

  rapidjson::Document doc;
  if (JsonParsed r = json_parse<rapidjson::kParseStopWhenDoneFlag>(doc, {reinterpret_cast<const char*>(data + 8), n}); !r)
    fail(file, "header is not valid JSON (" + r.reason() + " at byte " + std::to_string(r.offset) + ")");
  if (!doc.IsObject()) fail(file, "header is not a JSON object");

  std::set<std::string_view> seen;
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
    std::string name(it->name.GetString(), it->name.GetStringLength());
    if (!seen.insert(std::string_view(it->name.GetString(), it->name.GetStringLength())).second)
      fail(file, "tensor '" + name + "' appears twice in the header");
    const auto& v = it->value;
    if (name == "__metadata__") {
      if (!v.IsObject()) fail(file, "__metadata__ is not an object of strings");
      for (auto m = v.MemberBegin(); m != v.MemberEnd(); ++m) {
        if (!m->value.IsString()) fail(file, "__metadata__ value '" + std::string(m->name.GetString()) + "' is not a string");
        h.metadata[std::string(m->name.GetString(), m->name.GetStringLength())] =
            std::string(m->value.GetString(), m->value.GetStringLength());
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!v.IsObject()) fail(file, where + ": entry is not an object");
    TensorEntry e;
    e.name = name;
    auto dt = v.FindMember("dtype");
    if (dt == v.MemberEnd() || !dt->value.IsString()) fail(file, where + ": missing dtype");
    auto dtype = dtype_from_name(std::string_view(dt->value.GetString(), dt->value.GetStringLength()));
    if (!dtype) fail(file, where + ": unknown dtype '" + std::string(dt->value.GetString()) + "'");
    e.dtype = *dtype;
    auto sh = v.FindMember("shape");
    if (sh == v.MemberEnd() || !sh->value.IsArray()) fail(file, where + ": missing shape");
    // Element count with overflow checks: no product may exceed the data section.
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : sh->value.GetArray()) {
      if (!d.IsUint64() || d.GetUint64() > (uint64_t(1) << 62))
        fail(file, where + ": shape must hold non-negative integers");
      uint64_t dim = d.GetUint64();
      e.shape.push_back(static_cast<int64_t>(dim));
      if (dim != 0 && numel > (uint64_t(1) << 62) / dim) overflow = true;
      else numel *= dim;
    }
    auto off = v.FindMember("data_offsets");
    if (off == v.MemberEnd() || !off->value.IsArray() || off->value.Size() != 2 || !off->value[0].IsUint64() ||
        !off->value[1].IsUint64())
      fail(file, where + ": data_offsets must be [begin, end]");
    e.begin = off->value[0].GetUint64();
    e.end = off->value[1].GetUint64();
    if (e.begin > e.end)
      fail(file, where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] end before they begin");
    if (e.end > data_size)
      fail(file, where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                     "] run past the end of the data section (" + std::to_string(data_size) +
                     " bytes): the file is truncated or the offsets are out of range");
    if (overflow || numel * dtype_size(e.dtype) != e.end - e.begin)
      fail(file, where + ": dtype " + dtype_name(e.dtype) + " shape " + shape_str(e.shape) + " needs " +
                     (overflow ? std::string("more") : std::to_string(numel * dtype_size(e.dtype))) +
                     " bytes but data_offsets span " + std::to_string(e.end - e.begin));
    h.tensors.push_back(std::move(e));
  }
  // Offsets may come in any order, but no two tensors may share bytes.
  std::vector<const TensorEntry*> by_begin;
  for (const auto& t : h.tensors)
    if (t.end > t.begin) by_begin.push_back(&t);
  std::sort(by_begin.begin(), by_begin.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_begin.size(); ++i)
    if (by_begin[i]->begin < by_begin[i - 1]->end)
      fail(file, "tensors '" + by_begin[i - 1]->name + "' and '" + by_begin[i]->name + "' overlap (bytes " +
                     std::to_string(by_begin[i]->begin) + ".." + std::to_string(by_begin[i - 1]->end) + ")");
  return h;
}

}  // namespace

SafetensorsHeader safetensors_parse(const uint8_t* data, size_t size, const std::string& file) {
  return parse_header(data, size, size, file);
}

// ---- reading ---------------------------------------------------------------------------------------

namespace {

// All of [dst, dst + n) from offset `off`, or an error: a short read means the file shrank.
void pread_all(int fd, void* dst, uint64_t n, uint64_t off, const std::string& path, const std::string& what) {
  auto* p = static_cast<uint8_t*>(dst);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n > (1u << 30) ? (1u << 30) : n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail(path, "cannot read " + what + " (" + errno_str() + ")");
    if (r == 0) fail(path, "the file shrank while " + what + " was read");
    p += r;
    n -= static_cast<uint64_t>(r);
    off += static_cast<uint64_t>(r);
  }
}

// True when nobody can change the file's bytes while we hold it: it lives on a read-only mount or
// carries the immutable attribute (chattr +i). Only then is mapping it in place safe.
bool file_cannot_change(int fd) {
  struct statvfs vfs {};
  if (fstatvfs(fd, &vfs) == 0 && (vfs.f_flag & ST_RDONLY)) return true;
  int flags = 0;
  return ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && (flags & FS_IMMUTABLE_FL);
}

}  // namespace

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open (" + errno_str() + ")");
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->fd_ = fd;  // closed by the destructor from here on
  f->path_ = path;
  struct stat st {};
  if (fstat(fd, &st) != 0) fail(path, "cannot stat (" + errno_str() + ")");
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ > 0 && file_cannot_change(fd)) {
    // Private and writable: tensors may alias the pages; a write copies the page, never the file.
    void* p = mmap(nullptr, f->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) fail(path, "cannot map (" + errno_str() + ")");
    f->base_ = static_cast<uint8_t*>(p);
    f->header_ = safetensors_parse(f->base_, f->size_, path);
    return f;
  }
  // Any other file may be rewritten or truncated by another process while the model lives: its
  // tensors are read into memory of their own (read()), never aliased to a mapping of the file.
  std::vector<uint8_t> buf(f->size_ < 8 ? static_cast<size_t>(f->size_) : 8);
  pread_all(fd, buf.data(), buf.size(), 0, path, "the header");
  if (buf.size() == 8) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | buf[i];
    if (n <= kMaxHeader && n <= f->size_ - 8) {  // else parse_header says what is wrong
      buf.resize(8 + n);
      pread_all(fd, buf.data() + 8, n, 8, path, "the header");
    }
  }
  f->header_ = parse_header(buf.data(), buf.size(), f->size_, path);
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (base_) munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
}

void SafetensorsFile::read(const TensorEntry& e, void* dst) const {
  if (e.end == e.begin) return;
  if (base_) {
    std::memcpy(dst, data(e), e.end - e.begin);
    return;
  }
  pread_all(fd_, dst, e.end - e.begin, header_.data_start + e.begin, path_, "tensor '" + e.name + "'");
}

void SafetensorsFile::release(const TensorEntry& e) const {
  if (!base_) return;
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t b = reinterpret_cast<uintptr_t>(data(e));
  uintptr_t en = b + (e.end - e.begin);
  b = (b + page - 1) / page * page;  // whole pages inside this tensor only
  en = en / page * page;
  if (en > b) madvise(reinterpret_cast<void*>(b), en - b, MADV_DONTNEED);
}

bool SafetensorsCheckpoint::exists(const std::string& folder, const std::string& prefix) {
  namespace fs = std::filesystem;
  return fs::exists(fs::path(folder) / (prefix + ".safetensors")) ||
         fs::exists(fs::path(folder) / (prefix + ".safetensors.index.json"));
}

static std::string read_text(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) fail(path, "cannot open (" + errno_str() + ")");
  std::string s;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  fclose(f);
  return s;
}

SafetensorsCheckpoint SafetensorsCheckpoint::open(const std::string& folder, const std::string& prefix) {
  namespace fs = std::filesystem;
  SafetensorsCheckpoint c;
  fs::path single = fs::path(folder) / (prefix + ".safetensors");
  fs::path index = fs::path(folder) / (prefix + ".safetensors.index.json");
  auto add_file = [&](const std::string& path) -> const SafetensorsFile* {
    for (auto& f : c.files_)
      if (f->path() == path) return f.get();
    c.files_.push_back(SafetensorsFile::open(path));
    return c.files_.back().get();
  };
  if (fs::exists(single)) {
    const SafetensorsFile* f = add_file(single.string());
    for (const auto& t : f->header().tensors) c.index_[t.name] = Found{f, &t};
    c.metadata_ = f->header().metadata;
    return c;
  }
  if (!fs::exists(index))
    throw sky::Error(folder + ": no " + single.filename().string() + " or " + index.filename().string());
  std::string text = read_text(index.string());
  rapidjson::Document doc;
  if (JsonParsed r = json_parse(doc, text); !r)
    fail(index.string(), "not valid JSON (" + r.reason() + " at byte " + std::to_string(r.offset) + ")");
  if (!doc.IsObject()) fail(index.string(), "not a JSON object");
  auto wm = doc.FindMember("weight_map");
  if (wm == doc.MemberEnd() || !wm->value.IsObject()) fail(index.string(), "no weight_map object");
  for (auto it = wm->value.MemberBegin(); it != wm->value.MemberEnd(); ++it) {
    if (!it->value.IsString()) fail(index.string(), "weight_map entry '" + std::string(it->name.GetString()) + "' is not a file name");
    std::string shard = it->value.GetString();
    if (shard.find('/') != std::string::npos || shard == "..")
      fail(index.string(), "weight_map entry '" + std::string(it->name.GetString()) + "' names a file outside the folder");
    const SafetensorsFile* f = add_file((fs::path(folder) / shard).string());
    const TensorEntry* e = f->header().find(it->name.GetString());
    if (!e) fail(f->path(), "tensor '" + std::string(it->name.GetString()) + "' is listed in " +
                                index.filename().string() + " but not in this shard");
    c.index_[it->name.GetString()] = Found{f, e};
  }
  if (!c.files_.empty()) c.metadata_ = c.files_[0]->header().metadata;
  return c;
}

std::optional<SafetensorsCheckpoint::Found> SafetensorsCheckpoint::find(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : index_) out.push_back(k);
  return out;
}

// ---- writing ---------------------------------------------------------------------------------------

static uint64_t tensor_bytes(const TensorToWrite& t) {
  uint64_t n = dtype_size(t.dtype);
  for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
  return n;
}

std::string safetensors_header_bytes(const std::vector<TensorToWrite>& tensors,
                                     const std::map<std::string, std::string>& metadata) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.StartObject();
  if (!metadata.empty()) {
    w.Key("__metadata__");
    w.StartObject();
    for (const auto& [k, v] : metadata) {
      w.Key(k.c_str(), static_cast<rapidjson::SizeType>(k.size()));
      w.String(v.c_str(), static_cast<rapidjson::SizeType>(v.size()));
    }
    w.EndObject();
  }
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    w.Key(t.name.c_str(), static_cast<rapidjson::SizeType>(t.name.size()));
    w.StartObject();
    w.Key("dtype");
    w.String(dtype_name(t.dtype));
    w.Key("shape");
    w.StartArray();
    for (int64_t d : t.shape) w.Int64(d);
    w.EndArray();
    w.Key("data_offsets");
    w.StartArray();
    w.Uint64(offset);
    offset += tensor_bytes(t);
    w.Uint64(offset);
    w.EndArray();
    w.EndObject();
  }
  w.EndObject();
  std::string json(sb.GetString(), sb.GetSize());
  json.append((8 - json.size() % 8) % 8, ' ');  // data starts 8-aligned, as the reference writer does
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json;
}

void safetensors_write(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  try {
    sky::fs::AtomicFileWriter out(path);
    std::string header = safetensors_header_bytes(tensors, metadata);
    out.write(header.data(), header.size());
    for (const auto& t : tensors) out.write(t.data, tensor_bytes(t));
    out.commit();
  } catch (const sky::fs::FsError& e) {
    throw sky::Error(e.what());
  }
}

void write_file_atomic(const std::string& path, std::string_view text) {
  try {
    sky::fs::write_file_atomic(path, text);
  } catch (const sky::fs::FsError& e) {
    throw sky::Error(e.what());
  }
}

std::vector<std::string> safetensors_write_checkpoint(const std::string& folder, const std::string& prefix,
                                                      const std::vector<TensorToWrite>& tensors,
                                                      const std::map<std::string, std::string>& metadata,
                                                      uint64_t max_shard_size) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) throw sky::Error(folder + ": cannot create folder (" + ec.message() + ")");
  // Shards as HF's split_torch_state_dict_into_shards: fill in order, start a new shard when the
  // next tensor would overflow the current one; a tensor larger than the limit gets its own.
  std::vector<std::vector<TensorToWrite>> shards(1);
  uint64_t current = 0, total = 0;
  int64_t total_params = 0;
  for (const auto& t : tensors) {
    uint64_t b = tensor_bytes(t);
    if (max_shard_size > 0 && current > 0 && current + b > max_shard_size) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(t);
    current += b;
    total += b;
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    total_params += n;
  }
  // Files of an earlier save with the same prefix must not be mixed with this one's.
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    std::string fname = entry.path().filename().string();
    bool ours = fname == prefix + ".safetensors" || fname == prefix + ".safetensors.index.json" ||
                (fname.rfind(prefix + "-", 0) == 0 && fname.size() > 12 &&
                 fname.compare(fname.size() - 12, 12, ".safetensors") == 0 && fname.find("-of-") != std::string::npos);
    if (ours) fs::remove(entry.path(), ec);
  }
  std::vector<std::string> written;
  if (shards.size() == 1) {
    std::string path = (fs::path(folder) / (prefix + ".safetensors")).string();
    safetensors_write(path, shards[0], metadata);
    written.push_back(path);
    return written;
  }
  rapidjson::StringBuffer sb;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(sb);
  w.SetIndent(' ', 2);
  w.StartObject();
  w.Key("metadata");
  w.StartObject();
  w.Key("total_parameters");
  w.Int64(total_params);
  w.Key("total_size");
  w.Uint64(total);
  w.EndObject();
  w.Key("weight_map");
  w.StartObject();
  std::map<std::string, std::string> weight_map;  // sorted, as HF writes it
  for (size_t i = 0; i < shards.size(); ++i) {
    char name[256];
    snprintf(name, sizeof name, "%s-%05zu-of-%05zu.safetensors", prefix.c_str(), i + 1, shards.size());
    std::string path = (fs::path(folder) / name).string();
    safetensors_write(path, shards[i], metadata);
    written.push_back(path);
    for (const auto& t : shards[i]) weight_map[t.name] = name;
  }
  for (const auto& [k, v] : weight_map) {
    w.Key(k.c_str());
    w.String(v.c_str());
  }
  w.EndObject();
  w.EndObject();
  std::string index_path = (fs::path(folder) / (prefix + ".safetensors.index.json")).string();
  write_file_atomic(index_path, std::string(sb.GetString(), sb.GetSize()) + "\n");
  written.push_back(index_path);
  return written;
}

uint64_t parse_size(std::string_view s) {
  std::string t(s);
  size_t i = 0;
  while (i < t.size() && (isdigit(static_cast<unsigned char>(t[i])) || t[i] == '.')) ++i;
  if (i == 0) throw sky::Error("size '" + t + "' is not like 5GB, 500MB or a number of bytes");
  double v = std::stod(t.substr(0, i));
  std::string unit = t.substr(i);
  for (char& c : unit) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
  double mult = 0;
  if (unit == "" || unit == "B") mult = 1;
  else if (unit == "KB") mult = 1e3;
  else if (unit == "MB") mult = 1e6;
  else if (unit == "GB") mult = 1e9;
  else if (unit == "TB") mult = 1e12;
  else if (unit == "KIB") mult = 1024.0;
  else if (unit == "MIB") mult = 1024.0 * 1024;
  else if (unit == "GIB") mult = 1024.0 * 1024 * 1024;
  else if (unit == "TIB") mult = 1024.0 * 1024 * 1024 * 1024;
  else throw sky::Error("size '" + t + "' has an unknown unit (use B, KB, MB, GB, KiB, MiB, GiB)");
  return static_cast<uint64_t>(v * mult);
}

}  // namespace sky::nn
