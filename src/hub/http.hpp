// HTTP for the hub client: one libcurl easy handle per Session (kept-alive connections), requests
// with their headers read back, and a streaming GET for downloads. Knows nothing of the Hub's
// semantics; never logs request headers (they carry the token).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sky::hub::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Response {
  long status = 0;
  Headers headers;     // of the final response; names lower-cased
  std::string body;    // in-memory requests only; downloads keep at most an error body here
  std::string url;     // the URL that answered (after redirects)

  std::optional<std::string> header(std::string_view lower_name) const;
};

// No HTTP response came back: the connection failed, timed out or broke off.
class TransportError : public std::runtime_error {
 public:
  enum class Kind { connect, resolve, timeout, broken, cancelled, other };
  TransportError(Kind kind, const std::string& msg) : std::runtime_error(msg), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

// What a request sends: bytes in memory, or a slice of a file read as it goes out (a multi-GB
// upload never sits in memory).
struct Body {
  std::string_view data;  // used when path is empty; must outlive the request
  std::string path;
  uint64_t offset = 0;
  uint64_t length = 0;

  static Body bytes(std::string_view d) {
    Body b;
    b.data = d;
    return b;
  }
  static Body file_slice(std::string path, uint64_t offset, uint64_t length) {
    Body b;
    b.path = std::move(path);
    b.offset = offset;
    b.length = length;
    return b;
  }
  uint64_t size() const { return path.empty() ? data.size() : length; }
};

struct Timeouts {
  double connect_s = 10;
  double total_s = 0;        // 0: no limit
  double stall_s = 0;        // abort when no byte arrives for this long; 0: never
};

class Session {
 public:
  Session();
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // A request whose body is kept in memory. HEAD when method is "HEAD". Redirects are followed
  // only when follow_redirects is set. `body`, when not null, is sent as the request body (POST,
  // PUT, ...; its Content-Type goes in headers).
  Response request(const char* method, const std::string& url, const Headers& headers, const Timeouts& t,
                   bool follow_redirects, const std::string* body = nullptr);

  // A POST or PUT sending `body` (Content-Length set; no "Expect: 100-continue"); the answer's
  // body is kept in memory. Redirects are not followed.
  Response send(const char* method, const std::string& url, const Headers& headers, const Timeouts& t,
                const Body& body);

  // A GET whose body goes to on_data (following redirects). on_start is called with the final
  // response's status and headers before the first byte of a 2xx body; a body of another status
  // is kept in Response::body instead. on_data returns false to abort. Throws TransportError when
  // the transfer fails, with what was delivered so far already handed to on_data.
  Response stream(const std::string& url, const Headers& headers, const Timeouts& t,
                  const std::function<void(const Response&)>& on_start,
                  const std::function<bool(const char*, size_t)>& on_data);

  // Polled during transfers; returning true aborts them with TransportError(cancelled).
  std::function<bool()> cancelled;

 private:
  void* curl_;  // CURL*
};

// Percent-encodes as Python's urllib.parse.quote: letters, digits and "_.-~" stay, and so do the
// characters in `safe`.
std::string url_quote(std::string_view s, std::string_view safe = "/");
std::string url_unquote(std::string_view s);

// "scheme://host:port" of a URL (lower-cased host), for comparing where a redirect leads.
std::string url_origin(std::string_view url);

}  // namespace sky::hub::http
