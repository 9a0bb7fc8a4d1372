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

namespace cairn {

namespace {

// Per-entry fields in the stats array, in this order (keep in sync with src/walk.ts).
enum Field {
  kMode, kUid, kGid, kSize, kNlink, kInoHi, kInoLo, kDev, kRdevMajor, kRdevMinor,
  kMtimeSec, kMtimeNsec, kCtimeSec, kCtimeNsec, kFields
};

// Flags: what to read beyond lstat.
constexpr int kWantXattrs = 1;    // every xattr name and value (llistxattr/lgetxattr on the path)
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

// Every xattr of `path` itself. ENOTSUP (a filesystem without xattrs) reads as none; a
// name removed between list and get is skipped; a list or value that grows between the
// size query and the read is retried.
bool ReadXattrs(const std::string& path, uint32_t index, std::vector<Xattr>& out, SysError& e) {
  std::vector<char> names;
  for (int attempt = 0;; attempt++) {
    ssize_t size = llistxattr(path.c_str(), nullptr, 0);
    if (size < 0) {
      if (errno == ENOTSUP || errno == ENOENT) return true;
      PathError(e, errno, "llistxattr", path);
      return false;
    }
    if (size == 0) return true;
    names.resize(static_cast<size_t>(size));
    ssize_t n = llistxattr(path.c_str(), names.data(), names.size());
    if (n >= 0) {
      names.resize(static_cast<size_t>(n));
      break;
    }
    if (errno != ERANGE || attempt >= 8) {
      PathError(e, errno, "llistxattr", path);
      return false;
    }
  }
  for (size_t pos = 0; pos < names.size();) {
    const char* name = names.data() + pos;
    size_t len = strnlen(name, names.size() - pos);
    pos += len + 1;
    if (len == 0) continue;
    Xattr x{index, std::string(name, len), {}};
    bool got = false;
    for (int attempt = 0; attempt < 8; attempt++) {
      ssize_t size = lgetxattr(path.c_str(), x.name.c_str(), nullptr, 0);
      if (size < 0) break;
      x.value.resize(static_cast<size_t>(size));
      ssize_t n = size == 0 ? 0 : lgetxattr(path.c_str(), x.name.c_str(), x.value.data(), x.value.size());
      if (n >= 0) {
        x.value.resize(static_cast<size_t>(n));
        got = true;
        break;
      }
      if (errno != ERANGE) break;
    }
    if (!got) {
      if (errno == ENODATA) continue;  // removed meanwhile
      PathError(e, errno, "lgetxattr", path);
      return false;
    }
    out.push_back(std::move(x));
  }
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
  if (flags & kWantXattrs) return ReadXattrs(path, index, out.xattrs, e);
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

void DoStatDir(const std::string& dir, int flags, Listing& out, SysError& e) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    PathError(e, errno, "scandir", dir);
    return;
  }
  DIR* d = fdopendir(fd);
  if (d == nullptr) {
    PathError(e, errno, "scandir", dir);
    close(fd);
    return;
  }
  std::string prefix = dir;
  if (prefix.empty() || prefix.back() != '/') prefix += '/';
  for (;;) {
    errno = 0;
    struct dirent* ent = readdir(d);
    if (ent == nullptr) {
      if (errno != 0) PathError(e, errno, "scandir", dir);
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

// lstat of base/rel for each rel. A path that is not there (ENOENT, ENOTDIR) gets mode 0
// so the caller decides what that means; other failures end the batch with an error.
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
  for (size_t i = 0; i < rels.size(); i++) {
    const char* rel = rels[i].c_str();
    while (*rel == '/') rel++;
    if (*rel == 0) rel = ".";
    struct stat st;
    if (fstatat(fd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) continue;
      PathError(e, errno, "lstat", prefix + rel);
      return;
    }
    PutStat(out.stats, i, st);
    if ((flags & (kWantXattrs | kWantLinks)) && !Extras(fd, rel, prefix + rel, st, static_cast<uint32_t>(i), flags, out, e)) return;
  }
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

// statDirSync(dir, flags) → { names, stats, xattrs, links }
Napi::Value StatDirSync(const Napi::CallbackInfo& info) {
  std::string dir = ArgString(info, 0, "dir");
  int flags = static_cast<int>(ArgOptInt(info, 1, "flags", 0));
  Listing l;
  SysError e;
  DoStatDir(dir, flags, l, e);
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

// readFileIntoSync(path, buf, offset, length) → bytes read: open(O_RDONLY|O_NOFOLLOW),
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
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  SysError e;
  if (fd < 0) {
    PathError(e, errno, "open", path);
    ThrowSysError(env, e);
  }
  Fd guard(fd);
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
