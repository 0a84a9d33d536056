// data: text formats into tables: JSON (array, object field, or JSON lines), CSV/TSV with type
// inference like pyarrow's (null, int64, bool, float64, string), plain text by line/paragraph/document;
// and JSON lines out. Every error names the file and the row (and column where there is one).
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "data/readers.hpp"
#include "host/json.hpp"

namespace sky::data {

std::string read_file_bytes(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error("cannot open " + path + ": " + std::strerror(errno));
  std::string s;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  bool bad = std::ferror(f);
  std::fclose(f);
  if (bad) throw Error("cannot read " + path);
  return s;
}

// ---- JSON ------------------------------------------------------------------------------------------

namespace {

// Rows of objects into named columns; a key first seen at row k gets nulls before it.
class RowsBuilder {
 public:
  explicit RowsBuilder(std::string file) : file_(std::move(file)) {}

  void add_row(const rapidjson::Value& obj, int64_t row_no) {
    if (!obj.IsObject())
      throw Error(file_ + ": row " + std::to_string(row_no) + ": expected a JSON object, got " + kind(obj));
    for (auto& m : obj.GetObject()) {
      std::string key(m.name.GetString(), m.name.GetStringLength());
      auto it = index_.find(key);
      if (it == index_.end()) {
        it = index_.emplace(key, builders_.size()).first;
        names_.push_back(key);
        builders_.push_back(std::make_unique<ColumnBuilder>("column '" + key + "'"));
        for (int64_t i = 0; i < rows_; i++) builders_.back()->append_null();
      }
      ColumnBuilder& b = *builders_[it->second];
      if (b.length() != rows_)
        throw Error(file_ + ": row " + std::to_string(row_no) + ": key '" + key + "' appears twice");
      try {
        append(b, m.value, key);
      } catch (const Error& e) {
        throw Error(file_ + ": row " + std::to_string(row_no) + ": " + cut_row(e.what()));
      }
    }
    rows_++;
    for (auto& b : builders_)
      if (b->length() < rows_) b->append_null();
  }

  TablePtr finish() {
    auto t = std::make_shared<Table>();
    for (size_t i = 0; i < names_.size(); i++) t->add(names_[i], builders_[i]->finish());
    t->num_rows = rows_;
    return t;
  }

 private:
  static std::string cut_row(const std::string& m) {  // the builder's "at row N" counts from the chunk
    auto p = m.rfind(" at row ");
    return p == std::string::npos ? m : m.substr(0, p);
  }
  static std::string kind(const rapidjson::Value& v) {
    if (v.IsNull()) return "null";
    if (v.IsBool()) return "a boolean";
    if (v.IsNumber()) return "a number";
    if (v.IsString()) return "a string";
    if (v.IsArray()) return "an array";
    return "an object";
  }
  static void append(ColumnBuilder& b, const rapidjson::Value& v, const std::string& key) {
    if (v.IsNull()) b.append_null();
    else if (v.IsBool()) b.append_bool(v.GetBool());
    else if (v.IsInt64()) b.append_int(v.GetInt64());
    else if (v.IsNumber()) b.append_double(v.GetDouble());
    else if (v.IsString()) b.append_string({v.GetString(), v.GetStringLength()});
    else if (v.IsArray()) {
      b.list_begin();
      ColumnBuilder& c = b.child();
      for (auto& e : v.GetArray()) {
        if (e.IsNull()) throw Error("not supported yet: null inside a list (column '" + key + "')");
        append(c, e, key);
      }
      b.list_end();
    } else {
      throw Error("not supported yet: nested objects (struct columns) in column '" + key + "'");
    }
  }

