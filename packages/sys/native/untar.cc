// Layer apply in the addon: the tar parse and every file operation of core's applyLayer
// in one native pass over raw tar bytes, so that a 20,000-file layer costs no JS object,
// string or N-API crossing per entry (docs/benchmarks.md measured those at more than
// half of apply's CPU). The rules are core's (packages/archive/src/apply.ts,
// tar-parser.ts, safe-path.ts), and the same test suites run against this path and the
// pure-JS one; keep the two in step.
//
// Safety: every parent directory is opened beneath the layer root with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) (an O_NOFOLLOW walk where openat2 is
// missing), and every operation is relative to that fd with the final component never
// followed. A symlink in an entry's path is refused (ERR_UNSAFE_ARCHIVE) when the walk
// meets it, and cannot be followed even if the tree changed since.
//
// Threads: one applier is used by one call at a time (JS awaits each), on the JS thread
// (write) or a libuv pool thread (writeAsync). Failures are C++ exceptions inside and
// become JS errors at the boundary: {cairnCode, message, subject} for archive faults,
// Node-style errno errors (code, syscall, path, entry) for the file work.
#include "common.h"
#include "owners.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <cstring>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace cairn {

namespace {

constexpr size_t kBlock = 512;
constexpr size_t kMaxMeta = 16 * 1024 * 1024;  // PAX bodies, long names, sparse maps
constexpr size_t kPathMax = 4096;                // with its NUL
constexpr size_t kNameMax = 255;
constexpr size_t kMaxCachedDirs = 64;
constexpr int64_t kMaxSafe = 9007199254740991;   // what JS's parser accepts (2^53 - 1)

enum class Whiteouts { kDelete = 0, kOverlay = 1, kAufs = 2 };

// An archive fault (code set) or a failed syscall (sys.err set), with the entry it hit.
struct Failure {
  std::string code;
  std::string message;
  std::string subject;
  SysError sys;
};

std::string Printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

[[noreturn]] void Invalid(const std::string& subject, const std::string& what) {
  Failure f;
  f.code = "ERR_INVALID_ARCHIVE";
  f.message = "Invalid layer archive: " + what + ". The tar is corrupt or incomplete; fetch or export it again.";
  f.subject = subject;
  throw f;
}

[[noreturn]] void InvalidName(const std::string& name, const std::string& why) {
  std::string shown = name.size() > 120 ? Printable(name.substr(0, 60)) + "…" + Printable(name.substr(name.size() - 40)) : Printable(name);
  Failure f;
  f.code = "ERR_INVALID_ARCHIVE";
  f.message = "Archive entry \"" + shown + "\" " + why + "; no Linux filesystem can hold it. The layer was not applied.";
  f.subject = name;
  throw f;
}

[[noreturn]] void InvalidEntry(const std::string& name, const std::string& what) {
  Failure f;
  f.code = "ERR_INVALID_ARCHIVE";
  f.message = "Invalid layer archive: " + what + ".";
  f.subject = name;
  throw f;
}

[[noreturn]] void Unsafe(const std::string& name, const std::string& why) {
  Failure f;
  f.code = "ERR_UNSAFE_ARCHIVE";
  f.message = "Refusing archive entry \"" + Printable(name) + "\": " + why +
              ". The layer would reach outside its directory; it was not applied.";
  f.subject = name;
  throw f;
}

// ---- tar fields ----

// Octal ASCII (space/NUL padded) or GNU base-256; false when malformed or beyond 2^53.
bool ReadNumber(const uint8_t* b, size_t off, size_t width, int64_t* out) {
  uint8_t first = b[off];
  if (first & 0x80) {
    __int128 v = 0;
    for (size_t i = 0; i < width; i++) {
      uint8_t byte = (i == 0 && first != 0xff) ? (first & 0x7f) : b[off + i];
      v = (v << 8) | byte;
    }
    if (first == 0xff) v -= static_cast<__int128>(1) << (8 * width);
    if (v > kMaxSafe || v < -kMaxSafe) return false;
    *out = static_cast<int64_t>(v);
    return true;
  }
  size_t i = off, end = off + width;
  while (i < end && (b[i] == 0x20 || b[i] == 0)) {
    if (b[i] == 0) {
      *out = 0;
      return true;
    }
    i++;
  }
  int64_t v = 0;
  for (; i < end; i++) {
    uint8_t c = b[i];
    if (c >= '0' && c <= '7') {
      v = v * 8 + (c - '0');
    } else if (c == 0x20 || c == 0) {
      break;
    } else {
      return false;
    }
  }
  for (; i < end; i++)
    if (b[i] != 0x20 && b[i] != 0) return false;
  *out = v;
  return true;
}

std::string ReadString(const uint8_t* b, size_t off, size_t width) {
  size_t end = off;
  while (end < off + width && b[end] != 0) end++;
  return std::string(reinterpret_cast<const char*>(b + off), end - off);
}

bool IsZeroBlock(const uint8_t* b) {
  for (size_t i = 0; i < kBlock; i++)
    if (b[i]) return false;
  return true;
}

// The unsigned byte sum with the checksum field read as spaces, or the signed sum some
// historic tars wrote. The unsigned pass has no branch (it vectorizes): this runs twice
// per entry of a GNU pax-format tar.
bool ChecksumMatches(const uint8_t* b, int64_t stored) {
  uint32_t u = 0;
  for (size_t i = 0; i < kBlock; i++) u += b[i];
  for (size_t i = 148; i < 156; i++) u -= b[i];
  u += 8 * 0x20;
  if (stored == static_cast<int64_t>(u)) return true;
  int64_t s = 8 * 0x20;
  for (size_t i = 0; i < kBlock; i++) {
    if (i >= 148 && i < 156) continue;
    s += static_cast<int8_t>(b[i]);
  }
  return stored == s;
}

size_t Padding(int64_t size) {
  size_t r = static_cast<size_t>(size % kBlock);
  return r == 0 ? 0 : kBlock - r;
}

// "1700000000.123456789", "-1.5": seconds and nanoseconds (floored, as NsToTimespec).
bool ParsePaxTime(const std::string& t, timespec* out) {
  size_t i = 0, n = t.size();
  bool neg = n > 0 && t[0] == '-';
  if (neg) i = 1;
  size_t secStart = i;
  int64_t sec = 0;
  for (; i < n && t[i] >= '0' && t[i] <= '9'; i++) {
    if (sec < 922337203685) sec = sec * 10 + (t[i] - '0');  // far-future times saturate
  }
  if (i == secStart) return false;
  int64_t frac = 0;
  int digits = 0;
  if (i < n && t[i] == '.') {
    for (i++; i < n; i++) {
      if (t[i] < '0' || t[i] > '9') return false;
      if (digits < 9) {
        frac = frac * 10 + (t[i] - '0');
        digits++;
      }
    }
  }
  if (i != n) return false;
  for (; digits < 9; digits++) frac *= 10;
  if (neg) {
    sec = -sec;
    if (frac > 0) {
      sec -= 1;
      frac = 1000000000 - frac;
    }
  }
  out->tv_sec = static_cast<time_t>(sec);
  out->tv_nsec = static_cast<long>(frac);
  return true;
}

// Decimal digits only (what the JS parser's paxInt accepts), up to 2^53 - 1.
bool ParseDecimal(const std::string& t, int64_t* out) {
  if (t.empty()) return false;
  int64_t v = 0;
  for (char c : t) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
    if (v > kMaxSafe) return false;
  }
  *out = v;
  return true;
}

// Buffer.from(text, 'base64') semantics: both alphabets, anything else skipped, '=' ends.
std::string Base64Decode(const std::string& in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else if (c == '=') break;
    else continue;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// decodeURIComponent, keeping the text as it is when a %-escape is malformed.
std::string UriDecode(const std::string& in) {
  std::string out;
  for (size_t i = 0; i < in.size(); i++) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return in;
    int hi = HexDigit(in[i + 1]);
    int lo = HexDigit(in[i + 2]);
    if (hi < 0 || lo < 0) return in;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

bool StartsWith(const std::string& s, const char* prefix) {
  return s.compare(0, std::strlen(prefix), prefix) == 0;
}

// ---- entries ----

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
  std::vector<std::pair<std::string, std::string>> xattrs;
  bool sparse = false;

  void SetXattr(std::string name, std::string value) {
    for (auto& [k, v] : xattrs) {
      if (k == name) {
        v = std::move(value);
        return;
      }
    }
    xattrs.emplace_back(std::move(name), std::move(value));
  }
};

bool Later(const timespec& a, const timespec& b) {
  return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec > b.tv_nsec);
}

