// Node's zlib resolved at run time (node_zlib.h).
#include "node_zlib.h"

#include <dlfcn.h>

#include <string>

namespace cairn {

namespace {

template <typename T>
T Sym(const std::string& prefix, const char* name) {
  return reinterpret_cast<T>(dlsym(RTLD_DEFAULT, (prefix + name).c_str()));
}

}  // namespace

const NodeDeflate& NodeZlibDeflate() {
  // The unprefixed names first (record_gzip's choice since it was written), then Chromium's.
  static const NodeDeflate z = [] {
    NodeDeflate r;
    for (const char* prefix : {"", "Cr_z_"}) {
      r.init2 = Sym<decltype(r.init2)>(prefix, "deflateInit2_");
      r.deflate = Sym<decltype(r.deflate)>(prefix, "deflate");
      r.end = Sym<decltype(r.end)>(prefix, "deflateEnd");
      if (r.init2 && r.deflate && r.end) {
        r.ok = true;
        break;
      }
    }
    return r;
  }();
  return z;
}

const NodeInflate& NodeZlibInflate() {
  // Chromium's first: it is the copy Node's own zlib binding uses, with its SIMD inflate.
  static const NodeInflate z = [] {
    NodeInflate r;
    for (const char* prefix : {"Cr_z_", ""}) {
      r.init2 = Sym<decltype(r.init2)>(prefix, "inflateInit2_");
      r.inflate = Sym<decltype(r.inflate)>(prefix, "inflate");
      r.reset = Sym<decltype(r.reset)>(prefix, "inflateReset");
      r.end = Sym<decltype(r.end)>(prefix, "inflateEnd");
      if (r.init2 && r.inflate && r.reset && r.end) {
        r.ok = true;
        break;
      }
    }
    return r;
  }();
  return z;
}

}  // namespace cairn
