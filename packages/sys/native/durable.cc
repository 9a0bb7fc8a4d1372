// The store's small records written durably, each write one job on the libuv pool: from
// JS, every open, write, fsync and close is a round trip to the pool of its own (~45 µs of
// CPU each here, against ~5 µs for the call itself), and recording one layer took 38.
// These are the store's own files, named by paths the caller made; layer content never
// goes through here.
#include "common.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>

namespace cairn {

namespace {

std::string DirName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool FsyncPath(const std::string& path, bool dir, SysError& e) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | (dir ? O_DIRECTORY : 0));
  if (fd < 0) {
    PathError(e, errno, "open", path);
    return false;
  }
  Fd owned(fd);
  if (fsync(fd) != 0) {
    PathError(e, errno, "fsync", path);
    return false;
  }
  return true;
}

// Writes all of `data` to a new file `path` (never through a symlink); with `excl` it must
// not exist, else it is truncated. fsynced when `durable`.
bool WriteWhole(const std::string& path, const std::string& data, mode_t mode, bool excl, bool durable, SysError& e) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (excl ? O_EXCL : O_TRUNC), mode);
  if (fd < 0) {
    PathError(e, errno, "open", path);
    return false;
  }
  Fd owned(fd);
  for (size_t off = 0; off < data.size();) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      PathError(e, errno, "write", path);
      return false;
    }
    off += static_cast<size_t>(n);
  }
  if (durable && fsync(fd) != 0) {
    PathError(e, errno, "fsync", path);
    return false;
  }
  int fdToClose = owned.release();
  if (close(fdToClose) != 0 && errno != EINTR) {
    PathError(e, errno, "close", path);
    return false;
  }
  return true;
}

std::string ArgBytes(const Napi::Value& v, const char* name) {
  if (v.IsString()) return v.As<Napi::String>().Utf8Value();
  if (!v.IsTypedArray()) throw Napi::TypeError::New(v.Env(), std::string("The \"") + name + "\" argument must be a string or a Uint8Array");
  Napi::TypedArray t = v.As<Napi::TypedArray>();
  const char* p = static_cast<const char*>(t.ArrayBuffer().Data()) + t.ByteOffset();
  return std::string(p, t.ByteLength());
}

uint32_t ArgMode(const Napi::CallbackInfo& info, size_t i) {
  int64_t mode = ArgInt(info, i, "mode");
  if (mode < 0 || mode > 07777) throw Napi::RangeError::New(info.Env(), "mode must be between 0 and 0o7777");
  return static_cast<uint32_t>(mode);
}

// fsyncPath(path, isDirectory) → Promise: open, fsync, close.
Napi::Value FsyncPathAsync(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  bool dir = info.Length() > 1 && info[1].ToBoolean();
  return RunAsync(info.Env(), "cairn.fsyncPath", [path, dir](JobResult& r) { FsyncPath(path, dir, r.error); });
}

// replaceFile(path, data, mode, durable) → Promise: `data` in a hidden sibling
// (`.<name>.tmp`, truncated if a crash left one), renamed over `path`; with `durable`
// the file is fsynced before the rename and its directory after it. A failure removes
// the sibling.
Napi::Value ReplaceFile(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  std::string data = ArgBytes(info[1], "data");
  mode_t mode = ArgMode(info, 2);
  bool durable = info.Length() > 3 && info[3].ToBoolean();
  return RunAsync(info.Env(), "cairn.replaceFile", [path, data = std::move(data), mode, durable](JobResult& r) {
    std::string dir = DirName(path);
    std::string tmp = dir + "/." + BaseName(path) + ".tmp";
    if (!WriteWhole(tmp, data, mode, false, durable, r.error)) {
      unlink(tmp.c_str());
      return;
    }
    if (rename(tmp.c_str(), path.c_str()) != 0) {
      PathError(r.error, errno, "rename", tmp);
      r.error.dest = path;
      r.error.hasDest = true;
      unlink(tmp.c_str());
      return;
    }
    if (durable) FsyncPath(dir, true, r.error);
  });
}

// writeNewFiles(dir, names, datas, mode) → Promise: each file created in `dir` (it must
// not exist), written and fsynced, then `dir` fsynced. On a failure the files made so far
// stay (the caller discards the directory).
Napi::Value WriteNewFiles(const Napi::CallbackInfo& info) {
  std::string dir = ArgString(info, 0, "dir");
  if (info.Length() < 3 || !info[1].IsArray() || !info[2].IsArray()) throw Napi::TypeError::New(info.Env(), "writeNewFiles(dir, names[], datas[], mode)");
  Napi::Array names = info[1].As<Napi::Array>(), datas = info[2].As<Napi::Array>();
  if (names.Length() != datas.Length()) throw Napi::RangeError::New(info.Env(), "names and datas must have the same length");
  std::vector<std::pair<std::string, std::string>> files;
  for (uint32_t i = 0; i < names.Length(); i++) {
    Napi::Value n = names.Get(i);
    if (!n.IsString()) throw Napi::TypeError::New(info.Env(), "every name must be a string");
    std::string name = n.As<Napi::String>().Utf8Value();
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos || name.find('\0') != std::string::npos) {
      throw Napi::RangeError::New(info.Env(), "a name must be one path component: \"" + name + "\"");
    }
    files.emplace_back(std::move(name), ArgBytes(datas.Get(i), "datas[i]"));
  }
  mode_t mode = ArgMode(info, 3);
  return RunAsync(info.Env(), "cairn.writeNewFiles", [dir, files = std::move(files), mode](JobResult& r) {
    for (const auto& [name, data] : files) {
      if (!WriteWhole(dir + "/" + name, data, mode, true, true, r.error)) return;
    }
    FsyncPath(dir, true, r.error);
  });
}

// renameDurable(from, to, syncFrom) → Promise: rename(2), then the directory of `to`
// fsynced; with `syncFrom`, `from` (a directory) is fsynced first, so what was made in
// it is on disk before it appears under its new name.
Napi::Value RenameDurable(const Napi::CallbackInfo& info) {
  std::string from = ArgString(info, 0, "from");
  std::string to = ArgString(info, 1, "to");
  bool syncFrom = info.Length() > 2 && info[2].ToBoolean();
  return RunAsync(info.Env(), "cairn.renameDurable", [from, to, syncFrom](JobResult& r) {
    if (syncFrom && !FsyncPath(from, true, r.error)) return;
    if (rename(from.c_str(), to.c_str()) != 0) {
      PathError(r.error, errno, "rename", from);
      r.error.dest = to;
      r.error.hasDest = true;
      return;
    }
    FsyncPath(DirName(to), true, r.error);
  });
}

}  // namespace

void InitDurable(Napi::Env env, Napi::Object exports) {
  auto fn = [&](const char* name, Napi::Function::Callback cb) { exports.Set(name, Napi::Function::New(env, cb, name)); };
  fn("fsyncPath", FsyncPathAsync);
  fn("replaceFile", ReplaceFile);
  fn("writeNewFiles", WriteNewFiles);
  fn("renameDurable", RenameDurable);
}

}  // namespace cairn
