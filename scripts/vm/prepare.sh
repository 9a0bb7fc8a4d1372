#!/usr/bin/env bash
# Prepares the cache that scripts/run-in-vm.sh boots from: Debian's 6.1 kernel (which has
# device-mapper, unlike the host's), its modules, a tiny busybox initramfs and the ELF
# vmlinux for a PVH boot. The host kernel has no device-mapper and no loadable modules, so
# the devicemapper driver can only be tested inside such a guest.
#
#   CAIRN_VM_CACHE   cache directory (default /var/cache/cairn-vm)
#
# Idempotent: a complete cache (marked by $CACHE/ready) is left alone. Run as root.
set -euo pipefail

CACHE=${CAIRN_VM_CACHE:-/var/cache/cairn-vm}
HERE=$(cd "$(dirname "$0")" && pwd)

# qemu-system-x86  the emulator (no KVM on CI machines: TCG software emulation)
# busybox-static   the initramfs userland (static, so it needs no libraries in the initramfs)
# kmod             depmod/modprobe to resolve the kernel's module dependencies
# lvm2, thin-provisioning-tools  dmsetup/lvm and thin_check, run in the guest from the host's /
# xfsprogs, e2fsprogs            mkfs for the thin devices, also run in the guest
# xz-utils         to unpack the xz-compressed bzImage into the ELF vmlinux
packages=(qemu-system-x86 busybox-static kmod lvm2 thin-provisioning-tools xfsprogs e2fsprogs xz-utils)

if [ -f "$CACHE/ready" ]; then
  echo "vm/prepare: $CACHE is ready ($(cat "$CACHE/ready"))"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "vm/prepare: run as root (installs packages and writes $CACHE)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
  echo "vm/prepare: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$CACHE"
cd "$CACHE"

# The versioned kernel package that Debian's linux-image-amd64 currently points at.
# Downloading and unpacking it directly skips the initramfs-tools run of an apt install
# (≈3.5 min); we build our own, much smaller, initramfs below.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-6\.1\.[0-9-]*-amd64\)$/\1/p' | head -n1)
if [ -z "$kpkg" ]; then
  apt-get update -qq
  kpkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-6\.1\.[0-9-]*-amd64\)$/\1/p' | head -n1)
fi
[ -n "$kpkg" ] || { echo "vm/prepare: cannot find a linux-image-6.1.0-*-amd64 package" >&2; exit 1; }

rm -rf kernel dl && mkdir -p kernel dl
chown _apt dl 2>/dev/null || true  # apt downloads as _apt when it can
(cd dl && apt-get download -qq "$kpkg")
dpkg-deb -x dl/*.deb kernel
rm -rf dl
# bookworm ships modules under lib/ (usrmerge packages may use usr/lib/).
moddir=kernel/lib/modules
[ -d "$moddir" ] || moddir=kernel/usr/lib/modules
ver=$(ls "$moddir" | head -n1)
[ -n "$ver" ] || { echo "vm/prepare: no modules in $kpkg" >&2; exit 1; }
if [ "$moddir" != kernel/lib/modules ]; then mkdir -p kernel/lib && ln -sfn ../usr/lib/modules kernel/lib/modules; fi
depmod -b "$CACHE/kernel" "$ver"

# Debian's bzImage is xz-compressed and the kernel has CONFIG_PVH=y: booting the ELF
# vmlinux directly skips the in-guest decompression (≈4 s under emulation).
bz=kernel/boot/vmlinuz-$ver
off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$bz" | head -n1 | cut -d: -f1)
[ -n "$off" ] || { echo "vm/prepare: no xz payload in $bz" >&2; exit 1; }
tail -c +"$((off + 1))" "$bz" | xz -dc 2>/dev/null > vmlinux.tmp || true
[ "$(head -c 4 vmlinux.tmp | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || { echo "vm/prepare: extracted vmlinux is not an ELF file" >&2; exit 1; }
mv vmlinux.tmp vmlinux

# The initramfs: static busybox, the modules needed to reach the 9p shares and build the
# overlay root (in load order), and our init.
rm -rf initramfs && mkdir -p initramfs/{bin,dev,proc,sys,mnt,modules}
cp /bin/busybox initramfs/bin/busybox
ln -s busybox initramfs/bin/sh
: > initramfs/modules/order
modprobe -d "$CACHE/kernel" -S "$ver" --show-depends -a virtio_pci 9pnet_virtio 9p overlay \
  | awk '$1 == "insmod" { print $2 }' | while read -r ko; do
    name=$(basename "$ko"); name=${name%.xz}; name=${name%.zst}
    grep -qx "$name" initramfs/modules/order && continue
    case "$ko" in
      *.xz) xz -dc "$ko" > "initramfs/modules/$name" ;;
      *.zst) zstd -qdc "$ko" > "initramfs/modules/$name" ;;
      *) cp "$ko" "initramfs/modules/$name" ;;
    esac
    echo "$name" >> initramfs/modules/order
  done
cp "$HERE/init.sh" initramfs/init
chmod 755 initramfs/init
(cd initramfs && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > initramfs.cpio.gz

echo "$kpkg $ver" > ready
echo "vm/prepare: ready: $kpkg ($ver) in $CACHE, modules: $(tr '\n' ' ' < initramfs/modules/order)"
