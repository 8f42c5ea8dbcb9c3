#include "dist/health.h"

#include <algorithm>
#include <cstdio>

#include "common/error.h"
#include "common/files.h"
#include "common/progress.h"

namespace segslim::dist {

namespace {

using namespace std::chrono_literals;

std::string key(const char* what, int rank) { return str_cat("segslim/", what, "/", rank); }
const char* kFailureCount = "segslim/failures";

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }
std::string string_of(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

HealthOptions health_options(std::chrono::milliseconds timeout, std::string store_host) {
  HealthOptions o;
  o.timeout = timeout;
  o.interval = std::clamp<std::chrono::milliseconds>(timeout / 20, 100ms, 2000ms);
  o.liveness = std::clamp<std::chrono::milliseconds>(timeout / 2, 5 * o.interval, 30000ms);
  o.store_host = std::move(store_host);
  return o;
}

HealthMonitor::HealthMonitor(c10::intrusive_ptr<c10d::Store> store, int rank, int world_size,
                             HealthOptions options)
    : store_(std::move(store)),
      rank_(rank),
      world_size_(world_size),
      options_(std::move(options)),
      peers_(static_cast<size_t>(world_size)) {
  const auto now = Clock::now();
  for (auto& p : peers_) p.beat_changed = p.ticks_changed = now;
  poll();  // publish a first heartbeat before anyone can miss it
  thread_ = std::thread([this] { loop(); });
}

HealthMonitor::~HealthMonitor() { stop(); }

void HealthMonitor::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void HealthMonitor::finish() {
  stop();
  try {
    store_->add(key("done", rank_), 1);
  } catch (const std::exception&) {
    // The store is gone: the others, if any are left, will see the heartbeat stop instead.
  }
}

void HealthMonitor::enter_sync() {
  sync_points_.fetch_add(1);
  in_sync_ = true;
}

void HealthMonitor::leave_sync() { in_sync_ = false; }

void record_failure(c10d::Store& store, int rank, const std::string& message) {
  // The counter orders the records (and tells pollers that there is something to read).
  const int64_t seq = store.add(kFailureCount, 1);
  store.set(key("failure", rank), bytes_of(str_cat(seq, "\t", message)));
}

bool has_failure_record(c10d::Store& store, int rank) {
  return store.check({key("failure", rank)});
}

namespace {
std::pair<int64_t, std::string> read_record(c10d::Store& store, int rank) {
  const std::string text = string_of(store.get(key("failure", rank)));
  const size_t tab = text.find('\t');
  return {std::stoll(text.substr(0, tab)), text.substr(tab + 1)};
}
}  // namespace

std::optional<std::string> first_failure_record(c10d::Store& store, int world_size) {
  std::optional<std::pair<int64_t, std::string>> first;
  for (int r = 0; r < world_size; ++r) {
    if (!has_failure_record(store, r)) continue;
    auto record = read_record(store, r);
    if (!first || record.first < first->first) first = record;
  }
  if (!first) return std::nullopt;
  return first->second;
}

void HealthMonitor::report_failure(const std::string& message) {
  try {
    record_failure(*store_, rank_, message);
  } catch (const std::exception&) {
    // Unreachable store: the others will see this rank's heartbeat stop.
  }
}

void HealthMonitor::publish(const std::string& k, int64_t value, int64_t& published) {
  // Counters only move through add(), which never blocks on a missing key.
  if (value != published) store_->add(k, value - published);
  published = value;
}

void HealthMonitor::note_failure(const std::string& message) {
  if (failure_) return;
  failure_ = message;
  failure_seen_ = Clock::now();
}

void HealthMonitor::poll() {
  const auto now = Clock::now();
  try {
    // Store I/O happens without the lock: peer_failure() and friends must never wait for it.
    publish(key("beat", rank_), published_beat_ + 1, published_beat_);
    publish(key("sync", rank_), 2 * sync_points_.load() + (in_sync_ ? 1 : 0), published_sync_);
    publish(key("ticks", rank_), static_cast<int64_t>(progress_ticks()), published_ticks_);

    // The counter moves before its record is written: rescan until every record is there.
    int64_t records = store_->add(kFailureCount, 0);
    std::optional<std::pair<int64_t, std::string>> first;
    if (records > failure_records_seen_) {
      records = 0;
      for (int r = 0; r < world_size_; ++r) {
        if (!has_failure_record(*store_, r)) continue;
        ++records;
        if (r == rank_) continue;
        auto record = read_record(*store_, r);
        if (!first || record.first < first->first) first = record;
      }
    }
    std::vector<Peer> seen(peers_.size());
    for (int r = 0; r < world_size_; ++r) {
      if (r == rank_) continue;
      seen[r].beat = store_->add(key("beat", r), 0);
      seen[r].sync = store_->add(key("sync", r), 0);
      seen[r].ticks = store_->add(key("ticks", r), 0);
    }

    std::vector<int> silent;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      store_lost_since_.reset();
      if (first) note_failure(first->second);
      failure_records_seen_ = std::max(failure_records_seen_, records);
      for (int r = 0; r < world_size_; ++r) {
        if (r == rank_) continue;
        Peer& p = peers_[r];
        if (seen[r].beat != p.beat) p.beat = seen[r].beat, p.beat_changed = now;
        if (seen[r].ticks != p.ticks) p.ticks = seen[r].ticks, p.ticks_changed = now;
        p.sync = seen[r].sync;
        if (!p.done && now - p.beat_changed > options_.liveness) silent.push_back(r);
      }
    }
    // A silent rank either finished normally (and said so) or is gone.
    for (int r : silent) {
      const bool done = store_->add(key("done", r), 0) > 0;
      std::lock_guard<std::mutex> lock(mutex_);
      Peer& p = peers_[r];
      if (done) {
        p.done = true;
      } else {
        note_failure(str_cat("rank ", r, " stopped responding: no heartbeat for ",
                             static_cast<int>(seconds(now - p.beat_changed)),
                             " s (its process died or its machine is unreachable)"));
      }
    }
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!store_lost_since_) store_lost_since_ = now;
    const std::string what = e.what();
    store_error_ = what.substr(0, what.find('\n'));
    if (now - *store_lost_since_ > options_.liveness)
      note_failure(str_cat("lost the job's rendezvous store, which ", options_.store_host,
                           " serves: ", options_.store_host, " died or is unreachable (",
                           store_error_, ")"));
  }
}

