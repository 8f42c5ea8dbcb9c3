#include "compress/calibration.h"

#include <fmt/format.h>

#include "common/error.h"
#include "common/progress.h"
#include "data/loader.h"

namespace segslim {

ActivationParams calibrate(const onnx::ModelProto& fp32_model,
                           const std::vector<passes::QdqSite>& activations,
                           const BatchSource& next_batch, int64_t num_batches,
                           const CalibrationOptions& options, at::Device device) {
  std::map<std::string, std::unique_ptr<Observer>> observers;
  for (const auto& site : activations)
    observers[site.tensor] = make_observer(options.algo, options.observer);

  Executor exec(fp32_model, ExecutorOptions{device, at::kFloat, "calibration model"});
  // The observed tensors are node inputs: a tensor read by several nodes is observed once per
  // forward, at its first reader.
  std::set<std::string> seen_this_batch;
  exec.set_node_observer(
      [&](const onnx::NodeProto& node, const ops::Tensors& in, const ops::Tensors&) {
        for (int i = 0; i < node.input_size() && i < static_cast<int>(in.size()); ++i) {
          auto it = observers.find(node.input(i));
          if (it == observers.end() || !in[i].defined()) continue;
          if (!seen_this_batch.insert(node.input(i)).second) continue;
          it->second->observe(in[i]);
        }
      });

  Progress progress("calibrate " + options.algo, num_batches, "batch");
  at::InferenceMode guard;
  for (int64_t b = 0; b < num_batches; ++b) {
    std::optional<at::Tensor> batch = next_batch();
    if (!batch) break;
    seen_this_batch.clear();
    exec.forward(batch->to(device));
    progress.advance(1);
  }
  progress.finish();

  ActivationParams params;
  for (const auto& [tensor, observer] : observers) {
    SEGSLIM_CHECK(observer->ready(), "calibration never saw tensor '", tensor,
                  "' (is it computed for this input?)");
    params[tensor] = observer->params();
  }
  return params;
}

ActivationParams calibrate(const onnx::ModelProto& fp32_model,
                           const std::vector<passes::QdqSite>& activations,
                           const SegDataset& dataset, const CalibrationOptions& options,
                           at::Device device) {
  LoaderOptions lo;
  lo.batch_size = options.batch_size;
  lo.num_workers = options.num_workers;
  lo.shuffle = false;
  DataLoader loader(dataset, lo);
  const int64_t batches =
      std::min<int64_t>(options.batch_nums, static_cast<int64_t>(loader.num_batches()));
  SEGSLIM_CHECK(batches > 0, "calibration needs at least one batch (dataset '",
                dataset.spec().section, "' has ", dataset.size(), " images)");
  return calibrate(
      fp32_model, activations,
      [&]() -> std::optional<at::Tensor> {
        auto batch = loader.next();
        if (!batch) return std::nullopt;
        return batch->images;
      },
      batches, options, device);
}

void apply_activation_params(Executor& student, const std::vector<passes::QdqSite>& activations,
                             const ActivationParams& params) {
  at::NoGradGuard no_grad;
  for (const auto& site : activations) {
    auto it = params.find(site.tensor);
    SEGSLIM_CHECK(it != params.end(), "no calibration result for tensor '", site.tensor, "'");
    student.initializers().at(site.scale).fill_(it->second.scale);
    student.initializers().at(site.zero_point).fill_(it->second.zero_point);
  }
}

}  // namespace segslim
