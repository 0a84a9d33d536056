// Addresses for rendezvous, without LibTorch (usable by the driver before any torch is loaded).
#pragma once

#include <string>

namespace sky::dist {

// A TCP port that was free on this host a moment ago (bound to port 0, then closed).
// Throws std::runtime_error.
int free_port();

// The local address this host uses to reach `host` (the source address of a connected UDP
// socket; nothing is sent): the address peers reach us on when they can reach `host`.
// Throws std::runtime_error naming `host` when it does not resolve or has no route.
std::string local_address_towards(const std::string& host);

}  // namespace sky::dist