void HealthMonitor::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, options_.interval, [&] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    poll();
    lock.lock();
    // The main thread acts on a failure at its next synchronisation point; if it does not get
    // there within a few heartbeats (a long evaluation, a collective that waits for a dead
    // peer without noticing), this thread ends the process itself.
    if (options_.end_process_on_failure && failure_ && !stopping_ &&
        Clock::now() - failure_seen_ > 5 * options_.interval) {
      std::fprintf(stderr, "segslim: error: [rank %d] %s; stopping this rank\n", rank_,
                   failure_->c_str());
      std::fflush(stderr);
      exit_between_writes(1);
    }
  }
}

std::optional<std::string> HealthMonitor::peer_failure() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failure_;
}

std::optional<std::string> HealthMonitor::hung_peer() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto now = Clock::now();
  for (int r = 0; r < world_size_; ++r) {
    const Peer& p = peers_[r];
    if (r == rank_ || p.done || p.sync % 2 == 1) continue;
    if (now - p.ticks_changed > options_.timeout)
      return str_cat("rank ", r, " has made no progress for ",
                     static_cast<int>(seconds(now - p.ticks_changed)),
                     " s while the others wait for it (hung? the limit is --dist-timeout ",
                     options_.timeout.count() / 1000.0, " s)");
  }
  return std::nullopt;
}

std::vector<int> HealthMonitor::ranks_behind() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<int> behind;
  const int64_t mine = sync_points_.load();
  for (int r = 0; r < world_size_; ++r)
    if (r != rank_ && !peers_[r].done && peers_[r].sync / 2 < mine) behind.push_back(r);
  return behind;
}

std::string describe_ranks(const std::vector<int>& ranks) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

}  // namespace segslim::dist
