// Node's own zlib, resolved at run time: the addon links no zlib, and Node 20-24 export
// theirs (Node 20 two copies: Chromium's, prefixed Cr_z_, and an unprefixed one). Each
// family of functions is taken whole from one copy, never mixed, since a z_stream made
// by one copy's init must only meet that copy's functions.
#pragma once

#include <zlib.h>

namespace cairn {

struct NodeDeflate {
  int (*init2)(z_streamp, int, int, int, int, int, const char*, int) = nullptr;
  int (*deflate)(z_streamp, int) = nullptr;
  int (*end)(z_streamp) = nullptr;
  bool ok = false;
};

struct NodeInflate {
  int (*init2)(z_streamp, int, const char*, int) = nullptr;
  int (*inflate)(z_streamp, int) = nullptr;
  int (*reset)(z_streamp) = nullptr;
  int (*end)(z_streamp) = nullptr;
  bool ok = false;
};

// Resolved once each (thread-safe static init).
const NodeDeflate& NodeZlibDeflate();
const NodeInflate& NodeZlibInflate();

}  // namespace cairn
