// libcurl behind hub::http::Session. Callbacks never let a C++ exception unwind through libcurl:
// they park it and return an abort code; the caller rethrows once curl_easy_perform is back.
#include "hub/http.hpp"

#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <exception>
#include <mutex>

namespace sky::hub::http {

namespace {

constexpr size_t kErrorBodyLimit = 64 * 1024;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

// State shared with the callbacks of one transfer.
struct Transfer {
  Response response;
  bool streaming = false;
  bool started = false;  // on_start called
  const std::function<void(const Response&)>* on_start = nullptr;
  const std::function<bool(const char*, size_t)>* on_data = nullptr;
  const std::function<bool()>* cancelled = nullptr;
  bool was_cancelled = false;
  std::exception_ptr error;  // thrown inside a callback
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {  // a new response (a redirect, or 100 Continue, came before)
    t->response.headers.clear();
    size_t sp = line.find(' ');
    t->response.status = sp == std::string_view::npos ? 0 : std::atol(std::string(line.substr(sp + 1, 3)).c_str());
    return size * n;
  }
  size_t colon = line.find(':');
  if (colon != std::string_view::npos)
    t->response.headers.emplace_back(lower(trim(line.substr(0, colon))), std::string(trim(line.substr(colon + 1))));
  return size * n;
}

// The bytes of a Body as libcurl pulls them (and rewinds, when it resends on a reused connection
// that had closed).
struct BodyReader {
  const Body* body = nullptr;
  int fd = -1;
  uint64_t pos = 0;  // relative to the body's start
  std::string error;

  ~BodyReader() {
    if (fd >= 0) ::close(fd);
  }
};

size_t on_read(char* out, size_t size, size_t n, void* user) {
  auto* r = static_cast<BodyReader*>(user);
  uint64_t left = r->body->size() - std::min(r->pos, r->body->size());
  size_t want = static_cast<size_t>(std::min<uint64_t>(left, size * n));
  if (want == 0) return 0;
  if (r->body->path.empty()) {
    std::memcpy(out, r->body->data.data() + r->pos, want);
    r->pos += want;
    return want;
  }
  for (;;) {
    ssize_t got = ::pread(r->fd, out, want, static_cast<off_t>(r->body->offset + r->pos));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {  // an error, or the file shrank under us
      r->error = got < 0 ? std::string("cannot read '") + r->body->path + "': " + std::strerror(errno)
                         : "'" + r->body->path + "' became shorter while it was being uploaded";
      return CURL_READFUNC_ABORT;
    }
    r->pos += static_cast<uint64_t>(got);
    return static_cast<size_t>(got);
  }
}

int on_seek(void* user, curl_off_t offset, int origin) {
  auto* r = static_cast<BodyReader*>(user);
  if (origin != SEEK_SET || offset < 0 || static_cast<uint64_t>(offset) > r->body->size()) return CURL_SEEKFUNC_FAIL;
  r->pos = static_cast<uint64_t>(offset);
  return CURL_SEEKFUNC_OK;
}

bool is_success(long status) { return status >= 200 && status < 300; }

void start_once(Transfer* t) {
  if (t->started || !is_success(t->response.status)) return;
  t->started = true;
  if (t->on_start && *t->on_start) (*t->on_start)(t->response);
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  if (!t->streaming) {
    t->response.body.append(data, len);
    return len;
  }
  if (!is_success(t->response.status)) {  // an error page: keep its start for the message
    size_t room = kErrorBodyLimit - std::min(kErrorBodyLimit, t->response.body.size());
    t->response.body.append(data, std::min(room, len));
    return len;
  }
  try {
    start_once(t);
    if (!(*t->on_data)(data, len)) return 0;
  } catch (...) {
    t->error = std::current_exception();
    return 0;
  }
  return len;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (t->cancelled && *t->cancelled && (*t->cancelled)()) {
    t->was_cancelled = true;
    return 1;
  }
  return 0;
}

TransportError::Kind kind_of(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT: return TransportError::Kind::connect;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return TransportError::Kind::resolve;
    case CURLE_OPERATION_TIMEDOUT: return TransportError::Kind::timeout;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: return TransportError::Kind::broken;
    case CURLE_ABORTED_BY_CALLBACK: return TransportError::Kind::cancelled;
    default: return TransportError::Kind::other;
  }
}

long to_ms(double s) { return static_cast<long>(s * 1000.0); }

}  // namespace

std::optional<std::string> Response::header(std::string_view lower_name) const {
  for (const auto& [k, v] : headers)
    if (k == lower_name) return v;
  return std::nullopt;
}

Session::Session() {
  global_init();
  curl_ = curl_easy_init();
  if (!curl_) throw std::runtime_error("libcurl could not create a handle (out of memory?)");
}

Session::~Session() { curl_easy_cleanup(static_cast<CURL*>(curl_)); }

