// gzip through Node's zlib, resolved at run time (record_gzip.h).
#include "record_gzip.h"

#include <dlfcn.h>
#include <zlib.h>

#include <cstring>
#include <memory>

#include "untar_errors.h"

namespace cairn {

namespace {

struct Zlib {
  int (*init2)(z_streamp, int, int, int, int, int, const char*, int) = nullptr;
  int (*deflate)(z_streamp, int) = nullptr;
  int (*end)(z_streamp) = nullptr;
  bool ok = false;
};

// Resolved once (thread-safe static init). The unprefixed names first, then Chromium's
// Cr_z_ ones (Node 20 exports both).
const Zlib& NodeZlib() {
  static const Zlib z = [] {
    Zlib r;
    for (const char* prefix : {"", "Cr_z_"}) {
      std::string p(prefix);
      r.init2 = reinterpret_cast<decltype(r.init2)>(dlsym(RTLD_DEFAULT, (p + "deflateInit2_").c_str()));
      r.deflate = reinterpret_cast<decltype(r.deflate)>(dlsym(RTLD_DEFAULT, (p + "deflate").c_str()));
      r.end = reinterpret_cast<decltype(r.end)>(dlsym(RTLD_DEFAULT, (p + "deflateEnd").c_str()));
      if (r.init2 && r.deflate && r.end) {
        r.ok = true;
        break;
      }
    }
    return r;
  }();
  return z;
}

}  // namespace

RecordGzip::RecordGzip() {
  const Zlib& z = NodeZlib();
  if (!z.ok) return;
  auto* s = new z_stream();
  std::memset(s, 0, sizeof *s);
  // windowBits 15 + 16: a gzip wrapper, as zlib.createGzip writes.
  if (z.init2(s, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, static_cast<int>(sizeof(z_stream))) != Z_OK) {
    delete s;
    return;
  }
  stream_ = s;
}

RecordGzip::~RecordGzip() {
  if (stream_ == nullptr) return;
  auto* s = static_cast<z_stream*>(stream_);
  NodeZlib().end(s);
  delete s;
}

void RecordGzip::Run(const uint8_t* p, size_t n, bool finish) {
  if (n == 0 && !finish) return;
  if (finished_) {
    Failure f;
    f.code = "ERR_BACKEND_FAILED";
    f.message = "tar-split records after the end of their gzip stream";
    throw f;
  }
  finished_ = finish;
  auto* s = static_cast<z_stream*>(stream_);
  const Zlib& z = NodeZlib();
  s->next_in = const_cast<Bytef*>(p);
  s->avail_in = static_cast<uInt>(n);  // callers pass slices of a few MiB at most
  while (true) {
    size_t at = out_.size();
    size_t room = n / 2 + 64 * 1024;
    out_.resize(at + room);
    s->next_out = reinterpret_cast<Bytef*>(&out_[at]);
    s->avail_out = static_cast<uInt>(room);
    int rc = z.deflate(s, finish ? Z_FINISH : Z_NO_FLUSH);
    out_.resize(at + room - s->avail_out);
    if (rc == Z_STREAM_END) return;
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      Failure f;
      f.code = "ERR_BACKEND_FAILED";
      f.message = "compressing the layer's tar-split record failed (zlib error " + std::to_string(rc) + ")";
      throw f;
    }
    if (!finish && s->avail_in == 0 && s->avail_out > 0) return;
  }
}

}  // namespace cairn
