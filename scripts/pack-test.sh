#!/usr/bin/env bash
# The packages as a user gets them: packs every public package (prepack builds it clean),
# checks what each tarball holds, then, for each Node binary given, installs the tarballs
# into a fresh project with --ignore-scripts and a PATH that has no compiler, and runs an
# ES-module consumer, a CommonJS consumer (require of ESM), a TypeScript consumer under
# nodenext and bundler resolution, and the `cairn` command through npx.
#
#   scripts/pack-test.sh [NODE_BINARY...]     (default: the node on PATH)
#
# Needs the registry (or npm's cache) for third-party dependencies; run as root for
# `cairn probe` to see every driver. Prints "pack-test: N passed, N failed" at the end.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
nodes=("$@")
[ ${#nodes[@]} -gt 0 ] || nodes=("$(command -v node)")
npmcli="$(dirname "$(readlink -f "$(command -v npm)")")/npm-cli.js"
tsc="$repo/node_modules/typescript/bin/tsc"

work="$(mktemp -d /tmp/cairn-pack-test.XXXXXX)"
trap 'rm -rf "$work"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "pack-test: ok   $*"; }
bad() { fail=$((fail + 1)); echo "pack-test: FAIL $*"; }
# check NAME COMMAND...: runs the command, counts it, shows its output only when it fails.
check() {
  local name="$1" out start=$SECONDS
  shift
  if out="$("$@" 2>&1)"; then ok "$name ($((SECONDS - start)) s)"; else bad "$name"; echo "$out" | tail -40 | sed 's/^/    /'; fi
}

cd "$repo"
if node scripts/package-meta.mjs --check >/dev/null 2>&1; then ok "package metadata"; else bad "package metadata"; node scripts/package-meta.mjs --check || true; fi

# --- pack ---------------------------------------------------------------------------
mkdir -p "$work/tarballs"
publics=()
for dir in packages/*/; do
  dir="${dir%/}"
  [ "$(node -p "require('./$dir/package.json').private === true")" = true ] && continue
  publics+=("$dir")
done
start=$SECONDS
for dir in "${publics[@]}"; do
  (cd "$dir" && npm pack --silent --pack-destination "$work/tarballs" >/dev/null) || { bad "npm pack $dir"; continue; }
done
tarballs=("$work"/tarballs/*.tgz)
[ ${#tarballs[@]} -eq ${#publics[@]} ] && ok "npm pack: ${#tarballs[@]} tarballs ($((SECONDS - start)) s)" || bad "npm pack: ${#tarballs[@]} tarballs for ${#publics[@]} packages"

contents() {
  local t list
  for t in "${tarballs[@]}"; do
    list="$(tar -tzf "$t")"
    for f in package/LICENSE package/README.md package/package.json package/dist/index.js package/dist/index.d.ts; do
      grep -qx "$f" <<<"$list" || { echo "$(basename "$t"): no $f"; return 1; }
    done
    if grep -E '\.tsbuildinfo$|\.d\.ts\.map$|(^|/)src/.*\.ts$|(^|/)test/' <<<"$list"; then echo "$(basename "$t"): ships the files above"; return 1; fi
    cmp -s <(tar -xzOf "$t" package/LICENSE) LICENSE || { echo "$(basename "$t"): LICENSE is not the root LICENSE"; return 1; }
    # every source map carries its sources (the .ts files are not in the tarball)
    mkdir -p "$work/x" && rm -rf "$work/x"/* && tar -xzf "$t" -C "$work/x"
    node -e '
      const fs = require("fs"), path = require("path");
      const walk = (d) => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]);
      for (const f of walk(process.argv[1]).filter((f) => f.endsWith(".js.map"))) {
        const m = JSON.parse(fs.readFileSync(f, "utf8"));
        if (!m.sourcesContent || m.sourcesContent.length !== m.sources.length || m.sourcesContent.some((s) => typeof s !== "string")) { console.log(f + ": no inline sources"); process.exit(1); }
      }' "$work/x/package" || return 1
  done
  local sys
  sys="$(tar -tzf "$work"/tarballs/cairnfs-sys-*.tgz)"
  for arch in x64 arm64; do
    grep -qx "package/prebuilds/linux-$arch/@cairnfs+sys.glibc.node" <<<"$sys" || { echo "sys: no prebuilt linux-$arch binary"; return 1; }
  done
}
check "tarball contents (LICENSE, README, no build info or sources, inline source maps, prebuilds)" contents

# --- install and consume, once per Node ---------------------------------------------
for node in "${nodes[@]}"; do
  version="$("$node" -p process.version)"
  proj="$work/consumer-$version"
  bin="$proj/.bin"
  mkdir -p "$proj" "$bin"
  # The consumer's PATH: this Node and npm, and the system's tools less every compiler,
  # make and python, so nothing can be compiled.
  declare -A seen=()
  links=()
  for f in /usr/local/bin/* /usr/bin/* /bin/*; do
    name="${f##*/}"
    case "$name" in
      *g++*|*gcc*|*c++*|cc|*-cc|cpp*|*-cpp*|clang*|make|gmake|*python*|node|nodejs|npm|npx|corepack) continue ;;
    esac
    [ -n "${seen[$name]:-}" ] && continue
    seen[$name]=1
    links+=("$f")
  done
  ln -s -t "$bin" "${links[@]}"
  ln -s "$(readlink -f "$node")" "$bin/node"
  printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$bin/node" "$npmcli" >"$bin/npm"
  printf '#!/bin/sh\nexec "%s" "%s" exec -- "$@"\n' "$bin/node" "$npmcli" >"$bin/npx"
  chmod +x "$bin/npm" "$bin/npx"
  cp scripts/pack-test/consumer.* scripts/pack-test/tsconfig.*.json "$proj/"
  echo '{ "name": "cairn-consumer", "private": true, "version": "1.0.0" }' >"$proj/package.json"
  # The rest of the environment stays (proxy CA certificates among it); NODE_OPTIONS would
  # change how the consumers load.
  run() { (cd "$proj" && env PATH="$bin" NODE_OPTIONS= "$@"); }

  check "[$version] no compiler on the consumer's PATH" \
    run /bin/sh -c 'for t in g++ c++ cc gcc make python3; do command -v $t && exit 1; done; test "$(command -v node)" = "$0/node"' "$bin"
  check "[$version] npm install --ignore-scripts of the ${#tarballs[@]} tarballs" \
    run timeout 600 npm install --ignore-scripts --no-audit --no-fund --loglevel=error "${tarballs[@]}" "@types/node@^20.19.0"
  check "[$version] ESM consumer" run node consumer.mjs
  check "[$version] CommonJS consumer (require of ESM)" run node --no-warnings consumer.cjs
  check "[$version] TypeScript consumer, moduleResolution nodenext" run node "$tsc" -p tsconfig.nodenext.json
  check "[$version] TypeScript consumer, moduleResolution bundler" run node "$tsc" -p tsconfig.bundler.json
  expected="$(node -p "require('./packages/cairnfs/package.json').version")"
  check "[$version] npx cairn --version" run /bin/sh -c "test \"\$(npx cairn --version)\" = '$expected'"
  check "[$version] npx cairn probe" run /bin/sh -c "npx cairn --root '$proj/root' probe | grep -E '^vfs +(usable|chosen)'"
done

echo "pack-test: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
