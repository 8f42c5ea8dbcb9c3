// `segslim compress` end to end on the bundled sample, through the CLI as a user runs it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/files.h"
#include "graph/model.h"
#include "support/cli_runner.h"
#include "support/test_support.h"

namespace segslim::testing {
namespace {

namespace fs = std::filesystem;

const std::string kModel = source_dir() + "/sample/models/espnet_camvid.onnx";
const std::string kData = source_dir() + "/configs/sample_camvid.yml";

// A compress config for the sample with absolute paths; `strategy` is appended verbatim.
std::string write_config(const std::string& name, const std::string& out_dir,
                         const std::string& strategy) {
  const std::string text = "Global:\n  model: " + kModel + "\n  data: " + kData +
                           "\n  output_dir: " + out_dir + "\n  seed: 7\n" + strategy;
  return write_temp_file("compress_configs/" + name + ".yml", text);
}

const char* kQuantPost = R"(QuantPost:
  algo: abs_max
  batch_size: 2
  batch_nums: 1
)";

const char* kQat = R"(Distillation:
  node: [logits]
QuantAware:
  quantize_op_types: [conv2d, conv2d_transpose]
QuantPost:
  algo: abs_max
  batch_size: 2
  batch_nums: 1
TrainConfig:
  train_iter: 4
  eval_iter: 2
  checkpoint_every: 1
  batch_size: 2
  num_workers: 2
  learning_rate: 0.00005
  optimizer_builder:
    optimizer:
      type: Adam
)";

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::string file_bytes(const std::string& path) { return read_file(path, "test file"); }

std::map<std::string, int> op_counts(const onnx::ModelProto& m) {
  std::map<std::string, int> counts;
  for (const auto& n : m.graph().node()) counts[n.op_type()]++;
  return counts;
}

