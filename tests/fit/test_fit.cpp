// `segslim train`: its loss against independent references, its config, and the CLI end to end
// on the bundled sample (metrics equal `segslim eval`, a SIGKILLed run resumes to the same
// bytes, error paths).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "config/fit_config.h"
#include "fit/seg_loss.h"
#include "graph/model.h"
#include "graph/tensor_proto.h"
#include "support/cli_runner.h"
#include "support/test_support.h"
#include "train/checkpoint.h"
#include "train/distill_loss.h"

namespace segslim::testing {
namespace {

namespace fs = std::filesystem;

// ---- loss ---------------------------------------------------------------------------------

TEST(FitLoss, CrossEntropyEqualsNllLossOfLogSoftmax) {
  at::manual_seed(3);
  const at::Tensor logits = at::randn({2, 4, 3, 5}, at::kDouble);
  at::Tensor labels = at::randint(0, 4, {2, 3, 5}, at::kLong);
  labels[0][1][2] = 9;  // ignored
  labels[1][0][0] = 9;
  LossConfig cfg;
  const at::Tensor ref =
      at::nll_loss(at::log_softmax(logits, 1).permute({0, 2, 3, 1}).reshape({-1, 4}),
                   labels.reshape({-1}), {}, at::Reduction::Mean, 9);
  EXPECT_NEAR(fit_loss(cfg, logits, labels, 9).item<double>(), ref.item<double>(), 1e-12);
  // class weights and coef
  cfg.weight = {1.0, 2.0, 0.5, 3.0};
  cfg.coef = 0.25;
  const at::Tensor w = at::tensor(cfg.weight, at::kDouble);
  const at::Tensor ref_w =
      at::nll_loss(at::log_softmax(logits, 1).permute({0, 2, 3, 1}).reshape({-1, 4}),
                   labels.reshape({-1}), w, at::Reduction::Mean, 9);
  EXPECT_NEAR(fit_loss(cfg, logits, labels, 9).item<double>(), 0.25 * ref_w.item<double>(), 1e-12);
}

// PaddleSeg's OhemCrossEntropyLoss as a plain loop over pixels.
double naive_ohem(const at::Tensor& logits, const at::Tensor& labels, int64_t ignore, double thresh,
                  int64_t min_kept) {
  const int64_t n = logits.size(0), c = logits.size(1), h = logits.size(2), w = logits.size(3);
  auto lg = logits.accessor<double, 4>();
  auto lb = labels.accessor<int64_t, 3>();
  struct Px {
    double p, nll;
  };
  std::vector<Px> valid;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const int64_t t = lb[i][y][x];
        if (t == ignore) continue;
        double m = -1e300, sum = 0;
        for (int64_t k = 0; k < c; ++k) m = std::max(m, lg[i][k][y][x]);
        for (int64_t k = 0; k < c; ++k) sum += std::exp(lg[i][k][y][x] - m);
        const double logp = lg[i][t][y][x] - m - std::log(sum);
        valid.push_back({std::exp(logp), -logp});
      }
  std::vector<Px> kept = valid;
  if (static_cast<int64_t>(valid.size()) > min_kept && !valid.empty()) {
    std::vector<double> ps;
    for (const auto& v : valid) ps.push_back(v.p);
    std::sort(ps.begin(), ps.end());
    double threshold = thresh;
    if (min_kept > 0 && ps[min_kept - 1] > thresh) threshold = ps[min_kept - 1];
    kept.clear();
    for (const auto& v : valid)
      if (v.p < threshold) kept.push_back(v);
  }
  double total = 0;
  for (const auto& v : kept) total += v.nll;
  return kept.empty() ? 0.0 : total / kept.size();
}

TEST(FitLoss, OhemEqualsANaiveLoop) {
  at::manual_seed(5);
  const at::Tensor logits = at::randn({2, 3, 4, 4}, at::kDouble) * 2;
  at::Tensor labels = at::randint(0, 3, {2, 4, 4}, at::kLong);
  labels[0][0][0] = 255;
  labels[1][3][2] = 255;
  // thresh alone decides; the min_kept-th probability raises it; too few pixels: all kept;
  // min_kept 0: thresh alone.
  for (auto [thresh, min_kept] : std::vector<std::pair<double, int64_t>>{
           {0.7, 3}, {0.3, 20}, {0.7, 30}, {0.5, 0}, {0.9, 1000}}) {
    LossConfig cfg;
    cfg.type = "OhemCrossEntropyLoss";
    cfg.thresh = thresh;
    cfg.min_kept = min_kept;
    EXPECT_NEAR(fit_loss(cfg, logits, labels, 255).item<double>(),
                naive_ohem(logits, labels, 255, thresh, min_kept), 1e-12)
        << "thresh " << thresh << " min_kept " << min_kept;
  }
}

at::Tensor mask(std::vector<int64_t> v) {
  return at::tensor(v, at::kLong).to(at::kBool).view({1, 1, -1});
}

TEST(FitLoss, OhemByHand) {
  // One image, 2 classes, 4 pixels. Logits (class 0, class 1) per pixel; every label is 0, so
  // p = sigmoid(l0 - l1): 0.5, 0.8808, 0.1192, 0.7311 (pixel 3 ignored below).
  at::Tensor logits = at::zeros({1, 2, 1, 4}, at::kDouble);
  logits[0][0][0][1] = 2.0;
  logits[0][1][0][2] = 2.0;
  logits[0][0][0][3] = 1.0;
  at::Tensor labels = at::zeros({1, 1, 4}, at::kLong);
  // thresh 0.7, min_kept 1: kept = p < 0.7 = pixels 0 and 2.
  const at::Tensor kept = ohem_kept_mask(logits, labels, 9, 0.7, 1);
  EXPECT_TRUE(at::equal(kept, mask({1, 0, 1, 0})));
  const double expected = (std::log(2.0) + std::log(1 + std::exp(2.0))) / 2;
  EXPECT_NEAR(ohem_ce_loss(logits, labels, 9, 0.7, 1).item<double>(), expected, 1e-12);
  // min_kept 3: the 3rd smallest p (0.7311) > 0.7 becomes the threshold: pixels 0 and 2 again
  // (strictly below, as PaddleSeg).
  EXPECT_TRUE(at::equal(ohem_kept_mask(logits, labels, 9, 0.7, 3), kept));
  // pixel 1 ignored: 3 valid pixels, min_kept 3 is not fewer than them: all valid kept.
  labels[0][0][1] = 9;
  EXPECT_TRUE(at::equal(ohem_kept_mask(logits, labels, 9, 0.7, 3), mask({1, 0, 1, 1})));
  // gradients flow through the kept pixels only
  at::Tensor x = logits.clone().requires_grad_(true);
  ohem_ce_loss(x, at::zeros({1, 1, 4}, at::kLong), 9, 0.7, 1).backward();
  EXPECT_EQ(x.grad().select(3, 1).abs().sum().item<double>(), 0.0);
  EXPECT_EQ(x.grad().select(3, 3).abs().sum().item<double>(), 0.0);
  EXPECT_GT(x.grad().select(3, 0).abs().sum().item<double>(), 0.0);
}

// ---- config -------------------------------------------------------------------------------

TEST(FitConfig, ReadsBothLossFormsAndTrainConfig) {
  const FitConfig a = parse_fit_config(
      "Global: {seed: 3}\nTrainConfig:\n  train_iter: 5\n  batch_size: 2\n"
      "Loss:\n  type: OhemCrossEntropyLoss\n  thresh: 0.6\n  min_kept: 100\n  coef: 2\n",
      "a.yml");
  EXPECT_EQ(a.seed, 3);
  ASSERT_TRUE(a.train.has_value());
  EXPECT_EQ(*a.train->train_iter, 5);
  EXPECT_EQ(a.loss.type, "OhemCrossEntropyLoss");
  EXPECT_EQ(a.loss.thresh, 0.6);
  EXPECT_EQ(a.loss.min_kept, 100);
  EXPECT_EQ(a.loss.coef, 2.0);
  const FitConfig b = parse_fit_config(
      "loss:\n  types:\n    - type: CrossEntropyLoss\n      weight: [1, 2]\n  coef: [0.5]\n",
      "b.yml");
  EXPECT_FALSE(b.train.has_value());
  EXPECT_EQ(b.loss.type, "CrossEntropyLoss");
  EXPECT_EQ(b.loss.weight, (std::vector<double>{1, 2}));
  EXPECT_EQ(b.loss.coef, 0.5);
  EXPECT_EQ(parse_fit_config("", "empty.yml").loss.type, "CrossEntropyLoss");
}

void expect_error(const std::string& yaml, const std::vector<std::string>& fragments) {
  try {
    parse_fit_config(yaml, "c.yml");
    ADD_FAILURE() << "no error for:\n" << yaml;
  } catch (const Error& e) {
    for (const auto& f : fragments)
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  }
}

TEST(FitConfig, ErrorsNameTheKey) {
  expect_error("Loss:\n  type: FocalLoss\n",
               {"Loss.type", "FocalLoss", "CrossEntropyLoss", "OhemCrossEntropyLoss"});
  expect_error("loss:\n  types: [{type: Dice}]\n", {"loss.types[0].type", "Dice"});
  expect_error("Loss:\n  treshold: 0.7\n", {"Loss.treshold", "thresh"});
  expect_error("TrainConfig:\n  train_iter: 2\n  lerning_rate: 0.1\n",
               {"TrainConfig.lerning_rate", "learning_rate"});
  expect_error("Quant: {}\n", {"Quant", "TrainConfig"});
}

// ---- CLI ----------------------------------------------------------------------------------

const std::string kModel = source_dir() + "/sample/models/espnet_camvid.onnx";
const std::string kData = source_dir() + "/configs/sample_camvid.yml";

const char* kTiny = R"(Global: {seed: 7}
TrainConfig:
  train_iter: 4
  eval_iter: 2
  checkpoint_every: 1
  batch_size: 2
  num_workers: 1
  learning_rate: 0.00005
  optimizer_builder:
    optimizer:
      type: Adam
Loss:
  type: OhemCrossEntropyLoss
  thresh: 0.7
  min_kept: 20000
)";

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::string bytes(const std::string& path) { return read_file(path, "test file"); }

