#pragma once
// FP32 training (or fine-tuning) of an ONNX graph on the LibTorch executor: weights trainable,
// BatchNorm in training mode (running statistics updated), the configured segmentation loss
// (fit/seg_loss.h) on the dataset's augmented train split. The loop is compress's
// (train/training_loop.h): evaluation every eval_iter on the val split
// keeping the best model, a checkpoint at every evaluation and every checkpoint_every
// iterations, and a resume that continues bit-exactly.
//
// Data-parallel (setup.group): as compress's QAT (compress/qat_trainer.h): every rank trains on
// its shard of each global batch of batch_size * world_size images, gradients are averaged,
// BatchNorm running statistics averaged after every step, each rank's loss weighted by its share
// of the counted pixels; rank 0 evaluates, keeps the best model and writes checkpoints. OHEM
// selects its pixels per process (as PaddleSeg per card), so with OHEM N processes do not train
// exactly like one.
#include <cstdint>
#include <functional>
#include <string>

#include "config/fit_config.h"
#include "data/dataset.h"
#include "dist/group.h"
#include "exec/executor.h"
#include "metrics/confusion_matrix.h"
#include "train/training_loop.h"

namespace segslim {

struct FitSetup : TrainingRun {
  LossConfig loss;
  Executor* model = nullptr;  // trained in place
};

// On ranks other than 0 only iterations and the throughput are filled in.
using FitResult = LoopResult;

FitResult train_fp32(const FitSetup& setup);

}  // namespace segslim
