// Addresses for rendezvous (free ports, the local address towards the master), pool secrets, and
// their Lua module sky.dist.core. No LibTorch here: the driver uses it without loading torch.
#include "dist/net.hpp"
#include "dist/store.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "host/bind.hpp"
#include "host/modules.hpp"

namespace sky::dist {

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("dist: free_port: socket: ") + strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    int err = errno;
    close(fd);
    throw std::runtime_error(std::string("dist: free_port: ") + strerror(err));
  }
  close(fd);
  return ntohs(a.sin_port);
}

std::string local_address_towards(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), "9", &hints, &res);
  if (rc != 0) throw std::runtime_error("dist: cannot resolve MASTER_ADDR '" + host + "': " + gai_strerror(rc));
  std::string out;
  std::string last_error = "no address";
  for (addrinfo* ai = res; ai && out.empty(); ai = ai->ai_next) {
    int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_storage local{};
    socklen_t len = sizeof(local);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
      char buf[INET6_ADDRSTRLEN] = {0};
      const void* src = local.ss_family == AF_INET
                            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr)
                            : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr);
      if (inet_ntop(local.ss_family, src, buf, sizeof(buf))) out = buf;
    } else {
      last_error = strerror(errno);
    }
    close(fd);
  }
  freeaddrinfo(res);
  if (out.empty()) throw std::runtime_error("dist: no route from this host towards MASTER_ADDR '" + host + "': " + last_error);
  return out;
}

namespace {

int lua_free_port(lua_State* L) {
  lua_pushinteger(L, free_port());
  return 1;
}

int lua_local_address_towards(lua_State* L) {
  std::string addr = local_address_towards(std::string(check_string_view(L, 1)));
  lua_pushlstring(L, addr.data(), addr.size());
  return 1;
}

// new_secret() -> a fresh random pool secret for the rendezvous store (64 hex digits)
int lua_new_secret(lua_State* L) {
  std::string s = store_new_secret();
  lua_pushlstring(L, s.data(), s.size());
  return 1;
}

int luaopen_sky_dist_core(lua_State* L) {
  static const luaL_Reg fns[] = {
      {"free_port", safe<lua_free_port>},
      {"local_address_towards", safe<lua_local_address_towards>},
      {"new_secret", safe<lua_new_secret>},
      {nullptr, nullptr},
  };
  lua_createtable(L, 0 /* narr */, 3);  // [M]
  luaL_register(L, nullptr, fns);
  return 1;
}

}  // namespace

SKY_NATIVE_MODULE("sky.dist.core", luaopen_sky_dist_core);

}  // namespace sky::dist
