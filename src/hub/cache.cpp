// The on-disk cache: paths, refs, pointers, .no_exist marks, tree listings and locks, written so that
// Python's huggingface_hub reads them as its own (and we read what it wrote).
#include "hub/cache.hpp"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <random>

#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include "host/fs.hpp"
#include "host/json.hpp"

namespace sky::hub::cache {

namespace {

[[noreturn]] void io_error(const std::string& what, const std::string& path, int err) {
  throw HubError(ErrorKind::io, fs::errno_message(what, path, err));
}

bool is_hex_lower(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

bool is_name_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_' || c == '.';
}

// A path component from the server (an etag or commit) used as a file name.
void check_component(std::string_view what, std::string_view s) {
  bool ok = !s.empty() && s.size() <= 128 && s != "." && s != "..";
  for (char c : s) ok = ok && is_name_char(c);
  if (!ok) throw HubError(ErrorKind::http, "the Hub sent an unusable " + std::string(what) + " '" + std::string(s) + "'");
}

std::string random_suffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  snprintf(buf, sizeof buf, "%08x", static_cast<unsigned>(rng()));
  return buf;
}

const char* kCacheDirTag =
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by huggingface_hub.\n"
    "# For information about cache directory tags, see:\n"
    "#\thttps://bford.info/cachedir/\n";

}  // namespace

bool is_commit_hash(std::string_view s) {
  if (s.size() != 40) return false;
  for (char c : s)
    if (!is_hex_lower(c)) return false;
  return true;
}

void validate_repo_id(std::string_view repo_id) {
  auto fail = [&](const std::string& why) {
    throw HubError(ErrorKind::invalid_argument, "invalid repo id '" + std::string(repo_id) + "': " + why);
  };
  size_t slash = repo_id.find('/');
  if (slash != std::string_view::npos && repo_id.find('/', slash + 1) != std::string_view::npos)
    fail("it must be 'name' or 'namespace/name' (and is not an existing local folder)");
  auto check_part = [&](std::string_view part, size_t max) {
    if (part.empty() || part.size() > max) fail("each part must have 1 to 96 characters");
    for (char c : part)
      if (!is_name_char(c)) fail("only letters, digits, '-', '_' and '.' are allowed");
    if (part.front() == '-' || part.front() == '.' || part.back() == '-' || part.back() == '.')
      fail("a name cannot start or end with '-' or '.'");
  };
  if (slash != std::string_view::npos) check_part(repo_id.substr(0, slash), 96);
  check_part(slash == std::string_view::npos ? repo_id : repo_id.substr(slash + 1), 96);
  if (repo_id.find("--") != std::string_view::npos || repo_id.find("..") != std::string_view::npos)
    fail("'--' and '..' are not allowed");
  if (repo_id.size() >= 4 && repo_id.substr(repo_id.size() - 4) == ".git") fail("it cannot end with '.git'");
}

void validate_filename(std::string_view filename) {
  auto fail = [&](const std::string& why) {
    throw HubError(ErrorKind::invalid_argument, "invalid filename '" + std::string(filename) + "': " + why);
  };
  if (filename.empty()) fail("it is empty");
  if (filename.front() == '/' || filename.front() == '\\') fail("it cannot be an absolute path");
  if (filename.size() >= 2 && filename[1] == ':') fail("it cannot be a drive path");
  size_t start = 0;
  while (start <= filename.size()) {
    size_t end = filename.find_first_of("/\\", start);
    if (end == std::string_view::npos) end = filename.size();
    std::string_view part = filename.substr(start, end - start);
    if (part == "..") fail("it cannot contain a '..' path segment");
    if (part.empty() || part == ".") fail("it cannot contain empty or '.' path segments");
    start = end + 1;
  }
  if (filename.find('\0') != std::string_view::npos) fail("it contains a NUL byte");
}

bool exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

bool is_dir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void make_dirs(const std::string& path) {
  if (path.empty() || is_dir(path)) return;
  make_dirs(parent_dir(path));
  if (mkdir(path.c_str(), 0777) != 0 && errno != EEXIST) io_error("cannot create the folder", path, errno);
}

