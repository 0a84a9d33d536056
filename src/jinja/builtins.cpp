// jinja2's built-in filters, tests and globals, transformers' additions (tojson without ASCII
// escaping, raise_exception, strftime_now), the methods of str/list/dict that templates call,
// and attribute/item lookup as ImmutableSandboxedEnvironment does it. Messages are Python's.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>

#include "jinja/internal.hpp"

namespace sky::jinja {

// ---- argument binding ----------------------------------------------------------------------------------

Args::Bound Args::bind(const char* fname, const std::vector<const char*>& params, size_t required) const {
  Bound b;
  b.v.resize(params.size());
  b.given.assign(params.size(), false);
  if (pos.size() > params.size()) {
    std::string n = std::to_string(params.size());
    type_error(std::string(fname) + "() takes " + (required < params.size() ? "from " + std::to_string(required) + " to " : "") +
               n + " positional argument" + (params.size() == 1 ? "" : "s") + " but " + std::to_string(pos.size()) +
               (pos.size() == 1 ? " was" : " were") + " given");
  }
  for (size_t i = 0; i < pos.size(); i++) {
    b.v[i] = pos[i];
    b.given[i] = true;
  }
  for (const auto& [k, val] : kw) {
    size_t at = params.size();
    for (size_t i = 0; i < params.size(); i++)
      if (k == params[i]) at = i;
    if (at == params.size()) type_error(std::string(fname) + "() got an unexpected keyword argument '" + k + "'");
    if (b.given[at]) type_error(std::string(fname) + "() got multiple values for argument '" + k + "'");
    b.v[at] = val;
    b.given[at] = true;
  }
  for (size_t i = 0; i < required; i++)
    if (!b.given[i]) type_error(std::string(fname) + "() missing 1 required positional argument: '" + params[i] + "'");
  return b;
}

namespace {

// The filter's own value comes first in jinja2's signatures; bind the rest.
Args::Bound bind_rest(const char* fname, const Args& a, const std::vector<const char*>& params, size_t required) {
  return a.bind(fname, params, required);
}

const Value kNone = Value::none();
const Value kFalse = Value::boolean(false);
const Value kTrue = Value::boolean(true);
const Value kZero = Value::integer(0);
const Value kEmptyStr = Value::string("");

std::string soft_str(const Value& v) { return v.is_string() ? v.str() : py_str(v); }

Value ignore_case(const Value& v) { return v.is_string() ? Value::string(py_lower(v.str())) : v; }

// jinja2's make_attrgetter: "a.b.0" walks with getitem, digits as indexes.
Value attr_path(const Value& item, const Value& attribute) {
  if (!attribute.is_string()) return get_item(item, attribute);
  Value cur = item;
  const std::string& path = attribute.str();
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return isdigit(static_cast<unsigned char>(c)); });
    cur = get_item(cur, digits ? Value::integer(std::stoll(part)) : Value::string(part));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return cur;
}

void sort_values(List& items, bool reverse, const std::function<Value(const Value&)>& key) {
  std::vector<std::pair<Value, Value>> keyed;
  keyed.reserve(items.size());
  for (const Value& v : items) keyed.emplace_back(key(v), v);
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    int c = py_compare(reverse ? b.first : a.first, reverse ? a.first : b.first, "<");
    return c != 2 && c < 0;
  });
  for (size_t i = 0; i < items.size(); i++) items[i] = keyed[i].second;
}

// ---- filters -------------------------------------------------------------------------------------------

Value f_abs(Interp&, const Value& v, Args& a) {
  bind_rest("do_abs", a, {}, 0);
  if (v.is_int() || v.is_bool()) return Value::integer(std::llabs(v.as_int()));
  if (v.is_float()) return Value::number(std::fabs(v.as_double()));
  if (v.is_undefined()) raise_undefined(v);
  type_error(std::string("bad operand type for abs(): '") + py_type_name(v) + "'");
}

Value f_attr(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_attr", a, {"name"}, 1);
  return get_attr(v, py_str(b.v[0]));
}

Value f_batch(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_batch", a, {"linecount", "fill_with"}, 1);
  int64_t n = b.v[0].as_int();
  List items = iterate(v), out, tmp;
  for (const Value& x : items) {
    if (static_cast<int64_t>(tmp.size()) == n) {
      out.push_back(Value::list(std::move(tmp)));
      tmp.clear();
    }
    tmp.push_back(x);
  }
  if (!tmp.empty()) {
    if (b.given[1] && !b.v[1].is_none())
      while (static_cast<int64_t>(tmp.size()) < n) tmp.push_back(b.v[1]);
    out.push_back(Value::list(std::move(tmp)));
  }
  return make_iterator("generator", std::move(out));
}

Value f_capitalize(Interp&, const Value& v, Args& a) {
  bind_rest("do_capitalize", a, {}, 0);
  return Value::string(py_capitalize(soft_str(v)));
}

Value f_center(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_center", a, {"width"}, 0);
  int64_t width = b.get(0, Value::integer(80)).as_int();
  std::string s = soft_str(v);
  int64_t len = static_cast<int64_t>(cp_length(s));
  if (width <= len) return Value::string(s);
  int64_t marg = width - len, left = marg / 2 + (marg & width & 1);
  return Value::string(std::string(static_cast<size_t>(left), ' ') + s + std::string(static_cast<size_t>(marg - left), ' '));
}

Value f_length(Interp&, const Value& v, Args& a) {
  bind_rest("len", a, {}, 0);
  return Value::integer(py_len(v));
}

Value f_default(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_default", a, {"default_value", "boolean"}, 0);
  bool boolean = truthy(b.get(1, kFalse));
  if (v.is_undefined() || (boolean && !truthy(v))) return b.get(0, kEmptyStr);
  return v;
}

