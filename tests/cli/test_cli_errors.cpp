// User errors reach the user as one clear message and a non-zero exit, before any work.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>

#include "graph/model.h"
#include "support/cli_runner.h"
#include "support/test_support.h"

namespace segslim::testing {
namespace {

const std::string kModel = source_dir() + "/sample/models/espnet_camvid.onnx";
const std::string kData = source_dir() + "/configs/sample_camvid.yml";

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

void expect_one_error(const CliResult& r, const std::vector<std::string>& fragments) {
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_EQ(count(r.output, "segslim: error:"), 1) << r.output;
  for (const auto& f : fragments) EXPECT_NE(r.output.find(f), std::string::npos) << r.output;
}

TEST(CliErrors, CorruptedOnnx) {
  std::ifstream in(kModel, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  bytes[bytes.size() / 3] ^= 0x5a;  // flip bits in the middle of the weights' framing
  const std::string bad = write_temp_file("corrupt.onnx", bytes.substr(0, bytes.size() - 777));
  expect_one_error(run_cli("inspect " + bad), {bad, "not a valid ONNX model"});
}

TEST(CliErrors, UnsupportedOpsAreListedAllAtOnce) {
  auto m = one_node_model("Relu", {"x"}, {"y"});
  auto* g = m.model.mutable_graph();
  // real ONNX ops (so the checker accepts the file) that segslim does not implement
  const char* types[] = {"Softplus", "Sin", "Softplus"};
  std::string prev = "y";
  int i = 0;
  for (const char* t : types) {
    auto* n = g->add_node();
    n->set_op_type(t);
    n->set_name(std::string("bad_") + std::to_string(i++));
    n->add_input(prev);
    prev = "t" + std::to_string(i);
    n->add_output(prev);
  }
  g->mutable_output(0)->set_name(prev);
  const std::string path = temp_dir() + "/unsupported.onnx";
  save_model(m.model, path);
  expect_one_error(run_cli("inspect " + path),
                   {"2 unsupported op type(s)", "Softplus (node bad_0)", "Sin (node bad_1)"});
}

TEST(CliErrors, EngineFlagsNameTheValidChoices) {
  expect_one_error(run_cli("bench --model " + kModel + " --shape 1x3x32x32 --int8-ops Conv,Gelu"),
                   {"--int8-ops", "'Gelu'", "valid: AveragePool, Concat, Conv, ConvTranspose"});
  expect_one_error(run_cli("bench --model " + kModel + " --shape 1x3x32x32 --engine gpu"),
                   {"--engine 'gpu'", "valid: auto, onednn, torch"});
}

TEST(CliErrors, ListNamingAMissingImage) {
  const std::string dir = temp_dir() + "/missing_image";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/val.txt") << "val/0016E5_07959.png valannot/0016E5_07959.png\n"
                                  << "val/does_not_exist.png valannot/0016E5_07959.png\n";
  const auto r = run_cli("eval --model " + kModel + " --data " + kData + " --data-root " +
                         source_dir() + "/sample/camvid --list " + dir + "/val.txt");
  expect_one_error(r, {"does_not_exist.png", "val.txt"});
}

TEST(CliErrors, LabelWithOutOfRangeId) {
  const std::string dir = temp_dir() + "/bad_label";
  std::filesystem::create_directories(dir + "/val");
  const std::string sample = source_dir() + "/sample/camvid/";
  std::filesystem::copy_file(sample + "val/0016E5_07959.png", dir + "/val/img.png",
                             std::filesystem::copy_options::overwrite_existing);
  cv::Mat label = cv::imread(sample + "valannot/0016E5_07959.png", cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(label.empty());
  label.at<uint8_t>(100, 200) = 42;  // valid: 0..10 and the ignore index 11
  cv::imwrite(dir + "/val/label.png", label);
  std::ofstream(dir + "/list.txt") << "val/img.png val/label.png\n";
  const auto r = run_cli("eval --model " + kModel + " --data " + kData + " --data-root " + dir +
                         " --list " + dir + "/list.txt");
  expect_one_error(r, {"label.png", "value 42"});
}

}  // namespace
}  // namespace segslim::testing
