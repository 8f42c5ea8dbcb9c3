// The commands end to end on the bundled sample, against independent references: PyTorch's
// class maps for the sample images (sample/camvid_ref, from ../shared/models/espnet_camvid_ref)
// and hand-computed MAC counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "support/cli_runner.h"
#include "support/test_support.h"

namespace segslim::testing {
namespace {

namespace fs = std::filesystem;
const std::string kModel = source_dir() + "/sample/models/espnet_camvid.onnx";
const std::string kData = source_dir() + "/configs/sample_camvid.yml";
const char* kSampleImages[] = {"0016E5_07959", "0016E5_07999", "0016E5_08039", "0016E5_08079"};

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

at::Tensor read_ids(const std::string& path) {
  cv::Mat m = cv::imread(path, cv::IMREAD_UNCHANGED);
  if (m.empty() || m.channels() != 1) throw std::runtime_error("cannot read id map " + path);
  return at::from_blob(m.data, {m.rows, m.cols}, at::kByte).to(at::kLong).clone();
}

TEST(Inspect, ReportsHandCountedMacsAndDistillationNodes) {
  const std::string tiny = source_dir() + "/tests/exec/fixtures/tiny_segnet/model.onnx";
  const std::string json = temp_dir() + "/inspect.json";
  const auto r = run_cli("inspect " + tiny + " --shape 1x3x36x52 --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = read_json(json);
  // Per layer: output elements x (C_in / groups) x kernel area (ConvTranspose: input elements
  // x C_out/groups x kernel area):
  //   stem 12*18*26*27 + dw 12*18*26*9 + pw 20*18*26*12 + down 20*9*13*45
  //   + up (20*9*13)*(12*4) + head 5*18*26*24 = 588276
  EXPECT_EQ(j["macs"].get<int64_t>(), 588276);
  EXPECT_EQ(j["quantizable"].size(), 6u);
  EXPECT_EQ(j["op_histogram"]["Conv"].get<int>(), 5);
  // PyTorch's parameter count: 324+12+12+12+108+12+12+240+20+900+20+960+12+1+120+5 = 2770
  // plus the BN running statistics (4 x 12) the ONNX file stores as initializers.
  EXPECT_EQ(j["num_parameters"].get<int64_t>(), 2770 + 48);
  ASSERT_EQ(j["distill_candidates"].size(), 2u);
  EXPECT_EQ(j["distill_candidates"][0]["tensor"], "logits");
  EXPECT_NE(r.output.find("output of the last Conv"), std::string::npos) << r.output;
}

TEST(Predict, RawMapMatchesPyTorchOnTheSampleImages) {
  for (const char* name : kSampleImages) {
    const std::string out = temp_dir() + "/" + name;
    const auto r = run_cli("predict --model " + kModel + " --data " + kData + " --image " +
                           source_dir() + "/sample/camvid/val/" + name + ".png --out " + out +
                           "_color.png --overlay --raw " + out + "_ids.png --threads 2");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    at::Tensor ours = read_ids(out + "_ids.png");
    at::Tensor ref = read_ids(source_dir() + "/sample/camvid_ref/" + name + ".png");
    const double agree = ours.eq(ref).to(at::kDouble).mean().item<double>();
    EXPECT_GE(agree, 0.999) << name;
    cv::Mat color = cv::imread(out + "_color.png", cv::IMREAD_COLOR);
    EXPECT_EQ(color.cols, 480);
    EXPECT_EQ(color.rows, 360);
  }
}

TEST(Eval, SampleMetricsEqualThoseOfPyTorchsPredictions) {
  const std::string json = temp_dir() + "/eval_sample.json";
  const auto r = run_cli("eval --model " + kModel + " --data " + kData +
                         " --batch 2 --threads 2 --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = read_json(json);
  // The same metrics, counted by a naive loop from PyTorch's class maps and the ground truth
  // (pixels labelled 11 ignored; a prediction of 11 is a miss).
  std::vector<double> tp(11), label_area(11), pred_area(11);
  double correct = 0, total = 0;
  for (const char* name : kSampleImages) {
    at::Tensor pred = read_ids(source_dir() + "/sample/camvid_ref/" + name + ".png").reshape(-1);
    at::Tensor gt = read_ids(source_dir() + "/sample/camvid/valannot/" + name + ".png").reshape(-1);
    const int64_t* p = pred.data_ptr<int64_t>();
    const int64_t* g = gt.data_ptr<int64_t>();
    for (int64_t i = 0; i < gt.numel(); ++i) {
      if (g[i] == 11) continue;
      total += 1;
      label_area[g[i]] += 1;
      if (p[i] < 11) pred_area[p[i]] += 1;
      if (p[i] == g[i]) tp[g[i]] += 1, correct += 1;
    }
  }
  struct {
    double miou = 0, acc = 0, kappa = 0;
    std::vector<double> class_iou;
  } ref;
  double pe = 0;
  for (int c = 0; c < 11; ++c) {
    ref.class_iou.push_back(tp[c] / (label_area[c] + pred_area[c] - tp[c]));
    ref.miou += ref.class_iou.back() / 11;
    pe += label_area[c] * pred_area[c] / (total * total);
  }
  ref.acc = correct / total;
  ref.kappa = (ref.acc - pe) / (1 - pe);
  EXPECT_EQ(j["num_images"].get<int>(), 4);
  EXPECT_NEAR(j["miou"].get<double>(), ref.miou, 5e-4);
  EXPECT_NEAR(j["acc"].get<double>(), ref.acc, 5e-4);
  EXPECT_NEAR(j["kappa"].get<double>(), ref.kappa, 5e-4);
  ASSERT_EQ(j["class_iou"].size(), 11u);
  for (int c = 0; c < 11; ++c)
    EXPECT_NEAR(j["class_iou"][c].get<double>(), ref.class_iou[c], 1e-3) << "class " << c;
  for (const char* key : {"macc", "dice", "images_per_s"}) EXPECT_TRUE(j.contains(key)) << key;
}

// bench on the default engine (oneDNN): the statistics are ordered and consistent, the
// profile lists the compiled steps, and --int8-ops and --f32-links are accepted.
TEST(Bench, StatisticsJsonAndProfile) {
  const std::string json = temp_dir() + "/bench.json";
  const auto r = run_cli("bench --model " + kModel +
                         " --shape 2x3x64x96 --warmup 1 --repeat 4 --threads 2 --profile 5 "
                         "--int8-ops Conv --f32-links --json " +
                         json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("on onednn (2 threads, shape 2x3x64x96"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("slowest steps of"), std::string::npos) << r.output;
  // five step lines ("  <ms>  <share>%  <step>"); which steps are slowest depends on the load
  size_t step_lines = 0;
  for (size_t at = r.output.find("%  "); at != std::string::npos; at = r.output.find("%  ", at + 1))
    ++step_lines;
  EXPECT_EQ(step_lines, 5u) << r.output;
  const auto j = read_json(json);
  EXPECT_EQ(j["engine"], "onednn");
  EXPECT_EQ(j["shape"], (std::vector<int64_t>{2, 3, 64, 96}));
  const double mn = j["min_ms"], p50 = j["p50_ms"], p90 = j["p90_ms"], mean = j["mean_ms"];
  EXPECT_GT(mn, 0);
  EXPECT_LE(mn, p50);
  EXPECT_LE(p50, p90);
  EXPECT_LE(mn, mean);
  EXPECT_NEAR(j["images_per_s"].get<double>(), 2 * 1000.0 / p50, 1e-6 * (2000.0 / p50));  // at p50
}

// bench --vs: both models timed in one process (alternating), each with its statistics; the
// speed-up is the ratio of the p50s; a --vs model that cannot be read is refused by name.
TEST(Bench, VsTimesBothModelsInOneProcess) {
  const std::string json = temp_dir() + "/bench_vs.json";
  const std::string other = temp_dir() + "/bench_vs_copy.onnx";
  fs::copy_file(kModel, other, fs::copy_options::overwrite_existing);
  const auto r = run_cli("bench --model " + kModel + " --vs " + other +
                         " --shape 1x3x64x96 --warmup 1 --repeat 5 --threads 2 --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("alternating with the other"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(other + " is "), std::string::npos) << r.output;
  const auto j = read_json(json);
  ASSERT_TRUE(j.contains("vs")) << j.dump();
  EXPECT_EQ(j["model"], kModel);
  EXPECT_EQ(j["vs"]["model"], other);
  EXPECT_EQ(j["repeat"].get<int>(), 5);
  EXPECT_EQ(j["vs"]["repeat"].get<int>(), 5);
  const double a = j["p50_ms"], b = j["vs"]["p50_ms"];
  ASSERT_GT(b, 0);
  EXPECT_DOUBLE_EQ(j["speedup"].get<double>(), a / b);
  // each pair's ratio lies between the extreme ratios the two sample sets allow
  const double pair = j["pair_speedup_median"];
  EXPECT_GE(pair, j["min_ms"].get<double>() / j["vs"]["max_ms"].get<double>());
  EXPECT_LE(pair, j["max_ms"].get<double>() / j["vs"]["min_ms"].get<double>());
  // recomputed from the samples: run i of --model against run i of --vs (M / M2, whichever
  // ran first in the pair), their median by nearest rank (the 3rd of 5), and the p50s
  const auto ma = j["samples_ms"].get<std::vector<double>>();
  const auto mb = j["vs"]["samples_ms"].get<std::vector<double>>();
  ASSERT_EQ(ma.size(), 5u);
  ASSERT_EQ(mb.size(), 5u);
  std::vector<double> ratios;
  for (size_t i = 0; i < ma.size(); ++i) ratios.push_back(ma[i] / mb[i]);
  std::sort(ratios.begin(), ratios.end());
  EXPECT_DOUBLE_EQ(pair, ratios[2]);
  std::vector<double> sa = ma, sb = mb;
  std::sort(sa.begin(), sa.end());
  std::sort(sb.begin(), sb.end());
  EXPECT_DOUBLE_EQ(a, sa[2]);
  EXPECT_DOUBLE_EQ(b, sb[2]);

  const auto bad = run_cli("bench --model " + kModel + " --vs " + temp_dir() +
                           "/missing.onnx --shape 1x3x64x96 --repeat 1 --threads 2");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("missing.onnx"), std::string::npos) << bad.output;
}

// Acceptance on the full CamVid val split (needs ../shared): every metric within 0.05 points
// of the PyTorch reference in espnet_camvid.json.
TEST(Eval, FullCamvidValMatchesPyTorchReference) {
  const std::string shared = shared_dir();
  if (shared.empty()) GTEST_SKIP() << "../shared not present";
  const std::string json = temp_dir() + "/eval_full.json";
  const auto r = run_cli("eval --model " + shared + "/models/espnet_camvid.onnx --data " +
                         source_dir() + "/configs/camvid_espnet.yml --data-root " + shared +
                         "/data/camvid --batch 4 --threads 2 --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = read_json(json);
  const auto ref = read_json(shared + "/models/espnet_camvid.json")["metrics_pytorch"]["val"];
  EXPECT_EQ(j["num_images"].get<int>(), ref["images"].get<int>());
  const double tol = 0.0005;  // 0.05 points
  EXPECT_NEAR(j["miou"].get<double>(), ref["mIoU"].get<double>(), tol);
  EXPECT_NEAR(j["acc"].get<double>(), ref["pixel_acc"].get<double>(), tol);
  EXPECT_NEAR(j["macc"].get<double>(), ref["mean_class_acc"].get<double>(), tol);
  const auto names = j["class_names"];
  for (size_t c = 0; c < names.size(); ++c)
    EXPECT_NEAR(j["class_iou"][c].get<double>(),
                ref["per_class_iou"][names[c].get<std::string>()].get<double>(), tol)
        << names[c];
}

// Acceptance: predict --raw on the 5 reference images matches PyTorch on >= 99.9 % of pixels.
TEST(Predict, AllReferenceMapsMatch) {
  const std::string shared = shared_dir();
  if (shared.empty()) GTEST_SKIP() << "../shared not present";
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(shared + "/models/espnet_camvid_ref")) {
    const std::string name = entry.path().filename().string();
    const std::string out = temp_dir() + "/ref_" + name;
    const auto r =
        run_cli("predict --model " + shared + "/models/espnet_camvid.onnx --data " + source_dir() +
                "/configs/camvid_espnet.yml --image " + shared + "/data/camvid/val/" + name +
                " --out " + out + ".color.png --raw " + out + " --threads 2");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const double agree =
        read_ids(out).eq(read_ids(entry.path().string())).to(at::kDouble).mean().item<double>();
    EXPECT_GE(agree, 0.999) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 5);
}

}  // namespace
}  // namespace segslim::testing
