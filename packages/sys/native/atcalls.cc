// The *at calls node:fs lacks, for JS code that works on layer content through directory
// fds (the pure-JS layer applier, packages/archive/src/apply.ts): every name is relative
// to a directory fd the caller resolved beneath the layer root, and no call follows its
// last component (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW, or an O_PATH fd of the node with
// AT_EMPTY_PATH). Thin wrappers, one syscall each (plus nofollow.cc's fallbacks for
// kernels without fchmodat2 / setxattrat), so the rules stay in the JS that calls them.
// Nothing here goes through /proc/self/fd. Errors are Node-style, `path` the name given.
// Also fd-to-fd content copies (FICLONE, copy_file_range) for core's copyTree, which reads
// its source only through fds opened beneath it.
#include "beneath.h"
#include "common.h"
#include "nofollow.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>

namespace cairn {

namespace {

int ArgFd(const Napi::CallbackInfo& info, size_t i, const char* name) {
  int64_t fd = ArgInt(info, i, name);
  if (fd < 0 || fd > 0x7fffffff) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an open fd");
  return static_cast<int>(fd);
}

uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  int64_t v = ArgInt(info, i, name);
  if (v < 0 || v > 0xffffffffLL) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an unsigned 32-bit integer");
  return static_cast<uint32_t>(v);
}

[[noreturn]] void Fail(Napi::Env env, int err, const char* syscall, const std::string& name) {
  SysError e;
  PathError(e, err, syscall, name);
  ThrowSysError(env, e);
}

// openDirBeneathSync(rootFd, rel) → an O_PATH fd of directory rel beneath rootFd, never
// through a symlink or '..' (beneath.cc OpenBeneath: openat2 or an O_NOFOLLOW walk).
Napi::Value OpenDirBeneathSync(const Napi::CallbackInfo& info) {
  int root = ArgFd(info, 0, "rootFd");
  std::string rel = ArgString(info, 1, "rel");
  int fd = OpenBeneath(root, rel);
  if (fd < 0) Fail(info.Env(), errno, "openat2", rel);
  return Napi::Number::New(info.Env(), fd);
}

// openatSync(dirfd, name, flags, mode) → fd: openat with O_CLOEXEC added. The caller
// passes O_NOFOLLOW (and O_PATH for nodes that must not be opened).
Napi::Value OpenatSync(const Napi::CallbackInfo& info) {
  int dirfd = ArgFd(info, 0, "dirfd");
  std::string name = ArgString(info, 1, "name");
  int flags = static_cast<int>(ArgInt(info, 2, "flags"));
  mode_t mode = static_cast<mode_t>(ArgOptInt(info, 3, "mode", 0));
  int fd;
  do {
    fd = openat(dirfd, name.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) Fail(info.Env(), errno, "open", name);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value MkdiratSync(const Napi::CallbackInfo& info) {
  int dirfd = ArgFd(info, 0, "dirfd");
  std::string name = ArgString(info, 1, "name");
  mode_t mode = static_cast<mode_t>(ArgU32(info, 2, "mode"));
  if (mkdirat(dirfd, name.c_str(), mode) != 0) Fail(info.Env(), errno, "mkdir", name);
  return info.Env().Undefined();
}

// mknodatSync(dirfd, name, mode, major, minor, exact): with `exact`, the permission bits
// are applied as given (the umask does not apply: nofollow.cc MknodExact), for kernels
// where no fd-based chmod can fix them afterwards.
Napi::Value MknodatSync(const Napi::CallbackInfo& info) {
  int dirfd = ArgFd(info, 0, "dirfd");
  std::string name = ArgString(info, 1, "name");
  mode_t mode = static_cast<mode_t>(ArgU32(info, 2, "mode"));
  dev_t dev = makedev(ArgU32(info, 3, "major"), ArgU32(info, 4, "minor"));
  bool exact = info.Length() > 5 && info[5].ToBoolean().Value();
  int err = exact ? nofollow::MknodExact(dirfd, name, mode, dev) : (mknodat(dirfd, name.c_str(), mode, dev) == 0 ? 0 : errno);
  if (err != 0) Fail(info.Env(), err, "mknod", name);
  return info.Env().Undefined();
}

// symlinkatSync(target, dirfd, name)
Napi::Value SymlinkatSync(const Napi::CallbackInfo& info) {
  std::string target = ArgString(info, 0, "target");
  int dirfd = ArgFd(info, 1, "dirfd");
  std::string name = ArgString(info, 2, "name");
  if (symlinkat(target.c_str(), dirfd, name.c_str()) != 0) Fail(info.Env(), errno, "symlink", name);
  return info.Env().Undefined();
}

// linkatSync(olddirfd, oldname, newdirfd, newname): flags 0, so a symlink is linked as
// itself, never followed.
Napi::Value LinkatSync(const Napi::CallbackInfo& info) {
  int olddir = ArgFd(info, 0, "olddirfd");
  std::string oldname = ArgString(info, 1, "oldname");
  int newdir = ArgFd(info, 2, "newdirfd");
  std::string newname = ArgString(info, 3, "newname");
  if (linkat(olddir, oldname.c_str(), newdir, newname.c_str(), 0) != 0) Fail(info.Env(), errno, "link", newname);
  return info.Env().Undefined();
}

// unlinkatSync(dirfd, name, removeDir)
Napi::Value UnlinkatSync(const Napi::CallbackInfo& info) {
  int dirfd = ArgFd(info, 0, "dirfd");
  std::string name = ArgString(info, 1, "name");
  bool dir = info.Length() > 2 && info[2].ToBoolean().Value();
  if (unlinkat(dirfd, name.c_str(), dir ? AT_REMOVEDIR : 0) != 0) Fail(info.Env(), errno, dir ? "rmdir" : "unlink", name);
  return info.Env().Undefined();
}

// fchownFdSync(fd, uid, gid): fchownat(fd, "", AT_EMPTY_PATH) — the node behind an O_PATH
// fd (a symlink itself, never what it points at) or any fd.
Napi::Value FchownFdSync(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  uid_t uid = static_cast<uid_t>(ArgU32(info, 1, "uid"));
  gid_t gid = static_cast<gid_t>(ArgU32(info, 2, "gid"));
  if (fchownat(fd, "", uid, gid, AT_EMPTY_PATH) != 0) Fail(info.Env(), errno, "lchown", "");
  return info.Env().Undefined();
}

// chmodFdSync(fd, mode, isDir): fchmodat2(fd, "", AT_EMPTY_PATH) on an O_PATH fd. Without
// fchmodat2 a directory's fd is chmodded as "." of itself (nothing to follow); any other
// node fails with ENOSYS and the caller decides (the mode was given at mknod time).
Napi::Value ChmodFdSync(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  mode_t mode = static_cast<mode_t>(ArgU32(info, 1, "mode"));
  bool dir = info.Length() > 2 && info[2].ToBoolean().Value();
  if (nofollow::ChmodFd(fd, mode, false) == 0) return info.Env().Undefined();
  if (errno != ENOSYS || !dir || fchmodat(fd, ".", mode, 0) != 0) Fail(info.Env(), errno, "chmod", "");
  return info.Env().Undefined();
}

// haveChmodFd() → whether chmodFdSync works on any node here (fchmodat2, Linux 6.6).
Napi::Value HaveChmodFdSync(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), nofollow::HaveChmodFd(false));
}

// utimensFdSync(fd, dirfd, name, atimeNs, mtimeNs): utimensat(fd, "", AT_EMPTY_PATH)
// (Linux 5.8); where the kernel refuses that, dirfd/name with AT_SYMLINK_NOFOLLOW.
Napi::Value UtimensFdSync(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  int dirfd = ArgFd(info, 1, "dirfd");
  std::string name = ArgString(info, 2, "name");
  timespec ts[2] = {NsToTimespec(ArgBigInt64(info, 3, "atimeNs")), NsToTimespec(ArgBigInt64(info, 4, "mtimeNs"))};
  if (utimensat(fd, "", ts, AT_EMPTY_PATH) == 0) return info.Env().Undefined();
  if (errno != EINVAL || utimensat(dirfd, name.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) Fail(info.Env(), errno, "lutimes", name);
  return info.Env().Undefined();
}

// setxattratSync(dirfd, name, key, value): dirfd/name never followed ("." is the directory
// itself): setxattrat (Linux 6.13) or lsetxattr on a helper thread whose cwd is dirfd.
Napi::Value SetxattratSync(const Napi::CallbackInfo& info) {
  int dirfd = ArgFd(info, 0, "dirfd");
  std::string name = ArgString(info, 1, "name");
  std::string key = ArgString(info, 2, "key");
  std::vector<char> value = ArgBytes(info, 3, "value");
  int err = nofollow::SetXattrAt(dirfd, name, key, std::string(value.begin(), value.end()), false);
  if (err != 0) Fail(info.Env(), err, "lsetxattr", name);
  return info.Env().Undefined();
}

// readdirFdSync(dirfd) → the names in the directory behind dirfd (an O_PATH fd is fine),
// without '.' and '..'.
Napi::Value ReaddirFdSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dirfd = ArgFd(info, 0, "dirfd");
  int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) Fail(env, errno, "scandir", ".");
  DIR* d = fdopendir(fd);
  if (d == nullptr) {
    int err = errno;
    close(fd);
    Fail(env, err, "scandir", ".");
  }
  std::vector<std::string> names;
  for (;;) {
    errno = 0;
    struct dirent* ent = readdir(d);
    if (ent == nullptr) break;
    const char* n = ent->d_name;
    if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
    names.emplace_back(n);
  }
  int err = errno;
  closedir(d);
  if (err != 0) Fail(env, err, "scandir", ".");
  Napi::Array out = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::String::New(env, names[i]));
  return out;
}

