// zstd decompression of blobs for JS, through the libzstd of zstd_lib.h (the applier's
// in-pass decoder, input_decoder.h, uses the same library).
#include <atomic>
#include <stdexcept>
#include <string>

#include "common.h"
#include "zstd_lib.h"

namespace cairn {

namespace {

struct Decoder {
  void* ctx = nullptr;
  // One decode at a time: JS awaits each call, this turns a misuse into an error, not a race.
  std::atomic<bool> busy{false};
};

void FreeDecoder(Napi::Env, Decoder* d) {
  if (d->ctx != nullptr) ZstdLib().free(d->ctx);
  delete d;
}

Decoder* DecoderArg(const Napi::CallbackInfo& info) {
  if (!info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "zstd: not a decoder");
  return info[0].As<Napi::External<Decoder>>().Data();
}

// zstdLibrary() → "node" | "libzstd.so.1" | null
Napi::Value ZstdLibrary(const Napi::CallbackInfo& info) {
  const char* from = ZstdLib().from;
  return from == nullptr ? info.Env().Null() : Napi::String::New(info.Env(), from);
}

// zstdCreate() → decoder (an External; freed by zstdFree or the GC)
Napi::Value ZstdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* error = nullptr;
  void* ctx = NewZstdDecoder(&error);
  if (ctx == nullptr) throw Napi::Error::New(env, std::string("zstd: ") + error);
  auto* d = new Decoder();
  d->ctx = ctx;
  return Napi::External<Decoder>::New(env, d, FreeDecoder);
}

// zstdDecode(decoder, input, offset, output) → Promise<[read, written, hint]>: decodes from
// input[offset..] into output until the input is used up or the output is full, on the
// pool. hint is zstd's: 0 when a frame has just been completely decoded and flushed. The
// caller keeps input and output alive and unchanged until the promise settles.
Napi::Value ZstdDecode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Decoder* d = DecoderArg(info);
  if (!info[1].IsTypedArray() || !info[3].IsTypedArray()) throw Napi::TypeError::New(env, "zstd: input and output must be Uint8Arrays");
  auto in = info[1].As<Napi::Uint8Array>();
  auto out = info[3].As<Napi::Uint8Array>();
  double offset = info[2].As<Napi::Number>().DoubleValue();
  if (!(offset >= 0 && offset <= static_cast<double>(in.ByteLength()))) throw Napi::RangeError::New(env, "zstd: offset outside the input");
  if (d->ctx == nullptr) throw Napi::Error::New(env, "zstd: the decoder was freed");
  bool expected = false;
  if (!d->busy.compare_exchange_strong(expected, true)) throw Napi::Error::New(env, "zstd: a decode is already running on this decoder");
  const uint8_t* src = in.Data() + static_cast<size_t>(offset);
  size_t srcLen = in.ByteLength() - static_cast<size_t>(offset);
  uint8_t* dst = out.Data();
  size_t dstLen = out.ByteLength();
  return RunAsync(env, "cairn.zstdDecode", [d, src, srcLen, dst, dstLen](JobResult& r) {
    const ZstdApi& z = ZstdLib();
    ZstdIn zin{src, srcLen, 0};
    ZstdOut zout{dst, dstLen, 0};
    size_t hint = 0;
    // Until the input is used up or the output full; a frame's end alone does not stop it,
    // so concatenated frames (zstd allows them, as gzip members) decode in one call.
    do {
      hint = z.decompress(d->ctx, &zout, &zin);
      if (z.isError(hint)) {
        d->busy = false;
        throw std::runtime_error(std::string("zstd: ") + z.errorName(hint));
      }
    } while (zin.pos < zin.size && zout.pos < zout.size);
    d->busy = false;
    r.hasNumbers = true;
    r.numbers = {static_cast<double>(zin.pos), static_cast<double>(zout.pos), static_cast<double>(hint)};
  });
}

// zstdFree(decoder): releases the decoder's memory now rather than at GC.
Napi::Value ZstdFree(const Napi::CallbackInfo& info) {
  Decoder* d = DecoderArg(info);
  if (d->busy) throw Napi::Error::New(info.Env(), "zstd: the decoder is still decoding");
  if (d->ctx != nullptr) ZstdLib().free(d->ctx);
  d->ctx = nullptr;
  return info.Env().Undefined();
}

}  // namespace

void InitZstd(Napi::Env env, Napi::Object exports) {
  exports.Set("zstdLibrary", Napi::Function::New(env, ZstdLibrary, "zstdLibrary"));
  exports.Set("zstdCreate", Napi::Function::New(env, ZstdCreate, "zstdCreate"));
  exports.Set("zstdDecode", Napi::Function::New(env, ZstdDecode, "zstdDecode"));
  exports.Set("zstdFree", Napi::Function::New(env, ZstdFree, "zstdFree"));
}

}  // namespace cairn