Value f_dictsort(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_dictsort", a, {"case_sensitive", "by", "reverse"}, 0);
  bool cs = truthy(b.get(0, kFalse)), rev = truthy(b.get(2, kFalse));
  std::string by = b.given[1] ? py_str(b.v[1]) : "key";
  if (by != "key" && by != "value") raise("FilterArgumentError", "You can only sort by either \"key\" or \"value\"");
  if (!v.is_dict()) raise("AttributeError", std::string("'") + py_type_name(v) + "' object has no attribute 'items'");
  List items;
  for (const auto& [k, x] : v.dict().entries) items.push_back(Value::tuple({k, x}));
  size_t pos = by == "key" ? 0 : 1;
  sort_values(items, rev, [&](const Value& it) { return cs ? it.items()[pos] : ignore_case(it.items()[pos]); });
  return Value::list(std::move(items));
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

Value f_escape(Interp&, const Value& v, Args& a) {
  bind_rest("escape", a, {}, 0);
  return Value::string(html_escape(soft_str(v)));
}

Value f_first(Interp&, const Value& v, Args& a) {
  bind_rest("do_first", a, {}, 0);
  if (v.is_object()) {
    auto* it = dynamic_cast<Iterator*>(&v.obj());
    if (it) {
      if (it->at < it->items.size()) return it->items[it->at++];
      return undefined_hint("No first item, sequence was empty.");
    }
  }
  List items = iterate(v);
  if (items.empty()) return undefined_hint("No first item, sequence was empty.");
  return items.front();
}

Value f_last(Interp&, const Value& v, Args& a) {
  bind_rest("do_last", a, {}, 0);
  if (v.is_object()) type_error(std::string("'") + py_type_name(v) + "' object is not reversible");
  List items = iterate(v);
  if (items.empty()) return undefined_hint("No last item, sequence was empty.");
  return items.back();
}

bool parse_float(const std::string& s, double& out) {
  std::string t = py_strip(s, true, true);
  if (t.empty()) return false;
  std::string clean;
  for (char c : t)
    if (c != '_') clean += c;
  char* end = nullptr;
  out = std::strtod(clean.c_str(), &end);
  return end && *end == '\0';
}

Value f_float(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_float", a, {"default"}, 0);
  Value def = b.get(0, Value::number(0.0));
  if (v.is_number()) return Value::number(v.as_double());
  if (v.is_string()) {
    double d;
    if (parse_float(v.str(), d)) return Value::number(d);
  }
  return def;
}

Value f_int(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_int", a, {"default", "base"}, 0);
  Value def = b.get(0, kZero);
  int base = static_cast<int>(b.get(1, Value::integer(10)).as_int());
  if (v.is_int() || v.is_bool()) return Value::integer(v.as_int());
  if (v.is_float()) return Value::integer(static_cast<int64_t>(v.as_double()));
  if (v.is_string()) {
    std::string t = py_strip(v.str(), true, true), clean;
    for (char c : t)
      if (c != '_') clean += c;
    char* end = nullptr;
    if (!clean.empty()) {
      long long x = std::strtoll(clean.c_str(), &end, base);
      if (end && *end == '\0') return Value::integer(x);
      double d;
      if (parse_float(clean, d)) return Value::integer(static_cast<int64_t>(d));
    }
  }
  return def;
}

Value f_format(Interp&, const Value& v, Args& a) {
  if (!a.kw.empty() && !a.pos.empty())
    raise("FilterArgumentError", "can't handle positional and keyword arguments at the same time");
  if (!a.kw.empty()) {
    Dict d;
    for (const auto& [k, x] : a.kw) d.set(Value::string(k), x);
    return Value::string(py_percent_format(soft_str(v), Value::dict(std::move(d))));
  }
  return Value::string(py_percent_format(soft_str(v), Value::tuple(a.pos)));
}

struct Group : Object {
  Value grouper, list;
  const char* type_name() const override { return "_GroupTuple"; }
  std::string module() const override { return "jinja2.filters"; }
  bool get_attr(std::string_view name, Value& out) override {
    if (name == "grouper") { out = grouper; return true; }
    if (name == "list") { out = list; return true; }
    return false;
  }
  bool iterate(List& out) override {
    out = {grouper, list};
    return true;
  }
  std::string repr() const override { return "(" + py_repr(grouper) + ", " + py_repr(list) + ")"; }
};

Value f_groupby(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_groupby", a, {"attribute", "default", "case_sensitive"}, 1);
  bool cs = truthy(b.get(2, kFalse));
  auto key = [&](const Value& x) {
    Value k = attr_path(x, b.v[0]);
    if (k.is_undefined() && b.given[1]) k = b.v[1];
    return cs ? k : ignore_case(k);
  };
  List items = iterate(v);
  sort_values(items, false, key);
  List out;
  for (size_t i = 0; i < items.size();) {
    Value k = key(items[i]);
    List members;
    size_t j = i;
    while (j < items.size() && py_eq(key(items[j]), k)) members.push_back(items[j++]);
    auto g = std::make_shared<Group>();
    g->grouper = cs ? k : attr_path(members.front(), b.v[0]);
    g->list = Value::list(std::move(members));
    out.push_back(Value::object(g));
    i = j;
  }
  return Value::list(std::move(out));
}

Value f_indent(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_indent", a, {"width", "first", "blank"}, 0);
  Value width = b.get(0, Value::integer(4));
  std::string ind = width.is_string() ? width.str() : std::string(static_cast<size_t>(std::max<int64_t>(0, width.as_int())), ' ');
  bool first = truthy(b.get(1, kFalse)), blank = truthy(b.get(2, kFalse));
  std::string s = soft_str(v) + "\n";
  std::vector<std::string> lines = py_splitlines(s, false);
  std::string rv;
  if (blank) {
    for (size_t i = 0; i < lines.size(); i++) rv += (i ? "\n" + ind : "") + lines[i];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); i++) rv += "\n" + (lines[i].empty() ? lines[i] : ind + lines[i]);
  }
  if (first) rv = ind + rv;
  return Value::string(rv);
}

Value f_items(Interp&, const Value& v, Args& a) {
  bind_rest("do_items", a, {}, 0);
  if (v.is_undefined()) return make_iterator("generator", {});
  if (!v.is_dict()) type_error("Can only get item pairs from a mapping.");
  List out;
  for (const auto& [k, x] : v.dict().entries) out.push_back(Value::tuple({k, x}));
  return make_iterator("generator", std::move(out));
}

Value f_join(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_join", a, {"d", "attribute"}, 0);
  std::string sep = soft_str(b.get(0, kEmptyStr));
  List items = iterate(v);
  std::string out;
  for (size_t i = 0; i < items.size(); i++) {
    if (i) out += sep;
    out += soft_str(b.given[1] && !b.v[1].is_none() ? attr_path(items[i], b.v[1]) : items[i]);
  }
  return Value::string(out);
}

Value f_list(Interp&, const Value& v, Args& a) {
  bind_rest("do_list", a, {}, 0);
  return Value::list(iterate(v));
}

Value f_lower(Interp&, const Value& v, Args& a) {
  bind_rest("do_lower", a, {}, 0);
  return Value::string(py_lower(soft_str(v)));
}

Value f_upper(Interp&, const Value& v, Args& a) {
  bind_rest("do_upper", a, {}, 0);
  return Value::string(py_upper(soft_str(v)));
}

Value f_map(Interp& in, const Value& v, Args& a) {
  if (!truthy(v)) return make_iterator("generator", {});  // jinja2 skips falsy values (None too)
  List items = iterate(v), out;
  if (a.pos.empty()) {
    const Value* attribute = nullptr;
    Value def = kNone;
    bool has_default = false;
    for (const auto& [k, x] : a.kw) {
      if (k == "attribute") attribute = &x;
      else if (k == "default") { def = x; has_default = true; }
      else raise("FilterArgumentError", "Unexpected keyword argument '" + k + "'");
    }
    if (!attribute) raise("FilterArgumentError", "map requires a filter argument");
    for (const Value& x : items) {
      Value r = attr_path(x, *attribute);
      if (r.is_undefined() && has_default) r = def;
      out.push_back(r);
    }
  } else {
    std::string name = py_str(a.pos[0]);
    Args rest;
    rest.pos.assign(a.pos.begin() + 1, a.pos.end());
    rest.kw = a.kw;
    for (const Value& x : items) {
      Args copy = rest;
      out.push_back(in.apply_filter(name, x, copy));
    }
  }
  return make_iterator("generator", std::move(out));
}

Value min_max(const Value& v, Args& a, bool want_max, const char* fname) {
  auto b = bind_rest(fname, a, {"case_sensitive", "attribute"}, 0);
  bool cs = truthy(b.get(0, kFalse));
  List items = iterate(v);
  if (items.empty()) return undefined_hint("No aggregated item, sequence was empty.");
  auto key = [&](const Value& x) {
    Value k = b.given[1] && !b.v[1].is_none() ? attr_path(x, b.v[1]) : x;
    return cs ? k : ignore_case(k);
  };
  size_t best = 0;
  Value best_key = key(items[0]);
  for (size_t i = 1; i < items.size(); i++) {
    Value k = key(items[i]);
    int c = py_compare(k, best_key, want_max ? ">" : "<");
    if (c != 2 && (want_max ? c > 0 : c < 0)) {
      best = i;
      best_key = k;
    }
  }
  return items[best];
}

Value f_max(Interp&, const Value& v, Args& a) { return min_max(v, a, true, "do_max"); }
Value f_min(Interp&, const Value& v, Args& a) { return min_max(v, a, false, "do_min"); }

Value f_pprint(Interp&, const Value& v, Args& a) {
  bind_rest("do_pprint", a, {}, 0);
  return Value::string(py_repr(v));
}

Value select_reject(Interp& in, const Value& v, Args& a, bool select, bool attr) {
  size_t off = attr ? 1 : 0;
  if (!truthy(v)) return make_iterator("generator", {});  // jinja2 skips falsy values (None too)
  if (attr && a.pos.empty()) type_error("select_or_reject() missing attribute");
  List items = iterate(v), out;
  for (const Value& x : items) {
    Value item = attr ? attr_path(x, a.pos[0]) : x;
    bool ok;
    if (a.pos.size() > off) {
      Args targs;
      targs.pos.assign(a.pos.begin() + static_cast<std::ptrdiff_t>(off + 1), a.pos.end());
      targs.kw = a.kw;
      ok = in.apply_test(py_str(a.pos[off]), item, targs);
    } else {
      ok = truthy(item);
    }
    if (ok == select) out.push_back(x);
  }
  return make_iterator("generator", std::move(out));
}

Value f_select(Interp& in, const Value& v, Args& a) { return select_reject(in, v, a, true, false); }
Value f_reject(Interp& in, const Value& v, Args& a) { return select_reject(in, v, a, false, false); }
Value f_selectattr(Interp& in, const Value& v, Args& a) { return select_reject(in, v, a, true, true); }
Value f_rejectattr(Interp& in, const Value& v, Args& a) { return select_reject(in, v, a, false, true); }