std::string parent_dir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return "";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

void write_file_atomic(const std::string& path, std::string_view data) {
  make_dirs(parent_dir(path));
  try {
    fs::write_file_atomic(path, data);
  } catch (const fs::FsError& e) {
    throw HubError(ErrorKind::io, e.what());
  }
}

std::optional<std::string> read_small_file(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

// ---- RepoCache -----------------------------------------------------------------------------------

RepoCache::RepoCache(std::string cache_dir, std::string_view repo_id, RepoType type)
    : cache_dir_(std::move(cache_dir)), repo_folder_(repo_folder_name(repo_id, type)) {
  while (cache_dir_.size() > 1 && cache_dir_.back() == '/') cache_dir_.pop_back();
  folder_ = cache_dir_ + "/" + repo_folder_;
}

std::string RepoCache::blob_path(std::string_view etag) const {
  check_component("ETag", etag);
  return folder_ + "/blobs/" + std::string(etag);
}

std::string RepoCache::snapshot_dir(std::string_view commit) const {
  check_component("commit", commit);
  return folder_ + "/snapshots/" + std::string(commit);
}

std::string RepoCache::pointer_path(std::string_view commit, std::string_view filename) const {
  validate_filename(filename);
  return snapshot_dir(commit) + "/" + std::string(filename);
}

std::string RepoCache::ref_path(std::string_view revision) const {
  validate_filename(revision);  // "refs/pr/1" nests; ".." never escapes refs/
  return folder_ + "/refs/" + std::string(revision);
}

std::string RepoCache::no_exist_path(std::string_view commit, std::string_view filename) const {
  check_component("commit", commit);
  validate_filename(filename);
  return folder_ + "/.no_exist/" + std::string(commit) + "/" + std::string(filename);
}

std::string RepoCache::tree_path(std::string_view commit) const {
  check_component("commit", commit);
  return folder_ + "/trees/" + std::string(commit) + ".json";
}

std::string RepoCache::lock_path(std::string_view etag) const {
  check_component("ETag", etag);
  return cache_dir_ + "/.locks/" + repo_folder_ + "/" + std::string(etag) + ".lock";
}

std::optional<std::string> RepoCache::read_ref(std::string_view revision) const {
  std::optional<std::string> s = read_small_file(ref_path(revision));
  if (!s) return std::nullopt;
  while (!s->empty() && (s->back() == '\n' || s->back() == '\r' || s->back() == ' ')) s->pop_back();
  if (s->empty()) return std::nullopt;
  return s;
}

void RepoCache::write_ref(std::string_view revision, std::string_view commit) const {
  if (revision == commit) return;
  check_component("commit", commit);
  std::optional<std::string> old = read_ref(revision);
  if (old && *old == commit) return;
  write_file_atomic(ref_path(revision), commit);
}

std::optional<std::string> RepoCache::commit_of(std::string_view revision) const {
  if (is_commit_hash(revision)) return std::string(revision);
  return read_ref(revision);
}

void RepoCache::mark_no_exist(std::string_view commit, std::string_view filename) const {
  try {
    std::string p = no_exist_path(commit, filename);
    if (exists(p)) return;
    make_dirs(parent_dir(p));
    int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (fd >= 0) close(fd);
  } catch (const HubError&) {
    // Only a shortcut for later calls: failing to record it changes nothing else.
  }
}

bool RepoCache::is_no_exist(std::string_view commit, std::string_view filename) const {
  return exists(no_exist_path(commit, filename));
}

void RepoCache::link_pointer(std::string_view etag, std::string_view commit, std::string_view filename) const {
  std::string pointer = pointer_path(commit, filename);
  make_dirs(parent_dir(pointer));
  size_t depth = 2;  // snapshots/<commit>/
  for (char c : filename)
    if (c == '/') ++depth;
  std::string target;
  for (size_t i = 0; i < depth; ++i) target += "../";
  target += "blobs/" + std::string(etag);
  check_component("ETag", etag);
  // A symlink under a temporary name renamed over the pointer: never a moment without one.
  std::string tmp = pointer + "." + random_suffix() + ".tmp";
  if (symlink(target.c_str(), tmp.c_str()) != 0) io_error("cannot create the symlink", tmp, errno);
  if (rename(tmp.c_str(), pointer.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    io_error("cannot create the snapshot file", pointer, err);
  }
}

void RepoCache::tag_cache_dir() const {
  std::string tag = cache_dir_ + "/CACHEDIR.TAG";
  if (exists(tag)) return;
  try {
    write_file_atomic(tag, kCacheDirTag);
  } catch (const HubError&) {
    // As huggingface_hub: a read-only cache root only loses the backup hint.
  }
}

std::optional<Tree> RepoCache::read_tree(std::string_view commit) const {
  std::optional<std::string> text = read_small_file(tree_path(commit));
  if (!text) return std::nullopt;
  rapidjson::Document doc;
  if (!json_parse(doc, *text) || !doc.IsObject()) return std::nullopt;
  auto version = doc.FindMember("format_version");
  auto files = doc.FindMember("files");
  if (version == doc.MemberEnd() || !version->value.IsInt() || version->value.GetInt() != 1) return std::nullopt;
  if (files == doc.MemberEnd() || !files->value.IsObject()) return std::nullopt;
  Tree tree;
  for (auto& m : files->value.GetObject()) {
    if (!m.value.IsObject()) return std::nullopt;
    TreeEntry e;
    auto size = m.value.FindMember("size");
    auto blob = m.value.FindMember("blob_id");
    if (size == m.value.MemberEnd() || !size->value.IsInt64()) return std::nullopt;
    if (blob == m.value.MemberEnd() || !blob->value.IsString()) return std::nullopt;
    e.size = size->value.GetInt64();
    e.blob_id = blob->value.GetString();
    auto sha = m.value.FindMember("lfs_sha256");
    if (sha != m.value.MemberEnd() && sha->value.IsString()) e.lfs_sha256 = sha->value.GetString();
    auto lsize = m.value.FindMember("lfs_size");
    if (lsize != m.value.MemberEnd() && lsize->value.IsInt64()) e.lfs_size = lsize->value.GetInt64();
    tree.emplace(std::string(m.name.GetString(), m.name.GetStringLength()), std::move(e));
  }
  return tree;
}

void RepoCache::write_tree(std::string_view commit, const Tree& tree) const {
  rapidjson::StringBuffer sb;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(sb);
  w.SetIndent(' ', 1);  // json.dump(indent=1)
  w.StartObject();
  w.Key("format_version");
  w.Int(1);
  w.Key("files");
  w.StartObject();
  for (const auto& [path, e] : tree) {  // std::map: sorted, as huggingface_hub sorts
    w.Key(path.data(), static_cast<rapidjson::SizeType>(path.size()));
    w.StartObject();
    w.Key("size");
    w.Int64(e.size);
    w.Key("blob_id");
    w.String(e.blob_id.data(), static_cast<rapidjson::SizeType>(e.blob_id.size()));
    if (e.lfs_sha256) {
      w.Key("lfs_sha256");
      w.String(e.lfs_sha256->data(), static_cast<rapidjson::SizeType>(e.lfs_sha256->size()));
      w.Key("lfs_size");
      if (e.lfs_size) w.Int64(*e.lfs_size);
      else w.Null();
    }
    w.EndObject();
  }
  w.EndObject();
  w.EndObject();
  try {
    write_file_atomic(tree_path(commit), std::string_view(sb.GetString(), sb.GetSize()));
  } catch (const HubError&) {
    // A listing we could not record is fetched again next time.
  }
}

// ---- FileLock ------------------------------------------------------------------------------------

FileLock::FileLock(const std::string& path) {
  make_dirs(parent_dir(path));
  fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd_ < 0) io_error("cannot open the lock file", path, errno);
  while (flock(fd_, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    int err = errno;
    close(fd_);
    fd_ = -1;
    io_error("cannot lock", path, err);
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) {
    flock(fd_, LOCK_UN);
    close(fd_);
  }
}

}  // namespace sky::hub::cache
