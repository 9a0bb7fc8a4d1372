#!/usr/bin/env bash
# Coverage-guided fuzzing of the addon's tar reader and layer applier with libFuzzer
# (clang, libclang-rt-14-dev): builds packages/sys/fuzz/apply_fuzzer.cc with the addon's
# tar_reader/tar_fields/beneath/applier/nofollow sources under ASan+UBSan into
# packages/sys/build-fuzz, then runs it from the committed seed corpus
# (packages/sys/fuzz/corpus, made by scripts/fuzz-corpus.mjs) for FUZZ_SECONDS (60).
# New inputs go to build-fuzz/corpus, never into the committed one. A crash leaves its
# input in build-fuzz/ and fails the run.
# Then the applier's in-pass gzip/zstd decoders (fuzz/decode_fuzzer.cc, linked with the
# system's zlib; libzstd.so.1 is found at run time) for DECODE_FUZZ_SECONDS (20), seeded
# with streams the gzip and zstd tools make here.
set -euo pipefail
cd "$(dirname "$0")/.."

out=packages/sys/build-fuzz
mkdir -p "$out/corpus"
nodedir="$(npm config get nodedir)"
napi="$(node -p "require('node-addon-api').include_dir")"
native=packages/sys/native
clang++ -std=c++17 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$nodedir/include/node" -I"$napi" \
  packages/sys/fuzz/apply_fuzzer.cc "$native/tar_reader.cc" "$native/tar_fields.cc" \
  "$native/beneath.cc" "$native/applier.cc" "$native/nofollow.cc" \
  "$native/sha256.cc" "$native/split_record.cc" "$native/record_gzip.cc" \
  "$native/node_zlib.cc" "$native/zstd_lib.cc" "$native/input_decoder.cc" -ldl \
  -o "$out/apply_fuzzer"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export CAIRN_FUZZ_TMP="$work"
export ASAN_OPTIONS=detect_leaks=1
"$out/apply_fuzzer" -max_total_time="${FUZZ_SECONDS:-60}" -timeout=10 -rss_limit_mb=1024 \
  -max_len=65536 -print_final_stats=1 -artifact_prefix="$out/" \
  "$out/corpus" packages/sys/fuzz/corpus

clang++ -std=c++17 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$nodedir/include/node" -I"$napi" \
  packages/sys/fuzz/decode_fuzzer.cc "$native/input_decoder.cc" "$native/node_zlib.cc" "$native/zstd_lib.cc" \
  -l:libz.so.1 -ldl -o "$out/decode_fuzzer"
seeds="$out/decode-seeds"
mkdir -p "$seeds" "$out/decode-corpus"
sample="$(head -c 20000 README.md; head -c 3000 /dev/urandom | base64)"
# First byte: bit 0 picks zstd, the top bits the slice size; second byte scales it.
for level in 1 9; do
  { printf '\x40\x10'; printf '%s' "$sample" | gzip -"$level" -c; } > "$seeds/gzip-$level"
  { printf '\x41\x10'; printf '%s' "$sample" | zstd -q -"$level" -c; } > "$seeds/zstd-$level"
done
{ printf '\x00\x03'; printf '%s' "$sample" | gzip -c; printf '%s' "$sample" | gzip -c; } > "$seeds/gzip-members"
{ printf '\x01\x03'; printf '%s' "$sample" | zstd -q -c; printf '%s' "$sample" | zstd -q -c; } > "$seeds/zstd-frames"
"$out/decode_fuzzer" -max_total_time="${DECODE_FUZZ_SECONDS:-20}" -timeout=10 -rss_limit_mb=1024 \
  -max_len=65536 -print_final_stats=1 -artifact_prefix="$out/decode-" \
  "$out/decode-corpus" "$seeds"
