#pragma once
// `segslim compress`: FP32 ONNX model + dataset -> INT8 QDQ ONNX model that keeps its mIoU.
// Strategy, as in the original: QuantAware (+TrainConfig) -> QAT with distillation, initialised
// by PTQ; HyperParameterOptimization -> PTQ search over calibration settings scored by val
// mIoU; QuantPost -> PTQ; none of them -> auto: PTQ, then QAT when PTQ loses more than
// Auto.ptq_max_drop points.
#include <optional>
#include <string>

#include "metrics/confusion_matrix.h"

namespace segslim {

struct CompressRequest {
  std::string config_path;
  std::string model_path;  // overrides Global.model
  std::string data_path;   // overrides Global.data
  std::string out_dir;     // overrides Global.output_dir (default: output/compress)
  bool resume = false;
  int threads = 1;
};

struct CompressSummary {
  std::string strategy;  // qat | ptq | hpo | auto-ptq | auto-qat
  std::string model_path, report_path;
  SegMetrics fp32, int8;
  std::optional<SegMetrics> ptq;
  double wall_seconds = 0;
};

CompressSummary run_compress(const CompressRequest& request);

}  // namespace segslim
