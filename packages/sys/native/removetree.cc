// removeTree(path): deletes a directory tree without ever following a symlink, for layer
// trees a container may still be changing (a process that outlived its container, or a
// layer of untrusted content). Node's recursive rm works by path: a directory swapped for
// a symlink between its lstat and its readdir makes it delete what the link points to.
// Here every entry is removed relative to its parent's fd, a directory is entered only
// through openat(O_DIRECTORY | O_NOFOLLOW) and only when it is on the same mount (a
// mount point inside the tree is never descended into: EBUSY names it; a btrfs
// subvolume, another st_dev on the same mount, is descended into as rm would).
#include "common.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef STATX_MNT_ID
#define STATX_MNT_ID 0x00001000U
#endif

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace cairn {

namespace {

// Deeper than any tree cairn makes (paths are bounded by PATH_MAX and the tar limits); a
// deeper one is refused rather than allowed to exhaust fds.
constexpr int kMaxDepth = 2048;
// Times one name is tried again when it changes type between two calls.
constexpr int kMaxTries = 8;

// The mount a file is on: statx's mount id (Linux 5.8+), else its st_dev.
bool MountOf(int fd, uint64_t* out) {
  struct statx sx;
  // A mount id of 0 is not one (an emulator that passes the mask on without the field).
  if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &sx) == 0 && (sx.stx_mask & STATX_MNT_ID) && sx.stx_mnt_id != 0) {
    *out = sx.stx_mnt_id;
    return true;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) return false;
  *out = static_cast<uint64_t>(st.st_dev) | (1ULL << 63);
  return true;
}

struct Remover {
  SysError& e;
  uint64_t mount = 0;

  bool Fail(int err, const char* syscall, const std::string& rel) {
    PathError(e, err, syscall, rel);
    return false;
  }

  // getdents64's buffer, reused by every directory of the tree (names are copied out
  // before a child is entered).
  std::vector<char> buf = std::vector<char>(32 * 1024);

  // Empties the directory behind `dirfd` (an fd of `rel`). Listed with getdents64 on that
  // fd itself, not through a DIR stream: fdopendir would take the fd (closedir closes it,
  // so a stream needs an fd of its own, an openat of "." and its close) and costs an fstat
  // and two fcntl besides: five syscalls per directory. `dirfd` is fresh (offset 0) and
  // used only with *at calls after this.
  bool Empty(int dirfd, const std::string& rel, int depth) {
    if (depth > kMaxDepth) return Fail(ELOOP, "openat", rel);
    // Names first, removals after: unlinking while reading a directory may skip entries.
    // d_type says which names are directories (DT_UNKNOWN on some filesystems: then the
    // unlink is tried first, as for any name).
    std::vector<std::pair<std::string, bool>> names;
    for (;;) {
      ssize_t n = getdents64(dirfd, buf.data(), buf.size());
      if (n < 0) return Fail(errno, "getdents64", rel);
      if (n == 0) break;
      for (ssize_t at = 0; at < n;) {
        const auto* d = reinterpret_cast<const struct dirent64*>(buf.data() + at);
        at += d->d_reclen;
        if (std::strcmp(d->d_name, ".") == 0 || std::strcmp(d->d_name, "..") == 0) continue;
        names.emplace_back(d->d_name, d->d_type == DT_DIR);
      }
    }
    for (const auto& [name, isDir] : names) {
      if (!Entry(dirfd, name, rel.empty() ? name : rel + "/" + name, depth, 0, isDir)) return false;
    }
    return true;
  }

  // `listedDir`: the listing said directory, so the unlink that would fail with EISDIR is
  // not tried (if it has become something else since, the openat says so and the name is
  // unlinked as any other).
  bool Entry(int dirfd, const std::string& name, const std::string& rel, int depth, int tries = 0, bool listedDir = false) {
    int unlinkErr = EISDIR;
    if (!listedDir) {
      if (unlinkat(dirfd, name.c_str(), 0) == 0 || errno == ENOENT) return true;
      unlinkErr = errno;
      if (unlinkErr != EISDIR && unlinkErr != EPERM) return Fail(unlinkErr, "unlinkat", rel);
    }
    int child = openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (child < 0) {
      if (errno == ENOENT) return true;
      // Swapped for a non-directory since the unlink: remove that instead (a few times: a
      // name swapped back and forth by another process, or an undeletable file, is
      // reported rather than retried forever).
      if ((errno == ENOTDIR || errno == ELOOP) && tries < kMaxTries && unlinkErr == EISDIR) return Entry(dirfd, name, rel, depth, tries + 1);
      return Fail(errno == ENOTDIR || errno == ELOOP ? unlinkErr : errno, errno == ENOTDIR || errno == ELOOP ? "unlinkat" : "openat", rel);
    }
    uint64_t mnt = 0;
    bool ok = true;
    if (!MountOf(child, &mnt)) {
      ok = Fail(errno, "statx", rel);
    } else if (mnt != mount) {
      ok = Fail(EBUSY, "removeTree", rel);
      e.detail = "a mount point inside the tree; unmount it first";
    } else {
      ok = Empty(child, rel, depth + 1);
    }
    close(child);
    if (!ok) return false;
    if (unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) == 0 || errno == ENOENT) return true;
    return Fail(errno, "unlinkat", rel);
  }
};

void DoRemoveTree(const std::string& path, SysError& e) {
  std::string parent = ".", name = path;
  size_t slash = path.find_last_of('/');
  if (slash != std::string::npos) {
    parent = slash == 0 ? "/" : path.substr(0, slash);
    name = path.substr(slash + 1);
  }
  if (name.empty() || name == "." || name == "..") {
    PathError(e, EINVAL, "removeTree", path);
    return;
  }
  // The parent is cairn's own (a store's home); below it nothing is trusted.
  int pfd = open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (pfd < 0) {
    if (errno != ENOENT) PathError(e, errno, "open", parent);
    return;
  }
  Remover r{e};
  if (!MountOf(pfd, &r.mount)) {
    PathError(e, errno, "statx", parent);
  } else {
    if (!r.Entry(pfd, name, name, 0) && !e.path.empty()) e.path = parent + "/" + e.path;
  }
  close(pfd);
}

// removeTree(path) → Promise<void>: on the thread pool; a missing path is not an error.
Napi::Value RemoveTree(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  return RunAsync(info.Env(), "cairn.removeTree", [path](JobResult& r) { DoRemoveTree(path, r.error); });
}

}  // namespace

void InitRemoveTree(Napi::Env env, Napi::Object exports) {
  exports.Set("removeTree", Napi::Function::New(env, RemoveTree, "removeTree"));
}

}  // namespace cairn
