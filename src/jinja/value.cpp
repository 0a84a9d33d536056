// Values with Python's rules: str()/repr(), truth, ==, ordering, arithmetic, `in`, len, iteration,
// slicing, and the string helpers (code points, str.isspace, strip, case, splitlines, repr).
// Error messages are Python's, word for word, since templates' failures must read the same.
#include <utf8proc.h>

#include <charconv>
#include <cmath>
#include <cstring>

#include "jinja/internal.hpp"

namespace sky::jinja {

// ---- Value ----------------------------------------------------------------------------------------

namespace {
const std::string kEmpty;
const List kEmptyList;
const Dict kEmptyDict;
}  // namespace

Value::Value() = default;
Value Value::none() { Value v; v.kind_ = Kind::None; return v; }
Value Value::boolean(bool b) { Value v; v.kind_ = Kind::Bool; v.b_ = b; return v; }
Value Value::integer(int64_t i) { Value v; v.kind_ = Kind::Int; v.i_ = i; return v; }
Value Value::number(double d) { Value v; v.kind_ = Kind::Float; v.d_ = d; return v; }
Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::String;
  v.p_ = std::make_shared<std::string>(std::move(s));
  return v;
}
Value Value::list(List items) {
  Value v;
  v.kind_ = Kind::List;
  v.p_ = std::make_shared<List>(std::move(items));
  return v;
}
Value Value::tuple(List items) {
  Value v = list(std::move(items));
  v.kind_ = Kind::Tuple;
  return v;
}
Value Value::dict(Dict d) {
  Value v;
  v.kind_ = Kind::Dict;
  v.p_ = std::make_shared<Dict>(std::move(d));
  return v;
}
Value Value::object(std::shared_ptr<Object> o) {
  Value v;
  v.kind_ = Kind::Object;
  v.p_ = std::move(o);
  return v;
}
Value Value::undefined(std::shared_ptr<UndefinedInfo> info) {
  Value v;
  v.p_ = std::move(info);
  return v;
}
const std::string& Value::str() const {
  return kind_ == Kind::String ? *static_cast<const std::string*>(p_.get()) : kEmpty;
}
const List& Value::items() const {
  return is_sequence() ? *static_cast<const List*>(p_.get()) : kEmptyList;
}
const Dict& Value::dict() const { return kind_ == Kind::Dict ? *static_cast<const Dict*>(p_.get()) : kEmptyDict; }
Object& Value::obj() const { return *static_cast<Object*>(p_.get()); }
std::shared_ptr<Object> Value::obj_ptr() const { return std::static_pointer_cast<Object>(p_); }
std::shared_ptr<UndefinedInfo> Value::undefined_info() const { return std::static_pointer_cast<UndefinedInfo>(p_); }

const Value* Dict::find(const Value& key) const {
  for (const auto& [k, v] : entries)
    if (py_eq(k, key)) return &v;
  return nullptr;
}
const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k.is_string() && k.str() == key) return &v;
  return nullptr;
}
void Dict::set(Value key, Value value) {
  for (auto& [k, v] : entries)
    if (py_eq(k, key)) { v = std::move(value); return; }
  entries.emplace_back(std::move(key), std::move(value));
}

SyntaxError::SyntaxError(const std::string& what, int line, int column)
    : Error("TemplateSyntaxError", what + " (line " + std::to_string(line) + ", column " + std::to_string(column) + ")"),
      what_(what), line_(line), column_(column) {}

void raise(const char* type, const std::string& message) { throw Error(type, message); }
void type_error(const std::string& message) { throw Error("TypeError", message); }

// ---- UTF-8 and Python's string rules -----------------------------------------------------------------

uint32_t utf8_next(std::string_view s, size_t& i) {
  utf8proc_int32_t cp;
  utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                        static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
  if (n <= 0) {
    i++;
    return 0xFFFD;
  }
  i += static_cast<size_t>(n);
  return static_cast<uint32_t>(cp);
}

void utf8_append(std::string& out, uint32_t cp) {
  utf8proc_uint8_t buf[4];
  utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
  out.append(reinterpret_cast<char*>(buf), static_cast<size_t>(n));
}

