// libzstd's streaming decoder, resolved at run time: the one Node itself carries (Node
// 22.15 and later export its symbols), else the system's libzstd.so.1. The addon links no
// compression library of its own; with neither present, ZstdLib().from is null and
// callers fall back to a decoder of their own (image's fzstd path).
#pragma once

#include <cstddef>

namespace cairn {

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

struct ZstdApi {
  void* (*create)() = nullptr;
  size_t (*free)(void*) = nullptr;
  size_t (*setParameter)(void*, int, int) = nullptr;
  size_t (*decompress)(void*, ZstdOut*, ZstdIn*) = nullptr;
  unsigned (*isError)(size_t) = nullptr;
  const char* (*errorName)(size_t) = nullptr;
  const char* from = nullptr;  // "node" or "libzstd.so.1"; null when there is none
};

// Resolved once (thread-safe static init).
const ZstdApi& ZstdLib();

// A decoder context whose window is bounded (kZstdWindowLogMax), or null (out of memory,
// no library). Free it with ZstdLib().free.
void* NewZstdDecoder(const char** error);

// 2^27 = 128 MiB, zstd's own default limit for streaming decompression
// (ZSTD_WINDOWLOG_LIMIT_DEFAULT): frames asking a larger window are refused, which bounds
// the decoder's memory.
constexpr int kZstdWindowLogMax = 27;

}  // namespace cairn
