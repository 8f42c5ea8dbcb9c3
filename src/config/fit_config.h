#pragma once
// The `segslim train --config` YAML. Every section is optional (no file at all = defaults):
//
//   Global:      {seed: 42}
//   TrainConfig: {...}            the compression config's TrainConfig, same keys and checks
//   Eval:        {batch_size: N}  evaluation batch (default: the dataset's batch_size, else 1)
//   Loss:                         segslim's form
//     type: CrossEntropyLoss      | OhemCrossEntropyLoss
//     thresh: 0.7                 OHEM: probability of the true class below which a pixel is hard
//     min_kept: 10000             OHEM: pixels kept at least (PaddleSeg's rule, fit/seg_loss.h)
//     weight: [w_0, ..., w_C-1]   per-class weights (optional; one per dataset class)
//     coef: 1.0                   the loss is multiplied by it
//   loss:                         PaddleSeg's form (instead of Loss), one loss only:
//     types: [{type: OhemCrossEntropyLoss, thresh: 0.7, min_kept: 10000, weight: [...]}]
//     coef: [1]
//
// Unknown keys are errors naming the key path and the valid keys; a bad loss type names the
// key and the valid types. Plain structs: no yaml-cpp in this header.
#include <optional>
#include <string>
#include <vector>

#include "config/compress_config.h"

namespace segslim {

struct LossConfig {
  std::string type = "CrossEntropyLoss";  // | OhemCrossEntropyLoss
  double thresh = 0.7;
  int64_t min_kept = 10000;
  std::vector<double> weight;  // empty: every class weighs 1
  double coef = 1.0;
};

struct FitConfig {
  std::string path;  // the YAML file ("" = defaults)
  int seed = 42;
  std::optional<TrainConfig> train;
  LossConfig loss;
  std::optional<int> eval_batch_size;
};

// The valid Loss.type values.
const std::vector<std::string>& loss_type_names();

FitConfig load_fit_config(const std::string& path);
// `origin` names the text in messages.
FitConfig parse_fit_config(const std::string& yaml, const std::string& origin);

}  // namespace segslim
