// XFS project quotas for per-layer size limits (overlay2 and vfs `size`), the calls moby's
// quota package makes through cgo: FS_IOC_FSGETXATTR/FS_IOC_FSSETXATTR for a directory's
// project id and inherit flag, and quotactl on the filesystem for the project's limits.
// quotactl_fd(2) (Linux >= 5.14) takes any fd on the filesystem, so unlike moby we need no
// block device node (moby mknods `backingFsBlockDev` into its home for quotactl(2)).
// Every call opens what it needs, issues the call on the libuv pool and closes again.
#include "common.h"
#include "value_job.h"

#include <fcntl.h>
#include <linux/dqblk_xfs.h>
#include <linux/fs.h>
#include <linux/quota.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#ifndef SYS_quotactl_fd
#define SYS_quotactl_fd 443  // same number on every architecture (asm-generic)
#endif

namespace cairn {

namespace {

// O_RDONLY works on directories and regular files alike; FSSETXATTR needs no write access.
int OpenPath(const std::string& path, SysError& e) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) PathError(e, errno, "open", path);
  return fd;
}

int QuotactlFd(int fd, int cmd, uint32_t id, void* addr) {
  return static_cast<int>(syscall(SYS_quotactl_fd, fd, QCMD(cmd, PRJQUOTA), id, addr));
}

// A job whose result is one number.
Napi::Value RunNumber(Napi::Env env, const char* name, std::function<void(double&, SysError&)> fn) {
  return RunValue<double>(env, name, std::move(fn), [](Napi::Env e, const double& v) -> Napi::Value { return Napi::Number::New(e, v); });
}

uint32_t ArgProjectId(const Napi::CallbackInfo& info, size_t i) {
  int64_t id = ArgInt(info, i, "projectId");
  if (id < 0 || id > 0xffffffffLL) throw Napi::TypeError::New(info.Env(), "The \"projectId\" argument must be a 32-bit unsigned integer");
  return static_cast<uint32_t>(id);
}

// FS_IOC_FSGETXATTR: the project id of `path`.
Napi::Value GetProjectId(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  return RunNumber(info.Env(), "cairn.xfsGetProjectId", [path](double& out, SysError& e) {
    Fd fd(OpenPath(path, e));
    if (!fd.ok()) return;
    struct fsxattr fsx;
    std::memset(&fsx, 0, sizeof fsx);
    if (ioctl(fd.get(), FS_IOC_FSGETXATTR, &fsx) != 0) return PathError(e, errno, "FS_IOC_FSGETXATTR", path);
    out = fsx.fsx_projid;
  });
}

// FS_IOC_FSSETXATTR: project id `id` on `path`, with PROJINHERIT so that everything later
// created below a directory is charged to the same project (as moby's setProjectID).
Napi::Value SetProjectId(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  uint32_t id = ArgProjectId(info, 1);
  return RunAsync(info.Env(), "cairn.xfsSetProjectId", [path, id](JobResult& r) {
    Fd fd(OpenPath(path, r.error));
    if (!fd.ok()) return;
    struct fsxattr fsx;
    std::memset(&fsx, 0, sizeof fsx);
    if (ioctl(fd.get(), FS_IOC_FSGETXATTR, &fsx) != 0) return PathError(r.error, errno, "FS_IOC_FSGETXATTR", path);
    fsx.fsx_projid = id;
    fsx.fsx_xflags |= FS_XFLAG_PROJINHERIT;
    if (ioctl(fd.get(), FS_IOC_FSSETXATTR, &fsx) != 0) PathError(r.error, errno, "FS_IOC_FSSETXATTR", path);
  });
}

// quotactl_fd(Q_XSETQLIM): hard and soft block limit of project `id` on the filesystem
// holding `path`, in bytes (the kernel counts 512-byte basic blocks; rounded up).
Napi::Value SetProjectLimit(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  uint32_t id = ArgProjectId(info, 1);
  uint64_t bytes = ArgUint64(info, 2, "bytes");
  return RunAsync(info.Env(), "cairn.xfsSetProjectLimit", [path, id, bytes](JobResult& r) {
    Fd fd(OpenPath(path, r.error));
    if (!fd.ok()) return;
    struct fs_disk_quota q;
    std::memset(&q, 0, sizeof q);
    q.d_version = FS_DQUOT_VERSION;
    q.d_flags = FS_PROJ_QUOTA;
    q.d_id = id;
    q.d_fieldmask = FS_DQ_BSOFT | FS_DQ_BHARD;
    q.d_blk_hardlimit = (bytes + 511) / 512;
    q.d_blk_softlimit = q.d_blk_hardlimit;
    if (QuotactlFd(fd.get(), Q_XSETQLIM, id, &q) != 0) PathError(r.error, errno, "quotactl_fd", path);
  });
}

// quotactl_fd(Q_XGETQUOTA): the hard block limit of project `id`, in bytes (0 = none).
Napi::Value GetProjectLimit(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  uint32_t id = ArgProjectId(info, 1);
  return RunNumber(info.Env(), "cairn.xfsGetProjectLimit", [path, id](double& out, SysError& e) {
    Fd fd(OpenPath(path, e));
    if (!fd.ok()) return;
    struct fs_disk_quota q;
    std::memset(&q, 0, sizeof q);
    if (QuotactlFd(fd.get(), Q_XGETQUOTA, id, &q) != 0) {
      if (errno == ENOENT) return;  // no dquot yet: no limit
      return PathError(e, errno, "quotactl_fd", path);
    }
    out = static_cast<double>(q.d_blk_hardlimit) * 512;
  });
}

// quotactl_fd(Q_XGETQSTATV): the filesystem's quota state flags (FS_QUOTA_PDQ_ACCT,
// FS_QUOTA_PDQ_ENFD, …). Fails (ENOSYS/EINVAL/ENOTTY…) where the kernel has no xfs quota.
Napi::Value QuotaState(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  return RunNumber(info.Env(), "cairn.xfsQuotaState", [path](double& out, SysError& e) {
    Fd fd(OpenPath(path, e));
    if (!fd.ok()) return;
    struct fs_quota_statv st;
    std::memset(&st, 0, sizeof st);
    st.qs_version = FS_QSTATV_VERSION1;
    if (QuotactlFd(fd.get(), Q_XGETQSTATV, 0, &st) != 0) return PathError(e, errno, "quotactl_fd", path);
    out = st.qs_flags;
  });
}

}  // namespace

void InitQuota(Napi::Env env, Napi::Object exports) {
  exports.Set("xfsGetProjectId", Napi::Function::New(env, GetProjectId, "xfsGetProjectId"));
  exports.Set("xfsSetProjectId", Napi::Function::New(env, SetProjectId, "xfsSetProjectId"));
  exports.Set("xfsSetProjectLimit", Napi::Function::New(env, SetProjectLimit, "xfsSetProjectLimit"));
  exports.Set("xfsGetProjectLimit", Napi::Function::New(env, GetProjectLimit, "xfsGetProjectLimit"));
  exports.Set("xfsQuotaState", Napi::Function::New(env, QuotaState, "xfsQuotaState"));
}

}  // namespace cairn
