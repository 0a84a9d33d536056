// TensorBoard event files written by hand: TFRecord framing (length, masked CRC-32C of the
// length, payload, masked CRC-32C of the payload) around Event protos encoded field by field.
// No protobuf or TensorFlow library; TensorBoard and tensorboard's EventAccumulator read them.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace sky::train {

uint32_t crc32c(const void* data, size_t n);
uint32_t crc32c_masked(const void* data, size_t n);  // ((crc >> 15) | (crc << 17)) + 0xa282ead8

// One TFRecord around payload.
std::string tfrecord_frame(std::string_view payload);

// Event{wall_time, step, summary{value{tag, simple_value}}} as protobuf bytes.
std::string tfevent_scalar(double wall_time, int64_t step, std::string_view tag, float value);
// Event{wall_time, file_version}: the first record of every file.
std::string tfevent_file_version(double wall_time);

// Appends scalars to <dir>/events.out.tfevents.<time>.<host>.<pid>.0 (folder created).
class TfEventWriter {
 public:
  explicit TfEventWriter(const std::string& dir);  // throws std::runtime_error naming the path
  ~TfEventWriter();
  TfEventWriter(const TfEventWriter&) = delete;
  TfEventWriter& operator=(const TfEventWriter&) = delete;

  void add_scalar(std::string_view tag, float value, int64_t step, double wall_time);
  void flush();
  void close();
  const std::string& path() const { return path_; }

 private:
  void write(const std::string& bytes);
  std::string path_;
  FILE* f_ = nullptr;
};

}  // namespace sky::train
