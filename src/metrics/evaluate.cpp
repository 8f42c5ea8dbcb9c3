#include "metrics/evaluate.h"

#include <fmt/format.h>

#include "common/error.h"
#include "common/progress.h"
#include "data/loader.h"

namespace segslim {

at::Tensor class_map(const at::Tensor& output, at::IntArrayRef label_hw) {
  SEGSLIM_CHECK(label_hw.size() == 2, "label size must be [H, W]");
  const std::vector<int64_t> hw(label_hw.begin(), label_hw.end());
  if (!at::isFloatingType(output.scalar_type())) {
    at::Tensor ids = output.dim() == 4 ? output.squeeze(1) : output;
    SEGSLIM_CHECK(ids.dim() == 3, "an integer model output must be class ids [N, H, W] or ",
                  "[N, 1, H, W]; got ", output.sizes());
    if (ids.sizes().slice(1) != label_hw)
      ids = at::upsample_nearest2d(ids.unsqueeze(1).to(at::kFloat), hw).squeeze(1);
    return ids.to(at::kLong);
  }
  SEGSLIM_CHECK(output.dim() == 4, "the model output must be class scores [N, C, H, W]; got ",
                output.sizes());
  at::Tensor scores = output;
  if (scores.sizes().slice(2) != label_hw)
    scores = at::upsample_bilinear2d(scores, hw, /*align_corners=*/false);
  return scores.argmax(1);
}

EvalResult evaluate(const ForwardFn& forward, const SegDataset& dataset,
                    const EvalOptions& options) {
  const DatasetSpec& spec = dataset.spec();
  SEGSLIM_CHECK(spec.num_classes > 0, "dataset '", spec.section, "' sets no num_classes");
  LoaderOptions lo;
  lo.batch_size = options.batch_size;
  lo.num_workers = options.num_workers;
  DataLoader loader(dataset, lo);
  ConfusionMatrix cm(spec.num_classes, spec.ignore_index);
  Progress progress("eval", static_cast<int64_t>(dataset.size()));
  EvalResult result;
  at::InferenceMode guard;
  while (auto batch = loader.next()) {
    at::Tensor out = forward(batch->images);
    at::Tensor pred = class_map(out, batch->labels.sizes().slice(1));
    cm.update(pred, batch->labels.to(pred.device()));
    result.num_images += batch->images.size(0);
    if (options.show_progress) progress.advance(batch->images.size(0));
  }
  result.seconds = progress.elapsed_seconds();
  result.images_per_s = result.seconds > 0 ? result.num_images / result.seconds : 0;
  result.metrics = cm.compute();
  if (options.show_progress) progress.finish(fmt::format("mIoU {:.4f}", result.metrics.miou));
  return result;
}

EvalResult evaluate(Executor& model, const SegDataset& dataset, const EvalOptions& options) {
  // Evaluation runs in inference mode; the caller's mode comes back even if a batch throws.
  struct ModeGuard {
    Executor& model;
    bool was_training;
    ~ModeGuard() { model.set_training(was_training); }
  } mode_guard{model, model.training()};
  model.set_training(false);
  return evaluate(
      [&](const at::Tensor& images) { return model.forward(images.to(model.device())); }, dataset,
      options);
}

}  // namespace segslim