namespace {

// Runs one transfer on `curl` configured by the caller; fills t.response; throws TransportError.
void perform(CURL* curl, Transfer& t, const std::string& url, const Headers& headers, const Timeouts& to) {
  char errbuf[CURL_ERROR_SIZE];
  errbuf[0] = '\0';
  curl_slist* list = nullptr;
  // An empty value ("expect:") removes a header libcurl would add by itself.
  for (const auto& [k, v] : headers) list = curl_slist_append(list, (v.empty() ? k + ":" : k + ": " + v).c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &t);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, to_ms(to.connect_s));
  if (to.total_s > 0) curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, to_ms(to.total_s));
  if (to.stall_s > 0) {
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, std::max(1L, static_cast<long>(to.stall_s)));
  }
  CURLcode code = curl_easy_perform(curl);
  curl_slist_free_all(list);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, nullptr);
  if (t.error) std::rethrow_exception(t.error);
  char* effective = nullptr;
  curl_easy_getinfo(curl, CURLINFO_EFFECTIVE_URL, &effective);
  t.response.url = effective ? effective : url;
  if (code != CURLE_OK) {
    if (t.was_cancelled) throw TransportError(TransportError::Kind::cancelled, "interrupted");
    std::string msg = errbuf[0] ? errbuf : curl_easy_strerror(code);
    throw TransportError(kind_of(code), msg);
  }
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  t.response.status = status;
}

}  // namespace

Response Session::request(const char* method, const std::string& url, const Headers& headers, const Timeouts& to,
                          bool follow_redirects, const std::string* body) {
  CURL* curl = static_cast<CURL*>(curl_);
  curl_easy_reset(curl);  // keeps the connection cache: later requests to the host reuse it
  Transfer t;
  t.cancelled = &cancelled;
  if (strcmp(method, "HEAD") == 0) {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, "");  // API answers may come compressed
  } else {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
  }
  if (body) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body->data());  // not copied: body outlives the transfer
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, "");
  }
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, follow_redirects ? 1L : 0L);
  perform(curl, t, url, headers, to);
  return std::move(t.response);
}

Response Session::send(const char* method, const std::string& url, const Headers& headers, const Timeouts& to,
                       const Body& body) {
  CURL* curl = static_cast<CURL*>(curl_);
  curl_easy_reset(curl);
  Transfer t;
  t.cancelled = &cancelled;
  BodyReader reader;
  reader.body = &body;
  if (!body.path.empty()) {
    reader.fd = ::open(body.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (reader.fd < 0) throw std::runtime_error("cannot open '" + body.path + "': " + std::strerror(errno));
  }
  auto size = static_cast<curl_off_t>(body.size());
  if (strcmp(method, "PUT") == 0) {
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, size);
  } else {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, size);
    if (strcmp(method, "POST") != 0) curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
  }
  curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
  curl_easy_setopt(curl, CURLOPT_READDATA, &reader);
  curl_easy_setopt(curl, CURLOPT_SEEKFUNCTION, on_seek);
  curl_easy_setopt(curl, CURLOPT_SEEKDATA, &reader);
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, "");
  Headers with_expect = headers;
  with_expect.emplace_back("expect", "");  // no 100-continue round trip before the body
  try {
    perform(curl, t, url, with_expect, to);
  } catch (const TransportError&) {
    if (!reader.error.empty()) throw std::runtime_error(reader.error);
    throw;
  }
  return std::move(t.response);
}

Response Session::stream(const std::string& url, const Headers& headers, const Timeouts& to,
                         const std::function<void(const Response&)>& on_start,
                         const std::function<bool(const char*, size_t)>& on_data) {
  CURL* curl = static_cast<CURL*>(curl_);
  curl_easy_reset(curl);
  Transfer t;
  t.streaming = true;
  t.on_start = &on_start;
  t.on_data = &on_data;
  t.cancelled = &cancelled;
  curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  // A redirect to another host (the CDN) must not carry the Authorization header along.
  curl_easy_setopt(curl, CURLOPT_UNRESTRICTED_AUTH, 0L);
  curl_easy_setopt(curl, CURLOPT_BUFFERSIZE, 512L * 1024L);
  perform(curl, t, url, headers, to);
  start_once(&t);  // an empty 2xx body never reached on_body
  return std::move(t.response);
}

std::string url_quote(std::string_view s, std::string_view safe) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '_' || c == '.' || c == '-' || c == '~' || safe.find(static_cast<char>(c)) != std::string_view::npos) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string url_unquote(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string url_origin(std::string_view url) {
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return "";
  size_t host_start = scheme_end + 3;
  size_t host_end = url.find_first_of("/?#", host_start);
  if (host_end == std::string_view::npos) host_end = url.size();
  return lower(url.substr(0, host_end));
}

}  // namespace sky::hub::http
