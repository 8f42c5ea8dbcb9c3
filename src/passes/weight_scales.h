#pragma once
// Weight quantization scales: symmetric int8 abs-max, per output channel
// (docs/quantization.md, "Who sets the scales").
#include <ATen/ATen.h>

#include <vector>

#include "exec/executor.h"
#include "passes/insert_qdq.h"

namespace segslim::passes {

// Smallest scale written: an all-zero channel (max|W_c| = 0) would give scale 0 and a
// division by zero in QuantizeLinear; with this floor the channel quantizes to exactly 0.
constexpr double kMinWeightScale = 1e-8;

// max|W_c| / 127 for every slice c along `axis` ([C] result), or over the whole tensor when
// axis is -1 (0-d result); never below kMinWeightScale. No gradient.
at::Tensor abs_max_scale(const at::Tensor& weight, int axis);

// Recomputes every weight site's scale from the executor's current float weight and writes it
// into the scale initializer in place (no grad), so the next forward quantizes the weights
// the optimizer just produced. Throws segslim::Error when a site's tensors are missing.
void refresh_weight_scales(segslim::Executor& exec, const std::vector<QdqSite>& weights);

}  // namespace segslim::passes
