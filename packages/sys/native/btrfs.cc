// btrfs ioctls for the btrfs driver: subvolume create / snapshot / destroy, the read-only
// flag, subvolume ids, the subvolumes nested in a subvolume, filesystem info and qgroup
// limits. Struct layouts come from <linux/btrfs.h>. Every call opens what it needs,
// issues the ioctl on the libuv pool and closes again, so no fd outlives a call.
#include "common.h"
#include "value_job.h"

#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace cairn {

namespace {

// Opens a directory (a subvolume root or its parent) for an ioctl; sets `e` on failure.
int OpenDir(const std::string& path, SysError& e) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) PathError(e, errno, "open", path);
  return fd;
}

// A subvolume name is one path component: the kernel refuses '/' and overlong names
// with EINVAL, but saying so before the call gives a TypeError that names the argument.
std::string ArgName(const Napi::CallbackInfo& info, size_t i, const char* name) {
  std::string s = ArgString(info, i, name);
  if (s.empty() || s == "." || s == ".." || s.find('/') != std::string::npos || s.size() > BTRFS_VOL_NAME_MAX)
    throw Napi::TypeError::New(info.Env(), std::string("The \"") + name + "\" argument must be one path component of 1-255 bytes");
  return s;
}

// ---- create / snapshot / destroy ----

// BTRFS_IOC_SUBVOL_CREATE in `dir`, named `name`.
Napi::Value SubvolCreate(const Napi::CallbackInfo& info) {
  std::string dir = ArgString(info, 0, "dir");
  std::string name = ArgName(info, 1, "name");
  return RunAsync(info.Env(), "cairn.btrfsSubvolCreate", [dir, name](JobResult& r) {
    Fd fd(OpenDir(dir, r.error));
    if (!fd.ok()) return;
    btrfs_ioctl_vol_args args;
    std::memset(&args, 0, sizeof args);
    std::strncpy(args.name, name.c_str(), BTRFS_PATH_NAME_MAX);
    if (ioctl(fd.get(), BTRFS_IOC_SUBVOL_CREATE, &args) != 0) PathError(r.error, errno, "BTRFS_IOC_SUBVOL_CREATE", dir + "/" + name);
  });
}

// BTRFS_IOC_SNAP_CREATE_V2: snapshot of subvolume `source` as `dir/name`, read-only on request.
Napi::Value Snapshot(const Napi::CallbackInfo& info) {
  std::string source = ArgString(info, 0, "source");
  std::string dir = ArgString(info, 1, "dir");
  std::string name = ArgName(info, 2, "name");
  if (!info[3].IsBoolean()) throw Napi::TypeError::New(info.Env(), "The \"readOnly\" argument must be a boolean");
  bool readOnly = info[3].As<Napi::Boolean>().Value();
  return RunAsync(info.Env(), "cairn.btrfsSnapshot", [source, dir, name, readOnly](JobResult& r) {
    Fd src(OpenDir(source, r.error));
    if (!src.ok()) return;
    Fd dst(OpenDir(dir, r.error));
    if (!dst.ok()) return;
    btrfs_ioctl_vol_args_v2 args;
    std::memset(&args, 0, sizeof args);
    args.fd = src.get();
    args.flags = readOnly ? BTRFS_SUBVOL_RDONLY : 0;
    std::strncpy(args.name, name.c_str(), BTRFS_SUBVOL_NAME_MAX);
    if (ioctl(dst.get(), BTRFS_IOC_SNAP_CREATE_V2, &args) != 0) {
      PathError(r.error, errno, "BTRFS_IOC_SNAP_CREATE_V2", source);
      r.error.dest = dir + "/" + name;
      r.error.hasDest = true;
    }
  });
}

// BTRFS_IOC_SNAP_DESTROY of `dir/name`. Fails with ENOTEMPTY while subvolumes are nested in
// it: the caller destroys those first (see SubvolChildren).
Napi::Value SubvolDestroy(const Napi::CallbackInfo& info) {
  std::string dir = ArgString(info, 0, "dir");
  std::string name = ArgName(info, 1, "name");
  return RunAsync(info.Env(), "cairn.btrfsSubvolDestroy", [dir, name](JobResult& r) {
    Fd fd(OpenDir(dir, r.error));
    if (!fd.ok()) return;
    btrfs_ioctl_vol_args args;
    std::memset(&args, 0, sizeof args);
    std::strncpy(args.name, name.c_str(), BTRFS_PATH_NAME_MAX);
    if (ioctl(fd.get(), BTRFS_IOC_SNAP_DESTROY, &args) != 0) PathError(r.error, errno, "BTRFS_IOC_SNAP_DESTROY", dir + "/" + name);
  });
}

// ---- flags ----

