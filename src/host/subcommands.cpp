// The table of subcommands.
#include "host/subcommands.hpp"

#include <cstring>

namespace sky {

const Subcommand* find_subcommand(const char* name) {
  static const Subcommand subcommands[] = {
      {nullptr, nullptr},
  };
  for (const Subcommand* s = subcommands; s->name; ++s)
    if (strcmp(s->name, name) == 0) return s;
  return nullptr;
}

}  // namespace sky
