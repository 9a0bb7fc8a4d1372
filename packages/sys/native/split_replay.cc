// Byte-exact layer export in the addon: a layer tar rebuilt from its tar-split file (the
// records image's SplitRecorder and the applier's import pass make, gzipped: 'R' raw tar
// bytes, 'Z' a run of raw zero bytes, 'S' a file's size, 'F' a range of a file's content)
// and the layer's files, into
// caller-supplied buffers, one pool-thread call per buffer, hashed as it goes. The JS
// version (one open through N-API, one async read and several stream hops per file) cost
// 4× GNU tar's CPU for the same trees (docs/benchmarks.md, issue 19).
//
// The layer's content is untrusted: every file is reached through its directory, opened
// beneath the root without following links (kept from one file to the next), opened
// itself without following a link and read only if that fd is a regular file of the
// recorded size — five calls per file, as GNU tar makes. Before the first byte, a first
// pass checks every recorded file (a layer that cannot be rebuilt fails whole, not halfway
// through an archive); at the end the digest must be the layer's diff id. The split file is inflated
// as it is read, a window at a time; the check pass keeps what it inflated, up to 8 MiB,
// for the fills to read again, so memory stays bounded whatever the layer's size.
#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cstring>
#include <memory>

#include "common.h"
#include "node_zlib.h"
#include "beneath.h"
#include "background_sha256.h"
#include "owned_job.h"
#include "split_record.h"
#include "tar_fields.h"
#include "untar_errors.h"

namespace cairn {

namespace {

constexpr uint8_t kRaw = 0x52, kSize = 0x53, kFile = 0x46, kZeros = 0x5a;
// Most bytes one 'R' or 'Z' record may stand for (split_record.cc writes at most this).
constexpr uint32_t kRawMax = 1 << 20;
// What a 'Z' record's bytes are read from.
constexpr size_t kZeroBlock = 64 * 1024;
const uint8_t kZeroBytes[kZeroBlock] = {};
// Longest path a record may carry (PATH_MAX is 4096; a longer one means a corrupt split).
constexpr uint32_t kMaxPath = 1 << 16;
constexpr size_t kWindow = 256 * 1024;
// Bytes written before they are handed to the hasher's thread (a hand-off costs a wake-up).
constexpr size_t kHashStep = 128 * 1024;
// Most inflated record bytes the check pass keeps for the fills, so that they do not
// inflate the split a second time (a split inflates at about 2 ms per MB; a layer of
// 30,000 files makes about 8 MB of records). A larger split is inflated twice instead.
constexpr size_t kKeepMax = 8 << 20;

Failure Coded(const char* code, std::string message, std::string subject = "") {
  Failure f;
  f.code = code;
  f.message = std::move(message);
  f.subject = std::move(subject);
  return f;
}

Failure Corrupt(const std::string& why) {
  return Coded("ERR_INVALID_ARCHIVE", "the tar-split record of this layer is corrupt (" + why + "); re-import the image");
}

Failure Changed(const std::string& path, const std::string& what) {
  return Coded("ERR_INVALID_ARCHIVE", "cannot rebuild the layer tar: " + Printable(path) + " " + what + " since import; the layer was modified", path);
}

const char* TypeName(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFDIR: return "a directory";
    case S_IFLNK: return "a symlink";
    case S_IFBLK: return "a block device";
    case S_IFCHR: return "a character device";
    case S_IFIFO: return "a fifo";
    case S_IFSOCK: return "a socket";
    default: return "an unknown file type";
  }
}

Failure Refused(const std::string& path, const std::string& what) {
  return Coded("ERR_UNSAFE_ARCHIVE", "cannot rebuild the layer tar: " + Printable(path) + " is " + what +
                                         " in the layer now, not the regular file recorded at import; refusing to read it", path);
}

// The path as tarsplit.ts opened it: posix.normalize('/' + path) without the leading '/'
// ('..' resolved by name, never above the root).
std::string Normalized(const std::string& path) {
  return SplitRecord::NormalizeAbsolute("/" + path).substr(1);
}

// The records of a split file, inflated from `fd` (pread from offset 0) a window at a time,
// or read from the bytes an earlier reader kept.
class Records {
 public:
  struct Rec {
    uint8_t kind = 0;
    std::string path;
    double a = 0, b = 0;  // S: size; F: position, length
    uint32_t rawLen = 0;  // R (and Z, which Next reports as R): raw bytes, read with Raw
  };

