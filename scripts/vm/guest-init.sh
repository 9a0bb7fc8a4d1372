#!/bin/sh
# Stage 2 of the cairn test VM (runs as PID 1 under busybox, copied into each run's share
# by scripts/run-in-vm.sh). Builds the guest root: the host's / over 9p, read-only, as the
# lower of an overlay on guest tmpfs (so the host's node, dmsetup, lvm and mkfs run here
# unchanged and writes stay in the guest), the project directory read-write at its own
# path, and /lib/modules from the unpacked Debian kernel. Then runs the command, records
# its exit status on the run share and powers off: the guest never outlives the command.
. /run-share/vm.conf

fail() { echo "stage2: $*"; echo 125 > /run-share/rc; sync; poweroff -f; }

mkdir -p /host /rw /newroot
# cache=loose: the lower never changes while the guest runs, and uncached 9p lookups make
# every process start several times slower. multidevs=remap: the host's / spans several
# filesystems whose inode numbers would otherwise collide.
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostroot /host \
  || fail "cannot mount the host root (tag hostroot)"
mount -t tmpfs -o mode=0755 rw /rw || fail "cannot mount tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work root /newroot \
  || fail "cannot mount the overlay root"
# The guest's own /tmp and /run come before the project share: a project that lives under
# /tmp (a CI checkout, say) would otherwise be hidden by the tmpfs mounted over it.
mount -t tmpfs -o mode=1777 tmp /newroot/tmp
mount -t tmpfs -o mode=0755 run /newroot/run
mkdir -p "/newroot$PROJECT" /newroot/lib/modules /newroot/cairn-run
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 project "/newroot$PROJECT" \
  || fail "cannot mount the project share at $PROJECT"
mount --bind "/newroot$CACHE/kernel/lib/modules" /newroot/lib/modules \
  || fail "cannot bind the kernel modules from $CACHE/kernel"
mount --bind /run-share /newroot/cairn-run
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs shm /newroot/dev/shm

# device-mapper thin pools, loop devices and the filesystems the driver formats.
chroot /newroot /sbin/modprobe -a dm_thin_pool loop ext4 xfs 2>/dev/null \
  || chroot /newroot modprobe -a dm_thin_pool loop ext4 xfs \
  || echo "stage2: modprobe failed"

chroot /newroot /bin/bash /cairn-run/cmd.sh > /run-share/stdout 2> /run-share/stderr
echo $? > /run-share/rc.tmp
mv /run-share/rc.tmp /run-share/rc
sync
poweroff -f