Napi::Value GetFlags(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  return RunValue<uint64_t>(
      info.Env(), "cairn.btrfsGetFlags",
      [path](uint64_t& flags, SysError& e) {
        Fd fd(OpenDir(path, e));
        if (!fd.ok()) return;
        if (ioctl(fd.get(), BTRFS_IOC_SUBVOL_GETFLAGS, &flags) != 0) PathError(e, errno, "BTRFS_IOC_SUBVOL_GETFLAGS", path);
      },
      [](Napi::Env env, const uint64_t& flags) { return Napi::Number::New(env, static_cast<double>(flags)); });
}

Napi::Value SetFlags(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  uint64_t flags = ArgUint64(info, 1, "flags");
  return RunAsync(info.Env(), "cairn.btrfsSetFlags", [path, flags](JobResult& r) {
    Fd fd(OpenDir(path, r.error));
    if (!fd.ok()) return;
    uint64_t f = flags;
    if (ioctl(fd.get(), BTRFS_IOC_SUBVOL_SETFLAGS, &f) != 0) PathError(r.error, errno, "BTRFS_IOC_SUBVOL_SETFLAGS", path);
  });
}

// ---- ids and nesting ----

// The id of the subvolume that holds `path`: BTRFS_IOC_INO_LOOKUP with treeid 0 answers
// with the tree of the fd's inode.
Napi::Value SubvolId(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  return RunValue<uint64_t>(
      info.Env(), "cairn.btrfsSubvolId",
      [path](uint64_t& id, SysError& e) {
        Fd fd(OpenDir(path, e));
        if (!fd.ok()) return;
        auto args = std::make_unique<btrfs_ioctl_ino_lookup_args>();
        std::memset(args.get(), 0, sizeof *args);
        args->treeid = 0;
        args->objectid = BTRFS_FIRST_FREE_OBJECTID;
        if (ioctl(fd.get(), BTRFS_IOC_INO_LOOKUP, args.get()) != 0) {
          PathError(e, errno, "BTRFS_IOC_INO_LOOKUP", path);
          return;
        }
        id = args->treeid;
      },
      [](Napi::Env env, const uint64_t& id) { return Napi::Number::New(env, static_cast<double>(id)); });
}

struct Child {
  uint64_t id;
  std::string path;  // relative to the subvolume root
};

// The subvolumes directly nested in the subvolume rooted at `path`: BTRFS_IOC_GET_SUBVOL_ROOTREF
// lists their (tree id, directory inode) pairs, 255 per call, and BTRFS_IOC_INO_LOOKUP_USER
// turns each into a path. Cost is per nested subvolume, not per file in the layer.
Napi::Value SubvolChildren(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  return RunValue<std::vector<Child>>(
      info.Env(), "cairn.btrfsSubvolChildren",
      [path](std::vector<Child>& out, SysError& e) {
        Fd fd(OpenDir(path, e));
        if (!fd.ok()) return;
        auto refs = std::make_unique<btrfs_ioctl_get_subvol_rootref_args>();
        std::memset(refs.get(), 0, sizeof *refs);
        for (;;) {
          int rc = ioctl(fd.get(), BTRFS_IOC_GET_SUBVOL_ROOTREF, refs.get());
          bool more = rc != 0 && errno == EOVERFLOW;  // the buffer filled up; min_treeid says where to resume
          if (rc != 0 && !more) {
            PathError(e, errno, "BTRFS_IOC_GET_SUBVOL_ROOTREF", path);
            return;
          }
          for (unsigned i = 0; i < refs->num_items; i++) {
            auto look = std::make_unique<btrfs_ioctl_ino_lookup_user_args>();
            std::memset(look.get(), 0, sizeof *look);
            look->dirid = refs->rootref[i].dirid;
            look->treeid = refs->rootref[i].treeid;
            if (ioctl(fd.get(), BTRFS_IOC_INO_LOOKUP_USER, look.get()) != 0) {
              PathError(e, errno, "BTRFS_IOC_INO_LOOKUP_USER", path);
              return;
            }
            look->name[BTRFS_VOL_NAME_MAX] = '\0';
            look->path[BTRFS_INO_LOOKUP_USER_PATH_MAX - 1] = '\0';
            out.push_back(Child{refs->rootref[i].treeid, std::string(look->path) + look->name});
          }
          if (!more) return;
          refs->num_items = 0;
        }
      },
      [](Napi::Env env, const std::vector<Child>& children) {
        Napi::Array a = Napi::Array::New(env, children.size());
        for (size_t i = 0; i < children.size(); i++) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("id", Napi::Number::New(env, static_cast<double>(children[i].id)));
          o.Set("path", Napi::String::New(env, children[i].path));
          a.Set(static_cast<uint32_t>(i), o);
        }
        return a;
      });
}

// ---- filesystem info ----

struct FsInfo {
  std::string fsid;
  uint64_t numDevices = 0;
  uint32_t nodesize = 0, sectorsize = 0;
  uint64_t generation = 0;
};