  explicit Records(int fd) : fd_(fd), in_(new uint8_t[kWindow]) {
    const NodeInflate& z = NodeZlibInflate();
    if (!z.ok) throw Coded("ERR_BACKEND_FAILED", "rebuilding a layer tar needs Node's zlib, which was not found in this process");
    std::memset(&s_, 0, sizeof s_);
    if (z.init2(&s_, 15 + 16, ZLIB_VERSION, static_cast<int>(sizeof(z_stream))) != Z_OK)
      throw Coded("ERR_BACKEND_FAILED", "zlib could not set up a decoder for the tar-split record");
    inflating_ = true;
  }
  // The records in `inflated`, the whole split as TakeKept handed it over.
  explicit Records(std::string inflated) : fd_(-1), member_ended_(true), ended_(true), win_(std::move(inflated)) {}
  ~Records() {
    if (inflating_) NodeZlibInflate().end(&s_);
  }
  Records(const Records&) = delete;
  Records& operator=(const Records&) = delete;

  // Keeps every inflated byte, for TakeKept, until they pass `max` (then the window is
  // recycled as usual and nothing is kept).
  void KeepUpTo(size_t max) { keep_max_ = max; }

  // The whole inflated split, once read to its end within KeepUpTo's limit.
  bool TakeKept(std::string* out) {
    if (!ended_ || keep_max_ == 0) return false;
    *out = std::move(win_);
    win_.clear();
    pos_ = 0;
    return true;
  }

  // The next record (raw bytes are then taken with Raw), or false at the end.
  bool Next(Rec& r) {
    if (raw_left_ > 0) throw Corrupt("raw bytes left unread");  // a caller bug, never data
    if (!Need(1)) return false;
    if (!Need(5)) throw Corrupt("it ends inside a record");
    const uint8_t* p = Data();
    r.kind = p[0];
    uint32_t len = (uint32_t(p[1]) << 24) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 8) | p[4];
    if (r.kind == kRaw || r.kind == kZeros) {
      if (r.kind == kZeros && len > kRawMax) throw Corrupt("a run of " + std::to_string(len) + " zero bytes");
      pos_ += 5;
      zeros_ = r.kind == kZeros;
      r.kind = kRaw;
      r.rawLen = len;
      raw_left_ = len;
      return true;
    }
    if ((r.kind != kFile && r.kind != kSize) || len > kMaxPath) throw Corrupt("record kind " + std::to_string(r.kind) + " of length " + std::to_string(len));
    size_t need = 5 + len + (r.kind == kFile ? 16 : 8);
    if (!Need(need)) throw Corrupt("it ends inside a record");
    p = Data();
    r.path.assign(reinterpret_cast<const char*>(p + 5), len);
    r.a = Double(p + 5 + len);
    r.b = r.kind == kFile ? Double(p + 5 + len + 8) : 0;
    pos_ += need;
    return true;
  }

  // Up to `max` of the current raw record's bytes, in place (valid until the next call).
  size_t Raw(const uint8_t** out, size_t max) {
    if (raw_left_ == 0) return 0;
    if (zeros_) {
      size_t n = std::min<size_t>({max, raw_left_, kZeroBlock});
      *out = kZeroBytes;
      raw_left_ -= n;
      return n;
    }
    if (!Need(1)) throw Corrupt("it ends inside a record");
    size_t n = std::min<size_t>({max, raw_left_, win_.size() - pos_});
    *out = Data();
    pos_ += n;
    raw_left_ -= n;
    return n;
  }

  uint32_t raw_left() const { return raw_left_; }

 private:
  const uint8_t* Data() const { return reinterpret_cast<const uint8_t*>(win_.data()) + pos_; }

  static double Double(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    double d;
    std::memcpy(&d, &v, sizeof d);
    return d;
  }

  // At least n bytes in the window from pos_ (false when the stream ended first).
  bool Need(size_t n) {
    while (win_.size() - pos_ < n) {
      if (ended_) return false;
      if (keep_max_ == 0) {
        win_.erase(0, pos_);
        pos_ = 0;
      }
      Inflate();
      if (win_.size() > keep_max_) keep_max_ = 0;
    }
    return true;
  }

