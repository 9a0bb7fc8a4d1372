// Layer extraction fast path: one synchronous call per regular file does what applyLayer
// otherwise does in four or five JS→C++ crossings (open, write, fchown, fchmod, futimens,
// close), with the parent directory resolved relative to the layer root's fd.
//
// Safety: parents are opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS), so a symlink (or "..") anywhere on the way fails with ELOOP /
// EXDEV instead of being followed, whatever happened to the tree since JS checked it.
// Where openat2 is missing (ENOSYS, kernels < 5.6) the parent is walked one component at
// a time with openat(O_NOFOLLOW | O_DIRECTORY). Files are created O_CREAT|O_EXCL|
// O_NOFOLLOW and every metadata call goes through the new fd, so the final component is
// never followed either. Parent fds are cached by relative path; JS calls forget()
// whenever it removes or replaces anything, so a cached fd never outlives its directory
// entry's meaning.
#include "common.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <unordered_map>

namespace cairn {

namespace {

constexpr size_t kMaxCachedDirs = 64;
constexpr int kFlagChown = 1;
constexpr int kFlagChmod = 2;

int OpenBeneath(int root, const std::string& rel) {
  static bool noOpenat2 = false;
  if (!noOpenat2) {
    open_how how{};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    int fd;
    do {
      fd = static_cast<int>(syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how));
    } while (fd < 0 && (errno == EINTR || errno == EAGAIN));
    if (fd >= 0 || errno != ENOSYS) return fd;
    noOpenat2 = true;
  }
  // Component walk: every step refuses symlinks and non-directories.
  int cur = dup(root);
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

// Metadata every file gets through its fd: owner, then mode (chown clears setuid/setgid),
// then times (last, since the other calls do not touch mtime but writes do).
struct FileMeta {
  mode_t mode;
  uid_t uid;
  gid_t gid;
  int flags;
  timespec times[2];
};

FileMeta ReadMeta(const Napi::CallbackInfo& info, size_t at) {
  FileMeta m;
  m.mode = static_cast<mode_t>(ArgInt(info, at, "mode") & 07777);
  m.uid = static_cast<uid_t>(ArgInt(info, at + 1, "uid"));
  m.gid = static_cast<gid_t>(ArgInt(info, at + 2, "gid"));
  m.flags = static_cast<int>(ArgInt(info, at + 3, "flags"));
  m.times[0] = NsToTimespec(ArgBigInt64(info, at + 4, "atimeNs"));
  m.times[1] = NsToTimespec(ArgBigInt64(info, at + 5, "mtimeNs"));
  return m;
}

const char* ApplyMeta(int fd, const FileMeta& m) {
  if ((m.flags & kFlagChown) && fchown(fd, m.uid, m.gid) != 0) return "fchown";
  if ((m.flags & kFlagChmod) && fchmod(fd, m.mode) != 0) return "fchmod";
  if (futimens(fd, m.times) != 0) return "futimens";
  return nullptr;
}

class Extractor : public Napi::ObjectWrap<Extractor> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "LayerExtractor", {
      InstanceMethod<&Extractor::WriteFile>("writeFile"),
      InstanceMethod<&Extractor::OpenFile>("openFile"),
      InstanceMethod<&Extractor::FinishFile>("finishFile"),
      InstanceMethod<&Extractor::Forget>("forget"),
      InstanceMethod<&Extractor::Close>("close"),
    });
  }

  explicit Extractor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Extractor>(info) {
    root_path_ = ArgString(info, 0, "root");
    root_ = open(root_path_.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root_ < 0) Fail(info.Env(), errno, "open", root_path_);
  }

  ~Extractor() override { Release(); }

 private:
  [[noreturn]] void Fail(Napi::Env env, int err, const char* syscall, const std::string& rel) {
    SysError e;
    e.Set(err, syscall);
    e.path = rel.empty() || rel[0] == '/' ? rel : root_path_ + "/" + rel;
    e.hasPath = true;
    ThrowSysError(env, e);
  }

  void CheckOpen(Napi::Env env) {
    if (root_ < 0) throw Napi::Error::New(env, "LayerExtractor is closed");
  }

  // The parent directory's fd, from the cache or resolved beneath the root.
  int Parent(Napi::Env env, const std::string& rel) {
    if (rel.empty()) return root_;
    auto it = dirs_.find(rel);
    if (it != dirs_.end()) return it->second;
    int fd = OpenBeneath(root_, rel);
    if (fd < 0) Fail(env, errno, "openat2", rel);
    if (dirs_.size() >= kMaxCachedDirs) Forget();
    dirs_.emplace(rel, fd);
    return fd;
  }

  int Create(Napi::Env env, const std::string& parentRel, const std::string& name, mode_t mode, std::string* rel) {
    int dirfd = Parent(env, parentRel);
    *rel = parentRel.empty() ? name : parentRel + "/" + name;
    int fd = openat(dirfd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 0777);
    if (fd < 0) Fail(env, errno, "open", *rel);
    return fd;
  }

  // Closes and unlinks a file that failed half-way, then throws the original error.
  [[noreturn]] void Discard(Napi::Env env, int fd, int dirfd, const std::string& name, int err, const char* syscall, const std::string& rel) {
    close(fd);
    unlinkat(dirfd, name.c_str(), 0);
    Fail(env, err, syscall, rel);
  }

  // writeFile(parentRel, name, data|null, mode, uid, gid, flags, atimeNs, mtimeNs)
  Napi::Value WriteFile(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckOpen(env);
    std::string parentRel = ArgString(info, 0, "parent");
    std::string name = ArgString(info, 1, "name");
    const uint8_t* data = nullptr;
    size_t len = 0;
    if (!info[2].IsNull() && !info[2].IsUndefined()) {
      if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
        throw Napi::TypeError::New(env, "The \"data\" argument must be a Buffer, Uint8Array or null");
      Napi::Uint8Array a = info[2].As<Napi::Uint8Array>();
      data = a.Data();
      len = a.ByteLength();
    }
    FileMeta m = ReadMeta(info, 3);
    std::string rel;
    int fd = Create(env, parentRel, name, m.mode, &rel);
    int dirfd = Parent(env, parentRel);
    size_t off = 0;
    while (off < len) {
      ssize_t n = write(fd, data + off, len - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        Discard(env, fd, dirfd, name, errno, "write", rel);
      }
      off += static_cast<size_t>(n);
    }
    if (const char* failed = ApplyMeta(fd, m)) Discard(env, fd, dirfd, name, errno, failed, rel);
    if (close(fd) != 0 && errno != EINTR) {
      int err = errno;
      unlinkat(dirfd, name.c_str(), 0);
      Fail(env, err, "close", rel);
    }
    return env.Undefined();
  }

  // openFile(parentRel, name, mode) → fd, for content that arrives in several chunks.
  Napi::Value OpenFile(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckOpen(env);
    std::string parentRel = ArgString(info, 0, "parent");
    std::string name = ArgString(info, 1, "name");
    mode_t mode = static_cast<mode_t>(ArgInt(info, 2, "mode"));
    std::string rel;
    return Napi::Number::New(env, Create(env, parentRel, name, mode, &rel));
  }

  // finishFile(fd, mode, uid, gid, flags, atimeNs, mtimeNs): metadata through the fd, then
  // close. The fd is closed even when a call fails; the caller removes the file.
  Napi::Value FinishFile(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = static_cast<int>(ArgInt(info, 0, "fd"));
    FileMeta m = ReadMeta(info, 1);
    if (const char* failed = ApplyMeta(fd, m)) {
      int err = errno;
      close(fd);
      Fail(env, err, failed, "");
    }
    if (close(fd) != 0 && errno != EINTR) Fail(env, errno, "close", "");
    return env.Undefined();
  }

  Napi::Value Forget(const Napi::CallbackInfo& info) {
    Forget();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Release();
    return info.Env().Undefined();
  }

  void Forget() {
    for (auto& [rel, fd] : dirs_) close(fd);
    dirs_.clear();
  }

  void Release() {
    Forget();
    if (root_ >= 0) close(root_);
    root_ = -1;
  }

  std::string root_path_;
  int root_ = -1;
  std::unordered_map<std::string, int> dirs_;
};

}  // namespace

void InitExtract(Napi::Env env, Napi::Object exports) {
  exports.Set("LayerExtractor", Extractor::Define(env));
}

}  // namespace cairn
