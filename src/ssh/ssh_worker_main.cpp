// `skyrun ssh-worker`: how the SSH provider starts `skyrun worker` on a host. sshd does not stop
// a command without a terminal when its connection drops (the command only notices on its next
// write), so a busy worker would outlive an interrupted driver. This entry arms the parent-death
// signal first: the worker's parent is the sshd session process, which exits as soon as the
// connection is gone, and the worker is then killed with it. Then it is `skyrun worker`.
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>

#include "host/modules.hpp"

namespace sky::ssh {
namespace {

int ssh_worker_main(int argc, char** argv) {
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) return 1;  // the session ended before the signal was armed
  const Subcommand* worker = find_subcommand("worker");
  if (!worker) {
    fprintf(stderr, "skyrun ssh-worker: this skyrun has no `worker` subcommand\n");
    return 2;
  }
  static char name[] = "worker";
  argv[0] = name;
  return worker->main(argc, argv);
}

}  // namespace
}  // namespace sky::ssh

SKY_SUBCOMMAND("ssh-worker", sky::ssh::ssh_worker_main,
               "a worker behind an SSH channel (started on remote hosts by the ssh provider)");
