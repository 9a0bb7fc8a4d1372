// User namespaces and id-mapped mounts: a user namespace made from given id maps (its fd,
// for mount_setattr(MOUNT_ATTR_IDMAP)), an id-mapped bind mount (open_tree +
// mount_setattr + move_mount), and the ownership shift of a whole tree (the fallback where
// a filesystem cannot be id-mapped).
#include "common.h"
#include "idmap.h"
#include "mountapi.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

namespace cairn {

namespace {

using namespace mountapi;

std::vector<IdRange> ArgRanges(Napi::Env env, Napi::Value v, const std::string& what) {
  std::vector<IdRange> out;
  if (v.IsUndefined() || v.IsNull()) return out;
  if (!v.IsArray()) throw Napi::TypeError::New(env, what + " must be an array of { containerId, hostId, size }");
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsObject()) throw Napi::TypeError::New(env, what + "[" + std::to_string(i) + "] must be an object");
    Napi::Object o = e.As<Napi::Object>();
    IdRange r;
    int64_t* fields[] = {&r.container, &r.host, &r.size};
    const char* names[] = {"containerId", "hostId", "size"};
    for (int f = 0; f < 3; f++) {
      Napi::Value n = o.Get(names[f]);
      double d = n.IsNumber() ? n.As<Napi::Number>().DoubleValue() : -1;
      if (!(d >= 0 && d <= 4294967295.0 && d == static_cast<double>(static_cast<int64_t>(d))))
        throw Napi::TypeError::New(env, what + "[" + std::to_string(i) + "]." + names[f] + " must be an integer from 0 to 2^32-1");
      *fields[f] = static_cast<int64_t>(d);
    }
    if (r.size == 0) throw Napi::TypeError::New(env, what + "[" + std::to_string(i) + "].size must be at least 1");
    out.push_back(r);
  }
  return out;
}

// ---- a user namespace from maps ----

bool WriteProcFile(const std::string& path, const std::string& text, SysError& e) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    PathError(e, errno, "open", path);
    return false;
  }
  ssize_t n = write(fd, text.data(), text.size());
  int err = errno;
  close(fd);
  if (n != static_cast<ssize_t>(text.size())) {
    PathError(e, n < 0 ? err : EIO, "write", path);
    e.detail = text;
    return false;
  }
  return true;
}

// The child a user namespace is made with: it only waits for its pipe to close. It shares
// the parent's memory (CLONE_VM: no page tables to copy, so a big Node process clones in
// microseconds, not the tens of ms a fork takes) and runs on its own small stack, making
// raw syscalls only (no errno, no libc state touched).
int WaitForClose(void* arg) {
  const int* fds = static_cast<const int*>(arg);  // [read end, write end]
  syscall(SYS_close, fds[1]);  // its copy of the write end, or it would never read EOF
  char c;
  while (syscall(SYS_read, fds[0], &c, 1) < 0) {
  }
  syscall(SYS_exit, 0);
  return 0;
}

// A child is cloned straight into a new user namespace (clone(CLONE_NEWUSER), which a
// multi-threaded process may do, unlike unshare), the maps are written from here (we hold
// CAP_SETUID/CAP_SETGID over the ids we map, as root or as root of our own namespace),
// the namespace is kept by opening /proc/<pid>/ns/user, and the child exits.
int MakeUserNamespace(const IdShift& maps, SysError& e) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    e.Set(errno, "pipe2");
    return -1;
  }
  static thread_local std::vector<char> stack(64 * 1024);
  long pid = clone(WaitForClose, stack.data() + stack.size(), CLONE_VM | CLONE_NEWUSER | SIGCHLD, pipefd);
  int cloneErr = errno;
  if (pid < 0) {
    close(pipefd[0]);
    close(pipefd[1]);
    e.Set(cloneErr, "clone");
    e.detail = "CLONE_NEWUSER";
    return -1;
  }
  std::string proc = "/proc/" + std::to_string(pid);
  int fd = -1;
  if (WriteProcFile(proc + "/uid_map", IdMapText(maps.uids), e) &&
      WriteProcFile(proc + "/gid_map", IdMapText(maps.gids), e)) {
    fd = open((proc + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) PathError(e, errno, "open", proc + "/ns/user");
  }
  close(pipefd[1]);  // the child reads EOF and exits
  int status;
  while (waitpid(static_cast<pid_t>(pid), &status, 0) < 0 && errno == EINTR) {
  }
  close(pipefd[0]);  // only now: the child read it until then
  return fd;
}

