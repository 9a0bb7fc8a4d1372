// Entry point of cairn_sys: RunAsync (a pool job, value_job.h), the constants table and module init.
#include "common.h"
#include "value_job.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>

namespace cairn {

Napi::Object Constants(Napi::Env env) {
  Napi::Object c = Napi::Object::New(env);
  auto set = [&](const char* name, double v) { c.Set(name, Napi::Number::New(env, v)); };
  set("MS_RDONLY", MS_RDONLY);
  set("MS_NOSUID", MS_NOSUID);
  set("MS_NODEV", MS_NODEV);
  set("MS_NOEXEC", MS_NOEXEC);
  set("MS_REMOUNT", MS_REMOUNT);
  set("MS_BIND", MS_BIND);
  set("MS_REC", MS_REC);
  set("MS_PRIVATE", MS_PRIVATE);
  set("MS_SLAVE", MS_SLAVE);
  set("MS_SHARED", MS_SHARED);
  set("MS_NOATIME", MS_NOATIME);
  set("MS_RELATIME", MS_RELATIME);
  set("MNT_FORCE", MNT_FORCE);
  set("MNT_DETACH", MNT_DETACH);
  set("MNT_EXPIRE", MNT_EXPIRE);
  set("UMOUNT_NOFOLLOW", UMOUNT_NOFOLLOW);
  set("XATTR_CREATE", XATTR_CREATE);
  set("XATTR_REPLACE", XATTR_REPLACE);
  set("S_IFCHR", S_IFCHR);
  set("S_IFBLK", S_IFBLK);
  set("S_IFIFO", S_IFIFO);
  set("S_IFSOCK", S_IFSOCK);
  set("S_IFREG", S_IFREG);
  set("S_IFDIR", S_IFDIR);
  set("S_IFLNK", S_IFLNK);
  set("LOCK_SH", LOCK_SH);
  set("LOCK_EX", LOCK_EX);
  set("LOCK_UN", LOCK_UN);
  set("LOCK_NB", LOCK_NB);
  c.Freeze();
  return c;
}

Napi::Value ResultValue(Napi::Env env, const JobResult& r) {
  if (r.isNull) return env.Null();
  if (r.hasBytes) return Napi::Buffer<char>::Copy(env, r.bytes.data(), r.bytes.size());
  if (r.hasList) {
    Napi::Array a = Napi::Array::New(env, r.list.size());
    for (size_t i = 0; i < r.list.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::String::New(env, r.list[i]));
    return a;
  }
  if (r.hasNumbers) {
    Napi::Array a = Napi::Array::New(env, r.numbers.size());
    for (size_t i = 0; i < r.numbers.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, r.numbers[i]));
    return a;
  }
  return env.Undefined();
}

Napi::Value RunAsync(Napi::Env env, const char* name, std::function<void(JobResult&)> job) {
  return RunValue<JobResult>(
      env, name,
      [job = std::move(job)](JobResult& r, SysError& e) {
        job(r);
        e = r.error;
      },
      ResultValue);
}

}  // namespace cairn

static Napi::Object InitCairnSys(Napi::Env env, Napi::Object exports) {
  exports.Set("constants", cairn::Constants(env));
  cairn::InitMount(env, exports);
  cairn::InitFiles(env, exports);
  cairn::InitDurable(env, exports);
  cairn::InitBtrfs(env, exports);
  cairn::InitUntar(env, exports);
  cairn::InitQuota(env, exports);
  cairn::InitWalk(env, exports);
  cairn::InitTarPack(env, exports);
  cairn::InitOpenFile(env, exports);
  cairn::InitUserns(env, exports);
  cairn::InitRemoveTree(env, exports);
  cairn::InitAtCalls(env, exports);
  cairn::InitZstd(env, exports);
  cairn::InitSplitReplay(env, exports);
  return exports;
}

NODE_API_MODULE(cairn_sys, InitCairnSys)
