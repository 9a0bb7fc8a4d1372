// mount(2), umount2(2) and the new mount API (fsopen/fsconfig/fsmount/move_mount).
#include "common.h"
#include "mountapi.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <system_error>
#include <thread>

namespace cairn {

namespace {

using namespace mountapi;

struct Fd {
  int fd = -1;
  ~Fd() { if (fd >= 0) close(fd); }
};

// Runs `body` on a fresh thread that has its own cwd (unshare(CLONE_FS) + chdir), so relative
// paths resolve against `cwd` while the process cwd, and the libuv pool threads that share it,
// never change. A dedicated thread is needed: a pool thread that unshared would keep the
// private cwd for every later fs call it runs.
void WithPrivateCwd(const std::string& cwd, SysError& err, const std::function<void()>& body) {
  std::thread t;
  try {
    t = std::thread([&] {
      if (unshare(CLONE_FS) != 0) {
        err.Set(errno, "unshare");
        return;
      }
      if (chdir(cwd.c_str()) != 0) {
        err.Set(errno, "chdir");
        err.path = cwd;
        err.hasPath = true;
        return;
      }
      body();
    });
  } catch (const std::system_error& e) {
    err.Set(e.code().value() != 0 ? e.code().value() : EAGAIN, "pthread_create");
    return;
  }
  t.join();
}

// Kernel log lines queued on an fs context fd ("e overlay: failed to resolve …"): the only
// place the new mount API says *why* it refused.
std::string ReadFsContextLog(int fd) {
  std::string out;
  char buf[1024];
  for (int i = 0; i < 32; i++) {
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0) break;
    while (n > 0 && buf[n - 1] == '\n') n--;
    if (!out.empty()) out += "; ";
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

struct MountArgs {
  bool hasSource = false, hasFstype = false, hasData = false;
  std::string source, target, fstype, data;
  unsigned long flags = 0;
};

void DoMount(const MountArgs& a, SysError& err) {
  int rc = mount(a.hasSource ? a.source.c_str() : nullptr, a.target.c_str(),
                 a.hasFstype ? a.fstype.c_str() : nullptr, a.flags,
                 a.hasData ? a.data.c_str() : nullptr);
  if (rc != 0) {
    err.Set(errno, "mount");
    err.path = a.hasSource ? a.source : "none";
    err.hasPath = true;
    err.dest = a.target;
    err.hasDest = true;
  }
}

// Reads (source, target, fstype, flags, data) starting at argument `at`.
MountArgs ReadMountArgs(const Napi::CallbackInfo& info, size_t at) {
  MountArgs a;
  a.hasSource = ArgOptString(info, at, "source", &a.source);
  a.target = ArgString(info, at + 1, "target");
  a.hasFstype = ArgOptString(info, at + 2, "fstype", &a.fstype);
  int64_t flags = ArgInt(info, at + 3, "flags");
  if (flags < 0) throw Napi::TypeError::New(info.Env(), "The \"flags\" argument must be a non-negative integer");
  a.flags = static_cast<unsigned long>(flags);
  a.hasData = ArgOptString(info, at + 4, "data", &a.data);
  return a;
}

Napi::Value Mount(const Napi::CallbackInfo& info) {
  MountArgs a = ReadMountArgs(info, 0);
  return RunAsync(info.Env(), "cairn.mount", [a](JobResult& r) { DoMount(a, r.error); });
}

Napi::Value MountAt(const Napi::CallbackInfo& info) {
  std::string cwd = ArgString(info, 0, "cwd");
  MountArgs a = ReadMountArgs(info, 1);
  return RunAsync(info.Env(), "cairn.mountAt", [cwd, a](JobResult& r) {
    WithPrivateCwd(cwd, r.error, [&] { DoMount(a, r.error); });
  });
}

Napi::Value Umount2(const Napi::CallbackInfo& info) {
  std::string target = ArgString(info, 0, "target");
  int64_t flags = ArgOptInt(info, 1, "flags", 0);
  return RunAsync(info.Env(), "cairn.umount2", [target, flags](JobResult& r) {
    if (umount2(target.c_str(), static_cast<int>(flags)) != 0) {
      r.error.Set(errno, "umount2");
      r.error.path = target;
      r.error.hasPath = true;
    }
  });
}

struct FsMountArgs {
  std::string fstype, source, target, cwd;
  bool hasSource = false, readOnly = false, hasCwd = false;
  std::vector<std::pair<std::string, std::unique_ptr<std::string>>> params;  // null value = flag
};

void DoFsMount(const FsMountArgs& a, SysError& err) {
  auto fail = [&](const char* sc, int e) {
    err.Set(e, sc);
    err.path = a.target;
    err.hasPath = true;
  };
  Fd fs;
  fs.fd = static_cast<int>(syscall(__NR_fsopen, a.fstype.c_str(), kFsopenCloexec));
  if (fs.fd < 0) {
    fail("fsopen", errno);
    err.detail = "fstype '" + a.fstype + "'";
    return;
  }
  auto config = [&](const std::string& key, const std::string* value) -> bool {
    long rc = value == nullptr
                  ? syscall(__NR_fsconfig, fs.fd, kFsconfigSetFlag, key.c_str(), nullptr, 0)
                  : syscall(__NR_fsconfig, fs.fd, kFsconfigSetString, key.c_str(), value->c_str(), 0);
    if (rc == 0) return true;
    int e = errno;
    fail("fsconfig", e);
    err.param = key;
    std::string shown = value == nullptr ? key : key + "=" + *value;
    if (shown.size() > 300) shown = shown.substr(0, 300) + "…";
    std::string log = ReadFsContextLog(fs.fd);
    err.detail = shown + (log.empty() ? "" : "; kernel: " + log);
    return false;
  };
  if (a.hasSource && !config("source", &a.source)) return;
  for (const auto& [key, value] : a.params) {
    if (!config(key, value.get())) return;
  }
  if (syscall(__NR_fsconfig, fs.fd, kFsconfigCmdCreate, nullptr, nullptr, 0) != 0) {
    int e = errno;
    fail("fsconfig", e);
    std::string log = ReadFsContextLog(fs.fd);
    err.detail = "create " + a.fstype + (log.empty() ? "" : "; kernel: " + log);
    return;
  }
  Fd mnt;
  mnt.fd = static_cast<int>(syscall(__NR_fsmount, fs.fd, kFsmountCloexec, a.readOnly ? kMountAttrRdonly : 0));
  if (mnt.fd < 0) {
    int e = errno;
    fail("fsmount", e);
    err.detail = ReadFsContextLog(fs.fd);
    return;
  }
  if (syscall(__NR_move_mount, mnt.fd, "", AT_FDCWD, a.target.c_str(), kMoveMountFEmptyPath) != 0) {
    fail("move_mount", errno);
  }
}

// fsMount(fstype, source|null, params: [key, value|null][], target, readOnly, cwd|null)
Napi::Value FsMount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto a = std::make_shared<FsMountArgs>();
  a->fstype = ArgString(info, 0, "fstype");
  a->hasSource = ArgOptString(info, 1, "source", &a->source);
  if (!info[2].IsArray()) throw Napi::TypeError::New(env, "The \"params\" argument must be an array of [key, value] pairs");
  Napi::Array params = info[2].As<Napi::Array>();
  for (uint32_t i = 0; i < params.Length(); i++) {
    Napi::Value p = params.Get(i);
    if (!p.IsArray() || p.As<Napi::Array>().Length() != 2)
      throw Napi::TypeError::New(env, "params[" + std::to_string(i) + "] must be a [key, value] pair");
    Napi::Array pair = p.As<Napi::Array>();
    Napi::Value k = pair.Get(0u), v = pair.Get(1u);
    if (!k.IsString()) throw Napi::TypeError::New(env, "params[" + std::to_string(i) + "][0] must be a string");
    if (!v.IsString() && !v.IsNull())
      throw Napi::TypeError::New(env, "params[" + std::to_string(i) + "][1] must be a string or null");
    std::string key = k.As<Napi::String>().Utf8Value();
    std::unique_ptr<std::string> value = v.IsNull() ? nullptr : std::make_unique<std::string>(v.As<Napi::String>().Utf8Value());
    if (key.find('\0') != std::string::npos || (value && value->find('\0') != std::string::npos))
      throw Napi::TypeError::New(env, "params[" + std::to_string(i) + "] must not contain null bytes");
    a->params.emplace_back(std::move(key), std::move(value));
  }
  a->target = ArgString(info, 3, "target");
  if (!info[4].IsBoolean()) throw Napi::TypeError::New(env, "The \"readOnly\" argument must be a boolean");
  a->readOnly = info[4].As<Napi::Boolean>().Value();
  a->hasCwd = ArgOptString(info, 5, "cwd", &a->cwd);
  return RunAsync(env, "cairn.fsMount", [a](JobResult& r) {
    if (a->hasCwd) {
      WithPrivateCwd(a->cwd, r.error, [&] { DoFsMount(*a, r.error); });
    } else {
      DoFsMount(*a, r.error);
    }
  });
}

// fsopen(NULL) fails with EFAULT (or EPERM without CAP_SYS_ADMIN) where the syscall
// exists and ENOSYS where it does not; no fs context is ever created.
Napi::Value HasNewMountApi(const Napi::CallbackInfo& info) {
  static const bool has = [] {
    long fd = syscall(__NR_fsopen, nullptr, 0);
    if (fd >= 0) close(static_cast<int>(fd));
    return !(fd < 0 && errno == ENOSYS);
  }();
  return Napi::Boolean::New(info.Env(), has);
}

}  // namespace

void InitMount(Napi::Env env, Napi::Object exports) {
  exports.Set("mount", Napi::Function::New(env, Mount, "mount"));
  exports.Set("mountAt", Napi::Function::New(env, MountAt, "mountAt"));
  exports.Set("umount2", Napi::Function::New(env, Umount2, "umount2"));
  exports.Set("fsMount", Napi::Function::New(env, FsMount, "fsMount"));
  exports.Set("hasNewMountApi", Napi::Function::New(env, HasNewMountApi, "hasNewMountApi"));
}

}  // namespace cairn
