// Layer apply in the addon, the N-API side: the LayerApplier class JS sees. The work is
// split by job:
//   tar_reader.{h,cc}  the tar parse (archive's tar-parser.ts rules), entries to a sink
//   tar_fields.{h,cc}  header fields and PAX values (archive's tar-fields.ts)
//   beneath.{h,cc}     directory fds resolved beneath the layer root, never via a symlink
//   applier.{h,cc}     what each entry becomes on disk (archive's apply.ts rules)
// One native pass over raw tar bytes, so a 20,000-file layer costs no JS object, string
// or N-API crossing per entry (docs/benchmarks.md measured those at more than half of
// apply's CPU). The same test suites run against this path and the pure-JS one.
//
// Failures are C++ exceptions (Failure) inside and become JS errors here:
// {cairnCode, message, subject} for archive faults, Node-style errno errors (code,
// syscall, path, entry) for the file work.
#include <memory>

#include "applier.h"
#include "common.h"
#include "idmap.h"
#include "owned_job.h"

namespace cairn {

namespace {

struct Chunk {
  const uint8_t* data;
  size_t len;
};

std::vector<Chunk> ReadChunks(const Napi::CallbackInfo& info, size_t at) {
  std::vector<Chunk> chunks;
  auto add = [&](Napi::Value v) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw Napi::TypeError::New(info.Env(), "chunks must be Buffers or Uint8Arrays");
    Napi::Uint8Array a = v.As<Napi::Uint8Array>();
    chunks.push_back({a.Data(), a.ByteLength()});
  };
  if (info[at].IsArray()) {
    Napi::Array list = info[at].As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) add(list.Get(i));
  } else {
    add(info[at]);
  }
  return chunks;
}

