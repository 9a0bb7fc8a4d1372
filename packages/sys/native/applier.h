// The layer applier's rules: what each tar entry becomes on disk (archive's apply.ts
// LayerWriter, ported — path rules of safe-path.ts, whiteouts in delete/overlay/aufs
// mode, replace-never-write-through, ownership, modes, xattrs, nanosecond times,
// directory times last). It is the sink of a TarReader and does its file work through a
// Beneath (every parent directory an fd resolved beneath the layer root).
//
// Threads: one applier is used by one call at a time, on the JS thread or a libuv pool
// thread. Failures are thrown as Failure (untar_errors.h).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <unordered_set>
#include <vector>

#include <memory>

#include "beneath.h"
#include "input_decoder.h"
#include "owners.h"
#include "record_gzip.h"
#include "sha256.h"
#include "split_record.h"
#include "tar_reader.h"

namespace cairn {

enum class Whiteouts { kDelete = 0, kOverlay = 1, kAufs = 2 };

class Applier : public EntrySink {
 public:
  // legacy: use the fallbacks for kernels without fchmodat2 / *xattrat (nofollow.h), for tests.
  Applier(const std::string& root, Whiteouts mode, bool noDevices, bool ownership, uid_t euid, gid_t egid, mode_t umask, bool legacy);
  ~Applier() override { Release(); }

  void Release();
  // Feeds input: raw tar bytes, or compressed ones after Decompress. After the
  // end-of-archive marker, input is ignored (but still hashed and recorded when tapped).
  void Write(const uint8_t* data, size_t len) {
    if (decoder_) decoder_->Decode(data, len, [this](const uint8_t* p, size_t n) { Feed(p, n); });
    else Feed(data, len);
  }
  // The import pass: from now on every input byte is hashed (SHA-256) and the tar-split
  // record is made (split_record.h), with the layer's files held to maxLogical bytes.
  // Call before the first write.
  // gzipRecords: compress the records here (through Node's zlib) when it can; Tap returns
  // whether it does, else the records are handed out raw.
  bool Tap(int64_t maxLogical, std::string what, bool portableHash, bool gzipRecords);
  // Reads `length` bytes of `fd` from `offset` (pread; EOF ends it early) into the applier,
  // to the end of the range even past the end-of-archive marker (a tapped apply hashes
  // and records every byte of its input).
  void ReadRange(int fd, int64_t offset, int64_t length);
  // From now on the input (written or read) is compressed and decoded here
  // (input_decoder.h); what the hash, the record and the tar reader see is its output.
  // Call before the first write.
  void Decompress(std::unique_ptr<InputDecoder> decoder) { decoder_ = std::move(decoder); }
  SplitRecord* record() { return record_.get(); }
  RecordGzip* gzip() { return gzip_.get(); }
  // Compresses the records made so far (the end of each pool-thread job calls it, so the
  // compression runs there and not on the JS thread).
  void FlushRecord();
  Sha256* hash() { return hash_.get(); }
  int64_t tapped_bytes() const { return tapped_bytes_; }
  // The input ended: refuses a truncated compressed stream or archive, then sets directory times.
  void Finish();
  // Closes and removes a half-written file so no partial file keeps a final name.
  void Abort();
  // Reads the input from `fd` (from its start, with pread: the fd's offset is not moved)
  // into one reused buffer until its end or the end-of-archive marker. GNU tar reads its
  // input the same way; a JS stream costs a fresh buffer per read and a hand-off per chunk.
  void ReadFrom(int fd);

  bool finished() const { return reader_.finished(); }
  int64_t bytes() const { return bytes_; }
  const std::string& current() const { return current_name_; }

  // Ownership shift, dropped chowns and recorded devices (owners.h); set before the first write.
  OwnerPolicy& owners() { return owners_; }
  // The opaque-directory xattr in overlay mode: trusted.overlay.opaque, or user.overlay.opaque
  // for an overlay mounted with userxattr (inside a user namespace).
  std::string opaque_xattr_ = "trusted.overlay.opaque";

