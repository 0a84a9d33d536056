// Internals shared by the Jinja2 files: the syntax tree, objects with attributes (namespaces,
// loop, macros, functions), Undefined's details, Python's string rules and the error helpers.
// Nothing here is part of the public header.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "jinja/jinja.hpp"

namespace sky::jinja {

class Interp;

// ---- errors -----------------------------------------------------------------------------------

[[noreturn]] void raise(const char* type, const std::string& message);
[[noreturn]] void type_error(const std::string& message);

// ---- Python strings (UTF-8 in, code points where Python counts them) ----------------------------

uint32_t utf8_next(std::string_view s, size_t& i);  // decodes one code point (bad bytes: U+FFFD)
void utf8_append(std::string& out, uint32_t cp);
std::vector<uint32_t> utf8_decode(std::string_view s);
std::string utf8_encode(const std::vector<uint32_t>& cps);
size_t cp_length(std::string_view s);
bool is_ascii(std::string_view s);
bool py_isspace(uint32_t cp);  // str.isspace
std::string py_strip(std::string_view s, bool left, bool right, const std::string* chars = nullptr);
std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_capitalize(std::string_view s);
std::string py_title(std::string_view s);  // str.title
std::vector<std::string> py_splitlines(std::string_view s, bool keepends);
std::string py_repr_string(std::string_view s);
std::string py_float_repr(double d);
const char* py_type_name(const Value& v);  // 'str', 'int', 'NoneType', 'Undefined', ...

// ---- Undefined --------------------------------------------------------------------------------

// jinja2's Undefined: what was looked up where, so that using it raises jinja2's message.
struct UndefinedInfo {
  std::string hint;       // when set, the whole message
  bool has_obj = false;   // looked up on an object (else a plain name)
  std::string obj_repr;   // jinja2's object_type_repr of that object: "dict object", "None"
  Value name;             // the name, attribute or key
  std::string exc = "UndefinedError";  // SecurityError for the sandbox's refusals
  std::string message() const;
};
Value undefined_name(const std::string& name);
Value undefined_hint(const std::string& hint, const char* exc = "UndefinedError");
Value undefined_attr(const Value& obj, Value name);
[[noreturn]] void raise_undefined(const Value& undef);
std::string object_type_repr(const Value& v);

// ---- call arguments ---------------------------------------------------------------------------

struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // Python's binding of positional and keyword arguments to parameter names; raises TypeError as
  // Python does for an unknown, repeated or missing argument (the first `required` params have
  // no default). given[i] says whether params[i] was passed.
  struct Bound {
    std::vector<Value> v;
    std::vector<bool> given;
    const Value& get(size_t i, const Value& def) const { return given[i] ? v[i] : def; }
  };
  Bound bind(const char* fname, const std::vector<const char*>& params, size_t required) const;
};

// ---- objects ----------------------------------------------------------------------------------

struct Object {
  virtual ~Object() = default;
  virtual const char* type_name() const = 0;          // Python's type(x).__name__
  virtual std::string module() const { return "builtins"; }
  virtual bool get_attr(std::string_view name, Value& out) { return false; }
  virtual bool callable() const { return false; }
  virtual Value call(Interp& in, Args& args);
  virtual std::string repr() const;
  virtual bool is_namespace() const { return false; }
  // Iterators (generators) hand over what is left of them, once; others are not iterable.
  virtual bool iterate(List& out) { return false; }
};

// A Python iterator that jinja2's filters return (map, select, unique, reverse, items, ...):
// consumed by the first loop over it, no len(), always true.
struct Iterator : Object {
  std::string name;  // Python's type name: "generator", "list_reverseiterator"
  List items;
  size_t at = 0;
  Iterator(std::string n, List i) : name(std::move(n)), items(std::move(i)) {}
  const char* type_name() const override { return name.c_str(); }
  std::string repr() const override;
  bool iterate(List& out) override;
};
Value make_iterator(const char* type_name, List items);

// A built-in function or a bound method.
struct Function : Object {
  std::string name;
  std::function<Value(Interp&, Args&)> fn;
  Function(std::string n, std::function<Value(Interp&, Args&)> f) : name(std::move(n)), fn(std::move(f)) {}
  const char* type_name() const override { return "builtin_function_or_method"; }
  bool callable() const override { return true; }
  Value call(Interp& in, Args& args) override { return fn(in, args); }
  std::string repr() const override { return "<built-in function " + name + ">"; }
};
Value make_function(std::string name, std::function<Value(Interp&, Args&)> fn);

// jinja2.utils.Namespace: the one mutable object.
struct Namespace : Object {
  Dict attrs;
  const char* type_name() const override { return "Namespace"; }
  std::string module() const override { return "jinja2.utils"; }
  bool get_attr(std::string_view name, Value& out) override;
  bool is_namespace() const override { return true; }
  std::string repr() const override;
};

// ---- syntax tree --------------------------------------------------------------------------------

struct Expr;
using ExprP = std::unique_ptr<Expr>;

enum class ExprKind : uint8_t {
  Const, Name, List, Tuple, Dict, Getattr, Getitem, Slice, Call, Filter, Test, Neg, Pos, Not,
  Add, Sub, Mul, Div, FloorDiv, Mod, Pow, And, Or, Concat, Compare, CondExpr,
};

