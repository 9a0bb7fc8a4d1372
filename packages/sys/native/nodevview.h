// A private view of a directory in which no device node can be opened.
#pragma once

namespace cairn {

// A directory fd for `dirfd`'s directory in a detached, non-recursive clone of its mount
// with MOUNT_ATTR_NODEV, or -1 (errno set) where the caller may not clone mounts (EPERM
// without CAP_SYS_ADMIN over the mount namespace, ENOSYS before Linux 5.12). Opening a
// device node through it fails with EACCES before the device's open runs, so a reader may
// open names it expects to be regular files directly (O_NOFOLLOW|O_NONBLOCK, then fstat)
// even while someone swaps devices in. The clone is attached nowhere and goes away with
// the returned fd; mounts below the directory are not in it.
int NodevView(int dirfd);

}  // namespace cairn
