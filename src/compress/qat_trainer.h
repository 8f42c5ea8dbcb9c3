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

// TrainingRun's seed is Global.seed.
struct QatSetup : TrainingRun {
  const CompressConfig* config = nullptr;
  Executor* teacher = nullptr;            // FP32, frozen
  Executor* student = nullptr;            // Q/DQ graph, scales initialised (calibration)
  const passes::QdqModel* qdq = nullptr;  // where the Q/DQ pairs are
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
