// The HuggingFace Hub client: fetches files of model and dataset repositories into the cache layout
// Python's huggingface_hub writes (models--org--name/{blobs,snapshots,refs}), so a cache either one
// filled serves the other. Native core: nothing here knows Lua (src/hub/lua_hub.cpp binds it).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace sky::hub {

enum class RepoType { model, dataset, space };

std::string_view repo_type_name(RepoType t);  // "model", "dataset", "space"
RepoType repo_type_parse(std::string_view s);  // throws HubError(invalid_argument)

// What huggingface_hub reads from the environment (its constants.py), read again at every call so a
// process may change the environment between calls.
struct Settings {
  std::string endpoint;                 // HF_ENDPOINT, default https://huggingface.co, no trailing '/'
  std::string cache_dir;                // HF_HUB_CACHE > HUGGINGFACE_HUB_CACHE > $HF_HOME/hub
  std::string token_path;               // HF_TOKEN_PATH > $HF_HOME/token
  std::string env_token;                // HF_TOKEN > HUGGING_FACE_HUB_TOKEN, cleaned; empty: none
  bool offline = false;                 // HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is 1/ON/YES/TRUE
  bool disable_implicit_token = false;  // HF_HUB_DISABLE_IMPLICIT_TOKEN
  bool progress_bars = true;            // false when HF_HUB_DISABLE_PROGRESS_BARS is true
  double etag_timeout_s = 10;           // HF_HUB_ETAG_TIMEOUT: metadata (HEAD, API) requests
  double download_timeout_s = 10;       // HF_HUB_DOWNLOAD_TIMEOUT: longest stall of a download

  static Settings from_env();
};

// huggingface_hub.get_token: HF_TOKEN (or HUGGING_FACE_HUB_TOKEN), else the token file
// ($HF_TOKEN_PATH, default $HF_HOME/token); nullopt when there is none.
std::optional<std::string> get_token();

// The keyword arguments huggingface_hub's functions share, with the same meaning.
struct RepoOptions {
  std::string revision = "main";       // branch, tag or commit hash
  RepoType repo_type = RepoType::model;
  std::string cache_dir;               // empty: Settings::cache_dir
  std::string endpoint;                // empty: Settings::endpoint
  std::optional<std::string> token;    // nullopt: HF_TOKEN or the token file; "": send no token
  bool local_files_only = false;       // never touch the network (as HF_HUB_OFFLINE=1)
  std::function<bool()> cancelled;     // polled during transfers; true aborts with HubError(cancelled)
};

struct DownloadOptions : RepoOptions {
  bool force_download = false;
};

struct SnapshotOptions : DownloadOptions {
  std::vector<std::string> allow_patterns;   // fnmatch patterns; empty: every file
  std::vector<std::string> ignore_patterns;
  int max_workers = 8;                       // files downloaded at once
};

// Every failure is a HubError with a message meant for users. The message names the repository,
// the file and the revision; it never contains the token.
enum class ErrorKind {
  invalid_argument,    // a malformed repo id, filename or option
  repo_not_found,      // "repository 'org/name' not found at <endpoint>"
  revision_not_found,  // "revision 'v2' not found in 'org/name' at <endpoint>"
  entry_not_found,     // "file 'x' not found in 'org/name' at revision 'main'"
  gated,               // 401/403: "... is gated or private: accept its license at ... and set HF_TOKEN"
  not_cached,          // offline, or the Hub unreachable, and the cache lacks the file (named)
  http,                // any other HTTP failure
  io,                  // local file system
  integrity,           // a download whose size does not match the Hub's
  cancelled,
};

class HubError : public std::runtime_error {
 public:
  HubError(ErrorKind kind, const std::string& msg, long http_status = 0)
      : std::runtime_error(msg), kind_(kind), http_status_(http_status) {}
  ErrorKind kind() const { return kind_; }
  long http_status() const { return http_status_; }  // the Hub's answer, 0 when none came

 private:
  ErrorKind kind_;
  long http_status_;
};

// huggingface_hub.hf_hub_download: the local path of `filename` inside the snapshot folder
// <cache>/<repo folder>/snapshots/<commit>/<filename> (a relative symlink into blobs/).
std::string hf_hub_download(std::string_view repo_id, std::string_view filename, const DownloadOptions& opts);

// As hf_hub_download, but nullopt when the repository has no such file at that revision (the Hub
// said EntryNotFound, or the cache recorded so in .no_exist/).
std::optional<std::string> hf_hub_download_optional(std::string_view repo_id, std::string_view filename,
                                                    const DownloadOptions& opts);

// huggingface_hub.snapshot_download: downloads every file of the revision that the patterns allow;
// returns the snapshot folder.
std::string snapshot_download(std::string_view repo_id, const SnapshotOptions& opts);

// The paths of every file of the repository at the revision (sorted). Online it asks the Hub's tree
// API and records the listing in <repo folder>/trees/<commit>.json; offline it reads that record.
std::vector<std::string> list_repo_files(std::string_view repo_id, const RepoOptions& opts);

struct WantedFile {
  std::string name;
  bool optional = false;
};

struct ResolvedFolder {
  std::string folder;              // a local folder as given, or the snapshot folder
  std::string commit;              // empty for a local folder
  std::vector<std::string> files;  // the wanted files present (shards included), relative to folder
};

// What from_pretrained calls: a local folder is returned as it is (its required files checked);
// otherwise every wanted file is downloaded at one commit. A wanted "X.safetensors" that the repo
// lacks is replaced by "X.safetensors.index.json" and every shard that index names.
ResolvedFolder resolve_model_folder(std::string_view path_or_id, const std::vector<WantedFile>& files,
                                    const DownloadOptions& opts);

// The cached path of a file for the revision without any network access; nullopt when not cached.
std::optional<std::string> try_to_load_from_cache(std::string_view repo_id, std::string_view filename,
                                                  const RepoOptions& opts);

// "models--org--name": the repository's folder in the cache.
std::string repo_folder_name(std::string_view repo_id, RepoType type);

// fnmatch as Python's fnmatch.fnmatchcase: '*' also matches '/'. A pattern ending in '/' matches
// everything under that folder (huggingface_hub's filter_repo_objects).
bool repo_pattern_match(std::string_view pattern, std::string_view path);

}  // namespace sky::hub
