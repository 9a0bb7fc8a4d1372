// Per-file calls a layer applier makes in hot loops: mknod, l*xattr (never following
// symlinks), utimensat with nanoseconds, flock, and dev_t packing; and the page population
// of fresh read buffers.
#include "common.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <atomic>
#include <cerrno>

namespace cairn {

namespace {

// ---- mknod ----

struct MknodArgs {
  std::string path;
  mode_t mode;
  dev_t dev;
};

MknodArgs ReadMknod(const Napi::CallbackInfo& info) {
  MknodArgs a;
  a.path = ArgString(info, 0, "path");
  int64_t mode = ArgInt(info, 1, "mode");
  int64_t maj = ArgInt(info, 2, "major");
  int64_t min = ArgInt(info, 3, "minor");
  if (mode < 0 || mode > 0xffffffffLL || maj < 0 || maj > 0xffffffffLL || min < 0 || min > 0xffffffffLL)
    throw Napi::TypeError::New(info.Env(), "mode, major and minor must be unsigned 32-bit integers");
  a.mode = static_cast<mode_t>(mode);
  a.dev = makedev(static_cast<unsigned>(maj), static_cast<unsigned>(min));
  return a;
}

void DoMknod(const MknodArgs& a, SysError& e) {
  if (mknod(a.path.c_str(), a.mode, a.dev) != 0) PathError(e, errno, "mknod", a.path);
}

Napi::Value MknodSync(const Napi::CallbackInfo& info) {
  MknodArgs a = ReadMknod(info);
  SysError e;
  DoMknod(a, e);
  if (e.err) ThrowSysError(info.Env(), e);
  return info.Env().Undefined();
}

Napi::Value Mknod(const Napi::CallbackInfo& info) {
  MknodArgs a = ReadMknod(info);
  return RunAsync(info.Env(), "cairn.mknod", [a](JobResult& r) { DoMknod(a, r.error); });
}

// ---- xattrs ----

struct XattrArgs {
  std::string path, name;
  std::vector<char> value;
  int flags = 0;
};

void DoSet(const XattrArgs& a, JobResult& r) {
  if (lsetxattr(a.path.c_str(), a.name.c_str(), a.value.data(), a.value.size(), a.flags) != 0)
    PathError(r.error, errno, "lsetxattr", a.path);
}

// Size query, then read; retried when the value grows between the two calls (ERANGE).
void DoGet(const XattrArgs& a, JobResult& r) {
  for (int attempt = 0; attempt < 8; attempt++) {
    ssize_t size = lgetxattr(a.path.c_str(), a.name.c_str(), nullptr, 0);
    if (size < 0) break;
    r.bytes.resize(static_cast<size_t>(size));
    ssize_t n = size == 0 ? 0 : lgetxattr(a.path.c_str(), a.name.c_str(), r.bytes.data(), r.bytes.size());
    if (n >= 0) {
      r.bytes.resize(static_cast<size_t>(n));
      r.hasBytes = true;
      return;
    }
    if (errno != ERANGE) break;
  }
  if (errno == ENODATA) {
    r.isNull = true;
    return;
  }
  PathError(r.error, errno, "lgetxattr", a.path);
}

void DoList(const XattrArgs& a, JobResult& r) {
  std::vector<char> buf;
  for (int attempt = 0; attempt < 8; attempt++) {
    ssize_t size = llistxattr(a.path.c_str(), nullptr, 0);
    if (size < 0) break;
    buf.resize(static_cast<size_t>(size));
    ssize_t n = size == 0 ? 0 : llistxattr(a.path.c_str(), buf.data(), buf.size());
    if (n >= 0) {
      r.hasList = true;
      // The kernel returns "name\0name\0…".
      size_t start = 0;
      for (size_t i = 0; i < static_cast<size_t>(n); i++) {
        if (buf[i] == '\0') {
          if (i > start) r.list.emplace_back(buf.data() + start, i - start);
          start = i + 1;
        }
      }
      return;
    }
    if (errno != ERANGE) break;
  }
  PathError(r.error, errno, "llistxattr", a.path);
}

void DoRemove(const XattrArgs& a, JobResult& r) {
  if (lremovexattr(a.path.c_str(), a.name.c_str()) != 0) PathError(r.error, errno, "lremovexattr", a.path);
}

XattrArgs ReadXattr(const Napi::CallbackInfo& info, bool withName, bool withValue) {
  XattrArgs a;
  a.path = ArgString(info, 0, "path");
  if (withName) a.name = ArgString(info, 1, "name");
  if (withValue) {
    a.value = ArgBytes(info, 2, "value");
    a.flags = static_cast<int>(ArgOptInt(info, 3, "flags", 0));
  }
  return a;
}

// Sync calls share the worker bodies and turn the JobResult into a value or a throw.
Napi::Value Settle(Napi::Env env, JobResult& r) {
  if (r.error.err) ThrowSysError(env, r.error);
  return ResultValue(env, r);
}

template <void (*Body)(const XattrArgs&, JobResult&), bool WithName, bool WithValue>
Napi::Value XattrSync(const Napi::CallbackInfo& info) {
  XattrArgs a = ReadXattr(info, WithName, WithValue);
  JobResult r;
  Body(a, r);
  return Settle(info.Env(), r);
}

template <void (*Body)(const XattrArgs&, JobResult&), bool WithName, bool WithValue>
Napi::Value XattrAsync(const Napi::CallbackInfo& info) {
  XattrArgs a = ReadXattr(info, WithName, WithValue);
  return RunAsync(info.Env(), "cairn.xattr", [a](JobResult& r) { Body(a, r); });
}

// ---- times, locks, dev_t ----

Napi::Value LutimesNsSync(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  timespec ts[2] = {NsToTimespec(ArgBigInt64(info, 1, "atimeNs")), NsToTimespec(ArgBigInt64(info, 2, "mtimeNs"))};
  if (utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) {
    SysError e;
    PathError(e, errno, "utimensat", path);
    ThrowSysError(info.Env(), e);
  }
  return info.Env().Undefined();
}

Napi::Value FlockSync(const Napi::CallbackInfo& info) {
  int64_t fd = ArgInt(info, 0, "fd");
  int64_t op = ArgInt(info, 1, "operation");
  if (fd < 0 || fd > 0x7fffffff) throw Napi::TypeError::New(info.Env(), "The \"fd\" argument must be a file descriptor");
  int rc;
  do {
    rc = flock(static_cast<int>(fd), static_cast<int>(op));
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return Napi::Boolean::New(info.Env(), true);
  if (errno == EWOULDBLOCK && (op & LOCK_NB)) return Napi::Boolean::New(info.Env(), false);
  SysError e;
  e.Set(errno, "flock");
  ThrowSysError(info.Env(), e);
}

// dev_t values reach JS as doubles (Stats.rdev) or bigints (lstat({bigint: true})).
Napi::Value Major(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), gnu_dev_major(ArgUint64(info, 0, "dev")));
}

Napi::Value Minor(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), gnu_dev_minor(ArgUint64(info, 0, "dev")));
}

