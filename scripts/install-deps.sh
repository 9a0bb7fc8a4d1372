#!/usr/bin/env bash
# Installs the Debian packages cairn's full test suite needs, and nothing else.
# Idempotent: apt is only touched when something is missing. Run as root.
#
#   btrfs-progs   mkfs.btrfs for the loopback btrfs tests (btrfs driver, registry, vfs reflinks)
#   xfsprogs      mkfs.xfs for loopback xfs (d_type probe, project quota)
#   e2fsprogs     mkfs.ext4 for loopback ext4
#   util-linux    losetup, mount, unshare
#   attr          getfattr/setfattr, used by tests to cross-check xattrs with an independent tool
#   tar           GNU tar: reference archives and the benchmark baseline
#   zfs-fuse      the only ZFS on a kernel without the zfs module: daemon + zfs/zpool for the zfs driver tests
#   docker-registry  the CNCF distribution registry (2.8) the pull/push tests start on 127.0.0.1
#   skopeo        seeds those registries and cross-checks what cairn pushed
#   apache2-utils htpasswd -B (bcrypt entries: the only kind distribution's htpasswd auth reads)
#   openssl       the test CA and certificates for the TLS registry
#   gcc           the race tests' racer (C, built by the tests: one RENAME_EXCHANGE per loop)
#   uidmap        newuidmap/newgidmap (setuid): rootless tests run `cairn unshare` as an unprivileged user
#   fuse-overlayfs  overlay2.mount_program for rootless overlay2 where the kernel cannot mount overlay in a user namespace
#   podman        the bench's comparison for id-mapped containers: rootless `podman create --uidmap` + `podman mount` (issue 18)
set -euo pipefail

packages=(btrfs-progs xfsprogs e2fsprogs util-linux attr tar zfs-fuse)
# devicemapper: the test VM (qemu, busybox initramfs, kmod) and the dm/lvm tools run in it;
# the kernel cache itself is built by scripts/vm/prepare.sh
packages+=(qemu-system-x86 busybox-static kmod lvm2 thin-provisioning-tools xz-utils)
# overlay2 Docker compatibility: a private Debian dockerd 20.10 (with containerd, runc) builds a
# reference image; busybox-static is its offline base image
packages+=(docker.io busybox-static)
# addon hardening: clang and its runtimes (libFuzzer, ASan, UBSan) for scripts/fuzz.sh;
# scripts/sanitize.sh uses g++'s libasan/libubsan (gcc)
packages+=(clang libclang-rt-14-dev)
# power-loss ordering test: traces the syscalls of a child (fsync before rename)
packages+=(strace)
# image: zstd-compressed test layers and the zstd decompression-bomb test
packages+=(zstd)
# archive tests: bsdtar (libarchive) as a second producer of layer tars besides GNU tar
packages+=(libarchive-tools)
# image registries (pull/push): a real registry, skopeo, bcrypt htpasswd, a test CA
packages+=(docker-registry skopeo apache2-utils openssl)
# race tests: the racer that swaps names inside a layer while apply/export run
packages+=(gcc libc6-dev)
# rootless: newuidmap/newgidmap for `cairn unshare`, fuse-overlayfs as overlay2.mount_program
packages+=(uidmap fuse-overlayfs)
# bench (idmap): podman's way to an id-mapped container, rootless, on a throw-away storage;
# it brings buildah, conmon and slirp4netns (its systemd units are not started: no systemd here)
packages+=(podman)

# @cairnfs/sys prebuilt binaries: scripts/prebuild.sh compiles linux-x64 and linux-arm64 (g++ and
# Debian's cross g++, which brings the arm64 glibc/libstdc++ too); scripts/arm64/test-sys.sh runs
# the arm64 one under qemu-user
packages+=(g++ g++-aarch64-linux-gnu qemu-user)

# cairn completion: the generated zsh and fish scripts are run by their shells in the CLI tests
packages+=(zsh fish)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present (${packages[*]})"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${missing[*]}; run this script as root" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# docker-registry's postinst would start a registry on :5000 on every interface. Tests run
# their own instances on 127.0.0.1, so no service may start: a policy-rc.d that exits 101
# ("action forbidden") for the install, unless the host already has one (containers do).
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# temporary, from cairn scripts/install-deps.sh: start no service during install\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
fi
trap '[ "$own_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Belt and braces: if the service started anyway (no policy-rc.d honoured), stop and disable it.
if dpkg-query -W -f='${Status}' docker-registry 2>/dev/null | grep -q 'install ok installed'; then
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/docker-registry ]; then
    /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
    update-rc.d docker-registry disable >/dev/null 2>&1 || true
  fi
fi