// ---- the applier ----

class Applier {
 public:
  Applier(const std::string& root, Whiteouts mode, bool noDevices, bool ownership, uid_t euid, gid_t egid, mode_t umask)
      : root_path_(root), mode_(mode), no_devices_(noDevices), ownership_(ownership), euid_(euid), egid_(egid), umask_(umask) {
    root_ = open(root.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root_ < 0) SysFail(errno, "open", "");
    struct stat st;
    if (fstat(root_, &st) != 0) SysFail(errno, "fstat", "");
    known_.emplace("", (st.st_mode & S_ISGID) != 0);
  }

  ~Applier() { Release(); }

  // Ownership shift, dropped chowns and recorded devices (owners.h); set before the first write.
  OwnerPolicy& owners() { return owners_; }
  // The opaque-directory xattr in overlay mode: trusted.overlay.opaque, or user.overlay.opaque
  // for an overlay mounted with userxattr (inside a user namespace).
  std::string opaque_xattr_ = "trusted.overlay.opaque";

  void Release() {
    ForgetFds();
    if (file_fd_ >= 0) close(file_fd_);
    file_fd_ = -1;
    if (root_ >= 0) close(root_);
    root_ = -1;
  }

  // Feeds raw tar bytes. After the end-of-archive marker, input is ignored.
  void Write(const uint8_t* data, size_t len) {
    size_t pos = 0;
    while (pos < len) {
      switch (state_) {
        case State::kHeader:
        case State::kSparseExt:
        case State::kSparseMap: {
          const uint8_t* block;
          if (block_fill_ == 0 && len - pos >= kBlock) {
            block = data + pos;
            pos += kBlock;
          } else {
            size_t n = std::min(kBlock - block_fill_, len - pos);
            std::memcpy(block_buf_ + block_fill_, data + pos, n);
            block_fill_ += n;
            pos += n;
            if (block_fill_ < kBlock) return;
            block_fill_ = 0;
            block = block_buf_;
          }
          int64_t at = offset_;
          offset_ += kBlock;
          if (state_ == State::kHeader) OnHeader(block, at);
          else if (state_ == State::kSparseExt) OnSparseExt(block);
          else OnSparseMapBlock(block);
          break;
        }
        case State::kMeta: {
          size_t n = std::min(meta_size_ - meta_.size(), len - pos);
          meta_.append(reinterpret_cast<const char*>(data + pos), n);
          pos += n;
          offset_ += static_cast<int64_t>(n);
          if (meta_.size() == meta_size_) OnMeta();
          break;
        }
        case State::kData: {
          size_t n = static_cast<size_t>(std::min<int64_t>(remaining_, static_cast<int64_t>(len - pos)));
          Emit(data + pos, n);
          pos += n;
          offset_ += static_cast<int64_t>(n);
          remaining_ -= static_cast<int64_t>(n);
          if (remaining_ == 0) FinishEntry();
          break;
        }
        case State::kSkip: {
          size_t n = static_cast<size_t>(std::min<int64_t>(skip_left_, static_cast<int64_t>(len - pos)));
          pos += n;
          offset_ += static_cast<int64_t>(n);
          skip_left_ -= static_cast<int64_t>(n);
          if (skip_left_ == 0) state_ = State::kHeader;
          break;
        }
        case State::kDone:
          return;
      }
    }
  }

  // The input ended: refuses a truncated archive, then sets directory times.
  void Finish() {
    if (state_ != State::kDone) {
      bool clean = state_ == State::kHeader && block_fill_ == 0 && !has_long_name_ && !has_long_link_ && local_.empty() && !has_local_pax_;
      if (!clean) {
        std::string where = in_entry_ || state_ != State::kHeader ? " inside entry \"" + entry_name_ + "\"" : "";
        Invalid(entry_name_.empty() ? "offset " + std::to_string(header_offset_) : entry_name_,
                "the archive is truncated: input ended" + where + " at byte " + std::to_string(offset_ + static_cast<int64_t>(block_fill_)));
      }
      state_ = State::kDone;
    }
    FinishDirectories();
  }

  // Closes and removes a half-written file so no partial file keeps a final name.
  void Abort() {
    if (file_fd_ < 0) return;
    close(file_fd_);
    file_fd_ = -1;
    int pfd = OpenDirOrNeg(file_parent_);
    if (pfd >= 0) unlinkat(pfd, file_base_.c_str(), 0);
  }

  // Reads the input from `fd` (from its start, with pread: the fd's offset is not moved)
  // into one reused buffer until its end or the end-of-archive marker. GNU tar reads its
  // input the same way; a JS stream costs a fresh buffer per read and a hand-off per chunk.
  void ReadFrom(int fd) {
    constexpr size_t kRead = 256 * 1024;  // stays in L2 between the read and the writes
    std::unique_ptr<uint8_t[]> buf(new uint8_t[kRead]);
    off_t at = 0;
    while (state_ != State::kDone) {
      ssize_t n = pread(fd, buf.get(), kRead, at);
      if (n < 0) {
        if (errno == EINTR) continue;
        Failure f;
        f.sys.Set(errno, "read");
        f.subject = current_name_;
        throw f;
      }
      if (n == 0) return;
      at += n;
      Write(buf.get(), static_cast<size_t>(n));
    }
  }

  bool finished() const { return state_ == State::kDone; }
  int64_t bytes() const { return bytes_; }
  const std::string& current() const { return current_name_; }

 private:
  enum class State { kHeader, kMeta, kSparseExt, kSparseMap, kData, kSkip, kDone };

  // ---- parser (tar-parser.ts) ----

  [[noreturn]] void Bad(const std::string& what) {
    Invalid(entry_name_.empty() ? "offset " + std::to_string(header_offset_) : entry_name_, what);
  }

  int64_t Num(const uint8_t* b, size_t off, size_t width, const char* field) {
    int64_t v;
    if (!ReadNumber(b, off, width, &v)) Bad(std::string("malformed ") + field + " field in the header at byte " + std::to_string(header_offset_));
    return v;
  }

  void OnHeader(const uint8_t* b, int64_t at) {
    header_offset_ = at;
    if (IsZeroBlock(b)) {
      if (saw_zero_) {
        state_ = State::kDone;
        if (has_long_name_ || has_long_link_ || has_local_pax_) Bad("end of archive at byte " + std::to_string(at) + " right after an extended header");
      }
      saw_zero_ = true;
      return;
    }
    if (saw_zero_) Bad("a zero block at byte " + std::to_string(at - static_cast<int64_t>(kBlock)) + " is followed by more entries");
    entry_name_ = ReadString(b, 0, 100);
    int64_t stored;
    if (!ReadNumber(b, 148, 8, &stored) || !ChecksumMatches(b, stored)) Bad("header checksum mismatch at byte " + std::to_string(at));
    char flag = b[156] == 0 ? '0' : static_cast<char>(b[156]);
    int64_t size = Num(b, 124, 12, "size");
    if (size < 0) Bad("negative size in the header at byte " + std::to_string(at));
    if (flag == 'x' || flag == 'g' || flag == 'L' || flag == 'K') {
      if (size > static_cast<int64_t>(kMaxMeta)) Bad("a " + std::to_string(size) + "-byte extended header at byte " + std::to_string(at) + " (limit " + std::to_string(kMaxMeta) + ")");
      meta_kind_ = flag;
      meta_.clear();
      meta_size_ = static_cast<size_t>(size);
      pad_after_ = Padding(size);
      state_ = State::kMeta;
      if (size == 0) OnMeta();
      return;
    }
    BuildEntry(b, flag, size);
  }

