// One call's context, the Hub's error answers turned into messages people can act on, retries and
// the worker pool. Every message here names the repository, revision and file; none names the token.
#include "hub/call.hpp"

#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "sky_config.h"

namespace sky::hub::detail {

namespace {

std::string single_quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

// Sleeps for `seconds`, returning early (true) when the call is cancelled.
bool sleep_cancellable(const Call& c, double seconds) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (c.cancelled && c.cancelled()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

}  // namespace

bool retryable_status(long status) {
  return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

std::string Call::offline_reason() const {
  if (local_files_only && !settings.offline) return "local_files_only=true forbids network access";
  return "offline mode is on (HF_HUB_OFFLINE=1)";
}

std::string Call::repo_url() const {
  switch (type) {
    case RepoType::dataset: return endpoint + "/datasets/" + repo_id;
    case RepoType::space: return endpoint + "/spaces/" + repo_id;
    case RepoType::model: break;
  }
  return endpoint + "/" + repo_id;
}

std::string Call::resolve_url(std::string_view rev, std::string_view filename) const {
  return repo_url() + "/resolve/" + http::url_quote(rev, "") + "/" + http::url_quote(filename);
}

std::string Call::api_url(std::string_view tail) const {
  return endpoint + "/api/" + std::string(repo_type_name(type)) + "s/" + repo_id + std::string(tail);
}

http::Headers Call::headers(bool with_auth) const {
  http::Headers h;
  h.emplace_back("user-agent", "skyrun/" SKY_VERSION "; hf_hub/compatible");
  if (with_auth && !token.empty()) h.emplace_back("authorization", "Bearer " + token);
  return h;
}

std::string Call::mask(std::string s) const {
  if (token.empty()) return s;
  for (size_t pos = s.find(token); pos != std::string::npos; pos = s.find(token, pos)) s.replace(pos, token.size(), "hf_***");
  return s;
}

http::Timeouts Call::metadata_timeouts() const {
  http::Timeouts t;
  t.connect_s = settings.etag_timeout_s;
  t.total_s = settings.etag_timeout_s;
  return t;
}

Call call_new(std::string_view repo_id, const RepoOptions& opts) {
  cache::validate_repo_id(repo_id);
  if (opts.revision.empty()) throw HubError(ErrorKind::invalid_argument, "revision must not be empty");
  Call c;
  c.settings = Settings::from_env();
  c.repo_id = std::string(repo_id);
  c.type = opts.repo_type;
  c.revision = opts.revision;
  c.endpoint = opts.endpoint.empty() ? c.settings.endpoint : opts.endpoint;
  while (!c.endpoint.empty() && c.endpoint.back() == '/') c.endpoint.pop_back();
  c.cache_dir = opts.cache_dir.empty() ? c.settings.cache_dir : opts.cache_dir;
  if (opts.token) c.token = *opts.token;
  else if (!c.settings.disable_implicit_token) c.token = get_token().value_or("");
  c.local_files_only = opts.local_files_only;
  c.cancelled = opts.cancelled;
  return c;
}

[[noreturn]] void raise_for_response(const Call& c, const http::Response& r, std::string_view filename,
                                     std::string_view revision) {
  std::string code = r.header("x-error-code").value_or("");
  std::string server_msg = c.mask(r.header("x-error-message").value_or(""));
  std::string repo = single_quoted(c.repo_id);
  std::string type_note = c.type == RepoType::model ? "" : " (repo_type '" + std::string(repo_type_name(c.type)) + "')";
  std::string license_hint = "accept its license at " + c.repo_url() + " and set HF_TOKEN (or log in with `hf auth login`)";
  std::string status = "HTTP " + std::to_string(r.status);

  if (code == "RevisionNotFound")
    throw HubError(ErrorKind::revision_not_found,
                   "revision " + single_quoted(revision) + " not found in " + repo + type_note + " at " + c.endpoint, r.status);
  if (code == "EntryNotFound" || (r.status == 404 && code.empty() && !filename.empty()))
    throw HubError(ErrorKind::entry_not_found, "file " + single_quoted(filename) + " not found in " + repo + type_note +
                                                   " at revision " + single_quoted(revision), r.status);
  if (r.status == 401 && server_msg == "Invalid credentials in Authorization header")
    throw HubError(ErrorKind::gated, "the token sent to " + c.endpoint + " was refused as invalid (" + status +
                                         ") while fetching " + repo + ": check HF_TOKEN or log in again", r.status);
  if (code == "GatedRepo" || (r.status == 403 && code != "RepoNotFound")) {
    std::string token_note = c.token.empty() ? "no token was sent" : "the token sent does not grant access";
    throw HubError(ErrorKind::gated, "repository " + repo + type_note + " is gated or private: " + license_hint +
                                         " (" + status + ", " + token_note + ")", r.status);
  }
  if (code == "RepoNotFound" || r.status == 401 || (r.status == 404 && filename.empty())) {
    std::string msg = "repository " + repo + " not found at " + c.endpoint + type_note;
    if (r.status == 401 || c.token.empty()) msg += "; if it is private or gated, " + license_hint;
    throw HubError(ErrorKind::repo_not_found, msg, r.status);
  }
  std::string what = filename.empty() ? repo : single_quoted(filename) + " of " + repo;
  std::string msg = "the Hub at " + c.endpoint + " answered " + status + " for " + what + " (revision " +
                    single_quoted(revision) + ")";
  if (!server_msg.empty()) msg += ": " + server_msg;
  throw HubError(ErrorKind::http, msg, r.status);
}

std::string unreachable_reason(const Call& c, const http::TransportError& e) {
  return "cannot reach the Hub at " + c.endpoint + " (" + c.mask(e.what()) + ")";
}

std::string describe_missing(const cache::RepoCache& rc, std::string_view revision, std::string_view filename) {
  if (!cache::is_dir(rc.folder())) return rc.folder() + " (nothing of this repository is cached)";
  std::optional<std::string> commit = rc.commit_of(revision);
  if (!commit) return rc.ref_path(revision) + " (the commit of revision '" + std::string(revision) + "' is unknown)";
  if (!cache::is_dir(rc.snapshot_dir(*commit))) return rc.snapshot_dir(*commit);
  if (filename.empty()) return rc.snapshot_dir(*commit);
  return rc.pointer_path(*commit, filename);
}

[[noreturn]] void rethrow_transport(const Call& c, const http::TransportError& e) {
  if (e.kind() == http::TransportError::Kind::cancelled) throw HubError(ErrorKind::cancelled, "interrupted");
  throw e;
}

http::Response request_with_backoff(const Call& c, http::Session& s, const char* method, const std::string& url,
                                    const http::Headers& headers, bool follow_redirects) {
  double wait = 1;
  for (int attempt = 0;; ++attempt) {
    bool last = attempt >= 5;
    try {
      // A HEAD must answer within the ETag timeout; a GET (API listings can be large) must only keep moving.
      http::Timeouts t = c.metadata_timeouts();
      if (strcmp(method, "HEAD") != 0) {
        t.total_s = 0;
        t.stall_s = c.settings.etag_timeout_s;
      }
      http::Response r = s.request(method, url, headers, t, follow_redirects);
      if (last || !retryable_status(r.status)) return r;
    } catch (const http::TransportError& e) {
      if (last || e.kind() != http::TransportError::Kind::timeout) rethrow_transport(c, e);
    }
    if (sleep_cancellable(c, wait)) throw HubError(ErrorKind::cancelled, "interrupted");
    wait = std::min(wait * 2, 8.0);
  }
}

void run_parallel(const Call& c, int workers, size_t n, const std::function<void(size_t, http::Session&)>& task) {
  if (n == 0) return;
  size_t threads = std::min(static_cast<size_t>(std::max(1, workers)), n);
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  std::atomic<size_t> running{threads};
  std::mutex mu;
  std::exception_ptr first;
  auto worker = [&] {
    try {
      http::Session session;
      session.cancelled = [&] { return stop.load(); };
      for (;;) {
        size_t i = next.fetch_add(1);
        if (i >= n || stop.load()) break;
        task(i, session);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!first) first = std::current_exception();
      stop = true;
    }
    running.fetch_sub(1);
  };
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
  bool cancelled = false;
  while (running.load() > 0) {
    if (!cancelled && c.cancelled && c.cancelled()) {
      cancelled = true;
      stop = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (auto& t : pool) t.join();
  if (cancelled) throw HubError(ErrorKind::cancelled, "interrupted");
  if (first) std::rethrow_exception(first);
}

}  // namespace sky::hub::detail