// makeUserNamespaceSync({ uidMap, gidMap }) -> fd (the caller closes it)
Napi::Value MakeUserNamespaceSync(const Napi::CallbackInfo& info) {
  IdShift maps = ArgIdShift(info, 0, "maps");
  if (maps.uids.empty() || maps.gids.empty()) throw Napi::TypeError::New(info.Env(), "maps needs at least one uidMap and one gidMap range");
  SysError e;
  int fd = MakeUserNamespace(maps, e);
  if (fd < 0) ThrowSysError(info.Env(), e);
  return Napi::Number::New(info.Env(), fd);
}

// ---- id-mapped bind mounts ----

struct IdmapArgs {
  std::string source, target;
  int usernsFd = -1;
  bool readOnly = false, recursive = false;
};

void DoIdmappedMount(const IdmapArgs& a, SysError& e) {
  unsigned flags = kOpenTreeClone | O_CLOEXEC | (a.recursive ? kAtRecursive : 0);
  int tree = static_cast<int>(syscall(__NR_open_tree, AT_FDCWD, a.source.c_str(), flags));
  if (tree < 0) {
    PathError(e, errno, "open_tree", a.source);
    return;
  }
  MountAttr attr{};
  attr.attr_set = kMountAttrIdmap | (a.readOnly ? kMountAttrRdonly : 0);
  attr.userns_fd = static_cast<uint64_t>(a.usernsFd);
  if (syscall(__NR_mount_setattr, tree, "", AT_EMPTY_PATH | (a.recursive ? kAtRecursive : 0), &attr, sizeof(attr)) != 0) {
    PathError(e, errno, "mount_setattr", a.source);
    e.detail = "MOUNT_ATTR_IDMAP";
  } else if (!a.target.empty() && syscall(__NR_move_mount, tree, "", AT_FDCWD, a.target.c_str(), kMoveMountFEmptyPath) != 0) {
    PathError(e, errno, "move_mount", a.source);
    e.dest = a.target;
    e.hasDest = true;
  }
  close(tree);  // a detached tree that was never moved is freed with its fd
}

// idmappedMount(source, target, usernsFd, readOnly, recursive); an empty target makes the
// id-mapped clone and drops it unattached (a probe: whether this filesystem can be id-mapped)
Napi::Value IdmappedMount(const Napi::CallbackInfo& info) {
  IdmapArgs a;
  a.source = ArgString(info, 0, "source");
  a.target = ArgString(info, 1, "target");
  int64_t fd = ArgInt(info, 2, "usernsFd");
  if (fd < 0 || fd > std::numeric_limits<int>::max()) throw Napi::TypeError::New(info.Env(), "usernsFd must be an open file descriptor");
  a.usernsFd = static_cast<int>(fd);
  a.readOnly = info[3].ToBoolean();
  a.recursive = info[4].ToBoolean();
  return RunAsync(info.Env(), "cairn.idmappedMount", [a](JobResult& r) { DoIdmappedMount(a, r.error); });
}

// ---- the ownership of a whole tree, shifted ----

// Walks `dir` (an fd of a real directory) without following any symlink: every entry is
// opened O_PATH|O_NOFOLLOW beneath its parent's fd and acted on through that fd, so a
// link swapped in meanwhile can never lead the walk outside the tree.
class Shifter {
 public:
  Shifter(const IdShift& maps, bool toHost, SysError& e) : maps_(maps), to_host_(toHost), e_(e) {}

