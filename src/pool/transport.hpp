// The byte stream between the driver and one worker process. The local provider implements it
// over pipes to a child process (local_transport.cpp); the SSH provider over a libssh exec
// channel (src/ssh). Frames, the handshake and the task protocol sit above it (connection.hpp)
// and know nothing of how the bytes travel. Keep this interface small and stable.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>

#include <lua.hpp>

namespace sky::pool {

// The peer is gone or the stream broke. what() says how, for users.
struct TransportError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Transport {
 public:
  virtual ~Transport() = default;

  // Writes what it can without blocking; returns the bytes accepted (0 when it would block).
  // Throws TransportError when the peer is gone.
  virtual size_t write_some(const void* data, size_t n) = 0;

  // Reads what is available without blocking: > 0 bytes read, 0 nothing available now,
  // -1 end of stream (the worker closed its side or died). Throws TransportError on errors.
  virtual ssize_t read_some(void* buf, size_t n) = 0;

  // A file descriptor that poll() reports readable when read_some may make progress (for SSH,
  // the session's socket, shared by channels). -1: none; the driver then calls read_some on
  // every turn of its loop.
  virtual int read_fd() const = 0;
  // The descriptor to poll for writability when write_some accepted less than asked; -1: none.
  virtual int write_fd() const = 0;
  // True when input is already buffered inside the transport (libssh reads ahead for all
  // channels of a session), so the driver must not block in poll() before reading it.
  virtual bool has_buffered_input() { return false; }

  // Closes the stream to the worker (it exits when its input ends). Idempotent.
  virtual void close() = 0;
  // Ends the worker now (SIGKILL locally; closing the channel and killing the remote process
  // over SSH). Idempotent.
  virtual void kill() = 0;
  // How the worker ended, once read_some returned -1: "killed by signal 9 (SIGKILL)",
  // "exited with status 3", plus anything it wrote to stderr before the protocol started. Waits
  // at most timeout_ms for the process to be reaped. Empty when unknown.
  virtual std::string exit_reason(int timeout_ms) = 0;

  // Names the worker for messages: "node 2 (local pid 4242)", "node 1 (ssh gpu1.example.com)".
  virtual std::string describe() const = 0;
};

// Wraps t into a Lua value usable by the pool (a skyrun.Connection userdata: frames, polling,
// kill, exit reason). Pushes 1. Providers written in C++ (src/ssh) call this from their Lua
// binding and return the value to their Lua provider (lua/sky/providers/<name>.lua).
void connection_push(lua_State* L, std::unique_ptr<Transport> t);

}  // namespace sky::pool
