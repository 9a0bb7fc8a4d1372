// SHA-256 of a byte stream on a thread of its own, so that a reader filling a buffer
// (split_replay.cc) does not also spend the hash's CPU time on its own thread: the ranges
// it filled are handed over in order as it goes, and Wait() returns once every range
// handed over is hashed. The caller keeps each range unchanged until then.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "sha256.h"

namespace cairn {

class BackgroundSha256 {
 public:
  BackgroundSha256() : thread_([this] { Run(); }) {}
  ~BackgroundSha256() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    work_.notify_one();
    thread_.join();
  }
  BackgroundSha256(const BackgroundSha256&) = delete;
  BackgroundSha256& operator=(const BackgroundSha256&) = delete;

  // Hands [p, p + n) over; it must stay as it is until Wait() returns.
  void Submit(const uint8_t* p, size_t n) {
    if (n == 0) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back({p, n});
    }
    work_.notify_one();
  }

  // Returns once everything handed over is hashed.
  void Wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    idle_.wait(lock, [this] { return queue_.empty() && !busy_; });
  }

  // The digest of everything handed over (Wait() first); the object is spent afterwards.
  std::string HexDigest() {
    Wait();
    return hash_.HexDigest();
  }

 private:
  struct Range {
    const uint8_t* p;
    size_t n;
  };

  void Run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      work_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      // Stopping: what is still queued is dropped, its bytes never read (their owner may
      // be about to free them; a digest is only ever taken after Wait()).
      if (stop_) return;
      Range r = queue_.front();
      queue_.pop_front();
      busy_ = true;
      lock.unlock();
      hash_.Update(r.p, r.n);
      lock.lock();
      busy_ = false;
      if (queue_.empty()) idle_.notify_all();
    }
  }

  Sha256 hash_;
  std::mutex mutex_;
  std::condition_variable work_, idle_;
  std::deque<Range> queue_;
  bool busy_ = false, stop_ = false;
  std::thread thread_;  // last: started once the members above exist
};

}  // namespace cairn