  void OnMeta() {
    switch (meta_kind_) {
      case 'L':
        long_name_ = meta_.substr(0, meta_.find('\0'));
        has_long_name_ = true;
        break;
      case 'K':
        long_link_ = meta_.substr(0, meta_.find('\0'));
        has_long_link_ = true;
        break;
      default: {
        bool global = meta_kind_ == 'g';
        if (!ScanPax(global)) Bad("malformed PAX header at byte " + std::to_string(header_offset_));
        if (!global) has_local_pax_ = true;
      }
    }
    meta_.clear();
    skip_left_ = static_cast<int64_t>(pad_after_);
    state_ = skip_left_ > 0 ? State::kSkip : State::kHeader;
  }

  // "<len> <key>=<value>\n" records (pax.ts scanPax).
  bool ScanPax(bool global) {
    const std::string& body = meta_;
    size_t pos = 0, size = body.size();
    while (pos < size) {
      if (body[pos] == 0) break;  // trailing NUL padding
      size_t len = 0, i = pos;
      while (i < size && body[i] >= '0' && body[i] <= '9') {
        len = len * 10 + static_cast<size_t>(body[i] - '0');
        i++;
        if (len > size) return false;
      }
      if (i == pos || i >= size || body[i] != ' ' || len <= i - pos + 1 || pos + len > size) return false;
      size_t end = pos + len;
      if (body[end - 1] != '\n') return false;
      size_t eq = body.find('=', i + 1);
      if (eq == std::string::npos || eq >= end - 1 || eq == i + 1) return false;
      std::string key = body.substr(i + 1, eq - i - 1);
      if (key != "ctime") {
        std::string value = body.substr(eq + 1, end - 1 - eq - 1);
        if (!global) {
          local_.emplace_back(std::move(key), std::move(value));
        } else if (value.empty()) {
          for (auto it = global_.begin(); it != global_.end(); ++it) {
            if (it->first == key) {
              global_.erase(it);
              break;
            }
          }
        } else {
          bool found = false;
          for (auto& kv : global_) {
            if (kv.first == key) {
              kv.second = std::move(value);
              found = true;
              break;
            }
          }
          if (!found) global_.emplace_back(std::move(key), std::move(value));
        }
      }
      pos = end;
    }
    return true;
  }

  int64_t PaxInt(const std::string& key, const std::string& text) {
    int64_t v;
    if (!ParseDecimal(text, &v)) Bad("PAX record " + key + "=\"" + text.substr(0, 40) + "\" is not a number");
    return v;
  }

  void BuildEntry(const uint8_t* b, char flag, int64_t headerSize) {
    bool ustar = b[257] == 'u' && b[258] == 's' && b[259] == 't' && b[260] == 'a' && b[261] == 'r';
    bool gnu = ustar && b[262] == ' ';
    bool posix = ustar && b[262] == 0;

    Entry e;
    std::string name = entry_name_;
    if (posix && b[345] != 0) name = ReadString(b, 345, 155) + "/" + name;
    std::string linkname = ReadString(b, 157, 100);
    int64_t uid = Num(b, 108, 8, "uid");
    int64_t gid = Num(b, 116, 8, "gid");
    int64_t size = headerSize;
    int64_t headerMtime = Num(b, 136, 12, "mtime");
    bool hasMtime = false;
    timespec mtime{};
    bool hasAtime = false;
    timespec atime{};
    int64_t devmajor = ustar ? Num(b, 329, 8, "devmajor") : 0;
    int64_t devminor = ustar ? Num(b, 337, 8, "devminor") : 0;
    if (gnu && b[345] != 0) {
      int64_t at;
      if (ReadNumber(b, 345, 12, &at) && at != 0) {
        atime.tv_sec = static_cast<time_t>(at);
        hasAtime = true;
      }
    }
    // Header values a PAX record with an empty value puts back (copied only then).
    const std::string hLink = linkname;
    const std::string hPrefixed = name;
    const int64_t hUid = uid, hGid = gid, hSize = size, hMajor = devmajor, hMinor = devminor;
    const bool hHasAtime = hasAtime;
    const timespec hAtime = atime;
    std::vector<std::pair<std::string, std::string>> sparse;  // GNU.sparse.* without the prefix
    std::vector<int64_t> offsets;
    bool hasOffsets = false;
    auto setSparse = [&sparse](const std::string& k, const std::string& v) {
      for (auto it = sparse.begin(); it != sparse.end(); ++it) {
        if (it->first == k) {
          if (v.empty()) sparse.erase(it);
          else it->second = v;
          return;
        }
      }
      if (!v.empty()) sparse.emplace_back(k, v);
    };
    auto apply = [&](const std::string& k, const std::string& v, bool local) {
      if (StartsWith(k, "SCHILY.xattr.")) {
        e.SetXattr(k.substr(13), v);
        return;
      }
      if (local && (k == "GNU.sparse.offset" || k == "GNU.sparse.numbytes")) {
        offsets.push_back(PaxInt(k, v));
        hasOffsets = true;
        return;
      }
      if (StartsWith(k, "LIBARCHIVE.xattr.")) {
        e.SetXattr(UriDecode(k.substr(17)), Base64Decode(v));
        return;
      }
      bool empty = v.empty();
      if (k == "path") name = empty ? hPrefixed : v;
      else if (k == "linkpath") linkname = empty ? hLink : v;
      else if (k == "size") size = empty ? hSize : PaxInt(k, v);
      else if (k == "uid") uid = empty ? hUid : PaxInt(k, v);
      else if (k == "gid") gid = empty ? hGid : PaxInt(k, v);
      else if (k == "SCHILY.devmajor") devmajor = empty ? hMajor : PaxInt(k, v);
      else if (k == "SCHILY.devminor") devminor = empty ? hMinor : PaxInt(k, v);
      else if (k == "mtime") {
        hasMtime = !empty;
        if (!empty && !ParsePaxTime(v, &mtime)) Bad("PAX record mtime is not a time");
      } else if (k == "atime") {
        if (empty) {
          hasAtime = hHasAtime;
          atime = hAtime;
        } else {
          if (!ParsePaxTime(v, &atime)) Bad("PAX record atime is not a time");
          hasAtime = true;
        }
      } else if (StartsWith(k, "GNU.sparse.")) {
        setSparse(k.substr(11), v);
      }
    };
    for (auto& [k, v] : global_) apply(k, v, false);
    for (auto& [k, v] : local_) apply(k, v, true);
    if (has_long_name_) name = long_name_;
    if (has_long_link_) linkname = long_link_;
    auto sparseAttr = [&sparse](const char* k) -> const std::string* {
      for (auto& kv : sparse)
        if (kv.first == k) return &kv.second;
      return nullptr;
    };
    if (const std::string* n = sparseAttr("name")) name = *n;
    has_long_name_ = has_long_link_ = has_local_pax_ = false;
    long_name_.clear();
    long_link_.clear();
    local_.clear();
    entry_name_ = name;
    if (!hasMtime) {
      mtime.tv_sec = static_cast<time_t>(headerMtime);
      mtime.tv_nsec = 0;
    }

    char type = 0;
    switch (flag) {
      case '0': case '7': case 'S':
        type = (name.size() > 0 && name.back() == '/' && flag == '0' && !ustar) ? '5' : '0';
        break;
      case '1': case '2': case '3': case '4': case '6': type = flag; break;
      case '5': case 'D': type = '5'; break;
    }
    bool headerOnly = flag >= '1' && flag <= '6';
    int64_t stored = headerOnly ? 0 : size;
    if (type == 0) {
      Skip(stored);  // unknown types (volume labels, continuations, …) are never written
      return;
    }
    e.name = std::move(name);
    e.type = type;
    e.mode = static_cast<uint32_t>(Num(b, 100, 8, "mode") & 07777);
    e.uid = uid;
    e.gid = gid;
    e.size = type == '0' ? size : 0;
    e.mtime = mtime;
    e.atime = atime;
    e.hasAtime = hasAtime;
    e.devmajor = devmajor;
    e.devminor = devminor;
    if (type == '1' || type == '2') e.linkname = std::move(linkname);

    segments_.clear();
    if (type == '0' && flag == 'S') {
      OldGnuSparse(b, std::move(e), stored);
      return;
    }
    if (type == '0' && !sparse.empty()) {
      if (PaxSparse(e, sparseAttr, hasOffsets, offsets, stored)) return;
    }
    StartEntry(std::move(e), stored);
  }

