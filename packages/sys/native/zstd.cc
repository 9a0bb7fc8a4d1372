// zstd decompression for layer blobs, through a libzstd resolved at run time: the one Node
// itself carries (Node 22.15 and later export its symbols), else the system's libzstd.so.1.
// The addon links no compression library of its own; with neither present, JS falls back
// to its pure-JS decoder (zstdLibrary() is null then).
#include <dlfcn.h>

#include <atomic>
#include <stdexcept>
#include <string>

#include "common.h"

namespace cairn {

namespace {

// The streaming buffers of zstd's stable API (zstd.h, since v1.0).
struct ZstdIn {
  const void* src;
  size_t size;
  size_t pos;
};
struct ZstdOut {
  void* dst;
  size_t size;
  size_t pos;
};

// ZSTD_d_windowLogMax of the ZSTD_dParameter enum (stable since v1.4.0): frames asking a
// larger window than 2^value bytes are refused, which bounds the decoder's memory.
constexpr int kParamWindowLogMax = 100;
// 2^27 = 128 MiB, zstd's own default limit for streaming decompression (ZSTD_WINDOWLOG_LIMIT_DEFAULT).
constexpr int kWindowLogMax = 27;

struct Zstd {
  void* (*create)() = nullptr;
  size_t (*free)(void*) = nullptr;
  size_t (*setParameter)(void*, int, int) = nullptr;
  size_t (*decompress)(void*, ZstdOut*, ZstdIn*) = nullptr;
  unsigned (*isError)(size_t) = nullptr;
  const char* (*errorName)(size_t) = nullptr;
  const char* from = nullptr;  // where the symbols came from, for zstdLibrary()
};

bool Resolve(Zstd& z, void* handle) {
  z.create = reinterpret_cast<decltype(z.create)>(dlsym(handle, "ZSTD_createDCtx"));
  z.free = reinterpret_cast<decltype(z.free)>(dlsym(handle, "ZSTD_freeDCtx"));
  z.setParameter = reinterpret_cast<decltype(z.setParameter)>(dlsym(handle, "ZSTD_DCtx_setParameter"));
  z.decompress = reinterpret_cast<decltype(z.decompress)>(dlsym(handle, "ZSTD_decompressStream"));
  z.isError = reinterpret_cast<decltype(z.isError)>(dlsym(handle, "ZSTD_isError"));
  z.errorName = reinterpret_cast<decltype(z.errorName)>(dlsym(handle, "ZSTD_getErrorName"));
  return z.create && z.free && z.setParameter && z.decompress && z.isError && z.errorName;
}

// Resolved once (thread-safe static init).
const Zstd& Lib() {
  static const Zstd lib = [] {
    Zstd z;
    if (Resolve(z, RTLD_DEFAULT)) {
      z.from = "node";
      return z;
    }
    void* h = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h != nullptr && Resolve(z, h)) {
      z.from = "libzstd.so.1";
      return z;
    }
    return Zstd{};
  }();
  return lib;
}

struct Decoder {
  void* ctx = nullptr;
  // One decode at a time: JS awaits each call, this turns a misuse into an error, not a race.
  std::atomic<bool> busy{false};
};

void FreeDecoder(Napi::Env, Decoder* d) {
  if (d->ctx != nullptr) Lib().free(d->ctx);
  delete d;
}

Decoder* DecoderArg(const Napi::CallbackInfo& info) {
  if (!info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "zstd: not a decoder");
  return info[0].As<Napi::External<Decoder>>().Data();
}

// zstdLibrary() → "node" | "libzstd.so.1" | null
Napi::Value ZstdLibrary(const Napi::CallbackInfo& info) {
  const char* from = Lib().from;
  return from == nullptr ? info.Env().Null() : Napi::String::New(info.Env(), from);
}

// zstdCreate() → decoder (an External; freed by zstdFree or the GC)
Napi::Value ZstdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Zstd& z = Lib();
  if (z.from == nullptr) throw Napi::Error::New(env, "zstd: no libzstd in this process or on this system");
  auto* d = new Decoder();
  d->ctx = z.create();
  if (d->ctx == nullptr) {
    delete d;
    throw Napi::Error::New(env, "zstd: out of memory creating a decoder");
  }
  size_t rc = z.setParameter(d->ctx, kParamWindowLogMax, kWindowLogMax);
  if (z.isError(rc)) {
    FreeDecoder(env, d);
    throw Napi::Error::New(env, std::string("zstd: ") + z.errorName(rc));
  }
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
    const Zstd& z = Lib();
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
  if (d->ctx != nullptr) Lib().free(d->ctx);
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
