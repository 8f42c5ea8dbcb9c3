#include <iostream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "commands.h"
#include "common/error.h"
#include "data/dataset_config.h"
#include "data/inference_image.h"
#include "graph/model.h"
#include "metrics/evaluate.h"
#include "runtime/model_runner.h"
#include "viz/palette.h"

namespace segslim::cli {

namespace {

struct PredictArgs {
  std::string model, data, image, out, raw;
  EngineArgs engine;
  bool overlay = false;
  int threads = 1;
};

void run_predict(const PredictArgs& args) {
  DataConfig config = load_data_config(args.data);
  const DatasetSpec& spec = eval_dataset(config);
  InferenceImage image = load_inference_image(spec, args.image);
  onnx::ModelProto model = load_model(args.model);
  apply_threads(args.threads);
  ModelRunner runner = make_runner(model, runner_options(args.engine, args.model));
  if (!runner.note.empty()) std::cerr << "note: " << runner.note << "\n";
  at::InferenceMode guard;
  at::Tensor out = runner.forward(image.input);
  // class ids at the original image's resolution
  at::Tensor ids =
      class_map(out, {image.original_bgr.rows, image.original_bgr.cols})[0].to(at::kLong);

  const int64_t max_id = ids.max().item<int64_t>();
  // Checked before anything is written: an error leaves no partial result behind.
  SEGSLIM_CHECK(args.raw.empty() || (max_id < 256 && ids.min().item<int64_t>() >= 0),
                "class ids reach ", max_id, ": --raw writes 8-bit maps (ids 0..255)");
  const auto palette = spec.palette.empty()
                           ? default_palette(std::max<int>(256, static_cast<int>(max_id) + 1))
                           : std::vector<Rgb>(spec.palette.begin(), spec.palette.end());
  cv::Mat color = colorize(ids, palette);
  if (args.overlay) color = overlay(image.original_bgr, color, 0.5);
  write_png(args.out, color);
  std::cout << "wrote " << args.out << "\n";
  if (!args.raw.empty()) {
    at::Tensor u8 = ids.to(at::kByte).contiguous();
    cv::Mat raw(static_cast<int>(u8.size(0)), static_cast<int>(u8.size(1)), CV_8UC1,
                u8.data_ptr<uint8_t>());
    write_png(args.raw, raw);
    std::cout << "wrote " << args.raw << "\n";
  }
}

}  // namespace

void add_predict_command(CLI::App& app) {
  auto args = std::make_shared<PredictArgs>();
  auto* cmd = app.add_subcommand("predict",
                                 "segment one image: pseudo-colour PNG (and the raw "
                                 "class-id map)");
  cmd->add_option("--model", args->model, "ONNX model")->required();
  cmd->add_option("--data", args->data, "dataset YAML (preprocessing, palette)")->required();
  cmd->add_option("--image", args->image, "input image")->required();
  cmd->add_option("--out", args->out, "pseudo-colour PNG to write")->required();
  cmd->add_flag("--overlay", args->overlay, "blend the colours over the image");
  cmd->add_option("--raw", args->raw, "also write the 8-bit class-id map");
  add_threads_option(*cmd, args->threads);
  add_engine_options(*cmd, args->engine);
  cmd->callback([args] { run_predict(*args); });
}

}  // namespace segslim::cli
