#include "nodevview.h"
#include "mountapi.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace cairn {

using namespace mountapi;

int NodevView(int dirfd) {
  int tree = static_cast<int>(syscall(__NR_open_tree, dirfd, "", kOpenTreeClone | O_CLOEXEC | AT_EMPTY_PATH));
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
