// The environment as huggingface_hub's constants.py reads it, the token lookup of utils/_auth.py,
// repository naming in the cache and fnmatch-style file patterns.
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <unistd.h>

#include <cctype>
#include <cstring>

#include "hub/cache.hpp"
#include "hub/hub.hpp"

namespace sky::hub {

namespace {

std::string env(const char* name) {
  const char* v = getenv(name);
  return v ? v : "";
}

bool env_true(const std::string& v) {
  std::string u;
  for (char c : v) u += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return u == "1" || u == "ON" || u == "YES" || u == "TRUE";
}

std::string home_dir() {
  std::string h = env("HOME");
  if (!h.empty()) return h;
  if (const passwd* pw = getpwuid(getuid())) return pw->pw_dir;
  return "/";
}

// os.path.expanduser then os.path.expandvars (unknown variables stay as written).
std::string expand_path(const std::string& p) {
  std::string s = p;
  if (s == "~" || s.rfind("~/", 0) == 0) s = home_dir() + s.substr(1);
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '$') {
      out += s[i];
      continue;
    }
    size_t start = i + 1, end;
    bool braced = start < s.size() && s[start] == '{';
    if (braced) {
      end = s.find('}', start);
      if (end == std::string::npos) {
        out += s.substr(i);
        break;
      }
      std::string name = s.substr(start + 1, end - start - 1);
      const char* v = getenv(name.c_str());
      out += v ? v : s.substr(i, end - i + 1);
      i = end;
    } else {
      end = start;
      while (end < s.size() && (std::isalnum(static_cast<unsigned char>(s[end])) || s[end] == '_')) ++end;
      if (end == start) {
        out += '$';
        continue;
      }
      std::string name = s.substr(start, end - start);
      const char* v = getenv(name.c_str());
      out += v ? v : s.substr(i, end - i);
      i = end - 1;
    }
  }
  return out;
}

// Path(p).resolve(): absolute, symlinks resolved where the path exists.
std::string absolute_path(const std::string& p) {
  char buf[PATH_MAX];
  if (realpath(p.c_str(), buf)) return buf;
  if (!p.empty() && p[0] == '/') return p;
  if (getcwd(buf, sizeof buf)) return std::string(buf) + "/" + p;
  return p;
}

// _clean_token: no CR/LF, no surrounding spaces; empty means none.
std::string clean_token(std::string t) {
  std::string out;
  for (char c : t)
    if (c != '\r' && c != '\n') out += c;
  size_t b = out.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  size_t e = out.find_last_not_of(" \t");
  return out.substr(b, e - b + 1);
}

double env_seconds(const char* name, double def) {
  std::string v = env(name);
  if (v.empty()) return def;
  char* end = nullptr;
  double d = strtod(v.c_str(), &end);
  return (end && *end == '\0' && d > 0) ? d : def;
}

bool glob_match(const char* p, const char* s) {
  for (; *p; ++p, ++s) {
    if (*p == '*') {
      while (p[1] == '*') ++p;
      if (!p[1]) return true;
      for (const char* t = s; *t; ++t)
        if (glob_match(p + 1, t)) return true;
      return glob_match(p + 1, s + strlen(s));
    }
    if (!*s) return false;
    if (*p == '?') continue;
    if (*p == '[') {
      const char* q = p + 1;
      bool negate = *q == '!';
      if (negate) ++q;
      const char* close = strchr(*q == ']' ? q + 1 : q, ']');
      if (!close) {  // no closing bracket: a literal '['
        if (*s != '[') return false;
        continue;
      }
      bool found = false;
      for (const char* c = q; c < close; ++c) {
        if (c + 2 < close && c[1] == '-') {
          if (*s >= c[0] && *s <= c[2]) found = true;
          c += 2;
        } else if (*c == *s) {
          found = true;
        }
      }
      if (found == negate) return false;
      p = close;
      continue;
    }
    if (*p != *s) return false;
  }
  return !*s;
}

}  // namespace

std::string_view repo_type_name(RepoType t) {
  switch (t) {
    case RepoType::model: return "model";
    case RepoType::dataset: return "dataset";
    case RepoType::space: return "space";
  }
  return "model";
}

RepoType repo_type_parse(std::string_view s) {
  if (s == "model" || s == "models") return RepoType::model;
  if (s == "dataset" || s == "datasets") return RepoType::dataset;
  if (s == "space" || s == "spaces") return RepoType::space;
  throw HubError(ErrorKind::invalid_argument,
                 "invalid repo_type '" + std::string(s) + "': expected 'model', 'dataset' or 'space'");
}

std::string repo_folder_name(std::string_view repo_id, RepoType type) {
  std::string out(repo_type_name(type));
  out += "s";
  size_t start = 0;
  while (start <= repo_id.size()) {
    size_t slash = repo_id.find('/', start);
    if (slash == std::string_view::npos) slash = repo_id.size();
    out += "--";
    out += repo_id.substr(start, slash - start);
    start = slash + 1;
  }
  return out;
}

bool repo_pattern_match(std::string_view pattern, std::string_view path) {
  std::string p(pattern), s(path);
  for (char& c : p)
    if (c == '\\') c = '/';
  for (char& c : s)
    if (c == '\\') c = '/';
  if (!p.empty() && p.back() == '/') p += '*';
  return glob_match(p.c_str(), s.c_str());
}

Settings Settings::from_env() {
  Settings s;
  s.endpoint = env("HF_ENDPOINT");
  if (s.endpoint.empty()) s.endpoint = "https://huggingface.co";
  while (!s.endpoint.empty() && s.endpoint.back() == '/') s.endpoint.pop_back();

  std::string xdg = env("XDG_CACHE_HOME");
  std::string home = env("HF_HOME");
  if (home.empty()) home = (xdg.empty() ? home_dir() + "/.cache" : xdg) + "/huggingface";
  home = expand_path(home);

  std::string cache = env("HF_HUB_CACHE");
  if (cache.empty()) cache = env("HUGGINGFACE_HUB_CACHE");
  if (cache.empty()) cache = home + "/hub";
  s.cache_dir = absolute_path(expand_path(cache));

  std::string token_path = env("HF_TOKEN_PATH");
  s.token_path = expand_path(token_path.empty() ? home + "/token" : token_path);

  std::string token = env("HF_TOKEN");
  if (token.empty()) token = env("HUGGING_FACE_HUB_TOKEN");
  s.env_token = clean_token(token);

  std::string offline = env("HF_HUB_OFFLINE");
  if (offline.empty()) offline = env("TRANSFORMERS_OFFLINE");
  s.offline = env_true(offline);
  s.disable_implicit_token = env_true(env("HF_HUB_DISABLE_IMPLICIT_TOKEN"));
  std::string bars = env("HF_HUB_DISABLE_PROGRESS_BARS");
  s.progress_bars = !env_true(bars);
  s.etag_timeout_s = env_seconds("HF_HUB_ETAG_TIMEOUT", 10);
  s.download_timeout_s = env_seconds("HF_HUB_DOWNLOAD_TIMEOUT", 10);
  return s;
}

std::optional<std::string> get_token() {
  Settings s = Settings::from_env();
  if (!s.env_token.empty()) return s.env_token;
  if (std::optional<std::string> t = cache::read_small_file(s.token_path)) {
    std::string c = clean_token(*t);
    if (!c.empty()) return c;
  }
  return std::nullopt;
}

}  // namespace sky::hub