std::string str_replace(const std::string& s, const std::string& old, const std::string& rep, int64_t count) {
  if (count == 0) return s;
  std::string out;
  if (old.empty()) {
    // Python inserts rep before every character and at the end.
    int64_t n = 0;
    size_t i = 0;
    while (i < s.size()) {
      if (count >= 0 && n >= count) break;
      out += rep;
      n++;
      size_t start = i;
      utf8_next(s, i);
      out.append(s, start, i - start);
    }
    out.append(s, i, std::string::npos);
    if (i == s.size() && (count < 0 || n < count)) out += rep;
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (true) {
    size_t f = s.find(old, pos);
    if (f == std::string::npos || (count >= 0 && n >= count)) break;
    out.append(s, pos, f - pos);
    out += rep;
    pos = f + old.size();
    n++;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

Value f_replace(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_replace", a, {"old", "new", "count"}, 2);
  int64_t count = b.given[2] && !b.v[2].is_none() ? b.v[2].as_int() : -1;
  return Value::string(str_replace(soft_str(v), soft_str(b.v[0]), soft_str(b.v[1]), count));
}

Value f_reverse(Interp&, const Value& v, Args& a) {
  bind_rest("do_reverse", a, {}, 0);
  if (v.is_string()) {
    auto cps = utf8_decode(v.str());
    std::reverse(cps.begin(), cps.end());
    return Value::string(utf8_encode(cps));
  }
  List items = iterate(v);
  std::reverse(items.begin(), items.end());
  if (v.is_list()) return make_iterator("list_reverseiterator", std::move(items));
  if (v.is_tuple() || v.is_dict()) return make_iterator(v.is_tuple() ? "reversed" : "dict_reversekeyiterator", std::move(items));
  return Value::list(std::move(items));
}

Value f_round(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_round", a, {"precision", "method"}, 0);
  int64_t prec = b.get(0, kZero).as_int();
  std::string method = b.given[1] ? py_str(b.v[1]) : "common";
  if (method != "common" && method != "ceil" && method != "floor")
    raise("FilterArgumentError", "method must be common, ceil or floor");
  if (!v.is_number()) type_error(std::string("type ") + py_type_name(v) + " doesn't define __round__ method");
  double x = v.as_double(), m = std::pow(10.0, static_cast<double>(prec));
  double r;
  if (method == "ceil") r = std::ceil(x * m) / m;
  else if (method == "floor") r = std::floor(x * m) / m;
  else {
    double y = x * m, f = std::floor(y), diff = y - f;
    r = (diff > 0.5 || (diff == 0.5 && std::fmod(f, 2.0) != 0)) ? f + 1 : f;
    r /= m;
  }
  return Value::number(r);
}

Value f_safe(Interp&, const Value& v, Args& a) {
  bind_rest("do_mark_safe", a, {}, 0);
  return v.is_undefined() ? kEmptyStr : v;
}

Value f_slice(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_slice", a, {"slices", "fill_with"}, 1);
  List seq = iterate(v), out;
  int64_t slices = b.v[0].as_int(), length = static_cast<int64_t>(seq.size());
  int64_t per = length / slices, extra = length % slices, offset = 0;
  for (int64_t i = 0; i < slices; i++) {
    int64_t start = offset + i * per;
    if (i < extra) offset++;
    int64_t end = offset + (i + 1) * per;
    List tmp(seq.begin() + start, seq.begin() + end);
    if (b.given[1] && !b.v[1].is_none() && i >= extra) tmp.push_back(b.v[1]);
    out.push_back(Value::list(std::move(tmp)));
  }
  return make_iterator("generator", std::move(out));
}

Value f_sort(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_sort", a, {"reverse", "case_sensitive", "attribute"}, 0);
  bool rev = truthy(b.get(0, kFalse)), cs = truthy(b.get(1, kFalse));
  List items = iterate(v);
  sort_values(items, rev, [&](const Value& x) {
    Value k = b.given[2] && !b.v[2].is_none() ? attr_path(x, b.v[2]) : x;
    return cs ? k : ignore_case(k);
  });
  return Value::list(std::move(items));
}

Value f_string(Interp&, const Value& v, Args& a) {
  bind_rest("soft_str", a, {}, 0);
  return Value::string(soft_str(v));
}

Value f_striptags(Interp&, const Value& v, Args& a) {
  bind_rest("do_striptags", a, {}, 0);
  std::string s = soft_str(v), out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s.compare(i, 4, "<!--") == 0) {
      size_t e = s.find("-->", i);
      if (e != std::string::npos) { i = e + 2; continue; }
    }
    if (s[i] == '<') {
      size_t e = s.find('>', i);
      if (e != std::string::npos) { i = e; continue; }
    }
    out += s[i];
  }
  std::string collapsed;
  bool space = false;
  for (size_t i = 0; i < out.size();) {
    size_t start = i;
    uint32_t c = utf8_next(out, i);
    if (py_isspace(c)) { space = true; continue; }
    if (space && !collapsed.empty()) collapsed += ' ';
    space = false;
    collapsed.append(out, start, i - start);
  }
  return Value::string(str_replace(str_replace(str_replace(str_replace(collapsed, "&lt;", "<", -1), "&gt;", ">", -1), "&quot;", "\"", -1), "&amp;", "&", -1));
}

Value f_sum(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_sum", a, {"attribute", "start"}, 0);
  Value total = b.get(1, kZero);
  for (const Value& x : iterate(v))
    total = binary_op(ExprKind::Add, total, b.given[0] && !b.v[0].is_none() ? attr_path(x, b.v[0]) : x);
  return total;
}

Value f_title(Interp&, const Value& v, Args& a) {
  bind_rest("do_title", a, {}, 0);
  // jinja2's own title: words begin after runs of -, whitespace, (, {, [ and <.
  std::string s = soft_str(v), out;
  bool start = true;
  for (size_t i = 0; i < s.size();) {
    size_t b0 = i;
    uint32_t c = utf8_next(s, i);
    bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py_isspace(c);
    if (sep) {
      out.append(s, b0, i - b0);
      start = true;
      continue;
    }
    std::string ch(s, b0, i - b0);
    out += start ? py_upper(ch) : py_lower(ch);
    start = false;
  }
  return Value::string(out);
}

Value f_tojson(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("tojson", a, {"ensure_ascii", "indent", "separators", "sort_keys"}, 0);
  JsonOptions o;
  o.ensure_ascii = truthy(b.get(0, kFalse));
  Value indent = b.get(1, kNone);
  if (indent.is_string()) o.indent = indent.str();
  else if (indent.is_int() || indent.is_bool()) o.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, indent.as_int())), ' ');
  else if (!indent.is_none()) type_error(std::string("can't multiply sequence by non-int of type '") + py_type_name(indent) + "'");
  Value seps = b.get(2, kNone);
  if (!seps.is_none()) {
    List s = iterate(seps);
    if (s.size() != 2) raise("ValueError", "separators must be a pair of strings");
    o.separators = std::make_pair(soft_str(s[0]), soft_str(s[1]));
  }
  o.sort_keys = truthy(b.get(3, kFalse));
  return Value::string(json_dumps(v, o));
}

Value f_trim(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_trim", a, {"chars"}, 0);
  std::string s = soft_str(v);
  if (b.given[0] && !b.v[0].is_none()) {
    std::string chars = soft_str(b.v[0]);
    return Value::string(py_strip(s, true, true, &chars));
  }
  return Value::string(py_strip(s, true, true));
}

Value f_truncate(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_truncate", a, {"length", "killwords", "end", "leeway"}, 0);
  int64_t length = b.get(0, Value::integer(255)).as_int();
  bool killwords = truthy(b.get(1, kFalse));
  std::string end = soft_str(b.get(2, Value::string("...")));
  int64_t leeway = b.given[3] && !b.v[3].is_none() ? b.v[3].as_int() : 5;
  auto cps = utf8_decode(soft_str(v));
  int64_t n = static_cast<int64_t>(cps.size()), elen = static_cast<int64_t>(cp_length(end));
  if (n <= length + leeway) return Value::string(utf8_encode(cps));
  cps.resize(static_cast<size_t>(std::max<int64_t>(0, length - elen)));
  if (killwords) return Value::string(utf8_encode(cps) + end);
  std::string head = utf8_encode(cps);
  size_t sp = head.rfind(' ');
  if (sp != std::string::npos) head.resize(sp);
  return Value::string(head + end);
}

