// Calls on layer content that never follow a symlink: they act on an fd (an O_PATH fd
// for nodes that must not be opened: devices, fifos, symlinks), or on a name relative to
// a directory fd already resolved beneath the layer root, with the final component not
// followed. This is the one place that knows which kernel has which call:
//   fchmodat2(fd, "", mode, AT_EMPTY_PATH)         Linux 6.6   mode of an O_PATH fd
//   setxattrat/getxattrat/listxattrat(dirfd, name,  Linux 6.13  xattrs of a name that is
//     AT_SYMLINK_NOFOLLOW)                                      not followed
// Older kernels get the same guarantee another way (nothing here goes through
// /proc/self/fd): xattr calls run as l*xattr(name) on a short-lived helper thread whose
// working directory alone is the directory fd (unshare(CLONE_FS) + fchdir), and a mode
// that needs fchmodat2 is instead given at mknod time by a helper thread whose umask
// alone is 0 (MknodExact). `legacy` forces those fallbacks (tests run them on new kernels).
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace cairn {

struct XattrKV {
  std::string name;
  std::string value;
};

namespace nofollow {

// The mode of the node behind `fd` (an O_PATH fd, or any fd). -1 with errno ENOSYS where
// the kernel has no fchmodat2 (or `legacy`): the caller must not fall back to a
// name-based chmod.
int ChmodFd(int fd, mode_t mode, bool legacy);

// Whether ChmodFd works here (probes once).
bool HaveChmodFd(bool legacy);

// mknodat(dirfd, name, mode, dev) with `mode`'s permission bits exactly as given (the
// umask does not apply), for kernels without fchmodat2. 0 or an errno.
int MknodExact(int dirfd, const std::string& name, mode_t mode, dev_t dev);

// setxattr on dirfd/name without following name ("." is the directory itself). 0 or an errno.
int SetXattrAt(int dirfd, const std::string& name, const std::string& key, const std::string& value, bool legacy);

// Every xattr of a node: of `fd` itself when `name` is null (a real fd, not O_PATH), else
// of dirfd/name, not followed. ENOTSUP (no xattrs on this filesystem) reads as none; a
// name removed between list and get is skipped; growth between size query and read is
// retried. 0, or an errno with `*failed` naming the call that failed.
int ReadXattrs(int fd, const char* name, std::vector<XattrKV>& out, const char** failed, bool legacy);

}  // namespace nofollow
}  // namespace cairn
