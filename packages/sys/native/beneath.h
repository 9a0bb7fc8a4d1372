// The layer applier's directory fds: every directory it works in is opened beneath the
// layer root without following a symlink — openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS), or an O_NOFOLLOW walk one component at a time where openat2 is
// missing — and kept as an O_PATH fd in a small cache. Directories verified to be real
// (lstat on the way down) are remembered with their setgid bit, so most entries cost one
// hash lookup. Everything the applier does is relative to these fds, with the final
// component never followed: the tree may change under it and it still cannot be led
// outside the root.
#pragma once

#include <sys/stat.h>

#include <map>
#include <string>
#include <unordered_map>

#include "untar_errors.h"

namespace cairn {

// An O_PATH fd of directory `rel` beneath the directory fd `root`, never through a symlink
// or a magic link, never above `root` (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
// RESOLVE_NO_MAGICLINKS; an O_NOFOLLOW walk one component at a time where openat2 is
// missing); -1 with errno set (ELOOP or EXDEV for a symlink or '..' on the way). The
// caller closes it.
int OpenBeneath(int root, const std::string& rel);

class Beneath {
 public:
  // Opens `root` (O_PATH, not through a symlink). `subject` is the entry being applied,
  // named by every failure; it is read when a failure is thrown.
  Beneath(const std::string& root, const std::string& subject);
  ~Beneath() { Release(); }
  Beneath(const Beneath&) = delete;
  Beneath& operator=(const Beneath&) = delete;

  void Release();
  int root() const { return root_; }
  const std::string& root_path() const { return root_path_; }

  // The cached O_PATH fd of directory `rel` ("" is the root); throws when it cannot be
  // opened beneath the root (a symlink on the way, or not a directory).
  int Dir(const std::string& rel);
  // The same, or -1 with errno set.
  int DirOrNeg(const std::string& rel);
  // A fresh O_PATH fd of directory `rel` resolved beneath the root, not cached (the
  // caller closes it), or -1 with errno set.
  int OpenPath(const std::string& rel) const;
  // Closes the cached fds (after a removal they may name what is gone).
  void ForgetFds();

  // lstat of parent/base; false when nothing is there.
  bool Lstat(const std::string& parentRel, const std::string& base, struct stat* st);

  // Makes sure directory `rel` exists as a real directory (creating missing components,
  // 0755 as moby) or, with create=false, reports whether it does. A symlink on the way is
  // ERR_UNSAFE_ARCHIVE; something else that is not a directory ERR_INVALID_ARCHIVE.
  bool WalkDirs(const std::string& rel, bool create, const std::string& entryName);
  // Whether `rel` is a verified real directory, and whether it is setgid.
  bool Known(const std::string& rel) const { return known_.count(rel) != 0; }
  bool Setgid(const std::string& rel) const {
    auto it = known_.find(rel);
    return it != known_.end() && it->second;
  }
  // Records `rel` as a verified real directory (replacing what was known).
  void Remember(const std::string& rel, bool setgid) { known_[rel] = setgid; }
  // Records it unless it is known already.
  void RememberIfNew(const std::string& rel, bool setgid) { known_.emplace(rel, setgid); }
  // Forgets `rel` and every directory below it (they were removed).
  void ForgetDirs(const std::string& rel);

  // Throws a Failure for a syscall that failed on root/rel.
  [[noreturn]] void SysFail(int err, const char* syscall, const std::string& rel) const;

  static std::string Join(const std::string& parent, const std::string& base) {
    return parent.empty() ? base : parent + "/" + base;
  }

 private:
  std::string root_path_;
  const std::string& subject_;
  int root_ = -1;
  // Verified real directories → setgid. Ordered, so that forgetting a removed directory's
  // subtree is one range erase (a scan of every known directory per removal made an archive
  // replacing n directories cost n^2: 20,000 took 29 s).
  std::map<std::string, bool> known_;
  std::unordered_map<std::string, int> fds_;
};

}  // namespace cairn
