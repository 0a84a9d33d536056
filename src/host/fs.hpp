// File work for every subsystem, in place of shelling out (mkdir -p, rm -rf, ls): folders made
// and removed, listings, stat, whole-file reads, and atomic writes that never expose a partial
// file or a file with looser permissions than asked. Knows nothing of Lua (lua_fs.cpp binds it
// as "sky.fs"). Every failure throws FsError, whose message names the path and the OS reason.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace sky::fs {

struct FsError : std::runtime_error {
  FsError(const std::string& msg, int err) : std::runtime_error(msg), code(err) {}
  int code;  // errno of the failing call (ELOOP for a refused symlink, ENOSPC for a full disk, ...)
};

// "<what> '<path>': <strerror(err)>", or a clear sentence for a refused symbolic link (ELOOP).
std::string errno_message(std::string_view what, const std::string& path, int err);
[[noreturn]] void throw_errno(std::string_view what, const std::string& path, int err);

enum class Kind { file, dir, link, other };
const char* kind_name(Kind k);  // "file", "dir", "link", "other"

struct Stat {
  Kind kind;
  uint64_t size;
  double mtime;  // seconds since the epoch, with nanoseconds
  mode_t mode;   // permission bits only (07777)
};

// stat(2) (follow = true) or lstat(2); nullopt when the path does not exist (ENOENT, ENOTDIR),
// FsError for any other failure (permission, I/O).
std::optional<Stat> stat(const std::string& path, bool follow = true);

// mkdir -p: creates every missing folder of path with `mode` (less the umask). An existing folder
// is fine; an existing non-folder is an error.
void make_dirs(const std::string& path, mode_t mode = 0777);

// rm -rf: removes path and everything under it. Symbolic links are removed, never followed (a
// link inside the tree pointing elsewhere leaves its target untouched, and a path that is a link
// removes the link). Returns false when nothing was there.
bool remove_tree(const std::string& path);

// The names in a folder (no "." or ".."), sorted bytewise.
std::vector<std::string> list_dir(const std::string& path);

// The whole file. follow_links = false refuses a path whose last component is a symbolic link.
std::string read_file(const std::string& path, bool follow_links = true);

// Opens path with flags | O_CLOEXEC | O_NOFOLLOW: a symbolic link at the last component is
// refused with a clear FsError (code ELOOP) instead of being followed. `what` starts the message.
int open_nofollow(const std::string& path, int flags, mode_t mode, std::string_view what);

// Writes data to path so that readers see the old file or the new one, never a part, and never
// with wider permissions than `mode`: a temporary name beside path is created with
// O_CREAT|O_EXCL|O_NOFOLLOW and `mode` from the first instant (less the umask), written, fsync'd
// and renamed over path (which, if a symbolic link, is replaced, not followed). On failure the
// temporary file is removed and path is untouched. The folder must exist.
void write_file_atomic(const std::string& path, std::string_view data, mode_t mode = 0644);

// A file written in pieces and published as write_file_atomic publishes it: the temporary file
// exists from the constructor on; commit() fsyncs and renames it onto path; destroyed without a
// commit (an error on the way), it is removed and path is untouched.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path, mode_t mode = 0644);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t n);  // all of it, or FsError (ENOSPC names path)
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

// Unique temporary name beside path: "<dir>/.<base>.tmp-<pid>-<random>".
std::string temp_name_beside(const std::string& path);

std::string parent_dir(const std::string& path);  // "" for a bare name, "/" for "/x"

}  // namespace sky::fs
