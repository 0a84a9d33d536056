// The SSH provider's transport: `skyrun worker` on an exec channel of a host's one libssh
// session, behind the pool's Transport interface (src/pool/transport.hpp).
#pragma once

#include <memory>
#include <string>

#include "pool/transport.hpp"
#include "ssh/session.hpp"

namespace sky::ssh {

// The remote shell command that starts a worker: optional `cd workdir`, the pid announcement on
// stderr, then `exec <skyrun_path> ssh-worker`
// (`skyrun worker` that dies with its sshd session). Nothing secret ever goes on this line.
std::string worker_command(const std::string& skyrun_path, const std::string& workdir);

// Opens an exec channel running `command` and returns it as a transport named
// "<label> (ssh user@host:port)". The session turns non-blocking (driven by the pool's loop);
// Session::run still works on it afterwards (it switches to blocking for its duration).
std::unique_ptr<pool::Transport> start_worker(const std::shared_ptr<Session>& session, const std::string& command,
                                              const std::string& label);

}  // namespace sky::ssh