  void OnEntry(Entry e) override;
  void OnData(const uint8_t* p, size_t n, int64_t position) override;
  void OnEnd() override;

 private:
  struct DirTime {
    std::string rel;
    timespec atime;
    timespec mtime;
  };

  void NormalizePath(const std::string& name, std::string* rel, size_t* baseAt);
  void RemoveTree(int dirfd, const std::string& name, const std::string& rel);
  void Remove(const std::string& parentRel, const std::string& base, const struct stat& st);
  void RemoveIfPresent(const std::string& parentRel, const std::string& base);
  // make(fd of parentRel) creates base there, failing with EEXIST when something is; then
  // what is there goes and make runs once more. Its result (>= 0), or a SysFail of `syscall`.
  template <typename Make>
  int CreateReplacing(const std::string& parentRel, const std::string& base, const char* syscall, Make make);
  // A node this process just made is its own: it needs a chown when the entry names another
  // owner or a setgid parent gave it that directory's group.
  bool NeedsChown(const Entry& e, bool inSetgidDir) const { return ownership_ && (e.uid != euid_ || e.gid != egid_ || inSetgidDir); }
  void SetXattrsAt(const Entry& e, int dirfd, const std::string& name, const std::string& rel);
  int OpenMade(int parentfd, const std::string& base, const std::string& rel, mode_t kind, dev_t dev, struct stat* st);
  void CheckSame(int parentfd, const std::string& base, const std::string& rel, const struct stat& st);
  [[noreturn]] void Replaced(const std::string& rel, const struct stat& st);
  void TimesAt(int fd, int dirfd, const std::string& name, const timespec ts[2], const std::string& rel);
  void Times(const Entry& e, timespec out[2]);
  static const char* TypeName(char t);
  void DirMetadata(const std::string& parentRel, const std::string& base, const Entry& e, bool madeExact = false);
  void Metadata(const std::string& parentRel, const std::string& base, const Entry& e, mode_t kind, dev_t dev);
  void Whiteout(const Entry& e, const std::string& parentRel, const std::string* target);
  void DevicePlaceholder(const std::string& parentRel, const std::string& base, const Entry& e);
  void RemoveNotUnpacked(const std::string& rel);
  void RecreateWhitedOutParents(const std::string& parentRel);
  void MakeOpaque(const std::string& rel);
  void FinishDirectories();

  std::string current_name_;  // before dirs_, which names it in failures
  Beneath dirs_;
  TarReader reader_;
  Whiteouts mode_;
  bool no_devices_, ownership_, legacy_;
  int64_t euid_, egid_;
  mode_t umask_;
  std::unordered_set<std::string> unpacked_;
  // Overlay mode: paths this layer whited out. A directory re-created at one of them must
  // be opaque, or the lower layers' content would show through it (a whiteout removes
  // what is below this layer, never what this layer itself writes).
  std::unordered_set<std::string> whited_out_;
  std::vector<DirTime> dir_times_;
  int64_t bytes_ = 0;
  int file_fd_ = -1;
  std::string file_parent_, file_base_;
  bool file_in_setgid_ = false;
  Entry file_;
  OwnerPolicy owners_;
  // Raw tar bytes to the reader (and, tapped, the hash and the record).
  void Feed(const uint8_t* data, size_t len) {
    if (record_) TappedWrite(data, len);
    else reader_.Write(data, len);
  }
  void TappedWrite(const uint8_t* data, size_t len);
  uint8_t* ReadBuffer();
  std::unique_ptr<SplitRecord> record_;
  std::unique_ptr<Sha256> hash_;
  std::unique_ptr<RecordGzip> gzip_;
  std::unique_ptr<InputDecoder> decoder_;
  int64_t tapped_bytes_ = 0;
  std::unique_ptr<uint8_t[]> read_buf_;
  static constexpr size_t kRead = 256 * 1024;  // stays in L2 between the read and the writes
};

}  // namespace cairn