std::vector<uint32_t> utf8_decode(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out.push_back(utf8_next(s, i));
  return out;
}

std::string utf8_encode(const std::vector<uint32_t>& cps) {
  std::string out;
  out.reserve(cps.size());
  for (uint32_t c : cps) utf8_append(out, c);
  return out;
}

bool is_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

size_t cp_length(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) n++;
  return n;
}

bool py_isspace(uint32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string py_strip(std::string_view s, bool left, bool right, const std::string* chars) {
  std::vector<uint32_t> set;
  if (chars) set = utf8_decode(*chars);
  auto strip_it = [&](uint32_t c) {
    if (!chars) return py_isspace(c);
    for (uint32_t x : set)
      if (x == c) return true;
    return false;
  };
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e) {
      size_t i = b;
      uint32_t c = utf8_next(s, i);
      if (!strip_it(c)) break;
      b = i;
    }
  }
  if (right) {
    while (e > b) {
      size_t start = e - 1;
      while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) start--;
      size_t i = start;
      uint32_t c = utf8_next(s, i);
      if (!strip_it(c)) break;
      e = start;
    }
  }
  return std::string(s.substr(b, e - b));
}

static uint32_t cp_upper(uint32_t c) { return static_cast<uint32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c))); }
static uint32_t cp_lower(uint32_t c) { return static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))); }
static uint32_t cp_title(uint32_t c) { return static_cast<uint32_t>(utf8proc_totitle(static_cast<utf8proc_int32_t>(c))); }
static bool cp_cased(uint32_t c) { return cp_upper(c) != c || cp_lower(c) != c || cp_title(c) != c; }

static std::string map_code_points(std::string_view s, uint32_t (*f)(uint32_t)) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) utf8_append(out, f(utf8_next(s, i)));
  return out;
}

std::string py_upper(std::string_view s) { return map_code_points(s, cp_upper); }
std::string py_lower(std::string_view s) { return map_code_points(s, cp_lower); }

std::string py_capitalize(std::string_view s) {
  std::string out;
  bool first = true;
  for (size_t i = 0; i < s.size();) {
    uint32_t c = utf8_next(s, i);
    utf8_append(out, first ? cp_title(c) : cp_lower(c));
    first = false;
  }
  return out;
}

std::string py_title(std::string_view s) {
  std::string out;
  bool prev_cased = false;
  for (size_t i = 0; i < s.size();) {
    uint32_t c = utf8_next(s, i);
    utf8_append(out, prev_cased ? cp_lower(c) : cp_title(c));
    prev_cased = cp_cased(c);
  }
  return out;
}

std::vector<std::string> py_splitlines(std::string_view s, bool keepends) {
  std::vector<std::string> out;
  size_t start = 0, i = 0;
  while (i < s.size()) {
    size_t at = i;
    uint32_t c = utf8_next(s, i);
    bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E || c == 0x85 ||
               c == 0x2028 || c == 0x2029;
    if (!brk) continue;
    if (c == '\r' && i < s.size() && s[i] == '\n') i++;
    out.emplace_back(s.substr(start, (keepends ? i : at) - start));
    start = i;
  }
  if (start < s.size()) out.emplace_back(s.substr(start));
  return out;
}

static bool py_isprintable(uint32_t c) {
  if (c == ' ') return true;
  if (c < 0x20 || c == 0x7F) return false;
  if (c < 0x7F) return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS: case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS:
      return false;
    default:
      return true;
  }
}

