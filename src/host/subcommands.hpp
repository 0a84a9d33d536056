// Subcommands of the skyrun binary (`skyrun worker`, ...). Each subsystem adds its entry in
// subcommands.cpp.
#pragma once

namespace sky {

struct Subcommand {
  const char* name;
  int (*main)(int argc, char** argv);  // argv[0] is the subcommand's name
};

const Subcommand* find_subcommand(const char* name);

}  // namespace sky