  bool Entry(int fd, const std::string& rel) {
    struct stat st;
    if (fstat(fd, &st) != 0) return Fail(errno, "fstat", rel);
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !seen_.insert({st.st_dev, st.st_ino}).second) return true;  // a hardlink done already
    int64_t uid, gid;
    if (!IdShift::Map(maps_.uids, st.st_uid, to_host_, &uid) || !IdShift::Map(maps_.gids, st.st_gid, to_host_, &gid)) {
      Fail(EOVERFLOW, "chown", rel);
      e_.detail = "owner " + std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid) + " has no mapping in the id map";
      return false;
    }
    if (fchownat(fd, "", static_cast<uid_t>(uid), static_cast<gid_t>(gid), AT_EMPTY_PATH) != 0) return Fail(errno, "fchownat", rel);
    // chown clears setuid/setgid (and file capabilities): put the mode back.
    if (!S_ISLNK(st.st_mode) && (st.st_mode & (S_ISUID | S_ISGID)) != 0) {
      std::string proc = "/proc/self/fd/" + std::to_string(fd);
      if (chmod(proc.c_str(), st.st_mode & 07777) != 0) return Fail(errno, "chmod", rel);
    }
    if (S_ISDIR(st.st_mode)) return Children(fd, rel);
    return true;
  }

 private:
  bool Children(int dirPath, const std::string& rel) {
    int dfd = openat(dirPath, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return Fail(errno, "open", rel);
    DIR* d = fdopendir(dfd);
    if (!d) {
      int err = errno;
      close(dfd);
      return Fail(err, "opendir", rel);
    }
    std::vector<std::string> names;
    while (dirent* de = readdir(d)) {
      if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0) names.emplace_back(de->d_name);
    }
    bool ok = true;
    for (const std::string& name : names) {
      std::string childRel = rel.empty() ? name : rel + "/" + name;
      int fd = openat(dirfd(d), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) {
        if (errno == ENOENT) continue;
        ok = Fail(errno, "open", childRel);
        break;
      }
      ok = Entry(fd, childRel);
      close(fd);
      if (!ok) break;
    }
    closedir(d);
    return ok;
  }

  bool Fail(int err, const char* sc, const std::string& rel) {
    PathError(e_, err, sc, rel);
    return false;
  }

  const IdShift& maps_;
  bool to_host_;
  SysError& e_;
  std::set<std::pair<dev_t, ino_t>> seen_;
};

// shiftOwnership(root, { uidMap, gidMap }, toHost) — every owner in the tree mapped
// container -> host (toHost) or back; an owner outside the map fails with EOVERFLOW.
Napi::Value ShiftOwnership(const Napi::CallbackInfo& info) {
  std::string root = ArgString(info, 0, "root");
  IdShift maps = ArgIdShift(info, 1, "maps");
  bool toHost = info[2].ToBoolean();
  return RunAsync(info.Env(), "cairn.shiftOwnership", [root, maps, toHost](JobResult& r) {
    int fd = open(root.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      PathError(r.error, errno, "open", root);
      return;
    }
    Shifter s(maps, toHost, r.error);
    s.Entry(fd, "");
    close(fd);
    if (r.error.err != 0 && r.error.hasPath) r.error.path = root + (r.error.path.empty() ? "" : "/" + r.error.path);
  });
}

}  // namespace

IdShift ArgIdShift(const Napi::CallbackInfo& info, size_t i, const char* name) {
  IdShift s;
  Napi::Value v = info[i];
  if (v.IsUndefined() || v.IsNull()) return s;
  if (!v.IsObject()) throw Napi::TypeError::New(info.Env(), std::string("The \"") + name + "\" argument must be { uidMap, gidMap } or null");
  Napi::Object o = v.As<Napi::Object>();
  s.uids = ArgRanges(info.Env(), o.Get("uidMap"), std::string(name) + ".uidMap");
  s.gids = ArgRanges(info.Env(), o.Get("gidMap"), std::string(name) + ".gidMap");
  return s;
}

std::string IdMapText(const std::vector<IdRange>& ranges) {
  std::string out;
  for (const IdRange& r : ranges) out += std::to_string(r.container) + " " + std::to_string(r.host) + " " + std::to_string(r.size) + "\n";
  return out;
}

void InitUserns(Napi::Env env, Napi::Object exports) {
  exports.Set("makeUserNamespaceSync", Napi::Function::New(env, MakeUserNamespaceSync, "makeUserNamespaceSync"));
  exports.Set("idmappedMount", Napi::Function::New(env, IdmappedMount, "idmappedMount"));
  exports.Set("shiftOwnership", Napi::Function::New(env, ShiftOwnership, "shiftOwnership"));
}

}  // namespace cairn
