// openBeneathSync: open a file below a root directory for reading, the way every host-side
// read of untrusted content must (the engine's invariant in packages/archive/README.md):
//   1. resolve the name beneath the root with openat2 — RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
//      (strict: any symlink on the way, the last component included, is ELOOP), or
//      RESOLVE_IN_ROOT (symlinks are followed but resolved as if the root were "/", so they
//      cannot leave it; image sources use this for docker save's symlinked layer.tar) —
//      always with RESOLVE_NO_MAGICLINKS, and as an O_PATH fd: opening a device, fifo or
//      socket by O_PATH has no side effect and cannot block;
//   2. fstat that fd: anything but a regular file is reported (fd -1 and its mode), never opened;
//   3. reopen that very inode for reading from a file handle of the O_PATH fd where the
//      process may (open_by_handle_at: CAP_DAC_READ_SEARCH, a filesystem with handles), as
//      the packer does; otherwise the name again (O_NONBLOCK|O_NOCTTY, same resolution),
//      then fstat: anything but the inode checked in 2 is closed unread (`changed`).
//      Nothing goes through /proc/self/fd.
// Kernels before 5.6 (no openat2) get a per-component O_NOFOLLOW walk instead; there the
// in-root mode degrades to strict (symlinks refused).
#include "common.h"
#include "openfile.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <cerrno>
#include <cstdio>

namespace cairn {

namespace {

constexpr int kInRoot = 1;     // BENEATH_IN_ROOT in src/openfile.ts
constexpr int kNoHandles = 2;  // BENEATH_NO_HANDLES: tests only, reopen by name as without CAP_DAC_READ_SEARCH

// Per-component walk for kernels without openat2: every component opened O_PATH|O_NOFOLLOW
// from the previous one, '..' and absolute names refused (EXDEV, as RESOLVE_BENEATH does).
int WalkNoFollow(int root, const std::string& rel) {
  if (!rel.empty() && rel[0] == '/') {
    errno = EXDEV;
    return -1;
  }
  int cur = fcntl(root, F_DUPFD_CLOEXEC, 0);
  if (cur < 0) return -1;
  size_t start = 0;
  while (start < rel.size()) {
    size_t slash = rel.find('/', start);
    size_t end = slash == std::string::npos ? rel.size() : slash;
    std::string part = rel.substr(start, end - start);
    start = end + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      close(cur);
      errno = EXDEV;
      return -1;
    }
    int next = openat(cur, part.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    int saved = errno;
    close(cur);
    if (next < 0) {
      errno = saved;
      return -1;
    }
    // A symlink opened O_PATH|O_NOFOLLOW is the link itself: refuse it as openat2 would.
    struct stat st;
    if (fstat(next, &st) != 0 || S_ISLNK(st.st_mode)) {
      close(next);
      errno = ELOOP;
      return -1;
    }
    cur = next;
  }
  return cur;
}

int OpenPath(int root, const std::string& rel, int flags) {
  static bool noOpenat2 = false;
  if (!noOpenat2) {
    open_how how{};
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_NO_MAGICLINKS |
                  ((flags & kInRoot) ? RESOLVE_IN_ROOT : (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS));
    int fd;
    do {
      fd = static_cast<int>(syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how));
    } while (fd < 0 && (errno == EINTR || errno == EAGAIN));
    if (fd >= 0 || errno != ENOSYS) return fd;
    noOpenat2 = true;
  }
  return WalkNoFollow(root, rel);
}

// The inode behind the O_PATH fd `pathFd`, opened for reading from its file handle; -1
// when handles cannot be used here (not permitted, not supported by the filesystem).
int ReopenByHandle(int pathFd, int root) {
  static bool noHandles = false;
  if (noHandles) return -1;
  struct {
    file_handle h;
    unsigned char bytes[MAX_HANDLE_SZ];
  } fh;
  fh.h.handle_bytes = MAX_HANDLE_SZ;
  int mount;
  if (name_to_handle_at(pathFd, "", &fh.h, &mount, AT_EMPTY_PATH) != 0) return -1;
  int fd = open_by_handle_at(root, &fh.h, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  // Not permitted (no CAP_DAC_READ_SEARCH) or no such call: true for the whole process. A
  // filesystem without handles (EOPNOTSUPP) says so per call, cheaply.
  if (fd < 0 && (errno == EPERM || errno == ENOSYS)) noHandles = true;
  return fd;
}

// The name again, for reading, resolved as in OpenPath (O_NONBLOCK: a fifo swapped in
// cannot block); the caller checks that it is the inode it checked before.
int ReopenByName(int root, const std::string& rel, int flags) {
  open_how how{};
  how.flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | O_NOFOLLOW;
  how.resolve = RESOLVE_NO_MAGICLINKS | ((flags & kInRoot) ? RESOLVE_IN_ROOT : (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS));
  if (flags & kInRoot) how.flags &= ~O_NOFOLLOW;  // the last component may be a link kept inside the root
  int fd;
  do {
    fd = static_cast<int>(syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how));
  } while (fd < 0 && (errno == EINTR || errno == EAGAIN));
  if (fd < 0 && errno == ENOSYS) {
    // No openat2: the parent by an O_NOFOLLOW walk, the file by its name, not followed.
    size_t slash = rel.rfind('/');
    int dir = slash == std::string::npos ? fcntl(root, F_DUPFD_CLOEXEC, 0) : WalkNoFollow(root, rel.substr(0, slash));
    if (dir < 0) return -1;
    std::string base = slash == std::string::npos ? rel : rel.substr(slash + 1);
    fd = openat(dir, base.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | O_NOFOLLOW);
    int saved = errno;
    close(dir);
    errno = saved;
  }
  return fd;
}

Napi::Object StatObject(Napi::Env env, int fd, const struct stat& st) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("fd", Napi::Number::New(env, fd));
  o.Set("mode", Napi::Number::New(env, st.st_mode));
  o.Set("size", Napi::Number::New(env, static_cast<double>(st.st_size)));
  o.Set("dev", Napi::BigInt::New(env, static_cast<uint64_t>(st.st_dev)));
  o.Set("ino", Napi::BigInt::New(env, static_cast<uint64_t>(st.st_ino)));
  o.Set("nlink", Napi::Number::New(env, static_cast<double>(st.st_nlink)));
  o.Set("changed", Napi::Boolean::New(env, false));
  return o;
}