Value f_unique(Interp&, const Value& v, Args& a) {
  auto b = bind_rest("do_unique", a, {"case_sensitive", "attribute"}, 0);
  bool cs = truthy(b.get(0, kFalse));
  List seen, out;
  for (const Value& x : iterate(v)) {
    Value k = b.given[1] && !b.v[1].is_none() ? attr_path(x, b.v[1]) : x;
    if (!cs) k = ignore_case(k);
    bool dup = false;
    for (const Value& s : seen)
      if (py_eq(s, k)) dup = true;
    if (dup) continue;
    seen.push_back(k);
    out.push_back(x);
  }
  return make_iterator("generator", std::move(out));
}

Value f_urlencode(Interp&, const Value& v, Args& a) {
  bind_rest("do_urlencode", a, {}, 0);
  auto quote = [](const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
      if (isalnum(c) || strchr("_.-~/", c)) out += static_cast<char>(c);
      else {
        char buf[4];
        snprintf(buf, sizeof buf, "%%%02X", c);
        out += buf;
      }
    }
    return out;
  };
  if (v.is_string()) return Value::string(quote(v.str()));
  if (v.is_dict()) {
    std::string out;
    for (const auto& [k, x] : v.dict().entries) out += (out.empty() ? "" : "&") + quote(soft_str(k)) + "=" + quote(soft_str(x));
    return Value::string(out);
  }
  return Value::string(quote(soft_str(v)));
}

Value f_wordcount(Interp&, const Value& v, Args& a) {
  bind_rest("do_wordcount", a, {}, 0);
  std::string s = soft_str(v);
  int64_t n = 0;
  bool in_word = false;
  for (size_t i = 0; i < s.size();) {
    uint32_t c = utf8_next(s, i);
    bool w = c == '_' || (c < 0x80 ? isalnum(static_cast<int>(c)) != 0 : !py_isspace(c));
    if (w && !in_word) n++;
    in_word = w;
  }
  return Value::integer(n);
}

struct FilterEntry {
  const char* name;
  FilterFn fn;
};

const FilterEntry kFilters[] = {
    {"abs", f_abs}, {"attr", f_attr}, {"batch", f_batch}, {"capitalize", f_capitalize}, {"center", f_center},
    {"count", f_length}, {"d", f_default}, {"default", f_default}, {"dictsort", f_dictsort}, {"e", f_escape},
    {"escape", f_escape}, {"first", f_first}, {"float", f_float}, {"forceescape", f_escape}, {"format", f_format},
    {"groupby", f_groupby}, {"indent", f_indent}, {"int", f_int}, {"items", f_items}, {"join", f_join},
    {"last", f_last}, {"length", f_length}, {"list", f_list}, {"lower", f_lower}, {"map", f_map}, {"max", f_max},
    {"min", f_min}, {"pprint", f_pprint}, {"reject", f_reject}, {"rejectattr", f_rejectattr},
    {"replace", f_replace}, {"reverse", f_reverse}, {"round", f_round}, {"safe", f_safe}, {"select", f_select},
    {"selectattr", f_selectattr}, {"slice", f_slice}, {"sort", f_sort}, {"string", f_string},
    {"striptags", f_striptags}, {"sum", f_sum}, {"title", f_title}, {"tojson", f_tojson}, {"trim", f_trim},
    {"truncate", f_truncate}, {"unique", f_unique}, {"upper", f_upper}, {"urlencode", f_urlencode},
    {"wordcount", f_wordcount},
};

// jinja2 filters that we leave out: a template using one fails when it runs that filter.
const char* kUnsupportedFilters[] = {"filesizeformat", "random", "urlize", "wordwrap", "xmlattr"};

// ---- tests --------------------------------------------------------------------------------------------------

Value one_arg(const char* name, Args& a) { return a.bind(name, {"other"}, 1).v[0]; }

bool t_defined(Interp&, const Value& v, Args&) { return !v.is_undefined(); }
bool t_undefined(Interp&, const Value& v, Args&) { return v.is_undefined(); }
bool t_none(Interp&, const Value& v, Args&) { return v.is_none(); }
bool t_boolean(Interp&, const Value& v, Args&) { return v.is_bool(); }
bool t_false(Interp&, const Value& v, Args&) { return v.is_bool() && !v.as_bool(); }
bool t_true(Interp&, const Value& v, Args&) { return v.is_bool() && v.as_bool(); }
bool t_integer(Interp&, const Value& v, Args&) { return v.is_int(); }
bool t_float(Interp&, const Value& v, Args&) { return v.is_float(); }
bool t_number(Interp&, const Value& v, Args&) { return v.is_number(); }
bool t_string(Interp&, const Value& v, Args&) { return v.is_string(); }
bool t_mapping(Interp&, const Value& v, Args&) { return v.is_dict(); }
bool t_sequence(Interp&, const Value& v, Args&) {
  return v.is_string() || v.is_sequence() || v.is_dict() || v.is_undefined();
}
bool t_iterable(Interp&, const Value& v, Args&) {
  if (v.is_object()) return dynamic_cast<Iterator*>(&v.obj()) != nullptr || dynamic_cast<Group*>(&v.obj()) != nullptr;
  return v.is_string() || v.is_sequence() || v.is_dict() || v.is_undefined();
}
bool t_callable(Interp&, const Value& v, Args&) { return v.is_undefined() || (v.is_object() && v.obj().callable()); }
bool t_escaped(Interp&, const Value&, Args&) { return false; }
bool t_lower(Interp&, const Value& v, Args&) {
  std::string s = soft_str(v);
  return py_lower(s) == s && py_upper(s) != s;
}
bool t_upper(Interp&, const Value& v, Args&) {
  std::string s = soft_str(v);
  return py_upper(s) == s && py_lower(s) != s;
}
Value mod2(const Value& v) { return binary_op(ExprKind::Mod, v, Value::integer(2)); }
bool t_odd(Interp&, const Value& v, Args&) { return py_eq(mod2(v), Value::integer(1)); }
bool t_even(Interp&, const Value& v, Args&) { return py_eq(mod2(v), Value::integer(0)); }
bool t_divisibleby(Interp&, const Value& v, Args& a) {
  Value n = a.bind("test_divisibleby", {"num"}, 1).v[0];
  return py_eq(binary_op(ExprKind::Mod, v, n), Value::integer(0));
}
bool t_eq(Interp&, const Value& v, Args& a) { return py_eq(v, one_arg("eq", a)); }
bool t_ne(Interp&, const Value& v, Args& a) { return !py_eq(v, one_arg("ne", a)); }
bool cmp_test(const Value& v, Args& a, const char* op) {
  int c = py_compare(v, one_arg(op, a), op);
  if (c == 2) return false;
  if (!strcmp(op, "<")) return c < 0;
  if (!strcmp(op, "<=")) return c <= 0;
  if (!strcmp(op, ">")) return c > 0;
  return c >= 0;
}
bool t_lt(Interp&, const Value& v, Args& a) { return cmp_test(v, a, "<"); }
bool t_le(Interp&, const Value& v, Args& a) { return cmp_test(v, a, "<="); }
bool t_gt(Interp&, const Value& v, Args& a) { return cmp_test(v, a, ">"); }
bool t_ge(Interp&, const Value& v, Args& a) { return cmp_test(v, a, ">="); }
bool t_in(Interp&, const Value& v, Args& a) { return py_contains(a.bind("test_in", {"seq"}, 1).v[0], v); }
bool t_sameas(Interp&, const Value& v, Args& a) {
  Value o = one_arg("test_sameas", a);
  if (v.kind() != o.kind()) return false;
  switch (v.kind()) {
    case Value::Kind::None: case Value::Kind::Undefined: return v.is_none() || v.undefined_info() == o.undefined_info();
    case Value::Kind::Bool: return v.as_bool() == o.as_bool();
    case Value::Kind::Int: return v.as_int() == o.as_int() && v.as_int() >= -5 && v.as_int() <= 256;
    case Value::Kind::Object: return v.obj_ptr() == o.obj_ptr();
    default: return false;
  }
}
bool t_filter(Interp&, const Value& v, Args&) { return v.is_string() && find_filter(v.str()) != nullptr; }
bool t_test(Interp&, const Value& v, Args&) { return v.is_string() && find_test(v.str()) != nullptr; }

struct TestEntry {
  const char* name;
  TestFn fn;
};

