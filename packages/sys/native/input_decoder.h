// A compressed layer blob decoded inside the applier's own pass (applier.h ReadRange):
// the compressed bytes are read with pread into one buffer, decoded into another, and the
// output goes straight to the hash, the tar-split record and the tar reader. The stream
// path (a JS decompressor handing 512 KiB chunks to the applier) costs a fresh buffer and
// a thread hand-off per chunk: for zstd, about as much CPU as the decoding itself
// (docs/benchmarks.md, issue 19).
//
// Both decoders use libraries resolved at run time (zstd_lib.h, node_zlib.h); Make
// reports which is missing, and the caller then takes the stream path.
//
// Their rules are the stream path's: zstd frames may follow one another and a stream that
// ends inside a frame is refused; gzip members may follow one another (as Node's gunzip
// reads them), zero bytes after a member are padding and end the stream, anything else
// after it must be another member. Output past maxOutput bytes is refused as a
// decompression bomb before it reaches the sink.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace cairn {

enum class InputCompression { kGzip = 1, kZstd = 2 };

class InputDecoder {
 public:
  using Sink = std::function<void(const uint8_t*, size_t)>;

  virtual ~InputDecoder() = default;
  // Decodes `n` input bytes; each piece of output goes to `sink` (at most kOut bytes).
  virtual void Decode(const uint8_t* p, size_t n, const Sink& sink) = 0;
  // The input ended: a stream that stops inside a frame or member is refused.
  virtual void End() = 0;

  // A decoder, or null with *missing naming the absent library. `what` names the blob in
  // failures ("layer sha256:…"); maxOutput is the most bytes it may decode to.
  static std::unique_ptr<InputDecoder> Make(InputCompression kind, int64_t maxOutput, std::string what, std::string* missing);

 protected:
  InputDecoder(int64_t maxOutput, std::string what);
  // Counts `n` output bytes against maxOutput, then hands them to the sink.
  void Emit(const uint8_t* p, size_t n, const Sink& sink);
  [[noreturn]] void Corrupt(const char* kind, const std::string& detail) const;
  uint8_t* out() { return out_.get(); }

  static constexpr size_t kOut = 256 * 1024;  // as the applier's read buffer: stays in L2

 private:
  int64_t max_output_;
  int64_t produced_ = 0;
  std::string what_;
  std::unique_ptr<uint8_t[]> out_;
};

}  // namespace cairn