  // Inflates up to a window's worth more onto win_.
  void Inflate() {
    const NodeInflate& z = NodeZlibInflate();
    size_t at = win_.size();
    win_.resize(at + kWindow);
    s_.next_out = reinterpret_cast<Bytef*>(&win_[at]);
    s_.avail_out = static_cast<uInt>(kWindow);
    while (s_.avail_out > 0 && !ended_) {
      if (s_.avail_in == 0) {
        ssize_t n;
        do n = pread(fd_, in_.get(), kWindow, offset_);
        while (n < 0 && errno == EINTR);
        if (n < 0) throw Coded("ERR_BACKEND_FAILED", std::string("reading the tar-split record failed: ") + strerror(errno));
        if (n == 0) {
          if (!member_ended_) throw Corrupt("unexpected end of file");
          ended_ = true;
          break;
        }
        offset_ += n;
        s_.next_in = in_.get();
        s_.avail_in = static_cast<uInt>(n);
      }
      if (member_ended_) {
        if (z.reset(&s_) != Z_OK) throw Corrupt("zlib could not start the next member");
        member_ended_ = false;
      }
      int rc = z.inflate(&s_, Z_NO_FLUSH);
      if (rc == Z_STREAM_END) member_ended_ = true;
      else if (rc != Z_OK && !(rc == Z_BUF_ERROR && s_.avail_in == 0)) throw Corrupt(s_.msg != nullptr ? s_.msg : "zlib error " + std::to_string(rc));
    }
    win_.resize(at + kWindow - s_.avail_out);
  }

  int fd_;
  z_stream s_;
  bool inflating_ = false;
  std::unique_ptr<uint8_t[]> in_;
  int64_t offset_ = 0;
  bool member_ended_ = false, ended_ = false;
  size_t keep_max_ = 0;
  std::string win_;
  size_t pos_ = 0;
  uint32_t raw_left_ = 0;
  bool zeros_ = false;  // the current raw record is a 'Z'
};

struct Opened {
  std::string path;
  int fd = -1;
  int64_t size = 0;
};

// The directory of the last file opened, kept for the next: a layer's tar lists a
// directory's files together, so most files cost no resolution of their parent.
class ParentDir {
 public:
  explicit ParentDir(int root) : root_(root) {}
  ~ParentDir() { Forget(); }
  ParentDir(const ParentDir&) = delete;
  ParentDir& operator=(const ParentDir&) = delete;

  // An O_PATH fd of directory `dir` ("" is the root) resolved beneath the root without
  // following a link (beneath.h), or -1 with errno set.
  int Get(const std::string& dir) {
    if (dir.empty()) return root_;
    if (fd_ >= 0 && dir == dir_) return fd_;
    Forget();
    fd_ = OpenBeneath(root_, dir);
    if (fd_ >= 0) dir_ = dir;
    return fd_;
  }

 private:
  void Forget() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  int root_;
  int fd_ = -1;
  std::string dir_;
};

