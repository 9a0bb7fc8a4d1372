// The layer applier's rules (see applier.h).
#include "applier.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>

#include "nofollow.h"

namespace cairn {

namespace {

constexpr size_t kPathMax = 4096;  // with its NUL
constexpr size_t kNameMax = 255;

bool Later(const timespec& a, const timespec& b) {
  return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec > b.tv_nsec);
}

}  // namespace

Applier::Applier(const std::string& root, Whiteouts mode, bool noDevices, bool ownership, uid_t euid, gid_t egid, mode_t umask, bool legacy)
    : dirs_(root, current_name_), reader_(*this), mode_(mode), no_devices_(noDevices), ownership_(ownership), legacy_(legacy),
      euid_(euid), egid_(egid), umask_(umask) {}

void Applier::Release() {
  if (file_fd_ >= 0) close(file_fd_);
  file_fd_ = -1;
  dirs_.Release();
}

void Applier::Finish() {
  // An untapped read stops at the end-of-archive marker, where the rest of the stream is
  // not needed; a tapped one has read (and hashed) it all, so its end is checked.
  if (decoder_ && (record_ || !reader_.finished())) decoder_->End();
  reader_.Finish();
  FinishDirectories();
}

// safe-path.ts splitEntryPath, into one string: `rel` gets the components joined by
// '/' ("" for the root) and `baseAt` where the last one starts.
void Applier::NormalizePath(const std::string& name, std::string* rel, size_t* baseAt) {
  rel->clear();
  *baseAt = 0;
  if (name.find('\0') != std::string::npos) Unsafe(name, "the name contains a NUL byte");
  if (!name.empty() && name[0] == '/') Unsafe(name, "absolute paths are not allowed in a layer");
  if (name.size() >= kPathMax) InvalidName(name, "is longer than PATH_MAX (4096 bytes with its NUL)");
  size_t start = 0;
  while (start <= name.size()) {
    size_t slash = name.find('/', start);
    size_t end = slash == std::string::npos ? name.size() : slash;
    size_t n = end - start;
    if (!(n == 0 || (n == 1 && name[start] == '.'))) {
      if (n == 2 && name[start] == '.' && name[start + 1] == '.') Unsafe(name, "'..' components are not allowed");
      if (n > kNameMax) InvalidName(name, "has a component longer than NAME_MAX (255 bytes)");
      if (!rel->empty()) rel->push_back('/');
      *baseAt = rel->size();
      rel->append(name, start, n);
    }
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
}


void Applier::Abort() {
  if (file_fd_ < 0) return;
  close(file_fd_);
  file_fd_ = -1;
  int pfd = dirs_.DirOrNeg(file_parent_);
  if (pfd >= 0) unlinkat(pfd, file_base_.c_str(), 0);
}

uint8_t* Applier::ReadBuffer() {
  if (!read_buf_) read_buf_.reset(new uint8_t[kRead]);
  return read_buf_.get();
}

void Applier::ReadFrom(int fd) {
  ReadRange(fd, 0, std::numeric_limits<int64_t>::max());  // to EOF
}

void Applier::ReadRange(int fd, int64_t offset, int64_t length) {
  uint8_t* buf = ReadBuffer();
  int64_t done = 0;
  while (done < length) {
    size_t want = static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(kRead), length - done));
    ssize_t n = pread(fd, buf, want, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      Failure f;
      f.sys.Set(errno, "read");
      f.subject = current_name_;
      throw f;
    }
    if (n == 0) return;
    done += n;
    Write(buf, static_cast<size_t>(n));
    if (!record_ && reader_.finished()) return;  // untapped: nothing reads past the end marker
  }
}

bool Applier::Tap(int64_t maxLogical, std::string what, bool portableHash, bool gzipRecords) {
  record_ = std::make_unique<SplitRecord>(maxLogical, std::move(what));
  hash_ = std::make_unique<Sha256>(portableHash);
  if (gzipRecords) {
    gzip_ = std::make_unique<RecordGzip>();
    if (!gzip_->ok()) gzip_.reset();
  }
  return gzip_ != nullptr;
}

