#pragma once
// The training loop shared by `segslim compress` (QAT with distillation) and `segslim train`
// (FP32): data in global batches sharded over the ranks, one optimizer step per batch with
// gradients averaged over the ranks, the LR schedule, evaluation every eval_iter on the val
// split keeping the best model, a checkpoint at every evaluation and every checkpoint_every
// iterations, a resume that continues bit-exactly (with the same or another number of
// processes: the data position is counted in images), progress lines, and rank 0 alone
// evaluating and writing while the others wait. What differs between the two (the loss,
// quantization state) comes in through LoopHooks.
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "config/compress_config.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "dist/group.h"
#include "exec/executor.h"
#include "metrics/confusion_matrix.h"

namespace segslim {

// What every trainer's setup holds (compress's QatSetup, train's FitSetup).
struct TrainingRun {
  TrainConfig train;  // resolved: epochs or train_iter set
  int seed = 42;
  const SegDataset* train_data = nullptr;
  const SegDataset* val_data = nullptr;
  // Data-parallel training (nullptr: this process alone). Every rank trains on its shard of
  // each global batch of batch_size * world_size images; rank 0 evaluates, keeps the best
  // model (on_best) and writes checkpoints while the others wait.
  dist::Group* group = nullptr;
  int batch_size = 4;  // per process
  int eval_batch_size = 4;
  std::string checkpoint_dir;
  bool resume = false;
  std::string extra_json;  // stored in every checkpoint (report pieces)
  // Called with the exportable model whenever validation mIoU improves.
  std::function<void(const onnx::ModelProto& model, const SegMetrics& metrics, int64_t iter)>
      on_best;
};

struct LoopSetup : TrainingRun {
  LoopSetup() = default;
  // The trainer's run, with `group` (the run's own, or the caller's single-process stand-in).
  LoopSetup(const TrainingRun& run, std::string tag, Executor* model, dist::Group* group)
      : TrainingRun(run), tag(std::move(tag)), model(model) {
    this->group = group;
  }
  std::string tag = "train";  // progress and log prefix
  Executor* model = nullptr;  // trained in place; its training mode is the caller's choice
};

// The loss of one batch: `loss` is this rank's term (weighted so that the ranks' averaged
// gradients are the global batch's); `value` is the global batch's loss, the same on every
// rank (NaN on all of them when any rank's loss is not finite).
struct BatchLoss {
  at::Tensor loss;
  double value = 0;
};

struct LoopHooks {
  std::function<BatchLoss(const Batch& batch)> loss;  // required
  std::function<void()> after_step;                   // after the optimizer step
  std::function<void()> before_loop;                  // after resume, before the first step
  std::function<onnx::ModelProto()> export_model;     // what on_best gets
  // Extra state (observers): into / out of checkpoints, and rank 0's to the others.
  std::function<std::map<std::string, std::vector<double>>()> save_state;
  std::function<void(const std::map<std::string, std::vector<double>>&)> load_state;
};

// On ranks other than 0 only iterations and the throughput are filled in.
struct LoopResult {
  int64_t iterations = 0;
  int64_t best_iteration = -1;
  SegMetrics best_metrics;
  SegMetrics last_metrics;
  double train_seconds = 0;  // this run's
  double images_per_s = 0;
  bool resumed = false;
  std::string extra_json;  // from the checkpoint when resumed, else setup.extra_json
};

LoopResult run_training_loop(const LoopSetup& setup, const LoopHooks& hooks);

// The report's "train" section: what the loop did, with the batch it did it with.
nlohmann::json loop_report(const LoopResult& result, const TrainingRun& run, int world_size);

}  // namespace segslim
