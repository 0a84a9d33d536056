// hf_hub_download as huggingface_hub's file_download.py does it: a HEAD on the resolve URL (relative
// redirects only) gives the commit, the ETag and the size; the blob is fetched into
// blobs/<etag>.incomplete, resumed with Range after a broken connection (here or in an earlier
// process), renamed when complete, and pointed at from snapshots/<commit>/<file>. When the Hub
// cannot be asked, the cache answers or the error names what it lacks.
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "host/fs.hpp"
#include "hub/call.hpp"

namespace sky::hub {

namespace detail {

namespace {

struct FileMetadata {
  std::string commit;
  std::string etag;
  std::string location;  // where to GET it (the CDN for LFS files)
  int64_t size = -1;
};

// _normalize_etag: W/"abc" and "abc" both become abc (lstrip of 'W' and '/' as Python's does).
std::string normalize_etag(std::string e) {
  size_t i = 0;
  while (i < e.size() && (e[i] == 'W' || e[i] == '/')) ++i;
  e = e.substr(i);
  while (!e.empty() && e.front() == '"') e.erase(0, 1);
  while (!e.empty() && e.back() == '"') e.pop_back();
  return e;
}

std::optional<int64_t> parse_int(const std::optional<std::string>& s) {
  if (!s || s->empty()) return std::nullopt;
  char* end = nullptr;
  long long v = strtoll(s->c_str(), &end, 10);
  if (!end || *end != '\0' || v < 0) return std::nullopt;
  return v;
}

bool is_relative_location(const std::string& loc) {
  return loc.find("://") == std::string::npos && loc.rfind("//", 0) != 0;
}

// The metadata HEAD. Raises HubError for the Hub's error answers (EntryNotFound recorded in
// .no_exist first) and TransportError when no answer came.
FileMetadata head_file(const Call& c, http::Session& s, const cache::RepoCache& rc, std::string_view filename,
                       std::string_view revision, std::string_view shown_revision, bool with_backoff) {
  std::string url = c.resolve_url(revision, filename);
  http::Headers headers = c.headers(true);
  headers.emplace_back("accept-encoding", "identity");  // the real size, not a compressed one
  http::Response r;
  for (int hops = 0;; ++hops) {
    if (with_backoff) {
      r = request_with_backoff(c, s, "HEAD", url, headers, false);
    } else {
      try {
        r = s.request("HEAD", url, headers, c.metadata_timeouts(), false);
      } catch (const http::TransportError& e) {
        rethrow_transport(c, e);
      }
    }
    if (r.status >= 400) {
      std::optional<std::string> commit = r.header("x-repo-commit");
      if (r.header("x-error-code").value_or("") == "EntryNotFound" && commit && !commit->empty()) {
        rc.mark_no_exist(*commit, filename);
        try {
          rc.write_ref(revision, *commit);
        } catch (const HubError&) {
        }
      }
      raise_for_response(c, r, filename, shown_revision);
    }
    std::optional<std::string> loc = r.header("location");
    if (r.status >= 300 && r.status < 400 && loc && is_relative_location(*loc) && hops < 10) {
      // A renamed repository: follow on the same host (absolute redirects lead to the CDN: not followed).
      size_t q = loc->find_first_of("?#");
      url = http::url_origin(url) + (loc->rfind("/", 0) == 0 ? "" : "/") + loc->substr(0, q);
      continue;
    }
    break;
  }
  FileMetadata m;
  m.commit = r.header("x-repo-commit").value_or("");
  std::optional<std::string> linked = r.header("x-linked-etag");
  m.etag = normalize_etag(linked ? *linked : r.header("etag").value_or(""));
  m.location = r.header("location").value_or(url);
  bool redirect = r.status >= 300 && r.status < 400;
  std::optional<int64_t> size = parse_int(r.header("x-linked-size"));
  if (!size && !redirect) size = parse_int(r.header("content-length"));
  std::string where = "'" + std::string(filename) + "' of '" + c.repo_id + "' from " + c.endpoint;
  if (m.commit.empty())
    throw HubError(ErrorKind::http, "the server at " + c.endpoint + " does not look like the Hugging Face Hub: " +
                                        "no X-Repo-Commit header for " + where);
  if (m.etag.empty()) throw HubError(ErrorKind::http, "no ETag for " + where + ": cannot cache it reliably");
  if (!size) throw HubError(ErrorKind::http, "no size (X-Linked-Size or Content-Length) for " + where);
  m.size = *size;
  return m;
}

// "bytes 100-999/1000" -> 100
std::optional<int64_t> content_range_start(const http::Response& r) {
  std::optional<std::string> cr = r.header("content-range");
  if (!cr) return std::nullopt;
  size_t sp = cr->find(' ');
  if (sp == std::string::npos) return std::nullopt;
  return parse_int(cr->substr(sp + 1, cr->find('-') - sp - 1));
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

[[noreturn]] void io_error(const std::string& what, const std::string& path, int err) {
  throw HubError(ErrorKind::io, fs::errno_message(what, path, err));
}

void write_all(int fd, const char* data, size_t len, int64_t offset, const std::string& path) {
  while (len > 0) {
    ssize_t n = pwrite(fd, data, len, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) io_error("cannot write", path, errno);
    data += n;
    len -= static_cast<size_t>(n);
    offset += n;
  }
}

// Fetches the blob into <blob>.incomplete, resuming what is there, then renames it to <blob>.
// The caller holds the blob's lock.
void fetch_blob(const Call& c, http::Session& s, const FileMetadata& m, const std::string& filename,
                const std::string& blob, bool force, ProgressBar* shared_bar) {
  std::string incomplete = blob + ".incomplete";
  // O_NOFOLLOW: a link planted at this name must not make us write into its target.
  Fd fd(open(incomplete.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666));
  if (fd.get() < 0) io_error("cannot create", incomplete, errno);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) io_error("cannot stat", incomplete, errno);
  int64_t size = st.st_size;
  if (force || size > m.size) {
    if (ftruncate(fd.get(), 0) != 0) io_error("cannot truncate", incomplete, errno);
    size = 0;
  }
  // The token goes to the Hub, never to another host (the CDN URL is signed).
  std::string resolve = c.resolve_url(m.commit, filename);
  bool same_host = http::url_origin(m.location) == http::url_origin(resolve);
  http::Headers base = c.headers(same_host);

  std::unique_ptr<ProgressBar> own_bar;
  ProgressBar* bar = shared_bar;
  if (bar) {
    bar->add_total(m.size);
    bar->update(size);
  } else {
    own_bar = std::make_unique<ProgressBar>(filename, m.size, size, c.settings.progress_bars);
    bar = own_bar.get();
  }
  http::Timeouts timeouts;
  timeouts.connect_s = c.settings.etag_timeout_s;
  timeouts.stall_s = c.settings.download_timeout_s;

  int retries_left = 5;
  bool restarted_after_416 = false;
  while (size < m.size) {
    http::Headers h = base;
    if (size > 0) h.emplace_back("range", "bytes=" + std::to_string(size) + "-");
    int64_t at_start = size;
    auto on_start = [&](const http::Response& r) {
      if (at_start > 0 && r.status == 200) {  // the server ignored the Range: start over
        if (ftruncate(fd.get(), 0) != 0) io_error("cannot truncate", incomplete, errno);
        bar->update(-size);
        size = 0;
      } else if (r.status == 206) {
        std::optional<int64_t> start = content_range_start(r);
        if (!start || *start != size)
          throw HubError(ErrorKind::http, "the server resumed '" + filename + "' of '" + c.repo_id +
                                              "' at the wrong offset (asked " + std::to_string(size) + ")");
      }
    };
    auto on_data = [&](const char* data, size_t len) {
      if (size + static_cast<int64_t>(len) > m.size)
        throw HubError(ErrorKind::integrity, "'" + filename + "' of '" + c.repo_id + "' is larger than the " +
                                                 std::to_string(m.size) + " bytes the Hub announced");
      write_all(fd.get(), data, len, size, incomplete);
      size += static_cast<int64_t>(len);
      bar->update(static_cast<int64_t>(len));
      return true;
    };
    std::string failure;
    try {
      http::Response r = s.stream(m.location, h, timeouts, on_start, on_data);
      if (r.status == 416 && !restarted_after_416) {  // our partial file does not fit the blob: restart
        restarted_after_416 = true;
        if (ftruncate(fd.get(), 0) != 0) io_error("cannot truncate", incomplete, errno);
        bar->update(-size);
        size = 0;
        continue;
      }
      if (r.status >= 400 && http::url_origin(r.url) == http::url_origin(c.endpoint))
        raise_for_response(c, r, filename, m.commit);
      if (r.status >= 400)  // the CDN: its signed URL may have expired; a new call asks the Hub for another
        throw HubError(ErrorKind::http, "the file server " + http::url_origin(r.url) + " answered HTTP " +
                                            std::to_string(r.status) + " for '" + filename + "' of '" + c.repo_id +
                                            "'; run again to get a fresh download link", r.status);
      if (r.status < 200 || r.status >= 300)
        throw HubError(ErrorKind::http, "unexpected HTTP " + std::to_string(r.status) + " while downloading '" +
                                            filename + "' of '" + c.repo_id + "'");
      if (size >= m.size) break;
      failure = "the server closed the transfer early";
    } catch (const http::TransportError& e) {
      if (e.kind() == http::TransportError::Kind::cancelled) rethrow_transport(c, e);
      failure = c.mask(e.what());
    } catch (const HubError& e) {
      if (e.kind() == ErrorKind::integrity) {  // do not resume from bytes that cannot be right
        ftruncate(fd.get(), 0);
        unlink(incomplete.c_str());
      }
      throw;
    }
    if (size > at_start) retries_left = 5;  // progress: the connection is worth more tries
    if (--retries_left < 0)
      throw HubError(ErrorKind::http, "download of '" + filename + "' of '" + c.repo_id + "' broke off after " +
                                          std::to_string(size) + " of " + std::to_string(m.size) + " bytes (" +
                                          failure + "); run again to resume from " + incomplete);
    std::this_thread::sleep_for(std::chrono::milliseconds(size > at_start ? 100 : 1000));
    if (c.cancelled && c.cancelled()) throw HubError(ErrorKind::cancelled, "interrupted");
  }
  if (size != m.size)
    throw HubError(ErrorKind::integrity, "consistency check failed: '" + filename + "' should be " +
                                             std::to_string(m.size) + " bytes but has " + std::to_string(size));
  if (rename(incomplete.c_str(), blob.c_str()) != 0) io_error("cannot rename into", blob, errno);
  if (own_bar) own_bar->finish();
}

bool head_error_falls_back(const HubError& e) {
  return e.kind() != ErrorKind::revision_not_found && e.kind() != ErrorKind::entry_not_found &&
         e.kind() != ErrorKind::invalid_argument && e.kind() != ErrorKind::cancelled;
}

bool head_error_is_final(const HubError& e) {
  return e.kind() == ErrorKind::repo_not_found || e.kind() == ErrorKind::gated;
}

}  // namespace

FileResult download_file(const Call& c, http::Session& s, const FileRequest& req) {
  cache::validate_filename(req.filename);
  const std::string& filename = req.filename;
  const std::string& revision = req.revision;
  const std::string& shown = req.asked_revision.empty() ? req.revision : req.asked_revision;
  cache::RepoCache rc = c.repo_cache();

  // A commit hash already cached needs no network at all.
  if (cache::is_commit_hash(revision) && !req.force_download) {
    std::string pointer = rc.pointer_path(revision, filename);
    if (cache::exists(pointer)) return {pointer, revision};
    if (req.optional && rc.is_no_exist(revision, filename)) return {std::nullopt, revision};
  }

  std::optional<FileMetadata> meta;
  std::string why_not_asked;
  std::optional<HubError> head_error;
  bool retryable = false;
  if (c.offline()) {
    why_not_asked = c.offline_reason();
  } else {
    try {
      meta = head_file(c, s, rc, filename, revision, shown, false);
    } catch (const HubError& e) {
      if (e.kind() == ErrorKind::entry_not_found && req.optional) {
        return {std::nullopt, rc.commit_of(revision).value_or("")};
      }
      if (!head_error_falls_back(e)) throw;
      head_error = e;
      why_not_asked = e.what();
      retryable = retryable_status(e.http_status());
    } catch (const http::TransportError& e) {
      why_not_asked = unreachable_reason(c, e);
      retryable = e.kind() == http::TransportError::Kind::timeout;
    }
  }

  if (!meta) {
    if (req.force_download)
      throw HubError(ErrorKind::not_cached, "cannot force the download of '" + filename + "' of '" + c.repo_id +
                                                "': " + why_not_asked);
    if (std::optional<std::string> commit = rc.commit_of(revision)) {
      std::string pointer = rc.pointer_path(*commit, filename);
      if (cache::exists(pointer)) return {pointer, *commit};
      if (rc.is_no_exist(*commit, filename)) {
        if (req.optional) return {std::nullopt, *commit};
        throw HubError(ErrorKind::entry_not_found, "file '" + filename + "' not found in '" + c.repo_id +
                                                       "' at revision '" + shown + "' (recorded in the cache)");
      }
      // As transformers: an optional file missing from a cached snapshot is taken as absent.
      if (req.optional && cache::is_dir(rc.snapshot_dir(*commit))) return {std::nullopt, *commit};
    }
    if (head_error && head_error_is_final(*head_error)) throw *head_error;
    if (retryable) {  // nothing cached: worth the wait of huggingface_hub's backoff
      try {
        meta = head_file(c, s, rc, filename, revision, shown, true);
      } catch (const HubError& e) {
        if (e.kind() == ErrorKind::entry_not_found && req.optional) return {std::nullopt, rc.commit_of(revision).value_or("")};
        if (!head_error_falls_back(e) || head_error_is_final(e)) throw;
        why_not_asked = e.what();
      } catch (const http::TransportError& e) {
        why_not_asked = unreachable_reason(c, e);
      }
    }
    if (!meta)
      throw HubError(ErrorKind::not_cached, why_not_asked + ", and '" + filename + "' of '" + c.repo_id +
                                                "' (revision '" + shown + "') is not in the cache at " +
                                                c.cache_dir + ": missing " + describe_missing(rc, revision, filename));
  }

  std::string blob = rc.blob_path(meta->etag);
  std::string pointer = rc.pointer_path(meta->commit, filename);
  if (!req.force_download && cache::exists(pointer)) {
    try {
      rc.write_ref(revision, meta->commit);
    } catch (const HubError&) {
      // A read-only cache still serves what it has.
    }
    return {pointer, meta->commit};
  }
  cache::make_dirs(cache::parent_dir(blob));
  cache::make_dirs(cache::parent_dir(pointer));
  rc.tag_cache_dir();
  rc.write_ref(revision, meta->commit);
  {
    cache::FileLock lock(rc.lock_path(meta->etag));
    if (req.force_download || !cache::exists(blob)) fetch_blob(c, s, *meta, filename, blob, req.force_download, req.shared_bar);
    if (req.force_download || !cache::exists(pointer)) rc.link_pointer(meta->etag, meta->commit, filename);
  }
  return {pointer, meta->commit};
}

}  // namespace detail

namespace {

detail::FileResult download_one(std::string_view repo_id, std::string_view filename, const DownloadOptions& opts,
                                bool optional) {
  detail::Call c = detail::call_new(repo_id, opts);
  http::Session s;
  s.cancelled = opts.cancelled;
  detail::FileRequest req;
  req.filename = std::string(filename);
  req.revision = opts.revision;
  req.force_download = opts.force_download;
  req.optional = optional;
  return detail::download_file(c, s, req);
}

}  // namespace

std::string hf_hub_download(std::string_view repo_id, std::string_view filename, const DownloadOptions& opts) {
  return *download_one(repo_id, filename, opts, false).path;
}

std::optional<std::string> hf_hub_download_optional(std::string_view repo_id, std::string_view filename,
                                                    const DownloadOptions& opts) {
  return download_one(repo_id, filename, opts, true).path;
}

std::optional<std::string> try_to_load_from_cache(std::string_view repo_id, std::string_view filename,
                                                  const RepoOptions& opts) {
  detail::Call c = detail::call_new(repo_id, opts);
  cache::validate_filename(filename);
  cache::RepoCache rc = c.repo_cache();
  std::optional<std::string> commit = rc.commit_of(c.revision);
  if (!commit) return std::nullopt;
  std::string pointer = rc.pointer_path(*commit, filename);
  if (!cache::exists(pointer)) return std::nullopt;
  return pointer;
}

}  // namespace sky::hub