void Applier::TappedWrite(const uint8_t* data, size_t len) {
  hash_->Update(data, len);
  tapped_bytes_ += static_cast<int64_t>(len);
  record_->InputBegin(data, len);
  if (!reader_.finished()) reader_.Write(data, len);
  record_->InputEnd();
  // Compressed in pieces that stay in cache between the recorder and zlib.
  if (gzip_ && record_->pending() >= 256 * 1024) FlushRecord();
}

void Applier::FlushRecord() {
  if (!gzip_ || !record_) return;
  record_->TakeWith([&](const char* p, size_t n) {
    gzip_->Write(reinterpret_cast<const uint8_t*>(p), n);
    return 0;
  });
}

// Removes a directory tree below dirfd without following any symlink in it.
void Applier::RemoveTree(int dirfd, const std::string& name, const std::string& rel) {
  int fd = openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return;
    if (errno == ENOTDIR || errno == ELOOP) {
      if (unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) dirs_.SysFail(errno, "unlink", rel);
      return;
    }
    dirs_.SysFail(errno, "open", rel);
  }
  DIR* d = fdopendir(fd);
  if (!d) {
    int err = errno;
    close(fd);
    dirs_.SysFail(err, "opendir", rel);
  }
  std::vector<std::pair<std::string, bool>> children;
  while (dirent* de = readdir(d)) {
    if (std::strcmp(de->d_name, ".") == 0 || std::strcmp(de->d_name, "..") == 0) continue;
    bool isDir = de->d_type == DT_DIR;
    if (de->d_type == DT_UNKNOWN) {
      struct stat st;
      isDir = fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
    }
    children.emplace_back(de->d_name, isDir);
  }
  for (auto& [child, isDir] : children) {
    if (isDir) {
      RemoveTree(fd, child, rel + "/" + child);
    } else if (unlinkat(fd, child.c_str(), 0) != 0 && errno != ENOENT) {
      int err = errno;
      closedir(d);
      dirs_.SysFail(err, "unlink", rel + "/" + child);
    }
  }
  closedir(d);
  if (unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) dirs_.SysFail(errno, "rmdir", rel);
}

void Applier::Remove(const std::string& parentRel, const std::string& base, const struct stat& st) {
  std::string rel = Beneath::Join(parentRel, base);
  if (S_ISDIR(st.st_mode)) {
    RemoveTree(dirs_.Dir(parentRel), base, rel);
    dirs_.ForgetDirs(rel);
    dirs_.ForgetFds();  // cached fds may name what was just removed
  } else if (unlinkat(dirs_.Dir(parentRel), base.c_str(), 0) != 0 && errno != ENOENT) {
    dirs_.SysFail(errno, "unlink", rel);
  }
}

void Applier::RemoveIfPresent(const std::string& parentRel, const std::string& base) {
  struct stat st;
  if (dirs_.Lstat(parentRel, base, &st)) Remove(parentRel, base, st);
}

template <typename Make>
int Applier::CreateReplacing(const std::string& parentRel, const std::string& base, const char* syscall, Make make) {
  // Made first, looked at only when something is there already (most entries are new).
  int r = make(dirs_.Dir(parentRel));
  if (r < 0 && errno == EEXIST) {
    RemoveIfPresent(parentRel, base);
    r = make(dirs_.Dir(parentRel));
  }
  if (r < 0) dirs_.SysFail(errno, syscall, Beneath::Join(parentRel, base));
  return r;
}

// The xattrs of dirfd/name (the name never followed; "." is the directory itself).
void Applier::SetXattrsAt(const Entry& e, int dirfd, const std::string& name, const std::string& rel) {
  for (const auto& [k, v] : e.xattrs) {
    int err = nofollow::SetXattrAt(dirfd, name, k, v, legacy_);
    if (err != 0) dirs_.SysFail(err, "lsetxattr", rel);
  }
}

