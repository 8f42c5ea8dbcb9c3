#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace segslim {

LrSchedule::LrSchedule(const LearningRateConfig& config, int64_t total_iters)
    : config_(config), t_max_(config.T_max > 0 ? config.T_max : total_iters) {
  SEGSLIM_CHECK(config_.type == "Constant" || config_.type == "CosineAnnealingDecay" ||
                    config_.type == "PiecewiseDecay",
                "unknown learning rate schedule '", config_.type,
                "'. Valid: Constant, CosineAnnealingDecay, PiecewiseDecay.");
  SEGSLIM_CHECK(
      config_.type != "PiecewiseDecay" || config_.values.size() == config_.boundaries.size() + 1,
      "PiecewiseDecay needs one more value than boundaries, got ", config_.values.size(),
      " values and ", config_.boundaries.size(), " boundaries.");
  SEGSLIM_CHECK(config_.type != "CosineAnnealingDecay" || t_max_ > 0,
                "CosineAnnealingDecay needs T_max > 0 (or a positive number of iterations).");
}

double LrSchedule::scheduled(int64_t iter) const {
  if (config_.type == "CosineAnnealingDecay") {
    const double t = static_cast<double>(std::min(std::max<int64_t>(iter, 0), t_max_));
    const double base = config_.learning_rate, eta = config_.eta_min;
    return eta + (base - eta) * (1 + std::cos(M_PI * t / static_cast<double>(t_max_))) / 2;
  }
  if (config_.type == "PiecewiseDecay") {
    // Index of the first boundary > iter = how many boundaries iter has passed.
    const auto k = std::upper_bound(config_.boundaries.begin(), config_.boundaries.end(), iter) -
                   config_.boundaries.begin();
    return config_.values[static_cast<size_t>(k)];
  }
  return config_.learning_rate;
}

double LrSchedule::at(int64_t iter) const {
  const int64_t w = config_.warmup_steps;
  if (w > 0 && iter < w) {
    const double end = scheduled(w);
    return config_.warmup_start_lr + (end - config_.warmup_start_lr) *
                                         static_cast<double>(std::max<int64_t>(iter, 0)) /
                                         static_cast<double>(w);
  }
  return scheduled(iter);
}

}  // namespace segslim