  void StartEntry(Entry e, int64_t stored) {
    in_entry_ = true;
    bool file = e.type == '0';
    OnEntry(std::move(e));
    if (file) {
      StartData(stored);
    } else {
      OnEnd();
      in_entry_ = false;
      Skip(stored);
    }
  }

  void Skip(int64_t bytes) {
    skip_left_ = bytes + static_cast<int64_t>(Padding(bytes));
    state_ = skip_left_ > 0 ? State::kSkip : State::kHeader;
  }

  void StartData(int64_t stored) {
    remaining_ = stored;
    pad_after_ = Padding(stored + map_bytes_);
    map_bytes_ = 0;
    position_ = 0;
    seg_index_ = 0;
    seg_left_ = 0;
    if (!segments_.empty()) NextSegment();
    if (stored == 0) FinishEntry();
    else state_ = State::kData;
  }

  void NextSegment() {
    while (seg_index_ < segments_.size() && segments_[seg_index_].length == 0) seg_index_++;
    if (seg_index_ < segments_.size()) {
      position_ = segments_[seg_index_].offset;
      seg_left_ = segments_[seg_index_].length;
      seg_index_++;
    }
  }

  void Emit(const uint8_t* p, size_t n) {
    if (segments_.empty()) {
      OnData(p, n, position_);
      position_ += static_cast<int64_t>(n);
      return;
    }
    size_t pos = 0;
    while (pos < n) {
      size_t take = static_cast<size_t>(std::min<int64_t>(seg_left_, static_cast<int64_t>(n - pos)));
      OnData(p + pos, take, position_);
      position_ += static_cast<int64_t>(take);
      seg_left_ -= static_cast<int64_t>(take);
      pos += take;
      if (seg_left_ == 0) NextSegment();
    }
  }

  void FinishEntry() {
    OnEnd();
    in_entry_ = false;
    segments_.clear();
    skip_left_ = static_cast<int64_t>(pad_after_);
    state_ = skip_left_ > 0 ? State::kSkip : State::kHeader;
  }

  // -- GNU sparse --

  void ReadSparsePairs(const uint8_t* b, size_t off, int count) {
    for (int i = 0; i < count; i++) {
      size_t at = off + static_cast<size_t>(i) * 24;
      if (b[at] == 0) break;
      int64_t o, l;
      if (!ReadNumber(b, at, 12, &o) || !ReadNumber(b, at + 12, 12, &l)) Bad("malformed GNU sparse map");
      segments_.push_back({o, l});
    }
  }

  void OldGnuSparse(const uint8_t* b, Entry e, int64_t stored) {
    ReadSparsePairs(b, 386, 4);
    int64_t real;
    if (!ReadNumber(b, 483, 12, &real)) Bad("malformed GNU sparse real size");
    e.size = real;
    pending_ = std::move(e);
    pending_stored_ = stored;
    if (b[482]) state_ = State::kSparseExt;
    else EmitSparseEntry();
  }

  void OnSparseExt(const uint8_t* b) {
    ReadSparsePairs(b, 0, 21);
    if (!b[504]) EmitSparseEntry();
  }

  template <typename Attr>
  bool PaxSparse(Entry& e, Attr attr, bool hasOffsets, const std::vector<int64_t>& offsets, int64_t stored) {
    const std::string* realText = attr("realsize");
    if (!realText) realText = attr("size");
    int64_t real = -1;
    bool realOk = realText && ParseDecimal(*realText, &real);
    const std::string* major = attr("major");
    const std::string* minor = attr("minor");
    if (major && minor && *major == "1" && *minor == "0") {
      if (!realOk) Bad("GNU sparse 1.0 entry without a real size");
      e.size = real;
      pending_ = std::move(e);
      pending_stored_ = stored;
      map_text_.clear();
      map_bytes_ = 0;
      if (stored == 0) Bad("GNU sparse 1.0 entry without its map");
      state_ = State::kSparseMap;
      return true;
    }
    std::vector<int64_t> numbers;
    if (const std::string* map = attr("map")) {
      if (!map->empty()) {
        size_t start = 0;
        while (true) {
          size_t comma = map->find(',', start);
          std::string part = map->substr(start, comma == std::string::npos ? std::string::npos : comma - start);
          int64_t v = 0;
          if (!part.empty() && !ParseDecimal(part, &v)) Bad("malformed GNU sparse map in a PAX header");
          numbers.push_back(v);
          if (comma == std::string::npos) break;
          start = comma + 1;
        }
      }
    } else if (hasOffsets) {
      numbers = offsets;
    } else {
      return false;
    }
    if (!realOk || numbers.size() % 2 != 0) Bad("malformed GNU sparse map in a PAX header");
    for (size_t i = 0; i < numbers.size(); i += 2) segments_.push_back({numbers[i], numbers[i + 1]});
    e.size = real;
    pending_ = std::move(e);
    pending_stored_ = stored;
    EmitSparseEntry();
    return true;
  }

  void OnSparseMapBlock(const uint8_t* b) {
    map_bytes_ += static_cast<int64_t>(kBlock);
    if (map_bytes_ > static_cast<int64_t>(kMaxMeta) || map_bytes_ > pending_stored_) Bad("GNU sparse 1.0 map is too long");
    map_text_.append(reinterpret_cast<const char*>(b), kBlock);
    std::vector<std::string> lines;
    size_t start = 0;
    while (true) {
      size_t nl = map_text_.find('\n', start);
      if (nl == std::string::npos) break;
      lines.push_back(map_text_.substr(start, nl - start));
      start = nl + 1;
    }
    if (lines.empty()) return;
    int64_t count;
    if (!ParseDecimal(lines[0], &count)) Bad("malformed GNU sparse 1.0 map");
    if (static_cast<int64_t>(lines.size()) < 1 + 2 * count) return;
    for (int64_t i = 0; i < count; i++) {
      int64_t o, l;
      if (!ParseDecimal(lines[1 + 2 * i], &o) || !ParseDecimal(lines[2 + 2 * i], &l)) Bad("malformed GNU sparse 1.0 map");
      segments_.push_back({o, l});
    }
    map_text_.clear();
    pending_stored_ -= map_bytes_;
    EmitSparseEntry();
  }

  void EmitSparseEntry() {
    int64_t end = 0, total = 0;
    for (const Segment& s : segments_) {
      if (s.offset < end || s.length < 0) Bad("GNU sparse map segments overlap or go backwards");
      end = s.offset + s.length;
      total += s.length;
    }
    if (end > pending_.size || total != pending_stored_) {
      Bad("GNU sparse map does not match the entry (map holds " + std::to_string(total) + " bytes, entry " + std::to_string(pending_stored_) + ")");
    }
    pending_.sparse = true;
    in_entry_ = true;
    OnEntry(std::move(pending_));
    pending_ = Entry();
    StartData(pending_stored_);
  }

  // ---- writer (apply.ts LayerWriter) ----

  [[noreturn]] void SysFail(int err, const char* syscall, const std::string& rel) {
    Failure f;
    f.sys.Set(err, syscall);
    f.sys.path = rel.empty() ? root_path_ : root_path_ + "/" + rel;
    f.sys.hasPath = true;
    f.subject = current_name_;
    throw f;
  }

  static std::string Join(const std::string& parent, const std::string& base) {
    return parent.empty() ? base : parent + "/" + base;
  }

  // safe-path.ts splitEntryPath, into one string: `rel` gets the components joined by
  // '/' ("" for the root) and `baseAt` where the last one starts.
  void NormalizePath(const std::string& name, std::string* rel, size_t* baseAt) {
    rel->clear();
    *baseAt = 0;
    if (name.find('\0') != std::string::npos) Unsafe(name, "the name contains a NUL byte");
    if (!name.empty() && name[0] == '/') Unsafe(name, "absolute paths are not allowed in a layer");
    if (name.size() >= kPathMax) InvalidName(name, "is longer than PATH_MAX (4096 bytes with its NUL)");
    size_t start = 0;
    while (start <= name.size()) {
      size_t slash = name.find('/', start);
      size_t end = slash == std::string::npos ? name.size() : slash;
      size_t n = end - start;
      if (!(n == 0 || (n == 1 && name[start] == '.'))) {
        if (n == 2 && name[start] == '.' && name[start + 1] == '.') Unsafe(name, "'..' components are not allowed");
        if (n > kNameMax) InvalidName(name, "has a component longer than NAME_MAX (255 bytes)");
        if (!rel->empty()) rel->push_back('/');
        *baseAt = rel->size();
        rel->append(name, start, n);
      }
      if (slash == std::string::npos) break;
      start = slash + 1;
    }
  }

