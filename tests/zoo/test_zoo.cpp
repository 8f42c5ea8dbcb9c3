// Every reference architecture of tools/zoo runs in segslim at a small input size: exported
// here by tools/zoo/export.py (Debian's python3-torch, installed by scripts/setup.sh), then
//  - the executor's forward pass gives finite logits of the right shape;
//  - one training step (BatchNorm form, cross-entropy, SGD) lowers the loss on its batch, with
//    a finite gradient for every weight;
//  - one QAT step (Q/DQ inserted into the folded form, abs-max calibrated) gives every weight
//    a finite gradient;
//  - the oneDNN engine equals the executor in FP32, and runs the QDQ model in INT8.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "engine/engine.h"
#include "exec/executor.h"
#include "graph/model.h"
#include "passes/export_qdq.h"
#include "passes/insert_qdq.h"
#include "passes/pass_test_util.h"

namespace segslim::testing {
namespace {

namespace fs = std::filesystem;

const std::vector<int64_t> kShape{1, 3, 128, 256};  // PP-LiteSeg needs multiples of 128

// The exported pair (BN form, folded form) of zoo network `name`.
std::pair<onnx::ModelProto, onnx::ModelProto> zoo_models(const std::string& name) {
  const std::string dir = temp_dir() + "/zoo";
  const std::string bn = dir + "/" + name + ".onnx", folded = dir + "/" + name + "_folded.onnx";
  {
    fs::create_directories(dir);
    const std::string cmd = "/usr/bin/python3 " + source_dir() + "/tools/zoo/export.py " + name +
                            " " + dir + " --shape 1x3x128x256 > " + dir + "/" + name + ".log 2>&1";
    const int rc = std::system(cmd.c_str());
    EXPECT_EQ(rc, 0) << cmd;
  }
  auto models = std::make_pair(load_model(bn), load_model(folded));
  fs::remove(bn);  // OCRNet-HRNetW48 is 280 MB per form: keep the disk free
  fs::remove(folded);
  return models;
}

// Mean cross-entropy of the logits against fixed random labels.
at::Tensor loss_of(const at::Tensor& logits, const at::Tensor& labels) {
  return at::nll_loss2d(at::log_softmax(logits, 1), labels);
}

// One SGD step on one batch: every weight gets a finite gradient, and (check_descent) the
// loss goes down. Fake-quantized losses are piecewise constant and, with random weights,
// chaotic: the QAT step checks the gradients only.
void expect_training_step(Executor& exec, const at::Tensor& x, const std::string& what,
                          bool check_descent) {
  exec.set_training(true);
  const at::Tensor first = exec.forward(x);
  const at::Tensor labels = at::randint(0, first.size(1), {x.size(0), x.size(2), x.size(3)});
  at::Tensor loss = loss_of(first, labels);
  const auto weights = exec.named_weights();
  ASSERT_FALSE(weights.empty()) << what;
  for (const auto& [name, w] : weights)
    if (w.grad().defined()) w.mutable_grad().zero_();
  loss.backward();
  int with_grad = 0;
  for (const auto& [name, w] : weights) {
    if (!w.grad().defined()) continue;
    ++with_grad;
    EXPECT_TRUE(at::isfinite(w.grad()).all().item<bool>()) << what << ": " << name;
  }
  EXPECT_EQ(with_grad, static_cast<int>(weights.size())) << what << ": weights without gradient";
  // Normalised step: lr * g / |g|_max keeps every architecture's step small and comparable.
  double gmax = 0;
  for (const auto& [name, w] : weights) gmax = std::max(gmax, w.grad().abs().max().item<double>());
  {
    at::NoGradGuard no_grad;
    for (const auto& [name, w] : weights) w.sub_(w.grad() * (1e-3 / gmax));
  }
  if (!check_descent) return;
  const double after = loss_of(exec.forward(x), labels).item<double>();
  EXPECT_LT(after, loss.item<double>()) << what;
}

class Zoo : public ::testing::TestWithParam<std::string> {};

TEST_P(Zoo, RunsTrainsQuantizesAndRunsOnTheEngine) {
  const std::string name = GetParam();
  auto [bn, folded] = zoo_models(name);
  at::manual_seed(31);
  const at::Tensor x = at::randn(kShape);

  // forward (folded form)
  const at::Tensor want = run_model(folded, x);
  ASSERT_EQ(want.dim(), 4);
  EXPECT_EQ(want.size(0), 1);
  EXPECT_EQ(want.size(2), kShape[2]);
  EXPECT_EQ(want.size(3), kShape[3]);
  EXPECT_TRUE(at::isfinite(want).all().item<bool>());
  // the BN form gives the same logits in inference mode (folding is exact up to rounding)
  EXPECT_TRUE(close_to_scale(run_model(bn, x), want, 1e-3));

  // FP32 engine = executor
  engine::Engine eng(folded, {{}, name});
  EXPECT_TRUE(close_to_scale(eng.run(x), want, 1e-3));

  // training step on the BatchNorm form
  {
    Executor exec(bn);
    expect_training_step(exec, x, name + " FP32", true);
  }

  // QDQ: convs, matmuls and pooling inputs quantized, scales from this input
  passes::QuantPolicy policy;
  policy.op_types = {"Conv", "MatMul", "AveragePool", "MaxPool"};
  passes::QdqModel q = passes::insert_qdq(folded, policy);
  calibrate_abs_max(q, folded, x);
  {
    Executor student(q.model);
    expect_training_step(student, x, name + " QAT", false);
  }
  const onnx::ModelProto int8 = passes::export_qdq(q.model);
  const at::Tensor fake = run_model(int8, x);
  engine::Engine eng8(int8, {{}, name + " int8"});
  const at::Tensor got = eng8.run(x);
  EXPECT_GT(eng8.num_int8_steps(), 0);
  // With random weights and one-batch abs-max scales INT8 is far from FP32 (correlation 0.6
  // to 0.99 by architecture), and integer kernels, rounding in another order than fake-quant,
  // land on other sides of rounding boundaries that depth amplifies (tests/engine checks each
  // kernel exactly on well-conditioned inputs). Here: finite, and still clearly the same
  // function (a wrong kernel or fusion gives a correlation near 0).
  auto corr = [](const at::Tensor& g, const at::Tensor& f) {
    const at::Tensor a = g.flatten() - g.mean(), b = f.flatten() - f.mean();
    return (a * b).sum().item<double>() / (a.norm() * b.norm()).item<double>();
  };
  EXPECT_TRUE(at::isfinite(got).all().item<bool>()) << name;
  EXPECT_GT(corr(got, fake), 0.6) << name;
  EXPECT_GT(corr(got, want), 0.4) << name;
}

INSTANTIATE_TEST_SUITE_P(Architectures, Zoo,
                         ::testing::Values("pp_liteseg_t", "pp_liteseg_b", "segformer_b0",
                                           "pp_mobileseg_base", "ocrnet_hrnetw48"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace segslim::testing
