// Error construction and argument validation shared by every binding.
#include "common.h"

// libuv's error-text functions, exported by every Node (stable since libuv 1.22). Declared
// here rather than through <uv.h> because the prebuilt binaries are compiled against the
// Node-API headers alone (scripts/prebuild.sh), which do not include libuv's.
extern "C" {
char* uv_err_name_r(int err, char* buf, size_t buflen);
char* uv_strerror_r(int err, char* buf, size_t buflen);
}

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

namespace cairn {

namespace {

// libuv's names and descriptions are what Node itself prints ("ENOENT: no such file or
// directory"), so errors from this addon read exactly like errors from node:fs.
// The _r variants: uv_err_name leaks a string for errnos libuv does not know.
bool UvKnows(int err, char* buf, size_t size) {
  uv_err_name_r(-err, buf, size);
  return std::strncmp(buf, "Unknown", 7) != 0;
}

std::string ErrCode(int err) {
  char buf[64];
  if (UvKnows(err, buf, sizeof(buf))) return buf;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (const char* gnu = strerrorname_np(err)) return gnu;
#endif
  return "E" + std::to_string(err);  // never a real name, but stable and greppable
}

std::string ErrDescription(int err) {
  char buf[128];
  if (UvKnows(err, buf, sizeof(buf))) {
    uv_strerror_r(-err, buf, sizeof(buf));
    return buf;
  }
  // libuv does not know e.g. ENOTBLK/ESTALE: fall back to libc's text, lower-cased like libuv's.
  std::string s = std::strerror(err);
  if (!s.empty()) s[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[0])));
  return s;
}

}  // namespace

Napi::Error MakeSysError(Napi::Env env, const SysError& e) {
  std::string code = ErrCode(e.err);
  std::string msg = code + ": " + ErrDescription(e.err) + ", " + e.syscall;
  if (e.hasPath) msg += " '" + e.path + "'";
  if (e.hasDest) msg += " -> '" + e.dest + "'";
  if (!e.detail.empty()) msg += " (" + e.detail + ")";
  Napi::Error error = Napi::Error::New(env, msg);
  Napi::Object obj = error.Value();
  obj.Set("errno", Napi::Number::New(env, -e.err));  // negative, as node:fs does
  obj.Set("code", Napi::String::New(env, code));
  obj.Set("syscall", Napi::String::New(env, e.syscall));
  if (e.hasPath) obj.Set("path", Napi::String::New(env, e.path));
  if (e.hasDest) obj.Set("dest", Napi::String::New(env, e.dest));
  if (!e.param.empty()) obj.Set("param", Napi::String::New(env, e.param));
  return error;
}

void ThrowSysError(Napi::Env env, const SysError& e) { throw MakeSysError(env, e); }

namespace {
[[noreturn]] void ThrowType(Napi::Env env, const char* name, const char* want) {
  throw Napi::TypeError::New(env, std::string("The \"") + name + "\" argument must be " + want);
}
}  // namespace

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsString()) ThrowType(info.Env(), name, "a string");
  std::string s = info[i].As<Napi::String>().Utf8Value();
  // A NUL would silently truncate the path the kernel sees.
  if (s.find('\0') != std::string::npos) ThrowType(info.Env(), name, "a string without null bytes");
  return s;
}

bool ArgOptString(const Napi::CallbackInfo& info, size_t i, const char* name, std::string* out) {
  if (info[i].IsUndefined() || info[i].IsNull()) return false;
  if (!info[i].IsString()) ThrowType(info.Env(), name, "a string, null or undefined");
  *out = ArgString(info, i, name);
  return true;
}

int64_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsNumber()) ThrowType(info.Env(), name, "an integer");
  double d = info[i].As<Napi::Number>().DoubleValue();
  // Range check first: casting NaN or ±2^63 and beyond to int64_t is undefined behaviour.
  if (!(d >= -9007199254740991.0 && d <= 9007199254740991.0) || d != std::trunc(d))
    ThrowType(info.Env(), name, "an integer");
  return static_cast<int64_t>(d);
}

int64_t ArgOptInt(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t dflt) {
  if (info[i].IsUndefined()) return dflt;
  return ArgInt(info, i, name);
}

int64_t ArgByteCap(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsNumber()) ThrowType(info.Env(), name, "a non-negative number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  // NaN and negatives refused before the cast (undefined behaviour for NaN and below -2^63).
  if (!(d >= 0)) ThrowType(info.Env(), name, "a non-negative number");
  return d >= 9.2e18 ? INT64_MAX : static_cast<int64_t>(d);
}

uint64_t ArgUint64(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info[i].IsBigInt()) {
    bool lossless = false;
    uint64_t v = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) ThrowType(info.Env(), name, "a non-negative 64-bit integer");
    return v;
  }
  if (info[i].IsNumber()) {
    double d = info[i].As<Napi::Number>().DoubleValue();
    if (!(d >= 0 && d <= 9007199254740991.0) || d != std::trunc(d))
      ThrowType(info.Env(), name, "a non-negative integer");
    return static_cast<uint64_t>(d);
  }
  ThrowType(info.Env(), name, "a number or bigint");
}

std::vector<char> ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* name) {
  // Buffer is a Uint8Array, so this accepts both.
  if (!info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    ThrowType(info.Env(), name, "a Buffer or Uint8Array");
  Napi::Uint8Array a = info[i].As<Napi::Uint8Array>();
  const char* p = reinterpret_cast<const char*>(a.Data());
  return std::vector<char>(p, p + a.ByteLength());
}

int64_t ArgBigInt64(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsBigInt()) throw Napi::TypeError::New(info.Env(), std::string("The \"") + name + "\" argument must be a bigint");
  bool lossless = false;
  int64_t v = info[i].As<Napi::BigInt>().Int64Value(&lossless);
  if (!lossless) throw Napi::TypeError::New(info.Env(), std::string("The \"") + name + "\" argument must fit in 64 bits");
  return v;
}

}  // namespace cairn