// Opens a recorded file: a regular file beneath the root, of the recorded size when known,
// long enough for a segment ending at `end`. Its directory comes from `dirs`; the file
// itself is opened O_NOFOLLOW|O_NONBLOCK|O_NOCTTY and fstat'ed, and read only if that fd is
// a regular file. With checkOnly, it is only fstatat'ed (no fd), which is how Verify finds
// a link, device or fifo before the first byte without opening it. (Opening by name is
// what openfile.cc's fallback without file handles does too: only a process that may
// write the layer's directory could swap a device in between Verify and the open, and
// then its open is called but it is never read.)
Opened OpenRecorded(ParentDir& dirs, const std::string& path, const int64_t* expected, int64_t end, bool checkOnly = false) {
  const std::string rel = Normalized(path);
  const size_t slash = rel.rfind('/');
  const std::string base = slash == std::string::npos ? rel : rel.substr(slash + 1);
  int err = 0;
  const char* call = nullptr;
  struct stat st {};
  int dir = dirs.Get(slash == std::string::npos ? std::string() : rel.substr(0, slash));
  int fileFd = -1;
  if (dir < 0) {
    err = errno;
    call = "openat2";
  } else if (checkOnly) {
    if (fstatat(dir, base.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      err = errno;
      call = "fstatat";
    }
  } else {
    do fileFd = openat(dir, base.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_NOFOLLOW | O_CLOEXEC);
    while (fileFd < 0 && errno == EINTR);
    if (fileFd < 0) {
      err = errno;
      call = "open";
    } else if (fstat(fileFd, &st) != 0) {
      err = errno;
      call = "fstat";
    }
  }
  Fd file(fileFd);
  if (err == ELOOP) throw Refused(path, "a symlink (or reached through one)");
  if (err == EXDEV) throw Refused(path, "outside the layer");
  if (err == ENOENT || err == ENOTDIR) throw Changed(path, "is missing (no longer a file, or a parent is no longer a directory)");
  if (err != 0) {
    Failure e;
    e.sys.Set(err, call);
    e.subject = path;
    throw e;
  }
  if (!S_ISREG(st.st_mode)) throw Refused(path, TypeName(st.st_mode));
  int64_t size = st.st_size;
  if (expected != nullptr && size != *expected)
    throw Changed(path, "changed size (" + std::to_string(size) + " bytes, " + std::to_string(*expected) + " at import)");
  if (end > size) throw Changed(path, "is shorter (" + std::to_string(size) + " bytes) than a recorded segment ending at " + std::to_string(end));
  return {path, file.release(), size};
}

int64_t SegmentEnd(const Records::Rec& r) {
  double end = r.a + r.b;
  if (!(r.a >= 0 && r.b >= 0 && end <= static_cast<double>(kMaxSafeInteger)))
    throw Corrupt("segment " + std::to_string(r.a) + "+" + std::to_string(r.b) + " of " + Printable(r.path));
  return static_cast<int64_t>(end);
}

// An 'S' record's size, checked before it becomes an integer (a NaN or a value out of
// int64_t's range would be undefined behaviour to convert).
int64_t RecordedSize(const Records::Rec& r) {
  if (!(r.a >= 0 && r.a <= static_cast<double>(kMaxSafeInteger))) throw Corrupt("size " + std::to_string(r.a) + " of " + Printable(r.path));
  return static_cast<int64_t>(r.a);
}

// The replay: Verify once, then Fill until it returns 0. `expected` is the tar's size as
// recorded at import (-1: unknown): a split that would rebuild more or fewer bytes is
// corrupt, found by Verify before the first byte and never exceeded by Fill.
class Replay {
 public:
  Replay(int root, int split, int64_t expected) : split_(split), expected_(expected), dirs_(root) {}
  ~Replay() {
    if (file_.fd >= 0) close(file_.fd);
    // A lagging hash (Fill's `lag`) is dropped: ~BackgroundSha256 waits only for the range
    // it is reading, and the caller keeps that buffer until it closes the replay.
  }

  // Every recorded file checked (resolved and fstat'ed one at a time, nothing read), before
  // any output. Once is enough; Fill needs it done.
  void Verify() {
    if (out_) return;
    Records recs(split_);
    recs.KeepUpTo(kKeepMax);
    Records::Rec r;
    bool haveSize = false;
    std::string sizePath;
    int64_t size = 0;
    std::string runPath;
    int64_t runEnd = -1;
    auto check = [&] {
      if (runEnd >= 0) OpenRecorded(dirs_, runPath, haveSize && sizePath == runPath ? &size : nullptr, runEnd, /*checkOnly=*/true);
      runEnd = -1;
    };
    int64_t total = 0;
    // Summed as they come, so that no run of records, however long, overflows the total:
    // past the recorded size (or 2^53 when it is unknown) the split is refused at once.
    const int64_t most = expected_ >= 0 ? expected_ : kMaxSafeInteger;
    auto count = [&](int64_t n) {
      total += n;
      if (total > most) throw Corrupt("it rebuilds more than the " + std::to_string(most) + " bytes " + (expected_ >= 0 ? "recorded at import" : "a layer may hold"));
    };
    while (recs.Next(r)) {
      if (r.kind == kRaw) {
        count(r.rawLen);
        const uint8_t* p;
        while (recs.Raw(&p, SIZE_MAX) > 0) {
        }
      } else if (r.kind == kSize) {
        check();
        haveSize = true;
        sizePath = r.path;
        size = RecordedSize(r);
      } else {
        int64_t end = SegmentEnd(r);
        if (haveSize && sizePath == r.path && end > size)
          throw Corrupt("segment " + std::to_string(static_cast<int64_t>(r.a)) + "+" + std::to_string(static_cast<int64_t>(r.b)) + " of " + Printable(r.path) + " lies past its size " + std::to_string(size));
        if (runEnd >= 0 && runPath != r.path) check();
        if (runEnd < 0) runPath = r.path;
        runEnd = std::max(runEnd, end);
        count(static_cast<int64_t>(r.b));
      }
    }
    check();
    if (expected_ >= 0 && total != expected_) throw WrongSize(total);
    std::string kept;
    out_ = recs.TakeKept(&kept) ? std::make_unique<Records>(std::move(kept)) : std::make_unique<Records>(split_);
  }

  // Writes the next bytes of the tar into buf; 0 once it is complete (and its digest checked).
  // What it wrote is hashed on the hasher's thread, a step behind the writing, and all of it
  // before Fill returns (or throws: the caller may free buf then), unless `lag`: then the
  // hash of this fill's bytes may go on after it returns, until the next Fill (or the
  // replay's end) waits for it, so that a slow hasher holds up no fill but the next. With
  // `lag` the caller neither changes nor frees buf until it called Fill again or closed
  // the replay (writeExportTo's own buffers, only written to a file meanwhile).
  size_t Fill(uint8_t* buf, size_t room, bool lag) {
    Verify();
    hash_.Wait();
    size_t at = 0, handed = 0;
    struct WaitForHash {
      BackgroundSha256& h;
      bool skip = false;
      ~WaitForHash() {
        if (!skip) h.Wait();
      }
    } waitForHash{hash_};
    auto handOver = [&](bool rest) {
      if (at - handed >= kHashStep || (rest && at > handed)) {
        hash_.Submit(buf + handed, at - handed);
        handed = at;
      }
    };
    while (at < room && !done_) {
      handOver(false);
      if (out_->raw_left() > 0) {
        const uint8_t* p;
        size_t n = out_->Raw(&p, room - at);
        std::memcpy(buf + at, p, n);
        at += n;
        continue;
      }
      if (file_left_ > 0) {
        // At most a hash step per read, so the hasher can follow close behind.
        size_t want = static_cast<size_t>(std::min<int64_t>({file_left_, static_cast<int64_t>(room - at), static_cast<int64_t>(kHashStep)}));
        ssize_t n = pread(file_.fd, buf + at, want, file_pos_);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          Failure e;
          e.sys.Set(errno, "read");
          e.subject = file_.path;
          throw e;
        }
        if (n == 0) throw Changed(file_.path, "became shorter");
        at += static_cast<size_t>(n);
        file_pos_ += n;
        file_left_ -= n;
        continue;
      }
      Records::Rec r;
      if (!out_->Next(r)) {
        done_ = true;
        break;
      }
      if (r.kind == kSize) {
        have_size_ = true;
        size_path_ = r.path;
        size_ = RecordedSize(r);
      } else if (r.kind == kFile) {
        int64_t end = SegmentEnd(r);
        if (file_.fd < 0 || file_.path != r.path) {
          if (file_.fd >= 0) close(file_.fd);
          file_ = Opened{};
          file_ = OpenRecorded(dirs_, r.path, have_size_ && size_path_ == r.path ? &size_ : nullptr, end);
        } else if (end > file_.size) {
          throw Changed(r.path, "is shorter (" + std::to_string(file_.size) + " bytes) than a recorded segment ending at " + std::to_string(end));
        }
        file_pos_ = static_cast<int64_t>(r.a);
        file_left_ = static_cast<int64_t>(r.b);
      }
    }
    handOver(true);
    bytes_ += static_cast<int64_t>(at);
    if (expected_ >= 0 && (bytes_ > expected_ || (done_ && bytes_ != expected_))) throw WrongSize(bytes_);
    waitForHash.skip = lag && !done_;
    if (done_ && file_.fd >= 0) {
      close(file_.fd);
      file_.fd = -1;
    }
    return at;
  }

  bool done() const { return done_; }
  std::string Digest() { return hash_.HexDigest(); }
  int64_t bytes() const { return bytes_; }

 private:
  Failure WrongSize(int64_t bytes) const {
    return Corrupt("it rebuilds " + std::to_string(bytes) + " bytes, not the " + std::to_string(expected_) + " recorded at import");
  }

  int split_;
  int64_t expected_;
  ParentDir dirs_;
  std::unique_ptr<Records> out_;  // the records Fill reads, set once Verify passed
  BackgroundSha256 hash_;
  Opened file_;
  int64_t file_pos_ = 0, file_left_ = 0;
  bool have_size_ = false;
  std::string size_path_;
  int64_t size_ = 0;
  bool done_ = false;
  int64_t bytes_ = 0;
};