Napi::Value Makedev(const Napi::CallbackInfo& info) {
  int64_t maj = ArgInt(info, 0, "major");
  int64_t min = ArgInt(info, 1, "minor");
  if (maj < 0 || maj > 0xffffffffLL || min < 0 || min > 0xffffffffLL)
    throw Napi::TypeError::New(info.Env(), "major and minor must be unsigned 32-bit integers");
  return Napi::Number::New(info.Env(), static_cast<double>(gnu_dev_makedev(static_cast<unsigned>(maj), static_cast<unsigned>(min))));
}

// populateSync(buf): maps every whole page of buf's memory now, with one
// MADV_POPULATE_WRITE, instead of one page fault per 4 KiB when a read() first writes
// into it (on this kind of VM each fault traps: a fresh 1 MiB read buffer costs 256 of
// them). Best effort, and says how it went: 0 when populated, else madvise's errno.
// Whether the kernel knows the advice (5.14+) is asked once, on a page of our own: an
// EINVAL for one caller's buffer (a mapping that cannot be populated) must not turn the
// populate off for every later buffer of the process. EINTR (a fatal signal pending) and
// ENOMEM are tried once more.
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older headers lack the name
#endif

bool KernelPopulates() {
  static const bool known = [] {
    void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return true;  // cannot tell: let the callers' calls say
    bool ok = madvise(page, 4096, MADV_POPULATE_WRITE) == 0 || errno != EINVAL;
    munmap(page, 4096);
    return ok;
  }();
  return known;
}

Napi::Value PopulateSync(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw Napi::TypeError::New(info.Env(), "populateSync(buf: Uint8Array)");
  Napi::Uint8Array buf = info[0].As<Napi::Uint8Array>();
  if (!KernelPopulates()) return Napi::Number::New(info.Env(), EINVAL);
  constexpr uintptr_t kPage = 4096;
  auto start = reinterpret_cast<uintptr_t>(buf.Data());
  uintptr_t a = (start + kPage - 1) & ~(kPage - 1);
  uintptr_t e = (start + buf.ByteLength()) & ~(kPage - 1);
  int err = 0;
  for (int attempt = 0; e > a && attempt < 2; attempt++) {
    err = madvise(reinterpret_cast<void*>(a), e - a, MADV_POPULATE_WRITE) == 0 ? 0 : errno;
    if (err != EINTR && err != ENOMEM) break;
  }
  return Napi::Number::New(info.Env(), err);
}

}  // namespace

void InitFiles(Napi::Env env, Napi::Object exports) {
  auto fn = [&](const char* name, Napi::Function::Callback cb) { exports.Set(name, Napi::Function::New(env, cb, name)); };
  fn("mknodSync", MknodSync);
  fn("mknod", Mknod);
  fn("lsetxattrSync", XattrSync<DoSet, true, true>);
  fn("lgetxattrSync", XattrSync<DoGet, true, false>);
  fn("llistxattrSync", XattrSync<DoList, false, false>);
  fn("lremovexattrSync", XattrSync<DoRemove, true, false>);
  fn("lsetxattr", XattrAsync<DoSet, true, true>);
  fn("lgetxattr", XattrAsync<DoGet, true, false>);
  fn("llistxattr", XattrAsync<DoList, false, false>);
  fn("lremovexattr", XattrAsync<DoRemove, true, false>);
  fn("lutimesNsSync", LutimesNsSync);
  fn("flockSync", FlockSync);
  fn("major", Major);
  fn("minor", Minor);
  fn("makedev", Makedev);
  fn("populateSync", PopulateSync);
}

}  // namespace cairn
