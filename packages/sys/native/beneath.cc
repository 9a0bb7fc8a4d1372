// The layer applier's directory fds (see beneath.h).
#include "beneath.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace cairn {

namespace {

constexpr size_t kMaxCachedDirs = 64;

}  // namespace

int OpenBeneath(int root, const std::string& relOrEmpty) {
  const std::string rel = relOrEmpty.empty() ? std::string(".") : relOrEmpty;
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

Beneath::Beneath(const std::string& root, const std::string& subject) : root_path_(root), subject_(subject) {
  root_ = open(root.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (root_ < 0) SysFail(errno, "open", "");
  struct stat st;
  if (fstat(root_, &st) != 0) SysFail(errno, "fstat", "");
  known_.emplace("", (st.st_mode & S_ISGID) != 0);
}

void Beneath::Release() {
  ForgetFds();
  if (root_ >= 0) close(root_);
  root_ = -1;
}

void Beneath::SysFail(int err, const char* syscall, const std::string& rel) const {
  Failure f;
  f.sys.Set(err, syscall);
  f.sys.path = rel.empty() ? root_path_ : root_path_ + "/" + rel;
  f.sys.hasPath = true;
  f.subject = subject_;
  throw f;
}

void Beneath::ForgetFds() {
  for (auto& [rel, fd] : fds_) close(fd);
  fds_.clear();
}

int Beneath::DirOrNeg(const std::string& rel) {
  if (rel.empty()) return root_;
  auto it = fds_.find(rel);
  if (it != fds_.end()) return it->second;
  int fd = OpenPath(rel);
  if (fd < 0) return -1;
  if (fds_.size() >= kMaxCachedDirs) ForgetFds();
  fds_.emplace(rel, fd);
  return fd;
}

int Beneath::Dir(const std::string& rel) {
  int fd = DirOrNeg(rel);
  if (fd < 0) SysFail(errno, "openat2", rel);
  return fd;
}

int Beneath::OpenPath(const std::string& rel) const { return OpenBeneath(root_, rel); }

bool Beneath::Lstat(const std::string& parentRel, const std::string& base, struct stat* st) {
  if (fstatat(Dir(parentRel), base.c_str(), st, AT_SYMLINK_NOFOLLOW) == 0) return true;
  if (errno == ENOENT) return false;
  SysFail(errno, "lstat", Join(parentRel, base));
}

bool Beneath::WalkDirs(const std::string& rel, bool create, const std::string& entryName) {
  if (known_.count(rel)) return true;
  std::string cur;
  size_t start = 0;
  while (start < rel.size()) {
    size_t slash = rel.find('/', start);
    size_t end = slash == std::string::npos ? rel.size() : slash;
    std::string parent = cur;
    std::string part = rel.substr(start, end - start);
    cur = Join(cur, part);
    start = end + 1;
    if (known_.count(cur)) continue;
    bool parentSetgid = known_[parent];
    struct stat st;
    if (!Lstat(parent, part, &st)) {
      if (!create) return false;
      if (mkdirat(Dir(parent), part.c_str(), 0755) != 0) SysFail(errno, "mkdir", cur);
      known_[cur] = parentSetgid;  // Linux: a new directory inherits setgid
      continue;
    }
    if (S_ISLNK(st.st_mode)) Unsafe(entryName, "its path goes through the symlink \"" + cur + "\"");
    if (!S_ISDIR(st.st_mode)) {
      InvalidEntry(entryName, "entry \"" + Printable(entryName) + "\" needs \"" + cur + "\" to be a directory, but it is not");
    }
    known_[cur] = (st.st_mode & S_ISGID) != 0;
  }
  return true;
}

void Beneath::ForgetDirs(const std::string& rel) {
  known_.erase(rel);
  // Everything below rel sorts in [rel + "/", rel + "0"): '0' is the byte after '/'.
  known_.erase(known_.lower_bound(rel + "/"), known_.lower_bound(rel + "0"));
}

}  // namespace cairn
