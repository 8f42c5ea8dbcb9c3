// The executor end to end against PyTorch: a tiny segmentation network exported by
// torch.onnx (tools/fixtures/gen_tiny_segnet.py) with PyTorch's eval output, train-mode output,
// BatchNorm running statistics and parameter gradients as the reference.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/error.h"
#include "exec/executor.h"
#include "graph/model.h"
#include "graph/tensor_proto.h"
#include "support/test_support.h"

namespace segslim::testing {
namespace {

const std::string kDir = source_dir() + "/tests/exec/fixtures/tiny_segnet/";

at::Tensor fixture(const std::string& name) {
  return tensor_from_proto(read_tensor_proto(kDir + name + ".pb"));
}

Executor tiny_executor() { return Executor(load_model(kDir + "model.onnx")); }

TEST(Executor, EvalOutputMatchesPyTorch) {
  Executor exec = tiny_executor();
  at::InferenceMode guard;
  EXPECT_TRUE(all_close(exec.forward(fixture("input")), fixture("output_eval"), 1e-4, 1e-5));
}

TEST(Executor, DynamicShapeChainFollowsTheInputSize) {
  Executor exec = tiny_executor();
  at::InferenceMode guard;
  at::Tensor y = exec.forward(fixture("input_small"));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{1, 5, 24, 40}));
  EXPECT_TRUE(all_close(y, fixture("output_small"), 1e-4, 1e-5));
}

TEST(Executor, TrainModeUsesBatchStatisticsAndUpdatesRunningStats) {
  Executor exec = tiny_executor();
  exec.set_training(true);
  at::Tensor y = exec.forward(fixture("input"));
  EXPECT_TRUE(all_close(y, fixture("output_train"), 1e-4, 1e-5));
  const auto& init = exec.initializers();
  EXPECT_TRUE(all_close(init.at("stem_bn.running_mean"), fixture("stem_bn_running_mean_after"),
                        1e-5, 1e-6));
  EXPECT_TRUE(
      all_close(init.at("stem_bn.running_var"), fixture("stem_bn_running_var_after"), 1e-5, 1e-6));
  // Buffers are state, not trainable weights.
  auto buffers = exec.named_buffers();
  EXPECT_EQ(buffers.size(), 4u);
  for (const auto& [name, t] : buffers) EXPECT_FALSE(t.requires_grad()) << name;
}

TEST(Executor, WeightGradientsMatchPyTorch) {
  Executor exec = tiny_executor();
  exec.set_training(true);
  at::Tensor y = exec.forward(fixture("input"));
  (y * fixture("loss_probe")).sum().backward();
  int checked = 0;
  for (const auto& [name, w] : exec.named_weights()) {
    const std::string file = kDir + "grad__" + name + ".pb";
    if (!std::filesystem::exists(file)) continue;
    ASSERT_TRUE(w.grad().defined()) << name;
    at::Tensor expected = tensor_from_proto(read_tensor_proto(file));
    EXPECT_TRUE(all_close(w.grad().reshape(expected.sizes()), expected, 1e-3, 1e-4)) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 16);  // every parameter PyTorch has
}

TEST(Executor, FetchesIntermediateTensorsByName) {
  auto model = load_model(kDir + "model.onnx");
  std::string first_conv_output;
  for (const auto& n : model.graph().node())
    if (n.op_type() == "Conv") {
      first_conv_output = n.output(0);
      break;
    }
  Executor exec(model);
  at::InferenceMode guard;
  TensorMap out = exec.run({{"image", fixture("input")}}, {first_conv_output});
  ASSERT_TRUE(out.count(first_conv_output));
  EXPECT_EQ(out.at(first_conv_output).sizes(), (std::vector<int64_t>{2, 12, 18, 26}));
  EXPECT_TRUE(out.count("logits"));
  try {
    exec.run({{"image", fixture("input")}}, {first_conv_output + "x"});
    FAIL() << "expected an error for an unknown tensor name";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("no tensor named"), std::string::npos) << msg;
    EXPECT_NE(msg.find(first_conv_output), std::string::npos) << msg;  // suggested
  }
}

TEST(Executor, ExportWritesCurrentWeightsBack) {
  Executor exec = tiny_executor();
  at::Tensor before;
  {
    at::InferenceMode guard;
    before = exec.forward(fixture("input"));
  }
  {
    at::NoGradGuard no_grad;
    exec.initializers().at("head.bias").add_(1.0);
  }
  Executor reloaded(exec.export_model());
  at::InferenceMode guard;
  at::Tensor after = reloaded.forward(fixture("input"));
  // bilinear resize preserves constants, so a +1 bias shifts every logit by exactly 1
  EXPECT_TRUE(all_close(after, before + 1.0, 1e-5, 1e-5));
}

TEST(Executor, ReportsMissingFeedByName) {
  Executor exec = tiny_executor();
  try {
    exec.run({{"img", fixture("input")}});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("input 'image' was not fed"), std::string::npos)
        << e.what();
  }
}

TEST(Executor, ListsEveryUnsupportedOpTypeAtOnce) {
  auto m = one_node_model("FancyOp", {"x"}, {"y"});
  auto* g = m.model.mutable_graph();
  for (const char* type : {"FancyOp", "OtherOp"}) {
    auto* n = g->add_node();
    n->set_op_type(type);
    n->set_name(std::string("second_") + type);
    n->add_input("y");
    n->add_output(std::string("z_") + type);
  }
  try {
    Executor exec(m.model);
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("2 unsupported op type(s)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("FancyOp (node FancyOp_0)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("OtherOp (node second_OtherOp)"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace segslim::testing
