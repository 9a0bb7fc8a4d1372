#include "nodevview.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#ifndef __NR_open_tree
#define __NR_open_tree 428
#endif
#ifndef __NR_mount_setattr
#define __NR_mount_setattr 442
#endif

namespace cairn {

namespace {
// From <linux/mount.h> (spelled out: glibc's <sys/mount.h> and <linux/mount.h> clash).
constexpr unsigned kOpenTreeClone = 1;
constexpr unsigned kOpenTreeCloexec = O_CLOEXEC;
constexpr uint64_t kMountAttrNodev = 0x4;
struct MountAttr {  // MOUNT_ATTR_SIZE_VER0
  uint64_t attr_set, attr_clr, propagation, userns_fd;
};
}  // namespace

int NodevView(int dirfd) {
  int tree = static_cast<int>(syscall(__NR_open_tree, dirfd, "", kOpenTreeClone | kOpenTreeCloexec | AT_EMPTY_PATH));
  if (tree < 0) return -1;
  MountAttr attr{kMountAttrNodev, 0, 0, 0};
  int dir = -1;
  if (syscall(__NR_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) == 0)
    dir = openat(tree, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  // The open_tree fd is an O_PATH fd (no readdir); `dir` keeps the clone alive without it.
  int err = errno;
  close(tree);
  errno = err;
  return dir;
}

}  // namespace cairn