std::string py_repr_string(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos, has_double = s.find('"') != std::string_view::npos;
  char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  for (size_t i = 0; i < s.size();) {
    uint32_t c = utf8_next(s, i);
    if (c == static_cast<uint32_t>(q) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (!py_isprintable(c)) {
      char buf[16];
      if (c < 0x100) snprintf(buf, sizeof buf, "\\x%02x", c);
      else if (c < 0x10000) snprintf(buf, sizeof buf, "\\u%04x", c);
      else snprintf(buf, sizeof buf, "\\U%08x", c);
      out += buf;
    } else {
      utf8_append(out, c);
    }
  }
  out += q;
  return out;
}

std::string py_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);  // [-]d[.ddd]e[+-]XX, the shortest digits that round-trip
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t epos = sci.find('e');
  int exp = std::stoi(sci.substr(epos + 1));
  std::string digits;
  for (size_t i = 0; i < epos; i++)
    if (sci[i] != '.') digits += sci[i];
  std::string out = neg ? "-" : "";
  if (exp < -4 || exp >= 16) {
    out += digits[0];
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += eb;
  } else if (exp < 0) {
    out += "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
  } else {
    size_t int_len = static_cast<size_t>(exp) + 1;
    if (digits.size() <= int_len) {
      out += digits + std::string(int_len - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, int_len) + "." + digits.substr(int_len);
    }
  }
  return out;
}

const char* py_type_name(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined: return "Undefined";
    case Value::Kind::None: return "NoneType";
    case Value::Kind::Bool: return "bool";
    case Value::Kind::Int: return "int";
    case Value::Kind::Float: return "float";
    case Value::Kind::String: return "str";
    case Value::Kind::List: return "list";
    case Value::Kind::Tuple: return "tuple";
    case Value::Kind::Dict: return "dict";
    case Value::Kind::Object: return v.obj().type_name();
  }
  return "object";
}

// ---- Undefined -------------------------------------------------------------------------------------

std::string object_type_repr(const Value& v) {
  if (v.is_none()) return "None";
  if (v.is_object()) {
    std::string mod = v.obj().module();
    if (mod != "builtins") return mod + "." + v.obj().type_name() + " object";
  }
  return std::string(py_type_name(v)) + " object";
}

std::string UndefinedInfo::message() const {
  if (!hint.empty()) return hint;
  if (!has_obj) return py_repr(name) + " is undefined";
  if (!name.is_string()) return obj_repr + " has no element " + py_repr(name);
  return py_repr_string(obj_repr) + " has no attribute " + py_repr(name);
}

Value undefined_name(const std::string& name) {
  auto u = std::make_shared<UndefinedInfo>();
  u->name = Value::string(name);
  return Value::undefined(std::move(u));
}

Value undefined_hint(const std::string& hint, const char* exc) {
  auto u = std::make_shared<UndefinedInfo>();
  u->hint = hint;
  u->exc = exc;
  return Value::undefined(std::move(u));
}

Value undefined_attr(const Value& obj, Value name) {
  auto u = std::make_shared<UndefinedInfo>();
  u->has_obj = true;
  u->obj_repr = object_type_repr(obj);
  u->name = std::move(name);
  return Value::undefined(std::move(u));
}

void raise_undefined(const Value& undef) {
  const auto& info = undef.undefined_info();
  if (!info) raise("UndefinedError", "None is undefined");
  raise(info->exc.c_str(), info->message());
}

// ---- objects ------------------------------------------------------------------------------------------

Value Object::call(Interp&, Args&) { type_error(std::string("'") + type_name() + "' object is not callable"); }
std::string Object::repr() const { return std::string("<") + type_name() + " object>"; }

Value make_function(std::string name, std::function<Value(Interp&, Args&)> fn) {
  return Value::object(std::make_shared<Function>(std::move(name), std::move(fn)));
}

std::string Iterator::repr() const {
  return "<" + name + " object at 0x7f0000000000>";
}

bool Iterator::iterate(List& out) {
  out.assign(items.begin() + static_cast<std::ptrdiff_t>(at), items.end());
  at = items.size();
  return true;
}

Value make_iterator(const char* type_name, List items) {
  return Value::object(std::make_shared<Iterator>(type_name, std::move(items)));
}

bool Namespace::get_attr(std::string_view name, Value& out) {
  if (const Value* v = attrs.find(name)) {
    out = *v;
    return true;
  }
  return false;
}

std::string Namespace::repr() const {
  std::string s = "<Namespace {";
  for (size_t i = 0; i < attrs.entries.size(); i++) {
    if (i) s += ", ";
    s += py_repr(attrs.entries[i].first) + ": " + py_repr(attrs.entries[i].second);
  }
  return s + "}>";
}