const TestEntry kTests[] = {
    {"!=", t_ne}, {"<", t_lt}, {"<=", t_le}, {"==", t_eq}, {">", t_gt}, {">=", t_ge}, {"boolean", t_boolean},
    {"callable", t_callable}, {"defined", t_defined}, {"divisibleby", t_divisibleby}, {"eq", t_eq},
    {"equalto", t_eq}, {"escaped", t_escaped}, {"even", t_even}, {"false", t_false}, {"filter", t_filter},
    {"float", t_float}, {"ge", t_ge}, {"greaterthan", t_gt}, {"gt", t_gt}, {"in", t_in}, {"integer", t_integer},
    {"iterable", t_iterable}, {"le", t_le}, {"lessthan", t_lt}, {"lower", t_lower}, {"lt", t_lt},
    {"mapping", t_mapping}, {"ne", t_ne}, {"none", t_none}, {"number", t_number}, {"odd", t_odd},
    {"sameas", t_sameas}, {"sequence", t_sequence}, {"string", t_string}, {"test", t_test}, {"true", t_true},
    {"undefined", t_undefined}, {"upper", t_upper},
};

// ---- globals ----------------------------------------------------------------------------------------------

constexpr int64_t kMaxRange = 100000;  // jinja2.sandbox.MAX_RANGE

int64_t int_arg(const Value& v) {
  if (!(v.is_int() || v.is_bool())) type_error(std::string("'") + py_type_name(v) + "' object cannot be interpreted as an integer");
  return v.as_int();
}

Value g_range(Interp&, Args& a) {
  if (!a.kw.empty()) type_error("range() takes no keyword arguments");
  if (a.pos.empty() || a.pos.size() > 3)
    type_error(a.pos.empty() ? "range expected at least 1 argument, got 0" : "range expected at most 3 arguments, got " + std::to_string(a.pos.size()));
  int64_t start = 0, stop, step = 1;
  if (a.pos.size() == 1) stop = int_arg(a.pos[0]);
  else {
    start = int_arg(a.pos[0]);
    stop = int_arg(a.pos[1]);
    if (a.pos.size() == 3) step = int_arg(a.pos[2]);
  }
  if (step == 0) raise("ValueError", "range() arg 3 must not be zero");
  int64_t n = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0) : (start > stop ? (start - stop - step - 1) / -step : 0);
  if (n > kMaxRange)
    raise("OverflowError", "Range too big. The sandbox blocks ranges larger than MAX_RANGE (" + std::to_string(kMaxRange) + ").");
  List out;
  for (int64_t i = 0; i < n; i++) out.push_back(Value::integer(start + i * step));
  return Value::list(std::move(out));
}

Dict dict_from_args(const char* fname, Args& a) {
  Dict d;
  if (a.pos.size() > 1) type_error(std::string(fname) + " expected at most 1 argument, got " + std::to_string(a.pos.size()));
  if (!a.pos.empty()) {
    const Value& src = a.pos[0];
    if (src.is_dict()) {
      d = src.dict();
    } else {
      for (const Value& pair : iterate(src)) {
        List kv = iterate(pair);
        if (kv.size() != 2)
          raise("ValueError", "dictionary update sequence element #0 has length " + std::to_string(kv.size()) + "; 2 is required");
        d.set(kv[0], kv[1]);
      }
    }
  }
  for (const auto& [k, v] : a.kw) d.set(Value::string(k), v);
  return d;
}

Value g_dict(Interp&, Args& a) { return Value::dict(dict_from_args("dict", a)); }

Value g_namespace(Interp&, Args& a) {
  auto ns = std::make_shared<Namespace>();
  ns->attrs = dict_from_args("Namespace", a);
  return Value::object(ns);
}

Value g_raise_exception(Interp&, Args& a) {
  auto b = a.bind("raise_exception", {"message"}, 1);
  raise("TemplateError", py_str(b.v[0]));
}

Value g_strftime_now(Interp& in, Args& a) {
  auto b = a.bind("strftime_now", {"format"}, 1);
  if (!b.v[0].is_string()) type_error(std::string("strftime() argument 1 must be str, not ") + py_type_name(b.v[0]));
  std::time_t t = in.now();
  std::tm tm{};
  localtime_r(&t, &tm);
  const std::string& fmt = b.v[0].str();
  if (fmt.empty()) return kEmptyStr;
  std::vector<char> buf(fmt.size() * 4 + 256);
  size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &tm);
  return Value::string(std::string(buf.data(), n));
}

struct Cycler : Object {
  List items;
  size_t pos = 0;
  const char* type_name() const override { return "Cycler"; }
  std::string module() const override { return "jinja2.utils"; }
  bool get_attr(std::string_view name, Value& out) override {
    Cycler* self = this;
    if (name == "current") { out = items[pos]; return true; }
    if (name == "next") {
      out = make_function("next", [self](Interp&, Args&) -> Value {
        Value v = self->items[self->pos];
        self->pos = (self->pos + 1) % self->items.size();
        return v;
      });
      return true;
    }
    if (name == "reset") {
      out = make_function("reset", [self](Interp&, Args&) -> Value { self->pos = 0; return kNone; });
      return true;
    }
    return false;
  }
};

Value g_cycler(Interp&, Args& a) {
  if (a.pos.empty()) raise("RuntimeError", "at least one item has to be provided");
  auto c = std::make_shared<Cycler>();
  c->items = a.pos;
  return Value::object(c);
}

Value g_joiner(Interp&, Args& a) {
  auto b = a.bind("Joiner", {"sep"}, 0);
  std::string sep = b.given[0] ? py_str(b.v[0]) : ", ";
  auto used = std::make_shared<bool>(false);
  return make_function("joiner", [sep, used](Interp&, Args&) -> Value {
    if (!*used) { *used = true; return kEmptyStr; }
    return Value::string(sep);
  });
}

Value g_lipsum(Interp&, Args&) { raise("NotSupported", "not supported yet: lipsum()"); }

struct GlobalEntry {
  const char* name;
  Value (*fn)(Interp&, Args&);
};

const GlobalEntry kGlobals[] = {
    {"range", g_range}, {"dict", g_dict}, {"namespace", g_namespace}, {"cycler", g_cycler}, {"joiner", g_joiner},
    {"lipsum", g_lipsum}, {"raise_exception", g_raise_exception}, {"strftime_now", g_strftime_now},
};

// ---- methods of str, list and dict ---------------------------------------------------------------------

using Method = Value (*)(const Value& self, Args& a);

Value bound(const Value& self, const char* name, Method m) {
  return make_function(name, [self, m](Interp&, Args& a) { return m(self, a); });
}

const std::string& str_arg(const char* fname, const Value& v, int which = 1) {
  if (!v.is_string())
    type_error(std::string(fname) + "() argument " + std::to_string(which) + " must be str, not " + py_type_name(v));
  return v.str();
}

// Code point index to byte offset (clamped), as Python's negative-aware slice bounds.
size_t cp_to_byte(const std::string& s, int64_t cp) {
  size_t i = 0;
  for (int64_t k = 0; k < cp && i < s.size(); k++) utf8_next(s, i);
  return i;
}

void bounds(const std::string& s, const Args::Bound& b, size_t first, size_t& lo, size_t& hi) {
  int64_t n = static_cast<int64_t>(cp_length(s));
  auto norm = [&](const Value& v, int64_t def) {
    if (v.is_none() || v.is_undefined()) return def;
    int64_t x = int_arg(v);
    if (x < 0) x += n;
    return std::clamp<int64_t>(x, 0, n);
  };
  int64_t start = b.given[first] ? norm(b.v[first], 0) : 0;
  int64_t end = b.given[first + 1] ? norm(b.v[first + 1], n) : n;
  lo = cp_to_byte(s, start);
  hi = end < start ? lo : cp_to_byte(s, end);
}

bool affix_match(const char* fname, const std::string& s, const Value& affix, bool prefix, size_t lo, size_t hi) {
  std::string_view view(s.data() + lo, hi - lo);
  auto one = [&](const Value& x) {
    if (!x.is_string())
      type_error(std::string(fname) + " first arg must be str or a tuple of str, not " + py_type_name(x));
    const std::string& t = x.str();
    if (t.size() > view.size()) return false;
    return prefix ? view.compare(0, t.size(), t) == 0 : view.compare(view.size() - t.size(), t.size(), t) == 0;
  };
  if (affix.is_tuple()) {
    for (const Value& x : affix.items())
      if (one(x)) return true;
    return false;
  }
  if (!affix.is_string())
    type_error(std::string(fname) + " first arg must be str or a tuple of str, not " + py_type_name(affix));
  return one(affix);
}

