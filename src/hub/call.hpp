// Internals shared by the hub client's files: one call's resolved settings (endpoint, cache, token),
// the Hub's URLs, turning HTTP answers into HubErrors with stable messages, retries, and a small
// worker pool for parallel downloads. Not part of the public header.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "hub/cache.hpp"
#include "hub/http.hpp"
#include "hub/hub.hpp"
#include "hub/progress.hpp"

namespace sky::hub::detail {

struct Call {
  Settings settings;
  std::string repo_id;
  RepoType type = RepoType::model;
  std::string revision;
  std::string endpoint;
  std::string cache_dir;
  std::string token;          // what is sent; empty: nothing
  bool local_files_only = false;
  std::function<bool()> cancelled;

  bool offline() const { return settings.offline || local_files_only; }
  std::string offline_reason() const;   // "offline mode is on (HF_HUB_OFFLINE=1)" or "local_files_only=true"
  std::string repo_url() const;         // <endpoint>/[datasets/]org/name
  std::string resolve_url(std::string_view revision, std::string_view filename) const;
  std::string api_url(std::string_view tail) const;  // <endpoint>/api/<type>s/org/name<tail>
  http::Headers headers(bool with_auth) const;
  std::string mask(std::string s) const;  // the token, should it appear, becomes "hf_***"
  cache::RepoCache repo_cache() const { return cache::RepoCache(cache_dir, repo_id, type); }
  http::Timeouts metadata_timeouts() const;
};

// Validates the repo id and options and reads the environment.
Call call_new(std::string_view repo_id, const RepoOptions& opts);

// The HubError for an HTTP answer >= 400 (X-Error-Code as huggingface_hub's hf_raise_for_status).
// filename empty: an API call about the repository.
[[noreturn]] void raise_for_response(const Call& c, const http::Response& r, std::string_view filename,
                                     std::string_view revision);

// Why the Hub could not be asked: "cannot reach the Hub at <endpoint> (<curl's words>)".
std::string unreachable_reason(const Call& c, const http::TransportError& e);

// What the cache lacks for filename at revision (filename empty: the snapshot), as a path.
std::string describe_missing(const cache::RepoCache& rc, std::string_view revision, std::string_view filename);

// 408, 429 and 5xx: answers worth asking again after a pause.
bool retryable_status(long status);

// A request retried, as huggingface_hub's http_backoff, on 408/429/5xx answers and timeouts
// (1, 2, 4, 8, 8 s apart). TransportError escapes after the last try.
http::Response request_with_backoff(const Call& c, http::Session& s, const char* method, const std::string& url,
                                    const http::Headers& headers, bool follow_redirects);

// Turns a cancelled transfer into HubError(cancelled); other transport errors pass through.
[[noreturn]] void rethrow_transport(const Call& c, const http::TransportError& e);

struct FileRequest {
  std::string filename;
  std::string revision;
  std::string asked_revision;  // shown in messages when revision is a commit pinned for the caller
  bool force_download = false;
  bool optional = false;
  ProgressBar* shared_bar = nullptr;  // parallel downloads report into one bar
};

struct FileResult {
  std::optional<std::string> path;  // nullopt: optional and absent
  std::string commit;               // the commit resolved, when known
};

FileResult download_file(const Call& c, http::Session& s, const FileRequest& req);

// Runs task(i, session) for i in [0, n) on up to `workers` threads, each with its own Session.
// The first exception stops the rest and is rethrown; c.cancelled is polled on the calling thread.
void run_parallel(const Call& c, int workers, size_t n, const std::function<void(size_t, http::Session&)>& task);

}  // namespace sky::hub::detail