class LayerApplier : public Napi::ObjectWrap<LayerApplier> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "LayerApplier", {
      InstanceMethod<&LayerApplier::Write>("write"),
      InstanceMethod<&LayerApplier::WriteAsync>("writeAsync"),
      InstanceMethod<&LayerApplier::WriteFrom>("writeFrom"),
      InstanceMethod<&LayerApplier::WriteFromAsync>("writeFromAsync"),
      InstanceMethod<&LayerApplier::WriteRange>("writeRange"),
      InstanceMethod<&LayerApplier::WriteRangeAsync>("writeRangeAsync"),
      InstanceMethod<&LayerApplier::Tap>("tap"),
      InstanceMethod<&LayerApplier::Decompress>("decompress"),
      InstanceMethod<&LayerApplier::TakeRecord>("takeRecord"),
      InstanceMethod<&LayerApplier::TapEnd>("tapEnd"),
      InstanceMethod<&LayerApplier::Finish>("finish"),
      InstanceMethod<&LayerApplier::FinishAsync>("finishAsync"),
      InstanceMethod<&LayerApplier::Abort>("abort"),
      InstanceMethod<&LayerApplier::Close>("close"),
      InstanceAccessor<&LayerApplier::Finished>("finished"),
      InstanceAccessor<&LayerApplier::Current>("currentName"),
      InstanceAccessor<&LayerApplier::Bytes>("bytes"),
      InstanceAccessor<&LayerApplier::Dropped>("dropped"),
    });
  }

  // new LayerApplier(root, whiteoutMode 0|1|2, noDevices, ownership, euid, egid, umask, legacyKernel?)
  explicit LayerApplier(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LayerApplier>(info) {
    Napi::Env env = info.Env();
    std::string root = ArgString(info, 0, "root");
    auto mode = static_cast<Whiteouts>(ArgInt(info, 1, "whiteouts"));
    bool noDevices = info[2].ToBoolean();
    bool ownership = info[3].ToBoolean();
    auto euid = static_cast<uid_t>(ArgInt(info, 4, "euid"));
    auto egid = static_cast<gid_t>(ArgInt(info, 5, "egid"));
    auto umask = static_cast<mode_t>(ArgInt(info, 6, "umask"));
    bool legacy = info.Length() > 7 && info[7].ToBoolean();
    try {
      applier_ = std::make_unique<Applier>(root, mode, noDevices, ownership, euid, egid, umask, legacy);
    } catch (const Failure& f) {
      throw FailureToJs(env, f);
    }
    // (…, idMappings | null, ignoreChownErrors, opaqueXattr | undefined): user namespaces (owners.h)
    applier_->owners().maps = ArgIdShift(info, 8, "idMappings");
    applier_->owners().ignoreChownErrors = info[9].ToBoolean();
    ArgOptString(info, 10, "opaqueXattr", &applier_->opaque_xattr_);
  }

  Applier* Get(Napi::Env env) {
    if (!applier_) throw Napi::Error::New(env, "LayerApplier is closed");
    if (busy_) throw Napi::Error::New(env, "LayerApplier is busy: await the previous writeAsync first");
    return applier_.get();
  }

  bool busy_ = false;

 private:
  // One pass of the applier on the pool: `chunks` (kept alive through `keep`), or with
  // fd >= 0 the input read from fd (the whole file when length < 0, else `length` bytes
  // from `offset`); then the records made so far are compressed, and with `finish` the
  // apply ends (finish()) and the promise resolves to its byte count.
  Napi::Promise Pass(Napi::Env env, Napi::Value keep, std::vector<Chunk> chunks, int fd = -1, int64_t offset = 0,
                     int64_t length = -1, bool finish = false) {
    Applier* a = applier_.get();
    return OwnedJob<LayerApplier>::Queue(env, "cairn.applyLayer", this, keep, [=, chunks = std::move(chunks)]() -> std::optional<double> {
      if (fd >= 0 && length < 0) a->ReadFrom(fd);
      else if (fd >= 0) a->ReadRange(fd, offset, length);
      for (const Chunk& c : chunks) a->Write(c.data, c.len);
      a->FlushRecord();
      if (!finish) return std::nullopt;
      a->Finish();
      return static_cast<double>(a->bytes());
    });
  }

  // write(chunk | chunk[]): applies synchronously on this thread.
  Napi::Value Write(const Napi::CallbackInfo& info) {
    Applier* a = Get(info.Env());
    std::vector<Chunk> chunks = ReadChunks(info, 0);
    try {
      for (const Chunk& c : chunks) a->Write(c.data, c.len);
    } catch (const Failure& f) {
      throw FailureToJs(info.Env(), f);
    }
    return info.Env().Undefined();
  }

  // writeAsync(chunk | chunk[]) → Promise: the same on a libuv pool thread; the chunks
  // must not change until it settles.
  Napi::Value WriteAsync(const Napi::CallbackInfo& info) {
    Get(info.Env());
    std::vector<Chunk> chunks = ReadChunks(info, 0);
    return Pass(info.Env(), info[0], std::move(chunks));
  }

  // writeFrom(fd): the whole input read from fd (pread from offset 0), on this thread.
  Napi::Value WriteFrom(const Napi::CallbackInfo& info) {
    Applier* a = Get(info.Env());
    int fd = static_cast<int>(ArgInt(info, 0, "fd"));
    try {
      a->ReadFrom(fd);
    } catch (const Failure& f) {
      throw FailureToJs(info.Env(), f);
    }
    return info.Env().Undefined();
  }

  // writeFromAsync(fd) → Promise: the same on a libuv pool thread; fd must stay open until it settles.
  Napi::Value WriteFromAsync(const Napi::CallbackInfo& info) {
    Get(info.Env());
    int fd = static_cast<int>(ArgInt(info, 0, "fd"));
    return Pass(info.Env(), info.Env().Undefined(), {}, fd);
  }

  // writeRange(fd, offset, length): `length` bytes of fd from `offset` (pread), on this thread.
  Napi::Value WriteRange(const Napi::CallbackInfo& info) {
    Applier* a = Get(info.Env());
    int fd = static_cast<int>(ArgInt(info, 0, "fd"));
    int64_t offset = ArgInt(info, 1, "offset"), length = ArgInt(info, 2, "length");
    if (offset < 0 || length < 0) throw Napi::RangeError::New(info.Env(), "offset and length must not be negative");
    try {
      a->ReadRange(fd, offset, length);
    } catch (const Failure& f) {
      throw FailureToJs(info.Env(), f);
    }
    return info.Env().Undefined();
  }

  // writeRangeAsync(fd, offset, length) → Promise: the same on a libuv pool thread.
  Napi::Value WriteRangeAsync(const Napi::CallbackInfo& info) {
    Get(info.Env());
    int fd = static_cast<int>(ArgInt(info, 0, "fd"));
    int64_t offset = ArgInt(info, 1, "offset"), length = ArgInt(info, 2, "length");
    if (offset < 0 || length < 0) throw Napi::RangeError::New(info.Env(), "offset and length must not be negative");
    return Pass(info.Env(), info.Env().Undefined(), {}, fd, offset, length);
  }

  // tap(maxLogicalBytes, what, portableHash?, rawRecords?) → whether records come gzipped:
  // hash and record the tar-split from the first write on.
  Napi::Value Tap(const Napi::CallbackInfo& info) {
    Applier* a = Get(info.Env());
    int64_t cap = ArgByteCap(info, 0, "maxLogicalBytes");
    bool gz = a->Tap(cap, ArgString(info, 1, "what"), info.Length() > 2 && info[2].ToBoolean(), !(info.Length() > 3 && info[3].ToBoolean()));
    return Napi::Boolean::New(info.Env(), gz);
  }

  // decompress(kind 1 gzip | 2 zstd, maxOutputBytes, what) → null, or why it cannot (the
  // library is missing): the input (written or read from an fd) is compressed and decoded in the pass.
  Napi::Value Decompress(const Napi::CallbackInfo& info) {
    Applier* a = Get(info.Env());
    int64_t kind = ArgInt(info, 0, "kind");
    if (kind != 1 && kind != 2) throw Napi::RangeError::New(info.Env(), "kind must be 1 (gzip) or 2 (zstd)");
    int64_t cap = ArgByteCap(info, 1, "maxOutputBytes");
    std::string missing;
    auto d = InputDecoder::Make(static_cast<InputCompression>(kind), cap, ArgString(info, 2, "what"), &missing);
    if (!d) return Napi::String::New(info.Env(), missing);
    a->Decompress(std::move(d));
    return info.Env().Null();
  }

  // takeRecord() → Buffer: the tar-split records made since the last call (empty when untapped).
  Napi::Value TakeRecord(const Napi::CallbackInfo& info) {
    Applier* a = Get(info.Env());
    if (!a->record()) return Napi::Buffer<char>::New(info.Env(), 0);
    try {
      return TakeOut(info.Env(), a);
    } catch (const Failure& f) {
      throw FailureToJs(info.Env(), f);
    }
  }

  // The records so far, gzipped or raw, copied out; the native buffer keeps its capacity.
  static Napi::Buffer<char> TakeOut(Napi::Env env, Applier* a) {
    if (a->gzip()) {
      a->FlushRecord();
      std::string& out = a->gzip()->out();
      Napi::Buffer<char> b = Napi::Buffer<char>::Copy(env, out.data(), out.size());
      out.clear();
      return b;
    }
    return a->record()->TakeWith([&](const char* p, size_t n) { return Napi::Buffer<char>::Copy(env, p, n); });
  }

  // tapEnd() → { digest, exact, bytes, record }: after finish(), the input's sha256 (hex),
  // whether its files rebuild it, the bytes read and the last records.
  Napi::Value TapEnd(const Napi::CallbackInfo& info) {
    Applier* a = Get(info.Env());
    if (!a->record()) throw Napi::Error::New(info.Env(), "LayerApplier is not tapped");
    a->record()->Finish();
    Napi::Buffer<char> rest;
    try {
      if (a->gzip()) {
        a->FlushRecord();
        a->gzip()->Finish();
      }
      rest = TakeOut(info.Env(), a);
    } catch (const Failure& f) {
      throw FailureToJs(info.Env(), f);
    }
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("digest", Napi::String::New(info.Env(), a->hash()->HexDigest()));
    o.Set("exact", Napi::Boolean::New(info.Env(), a->record()->exact()));
    o.Set("bytes", Napi::Number::New(info.Env(), static_cast<double>(a->tapped_bytes())));
    o.Set("record", rest);
    return o;
  }

  Napi::Value Finish(const Napi::CallbackInfo& info) {
    Applier* a = Get(info.Env());
    try {
      a->Finish();
    } catch (const Failure& f) {
      throw FailureToJs(info.Env(), f);
    }
    return Napi::Number::New(info.Env(), static_cast<double>(a->bytes()));
  }

  // finishAsync() → Promise<bytes>: finish() on a libuv pool thread (the directory times
  // are a syscall per directory).
  Napi::Value FinishAsync(const Napi::CallbackInfo& info) {
    Get(info.Env());
    return Pass(info.Env(), info.Env().Undefined(), {}, -1, 0, -1, true);
  }

  Napi::Value Abort(const Napi::CallbackInfo& info) {
    if (applier_ && !busy_) applier_->Abort();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (applier_ && !busy_) applier_.reset();
    return info.Env().Undefined();
  }

  Napi::Value Finished(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), applier_ && applier_->finished());
  }

  Napi::Value Current(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), applier_ ? applier_->current() : "");
  }

  Napi::Value Bytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), applier_ ? static_cast<double>(applier_->bytes()) : 0);
  }

  // What the apply left undone because the process could not: { chowns, firstChown, devices, firstDevice }.
  Napi::Value Dropped(const Napi::CallbackInfo& info) {
    Napi::Object o = Napi::Object::New(info.Env());
    const OwnerPolicy* p = applier_ ? &applier_->owners() : nullptr;
    o.Set("chowns", Napi::Number::New(info.Env(), p ? static_cast<double>(p->chownsDropped) : 0));
    o.Set("firstChown", Napi::String::New(info.Env(), p ? p->firstDropped : ""));
    o.Set("devices", Napi::Number::New(info.Env(), p ? static_cast<double>(p->devicesRecorded) : 0));
    o.Set("firstDevice", Napi::String::New(info.Env(), p ? p->firstDevice : ""));
    return o;
  }

  std::unique_ptr<Applier> applier_;
};