Value m_startswith(const Value& self, Args& a) {
  auto b = a.bind("startswith", {"prefix", "start", "end"}, 1);
  size_t lo, hi;
  bounds(self.str(), b, 1, lo, hi);
  return Value::boolean(affix_match("startswith", self.str(), b.v[0], true, lo, hi));
}
Value m_endswith(const Value& self, Args& a) {
  auto b = a.bind("endswith", {"suffix", "start", "end"}, 1);
  size_t lo, hi;
  bounds(self.str(), b, 1, lo, hi);
  return Value::boolean(affix_match("endswith", self.str(), b.v[0], false, lo, hi));
}

Value strip_method(const Value& self, Args& a, const char* fname, bool l, bool r) {
  auto b = a.bind(fname, {"chars"}, 0);
  if (b.given[0] && !b.v[0].is_none()) {
    std::string chars = str_arg(fname, b.v[0]);
    return Value::string(py_strip(self.str(), l, r, &chars));
  }
  return Value::string(py_strip(self.str(), l, r));
}
Value m_strip(const Value& s, Args& a) { return strip_method(s, a, "strip", true, true); }
Value m_lstrip(const Value& s, Args& a) { return strip_method(s, a, "lstrip", true, false); }
Value m_rstrip(const Value& s, Args& a) { return strip_method(s, a, "rstrip", false, true); }

List split_whitespace(const std::string& s, int64_t maxsplit, bool from_right) {
  std::vector<std::pair<size_t, size_t>> words;
  size_t i = 0;
  while (i < s.size()) {
    size_t k = i;
    if (py_isspace(utf8_next(s, k))) { i = k; continue; }
    size_t start = i;
    while (i < s.size()) {
      size_t k2 = i;
      if (py_isspace(utf8_next(s, k2))) break;
      i = k2;
    }
    words.emplace_back(start, i);
  }
  List out;
  if (maxsplit < 0 || static_cast<size_t>(maxsplit) >= words.size()) {
    for (auto [b, e] : words) out.push_back(Value::string(s.substr(b, e - b)));
    return out;
  }
  if (!from_right) {
    for (int64_t w = 0; w < maxsplit; w++) out.push_back(Value::string(s.substr(words[w].first, words[w].second - words[w].first)));
    out.push_back(Value::string(s.substr(words[maxsplit].first)));
  } else {
    size_t keep = words.size() - static_cast<size_t>(maxsplit);
    out.push_back(Value::string(s.substr(0, words[keep - 1].second)));
    for (size_t w = keep; w < words.size(); w++) out.push_back(Value::string(s.substr(words[w].first, words[w].second - words[w].first)));
  }
  return out;
}

Value split_method(const Value& self, Args& a, bool from_right) {
  const char* fname = from_right ? "rsplit" : "split";
  auto b = a.bind(fname, {"sep", "maxsplit"}, 0);
  int64_t maxsplit = b.given[1] ? int_arg(b.v[1]) : -1;
  const std::string& s = self.str();
  if (!b.given[0] || b.v[0].is_none()) return Value::list(split_whitespace(s, maxsplit, from_right));
  const std::string& sep = str_arg(fname, b.v[0]);
  if (sep.empty()) raise("ValueError", "empty separator");
  std::vector<std::string> parts;
  if (!from_right) {
    size_t pos = 0;
    int64_t n = 0;
    while (maxsplit < 0 || n < maxsplit) {
      size_t f = s.find(sep, pos);
      if (f == std::string::npos) break;
      parts.push_back(s.substr(pos, f - pos));
      pos = f + sep.size();
      n++;
    }
    parts.push_back(s.substr(pos));
  } else {
    size_t end = s.size();
    int64_t n = 0;
    while (maxsplit < 0 || n < maxsplit) {
      if (end < sep.size()) break;
      size_t f = s.rfind(sep, end - sep.size());
      if (f == std::string::npos) break;
      parts.insert(parts.begin(), s.substr(f + sep.size(), end - f - sep.size()));
      end = f;
      n++;
    }
    parts.insert(parts.begin(), s.substr(0, end));
  }
  List out;
  for (auto& p : parts) out.push_back(Value::string(std::move(p)));
  return Value::list(std::move(out));
}
Value m_split(const Value& s, Args& a) { return split_method(s, a, false); }
Value m_rsplit(const Value& s, Args& a) { return split_method(s, a, true); }

Value m_splitlines(const Value& self, Args& a) {
  auto b = a.bind("splitlines", {"keepends"}, 0);
  List out;
  for (auto& l : py_splitlines(self.str(), truthy(b.get(0, kFalse)))) out.push_back(Value::string(std::move(l)));
  return Value::list(std::move(out));
}

Value m_upper(const Value& s, Args& a) { a.bind("upper", {}, 0); return Value::string(py_upper(s.str())); }
Value m_lower(const Value& s, Args& a) { a.bind("lower", {}, 0); return Value::string(py_lower(s.str())); }
Value m_title(const Value& s, Args& a) { a.bind("title", {}, 0); return Value::string(py_title(s.str())); }
Value m_capitalize(const Value& s, Args& a) { a.bind("capitalize", {}, 0); return Value::string(py_capitalize(s.str())); }
Value m_casefold(const Value& s, Args& a) { a.bind("casefold", {}, 0); return Value::string(py_lower(s.str())); }
Value m_swapcase(const Value& s, Args& a) {
  a.bind("swapcase", {}, 0);
  std::string out;
  const std::string& t = s.str();
  for (size_t i = 0; i < t.size();) {
    size_t b0 = i;
    utf8_next(t, i);
    std::string ch = t.substr(b0, i - b0), up = py_upper(ch);
    out += up != ch ? up : py_lower(ch);
  }
  return Value::string(out);
}

Value m_replace(const Value& self, Args& a) {
  auto b = a.bind("replace", {"old", "new", "count"}, 2);
  return Value::string(str_replace(self.str(), str_arg("replace", b.v[0], 1), str_arg("replace", b.v[1], 2),
                                   b.given[2] ? int_arg(b.v[2]) : -1));
}

int64_t find_impl(const Value& self, Args& a, const char* fname, bool from_right) {
  auto b = a.bind(fname, {"sub", "start", "end"}, 1);
  const std::string& s = self.str();
  const std::string& sub = str_arg(fname, b.v[0]);
  size_t lo, hi;
  bounds(s, b, 1, lo, hi);
  if (hi < lo || sub.size() > hi - lo) return -1;
  size_t f = from_right ? s.rfind(sub, hi - sub.size()) : s.find(sub, lo);
  if (f == std::string::npos || f < lo || f + sub.size() > hi) return -1;
  return static_cast<int64_t>(cp_length(std::string_view(s).substr(0, f)));
}
Value m_find(const Value& s, Args& a) { return Value::integer(find_impl(s, a, "find", false)); }
Value m_rfind(const Value& s, Args& a) { return Value::integer(find_impl(s, a, "rfind", true)); }
Value m_index(const Value& s, Args& a) {
  int64_t r = find_impl(s, a, "index", false);
  if (r < 0) raise("ValueError", "substring not found");
  return Value::integer(r);
}
Value m_rindex(const Value& s, Args& a) {
  int64_t r = find_impl(s, a, "rindex", true);
  if (r < 0) raise("ValueError", "substring not found");
  return Value::integer(r);
}

Value m_count(const Value& self, Args& a) {
  auto b = a.bind("count", {"sub", "start", "end"}, 1);
  const std::string& s = self.str();
  const std::string& sub = str_arg("count", b.v[0]);
  size_t lo, hi;
  bounds(s, b, 1, lo, hi);
  if (hi < lo) return kZero;
  std::string_view view(s.data() + lo, hi - lo);
  if (sub.empty()) return Value::integer(static_cast<int64_t>(cp_length(view)) + 1);
  int64_t n = 0;
  for (size_t p = view.find(sub); p != std::string_view::npos; p = view.find(sub, p + sub.size())) n++;
  return Value::integer(n);
}

Value m_join(const Value& self, Args& a) {
  auto b = a.bind("join", {"iterable"}, 1);
  List items = iterate(b.v[0]);
  std::string out;
  for (size_t i = 0; i < items.size(); i++) {
    if (!items[i].is_string())
      type_error("sequence item " + std::to_string(i) + ": expected str instance, " + py_type_name(items[i]) + " found");
    if (i) out += self.str();
    out += items[i].str();
  }
  return Value::string(out);
}