  std::string file_;
  std::vector<std::string> names_;
  std::map<std::string, size_t> index_;
  std::vector<std::unique_ptr<ColumnBuilder>> builders_;
  int64_t rows_ = 0;
};

std::string parse_error_at(const std::string& file, const std::string& text, const JsonParsed& r,
                           int64_t line_base = 0) {
  size_t offset = r.offset;
  int64_t line = 1 + line_base, col = 1;
  for (size_t i = 0; i < offset && i < text.size(); i++) {
    if (text[i] == '\n') {
      line++;
      col = 1;
    } else {
      col++;
    }
  }
  return file + ": invalid JSON at line " + std::to_string(line) + ", column " + std::to_string(col) + ": " + r.reason();
}

}  // namespace

TablePtr read_json(const std::string& path, const JsonOptions& opt) {
  std::string text = read_file_bytes(path);
  size_t first = text.find_first_not_of(" \t\r\n");
  RowsBuilder rows(path);
  if (first == std::string::npos) return rows.finish();
  bool whole = text[first] == '[' || !opt.field.empty();
  if (!whole && text[first] == '{') {
    // One document spanning the file (pretty-printed, or {"col": [...]}) rather than JSON lines?
    rapidjson::Document d;
    bool parsed = static_cast<bool>(json_parse(d, text));
    if (parsed && text.find('\n', first) != std::string::npos) {
      size_t nl = text.find('\n', first);
      rapidjson::Document l;
      whole = !json_parse(l, std::string_view(text).substr(first, nl - first));  // the first line alone is not a document: not JSON lines
    }
    if (parsed && d.IsObject()) {
      bool columnar = d.MemberCount() > 0;
      for (auto& m : d.GetObject()) columnar = columnar && m.value.IsArray();
      whole = whole || columnar;
    }
  }
  if (whole) {
    rapidjson::Document d;
    if (JsonParsed r = json_parse(d, text); !r) throw Error(parse_error_at(path, text, r));
    const rapidjson::Value* arr = &d;
    if (!opt.field.empty()) {
      if (!d.IsObject() || !d.HasMember(opt.field.c_str()))
        throw Error(path + ": no field '" + opt.field + "' at the top level");
      arr = &d[opt.field.c_str()];
    }
    if (arr->IsObject()) {  // {"col": [values...]} (column-oriented, as pandas writes)
      bool columnar = true;
      for (auto& m : arr->GetObject()) columnar = columnar && m.value.IsArray();
      if (!columnar && opt.field.empty()) {  // one pretty-printed object: one row
        rows.add_row(*arr, 1);
        return rows.finish();
      }
      if (!columnar) throw Error(path + ": expected an array of rows under '" + opt.field + "'");
      auto t = std::make_shared<Table>();
      for (auto& m : arr->GetObject()) {
        rapidjson::Document row;
        int64_t i = 0;
        RowsBuilder one(path);
        for (auto& v : m.value.GetArray()) {
          rapidjson::Value obj(rapidjson::kObjectType);
          rapidjson::Value key(m.name, row.GetAllocator());
          rapidjson::Value val(v, row.GetAllocator());
          obj.AddMember(key, val, row.GetAllocator());
          one.add_row(obj, ++i);
        }
        auto c = one.finish();
        if (c->columns.empty()) continue;
        t->add(std::string(m.name.GetString(), m.name.GetStringLength()), c->columns[0]);
      }
      return t;
    }
    if (!arr->IsArray()) throw Error(path + ": expected a JSON array of objects");
    int64_t i = 0;
    for (auto& v : arr->GetArray()) rows.add_row(v, ++i);
    return rows.finish();
  }
  // JSON lines
  size_t pos = 0;
  int64_t line = 0;
  int64_t row = 0;
  rapidjson::Document d;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    line++;
    std::string_view l(text.data() + pos, end - pos);
    size_t nb = l.find_first_not_of(" \t\r");
    if (nb != std::string_view::npos) {
      if (JsonParsed r = json_parse(d, l); !r)
        throw Error(path + ": invalid JSON at line " + std::to_string(line) + ", column " + std::to_string(r.offset + 1) +
                    ": " + r.reason());
      rows.add_row(d, ++row);
    }
    pos = end + 1;
  }
  return rows.finish();
}

// ---- CSV ----------------------------------------------------------------------------------------------