  void ForgetFds() {
    for (auto& [rel, fd] : fds_) close(fd);
    fds_.clear();
  }

  // The fd of directory `rel` (verified by the walk), resolved beneath the root.
  int OpenDirOrNeg(const std::string& rel) {
    if (rel.empty()) return root_;
    auto it = fds_.find(rel);
    if (it != fds_.end()) return it->second;
    int fd = OpenBeneathPath(rel);
    if (fd < 0) return -1;
    if (fds_.size() >= kMaxCachedDirs) ForgetFds();
    fds_.emplace(rel, fd);
    return fd;
  }

  int Dir(const std::string& rel) {
    int fd = OpenDirOrNeg(rel);
    if (fd < 0) SysFail(errno, "openat2", rel);
    return fd;
  }

  int OpenBeneathPath(const std::string& rel) {
    static bool noOpenat2 = false;
    if (!noOpenat2) {
      open_how how{};
      how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
      how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
      int fd;
      do {
        fd = static_cast<int>(syscall(SYS_openat2, root_, rel.c_str(), &how, sizeof how));
      } while (fd < 0 && (errno == EINTR || errno == EAGAIN));
      if (fd >= 0 || errno != ENOSYS) return fd;
      noOpenat2 = true;
    }
    int cur = dup(root_);
    if (cur < 0) return -1;
    size_t start = 0;
    while (start <= rel.size()) {
      size_t slash = rel.find('/', start);
      std::string part = rel.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
      start = slash == std::string::npos ? rel.size() + 1 : slash + 1;
      if (part.empty() || part == ".") continue;
      if (part == "..") {
        close(cur);
        errno = EXDEV;
        return -1;
      }
      int next = openat(cur, part.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      int saved = errno;
      close(cur);
      if (next < 0) {
        errno = saved;
        return -1;
      }
      cur = next;
    }
    return cur;
  }

  // lstat of parent/base; false when nothing is there.
  bool Lstat(const std::string& parentRel, const std::string& base, struct stat* st) {
    if (fstatat(Dir(parentRel), base.c_str(), st, AT_SYMLINK_NOFOLLOW) == 0) return true;
    if (errno == ENOENT) return false;
    SysFail(errno, "lstat", Join(parentRel, base));
  }

  // Makes sure directory `rel` exists as a real directory (creating missing components,
  // 0755 as moby) or, with create=false, reports whether it does. A symlink on the way is
  // ERR_UNSAFE_ARCHIVE; something else that is not a directory ERR_INVALID_ARCHIVE.
  bool WalkDirs(const std::string& rel, bool create, const std::string& entryName) {
    if (known_.count(rel)) return true;
    std::string cur;
    size_t start = 0;
    while (start < rel.size()) {
      size_t slash = rel.find('/', start);
      size_t end = slash == std::string::npos ? rel.size() : slash;
      std::string parent = cur;
      std::string part = rel.substr(start, end - start);
      cur = Join(cur, part);
      start = end + 1;
      if (known_.count(cur)) continue;
      bool parentSetgid = known_[parent];
      struct stat st;
      if (!Lstat(parent, part, &st)) {
        if (!create) return false;
        if (mkdirat(Dir(parent), part.c_str(), 0755) != 0) SysFail(errno, "mkdir", cur);
        known_[cur] = parentSetgid;  // Linux: a new directory inherits setgid
        continue;
      }
      if (S_ISLNK(st.st_mode)) Unsafe(entryName, "its path goes through the symlink \"" + cur + "\"");
      if (!S_ISDIR(st.st_mode)) {
        InvalidEntry(entryName, "entry \"" + Printable(entryName) + "\" needs \"" + cur + "\" to be a directory, but it is not");
      }
      known_[cur] = (st.st_mode & S_ISGID) != 0;
    }
    return true;
  }

  void ForgetDirs(const std::string& rel) {
    std::string prefix = rel + "/";
    for (auto it = known_.begin(); it != known_.end();) {
      if (it->first == rel || StartsWith(it->first, prefix.c_str())) it = known_.erase(it);
      else ++it;
    }
  }

  // Removes a directory tree below dirfd without following any symlink in it.
  void RemoveTree(int dirfd, const std::string& name, const std::string& rel) {
    int fd = openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return;
      if (errno == ENOTDIR || errno == ELOOP) {
        if (unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) SysFail(errno, "unlink", rel);
        return;
      }
      SysFail(errno, "open", rel);
    }
    DIR* d = fdopendir(fd);
    if (!d) {
      int err = errno;
      close(fd);
      SysFail(err, "opendir", rel);
    }
    std::vector<std::pair<std::string, bool>> children;
    while (dirent* de = readdir(d)) {
      if (std::strcmp(de->d_name, ".") == 0 || std::strcmp(de->d_name, "..") == 0) continue;
      bool isDir = de->d_type == DT_DIR;
      if (de->d_type == DT_UNKNOWN) {
        struct stat st;
        isDir = fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
      }
      children.emplace_back(de->d_name, isDir);
    }
    for (auto& [child, isDir] : children) {
      if (isDir) {
        RemoveTree(fd, child, rel + "/" + child);
      } else if (unlinkat(fd, child.c_str(), 0) != 0 && errno != ENOENT) {
        int err = errno;
        closedir(d);
        SysFail(err, "unlink", rel + "/" + child);
      }
    }
    closedir(d);
    if (unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) SysFail(errno, "rmdir", rel);
  }

  void Remove(const std::string& parentRel, const std::string& base, const struct stat& st) {
    std::string rel = Join(parentRel, base);
    if (S_ISDIR(st.st_mode)) {
      RemoveTree(Dir(parentRel), base, rel);
      ForgetDirs(rel);
      ForgetFds();  // cached fds may name what was just removed
    } else if (unlinkat(Dir(parentRel), base.c_str(), 0) != 0 && errno != ENOENT) {
      SysFail(errno, "unlink", rel);
    }
  }

  void RemoveIfPresent(const std::string& parentRel, const std::string& base) {
    struct stat st;
    if (Lstat(parentRel, base, &st)) Remove(parentRel, base, st);
  }

  // A path that names parent/base without following base: for the l*xattr calls, which
  // have no *at form (the parent is a magic link to the fd resolved beneath the root).
  std::string ProcPath(const std::string& parentRel, const std::string& base) {
    return "/proc/self/fd/" + std::to_string(Dir(parentRel)) + (base.empty() ? "" : "/" + base);
  }

  void SetXattrs(const Entry& e, const std::string& parentRel, const std::string& base, int fd) {
    for (const auto& [k, v] : e.xattrs) {
      int rc = fd >= 0 ? fsetxattr(fd, k.c_str(), v.data(), v.size(), 0)
                       : lsetxattr(ProcPath(parentRel, base).c_str(), k.c_str(), v.data(), v.size(), 0);
      if (rc != 0) SysFail(errno, "lsetxattr", Join(parentRel, base));
    }
  }

  void Times(const Entry& e, timespec out[2]) {
    out[0] = e.hasAtime && Later(e.atime, e.mtime) ? e.atime : e.mtime;
    out[1] = e.mtime;
  }

