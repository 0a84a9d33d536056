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
  // Off: data only. Functions, module references, reducers and userdata whose codec is not
  // marked untrusted_ok are refused with their path, as the receiving side would refuse them
  // (a worker answering a pool that takes data only from workers).
  bool allow_code = true;
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
  // Off: functions, module references, reducers and userdata whose codec is not marked
  // untrusted_ok are refused (for bytes from an untrusted source: LuaJIT does not verify
  // bytecode, and a codec may read files). Nothing but plain data is rebuilt; no Lua code runs
  // while decoding. The driver decodes every frame from a worker this way (unless the pool opts
  // in to code in results), and so does the fuzz target.
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
  // The codec's decode only rebuilds data from the bytes (no files read, no code run, bounded
  // work), so it may run on bytes from an untrusted peer.
  bool untrusted_ok = false;
};
void register_userdata_codec(const std::string& metatable_name, UserdataCodec codec);

// ---- frames: [u32 little-endian length of kind+payload][u8 kind][payload] ----------------------

inline constexpr size_t kFrameHeader = 5;

void frame_append(std::string& out, uint8_t kind, std::string_view payload);

// Parses the frame at the start of buf. Returns the bytes it spans, or 0 when buf holds only part
// of it. Throws WireError for an impossible length (0 or above kMaxFrame).
size_t frame_parse(std::string_view buf, uint8_t& kind, std::string_view& payload);

// ---- the worker protocol's frame kinds ------------------------------------------------------------
//   worker -> driver: HELLO (text: versions), READY, FAIL, RESULT, BATCH_RESULT, STDOUT, STDERR, BYE,
//                     CALL (a request to the driver's collections, sky.collections)
//   driver -> worker: SETUP (env, node info, plugins, secrets), TASK, MAP_FN, BATCH, MAP_END, SHUTDOWN,
//                     REPLY (the answer to a CALL)
// TASK, RESULT, CALL and REPLY payloads are "<id>:" then a value; BATCH and BATCH_RESULT
// "<map id>:<first item>:" then a value, so a peer that cannot decode the value can still answer.
enum FrameKind : uint8_t {
  FRAME_HELLO = 1, FRAME_SETUP = 2, FRAME_READY = 3, FRAME_TASK = 4, FRAME_RESULT = 5, FRAME_MAP_FN = 6,
  FRAME_BATCH = 7, FRAME_BATCH_RESULT = 8, FRAME_STDOUT = 9, FRAME_STDERR = 10, FRAME_SHUTDOWN = 11,
  FRAME_BYE = 12, FRAME_FAIL = 13, FRAME_MAP_END = 14, FRAME_CALL = 15, FRAME_REPLY = 16,
};

// A frame a worker sent, its header checked. body is the rest of the payload (a value for READY,
// RESULT and BATCH_RESULT, text or bytes for the others).
struct WorkerFrame {
  uint8_t kind = 0;
  uint64_t id = 0;    // RESULT: the task id; BATCH_RESULT: the map id; CALL: the request id
  uint64_t base = 0;  // BATCH_RESULT: the first item's index
  std::string_view body;
};

// Checks a frame from a worker before the driver acts on it: its kind is one a worker sends, and
// the numeric header of RESULT, BATCH_RESULT and CALL is well-formed. Throws WireError saying what is
// wrong ("a RESULT frame without its task id"). Values in the body are not decoded here.
WorkerFrame worker_frame_parse(uint8_t kind, std::string_view payload);

// The frame kind's name ("RESULT"), or "kind <n>" for one that does not exist.
std::string frame_kind_name(uint8_t kind);

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
