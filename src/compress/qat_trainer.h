#pragma once
// Quantization-aware training with distillation: the FP32 teacher (frozen) and the Q/DQ
// student see the same batch; the loss pulls the student's tensors towards the teacher's at
// the configured node pairs (plus, optionally, label cross-entropy). Weight scales follow the
// weights every step; activation scales follow their observers (or are trained, LSQ).
#include <functional>
#include <string>

#include "config/compress_config.h"
#include "data/dataset.h"
#include "dist/group.h"
#include "exec/executor.h"
#include "metrics/confusion_matrix.h"
#include "passes/insert_qdq.h"
#include "train/training_loop.h"

namespace segslim {

struct QatSetup {
  const CompressConfig* config = nullptr;
  TrainConfig train;                      // the resolved TrainConfig
  Executor* teacher = nullptr;            // FP32, frozen
  Executor* student = nullptr;            // Q/DQ graph, scales initialised (calibration)
  const passes::QdqModel* qdq = nullptr;  // where the Q/DQ pairs are
  const SegDataset* train_data = nullptr;
  const SegDataset* val_data = nullptr;
  // Data-parallel training (nullptr: this process alone). Every rank trains on its shard of
  // each global batch of batch_size * world_size images; rank 0 evaluates, keeps the best
  // model (on_best) and writes checkpoints while the others wait. Checkpoints count iterations
  // and the position in the epoch in images, so a run resumes with any number of processes.
  dist::Group* group = nullptr;
  int batch_size = 4;  // per process
  int eval_batch_size = 4;
  std::string checkpoint_dir;
  bool resume = false;
  std::string extra_json;  // stored in every checkpoint (report pieces)
  // Called with the exportable student model whenever validation mIoU improves.
  std::function<void(const onnx::ModelProto& model, const SegMetrics& metrics, int64_t iter)>
      on_best;
};

// On ranks other than 0 only iterations and the throughput are filled in.
using QatResult = LoopResult;

// Distillation pairs (teacher tensor, student tensor), validated against both graphs.
std::vector<std::pair<std::string, std::string>> distill_pairs(const CompressConfig& config,
                                                               const Executor& teacher,
                                                               const Executor& student);

QatResult train_qat(const QatSetup& setup);

// Loads just the extra_json of the checkpoint in `dir` (resume), if there is one.
std::optional<std::string> checkpoint_extra_json(const std::string& dir);

}  // namespace segslim
