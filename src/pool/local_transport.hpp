// The local provider's transport: a `skyrun worker` child process on this machine, spoken to
// over its stdin/stdout pipes. The child leads its own process group (a Ctrl-C on the terminal
// reaches the driver, which then stops the workers); stopping or reaping a worker ends its whole
// group, and the worker ends its group itself when the driver dies (src/pool/worker_main.cpp).
#pragma once

#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "pool/transport.hpp"

namespace sky::pool {

struct LocalSpawn {
  std::vector<std::string> argv;  // empty: this binary's `skyrun worker`
  std::string cwd;                // empty: the driver's
  std::string label;              // "node 1", for describe()
  bool merge_stderr = false;      // the child's stderr into the same pipe as its stdout
  int stop_signal = SIGKILL;      // what kill(), a forced stop and the driver's death send it
};

// Starts the process. Throws TransportError naming the command when it cannot start.
std::unique_ptr<Transport> local_spawn(const LocalSpawn& spec);

// This executable's path (/proc/self/exe resolved).
std::string self_exe();

}  // namespace sky::pool
