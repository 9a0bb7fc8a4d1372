// Calls that never follow a symlink, and their fallbacks on older kernels (see nofollow.h).
#include "nofollow.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

namespace cairn {
namespace nofollow {

namespace {

// The same numbers on every architecture (the unified syscall table); the installed
// headers may predate them.
constexpr long kSysFchmodat2 = 452;
constexpr long kSysSetxattrat = 463;
constexpr long kSysGetxattrat = 464;
constexpr long kSysListxattrat = 465;

struct XattrArgs {  // struct xattr_args of <linux/xattr.h>, Linux 6.13
  uint64_t value;
  uint32_t size;
  uint32_t flags;
};

// -1 unknown, 0 missing, 1 present; set once by the first call that learns it.
std::atomic<int> have_fchmodat2{-1};
std::atomic<int> have_xattrat{-1};

// Runs `f` (returning 0 or an errno) on a new thread whose working directory alone is
// `dirfd`: unshare(CLONE_FS) gives that thread its own cwd and umask, so the process's
// (and every pool thread's) stay as they are. A libuv pool thread is never unshared
// itself: it would keep the private cwd for every later relative call it serves.
template <typename F>
int InDir(int dirfd, F&& f, mode_t umaskValue = static_cast<mode_t>(-1)) {
  int rc = 0;
  std::thread t([&] {
    if (unshare(CLONE_FS) != 0 || fchdir(dirfd) != 0) {
      rc = errno;
      return;
    }
    if (umaskValue != static_cast<mode_t>(-1)) umask(umaskValue);
    rc = f();
  });
  t.join();
  return rc;
}

}  // namespace

bool HaveChmodFd(bool legacy) {
  if (legacy) return false;
  if (have_fchmodat2.load() < 0) {
    // An fd of -1 is EBADF where the call exists (ENOSYS where not, EINVAL where it
    // predates AT_EMPTY_PATH).
    long rc = syscall(kSysFchmodat2, -1, "", 0, AT_EMPTY_PATH);
    have_fchmodat2.store(rc < 0 && (errno == ENOSYS || errno == EINVAL) ? 0 : 1);
  }
  return have_fchmodat2.load() == 1;
}

int ChmodFd(int fd, mode_t mode, bool legacy) {
  if (!HaveChmodFd(legacy)) {
    errno = ENOSYS;
    return -1;
  }
  return static_cast<int>(syscall(kSysFchmodat2, fd, "", mode, AT_EMPTY_PATH));
}

int MknodExact(int dirfd, const std::string& name, mode_t mode, dev_t dev) {
  return InDir(dirfd, [&] { return mknodat(dirfd, name.c_str(), mode, dev) == 0 ? 0 : errno; }, 0);
}

int SetXattrAt(int dirfd, const std::string& name, const std::string& key, const std::string& value, bool legacy) {
  if (!legacy && have_xattrat.load() != 0) {
    XattrArgs args{reinterpret_cast<uint64_t>(value.data()), static_cast<uint32_t>(value.size()), 0};
    long rc = syscall(kSysSetxattrat, dirfd, name.c_str(), AT_SYMLINK_NOFOLLOW, key.c_str(), &args, sizeof args);
    if (rc == 0) {
      have_xattrat.store(1);
      return 0;
    }
    if (errno != ENOSYS) return errno;
    have_xattrat.store(0);
  }
  return InDir(dirfd, [&] { return lsetxattr(name.c_str(), key.c_str(), value.data(), value.size(), 0) == 0 ? 0 : errno; });
}

namespace {

// The list-then-get loop over two calls that behave like llistxattr/lgetxattr.
template <typename List, typename Get>
int ReadAll(List list, Get get, std::vector<XattrKV>& out, const char** failed) {
  std::vector<char> names;
  for (int attempt = 0;; attempt++) {
    ssize_t size = list(nullptr, 0);
    if (size < 0) {
      if (errno == ENOTSUP || errno == ENOENT) return 0;
      *failed = "llistxattr";
      return errno;
    }
    if (size == 0) return 0;
    names.resize(static_cast<size_t>(size));
    ssize_t n = list(names.data(), names.size());
    if (n >= 0) {
      names.resize(static_cast<size_t>(n));
      break;
    }
    if (errno != ERANGE || attempt >= 8) {
      *failed = "llistxattr";
      return errno;
    }
  }
  for (size_t pos = 0; pos < names.size();) {
    const char* name = names.data() + pos;
    size_t len = strnlen(name, names.size() - pos);
    pos += len + 1;
    if (len == 0) continue;
    XattrKV x{std::string(name, len), {}};
    bool got = false;
    for (int attempt = 0; attempt < 8; attempt++) {
      ssize_t size = get(x.name.c_str(), nullptr, 0);
      if (size < 0) break;
      x.value.resize(static_cast<size_t>(size));
      ssize_t n = size == 0 ? 0 : get(x.name.c_str(), &x.value[0], x.value.size());
      if (n >= 0) {
        x.value.resize(static_cast<size_t>(n));
        got = true;
        break;
      }
      if (errno != ERANGE) break;
    }
    if (!got) {
      if (errno == ENODATA) continue;  // removed meanwhile
      *failed = "lgetxattr";
      return errno;
    }
    out.push_back(std::move(x));
  }
  return 0;
}

}  // namespace

int ReadXattrs(int fd, const char* name, std::vector<XattrKV>& out, const char** failed, bool legacy) {
  if (name == nullptr) {
    return ReadAll([fd](char* buf, size_t size) { return flistxattr(fd, buf, size); },
                   [fd](const char* key, void* buf, size_t size) { return fgetxattr(fd, key, buf, size); }, out, failed);
  }
  if (!legacy && have_xattrat.load() != 0) {
    auto list = [fd, name](char* buf, size_t size) {
      return static_cast<ssize_t>(syscall(kSysListxattrat, fd, name, AT_SYMLINK_NOFOLLOW, buf, size));
    };
    auto get = [fd, name](const char* key, void* buf, size_t size) {
      XattrArgs args{reinterpret_cast<uint64_t>(buf), static_cast<uint32_t>(size), 0};
      return static_cast<ssize_t>(syscall(kSysGetxattrat, fd, name, AT_SYMLINK_NOFOLLOW, key, &args, sizeof args));
    };
    size_t before = out.size();
    int rc = ReadAll(list, get, out, failed);
    if (rc != ENOSYS) {
      if (rc == 0) have_xattrat.store(1);
      return rc;
    }
    out.resize(before);
    have_xattrat.store(0);
  }
  return InDir(fd, [&] {
    return ReadAll([name](char* buf, size_t size) { return llistxattr(name, buf, size); },
                   [name](const char* key, void* buf, size_t size) { return lgetxattr(name, key, buf, size); }, out, failed);
  });
}

}  // namespace nofollow
}  // namespace cairn