TEST(Compress, PtqWritesAStandardQdqModelAndItsReport) {
  const std::string out = temp_dir() + "/ptq";
  const auto r =
      run_cli("compress --config " + write_config("ptq", out, kQuantPost) + " --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto before = fs::last_write_time(kModel);

  // The exported file passes the ONNX checker (load_model runs it) and is standard QDQ:
  // every Conv weight is an int8 initializer behind a per-channel DequantizeLinear, every
  // Conv input goes through a QuantizeLinear/DequantizeLinear pair.
  onnx::ModelProto m = load_model(out + "/model.onnx");
  const auto counts = op_counts(m);
  EXPECT_EQ(counts.at("Conv"), 82);
  EXPECT_EQ(counts.at("ConvTranspose"), 3);
  EXPECT_EQ(default_opset(m), 13);
  int weight_dq = 0, int8_weights = 0;
  std::set<std::string> int8_names;
  for (const auto& init : m.graph().initializer())
    if (init.data_type() == onnx::TensorProto::INT8 && init.dims_size() >= 3)
      int8_names.insert(init.name()), ++int8_weights;
  for (const auto& n : m.graph().node()) {
    if (n.op_type() != "DequantizeLinear" || !int8_names.count(n.input(0))) continue;
    ++weight_dq;
    for (const auto& a : n.attribute()) {
      if (a.name() == "axis") {
        EXPECT_EQ(a.i(), 0) << n.name();  // Conv: output channels
      }
    }
  }
  EXPECT_EQ(int8_weights, 82);  // QuantPost's default op types: Conv only
  EXPECT_EQ(weight_dq, 82);
  EXPECT_EQ(counts.at("QuantizeLinear"), counts.at("DequantizeLinear") - weight_dq);

  // The report holds FP32, PTQ and INT8 metrics with per-class IoU; INT8 is what
  // `segslim eval` says of the exported file.
  const auto report = read_json(out + "/compress_report.json");
  for (const char* key : {"fp32", "ptq", "int8"}) {
    ASSERT_TRUE(report.contains(key)) << key;
    EXPECT_EQ(report[key]["class_iou"].size(), 11u) << key;
  }
  // On LibTorch (the fake-quant numerics compress evaluates with) exactly; on the oneDNN engine
  // (eval's default: integer kernels, another rounding order) within half a point on 4 images.
  const std::string eval_json = out + "/eval.json", engine_json = out + "/eval_onednn.json";
  const auto e = run_cli("eval --model " + out + "/model.onnx --data " + kData +
                         " --threads 2 --engine torch --json " + eval_json);
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_NEAR(read_json(eval_json)["miou"].get<double>(), report["int8"]["miou"].get<double>(),
              1e-6);
  const auto e2 = run_cli("eval --model " + out + "/model.onnx --data " + kData +
                          " --threads 2 --json " + engine_json);
  ASSERT_EQ(e2.exit_code, 0) << e2.output;
  EXPECT_EQ(read_json(engine_json)["engine"], "onednn");
  EXPECT_NEAR(read_json(engine_json)["miou"].get<double>(), report["int8"]["miou"].get<double>(),
              0.005);
  // PTQ on a model that is not retrained: INT8 and PTQ are the same model here.
  EXPECT_NEAR(report["ptq"]["miou"].get<double>(), report["int8"]["miou"].get<double>(), 1e-6);
  EXPECT_LT(std::abs(report["int8"]["miou"].get<double>() - report["fp32"]["miou"].get<double>()),
            0.05);
  EXPECT_EQ(fs::last_write_time(kModel), before) << "the input model was touched";
}

// A run killed with SIGKILL and resumed ends exactly where an uninterrupted run ends.
TEST(Compress, KilledRunResumesToTheSameResult) {
  const std::string full = temp_dir() + "/qat_full", killed = temp_dir() + "/qat_killed";
  const auto a =
      run_cli("compress --config " + write_config("qat_full", full, kQat) + " --threads 2");
  ASSERT_EQ(a.exit_code, 0) << a.output;

  const std::string cfg = write_config("qat_killed", killed, kQat);
  const auto b =
      run_cli("compress --config " + cfg + " --threads 2", "SEGSLIM_TEST_KILL_AFTER_ITER=3");
  ASSERT_NE(b.exit_code, 0) << "the run should have been killed: " << b.output;
  ASSERT_FALSE(fs::exists(killed + "/compress_report.json")) << "no report before the end";
  const auto c = run_cli("compress --config " + cfg + " --threads 2 --resume");
  ASSERT_EQ(c.exit_code, 0) << c.output;
  EXPECT_NE(c.output.find("resuming from"), std::string::npos) << c.output;

  const auto ra = read_json(full + "/compress_report.json");
  const auto rc = read_json(killed + "/compress_report.json");
  EXPECT_EQ(rc["qat"]["resumed"], true);
  EXPECT_EQ(ra["qat"]["best_iteration"], rc["qat"]["best_iteration"]);
  for (const char* key : {"fp32", "ptq", "int8"}) {
    EXPECT_DOUBLE_EQ(ra[key]["miou"].get<double>(), rc[key]["miou"].get<double>()) << key;
    EXPECT_EQ(ra[key]["class_iou"], rc[key]["class_iou"]) << key;
  }
  EXPECT_EQ(file_bytes(full + "/model.onnx"), file_bytes(killed + "/model.onnx"))
      << "the resumed run exported a different model";
}

TEST(Compress, NonFiniteLossStopsWithTheBestModelKept) {
  const std::string out = temp_dir() + "/diverge";
  std::string qat = kQat;
  qat.replace(qat.find("learning_rate: 0.00005"), 22, "learning_rate: 1.0e+30");
  qat.replace(qat.find("eval_iter: 2"), 12, "eval_iter: 1");
  const auto r = run_cli("compress --config " + write_config("diverge", out, qat) + " --threads 2");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("the loss became"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("The best model so far"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(out + "/model.onnx"));
  EXPECT_NO_THROW(load_model(out + "/model.onnx"));
}

TEST(Compress, HyperParameterSearchExportsTheBestTrial) {
  const std::string out = temp_dir() + "/hpo";
  const auto r =
      run_cli("compress --config " +
              write_config("hpo", out,
                           "HyperParameterOptimization:\n  ptq_algo: [abs_max, avg, hist]\n"
                           "  hist_percent: [0.99]\n  batch_num: [1]\n"
                           "QuantPost:\n  batch_size: 2\n") +
              " --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto report = read_json(out + "/compress_report.json");
  EXPECT_EQ(report["strategy"], "hpo");
  ASSERT_EQ(report["ptq_trials"].size(), 3u);
  double best = -1;
  std::string best_algo;
  for (const auto& t : report["ptq_trials"])
    if (t["miou"].get<double>() > best) best = t["miou"], best_algo = t["algo"];
  EXPECT_EQ(report["ptq_algo"], best_algo);
  EXPECT_DOUBLE_EQ(report["ptq"]["miou"].get<double>(), best);
  // the exported file is the best trial's model
  EXPECT_NEAR(report["int8"]["miou"].get<double>(), best, 1e-9);
}

TEST(Compress, AutoModeKeepsPtqOrContinuesWithQat) {
  const std::string keep = temp_dir() + "/auto_ptq", qat = temp_dir() + "/auto_qat";
  auto a = run_cli("compress --config " +
                   write_config("auto_ptq", keep, "Auto:\n  ptq_max_drop: 100\n") + " --threads 2");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_EQ(read_json(keep + "/compress_report.json")["strategy"], "auto-ptq");
  // No allowance: PTQ loses a little on the sample (asserted below), so QAT with the built-in
  // recipe follows.
  auto b = run_cli("compress --config " +
                   write_config("auto_qat", qat, "Auto:\n  ptq_max_drop: 0\n") + " --threads 2");
  ASSERT_EQ(b.exit_code, 0) << b.output;
  const auto report = read_json(qat + "/compress_report.json");
  ASSERT_GT(report["ptq_drop_points"].get<double>(), 0.0);
  EXPECT_EQ(report["strategy"], "auto-qat");
  ASSERT_TRUE(report.contains("qat"));
  EXPECT_GT(report["qat"]["iterations"].get<int>(), 0);
}

void expect_config_error(const std::string& name, const std::string& strategy,
                         const std::vector<std::string>& fragments) {
  const std::string out = temp_dir() + "/" + name;
  const auto r = run_cli("compress --config " + write_config(name, out, strategy));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  for (const auto& f : fragments) EXPECT_NE(r.output.find(f), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out + "/model.onnx")) << "nothing may be written on a config error";
}

TEST(Compress, ConfigErrorsNameTheProblem) {
  expect_config_error(
      "odd_nodes",
      "Distillation:\n  node: [not_a_tensor, logits, x]\nQuantAware: {}\n"
      "TrainConfig:\n  train_iter: 1\n",
      {"Distill_node_pair config wrong, the length need to be an even number", "segslim inspect"});
  expect_config_error("unknown_node",
                      "Distillation:\n  node: [logitz]\nQuantAware: {}\nTrainConfig:\n"
                      "  train_iter: 1\n",
                      {"'logitz' is not a tensor", "logits"});
  expect_config_error("unknown_key", "QuantAware:\n  quantize_op_tpyes: [conv2d]\n",
                      {"QuantAware.quantize_op_tpyes", "quantize_op_types"});
  expect_config_error("no_train", "QuantAware: {}\n", {"QuantAware needs a TrainConfig"});
  expect_config_error("bad_op",
                      "QuantAware:\n  quantize_op_types: [conv3x3]\n"
                      "TrainConfig:\n  train_iter: 1\n",
                      {"conv3x3", "conv2d"});
}

TEST(Compress, RefusesToOverwriteTheInputModel) {
  const std::string dir = temp_dir() + "/same";
  fs::create_directories(dir);
  fs::copy_file(kModel, dir + "/model.onnx", fs::copy_options::overwrite_existing);
  const auto before = file_bytes(dir + "/model.onnx");
  const auto r = run_cli("compress --config " + write_config("same", dir, kQuantPost) +
                         " --model " + dir + "/model.onnx");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("would overwrite the input model"), std::string::npos) << r.output;
  EXPECT_EQ(file_bytes(dir + "/model.onnx"), before);
}

}  // namespace
}  // namespace segslim::testing
