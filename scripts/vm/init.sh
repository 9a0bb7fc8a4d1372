#!/bin/sh
# Stage 1 of the cairn test VM, baked into the initramfs by prepare.sh: load the modules
# that reach the 9p shares, mount the per-run share and hand over to its stage2.sh. Kept
# tiny on purpose so that changing the guest set-up (scripts/vm/guest-init.sh) never needs
# a new initramfs.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r m; do
  insmod "/modules/$m" 2>/dev/null || echo "init: insmod $m failed"
done < /modules/order
mkdir -p /run-share
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 cairnrun /run-share; then
  echo "init: cannot mount the run share (tag cairnrun)"
  poweroff -f
fi
exec /bin/sh /run-share/stage2.sh
