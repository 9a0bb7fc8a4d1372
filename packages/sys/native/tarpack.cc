// Layer export in the addon: a TarPacker walks a layer directory (or a list of changed
// paths in it) and writes the OCI layer tar straight into caller-supplied buffers, one
// call per buffer. Per entry this is fstatat beneath a directory fd, an open of regular
// files relative to their parent (xattrs listed on that same fd), the header encoded
// in C++ and the content read in place: no JS object, string or call per entry. The
// bytes are exactly those of archive's encodeHeader/exportChanges (tested there, byte for
// byte, against the node:fs path).
//
// The layer may be changing under a running container: every directory is opened
// beneath the root one component at a time with O_NOFOLLOW, a regular file's content is
// read only from an fd checked to be the very regular file the header was built from
// (OpenRegular), and the xattrs of anything else are read by name relative to its
// directory fd, never followed (nofollow.h).
#include "common.h"
#include "owners.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <unordered_map>

#include "nodevview.h"
#include "nofollow.h"

namespace cairn {

namespace {

constexpr int kOverlay = 1;  // overlay whiteouts: 0/0 char device → .wh.<name>, opaque dir → .wh..wh..opq
// Walk mode: entries in the order of their full paths as strings (exportChanges' order:
// 'a', 'a-b', 'a/x'), not directory by directory ('a', 'a/x', 'a-b').
constexpr int kPathOrder = 2;
// Tests only: act as on a kernel without the *xattrat calls, and open files by name
// instead of through a file handle (the paths an unprivileged caller or an older kernel takes).
constexpr int kLegacy = 4;
// Without it, a real entry whose name starts with ".wh." is refused (ERR_UNSAFE_ARCHIVE):
// in a layer tar that name means a deletion, so a container that made /etc/.wh.passwd
// would commit a layer deleting /etc/passwd. aufs branches, whose .wh. files are their
// whiteouts, set it.
constexpr int kKeepWhiteoutNames = 8;
// Tests only: no nodev view (NodevView), as where this process may not clone mounts.
constexpr int kNoNodevView = 16;
constexpr size_t kBlock = 512;
#ifdef MADV_POPULATE_WRITE
constexpr int kMadvPopulateWrite = MADV_POPULATE_WRITE;
#else
constexpr int kMadvPopulateWrite = 23;  // Linux 5.14
#endif
constexpr int64_t kOctal8 = 07777777;        // largest value of an 8-byte octal field
constexpr int64_t kOctal12 = 077777777777;   // of a 12-byte one

// ---------------------------------------------------------------------------------
// Ordering: JS compares strings by UTF-16 code units; these are UTF-8 bytes. Code point
// order equals UTF-16 order except that U+E000–U+FFFF sort after the supplementary
// planes (whose surrogates are D800–DBFF), so those are lifted above them.

uint32_t NextKey(const unsigned char* s, size_t n, size_t& i) {
  unsigned c = s[i];
  if (c < 0x80) {
    i++;
    return c;
  }
  constexpr uint32_t kBad = 0xfffd + 0x200000;  // JS would see U+FFFD
  uint32_t cp;
  size_t len;
  if ((c & 0xe0) == 0xc0) { cp = c & 0x1f; len = 2; }
  else if ((c & 0xf0) == 0xe0) { cp = c & 0x0f; len = 3; }
  else if ((c & 0xf8) == 0xf0) { cp = c & 0x07; len = 4; }
  else { i++; return kBad; }
  if (i + len > n) { i++; return kBad; }
  for (size_t k = 1; k < len; k++) {
    if ((s[i + k] & 0xc0) != 0x80) { i++; return kBad; }
    cp = (cp << 6) | (s[i + k] & 0x3f);
  }
  i += len;
  return cp >= 0xe000 && cp <= 0xffff ? cp + 0x200000 : cp;
}

bool Utf16Less(const std::string& a, const std::string& b) {
  const auto* x = reinterpret_cast<const unsigned char*>(a.data());
  const auto* y = reinterpret_cast<const unsigned char*>(b.data());
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (x[i] == y[j] && x[i] < 0x80) { i++; j++; continue; }
    uint32_t p = NextKey(x, a.size(), i);
    uint32_t q = NextKey(y, b.size(), j);
    if (p != q) return p < q;
  }
  return i == a.size() && j < b.size();
}

// ---------------------------------------------------------------------------------
// Header encoding: the bytes of archive's tar-writer encodeHeader.

// writeNumber: zero-padded octal and a NUL; GNU base-256 (two's complement, first byte
// 0x80 or 0xff) when the value does not fit.
void WriteNumber(uint8_t* b, int width, int64_t v) {
  int64_t max = (int64_t{1} << (3 * (width - 1))) - 1;
  if (v >= 0 && v <= max) {
    b[width - 1] = 0;
    uint64_t u = static_cast<uint64_t>(v);
    for (int i = width - 2; i >= 0; i--) {
      b[i] = static_cast<uint8_t>('0' + (u & 7));
      u >>= 3;
    }
    return;
  }
  uint64_t u = static_cast<uint64_t>(v);
  for (int k = 0; k < width; k++) {
    b[width - 1 - k] = k < 8 ? static_cast<uint8_t>(u >> (8 * k)) : (v < 0 ? 0xff : 0);
  }
  b[0] = v < 0 ? 0xff : 0x80;
}

void SealChecksum(uint8_t* b) {
  memset(b + 148, ' ', 8);
  unsigned sum = 0;
  for (size_t i = 0; i < kBlock; i++) sum += b[i];
  for (int i = 5; i >= 0; i--) {
    b[148 + i] = static_cast<uint8_t>('0' + (sum & 7));
    sum >>= 3;
  }
  b[154] = 0;
  b[155] = ' ';
}

size_t Digits(size_t v) {
  size_t d = 1;
  while (v >= 10) { v /= 10; d++; }
  return d;
}

// encodePaxRecord: "<len> key=value\n", len counting the whole record.
void PaxRecord(std::string& out, const char* key, size_t klen, const char* value, size_t vlen) {
  size_t rest = 1 + klen + 1 + vlen + 1;
  size_t len = rest + Digits(rest);
  if (Digits(len) != Digits(rest)) len = rest + Digits(len);
  out += std::to_string(len);
  out += ' ';
  out.append(key, klen);
  out += '=';
  out.append(value, vlen);
  out += '\n';
}

void PaxRecord(std::string& out, const char* key, const std::string& value) {
  PaxRecord(out, key, strlen(key), value.data(), value.size());
}

// formatPaxTime of sec (floor) + nsec: no trailing zeros in the fraction.
std::string PaxTime(int64_t sec, long nsec) {
  bool negative = sec < 0;
  uint64_t whole;
  long frac;
  if (!negative) {
    whole = static_cast<uint64_t>(sec);
    frac = nsec;
  } else if (nsec == 0) {
    whole = static_cast<uint64_t>(-(sec + 1)) + 1;
    frac = 0;
  } else {
    whole = static_cast<uint64_t>(-(sec + 1));
    frac = 1000000000L - nsec;
  }
  std::string s = negative ? "-" : "";
  s += std::to_string(whole);
  if (frac != 0) {
    char buf[9];
    for (int i = 8; i >= 0; i--) {
      buf[i] = static_cast<char>('0' + frac % 10);
      frac /= 10;
    }
    size_t end = 9;
    while (buf[end - 1] == '0') end--;
    s += '.';
    s.append(buf, end);
  }
  return s;
}

struct Header {
  std::string name;  // dirs end in '/'
  char type = '0';
  uint32_t mode = 0;
  int64_t uid = 0, gid = 0, size = 0;
  int64_t sec = 0;  // floor of the mtime
  long nsec = 0;
  std::string link;
  int64_t devmajor = 0, devminor = 0;
  std::vector<XattrKV>* xattrs = nullptr;  // exportable ones, sorted
};

// The PaxHeaders/<base> name: the last component, each UTF-16 unit outside printable
// ASCII as '_', cut at 80 units.
void PaxHeaderName(const std::string& name, uint8_t* field) {
  size_t end = name.size();
  if (end > 0 && name[end - 1] == '/') end--;
  size_t start = 0;
  for (size_t i = end; i > 0; i--) {
    if (name[i - 1] == '/') {
      start = i;
      break;
    }
  }
  memcpy(field, "PaxHeaders/", 11);
  size_t out = 0;
  const auto* s = reinterpret_cast<const unsigned char*>(name.data());
  for (size_t i = start; i < end && out < 80;) {
    unsigned c = s[i];
    if (c >= 0x20 && c <= 0x7e) {
      field[11 + out++] = static_cast<uint8_t>(c);
      i++;
      continue;
    }
    uint32_t key = NextKey(s, end, i);
    bool supplementary = key >= 0x10000 && key < 0x200000;
    field[11 + out++] = '_';
    if (supplementary && out < 80) field[11 + out++] = '_';
  }
}

void Encode(const Header& h, std::string& out) {
  std::string pax;
  if (h.name.size() > 100) PaxRecord(pax, "path", 4, h.name.data(), h.name.size());
  if (h.link.size() > 100) PaxRecord(pax, "linkpath", 8, h.link.data(), h.link.size());
  if (h.uid > kOctal8) PaxRecord(pax, "uid", std::to_string(h.uid));
  if (h.gid > kOctal8) PaxRecord(pax, "gid", std::to_string(h.gid));
  if (h.size > kOctal12) PaxRecord(pax, "size", std::to_string(h.size));
  if (h.nsec != 0 || h.sec < 0 || h.sec > kOctal12) PaxRecord(pax, "mtime", PaxTime(h.sec, h.nsec));
  if (h.xattrs != nullptr) {
    for (const XattrKV& x : *h.xattrs) {
      std::string key = "SCHILY.xattr." + x.name;
      PaxRecord(pax, key.data(), key.size(), x.value.data(), x.value.size());
    }
  }
  size_t at = out.size();
  size_t paxBlocks = pax.empty() ? 0 : 1 + (pax.size() + kBlock - 1) / kBlock;
  out.resize(at + (paxBlocks + 1) * kBlock, '\0');
  auto* b = reinterpret_cast<uint8_t*>(&out[at]);
  if (!pax.empty()) {
    PaxHeaderName(h.name, b);
    WriteNumber(b + 100, 8, 0644);
    WriteNumber(b + 108, 8, 0);
    WriteNumber(b + 116, 8, 0);
    WriteNumber(b + 124, 12, static_cast<int64_t>(pax.size()));
    WriteNumber(b + 136, 12, 0);
    b[156] = 'x';
    memcpy(b + 257, "ustar\0" "00", 8);
    WriteNumber(b + 329, 8, 0);
    WriteNumber(b + 337, 8, 0);
    SealChecksum(b);
    memcpy(b + kBlock, pax.data(), pax.size());
    b += paxBlocks * kBlock;
  }
  memcpy(b, h.name.data(), std::min<size_t>(h.name.size(), 100));
  WriteNumber(b + 100, 8, h.mode & 07777);
  WriteNumber(b + 108, 8, h.uid);
  WriteNumber(b + 116, 8, h.gid);
  WriteNumber(b + 124, 12, h.size);
  WriteNumber(b + 136, 12, h.sec);
  b[156] = static_cast<uint8_t>(h.type);
  memcpy(b + 157, h.link.data(), std::min<size_t>(h.link.size(), 100));
  memcpy(b + 257, "ustar\0" "00", 8);
  WriteNumber(b + 329, 8, h.devmajor);
  WriteNumber(b + 337, 8, h.devminor);
  SealChecksum(b);
}

// ---------------------------------------------------------------------------------

bool Exportable(const std::string& name) {
  return name.compare(0, 16, "trusted.overlay.") != 0 && name.compare(0, 13, "user.overlay.") != 0 &&
         name != "security.selinux";
}

// A packer failure the JS side turns into a CairnError (code, subject) rather than a
// Node-style errno error.
struct Fault {
  std::string code;     // 'ERR_LAYER_NOT_FOUND' | 'ERR_INVALID_ARCHIVE'
  std::string subject;  // the entry's path
  std::string detail;   // for ERR_INVALID_ARCHIVE: which problem ('short' | 'xattr:<name>')
};

struct PackError {
  SysError sys;
  Fault fault;
  bool isFault = false;
};

struct Level {
  DIR* dir = nullptr;
  std::string prefix;               // rel of this directory + '/', '' for the root
  std::vector<std::string> names;   // walk mode: children, sorted
  size_t pos = 0;
};

struct InodeKey {
  uint64_t dev, ino;
  bool operator==(const InodeKey& o) const { return dev == o.dev && ino == o.ino; }
};
struct InodeHash {
  size_t operator()(const InodeKey& k) const { return std::hash<uint64_t>()(k.ino * 1000003u ^ k.dev); }
};

class Packer : public Napi::ObjectWrap<Packer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "TarPacker", {
      InstanceMethod<&Packer::Push>("push"),
      InstanceMethod<&Packer::End>("end"),
      InstanceMethod<&Packer::Fill>("fill"),
      InstanceMethod<&Packer::Close>("close"),
    });
  }

  // new TarPacker(root, flags, walk): walk = pack the whole tree (its entries in sorted
  // depth-first order, the root itself excluded); otherwise pack the paths pushed.
  explicit Packer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Packer>(info) {
    root_path_ = ArgString(info, 0, "root");
    flags_ = static_cast<int>(ArgOptInt(info, 1, "flags", 0));
    walk_ = info.Length() > 2 && info[2].ToBoolean().Value();
    maps_ = ArgIdShift(info, 3, "idMappings");  // the layer's storage map: owners packed host -> container
    int fd = open(root_path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      SysError e;
      PathError(e, errno, walk_ ? "scandir" : "open", root_path_);
      ThrowSysError(info.Env(), e);
    }
    if (!(flags_ & (kLegacy | kNoNodevView))) {
      if (int view = NodevView(fd); view >= 0) {
        close(fd);
        fd = view;
        nodev_ = true;
      }
    }
    Level root;
    root.dir = fdopendir(fd);
    if (root.dir == nullptr) {
      SysError e;
      PathError(e, errno, "scandir", root_path_);
      close(fd);
      ThrowSysError(info.Env(), e);
    }
    if (walk_) {
      ended_ = true;
      PackError pe;
      if (!ListNames(root, root_path_, pe)) {
        closedir(root.dir);
        Throw(info.Env(), pe);
      }
    }
    levels_.push_back(std::move(root));
  }

  ~Packer() override { Release(); }

 private:
  // push(rels, deletes): queue paths (relative, normalised, not the root); deletes[i]
  // non-zero packs rels[i] as a whiteout.
  void Push(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (walk_ || ended_) throw Napi::Error::New(env, "TarPacker: push after end");
    if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsTypedArray())
      throw Napi::TypeError::New(env, "push(rels: string[], deletes: Uint8Array)");
    Napi::Array rels = info[0].As<Napi::Array>();
    Napi::Uint8Array del = info[1].As<Napi::Uint8Array>();
    uint32_t n = rels.Length();
    if (del.ElementLength() < n) throw Napi::RangeError::New(env, "deletes is shorter than rels");
    for (uint32_t i = 0; i < n; i++) {
      Napi::Value v = rels.Get(i);
      if (!v.IsString()) throw Napi::TypeError::New(env, "rels must be strings");
      queue_.push_back({v.As<Napi::String>().Utf8Value(), del[i] != 0});
    }
  }

  void End(const Napi::CallbackInfo&) { ended_ = true; }

  void Close(const Napi::CallbackInfo&) { Release(); }

  // fill(buf, offset) → new offset: writes the archive into buf from offset until buf is
  // full, the pushed paths are used up (call push or end), or the archive is complete.
  Napi::Value Fill(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, "fill(buf: Uint8Array, offset)");
    Napi::Uint8Array buf = info[0].As<Napi::Uint8Array>();
    int64_t off = ArgInt(info, 1, "offset");
    size_t cap = buf.ByteLength();
    if (off < 0 || static_cast<size_t>(off) > cap) throw Napi::RangeError::New(env, "offset must lie within buf");
    if (closed_) throw Napi::Error::New(env, "TarPacker: closed");
    uint8_t* p = buf.Data();
    size_t at = static_cast<size_t>(off);
    Populate(p + at, cap - at);
    PackError pe;
    if (!FillInto(p, cap, at, pe)) {
      Release();
      Throw(env, pe);
    }
    return Napi::Number::New(env, static_cast<double>(at));
  }

  // The output buffer is usually fresh memory (a new Buffer per chunk, so a consumer may
  // keep every chunk): its pages are not mapped yet, and the kernel's copy into it would
  // take one page fault per 4 KiB — a quarter of export's CPU on a VM where each fault
  // traps (docs/benchmarks.md). One MADV_POPULATE_WRITE maps the whole range in a single
  // call instead; on kernels before 5.14 it fails with EINVAL and is not tried again.
  static void Populate(uint8_t* p, size_t n) {
    static std::atomic<bool> supported{true};  // packers may run on several threads
    constexpr uintptr_t kPage = 4096;
    uintptr_t a = (reinterpret_cast<uintptr_t>(p) + kPage - 1) & ~(kPage - 1);
    uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n) & ~(kPage - 1);
    if (!supported || e < a + 16 * kPage) return;
    if (madvise(reinterpret_cast<void*>(a), e - a, kMadvPopulateWrite) != 0 && errno == EINVAL) supported = false;
  }

  bool FillInto(uint8_t* p, size_t cap, size_t& at, PackError& pe) {
    while (at < cap) {
      if (out_pos_ < out_.size()) {
        size_t n = std::min(cap - at, out_.size() - out_pos_);
        memcpy(p + at, out_.data() + out_pos_, n);
        at += n;
        out_pos_ += n;
        continue;
      }
      if (file_left_ > 0) {
        size_t want = static_cast<size_t>(std::min<uint64_t>(file_left_, cap - at));
        ssize_t n = read(file_fd_, p + at, want);
        if (n < 0) {
          if (errno == EINTR) continue;
          PathError(pe.sys, errno, "read", root_path_ + "/" + file_rel_);
          return false;
        }
        if (n == 0) {
          pe.isFault = true;
          pe.fault = {"ERR_INVALID_ARCHIVE", file_rel_, "short:" + std::to_string(file_size_)};
          return false;
        }
        at += static_cast<size_t>(n);
        file_left_ -= static_cast<uint64_t>(n);
        continue;
      }
      if (file_fd_ >= 0) {
        close(file_fd_);
        file_fd_ = -1;
      }
      if (pad_ > 0) {
        size_t n = std::min(cap - at, pad_);
        memset(p + at, 0, n);
        at += n;
        pad_ -= n;
        continue;
      }
      if (done_) break;
      out_.clear();
      out_pos_ = 0;
      bool more;
      if (!Next(more, pe)) return false;
      if (!more) {
        if (!ended_) break;  // wait for push or end
        out_.assign(2 * kBlock, '\0');
        done_ = true;
      }
    }
    return true;
  }

  // Produces the next entry's bytes (out_, then file_fd_/file_left_, then pad_); more =
  // false when there is nothing left to pack for now.
  bool Next(bool& more, PackError& pe) {
    more = true;
    if (walk_) {
      for (;;) {
        if (levels_.empty()) {
          more = false;
          return true;
        }
        Level& level = levels_.back();
        if (level.pos == level.names.size()) {
          closedir(level.dir);
          levels_.pop_back();
          continue;
        }
        // Copies: Entry may push a level, which moves `level`.
        std::string base = level.names[level.pos++];
        std::string parent = level.prefix;
        int dirfd = ::dirfd(level.dir);
        if (base.back() == '/') {
          // kPathOrder: a directory's contents, at the place "name/" sorts among its siblings.
          base.pop_back();
          int fd = openat(dirfd, base.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          if (fd < 0) {
            if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) continue;  // gone or replaced since the listing
            PathError(pe.sys, errno, "scandir", root_path_ + "/" + parent + base);
            return false;
          }
          if (!PushLevel(fd, parent + base + "/", pe)) return false;
          if (!ListNames(levels_.back(), root_path_ + "/" + parent + base, pe)) return false;
          continue;
        }
        std::string rel = parent + base;
        struct stat st;
        int pathfd;
        if (int err = Lstat(dirfd, base, st, pathfd); err != 0) {
          if (err == ENOENT) continue;  // removed since the listing
          PathError(pe.sys, err, "lstat", root_path_ + "/" + rel);
          return false;
        }
        bool ok = Entry(dirfd, base, rel, parent, st, pathfd, pe);
        if (pathfd >= 0) close(pathfd);
        if (!ok) return false;
        if (out_.empty()) continue;  // a socket
        return true;
      }
    }
    while (!queue_.empty()) {
      Queued q = std::move(queue_.front());
      queue_.pop_front();
      size_t slash = q.rel.rfind('/');
      std::string parent = slash == std::string::npos ? "" : q.rel.substr(0, slash + 1);
      std::string base = slash == std::string::npos ? q.rel : q.rel.substr(slash + 1);
      if (q.del) {
        Header h;
        h.name = parent + ".wh." + base;
        h.mode = 0;
        Encode(h, out_);
        return true;
      }
      int dirfd = -1;
      if (!Cursor(parent, dirfd, q.rel, pe)) return false;
      struct stat st;
      int pathfd;
      if (int err = Lstat(dirfd, base, st, pathfd); err != 0) {
        if (err == ENOENT || err == ENOTDIR) return NotFound(q.rel, pe);
        PathError(pe.sys, err, "lstat", root_path_ + "/" + q.rel);
        return false;
      }
      bool ok = Entry(dirfd, base, q.rel, parent, st, pathfd, pe);
      if (pathfd >= 0) close(pathfd);
      if (!ok) return false;
      if (out_.empty()) continue;  // a socket
      return true;
    }
    more = false;
    return true;
  }

  // The lstat of dirfd/base: 0 or an errno. In a nodev view (nodev_), a plain fstatat:
  // OpenRegular then opens the name itself. Where regular files are reopened through
  // handles, the name is opened O_PATH|O_NOFOLLOW (a symlink gives the link itself; O_PATH
  // calls no device's open) and that fd fstat'ed, and *pathfd is that fd (the caller
  // closes it): the header is built from the very inode a regular file's content is then
  // reopened from, so OpenRegular needs no second lookup and identity check — one syscall
  // less per file than an fstatat followed by that open. Otherwise a plain fstatat.
  int Lstat(int dirfd, const std::string& base, struct stat& st, int& pathfd) {
    pathfd = -1;
    if (nodev_ || !handles_ || (flags_ & kLegacy)) return fstatat(dirfd, base.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
    int p = openat(dirfd, base.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (p < 0) return errno;
    if (fstat(p, &st) != 0) {
      int err = errno;
      close(p);
      return err;
    }
    pathfd = p;
    return 0;
  }

  bool NotFound(const std::string& rel, PackError& pe) {
    pe.isFault = true;
    pe.fault = {"ERR_LAYER_NOT_FOUND", rel, ""};
    return false;
  }

  // Changes mode: makes levels_ hold the open directories of `parent` ('' or 'a/b/'),
  // reusing the ones already open (the paths arrive sorted, so mostly all of them).
  bool Cursor(const std::string& parent, int& dirfd, const std::string& rel, PackError& pe) {
    size_t keep = 1;
    while (keep < levels_.size() && parent.compare(0, levels_[keep].prefix.size(), levels_[keep].prefix) == 0) keep++;
    while (levels_.size() > keep) {
      closedir(levels_.back().dir);
      levels_.pop_back();
    }
    while (levels_.back().prefix.size() < parent.size()) {
      const std::string& have = levels_.back().prefix;
      size_t end = parent.find('/', have.size());
      std::string comp = parent.substr(have.size(), end - have.size());
      int fd = openat(::dirfd(levels_.back().dir), comp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) return NotFound(rel, pe);
        PathError(pe.sys, errno, "open", root_path_ + "/" + parent.substr(0, end));
        return false;
      }
      if (!PushLevel(fd, parent.substr(0, end + 1), pe)) return false;
    }
    dirfd = ::dirfd(levels_.back().dir);
    return true;
  }

  bool PushLevel(int fd, std::string prefix, PackError& pe) {
    Level l;
    l.dir = fdopendir(fd);
    if (l.dir == nullptr) {
      PathError(pe.sys, errno, "scandir", root_path_ + "/" + prefix);
      close(fd);
      return false;
    }
    l.prefix = std::move(prefix);
    levels_.push_back(std::move(l));
    return true;
  }

  // Walk mode: every name of the directory, in JS sort() order.
  bool ListNames(Level& l, const std::string& path, PackError& pe) {
    for (;;) {
      errno = 0;
      struct dirent* ent = readdir(l.dir);
      if (ent == nullptr) {
        if (errno != 0) {
          PathError(pe.sys, errno, "scandir", path);
          return false;
        }
        break;
      }
      const char* n = ent->d_name;
      if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
      l.names.emplace_back(n);
      if (!(flags_ & kPathOrder)) continue;
      bool isDir = ent->d_type == DT_DIR;
      struct stat st;
      if (ent->d_type == DT_UNKNOWN && fstatat(::dirfd(l.dir), n, &st, AT_SYMLINK_NOFOLLOW) == 0) isDir = S_ISDIR(st.st_mode);
      if (isDir) l.names.push_back(std::string(n) + "/");
    }
    std::sort(l.names.begin(), l.names.end(), Utf16Less);
    return true;
  }

  // The entries for one lstat'ed path (exportChanges' statEntries): `parent` is its
  // directory's prefix ('' or 'a/b/'), `dirfd` that directory.
  // `pathfd`: the O_PATH fd `st` came from (Lstat), or -1; not closed here.
  bool Entry(int dirfd, const std::string& base, const std::string& rel, const std::string& parent,
             const struct stat& st, int pathfd, PackError& pe) {
    if (!(flags_ & kKeepWhiteoutNames) && base.compare(0, 4, ".wh.") == 0) {
      pe.isFault = true;
      pe.fault = {"ERR_UNSAFE_ARCHIVE", rel, "whiteout-name"};
      return false;
    }
    Header h;
    switch (st.st_mode & S_IFMT) {
      case S_IFREG: h.type = '0'; break;
      case S_IFDIR: h.type = '5'; break;
      case S_IFLNK: h.type = '2'; break;
      case S_IFCHR: h.type = '3'; break;
      case S_IFBLK: h.type = '4'; break;
      case S_IFIFO: h.type = '6'; break;
      default: return true;  // sockets have no tar form
    }
    h.mode = st.st_mode & 07777;
    // A whiteout's owner means nothing (overlayfs makes them with the mounter's ids, outside
    // any container map): unmapped, it is packed as 0:0.
    bool whiteout = (flags_ & kOverlay) && S_ISCHR(st.st_mode) && st.st_rdev == 0;
    if (!Owner(st.st_uid, st.st_gid, h, rel, pe, whiteout)) return false;
    h.sec = st.st_mtim.tv_sec;
    h.nsec = st.st_mtim.tv_nsec;
    if ((flags_ & kOverlay) && h.type == '3' && st.st_rdev == 0) {
      // moby's overlay converter: the whiteout keeps the device's owner and mtime, mode 0600.
      h.type = '0';
      h.mode = 0600;
      h.name = parent + ".wh." + base;
      Encode(h, out_);
      return true;
    }
    if (h.type != '5' && st.st_nlink > 1) {
      InodeKey key{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
      auto it = inodes_.find(key);
      if (it != inodes_.end()) {
        h.type = '1';
        h.name = rel;
        h.link = it->second;
        Encode(h, out_);
        return true;
      }
      inodes_.emplace(key, rel);
    }
    h.name = rel;
    xattrs_.clear();
    opaque_ = false;
    int fd = -1;
    const char* name = nullptr;
    switch (h.type) {
      case '0':
        fd = OpenRegular(dirfd, base, rel, st, pathfd, pe);
        if (fd < 0) return false;
        h.size = st.st_size;
        break;
      case '5': {
        fd = openat(dirfd, base.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
          PathError(pe.sys, errno, "scandir", root_path_ + "/" + rel);
          return false;
        }
        struct stat now;
        if (fstat(fd, &now) != 0 || now.st_dev != st.st_dev || now.st_ino != st.st_ino) {
          close(fd);
          return Changed(rel, pe);
        }
        h.name += '/';
        break;
      }
      case '2':
        if (!ReadLink(dirfd, base, rel, static_cast<size_t>(st.st_size), h.link, pe)) return false;
        [[fallthrough]];
      default:
        name = base.c_str();  // xattrs of the name in dirfd, never followed
        if (h.type == '3' || h.type == '4') {
          h.devmajor = major(st.st_rdev);
          h.devminor = minor(st.st_rdev);
        }
    }
    if (!ReadXattrs(fd >= 0 ? fd : dirfd, name, rel, pe)) {
      if (fd >= 0) close(fd);
      return false;
    }
    for (const XattrKV& x : xattrs_) {
      if (x.name.find('=') != std::string::npos) {
        if (fd >= 0) close(fd);
        pe.isFault = true;
        pe.fault = {"ERR_INVALID_ARCHIVE", h.name, "xattr:" + x.name};
        return false;
      }
    }
    if (h.type == '0' && st.st_size == 0 && (st.st_mode & 07777) == 0 && !xattrs_.empty()) {
      if (!RecordedDevice(h, rel, pe)) {
        close(fd);
        return false;
      }
      if (h.type != '0') {
        close(fd);
        fd = -1;
      }
    }
    if (!xattrs_.empty()) h.xattrs = &xattrs_;
    Encode(h, out_);
    if (h.type == '0') {
      file_fd_ = fd;
      file_left_ = static_cast<uint64_t>(h.size);
      file_size_ = h.size;
      file_rel_ = rel;
      pad_ = (kBlock - static_cast<size_t>(h.size % kBlock)) % kBlock;
    } else if (h.type == '5') {
      if (opaque_ && (flags_ & kOverlay)) {
        Header o;
        o.name = rel + "/.wh..wh..opq";
        o.mode = h.mode & 0777;
        o.uid = h.uid;
        o.gid = h.gid;
        o.sec = h.sec;
        o.nsec = h.nsec;
        Encode(o, out_);
      }
      if (walk_ && (flags_ & kPathOrder)) {
        close(fd);  // its contents come where "name/" sorts (ListNames)
        return true;
      }
      // The directory's children come next: in walk mode all of them, in changes mode
      // most likely (sorted paths), so it becomes the innermost open directory.
      if (!PushLevel(fd, rel + "/", pe)) return false;
      if (walk_ && !ListNames(levels_.back(), root_path_ + "/" + rel, pe)) return false;
    }
    return true;
  }

  bool ReadLink(int dirfd, const std::string& base, const std::string& rel, size_t hint, std::string& out,
                PackError& pe) {
    out.assign(hint > 0 ? hint + 1 : 256, '\0');
    for (;;) {
      ssize_t n = readlinkat(dirfd, base.c_str(), &out[0], out.size());
      if (n < 0) {
        PathError(pe.sys, errno, "readlink", root_path_ + "/" + rel);
        return false;
      }
      if (static_cast<size_t>(n) < out.size()) {
        out.resize(static_cast<size_t>(n));
        return true;
      }
      out.resize(out.size() * 2);
    }
  }

  // The exportable xattrs (sorted) of the open fd, or of dirfd/name (not followed) when
  // name is given; notes overlay's opaque marker.
  bool ReadXattrs(int fd, const char* name, const std::string& rel, PackError& pe) {
    std::vector<XattrKV> all;
    const char* failed = "llistxattr";
    int err = nofollow::ReadXattrs(fd, name, all, &failed, (flags_ & kLegacy) != 0);
    if (err != 0) {
      PathError(pe.sys, err, failed, root_path_ + "/" + rel);
      return false;
    }
    for (XattrKV& x : all) {
      if (x.name == "trusted.overlay.opaque" || x.name == "user.overlay.opaque") {  // userxattr mounts use the latter
        opaque_ = x.value.size() == 1 && x.value[0] == 'y';
        continue;
      }
      if (Exportable(x.name)) xattrs_.push_back(std::move(x));
    }
    if (xattrs_.size() > 1) {
      std::sort(xattrs_.begin(), xattrs_.end(), [](const XattrKV& a, const XattrKV& b) { return Utf16Less(a.name, b.name); });
    }
    return true;
  }

  // The owner a header carries: as on disk, or mapped host -> container when the layer is
  // stored shifted (its id map given at construction); an owner outside the map is EOVERFLOW.
  bool Owner(int64_t uid, int64_t gid, Header& h, const std::string& rel, PackError& pe, bool lenient = false) {
    h.uid = uid;
    h.gid = gid;
    if (maps_.empty() || (IdShift::Map(maps_.uids, uid, false, &h.uid) && IdShift::Map(maps_.gids, gid, false, &h.gid))) return true;
    if (lenient) {
      h.uid = 0;
      h.gid = 0;
      return true;
    }
    PathError(pe.sys, EOVERFLOW, "chown", root_path_ + "/" + rel);
    pe.sys.detail = "owner " + std::to_string(uid) + ":" + std::to_string(gid) + " has no mapping in the layer's id map";
    return false;
  }

  // An empty 0000 file with an override_stat xattr naming a device is the placeholder an
  // unprivileged apply left for a device it could not make (owners.h): packed as the device.
  bool RecordedDevice(Header& h, const std::string& rel, PackError& pe) {
    for (auto it = xattrs_.begin(); it != xattrs_.end(); ++it) {
      if (it->name != kOverrideStatXattr) continue;
      int64_t uid, gid, ma, mi;
      uint32_t mode;
      bool block;
      if (!ParseOverrideStat(it->value, &uid, &gid, &mode, &block, &ma, &mi)) return true;
      if (!Owner(uid, gid, h, rel, pe)) return false;
      h.type = block ? '4' : '3';
      h.mode = mode;
      h.size = 0;
      h.devmajor = ma;
      h.devminor = mi;
      xattrs_.erase(it);
      return true;
    }
    return true;
  }

  // The regular file `st` describes (the lstat its header is built from), opened for
  // reading; a name that no longer holds that very file is Changed. In a nodev view (the
  // root's mount cloned with MOUNT_ATTR_NODEV, where this process may clone mounts) the
  // name is opened directly (O_NOFOLLOW|O_NONBLOCK|O_NOCTTY: no symlink followed, no fifo
  // blocking, no tty taken) and checked before a byte is read: a device swapped in fails
  // the open (EACCES) before its driver's open runs; a fifo opened at that instant is
  // closed unread. That is 2 syscalls per file fewer than a handle reopen, 6 in all, as
  // GNU tar's. Otherwise, where this process may (CAP_DAC_READ_SEARCH, a filesystem with
  // file handles), the file is reopened from a handle of an O_PATH fd checked first, so
  // nothing but that regular file is ever opened; failing both, by name as above, where a
  // device swapped in at that instant has its open called, never its content read.
  // `pathfd`, when not -1, is the O_PATH fd `st` was fstat'ed from (Lstat): reopened as it
  // is, with no lookup by name and nothing to check; it stays open (the caller's).
  int OpenRegular(int dirfd, const std::string& base, const std::string& rel, const struct stat& st, int pathfd,
                  PackError& pe) {
    constexpr int kRead = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    int fd = -1;
    if (nodev_) {
      fd = openat(dirfd, base.c_str(), kRead | O_NOFOLLOW);
      if (fd >= 0) return SameFile(fd, st) ? fd : ChangedFd(rel, pe);
      // Opening a regular file never fails so: gone, a symlink or a socket in its place.
      if (errno == ENOENT || errno == ELOOP || errno == ENXIO) return ChangedFd(rel, pe);
      if (errno != EACCES) {
        PathError(pe.sys, errno, "open", root_path_ + "/" + rel);
        return -1;
      }
      // A device in its place (the view refuses to open devices), or a file this process
      // may not read: the handle path below tells the two apart without opening a device.
    }
    if (handles_ && !(flags_ & kLegacy)) {
      int p = pathfd;
      if (p < 0) {
        p = openat(dirfd, base.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (p < 0) {
          if (errno == ENOENT) return ChangedFd(rel, pe);
          PathError(pe.sys, errno, "open", root_path_ + "/" + rel);
          return -1;
        }
        struct stat now;
        if (fstat(p, &now) != 0 || !S_ISREG(now.st_mode) || now.st_dev != st.st_dev || now.st_ino != st.st_ino) {
          close(p);
          return ChangedFd(rel, pe);
        }
      }
      struct {
        file_handle h;
        unsigned char bytes[MAX_HANDLE_SZ];
      } fh;
      fh.h.handle_bytes = MAX_HANDLE_SZ;
      int mount;
      if (name_to_handle_at(p, "", &fh.h, &mount, AT_EMPTY_PATH) == 0) {
        fd = open_by_handle_at(dirfd, &fh.h, kRead);
        if (fd < 0 && errno != EPERM && errno != EOPNOTSUPP && errno != ENOSYS) {
          int err = errno;
          if (p != pathfd) close(p);
          if (err == ESTALE) return ChangedFd(rel, pe);
          PathError(pe.sys, err, "open", root_path_ + "/" + rel);
          return -1;
        }
      }
      if (p != pathfd) close(p);
      if (fd >= 0) return fd;  // the inode of the fd just checked: nothing to check again
      handles_ = false;  // not permitted or not supported here: by name from now on
    }
    fd = openat(dirfd, base.c_str(), kRead | O_NOFOLLOW);
    if (fd < 0) {
      PathError(pe.sys, errno, "open", root_path_ + "/" + rel);
      return -1;
    }
    return SameFile(fd, st) ? fd : ChangedFd(rel, pe);
  }

  // Whether the open `fd` is the regular file `st` describes; closes it if not.
  static bool SameFile(int fd, const struct stat& st) {
    struct stat now;
    if (fstat(fd, &now) == 0 && S_ISREG(now.st_mode) && now.st_dev == st.st_dev && now.st_ino == st.st_ino) return true;
    close(fd);
    return false;
  }

  // A path replaced between its lstat and its open (or read): the archive would be
  // wrong, so the packer fails (ERR_INVALID_ARCHIVE, detail 'changed') instead of emitting
  // what is there now.
  bool Changed(const std::string& rel, PackError& pe) {
    pe.isFault = true;
    pe.fault = {"ERR_INVALID_ARCHIVE", rel, "changed"};
    return false;
  }
  int ChangedFd(const std::string& rel, PackError& pe) {
    Changed(rel, pe);
    return -1;
  }

  [[noreturn]] void Throw(Napi::Env env, const PackError& pe) {
    if (!pe.isFault) ThrowSysError(env, pe.sys);
    Napi::Error e = Napi::Error::New(env, pe.fault.code + ": " + pe.fault.subject);
    e.Set("cairnCode", Napi::String::New(env, pe.fault.code));
    e.Set("subject", Napi::String::New(env, pe.fault.subject));
    e.Set("detail", Napi::String::New(env, pe.fault.detail));
    throw e;
  }

  void Release() {
    closed_ = true;
    for (Level& l : levels_) closedir(l.dir);
    levels_.clear();
    if (file_fd_ >= 0) close(file_fd_);
    file_fd_ = -1;
    file_left_ = 0;
    queue_.clear();
  }

  IdShift maps_;

  struct Queued {
    std::string rel;
    bool del;
  };

  std::string root_path_;
  int flags_ = 0;
  bool walk_ = false;
  bool ended_ = false;
  bool done_ = false;
  bool closed_ = false;
  std::deque<Queued> queue_;
  std::vector<Level> levels_;  // [0] is the root; changes mode: the open directories of the current parent
  std::unordered_map<InodeKey, std::string, InodeHash> inodes_;  // first path of each multiply-linked inode
  std::string out_;            // header bytes not yet copied out
  size_t out_pos_ = 0;
  int file_fd_ = -1;           // the file whose content follows its header
  uint64_t file_left_ = 0;
  int64_t file_size_ = 0;
  std::string file_rel_;
  size_t pad_ = 0;             // zero bytes after the content, to the block boundary
  std::vector<XattrKV> xattrs_;
  bool handles_ = true;        // files reopened through handles (until refused once)
  bool nodev_ = false;         // levels_[0] is in a nodev clone of the root's mount (NodevView)
  bool opaque_ = false;
};

}  // namespace

void InitTarPack(Napi::Env env, Napi::Object exports) {
  exports.Set("TarPacker", Packer::Define(env));
}

}  // namespace cairn
