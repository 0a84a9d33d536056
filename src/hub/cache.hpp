// The cache layout huggingface_hub writes, byte for byte:
//   <cache>/models--org--name/blobs/<etag>                    file contents, named by git sha1 or LFS sha256
//   <cache>/models--org--name/blobs/<etag>.incomplete         a download in progress (resumed with Range)
//   <cache>/models--org--name/snapshots/<commit>/<path>       relative symlink into blobs/
//   <cache>/models--org--name/refs/<revision>                 the commit a branch or tag pointed at last
//   <cache>/models--org--name/.no_exist/<commit>/<path>       empty: the file is known absent at that commit
//   <cache>/models--org--name/trees/<commit>.json             the file listing of a commit (format_version 1)
//   <cache>/.locks/models--org--name/<etag>.lock              flock(2) held while a blob is written
// Nothing here touches the network.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "hub/hub.hpp"

namespace sky::hub::cache {

bool is_commit_hash(std::string_view s);  // exactly 40 lower-case hex digits

// Raises HubError(invalid_argument) for a repo id huggingface_hub would refuse.
void validate_repo_id(std::string_view repo_id);
// Raises HubError(invalid_argument) for a file name that could escape the snapshot folder.
void validate_filename(std::string_view filename);

bool exists(const std::string& path);       // follows symlinks (a dangling link does not exist)
bool is_dir(const std::string& path);
void make_dirs(const std::string& path);    // mkdir -p; HubError(io) on failure
std::string parent_dir(const std::string& path);
// Writes data to path through a temporary file and rename(2): readers never see half a file.
void write_file_atomic(const std::string& path, std::string_view data);
std::optional<std::string> read_small_file(const std::string& path);

struct TreeEntry {
  int64_t size = 0;
  std::string blob_id;              // git sha1
  std::optional<std::string> lfs_sha256;
  std::optional<int64_t> lfs_size;
};
using Tree = std::map<std::string, TreeEntry>;  // path -> entry

class RepoCache {
 public:
  RepoCache(std::string cache_dir, std::string_view repo_id, RepoType type);

  const std::string& cache_dir() const { return cache_dir_; }
  const std::string& folder() const { return folder_; }  // <cache>/models--org--name

  std::string blob_path(std::string_view etag) const;
  std::string snapshot_dir(std::string_view commit) const;
  std::string pointer_path(std::string_view commit, std::string_view filename) const;
  std::string ref_path(std::string_view revision) const;
  std::string no_exist_path(std::string_view commit, std::string_view filename) const;
  std::string tree_path(std::string_view commit) const;
  std::string lock_path(std::string_view etag) const;

  std::optional<std::string> read_ref(std::string_view revision) const;
  // Records revision -> commit unless revision is that commit already; rewrites only on change.
  void write_ref(std::string_view revision, std::string_view commit) const;
  // The commit a revision names: itself for a commit hash, else what refs/ recorded.
  std::optional<std::string> commit_of(std::string_view revision) const;

  void mark_no_exist(std::string_view commit, std::string_view filename) const;  // best effort
  bool is_no_exist(std::string_view commit, std::string_view filename) const;

  // snapshots/<commit>/<filename> -> ../../blobs/<etag> (relative), replacing what was there.
  void link_pointer(std::string_view etag, std::string_view commit, std::string_view filename) const;
  // Creates CACHEDIR.TAG in the cache root once, as huggingface_hub does.
  void tag_cache_dir() const;

  std::optional<Tree> read_tree(std::string_view commit) const;
  void write_tree(std::string_view commit, const Tree& tree) const;  // best effort

 private:
  std::string cache_dir_, repo_folder_, folder_;
};

// An exclusive flock(2) on a lock file, compatible with the filelock package huggingface_hub uses.
class FileLock {
 public:
  explicit FileLock(const std::string& path);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace sky::hub::cache