  void OnEntry(Entry e) {
    current_name_ = e.name;
    if (ownership_ && !owners_.Map(&e.uid, &e.gid)) {
      if (!owners_.Drop(EOVERFLOW, e.name, e.uid, e.gid)) SysFail(EOVERFLOW, "chown", e.name);
      e.uid = euid_;  // ignoreChownErrors: the caller's own ids, which every chown below leaves as they are
      e.gid = egid_;
    }
    std::string rel;
    size_t baseAt;
    NormalizePath(e.name, &rel, &baseAt);
    if (rel.empty()) {
      // `./` describes the layer root itself: only its metadata can change.
      if (e.type != '5') Unsafe(e.name, std::string("a ") + TypeName(e.type) + " cannot replace the layer root");
      DirMetadata("", "", e);
      return;
    }
    const std::string base = rel.substr(baseAt);
    const std::string parentRel = baseAt == 0 ? std::string() : rel.substr(0, baseAt - 1);

    if (mode_ != Whiteouts::kAufs && StartsWith(base, ".wh.")) {
      if (base == ".wh..wh..opq") {
        Whiteout(e, parentRel, nullptr);
        return;
      }
      if (StartsWith(base, ".wh..wh.")) return;  // aufs bookkeeping, never applied
      std::string target = base.substr(4);
      if (target.empty() || target == "." || target == "..") {
        Unsafe(e.name, "a whiteout must name an entry of its directory, not \"" + target + "\"");
      }
      Whiteout(e, parentRel, &target);
      return;
    }

    WalkDirs(parentRel, true, e.name);
    if (mode_ == Whiteouts::kDelete) unpacked_.insert(rel);

    switch (e.type) {
      case '5': {
        struct stat st;
        bool there = Lstat(parentRel, base, &st);
        if (!there || !S_ISDIR(st.st_mode)) {
          if (there) Remove(parentRel, base, st);
          if (mkdirat(Dir(parentRel), base.c_str(), 0700) != 0) SysFail(errno, "mkdir", rel);
        }
        DirMetadata(parentRel, base, e);
        return;
      }
      case '0': {
        bool inSetgid = known_[parentRel];
        int fd = openat(Dir(parentRel), base.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, e.mode & 0777);
        if (fd < 0 && errno == EEXIST) {
          RemoveIfPresent(parentRel, base);
          fd = openat(Dir(parentRel), base.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, e.mode & 0777);
        }
        if (fd < 0) SysFail(errno, "open", rel);
        file_fd_ = fd;
        file_parent_ = parentRel;
        file_base_ = base;
        file_in_setgid_ = inSetgid;
        file_ = std::move(e);
        return;
      }
      case '2': {
        if (e.linkname.empty()) InvalidEntry(e.name, "symlink entry \"" + Printable(e.name) + "\" has an empty target; the archive is corrupt");
        if (e.linkname.size() >= kPathMax) InvalidEntry(e.name, "symlink entry \"" + Printable(e.name) + "\" has a target longer than PATH_MAX (4096 bytes); the archive is corrupt");
        RemoveIfPresent(parentRel, base);
        if (symlinkat(e.linkname.c_str(), Dir(parentRel), base.c_str()) != 0) SysFail(errno, "symlink", rel);
        Metadata(parentRel, base, e, false);
        return;
      }
      case '1': {
        std::string target;
        size_t tAt;
        NormalizePath(e.linkname, &target, &tAt);
        if (target.empty()) Unsafe(e.name, "a hardlink to the layer root");
        const std::string tParent = tAt == 0 ? std::string() : target.substr(0, tAt - 1);
        const std::string tBase = target.substr(tAt);
        struct stat st;
        if (!WalkDirs(tParent, false, e.name) || !Lstat(tParent, tBase, &st)) {
          InvalidEntry(e.name, "hardlink \"" + Printable(e.name) + "\" points to \"" + Printable(e.linkname) + "\", which is not in the layer");
        }
        if (S_ISDIR(st.st_mode)) Unsafe(e.name, "a hardlink to a directory");
        if (target == rel) return;
        RemoveIfPresent(parentRel, base);
        // link(2) never follows a symlink target; the inode's metadata stays the target's.
        int from = dup(Dir(tParent));
        if (from < 0) SysFail(errno, "dup", tParent);
        int rc = linkat(from, tBase.c_str(), Dir(parentRel), base.c_str(), 0);
        int err = errno;
        close(from);
        if (rc != 0) SysFail(err, "link", rel);
        return;
      }
      case '3':
      case '4':
      case '6': {
        if (no_devices_ && e.type != '6') Unsafe(e.name, "device nodes are not allowed here (noDevices)");
        RemoveIfPresent(parentRel, base);
        mode_t kind = e.type == '3' ? S_IFCHR : e.type == '4' ? S_IFBLK : S_IFIFO;
        dev_t dev = makedev(static_cast<unsigned>(e.devmajor), static_cast<unsigned>(e.devminor));
        if (mknodat(Dir(parentRel), base.c_str(), kind | (e.mode & 0777), dev) != 0) {
          if (errno != EPERM || e.type == '6') SysFail(errno, "mknod", rel);
          DevicePlaceholder(parentRel, base, e);  // unprivileged (a user namespace): recorded, not made
          return;
        }
        Metadata(parentRel, base, e, true);
        return;
      }
    }
  }

  static const char* TypeName(char t) {
    switch (t) {
      case '0': return "file";
      case '1': return "hardlink";
      case '2': return "symlink";
      case '3': return "char";
      case '4': return "block";
      case '6': return "fifo";
      default: return "dir";
    }
  }

  void OnData(const uint8_t* p, size_t n, int64_t position) {
    if (file_fd_ < 0) return;
    size_t off = 0;
    while (off < n) {
      ssize_t w = pwrite(file_fd_, p + off, n - off, position + static_cast<int64_t>(off));
      if (w < 0) {
        if (errno == EINTR) continue;
        SysFail(errno, "write", Join(file_parent_, file_base_));
      }
      off += static_cast<size_t>(w);
    }
    bytes_ += static_cast<int64_t>(n);
  }

  void OnEnd() {
    if (file_fd_ < 0) return;
    const Entry& e = file_;
    std::string rel = Join(file_parent_, file_base_);
    int fd = file_fd_;
    if (e.sparse && ftruncate(fd, e.size) != 0) SysFail(errno, "ftruncate", rel);
    // A new file is already ours: chown only when the entry says otherwise (or a setgid
    // parent gave it another group); chmod when open's mode fell short (umask,
    // setuid/setgid/sticky) or after a chown, which clears setuid/setgid.
    bool chown = ownership_ && (e.uid != euid_ || e.gid != egid_ || file_in_setgid_);
    bool chmod = chown || e.mode > 0777 || (e.mode & umask_) != 0;
    if (chown && fchown(fd, static_cast<uid_t>(e.uid), static_cast<gid_t>(e.gid)) != 0 && !owners_.Drop(errno, rel, e.uid, e.gid)) SysFail(errno, "fchown", rel);
    if (chmod && fchmod(fd, e.mode) != 0) SysFail(errno, "fchmod", rel);
    SetXattrs(e, file_parent_, file_base_, fd);
    timespec ts[2];
    Times(e, ts);
    if (futimens(fd, ts) != 0) SysFail(errno, "futimens", rel);
    file_fd_ = -1;
    if (close(fd) != 0 && errno != EINTR) {
      file_fd_ = -1;
      int err = errno;
      unlinkat(Dir(file_parent_), file_base_.c_str(), 0);
      SysFail(err, "close", rel);
    }
  }

  void DirMetadata(const std::string& parentRel, const std::string& base, const Entry& e) {
    std::string rel = Join(parentRel, base);
    int pfd = base.empty() ? root_ : Dir(parentRel);
    const char* name = base.empty() ? "" : base.c_str();
    int flags = base.empty() ? AT_EMPTY_PATH : AT_SYMLINK_NOFOLLOW;
    if (ownership_ && fchownat(pfd, name, static_cast<uid_t>(e.uid), static_cast<gid_t>(e.gid), flags) != 0 && !owners_.Drop(errno, rel, e.uid, e.gid)) SysFail(errno, "lchown", rel);
    // A verified (or new) real directory: chmod through the magic link of an O_PATH fd.
    int dfd = base.empty() ? root_ : openat(pfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) SysFail(errno, "open", rel);
    std::string proc = "/proc/self/fd/" + std::to_string(dfd);
    int rc = chmod(proc.c_str(), e.mode);
    int err = errno;
    if (rc == 0 && !e.xattrs.empty()) {
      for (const auto& [k, v] : e.xattrs) {
        if (setxattr(proc.c_str(), k.c_str(), v.data(), v.size(), 0) != 0) {
          rc = -1;
          err = errno;
          break;
        }
      }
    }
    if (dfd != root_) close(dfd);
    if (rc != 0) SysFail(err, e.xattrs.empty() ? "chmod" : "lsetxattr", rel);
    known_[rel] = (e.mode & S_ISGID) != 0;
    timespec ts[2];
    Times(e, ts);
    dir_times_.push_back({rel, ts[0], ts[1]});
  }

