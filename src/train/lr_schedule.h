#pragma once
// Learning rate per iteration, from TrainConfig.learning_rate. Stateless: at(iter) is a pure
// function of the iteration, so a resumed run gets exactly the rates of an uninterrupted one.
#include <cstdint>

#include "config/compress_config.h"

namespace segslim {

class LrSchedule {
 public:
  // total_iters: the run's length in iterations (the default cosine T_max).
  explicit LrSchedule(const LearningRateConfig& config, int64_t total_iters);

  // The rate for 0-based iteration `iter`:
  //   Constant:             base
  //   CosineAnnealingDecay: eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2 with
  //                         t = min(iter, T_max) (held at eta_min after T_max; Paddle's closed
  //                         form would rise again)
  //   PiecewiseDecay:       values[k] where k = number of boundaries <= iter (Paddle's rule:
  //                         iter < boundaries[0] -> values[0], ...)
  // Warm-up (warmup_steps W > 0): for iter < W, a straight line from warmup_start_lr at iter 0
  // to the schedule's value at W, i.e. start + (s(W) - start) * iter / W; from W on s(iter).
  // The schedule itself is not shifted by W, so the rate is continuous at W.
  double at(int64_t iter) const;

 private:
  double scheduled(int64_t iter) const;

  LearningRateConfig config_;
  int64_t t_max_;
};

}  // namespace segslim
