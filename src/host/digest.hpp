// Digests and encodings the host's subsystems share: SHA-256 and SHA-1 (libcrypto's EVP, streamed
// so a file of any size is hashed in fixed memory), git's blob id, and base64. Knows nothing of Lua.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sky::digest {

enum class Algo { sha1, sha256 };

// A running digest: update() as often as needed, then hex() once.
class Hasher {
 public:
  explicit Hasher(Algo algo);
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;

  void update(const void* data, size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  std::string hex();  // lower-case hex of the digest; the hasher is spent afterwards

 private:
  void* ctx_;  // EVP_MD_CTX*
};

std::string sha256_hex(std::string_view data);
std::string sha1_hex(std::string_view data);

// git's object id of a blob: sha1("blob <size>\0" + data), what the Hub calls a regular file's oid.
std::string git_blob_sha1(std::string_view data);

struct FileDigests {
  uint64_t size = 0;
  std::string sha256;    // of the contents
  std::string git_sha1;  // git's blob id
  std::string sample;    // the first 512 bytes (what the Hub's preupload reads)
};

// Reads the file once and computes both digests; errors name the path.
FileDigests file_digests(const std::string& path);

// sha256 of a whole file, read in pieces; errors name the path.
std::string sha256_file(const std::string& path);

std::string base64_encode(std::string_view data);

}  // namespace sky::digest
