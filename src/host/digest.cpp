// SHA-256, SHA-1 and base64 over libcrypto (already linked for libssh).
#include "host/digest.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace sky::digest {

namespace {

constexpr size_t kReadChunk = 1 << 20;
constexpr char kHex[] = "0123456789abcdef";

std::string hex_of(const unsigned char* md, unsigned len) {
  std::string out;
  out.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

// Calls on_start(size) once, then on_chunk for every piece of the file in order; returns the bytes
// read. Errors name the path.
template <typename S, typename F>
uint64_t read_file_chunks(const std::string& path, S&& on_start, F&& on_chunk) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open '" + path + "': " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw std::runtime_error("cannot stat '" + path + "': " + std::strerror(err));
  }
  std::vector<char> buf(kReadChunk);
  uint64_t total = 0;
  try {
    on_start(static_cast<uint64_t>(st.st_size));
    for (;;) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error("cannot read '" + path + "': " + std::strerror(errno));
      }
      if (n == 0) break;
      on_chunk(buf.data(), static_cast<size_t>(n), total);
      total += static_cast<uint64_t>(n);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return total;
}

void no_start(uint64_t) {}

}  // namespace

Hasher::Hasher(Algo algo) : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_) throw std::runtime_error("libcrypto could not create a digest context (out of memory?)");
  const EVP_MD* md = algo == Algo::sha256 ? EVP_sha256() : EVP_sha1();
  if (EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), md, nullptr) != 1) {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
    throw std::runtime_error("libcrypto refused to start a digest");
  }
}

Hasher::~Hasher() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Hasher::update(const void* data, size_t n) {
  if (EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, n) != 1) throw std::runtime_error("digest update failed");
}

std::string Hasher::hex() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md, &len) != 1) throw std::runtime_error("digest final failed");
  return hex_of(md, len);
}

std::string sha256_hex(std::string_view data) {
  Hasher h(Algo::sha256);
  h.update(data);
  return h.hex();
}

std::string sha1_hex(std::string_view data) {
  Hasher h(Algo::sha1);
  h.update(data);
  return h.hex();
}

std::string git_blob_sha1(std::string_view data) {
  Hasher h(Algo::sha1);
  std::string head = "blob " + std::to_string(data.size());
  h.update(head.c_str(), head.size() + 1);  // with its NUL
  h.update(data);
  return h.hex();
}

FileDigests file_digests(const std::string& path) {
  // One pass: git's header needs the size first, which fstat gives before the first byte.
  FileDigests d;
  Hasher sha256(Algo::sha256), sha1(Algo::sha1);
  uint64_t expected = 0;
  d.size = read_file_chunks(
      path,
      [&](uint64_t size) {
        expected = size;
        std::string head = "blob " + std::to_string(size);
        sha1.update(head.c_str(), head.size() + 1);  // with its NUL
      },
      [&](const char* p, size_t n, uint64_t offset) {
        sha256.update(p, n);
        sha1.update(p, n);
        if (offset < 512) d.sample.append(p, std::min<uint64_t>(n, 512 - offset));
      });
  if (d.size != expected) throw std::runtime_error("'" + path + "' changed size while it was hashed");
  d.sha256 = sha256.hex();
  d.git_sha1 = sha1.hex();
  return d;
}

std::string sha256_file(const std::string& path) {
  Hasher h(Algo::sha256);
  read_file_chunks(path, no_start, [&](const char* p, size_t n, uint64_t) { h.update(p, n); });
  return h.hex();
}

std::string base64_encode(std::string_view data) {
  constexpr size_t kPiece = 3 << 20;  // a multiple of 3: pieces encode without padding between them
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');  // + EVP_EncodeBlock's NUL
  size_t written = 0;
  for (size_t at = 0; at < data.size(); at += kPiece) {
    size_t n = std::min(kPiece, data.size() - at);
    written += static_cast<size_t>(EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data() + written),
                                                   reinterpret_cast<const unsigned char*>(data.data() + at),
                                                   static_cast<int>(n)));
  }
  out.resize(written);
  return out;
}

}  // namespace sky::digest
