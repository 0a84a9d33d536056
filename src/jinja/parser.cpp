// Lexer and parser: jinja2's token rules (delimiters, whitespace control, trim_blocks and
// lstrip_blocks as transformers sets them, raw blocks, literals) and its grammar (operator
// precedence, filters, tests, statements of the core and of the loop-controls and generation
// extensions). Filters and tests are resolved here; unknown ones are errors with their position.
#include <algorithm>
#include <charconv>
#include <cstring>

#include "jinja/internal.hpp"

namespace sky::jinja {
namespace {

// ---- source positions ------------------------------------------------------------------------------

// jinja2 first turns \r\n and \r into \n and drops one trailing newline (keep_trailing_newline is
// off); positions below are in that text.
std::string normalize_source(std::string_view src) {
  std::string out;
  out.reserve(src.size());
  for (size_t i = 0; i < src.size(); i++) {
    if (src[i] == '\r') {
      out += '\n';
      if (i + 1 < src.size() && src[i + 1] == '\n') i++;
    } else {
      out += src[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

struct Positions {
  std::string_view src;
  std::vector<size_t> line_starts{0};
  explicit Positions(std::string_view s) : src(s) {
    for (size_t i = 0; i < s.size(); i++)
      if (s[i] == '\n') line_starts.push_back(i + 1);
  }
  void at(size_t pos, int& line, int& col) const {
    size_t lo = 0, hi = line_starts.size();
    while (hi - lo > 1) {
      size_t mid = (lo + hi) / 2;
      if (line_starts[mid] <= pos) lo = mid; else hi = mid;
    }
    line = static_cast<int>(lo) + 1;
    col = static_cast<int>(cp_length(src.substr(line_starts[lo], pos - line_starts[lo]))) + 1;
  }
};

// ---- tokens ------------------------------------------------------------------------------------------------

enum class Tok : uint8_t { Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, Eof };

struct Token {
  Tok kind;
  std::string text;  // data, name, operator, or the string's value
  Value value;       // numbers
  size_t pos = 0;
};

const char* describe(const Token& t) {
  switch (t.kind) {
    case Tok::VarEnd: return "end of print statement";
    case Tok::BlockEnd: return "end of statement block";
    case Tok::Eof: return "end of template";
    default: return nullptr;
  }
}

class Lexer {
 public:
  Lexer(std::string_view src, const Positions& pos) : s_(src), p_(pos) {}

  std::vector<Token> run() {
    size_t i = 0;
    bool line_starting = true;
    while (i < s_.size()) {
      size_t at = find_tag(i);
      if (at == std::string_view::npos) {
        push_data(s_.substr(i), i);
        break;
      }
      char kind = s_[at + 1];  // '{', '%' or '#'
      size_t after = at + 2;
      char sign = after < s_.size() && (s_[after] == '-' || s_[after] == '+') ? s_[after] : 0;
      size_t raw_end = kind == '%' ? match_raw_begin(at) : 0;
      std::string text(s_.substr(i, at - i));
      text = lstrip_text(std::move(text), sign, kind != '{', line_starting);
      push_data(text, i);
      if (raw_end) {
        i = lex_raw(raw_end, line_starting);
        continue;
      }
      i = after + (sign ? 1 : 0);
      if (kind == '#') {
        i = skip_comment(i, at, line_starting);
      } else {
        toks_.push_back({kind == '{' ? Tok::VarBegin : Tok::BlockBegin, "", {}, at});
        i = lex_tag(i, kind == '%', line_starting);
      }
    }
    toks_.push_back({Tok::Eof, "", {}, s_.size()});
    return std::move(toks_);
  }

 private:
  [[noreturn]] void fail(const std::string& what, size_t pos) {
    int line, col;
    p_.at(pos, line, col);
    throw SyntaxError(what, line, col);
  }

  size_t find_tag(size_t i) const {
    for (size_t j = s_.find('{', i); j != std::string_view::npos; j = s_.find('{', j + 1))
      if (j + 1 < s_.size() && (s_[j + 1] == '{' || s_[j + 1] == '%' || s_[j + 1] == '#')) return j;
    return std::string_view::npos;
  }

  bool space_at(size_t i, size_t* next = nullptr) const {
    if (i >= s_.size()) return false;
    size_t k = i;
    bool sp = py_isspace(utf8_next(s_, k));
    if (next) *next = k;
    return sp;
  }
  size_t skip_spaces(size_t i) const {
    size_t k;
    while (space_at(i, &k)) i = k;
    return i;
  }

  // OptionalLStrip: `-` strips the whitespace before the tag; otherwise lstrip_blocks strips the
  // blanks between the line's start and a block or comment tag.
  std::string lstrip_text(std::string text, char sign, bool block_or_comment, bool line_starting) const {
    if (sign == '-') return py_strip(text, false, true);
    if (sign == '+' || !block_or_comment) return text;
    size_t nl = text.rfind('\n');
    size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
    if (l_pos == 0 && !line_starting) return text;
    if (l_pos >= text.size()) return text;
    for (size_t k = l_pos; k < text.size();) {
      if (!py_isspace(utf8_next(text, k))) return text;
    }
    text.resize(l_pos);
    return text;
  }

  void push_data(std::string_view text, size_t pos) {
    if (!text.empty()) toks_.push_back({Tok::Data, std::string(text), {}, pos});
  }

  // `{%[-+]?\s*raw\s*(-%}\s*|%})` at `at`: the index after it, else 0.
  size_t match_raw_begin(size_t at) const {
    size_t i = at + 2;
    if (i < s_.size() && (s_[i] == '-' || s_[i] == '+')) i++;
    i = skip_spaces(i);
    if (s_.compare(i, 3, "raw") != 0) return 0;
    i = skip_spaces(i + 3);
    if (s_.compare(i, 3, "-%}") == 0) return skip_spaces(i + 3);
    if (s_.compare(i, 2, "%}") == 0) return i + 2;
    return 0;
  }

  // Block end at i: `+%}`, `-%}\s*`, or `%}` with trim_blocks' newline. Returns the index after
  // it (0 when there is none) and whether it ended a line.
  size_t match_block_end(size_t i, bool& ends_line) const {
    if (s_.compare(i, 3, "+%}") == 0) { ends_line = false; return i + 3; }
    if (s_.compare(i, 3, "-%}") == 0) {
      size_t e = skip_spaces(i + 3);
      ends_line = e > i + 3 && s_[e - 1] == '\n';
      return e;
    }
    if (s_.compare(i, 2, "%}") == 0) {
      if (i + 2 < s_.size() && s_[i + 2] == '\n') { ends_line = true; return i + 3; }
      ends_line = false;
      return i + 2;
    }
    return 0;
  }

  size_t lex_raw(size_t i, bool& line_starting) {
    for (size_t j = s_.find("{%", i); j != std::string_view::npos; j = s_.find("{%", j + 1)) {
      size_t k = j + 2;
      char sign = k < s_.size() && (s_[k] == '-' || s_[k] == '+') ? s_[k] : 0;
      if (sign) k++;
      k = skip_spaces(k);
      if (s_.compare(k, 6, "endraw") != 0) continue;
      k = skip_spaces(k + 6);
      bool ends_line;
      size_t e = match_block_end(k, ends_line);
      if (!e) continue;
      push_data(lstrip_text(std::string(s_.substr(i, j - i)), sign, true, line_starting), i);
      line_starting = ends_line;
      return e;
    }
    fail("Missing end of raw directive", i);
  }

  size_t skip_comment(size_t i, size_t begin, bool& line_starting) {
    size_t j = s_.find("#}", i);
    if (j == std::string_view::npos) fail("Missing end of comment tag", begin);
    if (j > i && s_[j - 1] == '+') { line_starting = false; return j + 2; }
    if (j > i && s_[j - 1] == '-') {
      size_t e = skip_spaces(j + 2);
      line_starting = e > j + 2 && s_[e - 1] == '\n';
      return e;
    }
    if (j + 2 < s_.size() && s_[j + 2] == '\n') { line_starting = true; return j + 3; }
    line_starting = false;
    return j + 2;
  }

  size_t lex_tag(size_t i, bool block, bool& line_starting) {
    std::vector<char> brackets;
    while (true) {
      if (i >= s_.size()) fail(block ? "unexpected end of template, expected 'end of statement block'"
                                     : "unexpected end of template, expected 'end of print statement'", i);
      if (brackets.empty()) {
        if (block) {
          bool ends_line;
          if (size_t e = match_block_end(i, ends_line)) {
            toks_.push_back({Tok::BlockEnd, "", {}, i});
            line_starting = ends_line;
            return e;
          }
        } else if (s_.compare(i, 3, "-}}") == 0) {
          toks_.push_back({Tok::VarEnd, "", {}, i});
          size_t e = skip_spaces(i + 3);
          line_starting = e > i + 3 && s_[e - 1] == '\n';
          return e;
        } else if (s_.compare(i, 2, "}}") == 0) {
          toks_.push_back({Tok::VarEnd, "", {}, i});
          line_starting = false;
          return i + 2;
        }
      }
      size_t k;
      if (space_at(i, &k)) { i = skip_spaces(k); continue; }
      unsigned char c = static_cast<unsigned char>(s_[i]);
      if (isdigit(c)) { i = lex_number(i); continue; }
      if (isalpha(c) || c == '_' || c >= 0x80) { i = lex_name(i); continue; }
      if (c == '\'' || c == '"') { i = lex_string(i); continue; }
      i = lex_operator(i, brackets);
    }
  }

  size_t digits(size_t i) const {  // (\d+_)*\d+ ; returns i unchanged when no digit
    size_t j = i;
    while (j < s_.size() && isdigit(static_cast<unsigned char>(s_[j]))) {
      while (j < s_.size() && isdigit(static_cast<unsigned char>(s_[j]))) j++;
      if (j + 1 < s_.size() && s_[j] == '_' && isdigit(static_cast<unsigned char>(s_[j + 1]))) j++;
    }
    return j;
  }

  size_t lex_number(size_t i) {
    auto clean = [](std::string_view t) {
      std::string out;
      for (char ch : t)
        if (ch != '_') out += ch;
      return out;
    };
    // float first, as jinja2 tries it before integers; not after a '.' (foo.0.1).
    if (i == 0 || s_[i - 1] != '.') {
      size_t j = digits(i), end = 0;
      if (j < s_.size() && s_[j] == '.' && digits(j + 1) > j + 1) {
        end = digits(j + 1);
        size_t e = exponent(end);
        if (e) end = e;
      } else if (size_t e = exponent(j)) {
        end = e;
      }
      if (end) {
        std::string t = clean(s_.substr(i, end - i));
        toks_.push_back({Tok::Float, t, Value::number(std::strtod(t.c_str(), nullptr)), i});
        return end;
      }
    }
    size_t j = i;
    int base = 10;
    if (s_[i] == '0' && i + 1 < s_.size() && strchr("bBoOxX", s_[i + 1])) {
      char b = static_cast<char>(tolower(s_[i + 1]));
      base = b == 'b' ? 2 : b == 'o' ? 8 : 16;
      j = i + 2;
      size_t start = j;
      while (j < s_.size()) {
        char ch = static_cast<char>(tolower(s_[j]));
        bool ok = base == 16 ? isxdigit(static_cast<unsigned char>(ch)) : (ch >= '0' && ch < '0' + base);
        if (ch == '_' && j + 1 < s_.size()) { j++; continue; }
        if (!ok) break;
        j++;
      }
      if (j == start) { j = i + 1; base = 10; }
    } else if (s_[i] == '0') {
      j = i + 1;
      while (j + 1 < s_.size() && s_[j] == '_' && s_[j + 1] == '0') j += 2;
      while (j < s_.size() && s_[j] == '0') j++;
    } else {
      j = digits(i);
    }
    std::string t = clean(s_.substr(i, j - i));
    if (base != 10) t = t.substr(2);
    int64_t v = 0;
    std::from_chars(t.data(), t.data() + t.size(), v, base);
    toks_.push_back({Tok::Int, std::string(s_.substr(i, j - i)), Value::integer(v), i});
    return j;
  }

  size_t exponent(size_t j) const {
    if (j >= s_.size() || (s_[j] != 'e' && s_[j] != 'E')) return 0;
    size_t k = j + 1;
    if (k < s_.size() && (s_[k] == '+' || s_[k] == '-')) k++;
    size_t e = digits(k);
    return e > k ? e : 0;
  }

  size_t lex_name(size_t i) {
    size_t j = i;
    while (j < s_.size()) {
      unsigned char c = static_cast<unsigned char>(s_[j]);
      if (isalnum(c) || c == '_') { j++; continue; }
      if (c < 0x80) break;
      size_t k = j;
      uint32_t cp = utf8_next(s_, k);
      if (py_isspace(cp)) break;
      j = k;
    }
    toks_.push_back({Tok::Name, std::string(s_.substr(i, j - i)), {}, i});
    return j;
  }

  size_t lex_string(size_t i) {
    char q = s_[i];
    std::string out;
    size_t j = i + 1;
    while (true) {
      if (j >= s_.size()) fail("unexpected char " + py_repr_string(std::string(1, q)) + " at " + std::to_string(i), i);
      char c = s_[j];
      if (c == q) break;
      if (c != '\\') { out += c; j++; continue; }
      if (j + 1 >= s_.size()) { j++; continue; }
      char e = s_[j + 1];
      j += 2;
      switch (e) {
        case '\n': break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x': case 'u': case 'U': {
          size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (size_t k = 0; k < n; k++) {
            if (j + k >= s_.size() || !isxdigit(static_cast<unsigned char>(s_[j + k])))
              fail(std::string("truncated \\") + e + std::string(n == 2 ? "XX" : n == 4 ? "XXXX" : "XXXXXXXX") + " escape", i);
            char h = s_[j + k];
            cp = cp * 16 + static_cast<uint32_t>(isdigit(static_cast<unsigned char>(h)) ? h - '0' : tolower(h) - 'a' + 10);
          }
          j += n;
          utf8_append(out, cp);
          break;
        }
        case 'N': fail("not supported yet: \\N{...} escapes in string literals", i);
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && j < s_.size() && s_[j] >= '0' && s_[j] <= '7'; k++) cp = cp * 8 + static_cast<uint32_t>(s_[j++] - '0');
            utf8_append(out, cp);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    toks_.push_back({Tok::String, std::move(out), {}, i});
    return j + 1;
  }

  size_t lex_operator(size_t i, std::vector<char>& brackets) {
    static const char* two[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* op : two)
      if (s_.compare(i, 2, op) == 0) {
        toks_.push_back({Tok::Op, op, {}, i});
        return i + 2;
      }
    char c = s_[i];
    if (!strchr("+-/*%~[](){}<>=.:|,;", c)) {
      size_t k = i;
      utf8_next(s_, k);
      fail("unexpected char " + py_repr_string(std::string(s_.substr(i, k - i))) + " at " + std::to_string(i), i);
    }
    if (c == '(' || c == '[' || c == '{') brackets.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    if (c == ')' || c == ']' || c == '}') {
      if (brackets.empty()) fail(std::string("unexpected '") + c + "'", i);
      char want = brackets.back();
      brackets.pop_back();
      if (want != c) fail(std::string("unexpected '") + c + "', expected '" + want + "'", i);
    }
    toks_.push_back({Tok::Op, std::string(1, c), {}, i});
    return i + 1;
  }

  std::string_view s_;
  const Positions& p_;
  std::vector<Token> toks_;
};

// ---- parser -------------------------------------------------------------------------------------------------

const char* kKnownUnsupportedTags[] = {"block", "extends", "include", "import", "from", "autoescape"};

class Parser {
 public:
  Parser(std::vector<Token> toks, const Positions& pos) : t_(std::move(toks)), p_(pos) {}

  std::unique_ptr<Program> run() {
    auto prog = std::make_unique<Program>();
    prog->body = parse_body({}, nullptr);
    check_pending();
    prog->has_generation = has_generation_;
    return prog;
  }

 private:
  // ---- token stream ----
  const Token& cur() const { return t_[i_]; }
  const Token& look() const { return t_[i_ + 1 < t_.size() ? i_ + 1 : i_]; }
  void next() { if (i_ + 1 < t_.size()) i_++; }
  bool is_op(const char* op) const { return cur().kind == Tok::Op && cur().text == op; }
  bool is_name(const char* n) const { return cur().kind == Tok::Name && cur().text == n; }
  bool skip_op(const char* op) { if (is_op(op)) { next(); return true; } return false; }
  bool skip_name(const char* n) { if (is_name(n)) { next(); return true; } return false; }

  [[noreturn]] void fail_at(const std::string& what, size_t pos) const {
    int line, col;
    p_.at(pos, line, col);
    throw SyntaxError(what, line, col);
  }
  [[noreturn]] void fail(const std::string& what) const { fail_at(what, cur().pos); }

  std::string token_desc(const Token& t) const {
    if (const char* d = describe(t)) return d;
    if (t.kind == Tok::String) return "string";
    if (t.kind == Tok::Int) return "integer";
    if (t.kind == Tok::Float) return "float";
    if (t.kind == Tok::Data) return "template data / text";
    if (t.kind == Tok::VarBegin) return "begin of print statement";
    if (t.kind == Tok::BlockBegin) return "begin of statement block";
    return t.text;
  }
  [[noreturn]] void unexpected() const { fail("unexpected '" + token_desc(cur()) + "'"); }

  void expect_op(const char* op) {
    if (!skip_op(op)) fail(std::string("expected token '") + op + "', got '" + token_desc(cur()) + "'");
  }
  std::string expect_name() {
    if (cur().kind != Tok::Name) fail("expected token 'name', got '" + token_desc(cur()) + "'");
    std::string n = cur().text;
    next();
    return n;
  }
  void expect_block_end() {
    if (cur().kind != Tok::BlockEnd) fail("expected token 'end of statement block', got '" + token_desc(cur()) + "'");
    next();
  }

  ExprP node(ExprKind k, size_t pos) const {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    p_.at(pos, e->line, e->column);
    return e;
  }

  // ---- statements ----

  // Parses until a block tag whose name is in `ends` (left current on that name); with `ends`
  // empty, until the end of the template.
  Body parse_body(const std::vector<const char*>& ends, const char* opener, size_t opener_pos = 0) {
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.kind == Tok::Eof) {
        if (ends.empty()) return body;
        std::string want;
        for (size_t k = 0; k < ends.size(); k++) want += (k ? " or '" : "'") + std::string(ends[k]) + "'";
        int line, col;
        p_.at(opener_pos, line, col);
        fail("Unexpected end of template. Jinja was looking for the following tags: " + want +
             ". The innermost block that needs to be closed is '" + opener + "' (opened on line " + std::to_string(line) + ")");
      }
      if (t.kind == Tok::Data) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::Data;
        s->text = t.text;
        body.push_back(std::move(s));
        next();
        continue;
      }
      if (t.kind == Tok::VarBegin) {
        next();
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::Output;
        s->expr = parse_tuple(true, {});
        if (cur().kind != Tok::VarEnd) unexpected();
        check_pending();
        next();
        body.push_back(std::move(s));
        continue;
      }
      if (t.kind == Tok::BlockBegin) {
        next();
        if (cur().kind == Tok::Name)
          for (const char* e : ends)
            if (cur().text == e) return body;
        body.push_back(parse_statement(ends));
        check_pending();
        continue;
      }
      unexpected();
    }
  }

  StmtP parse_statement(const std::vector<const char*>& enclosing_ends) {
    if (cur().kind != Tok::Name) fail("tag name expected");
    std::string tag = cur().text;
    size_t pos = cur().pos;
    next();
    auto s = std::make_unique<Stmt>();
    int col;
    p_.at(pos, s->line, col);
    bool saved_soft = soft_;
    // Statements that open a frame of their own check their filters when compiled again.
    if (tag == "for" || tag == "macro" || tag == "call" || tag == "filter" || tag == "with" || tag == "generation" ||
        (tag == "set" && !(look().kind == Tok::Op && (look().text == "=" || look().text == "." || look().text == ","))))
      soft_ = false;
    if (tag == "if") parse_if(*s, pos);
    else if (tag == "for") parse_for(*s, pos);
    else if (tag == "set") parse_set(*s, pos);
    else if (tag == "macro") parse_macro(*s, pos);
    else if (tag == "call") parse_call_block(*s, pos);
    else if (tag == "filter") parse_filter_block(*s, pos);
    else if (tag == "with") parse_with(*s, pos);
    else if (tag == "break" || tag == "continue") {
      s->kind = tag == "break" ? StmtKind::Break : StmtKind::Continue;
      expect_block_end();
    } else if (tag == "generation") {
      s->kind = StmtKind::Generation;
      has_generation_ = true;
      expect_block_end();
      s->body = parse_body({"endgeneration"}, "generation", pos);
      next();
      expect_block_end();
    } else {
      soft_ = saved_soft;
      for (const char* u : kKnownUnsupportedTags)
        if (tag == u) fail_at("not supported yet: {% " + tag + " %} in chat templates", pos);
      std::string msg = "Encountered unknown tag '" + tag + "'.";
      if (!enclosing_ends.empty()) {
        msg += " Jinja was looking for the following tags: ";
        for (size_t k = 0; k < enclosing_ends.size(); k++) msg += (k ? " or '" : "'") + std::string(enclosing_ends[k]) + "'";
        msg += ".";
      }
      fail_at(msg, pos);
    }
    soft_ = saved_soft;
    return s;
  }

  void parse_if(Stmt& s, size_t pos) {
    s.kind = StmtKind::If;
    bool saved = soft_;
    soft_ = true;
    ExprP test = parse_tuple(false, {});
    expect_block_end();
    while (true) {
      Body body = parse_body({"elif", "else", "endif"}, "if", pos);
      s.branches.emplace_back(std::move(test), std::move(body));
      std::string kw = cur().text;
      next();
      if (kw == "elif") {
        test = parse_tuple(false, {});
        expect_block_end();
        continue;
      }
      if (kw == "else") {
        expect_block_end();
        Body else_body = parse_body({"endif"}, "if", pos);
        next();
        s.branches.emplace_back(nullptr, std::move(else_body));
      }
      expect_block_end();
      break;
    }
    soft_ = saved;
  }

  void parse_for(Stmt& s, size_t pos) {
    s.kind = StmtKind::For;
    s.target = parse_assign_target(true, false, {"in"});
    if (!skip_name("in")) fail("expected token 'in', got '" + token_desc(cur()) + "'");
    s.expr = parse_tuple(false, {"recursive"});
    if (skip_name("if")) s.cond = parse_expression(true);
    if (skip_name("recursive")) fail_at("not supported yet: recursive for loops", pos);
    expect_block_end();
    s.body = parse_body({"endfor", "else"}, "for", pos);
    if (cur().text == "else") {
      next();
      expect_block_end();
      s.else_body = parse_body({"endfor"}, "for", pos);
    }
    next();
    expect_block_end();
  }

  void parse_set(Stmt& s, size_t pos) {
    s.target = parse_assign_target(true, true, {});
    if (skip_op("=")) {
      s.kind = StmtKind::Set;
      s.expr = parse_tuple(true, {});
      expect_block_end();
      return;
    }
    s.kind = StmtKind::SetBlock;
    while (skip_op("|")) s.filters.push_back(parse_filter_call(nullptr));
    expect_block_end();
    s.body = parse_body({"endset"}, "set", pos);
    next();
    expect_block_end();
  }

  void parse_params(MacroDef& m) {
    expect_op("(");
    while (!is_op(")")) {
      if (!m.params.empty()) expect_op(",");
      if (is_op(")")) break;
      size_t at = cur().pos;
      std::string name = expect_name();
      m.params.push_back(name);
      if (skip_op("=")) {
        m.defaults.push_back(parse_expression(true));
      } else if (!m.defaults.empty()) {
        fail_at("non-default argument follows default argument", at);
      }
    }
    next();
  }

  static void scan_special_names(const Body& body, MacroDef& m);

  void parse_macro(Stmt& s, size_t pos) {
    s.kind = StmtKind::Macro;
    s.macro = std::make_shared<MacroDef>();
    s.macro->name = expect_name();
    parse_params(*s.macro);
    expect_block_end();
    s.macro->body = parse_body({"endmacro"}, "macro", pos);
    next();
    if (cur().kind == Tok::Name && cur().text == s.macro->name) next();
    expect_block_end();
    scan_special_names(s.macro->body, *s.macro);
  }

  void parse_call_block(Stmt& s, size_t pos) {
    s.kind = StmtKind::CallBlock;
    s.macro = std::make_shared<MacroDef>();
    s.macro->name = "caller";
    if (is_op("(")) parse_params(*s.macro);
    s.expr = parse_expression(true);
    if (s.expr->kind != ExprKind::Call) fail_at("expected call", pos);
    expect_block_end();
    s.macro->body = parse_body({"endcall"}, "call", pos);
    next();
    expect_block_end();
    scan_special_names(s.macro->body, *s.macro);
  }

  void parse_filter_block(Stmt& s, size_t pos) {
    s.kind = StmtKind::FilterBlock;
    s.filters.push_back(parse_filter_call(nullptr));
    while (skip_op("|")) s.filters.push_back(parse_filter_call(nullptr));
    expect_block_end();
    s.body = parse_body({"endfilter"}, "filter", pos);
    next();
    expect_block_end();
  }

  void parse_with(Stmt& s, size_t pos) {
    s.kind = StmtKind::With;
    while (cur().kind != Tok::BlockEnd) {
      if (!s.with_assigns.empty()) expect_op(",");
      Target t = parse_assign_target(false, false, {});
      expect_op("=");
      s.with_assigns.emplace_back(std::move(t), parse_expression(true));
    }
    next();
    s.body = parse_body({"endwith"}, "with", pos);
    next();
    expect_block_end();
  }

  // ---- assignment targets ----
  Target parse_assign_target(bool with_tuple, bool with_namespace, const std::vector<const char*>& extra_end) {
    Target t;
    if (with_namespace && cur().kind == Tok::Name && look().kind == Tok::Op && look().text == ".") {
      t.kind = Target::Kind::NsAttr;
      t.name = cur().text;
      next();
      next();
      t.attr = expect_name();
      return t;
    }
    auto one = [&]() {
      Target n;
      if (skip_op("(")) {
        n = parse_assign_target(true, false, {});
        expect_op(")");
        return n;
      }
      if (cur().kind != Tok::Name) fail("can't assign to '" + token_desc(cur()) + "'");
      n.name = cur().text;
      if (n.name == "true" || n.name == "false" || n.name == "none" || n.name == "True" || n.name == "False" ||
          n.name == "None")
        fail("can't assign to 'Const'");
      next();
      return n;
    };
    Target first = one();
    if (!with_tuple || !is_op(",")) return first;
    t.kind = Target::Kind::Tuple;
    t.items.push_back(std::move(first));
    while (skip_op(",")) {
      if (tuple_end(extra_end)) break;
      t.items.push_back(one());
    }
    return t;
  }

  // ---- expressions ----
  bool tuple_end(const std::vector<const char*>& extra_end) const {
    if (cur().kind == Tok::VarEnd || cur().kind == Tok::BlockEnd || is_op(")")) return true;
    for (const char* e : extra_end)
      if (is_name(e)) return true;
    return false;
  }

  ExprP parse_tuple(bool with_condexpr, const std::vector<const char*>& extra_end, bool explicit_parens = false) {
    size_t pos = cur().pos;
    std::vector<ExprP> args;
    bool is_tuple = false;
    while (true) {
      if (!args.empty()) expect_op(",");
      if (tuple_end(extra_end)) break;
      args.push_back(parse_expression(with_condexpr));
      if (is_op(",")) is_tuple = true; else break;
    }
    if (!is_tuple) {
      if (!args.empty()) return std::move(args[0]);
      if (!explicit_parens) fail("Expected an expression, got '" + token_desc(cur()) + "'");
    }
    auto e = node(ExprKind::Tuple, pos);
    e->items = std::move(args);
    return e;
  }

  ExprP parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  ExprP parse_condexpr() {
    size_t pos = cur().pos;
    size_t pending_before = pending_.size();
    ExprP e1 = parse_or();
    while (skip_name("if")) {
      // an inline if is checked when it runs: unknown names anywhere in it fail only then
      pending_.resize(std::min(pending_.size(), pending_before));
      bool saved = soft_;
      soft_ = true;
      ExprP test = parse_or();
      ExprP e3;
      if (skip_name("else")) e3 = parse_condexpr();
      soft_ = saved;
      pending_.resize(std::min(pending_.size(), pending_before));
      auto c = node(ExprKind::CondExpr, pos);
      c->a = std::move(e1);
      c->b = std::move(test);
      c->c = std::move(e3);
      e1 = std::move(c);
    }
    return e1;
  }

  ExprP binary(ExprKind k, ExprP l, ExprP r, size_t pos) {
    auto e = node(k, pos);
    e->a = std::move(l);
    e->b = std::move(r);
    return e;
  }

  ExprP parse_or() {
    size_t pos = cur().pos;
    ExprP l = parse_and();
    while (skip_name("or")) l = binary(ExprKind::Or, std::move(l), parse_and(), pos);
    return l;
  }
  ExprP parse_and() {
    size_t pos = cur().pos;
    ExprP l = parse_not();
    while (skip_name("and")) l = binary(ExprKind::And, std::move(l), parse_not(), pos);
    return l;
  }
  ExprP parse_not() {
    size_t pos = cur().pos;
    if (skip_name("not")) {
      auto e = node(ExprKind::Not, pos);
      e->a = parse_not();
      return e;
    }
    return parse_compare();
  }
  ExprP parse_compare() {
    size_t pos = cur().pos;
    ExprP e = parse_math1();
    std::vector<std::pair<std::string, ExprP>> ops;
    while (true) {
      static const std::pair<const char*, const char*> cmp[] = {{"==", "eq"}, {"!=", "ne"}, {"<", "lt"},
                                                                {"<=", "lteq"}, {">", "gt"}, {">=", "gteq"}};
      bool found = false;
      for (auto [sym, name] : cmp)
        if (is_op(sym)) {
          next();
          ops.emplace_back(name, parse_math1());
          found = true;
          break;
        }
      if (found) continue;
      if (skip_name("in")) {
        ops.emplace_back("in", parse_math1());
      } else if (is_name("not") && look().kind == Tok::Name && look().text == "in") {
        next();
        next();
        ops.emplace_back("notin", parse_math1());
      } else {
        break;
      }
    }
    if (ops.empty()) return e;
    auto c = node(ExprKind::Compare, pos);
    c->a = std::move(e);
    c->ops = std::move(ops);
    return c;
  }
  ExprP parse_math1() {
    size_t pos = cur().pos;
    ExprP l = parse_concat();
    while (is_op("+") || is_op("-")) {
      ExprKind k = is_op("+") ? ExprKind::Add : ExprKind::Sub;
      next();
      l = binary(k, std::move(l), parse_concat(), pos);
    }
    return l;
  }
  ExprP parse_concat() {
    size_t pos = cur().pos;
    ExprP first = parse_math2();
    if (!is_op("~")) return first;
    auto c = node(ExprKind::Concat, pos);
    c->items.push_back(std::move(first));
    while (skip_op("~")) c->items.push_back(parse_math2());
    return c;
  }
  ExprP parse_math2() {
    size_t pos = cur().pos;
    ExprP l = parse_pow();
    while (true) {
      ExprKind k;
      if (is_op("*")) k = ExprKind::Mul;
      else if (is_op("/")) k = ExprKind::Div;
      else if (is_op("//")) k = ExprKind::FloorDiv;
      else if (is_op("%")) k = ExprKind::Mod;
      else break;
      next();
      l = binary(k, std::move(l), parse_pow(), pos);
    }
    return l;
  }
  ExprP parse_pow() {
    size_t pos = cur().pos;
    ExprP l = parse_unary(true);
    while (skip_op("**")) l = binary(ExprKind::Pow, std::move(l), parse_unary(true), pos);
    return l;
  }
  ExprP parse_unary(bool with_filter) {
    size_t pos = cur().pos;
    ExprP n;
    if (is_op("-") || is_op("+")) {
      ExprKind k = is_op("-") ? ExprKind::Neg : ExprKind::Pos;
      next();
      n = node(k, pos);
      n->a = parse_unary(false);
    } else {
      n = parse_primary();
    }
    n = parse_postfix(std::move(n));
    if (with_filter) n = parse_filter_expr(std::move(n));
    return n;
  }

  ExprP parse_primary() {
    const Token& t = cur();
    size_t pos = t.pos;
    if (t.kind == Tok::Name) {
      const std::string& n = t.text;
      auto c = node(ExprKind::Const, pos);
      if (n == "true" || n == "True") c->value = Value::boolean(true);
      else if (n == "false" || n == "False") c->value = Value::boolean(false);
      else if (n == "none" || n == "None") c->value = Value::none();
      else {
        c->kind = ExprKind::Name;
        c->name = n;
      }
      next();
      return c;
    }
    if (t.kind == Tok::String) {
      std::string s = t.text;
      next();
      while (cur().kind == Tok::String) {
        s += cur().text;
        next();
      }
      auto c = node(ExprKind::Const, pos);
      c->value = Value::string(std::move(s));
      return c;
    }
    if (t.kind == Tok::Int || t.kind == Tok::Float) {
      auto c = node(ExprKind::Const, pos);
      c->value = t.value;
      next();
      return c;
    }
    if (skip_op("(")) {
      ExprP e = parse_tuple(true, {}, true);
      expect_op(")");
      return e;
    }
    if (skip_op("[")) {
      auto l = node(ExprKind::List, pos);
      while (!is_op("]")) {
        if (!l->items.empty()) expect_op(",");
        if (is_op("]")) break;
        l->items.push_back(parse_expression(true));
      }
      next();
      return l;
    }
    if (skip_op("{")) {
      auto d = node(ExprKind::Dict, pos);
      while (!is_op("}")) {
        if (!d->items.empty()) expect_op(",");
        if (is_op("}")) break;
        d->items.push_back(parse_expression(true));
        expect_op(":");
        d->items.push_back(parse_expression(true));
      }
      next();
      return d;
    }
    unexpected();
  }

  ExprP parse_postfix(ExprP n) {
    while (true) {
      if (is_op(".") || is_op("[")) n = parse_subscript(std::move(n));
      else if (is_op("(")) n = parse_call(std::move(n));
      else return n;
    }
  }

  ExprP parse_filter_expr(ExprP n) {
    while (true) {
      if (is_op("|")) {
        next();
        n = parse_filter_call(std::move(n));
      } else if (is_name("is")) {
        n = parse_test(std::move(n));
      } else if (is_op("(")) {
        n = parse_call(std::move(n));
      } else {
        return n;
      }
    }
  }

  ExprP parse_subscript(ExprP n) {
    size_t pos = cur().pos;
    if (skip_op(".")) {
      if (cur().kind == Tok::Name) {
        auto g = node(ExprKind::Getattr, pos);
        g->a = std::move(n);
        g->name = cur().text;
        next();
        return g;
      }
      if (cur().kind == Tok::Int) {
        auto g = node(ExprKind::Getitem, pos);
        g->a = std::move(n);
        g->b = node(ExprKind::Const, cur().pos);
        g->b->value = cur().value;
        next();
        return g;
      }
      fail("expected name or number");
    }
    expect_op("[");
    std::vector<ExprP> args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    next();
    auto g = node(ExprKind::Getitem, pos);
    g->a = std::move(n);
    if (args.size() == 1) {
      g->b = std::move(args[0]);
    } else {
      g->b = node(ExprKind::Tuple, pos);
      g->b->items = std::move(args);
    }
    return g;
  }

  ExprP parse_subscribed() {
    size_t pos = cur().pos;
    std::vector<ExprP> parts;
    if (skip_op(":")) {
      parts.push_back(nullptr);
    } else {
      ExprP e = parse_expression(true);
      if (!skip_op(":")) return e;
      parts.push_back(std::move(e));
    }
    if (is_op(":")) parts.push_back(nullptr);
    else if (!is_op("]") && !is_op(",")) parts.push_back(parse_expression(true));
    else parts.push_back(nullptr);
    if (skip_op(":")) {
      if (!is_op("]") && !is_op(",")) parts.push_back(parse_expression(true));
      else parts.push_back(nullptr);
    } else {
      parts.push_back(nullptr);
    }
    auto s = node(ExprKind::Slice, pos);
    s->items = std::move(parts);
    return s;
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    bool require_comma = false;
    while (!is_op(")")) {
      if (require_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      size_t at = cur().pos;
      if (skip_op("*")) {
        if (e.dyn_args || e.dyn_kwargs) fail_at("invalid syntax for function call expression", at);
        e.dyn_args = parse_expression(true);
      } else if (skip_op("**")) {
        if (e.dyn_kwargs) fail_at("invalid syntax for function call expression", at);
        e.dyn_kwargs = parse_expression(true);
      } else if (cur().kind == Tok::Name && look().kind == Tok::Op && look().text == "=") {
        if (e.dyn_kwargs) fail_at("invalid syntax for function call expression", at);
        std::string key = cur().text;
        next();
        next();
        e.kwargs.emplace_back(key, parse_expression(true));
      } else {
        if (e.dyn_args || e.dyn_kwargs || !e.kwargs.empty()) fail_at("invalid syntax for function call expression", at);
        e.items.push_back(parse_expression(true));
      }
      require_comma = true;
    }
    next();
  }

  ExprP parse_call(ExprP n) {
    auto c = node(ExprKind::Call, cur().pos);
    c->a = std::move(n);
    parse_call_args(*c);
    return c;
  }

  std::string dotted_name() {
    std::string name = expect_name();
    while (is_op(".") && look().kind == Tok::Name) {
      next();
      name += "." + cur().text;
      next();
    }
    return name;
  }

  // A filter after `|` (n may be null for filter blocks and set blocks).
  ExprP parse_filter_call(ExprP n) {
    size_t pos = cur().pos;
    auto f = node(ExprKind::Filter, pos);
    f->a = std::move(n);
    f->name = dotted_name();
    if (is_op("(")) parse_call_args(*f);
    f->builtin = reinterpret_cast<void*>(find_filter(f->name));
    if (!f->builtin && !soft_ && !is_known_unsupported_filter(f->name))
      pending_.emplace_back(pos, "No filter named '" + f->name + "'.");
    return f;
  }

  ExprP parse_test(ExprP n) {
    size_t pos = cur().pos;
    next();  // is
    bool negated = skip_name("not");
    size_t name_pos = cur().pos;
    auto t = node(ExprKind::Test, pos);
    t->a = std::move(n);
    t->name = dotted_name();
    if (is_op("(")) {
      parse_call_args(*t);
    } else if ((cur().kind == Tok::Name || cur().kind == Tok::String || cur().kind == Tok::Int ||
                cur().kind == Tok::Float || is_op("(") || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail("You cannot chain multiple tests with is");
      ExprP arg = parse_postfix(parse_primary());
      t->items.push_back(std::move(arg));
    }
    t->builtin = reinterpret_cast<void*>(find_test(t->name));
    if (!t->builtin && !soft_) pending_.emplace_back(name_pos, "No test named '" + t->name + "'.");
    if (!negated) return t;
    auto no = node(ExprKind::Not, pos);
    no->a = std::move(t);
    return no;
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  const Positions& p_;
  bool soft_ = false;  // inside an if or inline-if: unknown filters and tests fail only when run
  // Unknown filters and tests seen in the expression being parsed; an enclosing inline if clears
  // them, otherwise they are compile errors once the statement is read.
  std::vector<std::pair<size_t, std::string>> pending_;
  void check_pending() {
    if (!pending_.empty()) fail_at(pending_.front().second, pending_.front().first);
  }
  bool has_generation_ = false;
};

// Macros that mention varargs, kwargs or caller accept extra arguments (jinja2 looks for them).
static void scan_expr(const Expr* e, MacroDef& m) {
  if (!e) return;
  if (e->kind == ExprKind::Name) {
    if (e->name == "varargs") m.uses_varargs = true;
    if (e->name == "kwargs") m.uses_kwargs = true;
    if (e->name == "caller") m.uses_caller = true;
  }
  for (const auto& x : e->items) scan_expr(x.get(), m);
  for (const auto& kv : e->kwargs) scan_expr(kv.second.get(), m);
  for (const auto& kv : e->ops) scan_expr(kv.second.get(), m);
  scan_expr(e->a.get(), m);
  scan_expr(e->b.get(), m);
  scan_expr(e->c.get(), m);
  scan_expr(e->dyn_args.get(), m);
  scan_expr(e->dyn_kwargs.get(), m);
}

void Parser::scan_special_names(const Body& body, MacroDef& m) {
  for (const auto& s : body) {
    scan_expr(s->expr.get(), m);
    scan_expr(s->cond.get(), m);
    for (const auto& br : s->branches) {
      scan_expr(br.first.get(), m);
      scan_special_names(br.second, m);
    }
    for (const auto& f : s->filters) scan_expr(f.get(), m);
    for (const auto& w : s->with_assigns) scan_expr(w.second.get(), m);
    scan_special_names(s->body, m);
    scan_special_names(s->else_body, m);
    if (s->kind == StmtKind::CallBlock) scan_special_names(s->macro->body, m);
  }
}

}  // namespace

std::unique_ptr<Program> parse_program(std::string_view source) {
  std::string src = normalize_source(source);
  Positions pos(src);
  Lexer lexer(src, pos);
  Parser parser(lexer.run(), pos);
  return parser.run();
}

}  // namespace sky::jinja
