#!/usr/bin/env bash
# Runs one command inside a throwaway Linux VM that has device-mapper (Debian's 6.1 kernel
# under qemu, software emulation), and returns the command's exit status and output.
#
#   scripts/run-in-vm.sh [--timeout SECONDS] CMD [ARG...]
#
# The guest sees the host's / read-only (writes land on guest tmpfs and vanish), the project
# directory read-write at the same path, and starts CMD in the caller's working directory
# with the caller's environment (plus DM_DISABLE_UDEV=1: there is no udev in the guest).
# One boot per call, so run a whole test suite per call, not one test.
#
# Exit status: CMD's; 124 when the host-side timeout killed the VM; 125 when the VM could
# not be started or did not run CMD (the tail of the guest console is printed).
#
#   CAIRN_VM_CACHE    cache made by scripts/vm/prepare.sh (default /var/cache/cairn-vm)
#   CAIRN_VM_TIMEOUT  seconds before the VM is killed (default 900)
#   CAIRN_VM_MEM      guest memory in MiB (default 2048)
#   CAIRN_VM_SHARE    read-write directory shared at its own path (default: the project)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${CAIRN_VM_CACHE:-/var/cache/cairn-vm}
timeout_s=${CAIRN_VM_TIMEOUT:-900}
mem=${CAIRN_VM_MEM:-2048}
share=$(cd "${CAIRN_VM_SHARE:-$here/..}" && pwd -P)

if [ "${1:-}" = --timeout ]; then timeout_s=$2; shift 2; fi
if [ $# -eq 0 ]; then
  echo "usage: $0 [--timeout SECONDS] CMD [ARG...]" >&2
  exit 125
fi
if [ ! -f "$cache/ready" ] || [ ! -f "$cache/vmlinux" ] || [ ! -f "$cache/initramfs.cpio.gz" ]; then
  echo "run-in-vm: no VM cache at $cache; run scripts/vm/prepare.sh as root first" >&2
  exit 125
fi
qemu=$(command -v qemu-system-x86_64 || true)
if [ -z "$qemu" ]; then
  echo "run-in-vm: qemu-system-x86_64 is missing; run scripts/vm/prepare.sh as root first" >&2
  exit 125
fi
read -r _ kver < "$cache/ready"

run=$(mktemp -d "${TMPDIR:-/tmp}/cairn-vm.XXXXXX")
qpid=
tails=()
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill -9 "$qpid" 2>/dev/null || true; fi
  for t in "${tails[@]}"; do kill "$t" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$here/vm/guest-init.sh" "$run/stage2.sh"
{
  printf 'PROJECT=%q\n' "$share"
  printf 'CACHE=%q\n' "$cache"
  printf 'KVER=%q\n' "$kver"
} > "$run/vm.conf"

# The command script runs under the host's bash inside the guest: the caller's environment
# (minus what describes this shell or this terminal), its directory, then CMD.
{
  echo '# written by run-in-vm.sh'
  for name in $(compgen -e); do
    case "$name" in
      PWD|OLDPWD|SHLVL|_|TERM|TERMCAP|COLUMNS|LINES|SSH_*|DISPLAY|XDG_*|TMPDIR) continue ;;
    esac
    printf 'export %s=%q\n' "$name" "${!name}"
  done
  echo 'export DM_DISABLE_UDEV=1 CAIRN_IN_VM=1'
  printf 'cd %q || exit 125\n' "$PWD"
  printf 'exec'; printf ' %q' "$@"; printf '\n'
} > "$run/cmd.sh"
: > "$run/stdout"; : > "$run/stderr"

start=$(date +%s.%N)
# 1 vCPU is faster than 2 under TCG; tb-size=256 keeps qemu's RSS near 830 MB.
timeout -k 5 "$timeout_s" "$qemu" \
  -machine q35 -accel tcg,tb-size=256 -cpu "${CAIRN_VM_CPU:-max}" -smp 1 -m "$mem" \
  -nodefaults -no-user-config -display none -no-reboot \
  -serial "file:$run/console.log" \
  -kernel "$cache/vmlinux" -initrd "$cache/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init" \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap" \
  -virtfs "local,path=$share,mount_tag=project,security_model=passthrough,multidevs=remap" \
  -virtfs "local,path=$run,mount_tag=cairnrun,security_model=passthrough" \
  < /dev/null > "$run/qemu.log" 2>&1 &
qpid=$!
tail -q -n +1 -f --pid="$qpid" "$run/stdout" &
tails+=($!)
tail -q -n +1 -f --pid="$qpid" "$run/stderr" >&2 &
tails+=($!)

set +e
wait "$qpid"
qrc=$?
set -e
qpid=
wait "${tails[@]}" 2>/dev/null || true
tails=()
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')

if [ -f "$run/rc" ]; then
  rc=$(cat "$run/rc")
  [ -n "${CAIRN_VM_QUIET:-}" ] || echo "run-in-vm: exit $rc after ${elapsed}s" >&2
  if [ "$rc" = 125 ] && grep -q '^stage2:' "$run/console.log" 2>/dev/null; then
    grep '^stage2:' "$run/console.log" >&2
  fi
  exit "$rc"
fi
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
  echo "run-in-vm: timed out after ${timeout_s}s; guest console tail:" >&2
  tail -n 30 "$run/console.log" >&2 || true
  exit 124
fi
echo "run-in-vm: the VM stopped (qemu exit $qrc) without running the command; qemu said:" >&2
tail -n 10 "$run/qemu.log" >&2 || true
echo "guest console tail:" >&2
tail -n 30 "$run/console.log" >&2 || true
exit 125
