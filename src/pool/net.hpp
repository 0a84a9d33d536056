// Sockets shared by the transports that cross the network: the SSH sessions (src/ssh) and the
// workers that dial the driver (tcp_transport.hpp). Plain POSIX, no Lua.
#pragma once

#include <string>

namespace sky::pool {

// A TCP connection to host:port within timeout seconds, trying each address getaddrinfo gives.
// Returns the connected, blocking socket (TCP_NODELAY set); throws sky::Error with the reason
// (refused, unreachable, timed out); timed_out tells the last apart.
int tcp_connect(const std::string& host, int port, double timeout, bool& timed_out);

// Keepalive probes on an idle connection and a limit on unacknowledged data, so that a peer that
// disappears silently (power loss, a cut link) is noticed after about `seconds` (<= 0: never).
void set_dead_after(int fd, double seconds);

}  // namespace sky::pool
