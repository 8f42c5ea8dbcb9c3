#include <fmt/format.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common/files.h"
#include "data/dataset_config.h"
#include "graph/model.h"
#include "metrics/evaluate.h"
#include "runtime/model_runner.h"
#include "viz/iou_chart.h"

namespace segslim::cli {

namespace {

struct EvalArgs {
  std::string model, data, data_root, list, json, plot;
  EngineArgs engine;
  int batch = 0, threads = 1, workers = 2;
};

void print_report(const EvalResult& r, const DatasetSpec& spec) {
  const SegMetrics& m = r.metrics;
  std::cout << fmt::format("\n{:<16}{:>9}{:>9}{:>9}\n", "class", "IoU", "acc", "dice");
  for (size_t c = 0; c < m.class_iou.size(); ++c) {
    const std::string name =
        c < spec.class_names.size() ? spec.class_names[c] : "class " + std::to_string(c);
    std::cout << fmt::format("{:<16}{:>9.4f}{:>9.4f}{:>9.4f}\n", name, m.class_iou[c],
                             m.class_acc[c], m.class_dice[c]);
  }
  std::cout << fmt::format(
      "\nimages {}  mIoU {:.4f}  acc {:.4f}  mAcc {:.4f}  kappa {:.4f}  dice {:.4f}  "
      "{:.2f} images/s\n",
      r.num_images, m.miou, m.acc, m.macc, m.kappa, m.dice, r.images_per_s);
}

void run_eval(const EvalArgs& args) {
  DataConfig config = load_data_config(args.data);
  DatasetSpec spec = eval_dataset(config);
  override_source(spec, args.data_root, args.list);
  SegDataset dataset(spec);  // reads and checks the list before the model is loaded
  onnx::ModelProto model = load_model(args.model);
  apply_threads(args.threads);
  ModelRunner runner = make_runner(model, runner_options(args.engine, args.model));
  if (!runner.note.empty()) std::cerr << "note: " << runner.note << "\n";

  EvalOptions options;
  options.batch_size = args.batch > 0 ? args.batch : config.batch_size.value_or(1);
  options.num_workers = args.workers;
  EvalResult r = evaluate(runner.forward, dataset, options);
  std::cout << "engine: " << runner.backend << "\n";
  print_report(r, spec);
  if (!args.plot.empty()) {
    std::vector<std::string> names;
    for (size_t c = 0; c < r.metrics.class_iou.size(); ++c)
      names.push_back(c < spec.class_names.size() ? spec.class_names[c] : std::to_string(c));
    const auto colors = spec.palette.empty()
                            ? default_palette(static_cast<int>(names.size()))
                            : std::vector<Rgb>(spec.palette.begin(), spec.palette.end());
    cv::Mat chart = iou_bar_chart(
        names, r.metrics.class_iou, colors,
        fmt::format("per-class IoU, mIoU {:.4f} ({} images)", r.metrics.miou, r.num_images));
    write_png(args.plot, chart);
    std::cout << "wrote " << args.plot << "\n";
  }
  if (!args.json.empty()) {
    nlohmann::json j = {{"model", args.model},
                        {"data", args.data},
                        {"miou", r.metrics.miou},
                        {"acc", r.metrics.acc},
                        {"macc", r.metrics.macc},
                        {"kappa", r.metrics.kappa},
                        {"dice", r.metrics.dice},
                        {"class_iou", r.metrics.class_iou},
                        {"class_acc", r.metrics.class_acc},
                        {"class_dice", r.metrics.class_dice},
                        {"class_names", spec.class_names},
                        {"num_images", r.num_images},
                        {"num_pixels", r.metrics.num_pixels},
                        {"images_per_s", r.images_per_s},
                        {"seconds", r.seconds},
                        {"batch_size", options.batch_size},
                        {"threads", args.threads},
                        {"engine", runner.backend}};
    write_file_atomic(args.json, j.dump(2) + "\n");
    std::cout << "wrote " << args.json << "\n";
  }
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand("eval",
                                 "mIoU, accuracy, kappa, dice and per-class IoU of a "
                                 "model on a dataset's val split");
  cmd->add_option("--model", args->model, "ONNX model (FP32 or QDQ)")->required();
  cmd->add_option("--data", args->data, "PaddleSeg-style dataset YAML")->required();
  cmd->add_option("--data-root", args->data_root, "override the dataset's dataset_root");
  cmd->add_option("--list", args->list, "override the val list file (`image label` lines)");
  cmd->add_option("--batch", args->batch, "batch size (default: the YAML's batch_size, else 1)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--workers", args->workers, "image loading threads")
      ->check(CLI::NonNegativeNumber);
  add_threads_option(*cmd, args->threads);
  add_engine_options(*cmd, args->engine);
  cmd->add_option("--json", args->json, "write the metrics as JSON");
  cmd->add_option("--plot", args->plot, "write the per-class IoU as a bar chart PNG");
  cmd->callback([args] { run_eval(*args); });
}

}  // namespace segslim::cli
