// One list of every native module linked into the binary. Each subsystem adds its line.
#include "host/modules.hpp"

extern "C" int luaopen_sky_core(lua_State* L);

namespace sky {

const NativeModule* native_modules() {
  static const NativeModule modules[] = {
      {"sky.core", luaopen_sky_core},
      {nullptr, nullptr},
  };
  return modules;
}

}  // namespace sky
