#pragma once
// Batch evaluation of a model on a dataset: forward, class map, confusion matrix.
#include <ATen/ATen.h>

#include <functional>

#include "data/dataset.h"
#include "exec/executor.h"
#include "metrics/confusion_matrix.h"

namespace segslim {

struct EvalOptions {
  int batch_size = 1;
  int num_workers = 2;
  bool show_progress = true;
};

struct EvalResult {
  SegMetrics metrics;
  int64_t num_images = 0;
  double seconds = 0;  // wall time of the whole evaluation (loading included)
  double images_per_s = 0;
};

// The model's first output to a class-id map [N, H, W] at the label's size:
//  - float scores [N, C, h, w] -> argmax over C (all channels: a model may have more channels
//    than the dataset has classes, and such predictions count as misses); when h, w differ
//    from the label, the scores are resized bilinearly first (PaddleSeg's eval does the same);
//  - integer ids [N, h, w] or [N, 1, h, w] (models exported with argmax) are used as they are,
//    resized by nearest neighbour if needed.
at::Tensor class_map(const at::Tensor& output, at::IntArrayRef label_hw);

// Any model: a forward function from a float32 NCHW CPU batch to its first output.
using ForwardFn = std::function<at::Tensor(const at::Tensor& images)>;

EvalResult evaluate(const ForwardFn& forward, const SegDataset& dataset,
                    const EvalOptions& options);

// The LibTorch executor, in inference mode (its train/eval mode is restored afterwards).
EvalResult evaluate(Executor& model, const SegDataset& dataset, const EvalOptions& options);

}  // namespace segslim
