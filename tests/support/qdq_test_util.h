#pragma once
// QDQ test models: Q/DQ inserted, activation scales calibrated from one FP32 run.
#include <ATen/ATen.h>

#include "passes/insert_qdq.h"

namespace segslim::testing {

// Sets every activation scale of `q` to max|x| / 127 from one FP32 run of `fp32` on `x` (a
// one-batch abs-max calibration) by rewriting the scale initializers.
void calibrate_abs_max(passes::QdqModel& q, const onnx::ModelProto& fp32, const at::Tensor& x);

}  // namespace segslim::testing