namespace {

bool parse_int(std::string_view s, int64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  size_t i = 0;
  bool neg = false;
  if (s[0] == '-' || s[0] == '+') {
    neg = s[0] == '-';
    i = 1;
    if (s.size() == 1) return false;
  }
  unsigned long long v = 0;
  for (; i < s.size(); i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    unsigned long long nv = v * 10 + (s[i] - '0');
    if (nv / 10 != v) return false;
    v = nv;
  }
  if (v > (neg ? 9223372036854775808ULL : 9223372036854775807ULL)) return false;
  out = neg ? static_cast<int64_t>(0 - v) : static_cast<int64_t>(v);
  return true;
}

bool parse_float(std::string_view s, double& out) {
  if (s.empty() || s.size() > 64) return false;
  char buf[65];
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = 0;
  char* end = nullptr;
  out = std::strtod(buf, &end);
  if (end != buf + s.size()) return false;
  // strtod accepts hex and "infinity" spellings pyarrow does not; keep to decimal and inf/nan.
  for (char c : s)
    if (c == 'x' || c == 'X') return false;
  return true;
}

int parse_bool(std::string_view s) {
  if (s == "true" || s == "True" || s == "TRUE") return 1;
  if (s == "false" || s == "False" || s == "FALSE") return 0;
  return -1;
}

bool is_null_token(std::string_view s) {
  static const char* nulls[] = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                                "1.#QNAN", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"};
  for (const char* n : nulls)
    if (s == n) return true;
  return false;
}

}  // namespace

TablePtr read_csv(const std::string& path, const CsvOptions& opt) {
  std::string text = read_file_bytes(path);
  if (text.size() >= 3 && static_cast<unsigned char>(text[0]) == 0xEF && static_cast<unsigned char>(text[1]) == 0xBB &&
      static_cast<unsigned char>(text[2]) == 0xBF)
    text.erase(0, 3);
  std::vector<std::vector<std::string>> cells;  // per column
  std::vector<std::string> header;
  size_t pos = 0, n = text.size();
  int64_t line = 1, record = 0;
  std::vector<std::string> fields;
  while (pos < n) {
    fields.clear();
    int64_t start_line = line;
    std::string cur;
    bool done = false;
    while (!done) {
      cur.clear();
      if (pos < n && text[pos] == '"') {
        pos++;
        while (true) {
          if (pos >= n)
            throw Error(path + ": row " + std::to_string(record + (header.empty() ? 0 : 0) + 1) + " (line " +
                        std::to_string(start_line) + "): unterminated quoted field");
          char c = text[pos++];
          if (c == '"') {
            if (pos < n && text[pos] == '"') {
              cur.push_back('"');
              pos++;
            } else {
              break;
            }
          } else {
            if (c == '\n') line++;
            cur.push_back(c);
          }
        }
        if (pos < n && text[pos] != opt.sep && text[pos] != '\n' && text[pos] != '\r')
          throw Error(path + ": line " + std::to_string(line) + ", field " + std::to_string(fields.size() + 1) +
                      ": unexpected character after a closing quote");
      } else {
        while (pos < n && text[pos] != opt.sep && text[pos] != '\n') cur.push_back(text[pos++]);
        if (!cur.empty() && cur.back() == '\r' && (pos >= n || text[pos] == '\n')) cur.pop_back();
      }
      fields.push_back(cur);
      if (pos < n && text[pos] == opt.sep) {
        pos++;
      } else {
        if (pos < n && text[pos] == '\r') pos++;
        if (pos < n && text[pos] == '\n') {
          pos++;
          line++;
        }
        done = true;
      }
    }
    if (fields.size() == 1 && fields[0].empty()) continue;  // blank line
    if (header.empty()) {
      header = fields;
      cells.resize(header.size());
      continue;
    }
    record++;
    if (fields.size() != header.size())
      throw Error(path + ": row " + std::to_string(record) + " (line " + std::to_string(start_line) + "): expected " +
                  std::to_string(header.size()) + " fields, got " + std::to_string(fields.size()));
    for (size_t i = 0; i < fields.size(); i++) cells[i].push_back(std::move(fields[i]));
  }
  auto t = std::make_shared<Table>();
  for (size_t c = 0; c < header.size(); c++) {
    auto& col = cells[c];
    bool all_int = true, all_float = true, all_bool = true, any = false;
    int64_t iv;
    double dv;
    for (auto& s : col) {
      if (is_null_token(s)) continue;
      any = true;
      if (all_int && !parse_int(s, iv)) all_int = false;
      if (all_float && !parse_float(s, dv)) all_float = false;
      if (all_bool && parse_bool(s) < 0) all_bool = false;
      if (!all_int && !all_float && !all_bool) break;
    }
    ColumnBuilder b("column '" + header[c] + "'");
    for (auto& s : col) {
      if (!any || (is_null_token(s) && (all_int || all_float || all_bool))) b.append_null();
      else if (all_int) {
        parse_int(s, iv);
        b.append_int(iv);
      } else if (all_bool) b.append_bool(parse_bool(s) == 1);
      else if (all_float) {
        if (is_null_token(s)) b.append_null();
        else {
          parse_float(s, dv);
          b.append_double(dv);
        }
      } else {
        b.append_string(s);
      }
    }
    std::string name = header[c];
    if (t->find(name) >= 0) throw Error(path + ": column '" + name + "' appears twice in the header");
    t->add(name, b.finish());
  }
  t->num_rows = record;
  return t;
}

