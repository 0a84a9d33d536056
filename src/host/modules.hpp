// Native modules and subcommands register themselves from their own files:
//   SKY_NATIVE_MODULE("tokenizers.core", luaopen_tokenizers_core);
//   SKY_SUBCOMMAND("worker", worker_main, "serve tasks over stdin/stdout (started by pools)");
// The core library is linked whole, so every registration in it runs before main().
#pragma once

#include <vector>

#include "host/runtime.hpp"

namespace sky {

struct Subcommand {
  const char* name;
  int (*main)(int argc, char** argv);  // argv[0] is the subcommand's name
  const char* help;                    // one line for `skyrun --help`
};

std::vector<NativeModule>& native_modules();
std::vector<Subcommand>& subcommands();
const Subcommand* find_subcommand(const char* name);

struct NativeModuleRegistration {
  NativeModuleRegistration(const char* name, lua_CFunction open) { native_modules().push_back({name, open}); }
};
struct SubcommandRegistration {
  SubcommandRegistration(const char* name, int (*main)(int, char**), const char* help) {
    subcommands().push_back({name, main, help});
  }
};

}  // namespace sky

#define SKY_CONCAT_INNER(a, b) a##b
#define SKY_CONCAT(a, b) SKY_CONCAT_INNER(a, b)
#define SKY_NATIVE_MODULE(name, open) \
  static ::sky::NativeModuleRegistration SKY_CONCAT(sky_native_module_, __LINE__)(name, open)
#define SKY_SUBCOMMAND(name, main, help) \
  static ::sky::SubcommandRegistration SKY_CONCAT(sky_subcommand_, __LINE__)(name, main, help)