  // Symlinks, devices and fifos: owner, mode (not for symlinks), xattrs, times, no-follow.
  void Metadata(const std::string& parentRel, const std::string& base, const Entry& e, bool withChmod) {
    std::string rel = Join(parentRel, base);
    if (ownership_ && fchownat(Dir(parentRel), base.c_str(), static_cast<uid_t>(e.uid), static_cast<gid_t>(e.gid), AT_SYMLINK_NOFOLLOW) != 0 &&
        !owners_.Drop(errno, rel, e.uid, e.gid)) {
      SysFail(errno, "lchown", rel);
    }
    // Just made by us and not a symlink, so following the name cannot leave the layer.
    if (withChmod && fchmodat(Dir(parentRel), base.c_str(), e.mode, 0) != 0) SysFail(errno, "chmod", rel);
    SetXattrs(e, parentRel, base, -1);
    timespec ts[2];
    Times(e, ts);
    if (utimensat(Dir(parentRel), base.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) SysFail(errno, "lutimes", rel);
  }

  // A device node where mknod is refused (EPERM: no CAP_MKNOD in the init namespace): an
  // empty 0000 file whose override_stat xattr (owners.h) says what it stands for, so diff
  // and export give the device back; the container sees an empty file.
  void DevicePlaceholder(const std::string& parentRel, const std::string& base, const Entry& e) {
    std::string rel = Join(parentRel, base);
    int fd = openat(Dir(parentRel), base.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd < 0) SysFail(errno, "open", rel);
    std::string v = OverrideStatValue(e.uid, e.gid, e.mode, e.type == '4', e.devmajor, e.devminor);
    int rc = fsetxattr(fd, kOverrideStatXattr, v.data(), v.size(), 0);
    int err = errno;
    if (rc == 0 && ownership_ && fchown(fd, static_cast<uid_t>(e.uid), static_cast<gid_t>(e.gid)) != 0 && !owners_.Drop(errno, rel, e.uid, e.gid)) {
      rc = -1;
      err = errno;
    }
    timespec ts[2];
    Times(e, ts);
    if (rc == 0 && futimens(fd, ts) != 0) {
      rc = -1;
      err = errno;
    }
    close(fd);
    if (rc != 0) {
      unlinkat(Dir(parentRel), base.c_str(), 0);
      SysFail(err, "lsetxattr", rel);
    }
    owners_.Recorded(rel);
  }

  void Whiteout(const Entry& e, const std::string& parentRel, const std::string* target) {
    if (mode_ == Whiteouts::kOverlay) {
      WalkDirs(parentRel, true, e.name);
      if (!target) {
        std::string proc = "/proc/self/fd/" + std::to_string(Dir(parentRel));
        if (setxattr(proc.c_str(), opaque_xattr_.c_str(), "y", 1, 0) != 0) SysFail(errno, "lsetxattr", parentRel);
        return;
      }
      std::string rel = Join(parentRel, *target);
      RemoveIfPresent(parentRel, *target);
      // What the kernel and moby leave for a deletion: a 0/0 char device, mode 0000.
      if (mknodat(Dir(parentRel), target->c_str(), S_IFCHR, 0) != 0) SysFail(errno, "mknod", rel);
      if (ownership_ && fchownat(Dir(parentRel), target->c_str(), static_cast<uid_t>(e.uid), static_cast<gid_t>(e.gid), AT_SYMLINK_NOFOLLOW) != 0 &&
          !owners_.Drop(errno, rel, e.uid, e.gid)) {
        SysFail(errno, "lchown", rel);
      }
      return;
    }
    if (!WalkDirs(parentRel, false, e.name)) return;  // nothing there to delete
    if (!target) {
      RemoveNotUnpacked(parentRel);
      return;
    }
    RemoveIfPresent(parentRel, *target);
  }

  // Opaque directory in delete mode: removes what this apply did not write.
  void RemoveNotUnpacked(const std::string& rel) {
    int fd = openat(Dir(rel), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) SysFail(errno, "open", rel);
    DIR* d = fdopendir(fd);
    if (!d) {
      int err = errno;
      close(fd);
      SysFail(err, "opendir", rel);
    }
    std::vector<std::string> names;
    while (dirent* de = readdir(d)) {
      if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0) names.emplace_back(de->d_name);
    }
    closedir(d);
    for (const std::string& name : names) {
      std::string child = Join(rel, name);
      if (!unpacked_.count(child)) {
        RemoveIfPresent(rel, name);
      } else {
        struct stat st;
        if (Lstat(rel, name, &st) && S_ISDIR(st.st_mode)) {
          known_.emplace(child, (st.st_mode & S_ISGID) != 0);
          RemoveNotUnpacked(child);
        }
      }
    }
  }

  // Directory times last (writing their children changed them). A directory replaced
  // later in the same layer is skipped; its path is resolved beneath the root without
  // symlinks, so a later entry cannot point the update outside the layer.
  void FinishDirectories() {
    for (const DirTime& d : dir_times_) {
      timespec ts[2] = {d.atime, d.mtime};
      if (d.rel.empty()) {
        std::string proc = "/proc/self/fd/" + std::to_string(root_);
        if (utimensat(AT_FDCWD, proc.c_str(), ts, 0) != 0) SysFail(errno, "lutimes", "");
        continue;
      }
      if (!known_.count(d.rel)) continue;
      int fd = OpenBeneathPath(d.rel);
      if (fd < 0) continue;  // no longer a directory reachable without symlinks
      std::string proc = "/proc/self/fd/" + std::to_string(fd);
      int rc = utimensat(AT_FDCWD, proc.c_str(), ts, 0);
      int err = errno;
      close(fd);
      if (rc != 0) SysFail(err, "lutimes", d.rel);
    }
    dir_times_.clear();
  }

  struct DirTime {
    std::string rel;
    timespec atime;
    timespec mtime;
  };

  // parser state
  State state_ = State::kHeader;
  int64_t offset_ = 0;
  int64_t header_offset_ = 0;
  uint8_t block_buf_[kBlock];
  size_t block_fill_ = 0;
  bool saw_zero_ = false;
  bool has_long_name_ = false, has_long_link_ = false, has_local_pax_ = false;
  std::string long_name_, long_link_;
  std::vector<std::pair<std::string, std::string>> local_, global_;
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
  std::string map_text_;
  int64_t map_bytes_ = 0;

  // writer state
  std::string root_path_;
  int root_ = -1;
  Whiteouts mode_;
  bool no_devices_, ownership_;
  int64_t euid_, egid_;
  mode_t umask_;
  std::unordered_map<std::string, bool> known_;  // verified real directories → setgid
  std::unordered_map<std::string, int> fds_;
  std::unordered_set<std::string> unpacked_;
  std::vector<DirTime> dir_times_;
  std::string current_name_;
  int64_t bytes_ = 0;
  int file_fd_ = -1;
  std::string file_parent_, file_base_;
  bool file_in_setgid_ = false;
  Entry file_;
  OwnerPolicy owners_;
};

Napi::Error FailureToJs(Napi::Env env, const Failure& f) {
  if (!f.code.empty()) {
    Napi::Error err = Napi::Error::New(env, f.message);
    err.Value().Set("cairnCode", Napi::String::New(env, f.code));
    err.Value().Set("subject", Napi::String::New(env, f.subject));
    return err;
  }
  Napi::Error err = MakeSysError(env, f.sys);
  err.Value().Set("entry", Napi::String::New(env, f.subject));
  return err;
}

struct Chunk {
  const uint8_t* data;
  size_t len;
};

