// The binding layer: the one place where native objects meet Lua.
// Exception-safe C functions, argument checks with Lua-style messages, userdata classes
// declared once, and an option-table reader. Nothing here knows any subsystem.
#pragma once

#include <lua.hpp>

#include <cassert>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sky {

// ---- stack discipline ------------------------------------------------------------------------

// Asserts (debug builds) that the stack top moved by exactly `delta` when the scope ends
// normally. A scope left by a Lua error is not checked.
class StackGuard {
 public:
  StackGuard(lua_State* L, int delta = 0) : L_(L), top_(lua_gettop(L)), delta_(delta) {}
  ~StackGuard() {
#ifndef NDEBUG
    if (std::uncaught_exceptions() == 0) assert(lua_gettop(L_) == top_ + delta_);
#endif
  }
  StackGuard(const StackGuard&) = delete;
  StackGuard& operator=(const StackGuard&) = delete;

 private:
  lua_State* L_;
  int top_;
  int delta_;
};

// ---- exceptions never cross into Lua ------------------------------------------------------------

// Raises a Lua error whose message is `msg` verbatim (never a format string). Does not return.
[[noreturn]] void raise_error(lua_State* L, std::string_view msg);

namespace detail {
int report_exception(lua_State* L, const char* what);
}

// Runs F; a std::exception (c10::Error included) thrown inside becomes a Lua error carrying its
// message. Lua errors (LuaJIT unwinds with foreign exceptions on x64) pass through untouched.
template <int (*F)(lua_State*)>
int safe(lua_State* L) {
  char msg[2048];
  msg[0] = '\0';
  try {
    return F(L);
  } catch (const std::exception& e) {
    std::string_view w = e.what();
    // LibTorch's c10::Error appends "Exception raised from <function> at <file>:<line>" and a C++
    // backtrace: for Lua users the message alone.
    if (size_t cut = w.find("\nException raised from "); cut != std::string_view::npos) w = w.substr(0, cut);
    size_t n = w.size() < sizeof(msg) - 1 ? w.size() : sizeof(msg) - 1;
    w.copy(msg, n);
    msg[n] = '\0';
  }
  return detail::report_exception(L, msg);
}

// An error raised by native code for the caller: carries a message meant for users.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- arguments ----------------------------------------------------------------------------------

// Lua-style type name of the value at idx ("number", "string", "skyrun.Tokenizer", ...).
const char* type_name_at(lua_State* L, int idx);

// "bad argument #n to 'fname' (expected expected, got <type>)" style errors.
[[noreturn]] void arg_type_error(lua_State* L, int idx, const char* expected);

int64_t check_int64(lua_State* L, int idx);                // number with integral value, or int64 cdata
std::string_view check_string_view(lua_State* L, int idx);  // a string (numbers are not coerced)
bool opt_boolean(lua_State* L, int idx, bool def);
void check_table(lua_State* L, int idx);
void check_function(lua_State* L, int idx);

// ---- userdata classes, declared once ---------------------------------------------------------------

struct Method {
  const char* name;
  lua_CFunction fn;
};

struct Property {
  const char* name;
  lua_CFunction get;  // pushes the value; self at 1
  lua_CFunction set;  // self at 1, value at 3 (as __newindex gets it); may be nullptr
};

// A bound class. Register once (class_register), then push/check handles of it.
struct ClassSpec {
  const char* metatable;   // prefixed, e.g. "skyrun.Tokenizer"
  const char* type_name;   // shown to users, e.g. "Tokenizer"
  std::vector<Method> methods;
  std::vector<Property> properties;
  lua_CFunction tostring = nullptr;  // nullptr: "Tokenizer: 0x..."
  lua_CFunction call = nullptr;      // __call, if objects are callable
  lua_CFunction len = nullptr;       // __len
  lua_CFunction index_fallback = nullptr;  // __index for keys that are neither method nor property
};

// The userdata body: one owning reference. __gc drops exactly this one.
struct Handle {
  std::shared_ptr<void> ptr;
  const ClassSpec* spec;
};

// Creates the metatable for spec. Pushes 0. Idempotent.
void class_register(lua_State* L, const ClassSpec& spec);

// Pushes a new handle owning one reference to obj. Pushes 1.
void class_push_raw(lua_State* L, const ClassSpec& spec, std::shared_ptr<void> obj);

template <class T>
void class_push(lua_State* L, const ClassSpec& spec, std::shared_ptr<T> obj) {
  class_push_raw(L, spec, std::static_pointer_cast<void>(std::move(obj)));
}

// The handle at idx when it is of class spec and still open; otherwise a Lua argument error.
Handle& class_check_handle(lua_State* L, int idx, const ClassSpec& spec);
Handle* class_test_handle(lua_State* L, int idx, const ClassSpec& spec);  // nullptr if not of spec

template <class T>
T& class_check(lua_State* L, int idx, const ClassSpec& spec) {
  return *static_cast<T*>(class_check_handle(L, idx, spec).ptr.get());
}

template <class T>
std::shared_ptr<T> class_check_shared(lua_State* L, int idx, const ClassSpec& spec) {
  return std::static_pointer_cast<T>(class_check_handle(L, idx, spec).ptr);
}

// Drops the handle's reference now; later uses raise "<type> is closed".
void class_close(lua_State* L, int idx, const ClassSpec& spec);

// Number of live handles of every class (for leak checks in tests).
int64_t class_live_handles();

// ---- option tables --------------------------------------------------------------------------------

enum class OptType { Any, Boolean, Number, Integer, String, Table, Function, StringOrTable, NumberOrString };

struct OptSpec {
  const char* name;
  OptType type;
};

const char* opt_type_name(OptType t);
bool opt_type_matches(lua_State* L, int idx, OptType t);

// The one message for an option nobody takes, Options' and sky.core.check_options':
//   unknown option 'num_epochs' to 'TrainingArguments' (did you mean 'num_train_epochs'?)
std::string unknown_option_message(std::string_view key, std::string_view where, const std::vector<std::string>& names);

// Closest candidate to `name` by the ratio 2*LCS/(len(a)+len(b)) >= 0.6, like Python's difflib.
// Empty when nothing is close.
std::string suggest_closest(std::string_view name, const std::vector<std::string>& candidates);

// Reads an option table at idx (nil or none means no options). Construction validates every key:
//   unknown option 'num_epochs' to 'TrainingArguments' (did you mean 'num_train_epochs'?)
//   option 'learning_rate' to 'TrainingArguments' must be a number (got string)
// raised as Lua errors. Getters return the default when the key is absent or nil.
class Options {
 public:
  Options(lua_State* L, int idx, const char* where, std::initializer_list<OptSpec> spec);

  bool has(const char* key) const;
  bool boolean(const char* key, bool def) const;
  double number(const char* key, double def) const;
  int64_t integer(const char* key, int64_t def) const;
  std::string string(const char* key, const std::string& def) const;
  // Pushes the raw value (nil when absent). Pushes 1.
  void push(const char* key) const;

 private:
  lua_State* L_;
  int idx_;  // absolute index, 0 when no table was given
  const char* where_;
};

}  // namespace sky
