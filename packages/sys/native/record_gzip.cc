// gzip through Node's zlib, resolved at run time (record_gzip.h).
#include "record_gzip.h"

#include <zlib.h>

#include <cstring>
#include <memory>

#include "node_zlib.h"
#include "untar_errors.h"

namespace cairn {

RecordGzip::RecordGzip() {
  const NodeDeflate& z = NodeZlibDeflate();
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
  NodeZlibDeflate().end(s);
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
  const NodeDeflate& z = NodeZlibDeflate();
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
