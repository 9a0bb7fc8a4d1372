// libFuzzer entry point for the applier's in-pass decoders (native/input_decoder.cc): the
// input's first byte picks gzip or zstd and the size of the slices the rest is fed in (as
// the applier's reads cut it), the rest is the compressed stream. The libraries are the
// system's zlib and libzstd (linked by scripts/fuzz.sh; in Node, Node's own). A Failure
// (corrupt, truncated, past the output bound) is the expected answer to a bad stream;
// what the fuzzer hunts is a crash, a sanitizer report, a hang, or output past the bound.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../native/input_decoder.h"
#include "../native/untar_errors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  constexpr int64_t kMaxOutput = 4 << 20;
  auto kind = (data[0] & 1) != 0 ? cairn::InputCompression::kZstd : cairn::InputCompression::kGzip;
  size_t slice = 1 + (static_cast<size_t>(data[1]) << (data[0] >> 5));  // 1 byte to 32 KiB
  data += 2;
  size -= 2;
  std::string missing;
  auto d = cairn::InputDecoder::Make(kind, kMaxOutput, "fuzz blob", &missing);
  if (!d) {
    fprintf(stderr, "no decoder: %s\n", missing.c_str());
    abort();
  }
  int64_t out = 0;
  try {
    for (size_t at = 0; at < size; at += slice) {
      size_t n = size - at < slice ? size - at : slice;
      d->Decode(data + at, n, [&](const uint8_t* p, size_t m) {
        out += static_cast<int64_t>(m);
        volatile uint8_t touch = p[m - 1];  // the sink may read every byte it is given
        (void)touch;
      });
    }
    d->End();
  } catch (const cairn::Failure&) {
  }
  if (out > kMaxOutput) {
    fprintf(stderr, "the decoder handed out %lld bytes past its bound\n", static_cast<long long>(out));
    abort();
  }
  return 0;
}
