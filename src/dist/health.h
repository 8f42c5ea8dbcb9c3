#pragma once
// Keeps track of the other ranks of a job through its rendezvous store, so that a rank that
// dies, hangs or fails is named, instead of surfacing as an anonymous socket error or timeout.
//
// A thread per rank, every `interval`, publishes this rank's
//   heartbeat   a counter (it keeps beating while the main thread is busy or stuck),
//   sync        2 * (synchronisation points entered) + (1 while waiting at one),
//   ticks       progress_ticks() (common/progress.h: training steps, evaluated batches, ...),
// reads the others' and remembers when each last changed, and picks up failure records. A rank
//   failed      when a record says so: its own error, or its launcher's report that the process
//               exited or was killed (the earliest record is the cause; later ones are echoes);
//   is gone     when its heartbeat has not moved for `liveness` (its process or machine died);
//   hung        when it is neither at a synchronisation point nor making progress for
//               `timeout` while others wait for it.
// A failure the main thread does not act on within five heartbeats (it may be busy or
// blocked) ends the process from the monitor thread (exit_between_writes: no half-written
// outputs).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <vector>

namespace segslim::dist {

struct HealthOptions {
  std::chrono::milliseconds interval{1000};
  std::chrono::milliseconds liveness{5000};
  std::chrono::milliseconds timeout{300000};
  std::string store_host = "rank 0";   // who serves the store, for messages
  bool end_process_on_failure = true;  // see the header comment; tests with thread ranks: off
};

// interval = timeout / 20 within [100 ms, 2 s]; liveness = timeout / 2 within
// [5 intervals, 30 s]: a dead rank is named within half the job timeout, but never on the
// strength of fewer than five missed heartbeats.
HealthOptions health_options(std::chrono::milliseconds timeout, std::string store_host);

// Counted up by every rank once it has passed the job's last barrier (Group::finish): whoever
// serves the store waits for it to reach the world size before exiting.
inline constexpr const char* kLeftKey = "segslim/left";

// "rank 1" / "ranks 1, 3".
std::string describe_ranks(const std::vector<int>& ranks);

// Failure records in a job's store: `message` says which rank failed and how. The records are
// numbered in the order they are made; the first is the cause, later ones usually its echoes.
void record_failure(c10d::Store& store, int rank, const std::string& message);
bool has_failure_record(c10d::Store& store, int rank);
// The earliest record among ranks [0, world_size), if any.
std::optional<std::string> first_failure_record(c10d::Store& store, int world_size);

class HealthMonitor {
 public:
  // `store` should be a connection of its own: the thread uses it every interval.
  HealthMonitor(c10::intrusive_ptr<c10d::Store> store, int rank, int world_size,
                HealthOptions options);
  ~HealthMonitor();
  HealthMonitor(const HealthMonitor&) = delete;
  HealthMonitor& operator=(const HealthMonitor&) = delete;

  // Main thread, around every collective and barrier.
  void enter_sync();
  void leave_sync();
  int64_t sync_points() const { return sync_points_.load(); }

  // Records this rank's own failure (`message` says what happened) for the others.
  void report_failure(const std::string& message);
  // This rank is done: the others stop expecting its heartbeat. Stops the thread.
  void finish();
  // Stops the thread without publishing anything (error paths).
  void stop();

  // Why the job cannot go on, as far as is known now: the earliest failure record of another
  // rank, a rank whose heartbeat stopped, or the store itself gone.
  std::optional<std::string> peer_failure() const;
  // A rank that has been outside any synchronisation point without progress for `timeout`.
  std::optional<std::string> hung_peer() const;
  // Ranks that have not yet reached the synchronisation point this rank waits at.
  std::vector<int> ranks_behind() const;

  const HealthOptions& options() const { return options_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Peer {
    int64_t beat = 0, sync = 0, ticks = 0;
    Clock::time_point beat_changed, ticks_changed;
    bool done = false;
  };
  void loop();
  void poll();
  void publish(const std::string& key, int64_t value, int64_t& published);
  void note_failure(const std::string& message);

  c10::intrusive_ptr<c10d::Store> store_;
  const int rank_, world_size_;
  const HealthOptions options_;

  std::atomic<int64_t> sync_points_{0};
  std::atomic<bool> in_sync_{false};

  mutable std::mutex mutex_;  // guards everything below
  std::vector<Peer> peers_;
  std::optional<std::string> failure_;
  Clock::time_point failure_seen_;
  std::optional<Clock::time_point> store_lost_since_;
  std::string store_error_;
  int64_t failure_records_seen_ = 0;
  bool stopping_ = false;
  std::condition_variable wake_;

  // Owned by the thread.
  int64_t published_beat_ = 0, published_sync_ = 0, published_ticks_ = 0;
  std::thread thread_;
};

}  // namespace segslim::dist
