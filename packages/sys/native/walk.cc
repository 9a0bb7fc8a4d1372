// Bulk tree reading for diff and export: one call lists a directory (or lstats a batch
// of paths) and returns every entry's lstat fields as plain numbers in one Float64Array,
// plus xattrs and symlink targets on request. Per entry this replaces a Node lstat
// (BigIntStats construction), an llistxattr call and a readlink call, each a separate
// JS→C++ crossing with its own argument checks and result objects.
#include "common.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <cerrno>
#include <cstring>

#include "beneath.h"
#include "nofollow.h"

namespace cairn {

namespace {

// Per-entry fields in the stats array, in this order (keep in sync with src/walk.ts).
enum Field {
  kMode, kUid, kGid, kSize, kNlink, kInoHi, kInoLo, kDev, kRdevMajor, kRdevMinor,
  kMtimeSec, kMtimeNsec, kCtimeSec, kCtimeNsec, kFields
};

// Flags: what to read beyond lstat.
constexpr int kWantXattrs = 1;    // every xattr name and value (of the name relative to its directory fd, never followed)
constexpr int kWantLinks = 2;     // symlink targets (readlinkat)
constexpr int kTypesOnly = 4;     // statDir only: mode's S_IFMT bits from d_type, no fstatat
                                  // (fstatat still runs where the fs reports DT_UNKNOWN)

struct Xattr {
  uint32_t index;
  std::string name;
  std::vector<char> value;
};

struct Link {
  uint32_t index;
  std::string target;
};

struct Listing {
  std::vector<std::string> names;
  std::vector<double> stats;
  std::vector<Xattr> xattrs;
  std::vector<Link> links;
};

void PutStat(std::vector<double>& out, size_t i, const struct stat& st) {
  double* f = &out[i * kFields];
  f[kMode] = st.st_mode;
  f[kUid] = st.st_uid;
  f[kGid] = st.st_gid;
  f[kSize] = static_cast<double>(st.st_size);
  f[kNlink] = static_cast<double>(st.st_nlink);
  // Inode numbers can use all 64 bits (tmpfs inode64, overlayfs xino): split so they stay exact.
  f[kInoHi] = static_cast<double>(static_cast<uint64_t>(st.st_ino) >> 32);
  f[kInoLo] = static_cast<double>(static_cast<uint64_t>(st.st_ino) & 0xffffffffu);
  f[kDev] = static_cast<double>(st.st_dev);
  f[kRdevMajor] = major(st.st_rdev);
  f[kRdevMinor] = minor(st.st_rdev);
  f[kMtimeSec] = static_cast<double>(st.st_mtim.tv_sec);
  f[kMtimeNsec] = static_cast<double>(st.st_mtim.tv_nsec);
  f[kCtimeSec] = static_cast<double>(st.st_ctim.tv_sec);
  f[kCtimeNsec] = static_cast<double>(st.st_ctim.tv_nsec);
}

// Every xattr of dirfd/name itself (name not followed), as nofollow::ReadXattrs.
bool ReadXattrs(int dirfd, const char* name, const std::string& path, uint32_t index, std::vector<Xattr>& out, SysError& e) {
  std::vector<XattrKV> got;
  const char* failed = "llistxattr";
  int err = nofollow::ReadXattrs(dirfd, name, got, &failed, false);
  if (err != 0) {
    PathError(e, err, failed, path);
    return false;
  }
  for (XattrKV& x : got) out.push_back({index, std::move(x.name), std::vector<char>(x.value.begin(), x.value.end())});
  return true;
}

bool ReadLink(int dirfd, const char* rel, const std::string& path, size_t hint, uint32_t index,
              std::vector<Link>& out, SysError& e) {
  std::string buf(hint > 0 ? hint + 1 : 256, '\0');
  for (;;) {
    ssize_t n = readlinkat(dirfd, rel, buf.data(), buf.size());
    if (n < 0) {
      PathError(e, errno, "readlink", path);
      return false;
    }
    if (static_cast<size_t>(n) < buf.size()) {
      buf.resize(static_cast<size_t>(n));
      out.push_back({index, std::move(buf)});
      return true;
    }
    buf.resize(buf.size() * 2);
  }
}

// The extras an entry needs, once its lstat is known.
bool Extras(int dirfd, const char* rel, const std::string& path, const struct stat& st, uint32_t index,
            int flags, Listing& out, SysError& e) {
  if ((flags & kWantLinks) && S_ISLNK(st.st_mode)) {
    if (!ReadLink(dirfd, rel, path, static_cast<size_t>(st.st_size), index, out.links, e)) return false;
  }
  if (flags & kWantXattrs) return ReadXattrs(dirfd, rel, path, index, out.xattrs, e);
  return true;
}

mode_t ModeFromDtype(unsigned char t) {
  switch (t) {
    case DT_REG: return S_IFREG;
    case DT_DIR: return S_IFDIR;
    case DT_LNK: return S_IFLNK;
    case DT_CHR: return S_IFCHR;
    case DT_BLK: return S_IFBLK;
    case DT_FIFO: return S_IFIFO;
    case DT_SOCK: return S_IFSOCK;
    default: return 0;
  }
}

// Lists `dir`; with a `root` fd, `dir` is relative to it and opened beneath it without
// following a symlink (the layer may change under a running container).
void DoStatDir(int root, const std::string& dir, const std::string& shown, int flags, Listing& out, SysError& e) {
  int fd;
  if (root < 0) {
    fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  } else {
    int at = OpenBeneath(root, dir);
    // "." of that fd: the directory itself, as a real fd to read.
    fd = at < 0 ? -1 : openat(at, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (at >= 0) {
      int err = errno;
      close(at);
      errno = err;
    }
  }
  if (fd < 0) {
    PathError(e, errno, "scandir", shown);
    return;
  }
  DIR* d = fdopendir(fd);
  if (d == nullptr) {
    PathError(e, errno, "scandir", shown);
    close(fd);
    return;
  }
  std::string prefix = shown;
  if (prefix.empty() || prefix.back() != '/') prefix += '/';
  for (;;) {
    errno = 0;
    struct dirent* ent = readdir(d);
    if (ent == nullptr) {
      if (errno != 0) PathError(e, errno, "scandir", shown);
      break;
    }
    const char* n = ent->d_name;
    if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
    uint32_t index = static_cast<uint32_t>(out.names.size());
    out.names.emplace_back(n);
    out.stats.resize(out.stats.size() + kFields, 0);
    mode_t typed = (flags & kTypesOnly) ? ModeFromDtype(ent->d_type) : 0;
    if (typed != 0) {
      out.stats[index * kFields + kMode] = typed;
      continue;
    }
    struct stat st;
    if (fstatat(fd, n, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) {  // removed since readdir: not part of the listing
        out.names.pop_back();
        out.stats.resize(out.stats.size() - kFields);
        continue;
      }
      PathError(e, errno, "lstat", prefix + n);
      break;
    }
    PutStat(out.stats, index, st);
    if ((flags & (kWantXattrs | kWantLinks)) && !Extras(fd, n, prefix + n, st, index, flags, out, e)) break;
  }
  closedir(d);
}

// lstat of base/rel for each rel, its parent resolved beneath `base` without following a
// symlink (a path through one is not there) and its last component not followed. A path
// that is not there (ENOENT, ENOTDIR, a symlink or '..' on the way) gets mode 0 so the
// caller decides what that means; other failures end the batch with an error.
void DoStatPaths(const std::string& base, const std::vector<std::string>& rels, int flags, Listing& out, SysError& e) {
  int fd = open(base.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    PathError(e, errno, "open", base);
    return;
  }
  Fd guard(fd);
  std::string prefix = base;
  if (prefix.empty() || prefix.back() != '/') prefix += '/';
  out.stats.assign(rels.size() * kFields, 0);
  std::string parentRel;  // the parent resolved last, kept open: rels arrive sorted
  int parentFd = fd;
  auto release = [&] {
    if (parentFd != fd) close(parentFd);
    parentFd = fd;
    parentRel.clear();
  };
  for (size_t i = 0; i < rels.size(); i++) {
    std::string rel = rels[i];
    size_t start = rel.find_first_not_of('/');
    rel = start == std::string::npos ? "." : rel.substr(start);
    while (rel.size() > 1 && rel.back() == '/') rel.pop_back();
    size_t slash = rel.rfind('/');
    std::string parent = slash == std::string::npos ? "" : rel.substr(0, slash);
    std::string name = slash == std::string::npos ? rel : rel.substr(slash + 1);
    if (name == ".." || (name == "." && !parent.empty())) continue;  // never above (or beside) the path asked for
    if (parent != parentRel) {
      release();
      if (!parent.empty()) {
        int pfd = OpenBeneath(fd, parent);
        if (pfd < 0) {
          if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP || errno == EXDEV) continue;
          PathError(e, errno, "lstat", prefix + rel);
          return;
        }
        parentFd = pfd;
        parentRel = parent;
      }
    }
    struct stat st;
    if (fstatat(parentFd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) continue;
      PathError(e, errno, "lstat", prefix + rel);
      release();
      return;
    }
    PutStat(out.stats, i, st);
    if ((flags & (kWantXattrs | kWantLinks)) &&
        !Extras(parentFd, name.c_str(), prefix + rel, st, static_cast<uint32_t>(i), flags, out, e)) {
      release();
      return;
    }
  }
  release();
}

Napi::Value ToJs(Napi::Env env, Listing& l, bool withNames) {
  Napi::Object o = Napi::Object::New(env);
  if (withNames) {
    Napi::Array names = Napi::Array::New(env, l.names.size());
    for (size_t i = 0; i < l.names.size(); i++) {
      names.Set(static_cast<uint32_t>(i), Napi::String::New(env, l.names[i]));
    }
    o.Set("names", names);
  }
  Napi::Float64Array stats = Napi::Float64Array::New(env, l.stats.size());
  if (!l.stats.empty()) memcpy(stats.Data(), l.stats.data(), l.stats.size() * sizeof(double));
  o.Set("stats", stats);
  // Flat [index, name, value, index, name, value, …]: most entries have none, so no per-entry objects.
  Napi::Array xattrs = Napi::Array::New(env, l.xattrs.size() * 3);
  for (size_t i = 0; i < l.xattrs.size(); i++) {
    const Xattr& x = l.xattrs[i];
    xattrs.Set(static_cast<uint32_t>(i * 3), Napi::Number::New(env, x.index));
    xattrs.Set(static_cast<uint32_t>(i * 3 + 1), Napi::String::New(env, x.name));
    xattrs.Set(static_cast<uint32_t>(i * 3 + 2), Napi::Buffer<char>::Copy(env, x.value.data(), x.value.size()));
  }
  o.Set("xattrs", xattrs);
  Napi::Array links = Napi::Array::New(env, l.links.size() * 2);
  for (size_t i = 0; i < l.links.size(); i++) {
    links.Set(static_cast<uint32_t>(i * 2), Napi::Number::New(env, l.links[i].index));
    links.Set(static_cast<uint32_t>(i * 2 + 1), Napi::String::New(env, l.links[i].target));
  }
  o.Set("links", links);
  return o;
}

// statDirSync(dir, flags, root?) → { names, stats, xattrs, links }; with root, dir is
// relative to it and resolved beneath it.
Napi::Value StatDirSync(const Napi::CallbackInfo& info) {
  std::string dir = ArgString(info, 0, "dir");
  int flags = static_cast<int>(ArgOptInt(info, 1, "flags", 0));
  std::string root;
  bool beneath = ArgOptString(info, 2, "root", &root);
  Listing l;
  SysError e;
  if (!beneath) {
    DoStatDir(-1, dir, dir, flags, l, e);
  } else {
    int rfd = open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rfd < 0) {
      PathError(e, errno, "scandir", root);
    } else {
      Fd guard(rfd);
      size_t start = dir.find_first_not_of('/');
      std::string rel = start == std::string::npos ? "" : dir.substr(start);
      DoStatDir(rfd, rel, rel.empty() ? root : root + "/" + rel, flags, l, e);
    }
  }
  if (e.err) ThrowSysError(info.Env(), e);
  return ToJs(info.Env(), l, true);
}

// statPathsSync(base, rels, flags) → { stats, xattrs, links }
Napi::Value StatPathsSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string base = ArgString(info, 0, "base");
  if (info.Length() < 2 || !info[1].IsArray()) throw Napi::TypeError::New(env, "rels must be an array of strings");
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<std::string> rels(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsString()) throw Napi::TypeError::New(env, "rels must be an array of strings");
    rels[i] = v.As<Napi::String>().Utf8Value();
  }
  int flags = static_cast<int>(ArgOptInt(info, 2, "flags", 0));
  Listing l;
  SysError e;
  DoStatPaths(base, rels, flags, l, e);
  if (e.err) ThrowSysError(env, e);
  return ToJs(env, l, false);
}

