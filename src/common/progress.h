#pragma once
// A one-line progress display for long work: done/total, rate, ETA and a caller-supplied
// status (loss, lr, ...). On a terminal it redraws in place; in a log (CI) it prints a line
// about every 10 % so the log stays readable.
#include <chrono>
#include <cstdint>
#include <string>

namespace segslim {

class Progress {
 public:
  // visible = false: counts (progress_ticks) without drawing (data-parallel ranks other than 0).
  Progress(std::string label, int64_t total, std::string unit = "img", bool visible = true);
  // Advance by `n` units; `status` is appended to the line.
  void advance(int64_t n, const std::string& status = "");
  void finish(const std::string& status = "");
  double elapsed_seconds() const;

 private:
  void draw(bool final_line, const std::string& status);
  std::string label_, unit_;
  int64_t total_, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
  int last_decile_ = -1;
  bool tty_;
  bool visible_;
};

// Progress::advance calls so far in this process, from any Progress: the distributed health
// monitor publishes it as the sign that this process's work is moving (dist/health.h).
uint64_t progress_ticks();

}  // namespace segslim
