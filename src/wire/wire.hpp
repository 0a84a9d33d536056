// wire: Lua values as bytes and back, and the frames and handshake of the worker protocol.
// Usable from any subsystem (no LibTorch, no pool): encode a value on one lua_State, decode it on
// another (another thread's state, another process). Nothing here does I/O.
#pragma once

#include <lua.hpp>

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>

namespace sky::wire {

// Bumped whenever the value encoding or the frame layout changes.
inline constexpr uint32_t kWireVersion = 1;
// Frames larger than this are refused on both ends (a corrupt length must not allocate 4 GiB).
inline constexpr uint32_t kMaxFrame = 1u << 30;

// A value that cannot travel (with its path), or bytes that are not a valid encoding.
struct WireError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- values --------------------------------------------------------------------------------------
//
// What travels: nil, booleans, numbers bit-exact (-0.0, inf, NaN), int64_t/uint64_t cdata, strings
// with any bytes, tables (shared references and cycles kept, holes kept, metatables by value),
// Lua functions as bytecode with debug info plus their upvalues (shared upvalues stay shared) and
// the globals they read that the receiver lacks (the sender's own global functions and tables),
// C functions that are fields of a loaded module (by name), values that are loaded modules (by
// name; a module loaded from a file also carries its source, for a worker that cannot find it),
// userdata whose metatable has a registered codec. Anything else is refused with its path:
//   cannot send argument #1 → upvalue 'db' → field 'conn': userdata (FILE*: open file)

struct EncodeOptions {
  // Names the root value in error paths: "argument #1", "task function", "value".
  std::string root = "value";
  // Values found in package.loaded travel by name (off: by value, like any table).
  bool modules_by_name = true;
  // Names of modules whose source was already shipped on this connection (updated as sources
  // are added). nullptr: ship every file module's source.
  std::unordered_set<std::string>* modules_sent = nullptr;
};

// Appends the encoding of the value at idx to out. Throws WireError when part of it cannot
// travel (out is then unspecified). Leaves the stack as it was.
void encode(lua_State* L, int idx, std::string& out, const EncodeOptions& opts = {});
std::string encode(lua_State* L, int idx, const EncodeOptions& opts = {});

struct DecodeOptions {
  // Lua functions get this table (an absolute stack index) as their environment; 0: the
  // decoding state's globals.
  int env_index = 0;
  // Off: functions, module references and reducers are refused (for bytes from an untrusted
  // source: LuaJIT does not verify bytecode). The fuzz target decodes with these off.
  bool allow_code = true;
  int max_depth = 200;
};

// Decodes one value and pushes it (pushes 1). Throws WireError on malformed, truncated or
// trailing bytes, leaving the stack as it was.
void decode(lua_State* L, std::string_view bytes, const DecodeOptions& opts = {});

// ---- userdata codecs, by metatable name (the name given to luaL_newmetatable) -------------------
//
// encode gets the userdata at idx and returns bytes (may throw WireError, e.g. a closed
// handle); decode pushes the rebuilt value from those bytes (pushes 1). Both ends run the same
// binary, so a codec registered at startup exists on both. Lua code registers reducers instead
// (sky.wire.register(name, fn): fn(u) returns a sendable function and arguments; the receiver
// calls it), e.g. a tokenizer travelling as its file path.
struct UserdataCodec {
  std::function<std::string(lua_State*, int)> encode;
  std::function<void(lua_State*, std::string_view)> decode;
  std::string description;  // shown in messages, e.g. "tokenizer"
};
void register_userdata_codec(const std::string& metatable_name, UserdataCodec codec);

// ---- frames: [u32 little-endian length of kind+payload][u8 kind][payload] ----------------------

inline constexpr size_t kFrameHeader = 5;

void frame_append(std::string& out, uint8_t kind, std::string_view payload);

// Parses the frame at the start of buf. Returns the bytes it spans, or 0 when buf holds only part
// of it. Throws WireError for an impossible length (0 or above kMaxFrame).
size_t frame_parse(std::string_view buf, uint8_t& kind, std::string_view& payload);

// ---- handshake ------------------------------------------------------------------------------------

struct Versions {
  uint32_t wire = kWireVersion;
  std::string skyrun;    // "0.1.0"
  std::string luajit;    // "LuaJIT 2.1.0-beta3"
  std::string bytecode;  // the LuaJIT bytecode header this build writes, hex ("1b4c4a0209")
};

// This process's versions (skyrun, LuaJIT, bytecode format).
const Versions& local_versions();
// Text form sent as the first frame: "skyrun-wire 1\nskyrun 0.1.0\nluajit ...\nbytecode ...\n".
std::string hello_encode(const Versions& v);
// Throws WireError when text is not a hello (naming what it saw).
Versions hello_decode(std::string_view text);
// Empty when the two can talk; otherwise a message naming both sides' versions:
//   skyrun version mismatch: driver runs skyrun 0.1.0 (LuaJIT 2.1.0-beta3, bytecode 1b4c4a0209),
//   worker runs skyrun 0.0.9 (...)
std::string versions_mismatch(const Versions& driver, const Versions& worker);

}  // namespace sky::wire
