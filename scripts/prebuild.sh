#!/usr/bin/env bash
# Builds @cairnfs/sys's prebuilt binaries, one per platform the package ships:
#
#   packages/sys/prebuilds/linux-x64/@cairnfs+sys.glibc.node
#   packages/sys/prebuilds/linux-arm64/@cairnfs+sys.glibc.node
#
# (prebuildify's layout, which node-gyp-build reads at load time). The addon uses Node-API
# only, so one binary per platform serves every Node version from 20.19 on: it is compiled
# against the Node-API headers of the node-api-headers package, not a particular Node's.
#
# Each architecture is compiled by Debian's (cross) g++ with the same flags, straight from
# the source list in binding.gyp (so the two cannot drift apart), and the result is
# deterministic: `scripts/prebuild.sh --check` rebuilds into a temporary directory and fails
# if a committed binary differs, which is how CI proves the binaries match the source.
#
# A binary needs glibc >= 2.33 and the libstdc++ of GCC >= 11 (GLIBCXX_3.4.29): Debian 12,
# Ubuntu 22.04, RHEL 9, Fedora 34 and later; libstdc++ is linked dynamically, as Node itself
# links it (linking it statically would pull in newer glibc symbols, up to 2.36). On older
# hosts the prebuilt binary fails to load and node-gyp-build builds from source at install.
#
#   scripts/prebuild.sh [--check] [x64] [arm64]      (default: both)
#
# Needs g++ (x86_64) and g++-aarch64-linux-gnu (scripts/install-deps.sh installs both).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
sys="$repo/packages/sys"

check=0
archs=()
for a in "$@"; do
  case "$a" in
    --check) check=1 ;;
    x64|arm64) archs+=("$a") ;;
    *) echo "prebuild: unknown argument $a (expected --check, x64, arm64)" >&2; exit 2 ;;
  esac
done
[ ${#archs[@]} -gt 0 ] || archs=(x64 arm64)

napi_include="$(cd "$repo" && node -p "require('node-api-headers').include_dir")"
addon_include="$(cd "$sys" && node -p "require('node-addon-api').include_dir")"
# binding.gyp is the one list of sources, defines and warnings; it is plain JSON.
mapfile -t sources < <(node -e "for (const s of JSON.parse(require('fs').readFileSync('$sys/binding.gyp','utf8')).targets[0].sources) console.log(s)")
mapfile -t defines < <(node -e "for (const d of JSON.parse(require('fs').readFileSync('$sys/binding.gyp','utf8')).targets[0].defines) console.log('-D' + d)")

compiler() {
  case "$1" in
    x64) echo x86_64-linux-gnu-g++ ;;
    arm64) echo aarch64-linux-gnu-g++ ;;
  esac
}

# The node-gyp Release flags that matter (-O3, -fPIC, no RTTI), C++ exceptions for
# node-addon-api's NAPI_CPP_EXCEPTIONS, and what makes the output reproducible: no debug
# info, source paths mapped to a fixed prefix, a content-derived build id.
build() {
  local arch="$1" out="$2" cxx objs=() src obj
  cxx="$(compiler "$arch")"
  command -v "$cxx" >/dev/null || { echo "prebuild: $cxx not found (Debian: apt-get install $( [ "$arch" = arm64 ] && echo g++-aarch64-linux-gnu || echo g++ ))" >&2; exit 1; }
  local tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  for src in "${sources[@]}"; do
    obj="$tmp/$(basename "$src" .cc).o"
    # two compilers at a time: the machines this runs on have two cores
    [ "$(jobs -rp | wc -l)" -lt 2 ] || wait -n || true
    (cd "$sys" && "$cxx" -c "$src" -o "$obj" \
      -std=c++17 -O3 -fPIC -pthread -fno-rtti -fexceptions -fvisibility=hidden \
      -Wall -Wextra -Wno-unused-parameter -Werror \
      -ffile-prefix-map="$sys"=. -ffile-prefix-map="$repo"=. \
      "${defines[@]}" -DNAPI_CPP_EXCEPTIONS -DNODE_GYP_MODULE_NAME=cairn_sys -DBUILDING_NODE_EXTENSION \
      -D_FILE_OFFSET_BITS=64 -D_LARGEFILE_SOURCE \
      -I"$napi_include" -I"$addon_include") &
    objs+=("$obj")
  done
  wait
  for obj in "${objs[@]}"; do [ -f "$obj" ] || { echo "prebuild: compiling for $arch failed" >&2; exit 1; }; done
  mkdir -p "$(dirname "$out")"
  "$cxx" -shared -pthread -o "$out" "${objs[@]}" \
    -Wl,--build-id=sha1 -Wl,-O1 -Wl,--as-needed -s
}

status=0
for arch in "${archs[@]}"; do
  dest="$sys/prebuilds/linux-$arch/@cairnfs+sys.glibc.node"
  if [ "$check" = 1 ]; then
    fresh="$(mktemp -d)/cairn_sys.node"
    build "$arch" "$fresh"
    if cmp -s "$fresh" "$dest"; then
      echo "prebuild: linux-$arch matches the source ($(sha256sum "$dest" | cut -c1-16))"
    else
      echo "prebuild: packages/sys/prebuilds/linux-$arch is stale or missing: run scripts/prebuild.sh and commit the result" >&2
      status=1
    fi
    rm -rf "$(dirname "$fresh")"
  else
    build "$arch" "$dest"
    echo "prebuild: wrote ${dest#"$repo"/} ($(stat -c %s "$dest") bytes)"
  fi
done
exit "$status"