// cloneFdSync(srcFd, dstFd): ioctl(dst, FICLONE, src) — the whole file's extents shared.
Napi::Value CloneFdSync(const Napi::CallbackInfo& info) {
  int src = ArgFd(info, 0, "srcFd");
  int dst = ArgFd(info, 1, "dstFd");
  if (ioctl(dst, FICLONE, src) != 0) Fail(info.Env(), errno, "ioctl_ficlone", "");
  return info.Env().Undefined();
}

// Copies src (from its current offset) to dst until EOF: copy_file_range, or read/write
// where the kernel refuses it for this pair. 0 or an errno; `copied` the bytes written.
int CopyFds(int src, int dst, uint64_t* copied) {
  bool plain = false;
  std::vector<char> buf;
  for (;;) {
    ssize_t n;
    if (!plain) {
      n = copy_file_range(src, nullptr, dst, nullptr, 1 << 30, 0);
      if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) && *copied == 0) {
        plain = true;
        buf.resize(1 << 20);
        continue;
      }
    } else {
      n = read(src, buf.data(), buf.size());
      for (ssize_t off = 0; n > 0 && off < n;) {
        ssize_t w = write(dst, buf.data() + off, static_cast<size_t>(n - off));
        if (w < 0) {
          if (errno == EINTR) continue;
          return errno;
        }
        off += w;
      }
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return 0;
    *copied += static_cast<uint64_t>(n);
  }
}

