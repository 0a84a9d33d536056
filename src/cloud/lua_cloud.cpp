// The native module "sky.cloud.core": what the cloud providers (lua/sky/cloud/, lua/sky/providers/)
// need from native code: HTTP requests through libcurl (hub/http.hpp's Session), SHA-256 and
// HMAC-SHA256 for SigV4, base64, random bytes, and an ed25519 key pair for the instances.
// It never logs: request headers carry credentials.
#include <fcntl.h>
#include <libssh/libssh.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "host/bind.hpp"
#include "host/modules.hpp"
#include "host/runtime.hpp"
#include "hub/http.hpp"

namespace sky {
namespace {

std::string hex_of(const unsigned char* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  return out;
}

// http{method=, url=, headers={name = value, ...}, body=, timeout=, connect_timeout=}
//   -> {status=, headers={lower-cased name = value}, body=}
// A transport failure (refused, timed out, broken) raises "http: <METHOD> <url>: <reason>"; the
// URL carries no credentials (they go in headers, which never appear in messages). Ctrl-C stops
// the transfer and raises "interrupted!".
int cloud_http(lua_State* L) {
  Options o(L, 1, "sky.cloud.core.http",
            {{"method", OptType::String}, {"url", OptType::String}, {"headers", OptType::Table},
             {"body", OptType::String}, {"timeout", OptType::Number}, {"connect_timeout", OptType::Number}});
  std::string method = o.string("method", "GET");
  std::string url = o.string("url", "");
  if (url.empty()) throw Error("sky.cloud.core.http: option 'url' is required");
  hub::http::Headers headers;
  o.push("headers");  // [headers|nil]
  if (lua_istable(L, -1)) {
    for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {  // [headers, k, v]
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        throw Error("sky.cloud.core.http: headers must map names to strings");
      headers.emplace_back(lua_tostring(L, -2), lua_tostring(L, -1));
    }
  }
  lua_pop(L, 1);  // []
  bool has_body = o.has("body");
  std::string body = o.string("body", "");
  hub::http::Timeouts t;
  t.connect_s = o.number("connect_timeout", 10);
  t.total_s = o.number("timeout", 60);
  hub::http::Session session;
  session.cancelled = [L] { return runtime_interrupt_pending(L); };
  hub::http::Response r;
  try {
    r = session.request(method.c_str(), url, headers, t, false, has_body ? &body : nullptr);
  } catch (const hub::http::TransportError& e) {
    if (e.kind() == hub::http::TransportError::Kind::cancelled && runtime_interrupt_take(L)) throw Error("interrupted!");
    throw Error("http: " + method + " " + url + ": " + e.what());
  }
  lua_createtable(L, 0, 3);  // [r]
  lua_pushinteger(L, r.status);
  lua_setfield(L, -2, "status");
  lua_createtable(L, 0, static_cast<int>(r.headers.size()));  // [r, h]
  for (const auto& [k, v] : r.headers) {
    lua_pushlstring(L, v.data(), v.size());
    lua_setfield(L, -2, k.c_str());
  }
  lua_setfield(L, -2, "headers");  // [r]
  lua_pushlstring(L, r.body.data(), r.body.size());
  lua_setfield(L, -2, "body");
  return 1;
}

// sha256_hex(data) -> 64 hex digits
int cloud_sha256_hex(lua_State* L) {
  std::string_view data = check_string_view(L, 1);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) throw Error("sha256 failed");
  std::string h = hex_of(md, len);
  lua_pushlstring(L, h.data(), h.size());
  return 1;
}

// hmac_sha256(key, data) -> 32 raw bytes
int cloud_hmac_sha256(lua_State* L) {
  std::string_view key = check_string_view(L, 1);
  std::string_view data = check_string_view(L, 2);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
            data.size(), md, &len))
    throw Error("hmac_sha256 failed");
  lua_pushlstring(L, reinterpret_cast<const char*>(md), len);
  return 1;
}

// base64(data) -> text (standard alphabet, padded, one line)
int cloud_base64(lua_State* L) {
  std::string_view data = check_string_view(L, 1);
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  lua_pushlstring(L, out.data(), static_cast<size_t>(n));
  return 1;
}

