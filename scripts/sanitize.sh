#!/usr/bin/env bash
# Builds @cairnfs/sys with AddressSanitizer + UndefinedBehaviorSanitizer into
# packages/sys/build-asan (the normal build stays as it is) and runs the addon's own tests
# and the archive engine's native tests against it. Node is not instrumented: libasan is
# preloaded so the addon's allocations and accesses are checked; leak detection is off
# (node's own allocations would drown it). Any sanitizer report aborts the test process.
set -euo pipefail
cd "$(dirname "$0")/.."

out=packages/sys/build-asan
rm -rf "$out"
mkdir -p "$out"
cp packages/sys/binding.gyp "$out/"
cp -r packages/sys/native "$out/native"
# The Node headers npm's own node-gyp uses (no download).
nodedir="$(npm config get nodedir)"
gyp="$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js"
# float-cast-overflow is not in GCC's `undefined` group: a NaN or out-of-range double made
# an integer (a corrupt record's size, say) is undefined behaviour all the same.
san='-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow -fno-omit-frame-pointer -g -O1'
(cd "$out" && CXXFLAGS="$san" CFLAGS="$san" LDFLAGS="-fsanitize=address,undefined,float-cast-overflow" node "$gyp" rebuild --jobs=2 --nodedir="$nodedir" >/dev/null)

asan="$(g++ -print-file-name=libasan.so)"
ubsan="$(g++ -print-file-name=libubsan.so)"
export LD_PRELOAD="$asan:$ubsan"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export CAIRN_SYS_ADDON="$PWD/$out/build/Release/cairn_sys.node"
if [ $# -eq 0 ]; then
  set -- packages/sys/test packages/archive/test/apply packages/archive/test/hostile \
    packages/archive/test/fuzz packages/archive/test/reader
  # limits.test.ts is left out: its time bounds (refused within 1 s) measure the plain
  # build; under ASan the same work is 2-3x slower.
fi
node scripts/test.mjs "$@"
