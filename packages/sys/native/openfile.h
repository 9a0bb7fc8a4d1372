// Opening a file beneath a root for reading, as every host-side read of untrusted content
// must (openfile.cc has the steps): for openBeneathSync and for native readers of layers.
#pragma once

#include <sys/stat.h>

#include <string>

namespace cairn {

struct BeneathOpen {
  // An fd open for reading (O_RDONLY|O_NONBLOCK|O_CLOEXEC) of the regular file checked in
  // `st`; -1 when the name is not a regular file (st says what it is) or, with `changed`,
  // when it was one and was replaced before it could be reopened.
  int fd = -1;
  struct stat st {};
  bool changed = false;
  // Nonzero when the open failed: the errno, and the call that failed.
  int err = 0;
  const char* syscall = nullptr;
};

// flags: 1 = resolve symlinks inside the root (BENEATH_IN_ROOT), 2 = tests only, no file handles.
BeneathOpen OpenRegularBeneath(int root, const std::string& rel, int flags);

}  // namespace cairn
