// JSON as Python's json module reads and writes it: objects keep their key order, integers stay
// ints, dumps() has json.dumps' separators, indentation, ensure_ascii and sort_keys, and refuses
// what JSON cannot hold with Python's TypeError message.
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <algorithm>
#include <cmath>

#include "host/json.hpp"
#include "jinja/internal.hpp"

namespace sky::jinja {

namespace {

Value from_rapidjson(const rapidjson::Value& v) {
  switch (v.GetType()) {
    case rapidjson::kNullType: return Value::none();
    case rapidjson::kFalseType: return Value::boolean(false);
    case rapidjson::kTrueType: return Value::boolean(true);
    case rapidjson::kStringType: return Value::string(std::string(v.GetString(), v.GetStringLength()));
    case rapidjson::kNumberType:
      if (v.IsInt64()) return Value::integer(v.GetInt64());
      return Value::number(v.GetDouble());
    case rapidjson::kArrayType: {
      List items;
      items.reserve(v.Size());
      for (const auto& x : v.GetArray()) items.push_back(from_rapidjson(x));
      return Value::list(std::move(items));
    }
    case rapidjson::kObjectType: {
      Dict d;
      for (const auto& m : v.GetObject())
        d.set(Value::string(std::string(m.name.GetString(), m.name.GetStringLength())), from_rapidjson(m.value));
      return Value::dict(std::move(d));
    }
  }
  return Value::none();
}

void escape_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      i++;
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20 || (ensure_ascii && c == 0x7F)) {
            char buf[8];
            snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
          } else {
            out += static_cast<char>(c);
          }
      }
      continue;
    }
    size_t start = i;
    uint32_t cp = utf8_next(s, i);
    if (!ensure_ascii) {
      out.append(s.substr(start, i - start));
      continue;
    }
    char buf[16];
    if (cp >= 0x10000) {
      uint32_t v = cp - 0x10000;
      snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
    } else {
      snprintf(buf, sizeof buf, "\\u%04x", cp);
    }
    out += buf;
  }
  out += '"';
}

std::string float_json(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return py_float_repr(d);
}

[[noreturn]] void not_serializable(const Value& v) {
  type_error(std::string("Object of type ") + py_type_name(v) + " is not JSON serializable");
}

std::string key_string(const Value& k) {
  switch (k.kind()) {
    case Value::Kind::String: return k.str();
    case Value::Kind::Float: return float_json(k.as_double());
    case Value::Kind::Bool: return k.as_bool() ? "true" : "false";
    case Value::Kind::Int: return std::to_string(k.as_int());
    case Value::Kind::None: return "null";
    default:
      type_error(std::string("keys must be str, int, float, bool or None, not ") + py_type_name(k));
  }
}

struct Dumper {
  const JsonOptions& o;
  std::string item_sep, key_sep;
  std::string out;

  void newline(int level) {
    out += '\n';
    for (int i = 0; i < level; i++) out += *o.indent;
  }

  void dump(const Value& v, int level) {
    switch (v.kind()) {
      case Value::Kind::None: out += "null"; return;
      case Value::Kind::Bool: out += v.as_bool() ? "true" : "false"; return;
      case Value::Kind::Int: out += std::to_string(v.as_int()); return;
      case Value::Kind::Float: out += float_json(v.as_double()); return;
      case Value::Kind::String: escape_string(out, v.str(), o.ensure_ascii); return;
      case Value::Kind::List: case Value::Kind::Tuple: {
        const List& items = v.items();
        if (items.empty()) { out += "[]"; return; }
        out += '[';
        for (size_t i = 0; i < items.size(); i++) {
          if (i) out += item_sep;
          if (o.indent) newline(level + 1);
          dump(items[i], level + 1);
        }
        if (o.indent) newline(level);
        out += ']';
        return;
      }
      case Value::Kind::Dict: {
        const Dict& d = v.dict();
        if (d.size() == 0) { out += "{}"; return; }
        std::vector<const std::pair<Value, Value>*> entries;
        for (const auto& e : d.entries) entries.push_back(&e);
        if (o.sort_keys)
          std::stable_sort(entries.begin(), entries.end(),
                           [](auto* a, auto* b) { return py_compare(a->first, b->first, "<") < 0; });
        out += '{';
        bool first = true;
        for (const auto* e : entries) {
          if (!first) out += item_sep;
          first = false;
          if (o.indent) newline(level + 1);
          escape_string(out, key_string(e->first), o.ensure_ascii);
          out += key_sep;
          dump(e->second, level + 1);
        }
        if (o.indent) newline(level);
        out += '}';
        return;
      }
      default: not_serializable(v);
    }
  }
};

}  // namespace

Value json_parse(std::string_view text) {
  rapidjson::Document doc;
  JsonParsed r = sky::json_parse<rapidjson::kParseFullPrecisionFlag | rapidjson::kParseNanAndInfFlag>(doc, text);
  if (!r) raise("JSONDecodeError", r.reason() + " (at byte " + std::to_string(r.offset) + ")");
  return from_rapidjson(doc);
}

std::string json_dumps(const Value& v, const JsonOptions& opts) {
  Dumper d{opts, opts.indent ? "," : ", ", ": ", {}};
  if (opts.separators) {
    d.item_sep = opts.separators->first;
    d.key_sep = opts.separators->second;
  }
  d.dump(v, 0);
  return std::move(d.out);
}

}  // namespace sky::jinja
