// The layer applier's tar reader: a push parser over raw tar bytes (v7, ustar, GNU long
// names/links, base-256 numbers, old GNU sparse 'S' with extension blocks, PAX 'x'/'g',
// GNU sparse 0.0/0.1/1.0) that hands each entry, its content and its end to a sink. It
// does no file work. Its rules are archive's tar-parser.ts (the reference); the differential
// fuzzer (packages/archive/test/fuzz.test.ts) holds the two to the same outcome.
#pragma once

#include <cstdint>
#include <ctime>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "untar_errors.h"

namespace cairn {

// Caps on what an archive can make the reader hold or do, each refused with
// ERR_INVALID_ARCHIVE naming the limit. archive's tar-parser.ts (TAR_LIMITS) has the same
// numbers, and docs/reliability.md lists them.
struct TarLimits {
  // One 'x', 'g', 'L' or 'K' body. Go's archive/tar, which moby reads layers with,
  // refuses larger ones too.
  static constexpr size_t kExtendedHeader = 1 << 20;
  // The 'x' bodies before one entry, together (each would be fine, a run of them not).
  static constexpr size_t kLocalPax = 1 << 20;
  // The global ('g') records in force: bytes of the keys and values kept. Only keys an
  // entry can use are kept (others have no effect), and every later entry applies them,
  // so this bounds the work per entry too.
  static constexpr size_t kGlobalPax = 64 << 10;
  // Segments of one sparse file's map (any GNU sparse format).
  static constexpr size_t kSparseSegments = 1 << 18;
  // Logical size of all sparse files of one archive together (holes cost no input).
  static constexpr int64_t kSparseTotal = int64_t{1} << 40;
};

struct Segment {
  int64_t offset;
  int64_t length;
};

struct Entry {
  std::string name;
  char type = '0';  // '0' file, '1' hardlink, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo
  uint32_t mode = 0;
  int64_t uid = 0, gid = 0;
  int64_t size = 0;  // files: the logical size (a sparse file's real size)
  timespec mtime{};
  timespec atime{};
  bool hasAtime = false;
  std::string linkname;
  int64_t devmajor = 0, devminor = 0;
  // In the order first set; a later record for a name replaces its value in place (as
  // the JS parser's Map).
  class Xattrs {
   public:
    void Set(std::string name, std::string value);
    bool empty() const { return items_.empty(); }
    std::vector<std::pair<std::string, std::string>>::const_iterator begin() const { return items_.begin(); }
    std::vector<std::pair<std::string, std::string>>::const_iterator end() const { return items_.end(); }

   private:
    static constexpr size_t kLinear = 8;  // below this many, a scan beats hashing
    std::vector<std::pair<std::string, std::string>> items_;
    std::unordered_map<std::string, size_t> index_;  // name → position, once there are kLinear
  };
  Xattrs xattrs;
  bool sparse = false;
};

// The global PAX records in force, with a JS Map's order (a new key goes last, a replaced
// one keeps its place, a removed one is gone) at O(1) per record, and their size.
class PaxTable {
 public:
  // An empty value removes the key.
  void Set(const std::string& key, std::string value);
  size_t bytes() const { return bytes_; }
  std::list<std::pair<std::string, std::string>>::const_iterator begin() const { return items_.begin(); }
  std::list<std::pair<std::string, std::string>>::const_iterator end() const { return items_.end(); }

 private:
  std::list<std::pair<std::string, std::string>> items_;
  std::unordered_map<std::string, std::list<std::pair<std::string, std::string>>::iterator> index_;
  size_t bytes_ = 0;
};

// Receives the parse, synchronously; a Failure thrown from a callback aborts it.
class EntrySink {
 public:
  virtual ~EntrySink() = default;
  // An entry begins (for files, its content follows through OnData).
  virtual void OnEntry(Entry e) = 0;
  // File content; `position` is where it belongs in the file (sparse holes skipped).
  virtual void OnData(const uint8_t* p, size_t n, int64_t position) = 0;
  // The entry is complete (called for every entry, data or not).
  virtual void OnEnd() = 0;
};

class TarReader {
 public:
  explicit TarReader(EntrySink& sink) : sink_(sink) {}

  // Feeds raw tar bytes. After the end-of-archive marker, input is ignored.
  void Write(const uint8_t* data, size_t len);
  // The input ended: refuses (ERR_INVALID_ARCHIVE) an archive that ended inside an entry.
  void Finish();
  bool finished() const { return state_ == State::kDone; }

 private:
  enum class State { kHeader, kMeta, kSparseExt, kSparseMap, kData, kSkip, kDone };

  [[noreturn]] void Bad(const std::string& what);
  int64_t Num(const uint8_t* b, size_t off, size_t width, const char* field);
  void OnHeader(const uint8_t* b, int64_t at);
  void OnMeta();
  bool ScanPax(bool global);
  int64_t PaxInt(const std::string& key, const std::string& text);
  void BuildEntry(const uint8_t* b, char flag, int64_t headerSize);
  void StartEntry(Entry e, int64_t stored);
  void Skip(int64_t bytes);
  void StartData(int64_t stored);
  void NextSegment();
  void Emit(const uint8_t* p, size_t n);
  void FinishEntry();
  void ReadSparsePairs(const uint8_t* b, size_t off, int count);
  void OldGnuSparse(const uint8_t* b, Entry e, int64_t stored);
  void OnSparseExt(const uint8_t* b);
  struct SparseAttrs;
  bool PaxSparse(Entry& e, const SparseAttrs& attrs, bool hasOffsets, const std::vector<int64_t>& offsets, int64_t stored);
  void CheckSegmentCount(size_t n, const char* format);
  void OnSparseMapBlock(const uint8_t* b);
  void EmitSparseEntry();

  static constexpr size_t kBlock = 512;

  EntrySink& sink_;
  State state_ = State::kHeader;
  int64_t offset_ = 0;
  int64_t header_offset_ = 0;
  uint8_t block_buf_[kBlock];
  size_t block_fill_ = 0;
  bool saw_zero_ = false;
  bool has_long_name_ = false, has_long_link_ = false, has_local_pax_ = false;
  std::string long_name_, long_link_;
  std::vector<std::pair<std::string, std::string>> local_;
  size_t local_bytes_ = 0;  // of the 'x' bodies since the last entry
  PaxTable global_;
  std::string meta_;
  size_t meta_size_ = 0;
  char meta_kind_ = 'x';
  std::string entry_name_;
  bool in_entry_ = false;
  int64_t remaining_ = 0;
  size_t pad_after_ = 0;
  int64_t position_ = 0;
  std::vector<Segment> segments_;
  size_t seg_index_ = 0;
  int64_t seg_left_ = 0;
  int64_t skip_left_ = 0;
  Entry pending_;
  int64_t pending_stored_ = 0;
  int64_t map_bytes_ = 0;
  // The GNU sparse 1.0 map, parsed as its blocks arrive: the line being read, the
  // entry count (-1 until read) and an offset waiting for its length.
  int64_t map_value_ = 0;
  size_t map_digits_ = 0;
  int64_t map_count_ = -1;
  bool map_have_offset_ = false;
  int64_t map_offset_ = 0;
  int64_t sparse_total_ = 0;  // logical bytes of the sparse files so far
};

}  // namespace cairn