// ---- str / repr -------------------------------------------------------------------------------------------

static void repr_into(std::string& out, const Value& v);

static void seq_repr(std::string& out, const Value& v) {
  const List& items = v.items();
  out += v.is_tuple() ? '(' : '[';
  for (size_t i = 0; i < items.size(); i++) {
    if (i) out += ", ";
    repr_into(out, items[i]);
  }
  if (v.is_tuple() && items.size() == 1) out += ',';
  out += v.is_tuple() ? ')' : ']';
}

static void repr_into(std::string& out, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::String: out += py_repr_string(v.str()); return;
    case Value::Kind::List: case Value::Kind::Tuple: seq_repr(out, v); return;
    case Value::Kind::Dict: {
      out += '{';
      bool first = true;
      for (const auto& [k, val] : v.dict().entries) {
        if (!first) out += ", ";
        first = false;
        repr_into(out, k);
        out += ": ";
        repr_into(out, val);
      }
      out += '}';
      return;
    }
    case Value::Kind::Undefined: out += "Undefined"; return;
    default: out += py_str(v); return;
  }
}

std::string py_repr(const Value& v) {
  std::string out;
  repr_into(out, v);
  return out;
}

std::string py_str(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined: return "";
    case Value::Kind::None: return "None";
    case Value::Kind::Bool: return v.as_bool() ? "True" : "False";
    case Value::Kind::Int: return std::to_string(v.as_int());
    case Value::Kind::Float: return py_float_repr(v.as_double());
    case Value::Kind::String: return v.str();
    case Value::Kind::Object: return v.obj().repr();
    default: return py_repr(v);
  }
}

// ---- truth, equality, ordering ---------------------------------------------------------------------------

bool truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined: case Value::Kind::None: return false;
    case Value::Kind::Bool: return v.as_bool();
    case Value::Kind::Int: return v.as_int() != 0;
    case Value::Kind::Float: return v.as_double() != 0;
    case Value::Kind::String: return !v.str().empty();
    case Value::Kind::List: case Value::Kind::Tuple: return !v.items().empty();
    case Value::Kind::Dict: return v.dict().size() > 0;
    case Value::Kind::Object: return true;
  }
  return true;
}

static bool both_int(const Value& a, const Value& b) {
  return (a.is_int() || a.is_bool()) && (b.is_int() || b.is_bool());
}

bool py_eq(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (both_int(a, b)) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::Undefined: case Value::Kind::None: return true;
    case Value::Kind::String: return a.str() == b.str();
    case Value::Kind::List: case Value::Kind::Tuple: {
      const List &x = a.items(), &y = b.items();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); i++)
        if (!py_eq(x[i], y[i])) return false;
      return true;
    }
    case Value::Kind::Dict: {
      const Dict &x = a.dict(), &y = b.dict();
      if (x.size() != y.size()) return false;
      for (const auto& [k, v] : x.entries) {
        const Value* o = y.find(k);
        if (!o || !py_eq(v, *o)) return false;
      }
      return true;
    }
    case Value::Kind::Object: return a.obj_ptr() == b.obj_ptr();
    default: return false;
  }
}

int py_compare(const Value& a, const Value& b, const char* op) {
  if (a.is_undefined()) raise_undefined(a);
  if (b.is_undefined()) raise_undefined(b);
  if (a.is_number() && b.is_number()) {
    if (both_int(a, b)) return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int() ? 1 : 0;
    double x = a.as_double(), y = b.as_double();
    if (std::isnan(x) || std::isnan(y)) return 2;  // every ordering is false
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    int c = a.str().compare(b.str());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.kind() == b.kind() && a.is_sequence()) {
    const List &x = a.items(), &y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); i++)
      if (!py_eq(x[i], y[i])) return py_compare(x[i], y[i], op);
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  type_error(std::string("'") + op + "' not supported between instances of '" + py_type_name(a) + "' and '" +
             py_type_name(b) + "'");
}

// ---- arithmetic ----------------------------------------------------------------------------------------------