std::string train_args(const std::string& config, const std::string& out) {
  return "train --model " + kModel + " --data " + kData + " --config " + config + " --out " + out +
         " --threads 2";
}

TEST(Train, TrainsReportsEvalsAndResumesToTheSameBytes) {
  const std::string cfg = write_temp_file("fit_configs/tiny.yml", kTiny);
  const std::string full = temp_dir() + "/fit_full", killed = temp_dir() + "/fit_killed";
  const std::string input_before = bytes(kModel);
  const auto a = run_cli(train_args(cfg, full));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_NE(a.output.find("img/s"), std::string::npos) << a.output;
  EXPECT_EQ(bytes(kModel), input_before) << "the input model was modified";

  const auto report = read_json(full + "/train_report.json");
  for (const char* key : {"before", "after"}) {
    ASSERT_TRUE(report.contains(key)) << key;
    EXPECT_EQ(report[key]["class_iou"].size(), 11u) << key;
  }
  EXPECT_EQ(report["train"]["iterations"], 4);
  EXPECT_EQ(report["loss"]["type"], "OhemCrossEntropyLoss");
  EXPECT_GT(report["train"]["train_images_per_s"].get<double>(), 0.0);
  // The written model is the best evaluated one: `segslim eval` of it says the same.
  EXPECT_NO_THROW(load_model(full + "/model.onnx"));
  const std::string eval_json = full + "/eval.json";
  const auto e = run_cli("eval --model " + full + "/model.onnx --data " + kData +
                         " --threads 2 --engine torch --json " + eval_json);
  ASSERT_EQ(e.exit_code, 0) << e.output;
  const auto ev = read_json(eval_json);
  EXPECT_NEAR(ev["miou"].get<double>(), report["after"]["miou"].get<double>(), 1e-6);
  EXPECT_NEAR(ev["miou"].get<double>(), report["train"]["best_val"]["miou"].get<double>(), 1e-6);
  for (size_t c = 0; c < 11; ++c)
    EXPECT_NEAR(ev["class_iou"][c].get<double>(), report["after"]["class_iou"][c].get<double>(),
                1e-6);
  EXPECT_NE(bytes(full + "/model.onnx"), input_before) << "training changed nothing";

  // SIGKILL after iteration 3 (past an evaluation, between checkpoints), then --resume.
  const auto b = run_cli(train_args(cfg, killed), "SEGSLIM_TEST_KILL_AFTER_ITER=3");
  ASSERT_NE(b.exit_code, 0) << "the run should have been killed: " << b.output;
  ASSERT_FALSE(fs::exists(killed + "/train_report.json"));
  const auto c = run_cli(train_args(cfg, killed) + " --resume");
  ASSERT_EQ(c.exit_code, 0) << c.output;
  EXPECT_NE(c.output.find("resuming from"), std::string::npos) << c.output;
  const auto rc = read_json(killed + "/train_report.json");
  EXPECT_EQ(rc["train"]["resumed"], true);
  EXPECT_EQ(report["train"]["best_iteration"], rc["train"]["best_iteration"]);
  for (const char* key : {"before", "after"}) EXPECT_EQ(report[key], rc[key]) << key;
  EXPECT_EQ(bytes(full + "/model.onnx"), bytes(killed + "/model.onnx"))
      << "the resumed run wrote a different model";
}