struct Expr {
  ExprKind kind;
  int line = 0, column = 0;
  Value value;                 // Const
  std::string name;            // Name, Getattr attribute, Filter/Test name
  std::vector<ExprP> items;    // List/Tuple/Concat elements; Dict keys and values alternating;
                               // Call/Filter/Test positional args; Slice start/stop/step (nullable)
  std::vector<std::pair<std::string, ExprP>> kwargs;  // Call/Filter/Test keyword args
  ExprP dyn_args, dyn_kwargs;  // *args, **kwargs
  ExprP a, b, c;               // operands: Getattr/Getitem/Filter/Test/Call target in a;
                               // Getitem key in b; CondExpr: a if b else c
  std::vector<std::pair<std::string, ExprP>> ops;  // Compare: ("eq"|"ne"|"lt"|"lteq"|"gt"|"gteq"|"in"|"notin", rhs)
  bool negated = false;        // Test with `is not`
  void* builtin = nullptr;     // Filter/Test: the resolved implementation
};

struct Stmt;
using StmtP = std::unique_ptr<Stmt>;
using Body = std::vector<StmtP>;

enum class StmtKind : uint8_t {
  Data, Output, If, For, Set, SetBlock, Macro, CallBlock, FilterBlock, With, Break, Continue, Generation,
};

// An assignment target: a name, a namespace attribute (ns.attr) or a tuple of targets.
struct Target {
  enum class Kind : uint8_t { Name, NsAttr, Tuple } kind = Kind::Name;
  std::string name, attr;
  std::vector<Target> items;
};

struct MacroDef {
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprP> defaults;  // for the last params
  Body body;
  bool uses_varargs = false, uses_kwargs = false, uses_caller = false;
};

struct Stmt {
  StmtKind kind;
  int line = 0;
  std::string text;                              // Data
  ExprP expr;                                    // Output / Set value / For iterable / With...
  std::vector<std::pair<ExprP, Body>> branches;  // If: (test or null for else, body)
  Target target;                                 // For / Set / SetBlock
  ExprP cond;                                    // For's `if` filter
  Body body, else_body;
  bool recursive = false;
  std::vector<ExprP> filters;                    // SetBlock / FilterBlock: Filter exprs with a=null
  std::shared_ptr<MacroDef> macro;               // Macro, CallBlock's caller
  std::vector<std::pair<Target, ExprP>> with_assigns;
};

struct Program {
  Body body;
  bool has_generation = false;
};

// Builds the tree; resolves filters and tests (unknown names are SyntaxErrors).
std::unique_ptr<Program> parse_program(std::string_view source);

// ---- builtins (builtins.cpp) ----------------------------------------------------------------------

using FilterFn = Value (*)(Interp&, const Value&, Args&);
using TestFn = bool (*)(Interp&, const Value&, Args&);
FilterFn find_filter(std::string_view name);
TestFn find_test(std::string_view name);
bool is_known_unsupported_filter(std::string_view name);
bool find_global(std::string_view name, Value& out);
// Attribute lookup as the sandbox does it: methods of str/list/dict (bound), keys of dicts,
// attributes of objects; unsafe methods give an Undefined that raises SecurityError.
Value get_attr(const Value& obj, const std::string& name);
// obj[key] as jinja2's getitem: item first, then attribute, else Undefined.
Value get_item(const Value& obj, const Value& key);

// ---- values (value.cpp) ---------------------------------------------------------------------------

bool truthy(const Value& v);
bool py_eq(const Value& a, const Value& b);
int py_compare(const Value& a, const Value& b, const char* op);  // <0, 0, >0; TypeError like Python
Value binary_op(ExprKind op, const Value& a, const Value& b);
bool py_contains(const Value& container, const Value& item);
int64_t py_len(const Value& v);  // TypeError "object of type 'int' has no len()"
// Python's iter(v) materialized: list/tuple items, dict keys, string characters; Undefined is
// empty; anything else raises "'int' object is not iterable".
List iterate(const Value& v);
Value slice_value(const Value& v, const Value& start, const Value& stop, const Value& step);
std::string py_percent_format(const std::string& fmt, const Value& args);

// ---- the interpreter --------------------------------------------------------------------------------

struct Scope {
  Dict vars;
  std::shared_ptr<Scope> parent;
};

class Interp {
 public:
  Interp(const Program& prog, const Dict& vars, const RenderOptions& opts);
  RenderResult run();

  Value eval(const Expr& e);
  Value call(const Value& fn, Args& args);
  Value call_macro(const std::shared_ptr<MacroDef>& m, const std::shared_ptr<Scope>& closure, Args& args,
                   const Value& caller);
  Value apply_filter(const std::string& name, const Value& v, Args& args);
  bool apply_test(const std::string& name, const Value& v, Args& args);
  std::time_t now() const;

 private:
  friend struct MacroObject;
  enum class Flow { Normal, Break, Continue };
  Flow exec(const Body& body);
  Flow exec_stmt(const Stmt& s);
  Flow exec_for(const Stmt& s);
  void assign(const Target& t, const Value& v);
  Value lookup(const std::string& name);
  std::string capture(const Body& body);
  void write(std::string_view s);
  Args eval_args(const Expr& e);

  const Program& prog_;
  const Dict& vars_;
  RenderOptions opts_;
  std::shared_ptr<Scope> scope_;
  std::vector<std::string*> sinks_;  // capture buffers; empty: the top-level output
  std::string out_;
  size_t top_writes_ = 0;
  std::vector<std::pair<size_t, size_t>> spans_;
  int depth_ = 0;
};

}  // namespace sky::jinja
