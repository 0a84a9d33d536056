// The registries behind SKY_NATIVE_MODULE and SKY_SUBCOMMAND.
#include "host/modules.hpp"

#include <cstring>

namespace sky {

std::vector<NativeModule>& native_modules() {
  static std::vector<NativeModule> modules;
  return modules;
}

std::vector<Subcommand>& subcommands() {
  static std::vector<Subcommand> list;
  return list;
}

const Subcommand* find_subcommand(const char* name) {
  for (const Subcommand& s : subcommands())
    if (strcmp(s.name, name) == 0) return &s;
  return nullptr;
}

}  // namespace sky