// 2 processes x 2 images against 1 process x 4 images (class-weighted cross entropy, SGD): the
// same update up to what BatchNorm's per-process batch statistics change (each rank normalises
// with its own 2 images, as DDP without SyncBatchNorm): 16 % of the update here. ESPNet's
// BatchNorm trains, so this is a check of the data-parallel path (it runs, rank 0 writes a model
// that `eval` agrees with, the update points the same way), not of the gradient averaging to the
// last bit (tests/dist does that for the shared machinery).
TEST(Train, TwoProcessesTrainLikeOneWithTheGlobalBatch) {
  const std::string cfg = std::string(R"(Global: {seed: 7}
TrainConfig:
  train_iter: 2
  eval_iter: 2
  num_workers: 1
  learning_rate: 0.0005
  optimizer_builder:
    optimizer:
      type: SGD
Loss:
  weight: [1, 1, 2, 1, 1, 1, 2, 1, 1, 3, 3]
)");
  auto with_batch = [&](int b) {
    std::string t = cfg;
    t.replace(t.find("  num_workers"), 0, "  batch_size: " + std::to_string(b) + "\n");
    return write_temp_file("fit_configs/dist" + std::to_string(b) + ".yml", t);
  };
  const std::string one = temp_dir() + "/fit_one", two = temp_dir() + "/fit_two";
  auto r = run_cli("train --model " + kModel + " --data " + kData + " --config " + with_batch(4) +
                   " --out " + one + " --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_cli("train --model " + kModel + " --data " + kData + " --config " + with_batch(2) +
              " --out " + two + " --threads 1 --nproc 2 --dist-timeout 60");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto report = read_json(two + "/train_report.json");
  EXPECT_EQ(report["processes"], 2);
  EXPECT_EQ(report["train"]["global_batch_size"], 4);
  const std::string eval_json = two + "/eval.json";
  const auto e = run_cli("eval --model " + two + "/model.onnx --data " + kData +
                         " --threads 2 --engine torch --json " + eval_json);
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_NEAR(read_json(eval_json)["miou"].get<double>(), report["after"]["miou"].get<double>(),
              1e-6);

  const auto ca = load_checkpoint(one + "/checkpoint"), cb = load_checkpoint(two + "/checkpoint");
  ASSERT_TRUE(ca && cb);
  EXPECT_EQ(ca->iteration, 2);
  EXPECT_EQ(cb->iteration, 2);
  const onnx::ModelProto start = load_model(kModel);
  double update = 0, difference = 0;
  for (const auto& init : start.graph().initializer()) {
    if (init.data_type() != onnx::TensorProto::FLOAT || init.dims_size() < 2) continue;  // weights
    const at::Tensor before = tensor_from_proto(init).to(at::kDouble);
    const at::Tensor da = ca->tensors.at(init.name()).to(at::kDouble) - before;
    const at::Tensor db = cb->tensors.at(init.name()).to(at::kDouble) - before;
    update += da.pow(2).sum().item<double>();
    difference += (db - da).pow(2).sum().item<double>();
  }
  ASSERT_GT(update, 0) << "training did not move the weights";
  EXPECT_LT(std::sqrt(difference / update), 0.3)
      << "|update difference| " << std::sqrt(difference) << " of |update| " << std::sqrt(update);
}

TEST(Train, ErrorPaths) {
  // no --data
  auto r = run_cli("train --model " + kModel + " --out " + temp_dir() + "/fit_nodata");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--data is required"), std::string::npos) << r.output;
  // a bad loss type names the key and the valid values
  const std::string bad = write_temp_file("fit_configs/bad.yml", "Loss:\n  type: Focal\n");
  r = run_cli(train_args(bad, temp_dir() + "/fit_bad"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  for (const char* f : {"Loss.type", "Focal", "CrossEntropyLoss, OhemCrossEntropyLoss"})
    EXPECT_NE(r.output.find(f), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(temp_dir() + "/fit_bad/model.onnx"));
  // --out whose model.onnx is the input
  const std::string dir = temp_dir() + "/fit_same";
  fs::create_directories(dir);
  fs::copy_file(kModel, dir + "/model.onnx", fs::copy_options::overwrite_existing);
  const std::string before = bytes(dir + "/model.onnx");
  r = run_cli("train --model " + dir + "/model.onnx --data " + kData + " --out " + dir);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("would overwrite the input model"), std::string::npos) << r.output;
  EXPECT_EQ(bytes(dir + "/model.onnx"), before);
}

}  // namespace
}  // namespace segslim::testing
