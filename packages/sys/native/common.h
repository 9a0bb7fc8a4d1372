// Shared helpers for the cairn_sys addon: argument checks that throw TypeError, Node-style
// errno errors, and a promise-returning worker that runs one blocking job on the libuv pool.
#pragma once

#include <napi.h>
#include <unistd.h>

#include <ctime>
#include <functional>
#include <string>
#include <vector>

namespace cairn {

// What a failed syscall leaves behind, so the JS thread can build the Error later
// (a worker thread must not touch napi values).
struct SysError {
  int err = 0;              // errno; 0 means success
  std::string syscall;      // 'mount', 'fsconfig', …
  std::string path;         // empty = not set
  std::string dest;         // empty = not set
  std::string detail;       // appended to the message, e.g. kernel log lines from an fs context
  std::string param;        // fsconfig key that failed (set as err.param)
  bool hasPath = false;
  bool hasDest = false;

  void Set(int e, const char* sc) { err = e; syscall = sc; }
};

// An fd closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  // Hands the fd over: it is no longer closed here.
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

// Records a failed call on `path` in `e`.
inline void PathError(SysError& e, int err, const char* syscall, const std::string& path) {
  e.Set(err, syscall);
  e.path = path;
  e.hasPath = true;
}

// Builds `Error` with code/errno/syscall/path/dest like Node's uvException:
// "EPERM: operation not permitted, mount 'src' -> 'dst'".
Napi::Error MakeSysError(Napi::Env env, const SysError& e);
[[noreturn]] void ThrowSysError(Napi::Env env, const SysError& e);

// Argument readers: throw Napi::TypeError naming the argument when the type is wrong.
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name);
bool ArgOptString(const Napi::CallbackInfo& info, size_t i, const char* name, std::string* out);
int64_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name);
int64_t ArgOptInt(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t dflt);
uint64_t ArgUint64(const Napi::CallbackInfo& info, size_t i, const char* name);
// A byte limit: a non-negative number; Infinity (anything from 9.2e18, near 2^63) is none.
int64_t ArgByteCap(const Napi::CallbackInfo& info, size_t i, const char* name);
std::vector<char> ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* name);
int64_t ArgBigInt64(const Napi::CallbackInfo& info, size_t i, const char* name);

// Nanoseconds since the epoch as a timespec; floor division so times before 1970 keep
// 0 <= tv_nsec < 1e9.
inline timespec NsToTimespec(int64_t ns) {
  int64_t sec = ns / 1000000000;
  int64_t rem = ns % 1000000000;
  if (rem < 0) {
    rem += 1000000000;
    sec -= 1;
  }
  timespec ts;
  ts.tv_sec = static_cast<time_t>(sec);
  ts.tv_nsec = static_cast<long>(rem);
  return ts;
}

// Result carried from the worker thread back to the JS thread.
struct JobResult {
  SysError error;
  bool isNull = false;                 // resolve with null (e.g. xattr ENODATA)
  bool hasBytes = false;               // resolve with a Buffer
  std::vector<char> bytes;
  bool hasList = false;                // resolve with string[]
  std::vector<std::string> list;
  bool hasNumbers = false;             // resolve with number[]
  std::vector<double> numbers;
};

// Runs `job` on the libuv thread pool and settles a Promise with its JobResult
// (undefined unless the job asked for null / bytes / a list).
Napi::Value RunAsync(Napi::Env env, const char* name, std::function<void(JobResult&)> job);

// The JS value a successful JobResult stands for.
Napi::Value ResultValue(Napi::Env env, const JobResult& r);
Napi::Object Constants(Napi::Env env);

void InitMount(Napi::Env env, Napi::Object exports);
void InitFiles(Napi::Env env, Napi::Object exports);
void InitDurable(Napi::Env env, Napi::Object exports);
void InitBtrfs(Napi::Env env, Napi::Object exports);  // btrfs.cc (btrfs driver)
void InitUntar(Napi::Env env, Napi::Object exports);  // untar.cc (layer apply: tar parse and file work)
void InitQuota(Napi::Env env, Napi::Object exports);  // quota.cc (xfs project quotas)
void InitWalk(Napi::Env env, Napi::Object exports);  // walk.cc (bulk lstat/xattr reads for diff and export)
void InitTarPack(Napi::Env env, Napi::Object exports);  // tarpack.cc (layer export: tar written in the addon)
void InitOpenFile(Napi::Env env, Napi::Object exports);  // openfile.cc (open a regular file beneath a root for reading, never through a link)
void InitUserns(Napi::Env env, Napi::Object exports);  // userns.cc (user namespaces from id maps, id-mapped mounts, ownership shift)
void InitRemoveTree(Napi::Env env, Napi::Object exports);  // removetree.cc (a tree deleted through fds, no symlink followed)
void InitZstd(Napi::Env env, Napi::Object exports);  // zstd.cc (zstd blobs decoded through a libzstd found at run time)
void InitSplitReplay(Napi::Env env, Napi::Object exports);  // split_replay.cc (byte-exact layer export from a tar-split record)
void InitAtCalls(Napi::Env env, Napi::Object exports);  // atcalls.cc (the *at calls node:fs lacks, for the pure-JS applier)

}  // namespace cairn
