#include "common/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

namespace segslim {

namespace {
std::atomic<uint64_t> g_ticks{0};
}  // namespace

uint64_t progress_ticks() { return g_ticks.load(std::memory_order_relaxed); }

Progress::Progress(std::string label, int64_t total, std::string unit, bool visible)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_),
      tty_(::isatty(STDERR_FILENO) != 0),
      visible_(visible) {}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::advance(int64_t n, const std::string& status) {
  g_ticks.fetch_add(1, std::memory_order_relaxed);
  done_ += n;
  if (!visible_) return;
  const auto now = std::chrono::steady_clock::now();
  const int decile = total_ > 0 ? static_cast<int>(10 * done_ / total_) : 0;
  if (tty_ ? now - last_draw_ > std::chrono::milliseconds(200) : decile != last_decile_) {
    last_draw_ = now;
    last_decile_ = decile;
    draw(false, status);
  }
}

void Progress::finish(const std::string& status) {
  if (visible_) draw(true, status);
}

void Progress::draw(bool final_line, const std::string& status) {
  const double elapsed = elapsed_seconds();
  const double rate = elapsed > 0 ? done_ / elapsed : 0.0;
  const double eta = rate > 0 && total_ > done_ ? (total_ - done_) / rate : 0.0;
  std::string line =
      fmt::format("[{}] {}/{} {} | {:.2f} {}/s | {} {:.0f}s", label_, done_, total_, unit_, rate,
                  unit_, final_line ? "took" : "ETA", final_line ? elapsed : eta);
  if (!status.empty()) line += " | " + status;
  std::fprintf(stderr, tty_ ? "\r%s%s" : "%s%s", line.c_str(),
               tty_ && !final_line ? "\033[K" : "\n");
  if (tty_ && final_line) std::fprintf(stderr, "\033[K");
  std::fflush(stderr);
}

}  // namespace segslim