std::vector<Chunk> ReadChunks(const Napi::CallbackInfo& info, size_t at) {
  std::vector<Chunk> chunks;
  auto add = [&](Napi::Value v) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw Napi::TypeError::New(info.Env(), "chunks must be Buffers or Uint8Arrays");
    Napi::Uint8Array a = v.As<Napi::Uint8Array>();
    chunks.push_back({a.Data(), a.ByteLength()});
  };
  if (info[at].IsArray()) {
    Napi::Array list = info[at].As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) add(list.Get(i));
  } else {
    add(info[at]);
  }
  return chunks;
}

class LayerApplier : public Napi::ObjectWrap<LayerApplier> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "LayerApplier", {
      InstanceMethod<&LayerApplier::Write>("write"),
      InstanceMethod<&LayerApplier::WriteAsync>("writeAsync"),
      InstanceMethod<&LayerApplier::WriteFrom>("writeFrom"),
      InstanceMethod<&LayerApplier::WriteFromAsync>("writeFromAsync"),
      InstanceMethod<&LayerApplier::Finish>("finish"),
      InstanceMethod<&LayerApplier::Abort>("abort"),
      InstanceMethod<&LayerApplier::Close>("close"),
      InstanceAccessor<&LayerApplier::Finished>("finished"),
      InstanceAccessor<&LayerApplier::Current>("currentName"),
      InstanceAccessor<&LayerApplier::Bytes>("bytes"),
      InstanceAccessor<&LayerApplier::Dropped>("dropped"),
    });
  }

  // new LayerApplier(root, whiteoutMode 0|1|2, noDevices, ownership, euid, egid, umask)
  explicit LayerApplier(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LayerApplier>(info) {
    Napi::Env env = info.Env();
    std::string root = ArgString(info, 0, "root");
    auto mode = static_cast<Whiteouts>(ArgInt(info, 1, "whiteouts"));
    bool noDevices = info[2].ToBoolean();
    bool ownership = info[3].ToBoolean();
    auto euid = static_cast<uid_t>(ArgInt(info, 4, "euid"));
    auto egid = static_cast<gid_t>(ArgInt(info, 5, "egid"));
    auto umask = static_cast<mode_t>(ArgInt(info, 6, "umask"));
    try {
      applier_ = std::make_unique<Applier>(root, mode, noDevices, ownership, euid, egid, umask);
    } catch (const Failure& f) {
      throw FailureToJs(env, f);
    }
    // (…, idMappings | null, ignoreChownErrors, opaqueXattr | undefined): user namespaces (owners.h)
    applier_->owners().maps = ArgIdShift(info, 7, "idMappings");
    applier_->owners().ignoreChownErrors = info[8].ToBoolean();
    ArgOptString(info, 9, "opaqueXattr", &applier_->opaque_xattr_);
  }

  Applier* Get(Napi::Env env) {
    if (!applier_) throw Napi::Error::New(env, "LayerApplier is closed");
    if (busy_) throw Napi::Error::New(env, "LayerApplier is busy: await the previous writeAsync first");
    return applier_.get();
  }

  bool busy_ = false;

 private:
  class WriteWorker : public Napi::AsyncWorker {
   public:
    // Either `chunks` (kept alive by a reference to chunksValue) or, with fd >= 0, the input read from fd.
    WriteWorker(Napi::Env env, LayerApplier* owner, Napi::Value chunksValue, std::vector<Chunk> chunks, int fd = -1)
        : Napi::AsyncWorker(env, "cairn.applyLayer"), deferred_(Napi::Promise::Deferred::New(env)),
          owner_(owner), chunks_(std::move(chunks)), fd_(fd) {
      if (chunksValue.IsObject()) keep_ = Napi::Persistent(chunksValue);
      self_ = Napi::Persistent(owner->Value());
    }
    Napi::Promise Promise() { return deferred_.Promise(); }
    void Execute() override {
      try {
        if (fd_ >= 0) owner_->applier_->ReadFrom(fd_);
        for (const Chunk& c : chunks_) owner_->applier_->Write(c.data, c.len);
      } catch (const Failure& f) {
        failure_ = f;
        failed_ = true;
      }
    }
    void OnOK() override {
      owner_->busy_ = false;
      if (failed_) deferred_.Reject(FailureToJs(Env(), failure_).Value());
      else deferred_.Resolve(Env().Undefined());
    }
    void OnError(const Napi::Error& e) override {
      owner_->busy_ = false;
      deferred_.Reject(e.Value());
    }

   private:
    Napi::Promise::Deferred deferred_;
    LayerApplier* owner_;
    std::vector<Chunk> chunks_;
    int fd_;
    Napi::Reference<Napi::Value> keep_;
    Napi::ObjectReference self_;
    Failure failure_;
    bool failed_ = false;
  };

  // write(chunk | chunk[]): applies synchronously on this thread.
  Napi::Value Write(const Napi::CallbackInfo& info) {
    Applier* a = Get(info.Env());
    std::vector<Chunk> chunks = ReadChunks(info, 0);
    try {
      for (const Chunk& c : chunks) a->Write(c.data, c.len);
    } catch (const Failure& f) {
      throw FailureToJs(info.Env(), f);
    }
    return info.Env().Undefined();
  }

  // writeAsync(chunk | chunk[]) → Promise: the same on a libuv pool thread; the chunks
  // must not change until it settles.
  Napi::Value WriteAsync(const Napi::CallbackInfo& info) {
    Get(info.Env());
    std::vector<Chunk> chunks = ReadChunks(info, 0);
    auto* worker = new WriteWorker(info.Env(), this, info[0], std::move(chunks));
    busy_ = true;
    Napi::Promise p = worker->Promise();
    worker->Queue();
    return p;
  }

  // writeFrom(fd): the whole input read from fd (pread from offset 0), on this thread.
  Napi::Value WriteFrom(const Napi::CallbackInfo& info) {
    Applier* a = Get(info.Env());
    int fd = static_cast<int>(ArgInt(info, 0, "fd"));
    try {
      a->ReadFrom(fd);
    } catch (const Failure& f) {
      throw FailureToJs(info.Env(), f);
    }
    return info.Env().Undefined();
  }

  // writeFromAsync(fd) → Promise: the same on a libuv pool thread; fd must stay open until it settles.
  Napi::Value WriteFromAsync(const Napi::CallbackInfo& info) {
    Get(info.Env());
    int fd = static_cast<int>(ArgInt(info, 0, "fd"));
    auto* worker = new WriteWorker(info.Env(), this, info.Env().Undefined(), {}, fd);
    busy_ = true;
    Napi::Promise p = worker->Promise();
    worker->Queue();
    return p;
  }

  Napi::Value Finish(const Napi::CallbackInfo& info) {
    Applier* a = Get(info.Env());
    try {
      a->Finish();
    } catch (const Failure& f) {
      throw FailureToJs(info.Env(), f);
    }
    return Napi::Number::New(info.Env(), static_cast<double>(a->bytes()));
  }

  Napi::Value Abort(const Napi::CallbackInfo& info) {
    if (applier_ && !busy_) applier_->Abort();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (applier_ && !busy_) applier_.reset();
    return info.Env().Undefined();
  }

  Napi::Value Finished(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), applier_ && applier_->finished());
  }

  Napi::Value Current(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), applier_ ? applier_->current() : "");
  }

  Napi::Value Bytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), applier_ ? static_cast<double>(applier_->bytes()) : 0);
  }

  // What the apply left undone because the process could not: { chowns, firstChown, devices, firstDevice }.
  Napi::Value Dropped(const Napi::CallbackInfo& info) {
    Napi::Object o = Napi::Object::New(info.Env());
    const OwnerPolicy* p = applier_ ? &applier_->owners() : nullptr;
    o.Set("chowns", Napi::Number::New(info.Env(), p ? static_cast<double>(p->chownsDropped) : 0));
    o.Set("firstChown", Napi::String::New(info.Env(), p ? p->firstDropped : ""));
    o.Set("devices", Napi::Number::New(info.Env(), p ? static_cast<double>(p->devicesRecorded) : 0));
    o.Set("firstDevice", Napi::String::New(info.Env(), p ? p->firstDevice : ""));
    return o;
  }

  std::unique_ptr<Applier> applier_;
};

}  // namespace

void InitUntar(Napi::Env env, Napi::Object exports) {
  exports.Set("LayerApplier", LayerApplier::Define(env));
}

}  // namespace cairn