// sha256Hex(chunks, portable?) → hex: the applier's SHA-256 on its own, for tests (libcrypto or the portable code).
Napi::Value Sha256Hex(const Napi::CallbackInfo& info) {
  std::vector<Chunk> chunks = ReadChunks(info, 0);
  Sha256 h(info.Length() > 1 && info[1].ToBoolean());
  for (const Chunk& c : chunks) h.Update(c.data, c.len);
  return Napi::String::New(info.Env(), h.HexDigest());
}

}  // namespace

Napi::Error FailureToJs(Napi::Env env, const Failure& f) {
  if (!f.code.empty()) {
    Napi::Error err = Napi::Error::New(env, f.message);
    err.Value().Set("cairnCode", Napi::String::New(env, f.code));
    err.Value().Set("subject", Napi::String::New(env, f.subject));
    return err;
  }
  Napi::Error err = MakeSysError(env, f.sys);
  err.Value().Set("entry", Napi::String::New(env, f.subject));
  return err;
}

void InitUntar(Napi::Env env, Napi::Object exports) {
  exports.Set("LayerApplier", LayerApplier::Define(env));
  exports.Set("sha256Hex", Napi::Function::New(env, Sha256Hex, "sha256Hex"));
  exports.Set("sha256Libcrypto", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    return Napi::Boolean::New(info.Env(), Sha256::LibcryptoAvailable());
  }, "sha256Libcrypto"));
  // decoderMissing(kind 1 gzip | 2 zstd) → null, or why LayerApplier.decompress would refuse that kind.
  exports.Set("decoderMissing", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    std::string missing;
    auto d = InputDecoder::Make(static_cast<InputCompression>(ArgInt(info, 0, "kind") == 2 ? 2 : 1), 0, "", &missing);
    return d ? info.Env().Null() : Napi::String::New(info.Env(), missing);
  }, "decoderMissing"));
  // The reader's caps (tar_reader.h), so archive's tests can hold tar-parser.ts to the same numbers.
  Napi::Object limits = Napi::Object::New(env);
  limits.Set("extendedHeader", Napi::Number::New(env, static_cast<double>(TarLimits::kExtendedHeader)));
  limits.Set("localPax", Napi::Number::New(env, static_cast<double>(TarLimits::kLocalPax)));
  limits.Set("globalPax", Napi::Number::New(env, static_cast<double>(TarLimits::kGlobalPax)));
  limits.Set("sparseSegments", Napi::Number::New(env, static_cast<double>(TarLimits::kSparseSegments)));
  limits.Set("sparseTotal", Napi::Number::New(env, static_cast<double>(TarLimits::kSparseTotal)));
  limits.Freeze();
  exports.Set("tarLimits", limits);
}

}  // namespace cairn
