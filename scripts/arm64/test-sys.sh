#!/usr/bin/env bash
# Runs @cairnfs/sys's tests on an arm64 Node under qemu-user against the prebuilt arm64
# binary (packages/sys/prebuilds/linux-arm64), the way an arm64 host loads it.
#
# Needs qemu-user and the arm64 glibc/libstdc++ of Debian's cross toolchain in
# /usr/aarch64-linux-gnu (scripts/install-deps.sh installs both). The arm64 Node comes from
# the npm registry (scripts/node-bin.sh). jest is too heavy to start under emulation, so each
# test file runs on Node's own test runner with jest's names (jest-globals.mjs), one process
# per file as jest isolates them.
#
#   scripts/arm64/test-sys.sh [NODE_MAJOR]     (default 22; 22.18 or later strips types)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
major="${1:-22}"

command -v qemu-aarch64 >/dev/null || { echo "test-sys: qemu-aarch64 not found (Debian: apt-get install qemu-user)" >&2; exit 1; }
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || { echo "test-sys: no arm64 glibc in /usr/aarch64-linux-gnu (Debian: apt-get install g++-aarch64-linux-gnu)" >&2; exit 1; }

node="$(bash scripts/node-bin.sh "$major" arm64)"
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
# node-gyp-build prefers a local build/Release (an x64 one here) over the prebuilt binaries.
export PREBUILDS_ONLY=1
log="$(mktemp -d)"
trap 'rm -rf "$log"' EXIT
echo "test-sys: $(qemu-aarch64 "$node" -p '`Node ${process.version} ${process.arch}`') under qemu-user, $(sha256sum packages/sys/prebuilds/linux-arm64/*.node | cut -c1-16)"
# What qemu-user (Debian's 7.2) cannot show, each with why; these run natively (x64) in the
# full suite. The new mount API and fchmodat2 are ENOSYS there whatever the kernel has, and
# emulation is 10-50x slower than the time bounds some tests hold the code to.
unemulated='fsopen/fsconfig/fsmount/move_mount are ENOSYS under qemu-user'
skip_files=(packages/sys/test/fsmount.test.ts packages/sys/test/userns.test.ts)
skips=(
  "each awaited mount and umount yields to the event loop|$unemulated"
  "legacy fallback: a device whose setuid bit a chown would clear|fchmodat2 (Linux 6.6) is ENOSYS under qemu-user, so the modern path refuses too"
  "are refused, in well under a second|a time bound, and emulation is much slower"
  "is read in linear time|a time bound, and emulation is much slower"
  "in-root mode|qemu-user resolves symlinks of openat2 paths itself: RESOLVE_IN_ROOT is not what the kernel gets"
  "openDirBeneathSync opens a real directory and refuses a symlink|qemu-user resolves symlinks of openat2 paths itself: RESOLVE_NO_SYMLINKS is not what the kernel gets"
  "a recorded file whose directory is now a symlink to a host directory|qemu-user resolves symlinks of openat2 paths itself: RESOLVE_NO_SYMLINKS is not what the kernel gets"
  "replaying while the directory d is swapped with a symlink to a host directory|qemu-user resolves symlinks of openat2 paths itself: RESOLVE_NO_SYMLINKS is not what the kernel gets"
  "a populated 64 MiB buffer is resident at once|qemu-user does not pass madvise(MADV_POPULATE_WRITE) to the kernel"
  "allocPopulated hands out a populated buffer|qemu-user does not pass madvise(MADV_POPULATE_WRITE) to the kernel"
  "CAIRN_SHA256_PORTABLE=1 makes the applier use its own implementation|it starts a child node, which this host runs only through qemu-aarch64 by name (no binfmt_misc); the portable SHA-256 itself runs in-process above"
)
skip_args=()
for s in "${skips[@]}"; do skip_args+=(--test-skip-pattern="${s%%|*}"); done
pass=0 fail=0 skip=0 status=0
for file in packages/sys/test/*.test.ts; do
  if [[ " ${skip_files[*]} " == *" $file "* ]]; then
    case "$file" in
      *userns*) echo "test-sys: skip $file (clone(CLONE_NEWUSER) is EINVAL under qemu-user)" ;;
      *) echo "test-sys: skip $file ($unemulated)" ;;
    esac
    continue
  fi
  out="$log/$(basename "$file").tap"
  rc=0
  # --test-force-exit: a failed test can leave a timer running, which jest would cut short.
  qemu-aarch64 "$node" --experimental-transform-types --no-warnings --test-reporter=tap --test-force-exit \
    "${skip_args[@]}" --import ./scripts/arm64/jest-globals.mjs "$file" >"$out" 2>&1 || rc=$?
  p=$(sed -n 's/^# pass //p' "$out"); f=$(sed -n 's/^# fail //p' "$out"); s=$(sed -n 's/^# skipped //p' "$out")
  pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0})); skip=$((skip + ${s:-0}))
  if [ "$rc" -ne 0 ] || [ -z "$p" ]; then
    status=1
    echo "test-sys: FAIL $file (exit $rc)"
    grep -E '^not ok|^\s+(error|stack|expected|actual|message):|Error' "$out" | head -40 || tail -40 "$out"
  else
    echo "test-sys: ok   $file ($p passed${s:+, $s skipped})"
  fi
done
for s in "${skips[@]}"; do echo "test-sys: skip '${s%%|*}' (${s#*|})"; done
echo "arm64: $pass passed, $fail failed, $skip skipped"
exit "$status"