// openBeneathSync(root: number | string, rel: string, flags: number)
//   → { fd, mode, size, dev, ino, nlink, changed }, fd -1 when the name is not a regular file
//   (changed: it was one when checked, and was replaced before it could be reopened).
Napi::Value OpenBeneathSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string rel = ArgString(info, 1, "rel");
  int flags = static_cast<int>(ArgOptInt(info, 2, "flags", 0));
  SysError e;
  int root;
  std::string rootName;
  int ownedRoot = -1;
  if (info[0].IsString()) {
    rootName = ArgString(info, 0, "root");
    // The root itself is the caller's (trusted) path: followed as given.
    // O_RDONLY, not O_PATH: open_by_handle_at needs a real fd of the mount.
    ownedRoot = open(rootName.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ownedRoot < 0) {
      PathError(e, errno, "open", rootName);
      ThrowSysError(env, e);
    }
    root = ownedRoot;
  } else {
    root = static_cast<int>(ArgInt(info, 0, "root"));
    rootName = "<fd " + std::to_string(root) + ">";
  }
  Fd rootGuard(ownedRoot);
  BeneathOpen f = OpenRegularBeneath(root, rel, flags);
  if (f.err != 0) {
    PathError(e, f.err, f.syscall, rel);
    ThrowSysError(env, e);
  }
  Napi::Object o = StatObject(env, f.fd, f.st);
  if (f.changed) o.Set("changed", Napi::Boolean::New(env, true));
  return o;
}

}  // namespace

BeneathOpen OpenRegularBeneath(int root, const std::string& rel, int flags) {
  BeneathOpen r;
  auto fail = [&](const char* syscall) {
    r.err = errno;
    r.syscall = syscall;
    return r;
  };
  Fd pathFd(OpenPath(root, rel, flags));
  if (!pathFd.ok()) return fail("openat2");
  if (fstat(pathFd.get(), &r.st) != 0) return fail("fstat");
  if (!S_ISREG(r.st.st_mode)) return r;
  r.fd = (flags & kNoHandles) ? -1 : ReopenByHandle(pathFd.get(), root);
  if (r.fd >= 0) return r;  // the very inode checked above
  int fd = ReopenByName(root, rel, flags);
  if (fd < 0) {
    if (errno == ENOENT || errno == ELOOP || errno == ENOTDIR) {
      r.changed = true;  // the name changed since it was checked
      return r;
    }
    return fail("open");
  }
  struct stat st2;
  if (fstat(fd, &st2) != 0) {
    int err = errno;
    close(fd);
    errno = err;
    return fail("fstat");
  }
  if (st2.st_dev != r.st.st_dev || st2.st_ino != r.st.st_ino || !S_ISREG(st2.st_mode)) {
    // Something else stands there now (a device swapped in had its open called, is never read).
    close(fd);
    r.st = st2;
    r.changed = true;
    return r;
  }
  r.fd = fd;
  r.st = st2;
  return r;
}

void InitOpenFile(Napi::Env env, Napi::Object exports) {
  exports.Set("openBeneathSync", Napi::Function::New(env, OpenBeneathSync, "openBeneathSync"));
}

}  // namespace cairn