// readFileIntoSync(path, buf, offset, length) → bytes read: open(O_RDONLY|O_NOFOLLOW|O_NONBLOCK), fstat (a regular file or EINVAL),
// read until `length` bytes or EOF, close — one crossing for a small file's content.
Napi::Value ReadFileIntoSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  if (info.Length() < 2 || !info[1].IsTypedArray()) throw Napi::TypeError::New(env, "buf must be a Uint8Array");
  Napi::Uint8Array buf = info[1].As<Napi::Uint8Array>();
  int64_t off = ArgInt(info, 2, "offset");
  int64_t len = ArgInt(info, 3, "length");
  if (off < 0 || len < 0 || static_cast<uint64_t>(off + len) > buf.ByteLength())
    throw Napi::RangeError::New(env, "offset and length must lie within buf");
  // O_NONBLOCK: a fifo put there meanwhile must not block the JS thread; O_NOCTTY: a tty
  // must not become ours. Anything but a regular file is refused before a byte is read.
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  SysError e;
  if (fd < 0) {
    PathError(e, errno, "open", path);
    ThrowSysError(env, e);
  }
  Fd guard(fd);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    PathError(e, errno, "fstat", path);
    ThrowSysError(env, e);
  }
  if (!S_ISREG(st.st_mode)) {
    PathError(e, EINVAL, "read", path);
    e.detail = "not a regular file";
    ThrowSysError(env, e);
  }
  uint8_t* p = buf.Data() + off;
  int64_t done = 0;
  while (done < len) {
    ssize_t n = read(fd, p + done, static_cast<size_t>(len - done));
    if (n < 0) {
      if (errno == EINTR) continue;
      PathError(e, errno, "read", path);
      ThrowSysError(env, e);
    }
    if (n == 0) break;
    done += n;
  }
  return Napi::Number::New(env, static_cast<double>(done));
}

}  // namespace

void InitWalk(Napi::Env env, Napi::Object exports) {
  exports.Set("statDirSync", Napi::Function::New(env, StatDirSync, "statDirSync"));
  exports.Set("statPathsSync", Napi::Function::New(env, StatPathsSync, "statPathsSync"));
  exports.Set("readFileIntoSync", Napi::Function::New(env, ReadFileIntoSync, "readFileIntoSync"));
}

}  // namespace cairn
