#include "fit/fit.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "config/fit_config.h"
#include "data/dataset_config.h"
#include "fit/fit_trainer.h"
#include "graph/model.h"
#include "metrics/evaluate.h"
#include "metrics/metrics_json.h"
#include "train/checkpoint.h"

namespace segslim {

namespace fs = std::filesystem;

namespace {

// Without a TrainConfig: a gentle fine-tune (PaddleSeg's Momentum 0.9 and weight decay 4e-5,
// a small cosine-decayed rate, since training starts from trained weights), evaluated and
// checkpointed once per epoch (set in run_train, which knows the epoch's length).
TrainConfig default_train_config() {
  TrainConfig t;
  t.epochs = 10;
  t.learning_rate.type = "CosineAnnealingDecay";
  t.learning_rate.learning_rate = 0.001;
  t.optimizer.type = "Momentum";
  t.optimizer.momentum = 0.9;
  t.optimizer.weight_decay = 4e-5;
  return t;
}

}  // namespace

FitSummary run_train(const FitRequest& req) {
  dist::Group single_process;
  return run_train(req, single_process);
}

FitSummary run_train(const FitRequest& req, dist::Group& group) {
  const bool root = group.is_root();
  const auto started = std::chrono::steady_clock::now();
  SEGSLIM_CHECK(!req.model_path.empty(), "--model is required: the ONNX model to train");
  SEGSLIM_CHECK(!req.data_path.empty(),
                "--data is required: the dataset YAML (PaddleSeg format, with train_dataset "
                "and val_dataset)");
  const std::string out_dir = req.out_dir.empty() ? std::string("output/train") : req.out_dir;
  const std::string model_out = (fs::path(out_dir) / "model.onnx").string();
  const std::string report_path = (fs::path(out_dir) / "train_report.json").string();
  const std::string checkpoint_dir = (fs::path(out_dir) / "checkpoint").string();
  SEGSLIM_CHECK(fs::weakly_canonical(model_out) != fs::weakly_canonical(req.model_path),
                "the output ", model_out, " would overwrite the input model: choose another --out");

  // Everything a user can get wrong is checked before any work starts.
  const FitConfig cfg = req.config_path.empty() ? FitConfig{} : load_fit_config(req.config_path);
  const onnx::ModelProto input = load_model(req.model_path);
  SEGSLIM_CHECK(real_inputs(input.graph()).size() == 1, req.model_path,
                ": train needs a model with one image input");
  const DataConfig data = load_data_config(req.data_path);
  SEGSLIM_CHECK(data.train && data.val, req.data_path,
                ": train needs both train_dataset and val_dataset");
  const SegDataset train(*data.train), val(*data.val);

  FitSetup setup;
  setup.train = cfg.train.value_or(default_train_config());
  setup.loss = cfg.loss;
  setup.seed = cfg.seed;
  setup.train_data = &train;
  setup.val_data = &val;
  setup.batch_size = setup.train.batch_size.value_or(data.batch_size.value_or(4));
  if (!cfg.train) {
    const int64_t per_epoch = static_cast<int64_t>(train.size()) /
                              std::max<int64_t>(1, int64_t{setup.batch_size} * group.world_size());
    setup.train.eval_iter = setup.train.checkpoint_every = std::max<int64_t>(1, per_epoch);
  }
  setup.eval_batch_size = cfg.eval_batch_size.value_or(data.batch_size.value_or(1));
  setup.checkpoint_dir = checkpoint_dir;
  setup.resume = req.resume;
  if (!setup.loss.weight.empty())
    SEGSLIM_CHECK(static_cast<int64_t>(setup.loss.weight.size()) == data.train->num_classes,
                  req.config_path, ": the loss weight list has ", setup.loss.weight.size(),
                  " values, the dataset has ", data.train->num_classes, " classes");

  const at::Device device = at::kCPU;
  Executor model(input, ExecutorOptions{device, at::kFloat, req.model_path});
  EvalOptions eo;
  eo.batch_size = setup.eval_batch_size;
  eo.num_workers = setup.train.num_workers;

  // The input model's metrics (kept in checkpoints, so a resumed run does not redo them).
  nlohmann::json extra = nlohmann::json::object();
  if (req.resume && root)
    if (auto ckpt = load_checkpoint(checkpoint_dir); ckpt && !ckpt->extra_json.empty())
      extra = nlohmann::json::parse(ckpt->extra_json);
  FitSummary summary;
  if (extra.contains("before")) {
    summary.before = metrics_from_json(extra["before"]);
  } else if (root) {
    std::fprintf(stderr, "evaluating the input model\n");
    summary.before = evaluate(model, val, eo).metrics;
    extra["before"] = to_json(summary.before);
  }
  // The others wait for rank 0's evaluation, however long it takes.
  if (group.world_size() > 1) group.barrier();
  setup.extra_json = extra.dump();
  setup.model = &model;
  setup.group = &group;
  setup.on_best = [&](const onnx::ModelProto& m, const SegMetrics&, int64_t) {
    save_model(m, model_out);
    std::fprintf(stderr, "wrote %s\n", model_out.c_str());
  };
  const FitResult r = train_fp32(setup);
  summary.iterations = r.iterations;
  if (!root) return summary;  // rank 0 evaluates and writes; the others wait in Group::finish
  SEGSLIM_CHECK(fs::exists(model_out), "training ended without an evaluated model in ", out_dir);

  // The written file itself, reloaded from disk, is what gets reported.
  Executor trained(load_model(model_out), ExecutorOptions{device, at::kFloat, model_out});
  std::fprintf(stderr, "evaluating the trained model %s\n", model_out.c_str());
  summary.after = evaluate(trained, val, eo).metrics;
  summary.model_path = model_out;
  summary.report_path = report_path;
  summary.iterations = r.iterations;
  summary.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  const TrainConfig& tc = setup.train;
  nlohmann::json report = {
      {"model", req.model_path},
      {"data", req.data_path},
      {"config", req.config_path},
      {"config_text",
       req.config_path.empty() ? std::string() : read_file(req.config_path, "training config")},
      {"output_model", model_out},
      {"class_names", data.val->class_names},
      {"loss",
       {{"type", setup.loss.type},
        {"thresh", setup.loss.thresh},
        {"min_kept", setup.loss.min_kept},
        {"weight", setup.loss.weight},
        {"coef", setup.loss.coef}}},
      {"optimizer", tc.optimizer.type},
      {"learning_rate", tc.learning_rate.learning_rate},
      {"lr_schedule", tc.learning_rate.type},
      {"seed", setup.seed},
      {"before", to_json(summary.before)},
      {"after", to_json(summary.after)},
      {"train", loop_report(r, setup, group.world_size())},
      {"threads", req.threads},
      {"processes", group.world_size()},
      {"wall_seconds_this_run", summary.wall_seconds}};
  write_file_atomic(report_path, report.dump(2) + "\n");
  return summary;
}

}  // namespace segslim