// copyFdSync(srcFd, dstFd) → bytes copied.
Napi::Value CopyFdSync(const Napi::CallbackInfo& info) {
  int src = ArgFd(info, 0, "srcFd");
  int dst = ArgFd(info, 1, "dstFd");
  uint64_t copied = 0;
  int err = CopyFds(src, dst, &copied);
  if (err != 0) Fail(info.Env(), err, "copy_file_range", "");
  return Napi::Number::New(info.Env(), static_cast<double>(copied));
}

// copyFd(srcFd, dstFd) → Promise<void>, on the thread pool (large files never block the event loop).
Napi::Value CopyFd(const Napi::CallbackInfo& info) {
  int src = ArgFd(info, 0, "srcFd");
  int dst = ArgFd(info, 1, "dstFd");
  return RunAsync(info.Env(), "cairn.copyFd", [src, dst](JobResult& r) {
    uint64_t copied = 0;
    int err = CopyFds(src, dst, &copied);
    if (err != 0) r.error.Set(err, "copy_file_range");
  });
}

}  // namespace

void InitAtCalls(Napi::Env env, Napi::Object exports) {
  exports.Set("openDirBeneathSync", Napi::Function::New(env, OpenDirBeneathSync, "openDirBeneathSync"));
  exports.Set("openatSync", Napi::Function::New(env, OpenatSync, "openatSync"));
  exports.Set("mkdiratSync", Napi::Function::New(env, MkdiratSync, "mkdiratSync"));
  exports.Set("mknodatSync", Napi::Function::New(env, MknodatSync, "mknodatSync"));
  exports.Set("symlinkatSync", Napi::Function::New(env, SymlinkatSync, "symlinkatSync"));
  exports.Set("linkatSync", Napi::Function::New(env, LinkatSync, "linkatSync"));
  exports.Set("unlinkatSync", Napi::Function::New(env, UnlinkatSync, "unlinkatSync"));
  exports.Set("fchownFdSync", Napi::Function::New(env, FchownFdSync, "fchownFdSync"));
  exports.Set("chmodFdSync", Napi::Function::New(env, ChmodFdSync, "chmodFdSync"));
  exports.Set("haveChmodFdSync", Napi::Function::New(env, HaveChmodFdSync, "haveChmodFdSync"));
  exports.Set("utimensFdSync", Napi::Function::New(env, UtimensFdSync, "utimensFdSync"));
  exports.Set("setxattratSync", Napi::Function::New(env, SetxattratSync, "setxattratSync"));
  exports.Set("readdirFdSync", Napi::Function::New(env, ReaddirFdSync, "readdirFdSync"));
  exports.Set("cloneFdSync", Napi::Function::New(env, CloneFdSync, "cloneFdSync"));
  exports.Set("copyFdSync", Napi::Function::New(env, CopyFdSync, "copyFdSync"));
  exports.Set("copyFd", Napi::Function::New(env, CopyFd, "copyFd"));
}

}  // namespace cairn