bool all_chars(const std::string& s, bool (*pred)(uint32_t)) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size();)
    if (!pred(utf8_next(s, i))) return false;
  return true;
}
bool is_digit_cp(uint32_t c) { return c >= '0' && c <= '9'; }
bool is_alpha_cp(uint32_t c) { return c < 0x80 ? isalpha(static_cast<int>(c)) != 0 : !py_isspace(c) && c > 0xBF; }
bool is_alnum_cp(uint32_t c) { return is_digit_cp(c) || is_alpha_cp(c); }
Value m_isdigit(const Value& s, Args& a) { a.bind("isdigit", {}, 0); return Value::boolean(all_chars(s.str(), is_digit_cp)); }
Value m_isnumeric(const Value& s, Args& a) { a.bind("isnumeric", {}, 0); return Value::boolean(all_chars(s.str(), is_digit_cp)); }
Value m_isdecimal(const Value& s, Args& a) { a.bind("isdecimal", {}, 0); return Value::boolean(all_chars(s.str(), is_digit_cp)); }
Value m_isalpha(const Value& s, Args& a) { a.bind("isalpha", {}, 0); return Value::boolean(all_chars(s.str(), is_alpha_cp)); }
Value m_isalnum(const Value& s, Args& a) { a.bind("isalnum", {}, 0); return Value::boolean(all_chars(s.str(), is_alnum_cp)); }
Value m_isspace(const Value& s, Args& a) { a.bind("isspace", {}, 0); return Value::boolean(all_chars(s.str(), py_isspace)); }
Value m_islower(const Value& s, Args& a) {
  a.bind("islower", {}, 0);
  return Value::boolean(py_lower(s.str()) == s.str() && py_upper(s.str()) != s.str());
}
Value m_isupper(const Value& s, Args& a) {
  a.bind("isupper", {}, 0);
  return Value::boolean(py_upper(s.str()) == s.str() && py_lower(s.str()) != s.str());
}

Value pad(const Value& self, Args& a, const char* fname, int where) {
  auto b = a.bind(fname, {"width", "fillchar"}, 1);
  int64_t width = int_arg(b.v[0]);
  std::string fill = b.given[1] ? str_arg(fname, b.v[1], 2) : " ";
  if (cp_length(fill) != 1) type_error("The fill character must be exactly one character long");
  const std::string& s = self.str();
  int64_t len = static_cast<int64_t>(cp_length(s));
  if (width <= len) return self;
  int64_t marg = width - len, left = where < 0 ? 0 : where > 0 ? marg : marg / 2 + (marg & width & 1);
  std::string out;
  for (int64_t i = 0; i < left; i++) out += fill;
  out += s;
  for (int64_t i = 0; i < marg - left; i++) out += fill;
  return Value::string(out);
}
Value m_center(const Value& s, Args& a) { return pad(s, a, "center", 0); }
Value m_ljust(const Value& s, Args& a) { return pad(s, a, "ljust", -1); }
Value m_rjust(const Value& s, Args& a) { return pad(s, a, "rjust", 1); }
Value m_zfill(const Value& self, Args& a) {
  auto b = a.bind("zfill", {"width"}, 1);
  std::string s = self.str();
  int64_t width = int_arg(b.v[0]), len = static_cast<int64_t>(cp_length(s));
  if (width <= len) return self;
  std::string sign;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    sign = s.substr(0, 1);
    s = s.substr(1);
  }
  return Value::string(sign + std::string(static_cast<size_t>(width - len), '0') + s);
}

Value partition(const Value& self, Args& a, bool from_right) {
  const char* fname = from_right ? "rpartition" : "partition";
  auto b = a.bind(fname, {"sep"}, 1);
  const std::string& s = self.str();
  const std::string& sep = str_arg(fname, b.v[0]);
  if (sep.empty()) raise("ValueError", "empty separator");
  size_t f = from_right ? s.rfind(sep) : s.find(sep);
  if (f == std::string::npos)
    return from_right ? Value::tuple({kEmptyStr, kEmptyStr, self}) : Value::tuple({self, kEmptyStr, kEmptyStr});
  return Value::tuple({Value::string(s.substr(0, f)), Value::string(sep), Value::string(s.substr(f + sep.size()))});
}
Value m_partition(const Value& s, Args& a) { return partition(s, a, false); }
Value m_rpartition(const Value& s, Args& a) { return partition(s, a, true); }

Value m_removeprefix(const Value& self, Args& a) {
  const std::string& p = str_arg("removeprefix", a.bind("removeprefix", {"prefix"}, 1).v[0]);
  const std::string& s = self.str();
  return s.compare(0, p.size(), p) == 0 ? Value::string(s.substr(p.size())) : self;
}
Value m_removesuffix(const Value& self, Args& a) {
  const std::string& p = str_arg("removesuffix", a.bind("removesuffix", {"suffix"}, 1).v[0]);
  const std::string& s = self.str();
  return !p.empty() && s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0
             ? Value::string(s.substr(0, s.size() - p.size()))
             : self;
}

// str.format through jinja2's SandboxedFormatter: {} {0} {name} {0.attr} {x[key]}, !r !s, and
// the common format specs (fill, align, width, precision, s/d/f).
Value m_format(const Value& self, Args& a) {
  const std::string& f = self.str();
  std::string out;
  size_t auto_idx = 0;
  for (size_t i = 0; i < f.size(); i++) {
    char c = f[i];
    if (c == '{' && i + 1 < f.size() && f[i + 1] == '{') { out += '{'; i++; continue; }
    if (c == '}' && i + 1 < f.size() && f[i + 1] == '}') { out += '}'; i++; continue; }
    if (c == '}') raise("ValueError", "Single '}' encountered in format string");
    if (c != '{') { out += c; continue; }
    size_t close = f.find('}', i);
    if (close == std::string::npos) raise("ValueError", "Single '{' encountered in format string");
    std::string field = f.substr(i + 1, close - i - 1), conv, spec;
    i = close;
    size_t colon = field.find(':');
    if (colon != std::string::npos) { spec = field.substr(colon + 1); field = field.substr(0, colon); }
    size_t bang = field.find('!');
    if (bang != std::string::npos) { conv = field.substr(bang + 1); field = field.substr(0, bang); }
    size_t end = field.find_first_of(".[");
    std::string head = field.substr(0, end);
    Value v;
    if (head.empty()) {
      if (auto_idx >= a.pos.size()) raise("IndexError", "Replacement index " + std::to_string(auto_idx) + " out of range for positional args tuple");
      v = a.pos[auto_idx++];
    } else if (std::all_of(head.begin(), head.end(), [](char ch) { return isdigit(static_cast<unsigned char>(ch)); })) {
      size_t k = std::stoul(head);
      if (k >= a.pos.size()) raise("IndexError", "Replacement index " + head + " out of range for positional args tuple");
      v = a.pos[k];
    } else {
      const Value* kv = nullptr;
      for (const auto& [name, x] : a.kw)
        if (name == head) kv = &x;
      if (!kv) raise("KeyError", py_repr_string(head));
      v = *kv;
    }
    while (end != std::string::npos && end < field.size()) {
      if (field[end] == '.') {
        size_t nx = field.find_first_of(".[", end + 1);
        v = get_attr(v, field.substr(end + 1, nx == std::string::npos ? std::string::npos : nx - end - 1));
        end = nx;
      } else {
        size_t rb = field.find(']', end);
        std::string key = field.substr(end + 1, rb - end - 1);
        bool digits = !key.empty() && std::all_of(key.begin(), key.end(), [](char ch) { return isdigit(static_cast<unsigned char>(ch)); });
        v = get_item(v, digits ? Value::integer(std::stoll(key)) : Value::string(key));
        end = rb == std::string::npos ? rb : rb + 1;
      }
    }
    std::string piece = conv == "r" ? py_repr(v) : py_str(v);
    if (!spec.empty()) {
      char fill = ' ', align = 0;
      size_t k = 0;
      if (spec.size() >= 2 && strchr("<>^=", spec[1])) { fill = spec[0]; align = spec[1]; k = 2; }
      else if (strchr("<>^=", spec[0])) { align = spec[0]; k = 1; }
      if (k < spec.size() && spec[k] == '0' && !align) { fill = '0'; align = '='; k++; }
      size_t width = 0;
      while (k < spec.size() && isdigit(static_cast<unsigned char>(spec[k]))) width = width * 10 + static_cast<size_t>(spec[k++] - '0');
      int prec = -1;
      if (k < spec.size() && spec[k] == '.') {
        prec = 0;
        k++;
        while (k < spec.size() && isdigit(static_cast<unsigned char>(spec[k]))) prec = prec * 10 + (spec[k++] - '0');
      }
      char type = k < spec.size() ? spec[k] : 0;
      if (type == 'f' || type == 'F' || (type == 0 && prec >= 0 && v.is_number())) {
        char buf[128];
        snprintf(buf, sizeof buf, "%.*f", prec < 0 ? 6 : prec, v.as_double());
        piece = buf;
      } else if (type == 'd') {
        piece = std::to_string(v.as_int());
      } else if (prec >= 0) {
        auto cps = utf8_decode(piece);
        if (cps.size() > static_cast<size_t>(prec)) cps.resize(static_cast<size_t>(prec));
        piece = utf8_encode(cps);
      }
      size_t len = cp_length(piece);
      if (!align) align = v.is_number() ? '>' : '<';
      if (len < width) {
        size_t m = width - len;
        if (align == '<') piece += std::string(m, fill);
        else if (align == '>' || align == '=') piece = std::string(m, fill) + piece;
        else piece = std::string(m / 2, fill) + piece + std::string(m - m / 2, fill);
      }
    }
    out += piece;
  }
  return Value::string(out);
}

