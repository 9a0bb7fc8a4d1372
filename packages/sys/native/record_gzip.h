// gzip of the tar-split record on the applier's pool thread (split_record.h): the split
// file the image store keeps is a gzip of the records, and compressing them where they
// are made hands JS a fifth of the bytes and spares the event loop zlib's stream
// machinery (docs/benchmarks.md, issue 19). The addon does not link zlib: Node's own is
// looked up at run time (dlsym; node_zlib.h). Where
// it is absent, Available() is false and the applier hands out the raw records instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace cairn {

class RecordGzip {
 public:
  RecordGzip();
  ~RecordGzip();
  RecordGzip(const RecordGzip&) = delete;
  RecordGzip& operator=(const RecordGzip&) = delete;

  // Node's zlib was found and the stream is set up.
  bool ok() const { return stream_ != nullptr; }
  // Compresses `n` bytes onto out() (level 1: headers compress well even so, and fast).
  void Write(const uint8_t* p, size_t n) { Run(p, n, false); }
  // Ends the gzip member.
  void Finish() { Run(nullptr, 0, true); }
  std::string& out() { return out_; }

 private:
  void Run(const uint8_t* p, size_t n, bool finish);
  void* stream_ = nullptr;  // z_stream*
  bool finished_ = false;
  std::string out_;
};

}  // namespace cairn
