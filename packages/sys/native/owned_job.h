// One pool job on a stateful native object (a LayerApplier, a SplitReplay). While it runs
// the object is busy, so its methods refuse a second job, and it is kept alive, as is a
// JS value the job reads from (the caller's buffers). The job runs on a libuv pool thread
// and returns the number its promise resolves to, or nothing for undefined; a Failure it
// throws rejects the promise as the coded error FailureToJs makes of it.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <utility>

#include "untar_errors.h"

namespace cairn {

template <typename Owner>
class OwnedJob : public Napi::AsyncWorker {
 public:
  using Run = std::function<std::optional<double>()>;

  // Queues `run` with `owner` marked busy (Owner::busy_, cleared when it settles).
  static Napi::Promise Queue(Napi::Env env, const char* name, Owner* owner, Napi::Value keep, Run run) {
    auto* job = new OwnedJob(env, name, owner, keep, std::move(run));  // AsyncWorker deletes itself once settled
    owner->busy_ = true;
    Napi::Promise p = job->deferred_.Promise();
    job->Napi::AsyncWorker::Queue();
    return p;
  }

 private:
  OwnedJob(Napi::Env env, const char* name, Owner* owner, Napi::Value keep, Run run)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), owner_(owner), run_(std::move(run)) {
    if (keep.IsObject()) keep_ = Napi::Persistent(keep);
    self_ = Napi::Persistent(owner->Value());
  }

  void Execute() override {
    try {
      result_ = run_();
    } catch (const Failure& f) {
      failure_ = f;
      failed_ = true;
    } catch (const std::exception& e) {
      // Anything else escaping a pool thread would abort the process (an allocation failing:
      // the replay keeps up to 8 MiB of records); it rejects instead, as ValueJob's do.
      SetError(std::string("cairn_sys: ") + e.what());
    }
  }
  void OnOK() override {
    owner_->busy_ = false;
    if (failed_) deferred_.Reject(FailureToJs(Env(), failure_).Value());
    else if (result_) deferred_.Resolve(Napi::Number::New(Env(), *result_));
    else deferred_.Resolve(Env().Undefined());
  }
  void OnError(const Napi::Error& e) override {
    owner_->busy_ = false;
    deferred_.Reject(e.Value());
  }

  Napi::Promise::Deferred deferred_;
  Owner* owner_;
  Run run_;
  Napi::Reference<Napi::Value> keep_;
  Napi::ObjectReference self_;
  std::optional<double> result_;
  Failure failure_;
  bool failed_ = false;
};

}  // namespace cairn
