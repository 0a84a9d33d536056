// TFRecord + Event proto encoding (tensorflow/core/util/event.proto, summary.proto field numbers).
#include "train/tfevents.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <stdexcept>

namespace sky::train {

namespace {

// CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, table built once.
struct Crc32cTable {
  uint32_t t[256];
  Crc32cTable() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
      t[i] = c;
    }
  }
};

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_fixed(std::string& out, const void* p, size_t n) { out.append(static_cast<const char*>(p), n); }

// field key: (number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32)
void put_key(std::string& out, int field, int wire) { put_varint(out, static_cast<uint64_t>((field << 3) | wire)); }

void put_bytes_field(std::string& out, int field, std::string_view bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out.append(bytes.data(), bytes.size());
}

}  // namespace

uint32_t crc32c(const void* data, size_t n) {
  static const Crc32cTable table;
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table.t[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t crc32c_masked(const void* data, size_t n) {
  uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string tfrecord_frame(std::string_view payload) {
  std::string out;
  uint64_t len = payload.size();  // little-endian on every machine we build for
  put_fixed(out, &len, 8);
  uint32_t len_crc = crc32c_masked(&len, 8);
  put_fixed(out, &len_crc, 4);
  out.append(payload.data(), payload.size());
  uint32_t data_crc = crc32c_masked(payload.data(), payload.size());
  put_fixed(out, &data_crc, 4);
  return out;
}

std::string tfevent_file_version(double wall_time) {
  std::string ev;
  put_key(ev, 1, 1);  // wall_time: double
  put_fixed(ev, &wall_time, 8);
  put_bytes_field(ev, 3, "brain.Event:2");  // file_version
  return ev;
}

std::string tfevent_scalar(double wall_time, int64_t step, std::string_view tag, float value) {
  std::string val;  // Summary.Value{tag = 1, simple_value = 2}
  put_bytes_field(val, 1, tag);
  put_key(val, 2, 5);
  put_fixed(val, &value, 4);
  std::string summary;  // Summary{repeated Value value = 1}
  put_bytes_field(summary, 1, val);
  std::string ev;  // Event{wall_time = 1, step = 2, summary = 5}
  put_key(ev, 1, 1);
  put_fixed(ev, &wall_time, 8);
  put_key(ev, 2, 0);
  put_varint(ev, static_cast<uint64_t>(step));
  put_bytes_field(ev, 5, summary);
  return ev;
}

TfEventWriter::TfEventWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error("tensorboard: cannot create " + dir + ": " + ec.message());
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  path_ = dir + "/events.out.tfevents." + std::to_string(static_cast<long long>(time(nullptr))) + "." + host + "." +
          std::to_string(getpid()) + ".0";
  f_ = fopen(path_.c_str(), "ab");
  if (!f_) throw std::runtime_error("tensorboard: cannot open " + path_ + ": " + strerror(errno));
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  write(tfrecord_frame(tfevent_file_version(static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9)));
  flush();
}

TfEventWriter::~TfEventWriter() {
  if (f_) fclose(f_);
}

void TfEventWriter::write(const std::string& bytes) {
  if (!f_) throw std::runtime_error("tensorboard: " + path_ + " is closed");
  if (fwrite(bytes.data(), 1, bytes.size(), f_) != bytes.size())
    throw std::runtime_error("tensorboard: cannot write " + path_ + ": " + strerror(errno));
}

void TfEventWriter::add_scalar(std::string_view tag, float value, int64_t step, double wall_time) {
  write(tfrecord_frame(tfevent_scalar(wall_time, step, tag, value)));
}

void TfEventWriter::flush() {
  if (f_ && fflush(f_) != 0) throw std::runtime_error("tensorboard: cannot write " + path_ + ": " + strerror(errno));
}

void TfEventWriter::close() {
  if (!f_) return;
  int rc = fclose(f_);
  f_ = nullptr;
  if (rc != 0) throw std::runtime_error("tensorboard: cannot write " + path_ + ": " + strerror(errno));
}

}  // namespace sky::train
