// One job on the libuv pool whose result is built on the JS thread: `job` runs on a pool
// thread and fills a State (numbers, structs, a JobResult) or sets the SysError; `build`
// turns the State into the JS value the promise resolves to, or the error rejects it.
// RunAsync (JobResult), the quota calls (a number) and the btrfs calls (objects) use it.
#pragma once

#include <functional>
#include <utility>

#include "common.h"

namespace cairn {

template <typename State>
class ValueJob : public Napi::AsyncWorker {
 public:
  using JobFn = std::function<void(State&, SysError&)>;
  using BuildFn = std::function<Napi::Value(Napi::Env, const State&)>;
  ValueJob(Napi::Env env, const char* name, JobFn job, BuildFn build)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), job_(std::move(job)), build_(std::move(build)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    // An exception escaping a pool thread would abort the process; reject instead.
    try {
      job_(state_, error_);
    } catch (const std::exception& e) {
      SetError(std::string("cairn_sys: ") + e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (error_.err != 0) {
      deferred_.Reject(MakeSysError(env, error_).Value());
    } else {
      deferred_.Resolve(build_(env, state_));
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  JobFn job_;
  BuildFn build_;
  State state_{};
  SysError error_;
};

template <typename State>
Napi::Value RunValue(Napi::Env env, const char* name, typename ValueJob<State>::JobFn job,
                     typename ValueJob<State>::BuildFn build) {
  auto* w = new ValueJob<State>(env, name, std::move(job), std::move(build));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace cairn
