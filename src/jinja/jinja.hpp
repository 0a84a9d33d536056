// skyrun's Jinja2: templates render as Python jinja2 renders them when HF transformers sets it up
// for chat templates (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loop controls,
// `{% generation %}` spans, its tojson, raise_exception, strftime_now). Values follow Python's
// semantics (str/int/float/bool/None/list/tuple/dict in insertion order, jinja2's Undefined),
// errors carry Python's messages. No Lua here: the binding is lua_jinja.cpp.
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sky::jinja {

class Value;
using List = std::vector<Value>;
struct Dict;
struct Object;
struct UndefinedInfo;

// A Python value as a template sees it. Strings, lists and dicts are shared and never mutated
// once built (the sandbox forbids it), so copies are cheap; namespaces are the one mutable kind.
class Value {
 public:
  enum class Kind : uint8_t { Undefined, None, Bool, Int, Float, String, List, Tuple, Dict, Object };

  Value();  // Undefined
  static Value none();
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value number(double d);
  static Value string(std::string s);
  static Value list(List items);
  static Value tuple(List items);
  static Value dict(Dict d);
  static Value object(std::shared_ptr<Object> o);
  static Value undefined(std::shared_ptr<UndefinedInfo> info);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::Undefined; }
  bool is_none() const { return kind_ == Kind::None; }
  bool is_bool() const { return kind_ == Kind::Bool; }
  bool is_int() const { return kind_ == Kind::Int; }
  bool is_float() const { return kind_ == Kind::Float; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_list() const { return kind_ == Kind::List; }
  bool is_tuple() const { return kind_ == Kind::Tuple; }
  bool is_sequence() const { return kind_ == Kind::List || kind_ == Kind::Tuple; }
  bool is_dict() const { return kind_ == Kind::Dict; }
  bool is_object() const { return kind_ == Kind::Object; }
  bool is_number() const { return kind_ == Kind::Bool || kind_ == Kind::Int || kind_ == Kind::Float; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return kind_ == Kind::Bool ? (b_ ? 1 : 0) : i_; }  // Bool or Int
  double as_double() const { return kind_ == Kind::Float ? d_ : static_cast<double>(as_int()); }
  const std::string& str() const;
  const List& items() const;
  const Dict& dict() const;
  Object& obj() const;
  std::shared_ptr<Object> obj_ptr() const;
  std::shared_ptr<UndefinedInfo> undefined_info() const;

 private:
  Kind kind_ = Kind::Undefined;
  bool b_ = false;
  int64_t i_ = 0;
  double d_ = 0;
  std::shared_ptr<void> p_;
};

// A Python dict: keys in insertion order; setting an existing key keeps its place.
struct Dict {
  std::vector<std::pair<Value, Value>> entries;
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(Value key, Value value);
  size_t size() const { return entries.size(); }
};

// Which Python exception a render error stands for (Python's class name is kept for messages
// and tests: TemplateError for raise_exception, TypeError, UndefinedError, SecurityError, ...).
class Error : public std::runtime_error {
 public:
  Error(std::string type, const std::string& message) : std::runtime_error(message), type_(std::move(type)) {}
  const std::string& type() const { return type_; }

 private:
  std::string type_;
};

// A template that jinja2 would refuse to compile: the message names the line and column
// (1-based), as "<what> (line L, column C)"; line() and column() give them too.
class SyntaxError : public Error {
 public:
  SyntaxError(const std::string& what, int line, int column);
  const std::string& what_only() const { return what_; }
  int line() const { return line_; }
  int column() const { return column_; }

 private:
  std::string what_;
  int line_, column_;
};

struct RenderOptions {
  // strftime_now's clock: the local time at this Unix time; unset means now.
  std::optional<std::time_t> now;
  // Record `{% generation %}` spans (transformers' AssistantTracker).
  bool track_generation = false;
};

struct RenderResult {
  std::string text;
  // [start, end) byte offsets into text of each `{% generation %}` block, as the tracker records
  // them (only once something has been output, and measured at the top level).
  std::vector<std::pair<size_t, size_t>> generation_spans;
};

struct Program;

class Template {
 public:
  // Parses and checks (unknown tags, filters and tests are errors here, as jinja2 raises them
  // at compile time). Throws SyntaxError.
  static std::shared_ptr<Template> parse(std::string_view source);
  ~Template();
  // vars is a Dict of the template's variables. Throws Error.
  RenderResult render(const Dict& vars, const RenderOptions& opts = {}) const;
  const std::string& source() const { return source_; }
  bool has_generation_block() const;

 private:
  Template();
  std::string source_;
  std::unique_ptr<Program> program_;
};

// ---- JSON --------------------------------------------------------------------------------------

// Python's json.loads: objects keep their key order, integers stay ints. Throws Error naming
// the offset of a syntax error.
Value json_parse(std::string_view text);
// Python's json.dumps(v, ensure_ascii=, indent=, separators=, sort_keys=). indent: nullopt for
// none, else the indent string (" " * n for an integer n). Throws Error("TypeError") for values
// JSON cannot hold ("Object of type Undefined is not JSON serializable").
struct JsonOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;
  std::optional<std::pair<std::string, std::string>> separators;
  bool sort_keys = false;
};
std::string json_dumps(const Value& v, const JsonOptions& opts);

// Python's str() and repr() of a value.
std::string py_str(const Value& v);
std::string py_repr(const Value& v);

// ---- chat templates ----------------------------------------------------------------------------

// transformers' render_jinja_template for one conversation: messages/tools/documents go in as
// the template's variables with add_generation_prompt and the extra variables; with
// continue_final_message the final message is left open (its text ends the render).
struct ChatInputs {
  Value messages;   // a list of message dicts
  Value tools;      // None or a list
  Value documents;  // None or a list
  bool add_generation_prompt = false;
  bool continue_final_message = false;
  Dict extra;  // special tokens and the caller's other keywords
};
RenderResult render_chat(const Template& t, const ChatInputs& in, const RenderOptions& opts);

// Byte offsets of text to code point offsets (Python's str indexes), in place.
void spans_to_code_points(std::string_view text, std::vector<std::pair<size_t, size_t>>& spans);

}  // namespace sky::jinja