// Opens parentfd/base as an O_PATH fd (never following it, never opening a device or a
// fifo) and checks that it is the kind of node the entry made; anything else means
// something else is writing into the layer, and nothing is done to it.
int Applier::OpenMade(int parentfd, const std::string& base, const std::string& rel, mode_t kind, dev_t dev, struct stat* st) {
  int fd = openat(parentfd, base.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) dirs_.SysFail(errno, "open", rel);
  if (fstat(fd, st) != 0) {
    int err = errno;
    close(fd);
    dirs_.SysFail(err, "fstat", rel);
  }
  if ((st->st_mode & S_IFMT) != kind || ((kind == S_IFCHR || kind == S_IFBLK) && st->st_rdev != dev)) {
    close(fd);
    Replaced(rel, *st);
  }
  return fd;
}

// parentfd/base no longer is the node `st` describes.
void Applier::CheckSame(int parentfd, const std::string& base, const std::string& rel, const struct stat& st) {
  struct stat now;
  if (fstatat(parentfd, base.c_str(), &now, AT_SYMLINK_NOFOLLOW) != 0) dirs_.SysFail(errno, "lstat", rel);
  if (now.st_dev != st.st_dev || now.st_ino != st.st_ino) Replaced(rel, now);
}

void Applier::Replaced(const std::string& rel, const struct stat& st) {
  const char* what = S_ISLNK(st.st_mode) ? "a symlink" : S_ISDIR(st.st_mode) ? "a directory" : S_ISREG(st.st_mode) ? "a file"
                     : S_ISCHR(st.st_mode) ? "a character device" : S_ISBLK(st.st_mode) ? "a block device" : "something else";
  Failure f;
  f.code = "ERR_UNSAFE_ARCHIVE";
  f.message = "Archive entry \"" + Printable(current_name_) + "\": \"" + Printable(rel) + "\" was replaced by " + what +
              " while the layer was being applied (something else is writing into the layer directory). Nothing was done "
              "to the replacement; the layer was not applied.";
  f.subject = current_name_;
  throw f;
}

