#pragma once
// `segslim train`: FP32 training or fine-tuning of an ONNX model from its current weights on a
// PaddleSeg dataset (fit/fit_trainer.h). Writes OUT/model.onnx (the best model by val mIoU, via
// a temporary name; never the input file), OUT/train_report.json (config, metrics before and
// after with per-class IoU, iterations, time, images/s) and OUT/checkpoint/.
#include <string>

#include "dist/group.h"
#include "metrics/confusion_matrix.h"

namespace segslim {

struct FitRequest {
  std::string model_path;
  std::string data_path;
  std::string config_path;  // "" = defaults (default_fit_train_config)
  std::string out_dir = "output/train";
  bool resume = false;
  int threads = 1;
};

struct FitSummary {
  std::string model_path, report_path;
  SegMetrics before, after;
  int64_t iterations = 0;
  double wall_seconds = 0;
};

// In this process alone.
FitSummary run_train(const FitRequest& request);

// As one rank of a data-parallel job (dist/run.h): TrainConfig.batch_size images per process;
// rank 0 evaluates, writes the model, checkpoints and the report, the others train with it. On
// ranks other than 0 only `iterations` is filled in.
FitSummary run_train(const FitRequest& request, dist::Group& group);

}  // namespace segslim