struct MethodEntry {
  const char* name;
  Method fn;
};

const MethodEntry kStrMethods[] = {
    {"capitalize", m_capitalize}, {"casefold", m_casefold}, {"center", m_center}, {"count", m_count},
    {"endswith", m_endswith}, {"find", m_find}, {"format", m_format}, {"index", m_index}, {"isalnum", m_isalnum},
    {"isalpha", m_isalpha}, {"isdecimal", m_isdecimal}, {"isdigit", m_isdigit}, {"islower", m_islower},
    {"isnumeric", m_isnumeric}, {"isspace", m_isspace}, {"isupper", m_isupper}, {"join", m_join},
    {"ljust", m_ljust}, {"lower", m_lower}, {"lstrip", m_lstrip}, {"partition", m_partition},
    {"removeprefix", m_removeprefix}, {"removesuffix", m_removesuffix}, {"replace", m_replace}, {"rfind", m_rfind},
    {"rindex", m_rindex}, {"rjust", m_rjust}, {"rpartition", m_rpartition}, {"rsplit", m_rsplit},
    {"rstrip", m_rstrip}, {"split", m_split}, {"splitlines", m_splitlines}, {"startswith", m_startswith},
    {"strip", m_strip}, {"swapcase", m_swapcase}, {"title", m_title}, {"upper", m_upper}, {"zfill", m_zfill},
};

Value m_dict_keys(const Value& self, Args& a) {
  a.bind("keys", {}, 0);
  return Value::list(iterate(self));
}
Value m_dict_values(const Value& self, Args& a) {
  a.bind("values", {}, 0);
  List out;
  for (const auto& [k, v] : self.dict().entries) out.push_back(v);
  return Value::list(std::move(out));
}
Value m_dict_items(const Value& self, Args& a) {
  a.bind("items", {}, 0);
  List out;
  for (const auto& [k, v] : self.dict().entries) out.push_back(Value::tuple({k, v}));
  return Value::list(std::move(out));
}
Value m_dict_get(const Value& self, Args& a) {
  if (!a.kw.empty()) type_error("get() takes no keyword arguments");
  if (a.pos.empty() || a.pos.size() > 2)
    type_error("get expected at " + std::string(a.pos.empty() ? "least 1 argument, got 0" : "most 2 arguments, got " + std::to_string(a.pos.size())));
  const Value* v = self.dict().find(a.pos[0]);
  return v ? *v : (a.pos.size() > 1 ? a.pos[1] : kNone);
}
Value m_copy(const Value& self, Args& a) {
  a.bind("copy", {}, 0);
  return self;
}

const MethodEntry kDictMethods[] = {
    {"copy", m_copy}, {"get", m_dict_get}, {"items", m_dict_items}, {"keys", m_dict_keys}, {"values", m_dict_values},
};

Value m_list_index(const Value& self, Args& a) {
  if (!a.kw.empty()) type_error("index() takes no keyword arguments");
  if (a.pos.empty()) type_error("index expected at least 1 argument, got 0");
  const List& items = self.items();
  for (size_t i = 0; i < items.size(); i++)
    if (py_eq(items[i], a.pos[0])) return Value::integer(static_cast<int64_t>(i));
  raise("ValueError", self.is_tuple() ? "tuple.index(x): x not in tuple" : py_repr(a.pos[0]) + " is not in list");
}
Value m_list_count(const Value& self, Args& a) {
  if (a.pos.size() != 1) type_error("count() takes exactly one argument (" + std::to_string(a.pos.size()) + " given)");
  int64_t n = 0;
  for (const Value& x : self.items())
    if (py_eq(x, a.pos[0])) n++;
  return Value::integer(n);
}

const MethodEntry kListMethods[] = {{"copy", m_copy}, {"count", m_list_count}, {"index", m_list_index}};

// What the immutable sandbox refuses (modifying methods) and the dunder attributes all objects have.
const char* kUnsafeList[] = {"append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"};
const char* kUnsafeDict[] = {"clear", "pop", "popitem", "setdefault", "update"};

template <size_t N>
Method find_method(const MethodEntry (&table)[N], std::string_view name) {
  for (const auto& e : table)
    if (name == e.name) return e.fn;
  return nullptr;
}

template <size_t N>
bool in_list(const char* const (&table)[N], std::string_view name) {
  for (const char* e : table)
    if (name == e) return true;
  return false;
}

bool is_dunder(std::string_view name) {
  return name.size() > 4 && name.substr(0, 2) == "__" && name.substr(name.size() - 2) == "__";
}

Value unsafe(const Value& obj, const std::string& name) {
  return undefined_hint("access to attribute '" + name + "' of '" + py_type_name(obj) + "' object is unsafe.",
                        "SecurityError");
}

}  // namespace

// ---- lookups -----------------------------------------------------------------------------------------------

FilterFn find_filter(std::string_view name) {
  for (const auto& e : kFilters)
    if (name == e.name) return e.fn;
  return nullptr;
}

bool is_known_unsupported_filter(std::string_view name) { return in_list(kUnsupportedFilters, name); }

TestFn find_test(std::string_view name) {
  for (const auto& e : kTests)
    if (name == e.name) return e.fn;
  return nullptr;
}

bool find_global(std::string_view name, Value& out) {
  for (const auto& e : kGlobals)
    if (name == e.name) {
      auto fn = e.fn;
      out = make_function(e.name, [fn](Interp& in, Args& a) { return fn(in, a); });
      return true;
    }
  return false;
}

Value get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) raise_undefined(obj);
  if (is_dunder(name)) return unsafe(obj, name);
  switch (obj.kind()) {
    case Value::Kind::String:
      if (Method m = find_method(kStrMethods, name)) return bound(obj, name.c_str(), m);
      break;
    case Value::Kind::Dict:
      if (Method m = find_method(kDictMethods, name)) return bound(obj, name.c_str(), m);
      if (in_list(kUnsafeDict, name)) return unsafe(obj, name);
      if (const Value* v = obj.dict().find(std::string_view(name))) return *v;
      break;
    case Value::Kind::List: case Value::Kind::Tuple:
      if (Method m = find_method(kListMethods, name)) return bound(obj, name.c_str(), m);
      if (obj.is_list() && in_list(kUnsafeList, name)) return unsafe(obj, name);
      break;
    case Value::Kind::Object: {
      Value out;
      if (obj.obj().get_attr(name, out)) return out;
      break;
    }
    default:
      break;
  }
  return undefined_attr(obj, Value::string(name));
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) raise_undefined(obj);
  switch (obj.kind()) {
    case Value::Kind::Dict:
      if (const Value* v = obj.dict().find(key)) return *v;
      break;
    case Value::Kind::List: case Value::Kind::Tuple: case Value::Kind::String:
      if (key.is_int() || key.is_bool()) {
        int64_t i = key.as_int();
        if (obj.is_string()) {
          auto cps = utf8_decode(obj.str());
          int64_t n = static_cast<int64_t>(cps.size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) {
            std::string out;
            utf8_append(out, cps[static_cast<size_t>(i)]);
            return Value::string(out);
          }
        } else {
          int64_t n = static_cast<int64_t>(obj.items().size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) return obj.items()[static_cast<size_t>(i)];
        }
        return undefined_attr(obj, key);
      }
      break;
    default:
      break;
  }
  if (key.is_string()) {
    Value v = get_attr(obj, key.str());
    // getattr found nothing: the Undefined names the key as an item would
    if (!v.is_undefined() || v.undefined_info()->exc != "UndefinedError") return v;
  }
  return undefined_attr(obj, key);
}

}  // namespace sky::jinja
