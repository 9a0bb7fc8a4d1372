// gzip and zstd decoding inside the applier's pass (input_decoder.h).
#include "input_decoder.h"

#include <zlib.h>

#include <cstring>

#include "node_zlib.h"
#include "untar_errors.h"
#include "zstd_lib.h"

namespace cairn {

InputDecoder::InputDecoder(int64_t maxOutput, std::string what)
    : max_output_(maxOutput), what_(std::move(what)), out_(new uint8_t[kOut]) {}

void InputDecoder::Emit(const uint8_t* p, size_t n, const Sink& sink) {
  if (n == 0) return;
  produced_ += static_cast<int64_t>(n);
  if (produced_ > max_output_) {
    Failure f;
    f.code = "ERR_INVALID_ARCHIVE";
    f.message = what_ + " decompresses to more than " + std::to_string(max_output_) +
                " bytes (maxUncompressedBytes): refused as a decompression bomb. If the image is genuine, import it with a larger maxUncompressedBytes.";
    f.subject = what_;
    throw f;
  }
  sink(p, n);
}

void InputDecoder::Corrupt(const char* kind, const std::string& detail) const {
  Failure f;
  f.code = "ERR_INVALID_ARCHIVE";
  f.message = std::string("a ") + kind + " layer blob is corrupt or truncated: " + detail;
  f.subject = what_;
  throw f;
}

namespace {

class ZstdDecoder : public InputDecoder {
 public:
  ZstdDecoder(void* ctx, int64_t maxOutput, std::string what) : InputDecoder(maxOutput, std::move(what)), ctx_(ctx) {}
  ~ZstdDecoder() override { ZstdLib().free(ctx_); }

  void Decode(const uint8_t* p, size_t n, const Sink& sink) override {
    const ZstdApi& z = ZstdLib();
    ZstdIn in{p, n, 0};
    bool full;
    // Until the input is used up and the last call left room in the output (a full
    // output means the decoder may hold more); a frame's end does not stop it, so frames
    // back to back decode as one stream.
    do {
      ZstdOut o{out(), kOut, 0};
      size_t hint = z.decompress(ctx_, &o, &in);
      if (z.isError(hint)) Corrupt("zstd", std::string("zstd: ") + z.errorName(hint));
      hint_ = hint;
      full = o.pos == o.size;
      Emit(out(), o.pos, sink);
    } while (in.pos < in.size || full);
  }

  void End() override {
    if (hint_ != 0) Corrupt("zstd", "zstd: the stream ends inside a frame (truncated)");
  }

 private:
  void* ctx_;
  size_t hint_ = 1;  // zstd's last hint; 0 right after a frame's end
};

class GzipDecoder : public InputDecoder {
 public:
  GzipDecoder(int64_t maxOutput, std::string what) : InputDecoder(maxOutput, std::move(what)) {}
  ~GzipDecoder() override {
    if (ready_) NodeZlibInflate().end(&s_);
  }

  bool Init() {
    std::memset(&s_, 0, sizeof s_);
    // windowBits 15 + 16: gzip members only, as zlib.createGunzip reads them.
    ready_ = NodeZlibInflate().init2(&s_, 15 + 16, ZLIB_VERSION, static_cast<int>(sizeof(z_stream))) == Z_OK;
    return ready_;
  }

  void Decode(const uint8_t* p, size_t n, const Sink& sink) override {
    const NodeInflate& z = NodeZlibInflate();
    s_.next_in = const_cast<Bytef*>(p);
    s_.avail_in = static_cast<uInt>(n);  // the applier reads at most its buffer's 256 KiB
    bool full = false;  // the last call filled the output: zlib may hold more of it
    while (!padding_ && (s_.avail_in > 0 || full)) {
      if (between_) {
        if (s_.avail_in == 0) return;
        // After a member: zero bytes are padding (the rest is ignored, as Node's gunzip
        // does); anything else must be the next member.
        if (*s_.next_in == 0) {
          padding_ = true;
          return;
        }
        if (z.reset(&s_) != Z_OK) Corrupt("gzip", "zlib could not start the next member");
        between_ = false;
      }
      s_.next_out = out();
      s_.avail_out = static_cast<uInt>(kOut);
      int rc = z.inflate(&s_, Z_NO_FLUSH);
      Emit(out(), kOut - s_.avail_out, sink);
      full = s_.avail_out == 0;
      if (rc == Z_STREAM_END) {
        between_ = true;
        full = false;
        continue;
      }
      if (rc == Z_BUF_ERROR) return;  // with room to write, this means it needs more input
      if (rc != Z_OK) Corrupt("gzip", s_.msg != nullptr ? s_.msg : "zlib error " + std::to_string(rc));
    }
  }

  void End() override {
    if (!between_ && !padding_) Corrupt("gzip", "unexpected end of file");
  }

 private:
  z_stream s_;
  bool ready_ = false;
  bool between_ = false;  // a member just ended
  bool padding_ = false;  // zero bytes after a member: the stream is over
};

}  // namespace

std::unique_ptr<InputDecoder> InputDecoder::Make(InputCompression kind, int64_t maxOutput, std::string what, std::string* missing) {
  if (kind == InputCompression::kZstd) {
    const char* error = nullptr;
    void* ctx = NewZstdDecoder(&error);
    if (ctx == nullptr) {
      *missing = std::string("zstd: ") + error;
      return nullptr;
    }
    return std::make_unique<ZstdDecoder>(ctx, maxOutput, std::move(what));
  }
  if (!NodeZlibInflate().ok) {
    *missing = "gzip: Node's zlib was not found in this process";
    return nullptr;
  }
  auto d = std::make_unique<GzipDecoder>(maxOutput, std::move(what));
  if (!d->Init()) {
    *missing = "gzip: zlib could not set up a decoder";
    return nullptr;
  }
  return d;
}

}  // namespace cairn
