// safetensors files without LibTorch: header parsing and validation, memory-mapped reading,
// sharded checkpoints (model.safetensors.index.json), and writing (one file or shards).
// Every malformed input is an sky::Error naming the file and, where one is involved, the tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sky::nn {

enum class Dtype { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U64, U32, U16, U8, BOOL };

const char* dtype_name(Dtype d);                          // "F32", "BF16", ...
std::optional<Dtype> dtype_from_name(std::string_view s);  // nullopt when unknown
size_t dtype_size(Dtype d);                               // bytes per element

struct TensorEntry {
  std::string name;
  Dtype dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range inside the data section (after the header)
  int64_t numel() const;
};

struct SafetensorsHeader {
  std::vector<TensorEntry> tensors;            // in the order of the header
  std::map<std::string, std::string> metadata;  // "__metadata__"
  uint64_t data_start = 0;                      // 8 + header length
  const TensorEntry* find(std::string_view name) const;
};

// Parses and validates the header of a safetensors file held in [data, data+size) (the whole
// file: offsets are checked against it). `file` names the file in errors.
SafetensorsHeader safetensors_parse(const uint8_t* data, size_t size, const std::string& file);

// One open safetensors file. A file that cannot change while we hold it (on a read-only mount, or
// immutable) is memory-mapped privately and its tensors may alias the mapping (no copy; tensors
// that alias it keep it alive). Any other file is read with pread into memory of our own: another
// process rewriting, truncating or replacing it later can then neither crash a loaded model
// (SIGBUS on a truncated mapping) nor silently change its weights (a private mapping shows later
// writes to pages not yet copied).
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  bool mapped() const { return base_ != nullptr; }
  // The tensor's bytes in the mapping: only when mapped().
  const uint8_t* data(const TensorEntry& e) const { return base_ + header_.data_start + e.begin; }
  // Copies the tensor's bytes (e.end - e.begin) to dst; a file that shrank meanwhile is an error.
  void read(const TensorEntry& e, void* dst) const;
  uint64_t size() const { return size_; }
  // Tells the kernel these mapped pages are no longer needed (after copying a tensor out).
  void release(const TensorEntry& e) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  int fd_ = -1;
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  SafetensorsHeader header_;
};

// A checkpoint folder: model.safetensors, or the shards named by model.safetensors.index.json.
class SafetensorsCheckpoint {
 public:
  // `folder` holds `<prefix>.safetensors` or `<prefix>.safetensors.index.json`.
  static SafetensorsCheckpoint open(const std::string& folder, const std::string& prefix = "model");
  static bool exists(const std::string& folder, const std::string& prefix = "model");
  struct Found {
    const SafetensorsFile* file;
    const TensorEntry* entry;
  };
  std::optional<Found> find(std::string_view name) const;
  std::vector<std::string> names() const;  // every tensor, sorted
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, Found, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  Dtype dtype;
  std::vector<int64_t> shape;
  const void* data;  // nbytes = numel * dtype_size, contiguous little-endian
};

// The header bytes (length prefix included, JSON padded with spaces to a multiple of 8) for
// tensors laid out one after another in the given order.
std::string safetensors_header_bytes(const std::vector<TensorToWrite>& tensors,
                                     const std::map<std::string, std::string>& metadata);

// Writes one file: to a temporary name beside it (sky::fs::AtomicFileWriter), then renamed over `path`.
void safetensors_write(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata);

// Writes `<prefix>.safetensors`, or when the tensors exceed max_shard_size bytes (0: never
// split) `<prefix>-0000i-of-0000n.safetensors` shards and `<prefix>.safetensors.index.json`
// like HF's save_pretrained. Stale files of the other layout with the same prefix are removed.
// Returns the files written.
std::vector<std::string> safetensors_write_checkpoint(const std::string& folder, const std::string& prefix,
                                                      const std::vector<TensorToWrite>& tensors,
                                                      const std::map<std::string, std::string>& metadata,
                                                      uint64_t max_shard_size);

// "5GB" (10^9), "500MiB" (2^20), "1000" bytes, as HF's convert_file_size_to_int.
uint64_t parse_size(std::string_view s);

// Writes `text` to path through a temporary name and a rename.
void write_file_atomic(const std::string& path, std::string_view text);

}  // namespace sky::nn