static const char* op_symbol(ExprKind op) {
  switch (op) {
    case ExprKind::Add: return "+";
    case ExprKind::Sub: return "-";
    case ExprKind::Mul: return "*";
    case ExprKind::Div: return "/";
    case ExprKind::FloorDiv: return "//";
    case ExprKind::Mod: return "%";
    case ExprKind::Pow: return "** or pow()";
    default: return "?";
  }
}

[[noreturn]] static void unsupported(ExprKind op, const Value& a, const Value& b) {
  type_error(std::string("unsupported operand type(s) for ") + op_symbol(op) + ": '" + py_type_name(a) + "' and '" +
             py_type_name(b) + "'");
}

static Value repeat(const Value& seq, int64_t n) {
  if (seq.is_string()) {
    std::string out;
    for (int64_t i = 0; i < n; i++) out += seq.str();
    return Value::string(std::move(out));
  }
  List out;
  for (int64_t i = 0; i < n; i++) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return seq.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

Value binary_op(ExprKind op, const Value& a, const Value& b) {
  if (a.is_undefined()) raise_undefined(a);
  if (b.is_undefined()) raise_undefined(b);
  bool nums = a.is_number() && b.is_number();
  bool ints = nums && both_int(a, b);
  switch (op) {
    case ExprKind::Add:
      if (ints) return Value::integer(a.as_int() + b.as_int());
      if (nums) return Value::number(a.as_double() + b.as_double());
      if (a.is_string()) {
        if (!b.is_string()) type_error(std::string("can only concatenate str (not \"") + py_type_name(b) + "\") to str");
        return Value::string(a.str() + b.str());
      }
      if (a.is_sequence()) {
        if (b.kind() != a.kind())
          type_error(std::string("can only concatenate ") + py_type_name(a) + " (not \"" + py_type_name(b) + "\") to " +
                     py_type_name(a));
        List out = a.items();
        out.insert(out.end(), b.items().begin(), b.items().end());
        return a.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
      }
      unsupported(op, a, b);
    case ExprKind::Sub:
      if (ints) return Value::integer(a.as_int() - b.as_int());
      if (nums) return Value::number(a.as_double() - b.as_double());
      unsupported(op, a, b);
    case ExprKind::Mul:
      if (ints) return Value::integer(a.as_int() * b.as_int());
      if (nums) return Value::number(a.as_double() * b.as_double());
      if ((a.is_string() || a.is_sequence()) && (b.is_int() || b.is_bool())) return repeat(a, b.as_int());
      if ((b.is_string() || b.is_sequence()) && (a.is_int() || a.is_bool())) return repeat(b, a.as_int());
      if (a.is_string() || a.is_sequence() || b.is_string() || b.is_sequence()) {
        const Value& other = a.is_string() || a.is_sequence() ? b : a;
        type_error(std::string("can't multiply sequence by non-int of type '") + py_type_name(other) + "'");
      }
      unsupported(op, a, b);
    case ExprKind::Div:
      if (!nums) unsupported(op, a, b);
      if (b.as_double() == 0) raise("ZeroDivisionError", ints ? "division by zero" : "float division by zero");
      return Value::number(a.as_double() / b.as_double());
    case ExprKind::FloorDiv:
      if (!nums) unsupported(op, a, b);
      if (ints) {
        if (b.as_int() == 0) raise("ZeroDivisionError", "integer division or modulo by zero");
        return Value::integer(floor_div(a.as_int(), b.as_int()));
      }
      if (b.as_double() == 0) raise("ZeroDivisionError", "float floor division by zero");
      return Value::number(std::floor(a.as_double() / b.as_double()));
    case ExprKind::Mod:
      if (a.is_string()) return Value::string(py_percent_format(a.str(), b));
      if (!nums) unsupported(op, a, b);
      if (ints) {
        if (b.as_int() == 0) raise("ZeroDivisionError", "integer division or modulo by zero");
        int64_t r = a.as_int() % b.as_int();
        if (r != 0 && ((r < 0) != (b.as_int() < 0))) r += b.as_int();
        return Value::integer(r);
      } else {
        double y = b.as_double();
        if (y == 0) raise("ZeroDivisionError", "float modulo");
        double r = std::fmod(a.as_double(), y);
        if (r != 0 && ((r < 0) != (y < 0))) r += y;
        return Value::number(r);
      }
    case ExprKind::Pow:
      if (!nums) unsupported(op, a, b);
      if (ints && b.as_int() >= 0) {
        int64_t r = 1, base = a.as_int();
        for (int64_t e = b.as_int(); e > 0; e >>= 1, base *= base)
          if (e & 1) r *= base;
        return Value::integer(r);
      }
      return Value::number(std::pow(a.as_double(), b.as_double()));
    default:
      unsupported(op, a, b);
  }
}

bool py_contains(const Value& c, const Value& item) {
  switch (c.kind()) {
    case Value::Kind::String:
      if (!item.is_string())
        type_error(std::string("'in <string>' requires string as left operand, not ") + py_type_name(item));
      return c.str().find(item.str()) != std::string::npos;
    case Value::Kind::List: case Value::Kind::Tuple:
      for (const Value& x : c.items())
        if (py_eq(x, item)) return true;
      return false;
    case Value::Kind::Dict: return c.dict().find(item) != nullptr;
    case Value::Kind::Undefined: return false;
    case Value::Kind::Object: {
      List items;
      if (!c.obj().iterate(items)) break;
      for (const Value& x : items)
        if (py_eq(x, item)) return true;
      return false;
    }
    default: break;
  }
  type_error(std::string("argument of type '") + py_type_name(c) + "' is not iterable");
}

int64_t py_len(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::String: return static_cast<int64_t>(cp_length(v.str()));
    case Value::Kind::List: case Value::Kind::Tuple: return static_cast<int64_t>(v.items().size());
    case Value::Kind::Dict: return static_cast<int64_t>(v.dict().size());
    case Value::Kind::Undefined: return 0;
    default: type_error(std::string("object of type '") + py_type_name(v) + "' has no len()");
  }
}

List iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Object: {
      List out;
      if (v.obj().iterate(out)) return out;
      type_error(std::string("'") + py_type_name(v) + "' object is not iterable");
    }
    case Value::Kind::List: case Value::Kind::Tuple: return v.items();
    case Value::Kind::Dict: {
      List out;
      for (const auto& [k, _] : v.dict().entries) out.push_back(k);
      return out;
    }
    case Value::Kind::String: {
      List out;
      const std::string& s = v.str();
      for (size_t i = 0; i < s.size();) {
        size_t start = i;
        utf8_next(s, i);
        out.push_back(Value::string(s.substr(start, i - start)));
      }
      return out;
    }
    case Value::Kind::Undefined: return {};
    default: type_error(std::string("'") + py_type_name(v) + "' object is not iterable");
  }
}

// ---- slicing -------------------------------------------------------------------------------------------------

static bool slice_index(const Value& v, int64_t& out) {
  if (v.is_none() || v.is_undefined()) return false;
  if (!(v.is_int() || v.is_bool())) type_error("slice indices must be integers or None or have an __index__ method");
  out = v.as_int();
  return true;
}

Value slice_value(const Value& v, const Value& start_v, const Value& stop_v, const Value& step_v) {
  int64_t step = 1;
  if (slice_index(step_v, step) && step == 0) raise("ValueError", "slice step cannot be zero");
  std::vector<uint32_t> cps;
  int64_t n;
  if (v.is_string()) {
    cps = utf8_decode(v.str());
    n = static_cast<int64_t>(cps.size());
  } else {
    n = static_cast<int64_t>(v.items().size());
  }
  int64_t start, stop;
  bool has_start = slice_index(start_v, start), has_stop = slice_index(stop_v, stop);
  auto adjust = [&](int64_t& x, int64_t lo, int64_t hi) {
    if (x < 0) x += n;
    if (x < lo) x = lo;
    if (x > hi) x = hi;
  };
  if (step > 0) {
    if (!has_start) start = 0; else adjust(start, 0, n);
    if (!has_stop) stop = n; else adjust(stop, 0, n);
  } else {
    if (!has_start) start = n - 1; else adjust(start, -1, n - 1);
    if (!has_stop) stop = -1; else adjust(stop, -1, n - 1);
  }
  std::vector<int64_t> idx;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) idx.push_back(i);
  if (v.is_string()) {
    std::string out;
    for (int64_t i : idx) utf8_append(out, cps[static_cast<size_t>(i)]);
    return Value::string(std::move(out));
  }
  List out;
  for (int64_t i : idx) out.push_back(v.items()[static_cast<size_t>(i)]);
  return v.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

