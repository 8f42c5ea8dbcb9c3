#pragma once
// Activation range observers (torch.ao's split: an observer collects statistics from the
// tensors flowing through a Q node's input; params() turns them into a scale / zero point that
// the trainer writes into the QDQ initializers). Algorithms and names follow PaddleSlim.
//
// observe() takes each batch's tensor on any device and never records autograd history; the
// state stays on the host (doubles), so observers are cheap to checkpoint and to move.
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "quant/quant_params.h"

namespace segslim {

struct ObserverOptions {
  double moving_rate = 0.9;     // moving_average_abs_max decay, in [0, 1)
  double hist_percent = 0.999;  // hist: fraction of the |x| mass kept inside the threshold
  int bins = 2048;              // hist / KL / mse: histogram bins over [0, max|x|]
  bool symmetric = true;        // false: uint8 asymmetric (min_max only)
  int bits = 8;
};

class Observer {
 public:
  virtual ~Observer() = default;
  // Folds one batch into the statistics. Empty tensors are ignored; non-finite values are an
  // error (they mean training diverged, and would poison every later scale).
  virtual void observe(const at::Tensor& x) = 0;
  // Parameters from everything observed so far (symmetric_params(0) before any data).
  virtual QuantParams params() const = 0;
  // True once at least one non-empty batch has been observed.
  virtual bool ready() const = 0;
  virtual void reset() = 0;
  // Canonical algorithm name (one of observer_algos()).
  virtual std::string name() const = 0;
  // Checkpointing: the whole state as doubles; load_state() checks the layout and throws
  // segslim::Error when the vector was not produced by the same algorithm / bins.
  virtual std::vector<double> state() const = 0;
  virtual void load_state(const std::vector<double>&) = 0;

  // Data-parallel training splits each batch across processes. The observers QAT uses sum a
  // batch up in a few numbers whose element-wise maximum over the parts of a batch is the
  // summary of the whole batch (max |x|; for min_max -min and max), and observe() is exactly
  // observe_summary(batch_summary(x)). So folding the maximum over the ranks' summaries gives
  // every rank the state one process would reach on the whole batch, bit for bit. An empty
  // tensor sums up to -inf (the identity of max), which observe_summary ignores. The histogram
  // observers (hist, KL, mse) cannot be split like this and throw segslim::Error.
  virtual std::vector<double> batch_summary(const at::Tensor& x) const = 0;
  virtual void observe_summary(const std::vector<double>& summary) = 0;
};

// algo, case-insensitive:
//   abs_max                 max |x| over all batches -> symmetric.
//   min_max                 running min and max; symmetric: max(|min|, |max|); otherwise
//                           asymmetric_params(min, max) (uint8).
//   moving_average_abs_max  PaddleSlim's (fake_quantize_moving_average_abs_max):
//                           accum = rate * accum + absmax_batch, state = rate * state + 1,
//                           abs_max = accum / state. Paddle starts accum = state = 1; we start
//                           both at 0, which makes it bias-corrected (the first batch
//                           initialises: accum / state = absmax_1) instead of pulling early
//                           scales towards 1.
//   avg                     mean over batches of the per-batch abs-max. (PaddleSlim PTQ's avg
//                           averages per-sample abs-max within a batch first; per-batch is the
//                           contract here.)
//   hist                    histogram of |x|; the threshold is the centre of the first bin at
//                           which the cumulative mass reaches hist_percent (PaddleSlim's
//                           _get_hist_scaling_factor).
//   KL                      TensorRT entropy calibration over the |x| histogram:
//                           2^(bits-1) levels (128 for int8).
//   mse                     threshold on the histogram's bin edges minimising the expected
//                           squared error of fake quantization: rounding noise s^2/12 for the
//                           mass inside, (x - t)^2 for the clipped mass outside.
// The |x|-based observers (all but min_max) are symmetric by construction; asking them for
// symmetric = false is an error. Unknown names throw segslim::Error listing the valid ones.
std::unique_ptr<Observer> make_observer(const std::string& algo, const ObserverOptions& o = {});

// Canonical names accepted by make_observer.
const std::vector<std::string>& observer_algos();

}  // namespace segslim
