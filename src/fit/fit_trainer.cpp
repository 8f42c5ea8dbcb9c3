#include "fit/fit_trainer.h"

#include <cmath>

#include "fit/seg_loss.h"
#include "train/training_loop.h"

namespace segslim {

FitResult train_fp32(const FitSetup& s) {
  Executor& model = *s.model;
  dist::Group single_process;
  dist::Group& group = s.group ? *s.group : single_process;
  const int world = group.world_size();
  const std::string output_name = model.output_names().at(0);
  const std::string input_name = model.input_names().at(0);
  const int64_t ignore_index = s.train_data->spec().ignore_index;

  const LoopSetup ls(s, "train", &model, &group);

  LoopHooks hooks;
  hooks.before_loop = [&] { model.set_training(true); };
  hooks.loss = [&](const Batch& batch) {
    const at::Tensor x = batch.images.to(model.device());
    const TensorMap out = model.run({{input_name, x}}, {output_name});
    double counted = 0;
    at::Tensor loss = fit_loss(s.loss, out.at(output_name), batch.labels.to(model.device()),
                               ignore_index, &counted);
    double loss_value = loss.item<double>();
    if (world > 1) {
      // The global mean is sum_r n_r loss_r / N over the ranks' counted pixels (N = sum_r n_r);
      // the gradients are averaged over the ranks, so rank r contributes world * n_r / N * loss_r.
      const bool finite = std::isfinite(loss_value);
      const auto sums =
          group.all_reduce_sum({counted, finite ? counted * loss_value : 0.0, finite ? 0.0 : 1.0});
      if (sums[0] > 0) loss = loss * (world * counted / sums[0]);
      // One decision for all ranks: a non-finite loss anywhere stops everyone here.
      loss_value = sums[2] > 0 ? NAN : sums[0] > 0 ? sums[1] / sums[0] : 0.0;
    }
    return BatchLoss{loss, loss_value};
  };
  FitResult result = run_training_loop(ls, hooks);
  model.set_training(false);
  return result;
}

}  // namespace segslim