// ---- printf-style formatting (str % args) -------------------------------------------------------------

std::string py_percent_format(const std::string& fmt, const Value& args) {
  List list = args.is_tuple() ? args.items() : List{args};
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < fmt.size(); i++) {
    if (fmt[i] != '%') { out += fmt[i]; continue; }
    if (++i >= fmt.size()) raise("ValueError", "incomplete format");
    const Value* arg = nullptr;
    if (fmt[i] == '(') {
      size_t close = fmt.find(')', i);
      if (close == std::string::npos) raise("ValueError", "incomplete format key");
      if (!args.is_dict()) type_error("format requires a mapping");
      std::string key = fmt.substr(i + 1, close - i - 1);
      arg = args.dict().find(key);
      if (!arg) raise("KeyError", py_repr_string(key));
      i = close + 1;
    }
    std::string flags;
    while (i < fmt.size() && strchr("-+ #0", fmt[i])) flags += fmt[i++];
    std::string width, prec;
    while (i < fmt.size() && isdigit(static_cast<unsigned char>(fmt[i]))) width += fmt[i++];
    if (i < fmt.size() && fmt[i] == '.') {
      i++;
      prec = ".";
      while (i < fmt.size() && isdigit(static_cast<unsigned char>(fmt[i]))) prec += fmt[i++];
    }
    if (i >= fmt.size()) raise("ValueError", "incomplete format");
    char conv = fmt[i];
    if (conv == '%') { out += '%'; continue; }
    if (!arg) {
      if (next >= list.size()) type_error("not enough arguments for format string");
      arg = &list[next++];
    }
    std::string piece;
    char buf[512];
    std::string spec = "%" + flags + width + prec;
    switch (conv) {
      case 's': piece = py_str(*arg); break;
      case 'r': case 'a': piece = py_repr(*arg); break;
      case 'd': case 'i': case 'u':
        if (!arg->is_number()) type_error(std::string("%") + conv + " format: a real number is required, not " + py_type_name(*arg));
        snprintf(buf, sizeof buf, (spec + "lld").c_str(), static_cast<long long>(arg->is_float() ? static_cast<int64_t>(arg->as_double()) : arg->as_int()));
        piece = buf;
        break;
      case 'f': case 'F': case 'e': case 'E': case 'g': case 'G':
        if (!arg->is_number()) type_error(std::string("must be real number, not ") + py_type_name(*arg));
        snprintf(buf, sizeof buf, (spec + conv).c_str(), arg->as_double());
        piece = buf;
        break;
      case 'x': case 'X': case 'o':
        snprintf(buf, sizeof buf, (spec + "ll" + conv).c_str(), static_cast<long long>(arg->as_int()));
        piece = buf;
        break;
      default: raise("ValueError", std::string("unsupported format character '") + conv + "'");
    }
    if ((conv == 's' || conv == 'r' || conv == 'a')) {
      if (prec.size() > 1) {
        auto cps = utf8_decode(piece);
        size_t p = static_cast<size_t>(std::stoul(prec.substr(1)));
        if (cps.size() > p) cps.resize(p);
        piece = utf8_encode(cps);
      }
      size_t w = width.empty() ? 0 : std::stoul(width), len = cp_length(piece);
      if (len < w) {
        if (flags.find('-') != std::string::npos) piece += std::string(w - len, ' ');
        else piece = std::string(w - len, ' ') + piece;
      }
    }
    out += piece;
  }
  if (next < list.size() && !args.is_dict()) type_error("not all arguments converted during string formatting");
  return out;
}

}  // namespace sky::jinja
