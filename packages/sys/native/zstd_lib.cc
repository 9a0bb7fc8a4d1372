// libzstd resolved at run time (zstd_lib.h).
#include "zstd_lib.h"

#include <dlfcn.h>

namespace cairn {

namespace {

// ZSTD_d_windowLogMax of the ZSTD_dParameter enum (stable since v1.4.0).
constexpr int kParamWindowLogMax = 100;

bool Resolve(ZstdApi& z, void* handle) {
  z.create = reinterpret_cast<decltype(z.create)>(dlsym(handle, "ZSTD_createDCtx"));
  z.free = reinterpret_cast<decltype(z.free)>(dlsym(handle, "ZSTD_freeDCtx"));
  z.setParameter = reinterpret_cast<decltype(z.setParameter)>(dlsym(handle, "ZSTD_DCtx_setParameter"));
  z.decompress = reinterpret_cast<decltype(z.decompress)>(dlsym(handle, "ZSTD_decompressStream"));
  z.isError = reinterpret_cast<decltype(z.isError)>(dlsym(handle, "ZSTD_isError"));
  z.errorName = reinterpret_cast<decltype(z.errorName)>(dlsym(handle, "ZSTD_getErrorName"));
  return z.create && z.free && z.setParameter && z.decompress && z.isError && z.errorName;
}

}  // namespace

const ZstdApi& ZstdLib() {
  static const ZstdApi lib = [] {
    ZstdApi z;
    if (Resolve(z, RTLD_DEFAULT)) {
      z.from = "node";
      return z;
    }
    void* h = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h != nullptr && Resolve(z, h)) {
      z.from = "libzstd.so.1";
      return z;
    }
    return ZstdApi{};
  }();
  return lib;
}

void* NewZstdDecoder(const char** error) {
  const ZstdApi& z = ZstdLib();
  if (z.from == nullptr) {
    *error = "no libzstd in this process or on this system";
    return nullptr;
  }
  void* ctx = z.create();
  if (ctx == nullptr) {
    *error = "out of memory creating a decoder";
    return nullptr;
  }
  size_t rc = z.setParameter(ctx, kParamWindowLogMax, kZstdWindowLogMax);
  if (z.isError(rc)) {
    *error = z.errorName(rc);
    z.free(ctx);
    return nullptr;
  }
  return ctx;
}

}  // namespace cairn
