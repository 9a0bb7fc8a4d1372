// The tar-split record of a layer, made in the applier's own pass over the tar (image's
// tarsplit.ts SplitRecorder does the same in JS, and reads this output): every byte that
// is not file content (headers, PAX records, padding, the end marker, trailing bytes) as
// raw runs, and for file content only a reference (path, position, length), so the tar
// can be rebuilt byte for byte from the record and the applied files. Records:
//   'R' u32 len, bytes              raw tar bytes (at most 1 MiB per record)
//   'Z' u32 len                     that many raw zero bytes (at most 1 MiB per record)
//   'S' u32 len, path, f64 size     a file entry begins: its logical size
//   'F' u32 len, path, f64 position, f64 length
// (big-endian; paths as JS sees them: the name's bytes decoded as UTF-8 with U+FFFD for
// invalid sequences, then encoded again). It also decides `exact` (the layer's files can
// rebuild it) and holds the layer's logical file bytes to a cap, as SplitRecorder does.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>

#include "tar_reader.h"

namespace cairn {

class SplitRecord {
 public:
  // maxLogical: most bytes the layer's files may hold by their logical sizes; `what` names
  // the layer in the refusal.
  SplitRecord(int64_t maxLogical, std::string what) : max_logical_(maxLogical), what_(std::move(what)) {}

  // Around each chunk the reader parses: content slices it hands out point into it, and
  // everything between them is raw.
  void InputBegin(const uint8_t* data, size_t len);
  void InputEnd();
  // The reader's callbacks, before the applier sees them (OnEntry may refuse the entry).
  void OnEntry(const Entry& e);
  void OnData(const uint8_t* p, size_t n, int64_t position);
  // The records so far (a file reference that may still grow stays pending), as
  // `take(data, size)` sees them; then they are forgotten.
  template <typename F>
  auto TakeWith(F take) {
    CloseRaw();
    auto r = take(out_.data(), out_.size());
    out_.clear();  // keeps its capacity: the next slice's records go to memory already mapped
    return r;
  }
  // The input ended: the pending reference and raw run are closed.
  void Finish();
  bool exact() const { return exact_; }
  // Bytes of records made and not yet taken.
  size_t pending() const { return out_.size(); }

  // JS's Buffer.toString('utf8') then Buffer.from(…, 'utf8') (WHATWG: each maximal invalid subpart becomes U+FFFD).
  static std::string Utf8Sanitized(const std::string& s);
  // JS's path.posix.normalize("/" + name).
  static std::string NormalizeAbsolute(const std::string& name);

 private:
  void Raw(const uint8_t* p, size_t n);
  void Literal(const uint8_t* p, size_t n);
  void Zeros(size_t n);
  // Closes the open 'R' or 'Z' record (its length written).
  void CloseRaw();
  void CloseLiteral();
  void CloseZeros();
  // Starts a record of `kind` with a length field to be set when it closes; returns the field's offset.
  int64_t Open(uint8_t kind);
  void SetLength(int64_t at, uint32_t len);
  void FlushFile();
  void U32(uint32_t v);
  void F64(double v);

  int64_t max_logical_;
  std::string what_;
  std::string out_;
  int64_t raw_at_ = -1;  // offset in out_ of the open raw record's length field
  int64_t zeros_at_ = -1;  // offset in out_ of the open zeros record's length field
  size_t zeros_ = 0;       // zero bytes in the open zeros record
  bool has_file_ = false;
  std::string file_path_;
  int64_t file_position_ = 0, file_length_ = 0;
  std::string current_path_;
  const uint8_t* input_ = nullptr;
  size_t input_len_ = 0, input_pos_ = 0;
  std::unordered_set<std::string> files_;
  int64_t logical_ = 0;
  bool exact_ = true;
};

}  // namespace cairn