// ---- text -----------------------------------------------------------------------------------------------

TablePtr read_text(const std::string& path, const TextOptions& opt) {
  std::string text = read_file_bytes(path);
  ColumnBuilder b("column 'text'");
  if (opt.sample_by == "document") {
    b.append_string(text);
  } else if (opt.sample_by == "line") {
    size_t pos = 0;
    while (pos < text.size()) {
      size_t end = text.find('\n', pos);
      size_t next = end == std::string::npos ? text.size() : end + 1;
      size_t stop = end == std::string::npos ? text.size() : end;
      if (opt.keep_linebreaks) stop = next;
      else if (stop > pos && text[stop - 1] == '\r') stop--;
      b.append_string(std::string_view(text).substr(pos, stop - pos));
      pos = next;
    }
  } else if (opt.sample_by == "paragraph") {
    size_t pos = 0;
    while (pos < text.size()) {
      size_t end = text.find("\n\n", pos);
      if (end == std::string::npos) end = text.size();
      std::string_view para = std::string_view(text).substr(pos, end - pos);
      if (!para.empty()) b.append_string(para);
      pos = end + 2;
    }
  } else {
    throw Error("text: sample_by must be \"line\", \"paragraph\" or \"document\" (got \"" + opt.sample_by + "\")");
  }
  auto t = std::make_shared<Table>();
  t->add("text", b.finish());
  return t;
}

// ---- JSON out ---------------------------------------------------------------------------------------------

static void write_value(rapidjson::Writer<rapidjson::StringBuffer>& w, const Column& c, int64_t i) {
  if (!c.is_valid(i)) {
    w.Null();
    return;
  }
  switch (c.type) {
    case DType::Null: w.Null(); break;
    case DType::Bool: w.Bool(c.values.data[i] != 0); break;
    case DType::Int64: w.Int64(c.values.as<int64_t>()[i]); break;
    case DType::Float64: {
      double d = c.values.as<double>()[i];
      if (std::isfinite(d)) w.Double(d);
      else w.Null();
      break;
    }
    case DType::String: {
      auto s = c.str(i);
      w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
      break;
    }
    case DType::List: {
      w.StartArray();
      for (int64_t k = c.offset(i); k < c.offset(i + 1); k++) write_value(w, *c.child, k);
      w.EndArray();
      break;
    }
  }
}

void write_json(const Table& t, const std::string& path, bool lines) {
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error("cannot write " + tmp + ": " + std::strerror(errno));
  rapidjson::StringBuffer sb;
  bool ok = true;
  if (!lines) ok = ok && std::fputs("[", f) >= 0;
  for (int64_t r = 0; r < t.num_rows; r++) {
    sb.Clear();
    rapidjson::Writer<rapidjson::StringBuffer> w(sb);
    w.StartObject();
    for (size_t c = 0; c < t.columns.size(); c++) {
      w.Key(t.names[c].data(), static_cast<rapidjson::SizeType>(t.names[c].size()));
      write_value(w, *t.columns[c], r);
    }
    w.EndObject();
    if (!lines && r > 0) ok = ok && std::fputs(",", f) >= 0;
    ok = ok && std::fwrite(sb.GetString(), 1, sb.GetSize(), f) == sb.GetSize();
    if (lines) ok = ok && std::fputc('\n', f) != EOF;
  }
  if (!lines) ok = ok && std::fputs("]\n", f) >= 0;
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error("cannot write " + path + ": " + std::strerror(errno));
  }
}

}  // namespace sky::data
