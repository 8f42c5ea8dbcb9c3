#pragma once
// Post-training calibration: run the FP32 model (BatchNorm folded, no Q/DQ yet) over a few
// batches, observe every tensor that will be quantized, and turn the observed ranges into
// scales and zero points (PaddleSlim's PTQ: abs_max, avg, hist, KL, mse).
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "exec/executor.h"
#include "passes/insert_qdq.h"
#include "quant/observer.h"

namespace segslim {

struct CalibrationOptions {
  std::string algo = "hist";
  ObserverOptions observer;
  int batch_size = 8;
  int batch_nums = 10;
  int num_workers = 2;
};

// tensor name -> parameters, for every activation site.
using ActivationParams = std::map<std::string, QuantParams>;

// Batches to calibrate on: returns the next input batch, or nothing when done.
using BatchSource = std::function<std::optional<at::Tensor>()>;

ActivationParams calibrate(const onnx::ModelProto& fp32_model,
                           const std::vector<passes::QdqSite>& activations,
                           const BatchSource& next_batch, int64_t num_batches,
                           const CalibrationOptions& options, at::Device device);

// Over the first options.batch_nums batches of `dataset` (options.batch_size images each).
ActivationParams calibrate(const onnx::ModelProto& fp32_model,
                           const std::vector<passes::QdqSite>& activations,
                           const SegDataset& dataset, const CalibrationOptions& options,
                           at::Device device);

// Writes the parameters into the student's scale / zero-point initializers, in place.
void apply_activation_params(Executor& student, const std::vector<passes::QdqSite>& activations,
                             const ActivationParams& params);

}  // namespace segslim
