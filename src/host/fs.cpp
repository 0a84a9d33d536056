// File work without a shell: see fs.hpp. Folders are walked with *at() calls on open folder
// descriptors, so removing a tree never follows a link out of it even if the tree changes meanwhile.
#include "host/fs.hpp"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>

namespace sky::fs {

std::string errno_message(std::string_view what, const std::string& path, int err) {
  if (err == ELOOP) return std::string(what) + " '" + path + "': it is a symbolic link, which is refused here (remove it)";
  return std::string(what) + " '" + path + "': " + strerror(err);
}

void throw_errno(std::string_view what, const std::string& path, int err) {
  throw FsError(errno_message(what, path, err), err);
}

namespace {

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

Kind kind_of(mode_t m) {
  if (S_ISREG(m)) return Kind::file;
  if (S_ISDIR(m)) return Kind::dir;
  if (S_ISLNK(m)) return Kind::link;
  return Kind::other;
}

std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string base_name(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Names in the folder open at fd (which stays open; the listing uses a duplicate).
std::vector<std::string> names_at(int fd, const std::string& shown) {
  int dup_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) throw_errno("cannot list the folder", shown, errno);
  DIR* d = ::fdopendir(dup_fd);
  if (!d) {
    int err = errno;
    ::close(dup_fd);
    throw_errno("cannot list the folder", shown, err);
  }
  ::rewinddir(d);
  std::vector<std::string> out;
  for (;;) {
    errno = 0;
    struct dirent* e = ::readdir(d);
    if (!e) {
      int err = errno;
      ::closedir(d);
      if (err != 0) throw_errno("cannot list the folder", shown, err);
      break;
    }
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    out.emplace_back(e->d_name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Removes `name` inside the folder open at dir_fd; `shown` is its full path for errors.
void remove_at(int dir_fd, const std::string& name, const std::string& shown) {
  struct stat st;
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return;
    throw_errno("cannot remove", shown, errno);
  }
  if (S_ISDIR(st.st_mode)) {
    // O_NOFOLLOW: if the folder was swapped for a link since fstatat, this fails and the link
    // itself is unlinked below instead.
    Fd sub(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (sub.get() >= 0) {
      for (const std::string& child : names_at(sub.get(), shown)) remove_at(sub.get(), child, join(shown, child));
      if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) == 0 || errno == ENOENT) return;
      throw_errno("cannot remove the folder", shown, errno);
    }
    if (errno != ELOOP && errno != ENOTDIR) throw_errno("cannot open the folder", shown, errno);
  }
  if (::unlinkat(dir_fd, name.c_str(), 0) != 0 && errno != ENOENT) throw_errno("cannot remove", shown, errno);
}

std::string random_hex() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

void write_all(int fd, std::string_view data, const std::string& shown) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("cannot write", shown, errno);
    if (n == 0) throw_errno("cannot write", shown, EIO);
    off += static_cast<size_t>(n);
  }
}

}  // namespace

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::file: return "file";
    case Kind::dir: return "dir";
    case Kind::link: return "link";
    case Kind::other: return "other";
  }
  return "other";
}

std::string parent_dir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return "";
  size_t end = path.find_last_not_of('/', slash);
  if (end == std::string::npos) return "/";
  return path.substr(0, end + 1);
}

std::optional<Stat> stat(const std::string& path, bool follow) {
  struct stat st;
  int rc = follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st);
  if (rc != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
    throw_errno("cannot stat", path, errno);
  }
  Stat s;
  s.kind = kind_of(st.st_mode);
  s.size = static_cast<uint64_t>(st.st_size);
  s.mtime = static_cast<double>(st.st_mtim.tv_sec) + static_cast<double>(st.st_mtim.tv_nsec) * 1e-9;
  s.mode = st.st_mode & 07777;
  return s;
}

void make_dirs(const std::string& path, mode_t mode) {
  if (path.empty()) throw FsError("cannot create a folder with an empty path", EINVAL);
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return;
    throw_errno("cannot create the folder", path, EEXIST);
  }
  std::string parent = parent_dir(path);
  if (!parent.empty() && parent != path) make_dirs(parent, mode);
  if (::mkdir(path.c_str(), mode) == 0) return;
  int err = errno;
  // Another process may have made it meanwhile; "a/b/." style paths also land here.
  if (err == EEXIST && ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return;
  throw_errno("cannot create the folder", path, err);
}

bool remove_tree(const std::string& given) {
  std::string path = given;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  if (path.empty() || path == "/") throw FsError("refusing to remove '" + given + "'", EINVAL);
  std::string parent = parent_dir(path);
  std::string name = base_name(path);
  if (name.empty() || name == "." || name == "..")
    throw FsError("cannot remove '" + path + "': name the folder itself, not '.' or '..'", EINVAL);
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return false;
    throw_errno("cannot remove", path, errno);
  }
  Fd dir(::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) throw_errno("cannot open the folder", parent, errno);
  remove_at(dir.get(), name, path);
  return true;
}

std::vector<std::string> list_dir(const std::string& path) {
  Fd dir(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) throw_errno("cannot list the folder", path, errno);
  return names_at(dir.get(), path);
}

int open_nofollow(const std::string& path, int flags, mode_t mode, std::string_view what) {
  for (;;) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd >= 0) return fd;
    if (errno != EINTR) throw_errno(what, path, errno);
  }
}

std::string read_file(const std::string& path, bool follow_links) {
  int flags = O_RDONLY | O_CLOEXEC | (follow_links ? 0 : O_NOFOLLOW);
  Fd fd(::open(path.c_str(), flags));
  if (fd.get() < 0) throw_errno("cannot read", path, errno);
  std::string out;
  struct stat st;
  if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode)) out.reserve(static_cast<size_t>(st.st_size));
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("cannot read", path, errno);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string temp_name_beside(const std::string& path) {
  std::string dir = parent_dir(path);
  return join(dir, "." + base_name(path) + ".tmp-" + std::to_string(::getpid()) + "-" + random_hex());
}

AtomicFileWriter::AtomicFileWriter(std::string path, mode_t mode) : path_(std::move(path)) {
  for (int attempt = 0; fd_ < 0; ++attempt) {
    tmp_ = temp_name_beside(path_);
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd_ < 0 && errno != EEXIST && errno != EINTR) throw_errno("cannot write", path_, errno);
    if (fd_ < 0 && attempt > 100) throw_errno("cannot create a temporary file beside", path_, errno);
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t n) {
  if (fd_ < 0) throw FsError("cannot write '" + path_ + "': already committed", EBADF);
  write_all(fd_, std::string_view(static_cast<const char*>(data), n), path_);
}

void AtomicFileWriter::commit() {
  if (fd_ < 0) throw FsError("cannot write '" + path_ + "': already committed", EBADF);
  if (::fsync(fd_) != 0) throw_errno("cannot write", path_, errno);
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) throw_errno("cannot write", path_, errno);
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) throw_errno("cannot rename a temporary file onto", path_, errno);
  tmp_.clear();
  // The rename is durable once the folder is; a folder we cannot open for this is not an error.
  std::string dir = parent_dir(path_);
  Fd dfd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() >= 0) ::fsync(dfd.get());
}

void write_file_atomic(const std::string& path, std::string_view data, mode_t mode) {
  AtomicFileWriter out(path, mode);
  out.write(data.data(), data.size());
  out.commit();
}

}  // namespace sky::fs