// random_hex(nbytes) -> 2*nbytes hex digits from the OS's generator
int cloud_random_hex(lua_State* L) {
  int64_t n = check_int64(L, 1);
  if (n < 1 || n > 1024) throw Error("random_hex: nbytes must be 1..1024");
  std::string buf(static_cast<size_t>(n), '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(buf.data()), static_cast<int>(n)) != 1) throw Error("random_hex: no randomness");
  std::string h = hex_of(reinterpret_cast<const unsigned char*>(buf.data()), buf.size());
  lua_pushlstring(L, h.data(), h.size());
  return 1;
}

struct KeyFree {
  void operator()(ssh_key k) const { ssh_key_free(k); }
};

// ssh_keygen(private_path, comment) -> public key line ("ssh-ed25519 AAAA... comment")
// A new ed25519 key: the private key in OpenSSH's format at private_path (mode 0600, written under
// a temporary name first), the public line at private_path .. ".pub". An existing key is kept:
// its public line is returned.
int cloud_ssh_keygen(lua_State* L) {
  std::string path(check_string_view(L, 1));
  std::string comment(luaL_optstring(L, 2, "skyrun"));
  ssh_key raw = nullptr;
  std::unique_ptr<ssh_key_struct, KeyFree> key;
  if (access(path.c_str(), F_OK) == 0) {
    if (ssh_pki_import_privkey_file(path.c_str(), nullptr, nullptr, nullptr, &raw) != SSH_OK)
      throw Error("cannot read the key '" + path + "' (an OpenSSH private key without a passphrase is expected)");
    key.reset(raw);
  } else {
    if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &raw) != SSH_OK) throw Error("cannot generate an ed25519 key");
    key.reset(raw);
    std::string tmp = path + ".tmp" + std::to_string(getpid());
    unlink(tmp.c_str());
    mode_t old = umask(077);
    int rc = ssh_pki_export_privkey_file(key.get(), nullptr, nullptr, nullptr, tmp.c_str());
    umask(old);
    if (rc != SSH_OK) {
      unlink(tmp.c_str());
      throw Error("cannot write the key '" + tmp + "'");
    }
    chmod(tmp.c_str(), 0600);
    if (rename(tmp.c_str(), path.c_str()) != 0) {
      int err = errno;
      unlink(tmp.c_str());
      throw Error("cannot rename '" + tmp + "' to '" + path + "': " + strerror(err));
    }
  }
  char* b64 = nullptr;
  if (ssh_pki_export_pubkey_base64(key.get(), &b64) != SSH_OK) throw Error("cannot export the public key of '" + path + "'");
  std::string line = std::string(ssh_key_type_to_char(ssh_key_type(key.get()))) + " " + b64 + " " + comment;
  ssh_string_free_char(b64);
  std::string pub = path + ".pub";
  FILE* f = fopen(pub.c_str(), "wb");
  if (!f) throw Error("cannot write '" + pub + "': " + strerror(errno));
  fputs((line + "\n").c_str(), f);
  fclose(f);
  lua_pushlstring(L, line.data(), line.size());
  return 1;
}

}  // namespace
}  // namespace sky

extern "C" int luaopen_sky_cloud_core(lua_State* L) {
  static const luaL_Reg fns[] = {
      {"http", sky::safe<sky::cloud_http>},
      {"sha256_hex", sky::safe<sky::cloud_sha256_hex>},
      {"hmac_sha256", sky::safe<sky::cloud_hmac_sha256>},
      {"base64", sky::safe<sky::cloud_base64>},
      {"random_hex", sky::safe<sky::cloud_random_hex>},
      {"ssh_keygen", sky::safe<sky::cloud_ssh_keygen>},
      {nullptr, nullptr},
  };
  lua_createtable(L, 0, 7);
  luaL_register(L, nullptr, fns);
  return 1;
}

SKY_NATIVE_MODULE("sky.cloud.core", luaopen_sky_cloud_core);