Napi::Value FsInfoCall(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  return RunValue<FsInfo>(
      info.Env(), "cairn.btrfsFsInfo",
      [path](FsInfo& out, SysError& e) {
        Fd fd(OpenDir(path, e));
        if (!fd.ok()) return;
        auto args = std::make_unique<btrfs_ioctl_fs_info_args>();
        std::memset(args.get(), 0, sizeof *args);
        args->flags = BTRFS_FS_INFO_FLAG_GENERATION;
        if (ioctl(fd.get(), BTRFS_IOC_FS_INFO, args.get()) != 0) {
          PathError(e, errno, "BTRFS_IOC_FS_INFO", path);
          return;
        }
        // The UUID as /sys/fs/btrfs/<fsid> and blkid print it.
        char uuid[37];
        const uint8_t* u = args->fsid;
        std::snprintf(uuid, sizeof uuid, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                      u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
        out.fsid = uuid;
        out.numDevices = args->num_devices;
        out.nodesize = args->nodesize;
        out.sectorsize = args->sectorsize;
        out.generation = (args->flags & BTRFS_FS_INFO_FLAG_GENERATION) ? args->generation : 0;
      },
      [](Napi::Env env, const FsInfo& fi) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("fsid", Napi::String::New(env, fi.fsid));
        o.Set("numDevices", Napi::Number::New(env, static_cast<double>(fi.numDevices)));
        o.Set("nodesize", Napi::Number::New(env, fi.nodesize));
        o.Set("sectorsize", Napi::Number::New(env, fi.sectorsize));
        o.Set("generation", Napi::Number::New(env, static_cast<double>(fi.generation)));
        return o;
      });
}

// ---- qgroups ----

// BTRFS_IOC_QGROUP_LIMIT: max referenced bytes of qgroup `qgroupid` (0 = no limit).
// ENOTCONN when quotas are disabled on the filesystem.
Napi::Value QgroupLimit(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  uint64_t qgroupid = ArgUint64(info, 1, "qgroupid");
  uint64_t maxRfer = ArgUint64(info, 2, "maxReferenced");
  return RunAsync(info.Env(), "cairn.btrfsQgroupLimit", [path, qgroupid, maxRfer](JobResult& r) {
    Fd fd(OpenDir(path, r.error));
    if (!fd.ok()) return;
    btrfs_ioctl_qgroup_limit_args args;
    std::memset(&args, 0, sizeof args);
    args.qgroupid = qgroupid;
    args.lim.flags = BTRFS_QGROUP_LIMIT_MAX_RFER;
    args.lim.max_rfer = maxRfer == 0 ? static_cast<uint64_t>(-1) : maxRfer;
    if (ioctl(fd.get(), BTRFS_IOC_QGROUP_LIMIT, &args) != 0) PathError(r.error, errno, "BTRFS_IOC_QGROUP_LIMIT", path);
  });
}

// BTRFS_IOC_QGROUP_CREATE with create=0: destroys qgroup `qgroupid`.
Napi::Value QgroupDestroy(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  uint64_t qgroupid = ArgUint64(info, 1, "qgroupid");
  return RunAsync(info.Env(), "cairn.btrfsQgroupDestroy", [path, qgroupid](JobResult& r) {
    Fd fd(OpenDir(path, r.error));
    if (!fd.ok()) return;
    btrfs_ioctl_qgroup_create_args args;
    std::memset(&args, 0, sizeof args);
    args.create = 0;
    args.qgroupid = qgroupid;
    if (ioctl(fd.get(), BTRFS_IOC_QGROUP_CREATE, &args) != 0) PathError(r.error, errno, "BTRFS_IOC_QGROUP_CREATE", path);
  });
}

}  // namespace

void InitBtrfs(Napi::Env env, Napi::Object exports) {
  exports.Set("btrfsSubvolCreate", Napi::Function::New(env, SubvolCreate, "btrfsSubvolCreate"));
  exports.Set("btrfsSnapshot", Napi::Function::New(env, Snapshot, "btrfsSnapshot"));
  exports.Set("btrfsSubvolDestroy", Napi::Function::New(env, SubvolDestroy, "btrfsSubvolDestroy"));
  exports.Set("btrfsGetFlags", Napi::Function::New(env, GetFlags, "btrfsGetFlags"));
  exports.Set("btrfsSetFlags", Napi::Function::New(env, SetFlags, "btrfsSetFlags"));
  exports.Set("btrfsSubvolId", Napi::Function::New(env, SubvolId, "btrfsSubvolId"));
  exports.Set("btrfsSubvolChildren", Napi::Function::New(env, SubvolChildren, "btrfsSubvolChildren"));
  exports.Set("btrfsFsInfo", Napi::Function::New(env, FsInfoCall, "btrfsFsInfo"));
  exports.Set("btrfsQgroupLimit", Napi::Function::New(env, QgroupLimit, "btrfsQgroupLimit"));
  exports.Set("btrfsQgroupDestroy", Napi::Function::New(env, QgroupDestroy, "btrfsQgroupDestroy"));
}

}  // namespace cairn
