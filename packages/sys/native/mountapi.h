// The new mount API's syscall numbers and <linux/mount.h> values (Linux 5.2; mount_setattr
// 5.12), spelled out: glibc < 2.36 lacks them and glibc 2.36's <sys/mount.h> clashes with
// <linux/mount.h>. The numbers are the same on every architecture (the unified table).
#pragma once

#include <cstdint>

#ifndef __NR_open_tree
#define __NR_open_tree 428
#endif
#ifndef __NR_move_mount
#define __NR_move_mount 429
#endif
#ifndef __NR_fsopen
#define __NR_fsopen 430
#endif
#ifndef __NR_fsconfig
#define __NR_fsconfig 431
#endif
#ifndef __NR_fsmount
#define __NR_fsmount 432
#endif
#ifndef __NR_mount_setattr
#define __NR_mount_setattr 442
#endif

namespace cairn::mountapi {

constexpr unsigned kOpenTreeClone = 1;
constexpr unsigned kAtRecursive = 0x8000;
constexpr unsigned kFsopenCloexec = 0x1;
constexpr unsigned kFsconfigSetFlag = 0;
constexpr unsigned kFsconfigSetString = 1;
constexpr unsigned kFsconfigCmdCreate = 6;
constexpr unsigned kFsmountCloexec = 0x1;
constexpr unsigned kMoveMountFEmptyPath = 0x4;
constexpr uint64_t kMountAttrRdonly = 0x1;
constexpr uint64_t kMountAttrNodev = 0x4;
constexpr uint64_t kMountAttrIdmap = 0x00100000;

struct MountAttr {  // struct mount_attr, MOUNT_ATTR_SIZE_VER0
  uint64_t attr_set;
  uint64_t attr_clr;
  uint64_t propagation;
  uint64_t userns_fd;
};

}  // namespace cairn::mountapi
