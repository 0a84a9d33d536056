// `skyrun hold HOST:PORT`: a keeper. It connects to the driver and stays until that connection
// ends (the driver closed the pool, died, or its host went silent for --dead-after seconds). The
// Slurm provider's batch script is this command, so the job that holds the nodes ends with the
// driver even when nobody runs scancel. It receives nothing and runs nothing.
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "host/modules.hpp"
#include "pool/tcp_transport.hpp"

namespace sky::pool {
namespace {

int hold_main(int argc, char** argv) {
  const char* target = nullptr;
  std::string label;
  double dead_after = 4;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--label") == 0 && i + 1 < argc) {
      label = argv[++i];
    } else if (strcmp(argv[i], "--dead-after") == 0 && i + 1 < argc && atof(argv[i + 1]) > 0) {
      dead_after = atof(argv[++i]);
    } else if (!target && argv[i][0] != '-') {
      target = argv[i];
    } else {
      target = nullptr;
      break;
    }
  }
  if (!target) {
    fprintf(stderr,
            "usage: skyrun hold HOST:PORT [--label LABEL] [--dead-after SECONDS]\n"
            "Keeps a connection to a pool's driver and exits when it ends (LABEL: $SLURM_JOB_ID).\n");
    return 2;
  }
  if (label.empty()) {
    const char* job = getenv("SLURM_JOB_ID");
    label = job && *job ? job : "-";
  }
  signal(SIGPIPE, SIG_IGN);
  int fd;
  try {
    std::string host;
    int port = 0;
    split_host_port(target, host, port);
    fd = dial_hold(host, port, label, dead_after, 30);
  } catch (const std::exception& e) {
    fprintf(stderr, "skyrun hold: %s\n", e.what());
    return 3;
  }
  char buf[256];
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;  // the driver closed, died, or went silent
  }
  close(fd);
  return 0;
}

}  // namespace
}  // namespace sky::pool

SKY_SUBCOMMAND("hold", sky::pool::hold_main,
               "keep a connection to a pool's driver and exit when it ends (a Slurm job's keeper)");