// utimensat on an fd (AT_EMPTY_PATH, Linux >= 5.8); where the kernel refuses that, on
// dirfd/name without following name.
void Applier::TimesAt(int fd, int dirfd, const std::string& name, const timespec ts[2], const std::string& rel) {
  if (utimensat(fd, "", ts, AT_EMPTY_PATH) == 0) return;
  if (errno != EINVAL || utimensat(dirfd, name.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) dirs_.SysFail(errno, "lutimes", rel);
}

void Applier::Times(const Entry& e, timespec out[2]) {
  out[0] = e.hasAtime && Later(e.atime, e.mtime) ? e.atime : e.mtime;
  out[1] = e.mtime;
}

void Applier::OnEntry(Entry e) {
  current_name_ = e.name;
  if (record_) record_->OnEntry(e);  // before anything is written: it may refuse the entry
  if (ownership_ && !owners_.Map(&e.uid, &e.gid)) {
    if (!owners_.Drop(EOVERFLOW, e.name, e.uid, e.gid)) dirs_.SysFail(EOVERFLOW, "chown", e.name);
    e.uid = euid_;  // ignoreChownErrors: the caller's own ids, which every chown below leaves as they are
    e.gid = egid_;
  }
  std::string rel;
  size_t baseAt;
  NormalizePath(e.name, &rel, &baseAt);
  if (rel.empty()) {
    // `./` describes the layer root itself: only its metadata can change.
    if (e.type != '5') Unsafe(e.name, std::string("a ") + TypeName(e.type) + " cannot replace the layer root");
    DirMetadata("", "", e);
    return;
  }
  const std::string base = rel.substr(baseAt);
  const std::string parentRel = baseAt == 0 ? std::string() : rel.substr(0, baseAt - 1);

  if (mode_ != Whiteouts::kAufs && StartsWith(base, ".wh.")) {
    if (base == ".wh..wh..opq") {
      Whiteout(e, parentRel, nullptr);
      return;
    }
    if (StartsWith(base, ".wh..wh.")) return;  // aufs bookkeeping, never applied
    std::string target = base.substr(4);
    if (target.empty() || target == "." || target == "..") {
      Unsafe(e.name, "a whiteout must name an entry of its directory, not \"" + target + "\"");
    }
    Whiteout(e, parentRel, &target);
    return;
  }

  if (!whited_out_.empty() && !dirs_.Known(parentRel)) RecreateWhitedOutParents(parentRel);
  dirs_.WalkDirs(parentRel, true, e.name);
  if (mode_ == Whiteouts::kDelete) unpacked_.insert(rel);

  switch (e.type) {
    case '5': {
      // mkdir gives a new directory its final mode when nothing of it is special, masked by
      // the umask or inherited (setgid parent); else it starts 0700 and is chmodded.
      bool exact = e.mode <= 0777 && (e.mode & umask_) == 0 && !dirs_.Setgid(parentRel);
      mode_t createMode = exact ? static_cast<mode_t>(e.mode) : 0700;
      // Made first, looked at only when something is there already (most entries are new).
      bool made = mkdirat(dirs_.Dir(parentRel), base.c_str(), createMode) == 0;
      if (!made && errno != EEXIST) dirs_.SysFail(errno, "mkdir", rel);
      if (!made) {
        struct stat st;
        bool there = dirs_.Lstat(parentRel, base, &st);
        if (!there || !S_ISDIR(st.st_mode)) {
          if (there) Remove(parentRel, base, st);
          if (mkdirat(dirs_.Dir(parentRel), base.c_str(), createMode) != 0) dirs_.SysFail(errno, "mkdir", rel);
          made = true;
        }
      }
      if (made && whited_out_.count(rel)) MakeOpaque(rel);
      DirMetadata(parentRel, base, e, made && exact);
      return;
    }
    case '0': {
      bool inSetgid = dirs_.Setgid(parentRel);
      int fd = CreateReplacing(parentRel, base, "open", [&](int dirfd) {
        return openat(dirfd, base.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, e.mode & 0777);
      });
      file_fd_ = fd;
      file_parent_ = parentRel;
      file_base_ = base;
      file_in_setgid_ = inSetgid;
      file_ = std::move(e);
      return;
    }
    case '2': {
      if (e.linkname.empty()) InvalidEntry(e.name, "symlink entry \"" + Printable(e.name) + "\" has an empty target; the archive is corrupt");
      if (e.linkname.size() >= kPathMax) InvalidEntry(e.name, "symlink entry \"" + Printable(e.name) + "\" has a target longer than PATH_MAX (4096 bytes); the archive is corrupt");
      CreateReplacing(parentRel, base, "symlink", [&](int dirfd) { return symlinkat(e.linkname.c_str(), dirfd, base.c_str()); });
      if (e.xattrs.empty() && !NeedsChown(e, dirs_.Setgid(parentRel))) {
        // Ours already, as the entry wants it: only its times, by name, never followed.
        timespec ts[2];
        Times(e, ts);
        if (utimensat(dirs_.Dir(parentRel), base.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) dirs_.SysFail(errno, "lutimes", rel);
        return;
      }
      Metadata(parentRel, base, e, S_IFLNK, 0);
      return;
    }
    case '1': {
      std::string target;
      size_t tAt;
      NormalizePath(e.linkname, &target, &tAt);
      if (target.empty()) Unsafe(e.name, "a hardlink to the layer root");
      const std::string tParent = tAt == 0 ? std::string() : target.substr(0, tAt - 1);
      const std::string tBase = target.substr(tAt);
      struct stat st;
      if (!dirs_.WalkDirs(tParent, false, e.name) || !dirs_.Lstat(tParent, tBase, &st)) {
        InvalidEntry(e.name, "hardlink \"" + Printable(e.name) + "\" points to \"" + Printable(e.linkname) + "\", which is not in the layer");
      }
      if (S_ISDIR(st.st_mode)) Unsafe(e.name, "a hardlink to a directory");
      if (target == rel) return;
      RemoveIfPresent(parentRel, base);
      // link(2) never follows a symlink target; the inode's metadata stays the target's.
      int from = dup(dirs_.Dir(tParent));
      if (from < 0) dirs_.SysFail(errno, "dup", tParent);
      int rc = linkat(from, tBase.c_str(), dirs_.Dir(parentRel), base.c_str(), 0);
      int err = errno;
      close(from);
      if (rc != 0) dirs_.SysFail(err, "link", rel);
      return;
    }
    case '3':
    case '4':
    case '6': {
      if (no_devices_ && e.type != '6') Unsafe(e.name, "device nodes are not allowed here (noDevices)");
      RemoveIfPresent(parentRel, base);
      mode_t kind = e.type == '3' ? S_IFCHR : e.type == '4' ? S_IFBLK : S_IFIFO;
      // A fifo's numbers too, as the pure-JS path passes them (glibc refuses numbers that do
      // not fit the syscall's 32 bits with EINVAL, whatever the type).
      dev_t dev = makedev(static_cast<unsigned>(e.devmajor), static_cast<unsigned>(e.devminor));
      // Where the mode cannot be set on an fd afterwards (no fchmodat2), it is made exact now.
      int err = nofollow::HaveChmodFd(legacy_) ? (mknodat(dirs_.Dir(parentRel), base.c_str(), kind | (e.mode & 0777), dev) == 0 ? 0 : errno)
                                                : nofollow::MknodExact(dirs_.Dir(parentRel), base, kind | e.mode, dev);
      if (err == EPERM && e.type != '6') {
        DevicePlaceholder(parentRel, base, e);  // unprivileged (a user namespace): recorded, not made
        return;
      }
      if (err != 0) dirs_.SysFail(err, "mknod", rel);
      Metadata(parentRel, base, e, kind, dev);
      return;
    }
  }
}

const char* Applier::TypeName(char t) {
  switch (t) {
    case '0': return "file";
    case '1': return "hardlink";
    case '2': return "symlink";
    case '3': return "char";
    case '4': return "block";
    case '6': return "fifo";
    default: return "dir";
  }
}

void Applier::OnData(const uint8_t* p, size_t n, int64_t position) {
  if (record_) record_->OnData(p, n, position);
  if (file_fd_ < 0) return;
  size_t off = 0;
  while (off < n) {
    ssize_t w = pwrite(file_fd_, p + off, n - off, position + static_cast<int64_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      dirs_.SysFail(errno, "write", Beneath::Join(file_parent_, file_base_));
    }
    off += static_cast<size_t>(w);
  }
  bytes_ += static_cast<int64_t>(n);
}

void Applier::OnEnd() {
  if (file_fd_ < 0) return;
  const Entry& e = file_;
  std::string rel = Beneath::Join(file_parent_, file_base_);
  int fd = file_fd_;
  if (e.sparse && ftruncate(fd, e.size) != 0) dirs_.SysFail(errno, "ftruncate", rel);
  // A new file is already ours: chown only when the entry says otherwise (or a setgid
  // parent gave it another group); chmod when open's mode fell short (umask,
  // setuid/setgid/sticky) or after a chown, which clears setuid/setgid.
  bool chown = NeedsChown(e, file_in_setgid_);
  bool chmod = chown || e.mode > 0777 || (e.mode & umask_) != 0;
  if (chown && fchown(fd, static_cast<uid_t>(e.uid), static_cast<gid_t>(e.gid)) != 0 && !owners_.Drop(errno, rel, e.uid, e.gid)) dirs_.SysFail(errno, "fchown", rel);
  if (chmod && fchmod(fd, e.mode) != 0) dirs_.SysFail(errno, "fchmod", rel);
  for (const auto& [k, v] : e.xattrs) {
    if (fsetxattr(fd, k.c_str(), v.data(), v.size(), 0) != 0) dirs_.SysFail(errno, "lsetxattr", rel);
  }
  timespec ts[2];
  Times(e, ts);
  if (futimens(fd, ts) != 0) dirs_.SysFail(errno, "futimens", rel);
  file_fd_ = -1;
  if (close(fd) != 0 && errno != EINTR) {
    file_fd_ = -1;
    int err = errno;
    unlinkat(dirs_.Dir(file_parent_), file_base_.c_str(), 0);
    dirs_.SysFail(err, "close", rel);
  }
}

// A directory's owner, mode and xattrs (its times come last, FinishDirectories). It is
// opened as an O_PATH fd with O_DIRECTORY|O_NOFOLLOW, so it is the real directory the
// entry made or verified, and everything acts on that fd.
void Applier::DirMetadata(const std::string& parentRel, const std::string& base, const Entry& e, bool madeExact) {
  std::string rel = Beneath::Join(parentRel, base);
  timespec ts[2];
  Times(e, ts);
  // Made just now with its mode by this process: its owner is ours already, unless the
  // entry names another.
  if (madeExact && e.xattrs.empty() && !NeedsChown(e, false)) {  // made exact: not in a setgid dir
    dirs_.Remember(rel, false);
    dir_times_.push_back({rel, ts[0], ts[1]});
    return;
  }
  int pfd = base.empty() ? -1 : dirs_.Dir(parentRel);
  int dfd = base.empty() ? dirs_.root() : openat(pfd, base.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) dirs_.SysFail(errno, "open", rel);
  Fd owned(base.empty() ? -1 : dfd);
  if (ownership_ && fchownat(dfd, "", static_cast<uid_t>(e.uid), static_cast<gid_t>(e.gid), AT_EMPTY_PATH) != 0 && !owners_.Drop(errno, rel, e.uid, e.gid)) {
    dirs_.SysFail(errno, "lchown", rel);
  }
  // Without fchmodat2, "." of the directory fd: the directory itself, nothing to follow.
  if (nofollow::ChmodFd(dfd, e.mode, legacy_) != 0 && (errno != ENOSYS || fchmodat(dfd, ".", e.mode, 0) != 0)) dirs_.SysFail(errno, "chmod", rel);
  if (!e.xattrs.empty()) {
    // By name from the parent (the mode just set may deny a lookup of "." inside it),
    // then checked to still be this directory.
    struct stat st;
    if (fstat(dfd, &st) != 0) dirs_.SysFail(errno, "fstat", rel);
    SetXattrsAt(e, base.empty() ? dfd : pfd, base.empty() ? "." : base, rel);
    if (!base.empty()) CheckSame(pfd, base, rel, st);
  }
  dirs_.Remember(rel, (e.mode & S_ISGID) != 0);
  dir_times_.push_back({rel, ts[0], ts[1]});
}

// Symlinks, devices and fifos just made by name in their (verified) parent: owner, mode
// (not for symlinks), xattrs and times, on an O_PATH fd of the node checked to be the
// kind made, so a name swapped for a symlink meanwhile is refused, never followed.
void Applier::Metadata(const std::string& parentRel, const std::string& base, const Entry& e, mode_t kind, dev_t dev) {
  std::string rel = Beneath::Join(parentRel, base);
  int pfd = dirs_.Dir(parentRel);
  struct stat st;
  Fd node(OpenMade(pfd, base, rel, kind, dev, &st));
  if (ownership_ && fchownat(node.get(), "", static_cast<uid_t>(e.uid), static_cast<gid_t>(e.gid), AT_EMPTY_PATH) != 0 &&
      !owners_.Drop(errno, rel, e.uid, e.gid)) {
    dirs_.SysFail(errno, "lchown", rel);
  }
  if (kind != S_IFLNK) {
    if (nofollow::ChmodFd(node.get(), e.mode, legacy_) != 0) {
      if (errno != ENOSYS) dirs_.SysFail(errno, "chmod", rel);
      // No fchmodat2: the node was made with its exact mode (MknodExact); a chown since
      // may have cleared setuid/setgid, which only a chmod could put back.
      struct stat now;
      if (fstat(node.get(), &now) != 0) dirs_.SysFail(errno, "fstat", rel);
      if ((now.st_mode & 07777) != e.mode) {
        Failure f;
        f.code = "ERR_NOT_SUPPORTED";
        f.message = "Archive entry \"" + Printable(e.name) + "\" needs mode " + std::to_string(e.mode) +
                    " (decimal) after its owner was set, and this kernel has no fchmodat2 (Linux 6.6) to set it without "
                    "following a symlink. The layer was not applied.";
        f.subject = e.name;
        throw f;
      }
    }
  }
  if (!e.xattrs.empty()) {
    SetXattrsAt(e, pfd, base, rel);
    CheckSame(pfd, base, rel, st);
  }
  timespec ts[2];
  Times(e, ts);
  TimesAt(node.get(), pfd, base, ts, rel);
}

// A device node where mknod is refused (EPERM: no CAP_MKNOD in the init namespace): an
// empty 0000 file whose override_stat xattr (owners.h) says what it stands for, so diff
// and export give the device back; the container sees an empty file. Acted on through
// the fd it was created with.
void Applier::DevicePlaceholder(const std::string& parentRel, const std::string& base, const Entry& e) {
  std::string rel = Beneath::Join(parentRel, base);
  int pfd = dirs_.Dir(parentRel);
  Fd fd(openat(pfd, base.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0));
  if (!fd.ok()) dirs_.SysFail(errno, "open", rel);
  std::string v = OverrideStatValue(e.uid, e.gid, e.mode, e.type == '4', e.devmajor, e.devminor);
  int err = 0;
  const char* sc = "lsetxattr";
  if (fsetxattr(fd.get(), kOverrideStatXattr, v.data(), v.size(), 0) != 0) {
    err = errno;
  } else if (ownership_ && fchown(fd.get(), static_cast<uid_t>(e.uid), static_cast<gid_t>(e.gid)) != 0 && !owners_.Drop(errno, rel, e.uid, e.gid)) {
    err = errno;
    sc = "fchown";
  } else {
    timespec ts[2];
    Times(e, ts);
    if (futimens(fd.get(), ts) != 0) {
      err = errno;
      sc = "futimens";
    }
  }
  if (err != 0) {
    unlinkat(pfd, base.c_str(), 0);
    dirs_.SysFail(err, sc, rel);
  }
  owners_.Recorded(rel);
}

void Applier::Whiteout(const Entry& e, const std::string& parentRel, const std::string* target) {
  if (mode_ == Whiteouts::kOverlay) {
    dirs_.WalkDirs(parentRel, true, e.name);
    if (!target) {
      // "." of the directory's fd: the (verified) directory itself.
      int err = nofollow::SetXattrAt(dirs_.Dir(parentRel), ".", opaque_xattr_.c_str(), "y", legacy_);
      if (err != 0) dirs_.SysFail(err, "lsetxattr", parentRel);
      return;
    }
    std::string rel = Beneath::Join(parentRel, *target);
    whited_out_.insert(rel);
    // What the kernel and moby leave for a deletion: a 0/0 char device, mode 0000 (mknod
    // applies no umask to it).
    CreateReplacing(parentRel, *target, "mknod", [&](int dirfd) { return mknodat(dirfd, target->c_str(), S_IFCHR, 0); });
    if (NeedsChown(e, dirs_.Setgid(parentRel))) {
      int pfd = dirs_.Dir(parentRel);
      struct stat st;
      Fd node(OpenMade(pfd, *target, rel, S_IFCHR, 0, &st));
      if (fchownat(node.get(), "", static_cast<uid_t>(e.uid), static_cast<gid_t>(e.gid), AT_EMPTY_PATH) != 0 && !owners_.Drop(errno, rel, e.uid, e.gid)) {
        dirs_.SysFail(errno, "lchown", rel);
      }
    }
    return;
  }
  if (!dirs_.WalkDirs(parentRel, false, e.name)) return;  // nothing there to delete
  if (!target) {
    RemoveNotUnpacked(parentRel);
    return;
  }
  RemoveIfPresent(parentRel, *target);
}

// Overlay mode: an entry below a path this layer whited out (`.wh.dir`, then `dir/g`
// with no `dir/` entry) finds the whiteout device where its parent should be. Each such
// ancestor becomes a new opaque directory (0755, as implicit parents are), which is what
// delete mode leaves: the lower `dir` gone, this layer's `dir/g` in a fresh one.
void Applier::RecreateWhitedOutParents(const std::string& parentRel) {
  size_t end = 0;
  while (end < parentRel.size()) {
    size_t slash = parentRel.find('/', end);
    end = slash == std::string::npos ? parentRel.size() : slash;
    std::string cur = parentRel.substr(0, end);
    end++;
    if (!whited_out_.count(cur) || dirs_.Known(cur)) continue;
    size_t cut = cur.rfind('/');
    std::string up = cut == std::string::npos ? std::string() : cur.substr(0, cut);
    std::string base = cut == std::string::npos ? cur : cur.substr(cut + 1);
    if (!dirs_.WalkDirs(up, false, current_name_)) return;  // WalkDirs below creates the rest
    struct stat st;
    if (dirs_.Lstat(up, base, &st)) {
      if (S_ISDIR(st.st_mode)) continue;
      if (!S_ISCHR(st.st_mode) || st.st_rdev != 0) continue;  // not our whiteout: WalkDirs reports it
      Remove(up, base, st);
    }
    if (mkdirat(dirs_.Dir(up), base.c_str(), 0755) != 0) dirs_.SysFail(errno, "mkdir", cur);
    MakeOpaque(cur);
  }
}

void Applier::MakeOpaque(const std::string& rel) {
  int err = nofollow::SetXattrAt(dirs_.Dir(rel), ".", opaque_xattr_.c_str(), "y", legacy_);
  if (err != 0) dirs_.SysFail(err, "lsetxattr", rel);
}

// Opaque directory in delete mode: removes what this apply did not write.
void Applier::RemoveNotUnpacked(const std::string& rel) {
  int fd = openat(dirs_.Dir(rel), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) dirs_.SysFail(errno, "open", rel);
  DIR* d = fdopendir(fd);
  if (!d) {
    int err = errno;
    close(fd);
    dirs_.SysFail(err, "opendir", rel);
  }
  std::vector<std::string> names;
  while (dirent* de = readdir(d)) {
    if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0) names.emplace_back(de->d_name);
  }
  closedir(d);
  for (const std::string& name : names) {
    std::string child = Beneath::Join(rel, name);
    if (!unpacked_.count(child)) {
      RemoveIfPresent(rel, name);
    } else {
      struct stat st;
      if (dirs_.Lstat(rel, name, &st) && S_ISDIR(st.st_mode)) {
        dirs_.RememberIfNew(child, (st.st_mode & S_ISGID) != 0);
        RemoveNotUnpacked(child);
      }
    }
  }
}

// Directory times last (writing their children changed them). A directory replaced
// later in the same layer is skipped; its path is resolved beneath the root without
// symlinks, so a later entry cannot point the update outside the layer.
void Applier::FinishDirectories() {
  for (const DirTime& d : dir_times_) {
    timespec ts[2] = {d.atime, d.mtime};
    if (d.rel.empty()) {
      // On the root's O_PATH fd; "." of it where the kernel refuses AT_EMPTY_PATH.
      TimesAt(dirs_.root(), dirs_.root(), ".", ts, d.rel);
      continue;
    }
    if (!dirs_.Known(d.rel)) continue;
    // By name in its parent (a cached fd: directories are mostly finished next to their
    // siblings), never following the name: a directory swapped meanwhile for a symlink
    // or a file gets times of its own, inside the layer.
    size_t slash = d.rel.rfind('/');
    std::string parent = slash == std::string::npos ? std::string() : d.rel.substr(0, slash);
    int pfd = dirs_.DirOrNeg(parent);
    if (pfd < 0) continue;  // no longer a directory reachable without symlinks
    const char* base = d.rel.c_str() + (slash == std::string::npos ? 0 : slash + 1);
    if (utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) != 0 && errno != ENOENT) dirs_.SysFail(errno, "lutimes", d.rel);
  }
  dir_times_.clear();
}

}  // namespace cairn
