#pragma once
// `segslim compress`: FP32 ONNX model + dataset -> INT8 QDQ ONNX model that keeps its mIoU.
// Strategy, as in the original: QuantAware (+TrainConfig) -> QAT with distillation, initialised
// by PTQ; HyperParameterOptimization -> PTQ search over calibration settings scored by val
// mIoU; QuantPost -> PTQ; none of them -> auto: PTQ, then QAT when PTQ loses more than
// Auto.ptq_max_drop points.
#include <optional>
#include <string>

#include "dist/group.h"
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

// In this process alone.
CompressSummary run_compress(const CompressRequest& request);

// As one rank of a data-parallel job (dist/run.h). Rank 0 evaluates FP32, calibrates (PTQ),
// decides the strategy, and in the end exports, evaluates and writes the report; the others
// wait for it and train with it (QAT, TrainConfig.batch_size images per process). On ranks
// other than 0 only `strategy` is filled in.
CompressSummary run_compress(const CompressRequest& request, dist::Group& group);

}  // namespace segslim
