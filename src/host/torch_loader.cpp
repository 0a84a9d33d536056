// Loading the embedded LibTorch module: the blob is written to an anonymous memory file
// (memfd) and dlopen'ed from /proc/self/fd, so a copied binary stays a single file.
#include "host/torch_loader.hpp"

#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "sky_config.h"

#if SKY_HAVE_TORCH
extern "C" const unsigned char skyrun_torch_blob_start[];
extern "C" const unsigned char skyrun_torch_blob_end[];
#endif

namespace sky {

bool torch_module_built() { return SKY_HAVE_TORCH != 0; }

namespace {
std::mutex g_mutex;
void* g_handle = nullptr;
std::string g_error;

void* load_locked(std::string& err) {
#if SKY_HAVE_TORCH
  // A developer may point at a module file directly (debuggers, sanitizers).
  if (const char* path = getenv("SKYRUN_TORCH_MODULE"); path && *path) {
    void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) err = std::string("cannot load the LibTorch module ") + path + ": " + dlerror();
    return h;
  }
  size_t size = static_cast<size_t>(skyrun_torch_blob_end - skyrun_torch_blob_start);
  int fd = memfd_create("skyrun_torch.so", MFD_CLOEXEC);
  if (fd < 0) {
    err = std::string("cannot load the LibTorch module: memfd_create: ") + strerror(errno);
    return nullptr;
  }
  size_t off = 0;
  while (off < size) {
    ssize_t n = write(fd, skyrun_torch_blob_start + off, size - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = std::string("cannot load the LibTorch module: write: ") + strerror(errno);
      close(fd);
      return nullptr;
    }
    off += static_cast<size_t>(n);
  }
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  close(fd);
  if (!h) {
    const char* why = dlerror();
    err = std::string("cannot load LibTorch (needed for models, training and torch.*): ") + (why ? why : "?");
    if (why && strstr(why, "cannot open shared object file"))
      err += " (on Debian/Ubuntu: apt-get install libtorch1.13 or build skyrun against your LibTorch with -Dtorch_dir)";
  }
  return h;
#else
  err = "not supported in this build: skyrun was built without LibTorch (-Dtorch=disabled)";
  return nullptr;
#endif
}
}  // namespace

void* torch_module_handle(std::string& err) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_handle && g_error.empty()) {
    g_handle = load_locked(g_error);
  }
  if (!g_handle) err = g_error;
  return g_handle;
}

lua_CFunction torch_module_symbol(const char* symbol, std::string& err) {
  void* h = torch_module_handle(err);
  if (!h) return nullptr;
  void* fn = dlsym(h, symbol);
  if (!fn) err = std::string("no symbol '") + symbol + "' in the LibTorch module";
  return reinterpret_cast<lua_CFunction>(fn);
}

std::string torch_module_describe() {
  std::string err;
  void* h = torch_module_handle(err);
  if (!h) return "LibTorch: " + err + "\n";
  using describe_fn = int (*)(char*, size_t);
  auto fn = reinterpret_cast<describe_fn>(dlsym(h, "skyrun_torch_describe"));
  if (!fn) return "LibTorch: module has no skyrun_torch_describe\n";
  std::string buf(8192, '\0');
  int n = fn(buf.data(), buf.size());
  buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return buf;
}

}  // namespace sky