class SplitReplay : public Napi::ObjectWrap<SplitReplay> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SplitReplay", {
      InstanceMethod<&SplitReplay::Verify>("verify"),
      InstanceMethod<&SplitReplay::Fill>("fill"),
      InstanceMethod<&SplitReplay::Digest>("digest"),
      InstanceMethod<&SplitReplay::Close>("close"),
    });
  }

  // new SplitReplay(rootFd, splitFd, expectedBytes = -1): both fds stay the caller's, open until close().
  explicit SplitReplay(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SplitReplay>(info) {
    int root = static_cast<int>(ArgInt(info, 0, "rootFd"));
    int split = static_cast<int>(ArgInt(info, 1, "splitFd"));
    int64_t expected = info.Length() > 2 && !info[2].IsUndefined() ? ArgInt(info, 2, "expectedBytes") : -1;
    try {
      replay_ = std::make_unique<Replay>(root, split, expected);
    } catch (const Failure& f) {
      throw FailureToJs(info.Env(), f);
    }
  }

 private:
  void Usable(Napi::Env env) {
    if (!replay_) throw Napi::Error::New(env, "SplitReplay is closed");
    if (busy_) throw Napi::Error::New(env, "SplitReplay is busy: await the previous fill first");
  }

  // verify() → Promise<void>: on the pool, every recorded file checked (what the first
  // fill does otherwise), so that a caller can have it done ahead of its first fill.
  Napi::Value Verify(const Napi::CallbackInfo& info) {
    Usable(info.Env());
    Replay* r = replay_.get();
    return OwnedJob<SplitReplay>::Queue(info.Env(), "cairn.splitReplay", this, info.Env().Undefined(), [r]() -> std::optional<double> {
      r->Verify();
      return std::nullopt;
    });
  }

  // fill(buffer, lagHash = false) → Promise<bytes written>: on the pool; 0 when the tar is
  // complete. The first call checks every recorded file first, unless verify() did. With
  // lagHash, see Replay::Fill's `lag`.
  Napi::Value Fill(const Napi::CallbackInfo& info) {
    Usable(info.Env());
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw Napi::TypeError::New(info.Env(), "fill needs a Buffer or Uint8Array");
    Napi::Uint8Array buf = info[0].As<Napi::Uint8Array>();
    Replay* r = replay_.get();
    uint8_t* data = buf.Data();
    size_t room = buf.ByteLength();
    bool lag = info.Length() > 1 && info[1].ToBoolean();
    return OwnedJob<SplitReplay>::Queue(info.Env(), "cairn.splitReplay", this, buf, [r, data, room, lag]() -> std::optional<double> {
      return static_cast<double>(r->Fill(data, room, lag));
    });
  }

  // digest() → { digest: hex sha256 of every byte filled, bytes, done }
  Napi::Value Digest(const Napi::CallbackInfo& info) {
    Usable(info.Env());
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("done", Napi::Boolean::New(info.Env(), replay_->done()));
    o.Set("bytes", Napi::Number::New(info.Env(), static_cast<double>(replay_->bytes())));
    o.Set("digest", Napi::String::New(info.Env(), replay_->done() ? replay_->Digest() : ""));
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (replay_ && !busy_) replay_.reset();
    return info.Env().Undefined();
  }

  std::unique_ptr<Replay> replay_;

 public:
  bool busy_ = false;  // a job is running (OwnedJob)
};

}  // namespace

void InitSplitReplay(Napi::Env env, Napi::Object exports) {
  exports.Set("SplitReplay", SplitReplay::Define(env));
}

}  // namespace cairn
