// Gradient check of every differentiable op: autograd through the executor (in double
// precision) against central finite differences, on the conformance cases' inputs. Finite
// differences know nothing of ATen's backward formulas, so this is an independent reference.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "graph/model.h"
#include "graph/tensor_proto.h"
#include "ops/conformance_cases.h"
#include "support/test_support.h"

namespace segslim::testing {
namespace {

class Gradient : public ::testing::TestWithParam<ConformanceCase> {};

// Inputs placed exactly on a kink or jump (x = 0 for LeakyRelu, x = 2.0 for Floor): a
// one-sided function has no derivative there, so finite differences cannot agree.
const std::set<std::string> kInputsOnKinks = {"test_floor_example", "test_leakyrelu_example"};

const std::set<std::string> kDifferentiable = {"Conv",
                                               "ConvTranspose",
                                               "BatchNormalization",
                                               "InstanceNormalization",
                                               "LayerNormalization",
                                               "Relu",
                                               "PRelu",
                                               "LeakyRelu",
                                               "Sigmoid",
                                               "HardSigmoid",
                                               "HardSwish",
                                               "Tanh",
                                               "Clip",
                                               "Erf",
                                               "Add",
                                               "Sub",
                                               "Mul",
                                               "Div",
                                               "Pow",
                                               "Sqrt",
                                               "Reciprocal",
                                               "Exp",
                                               "Log",
                                               "Neg",
                                               "Abs",
                                               "Concat",
                                               "Split",
                                               "Slice",
                                               "Reshape",
                                               "Transpose",
                                               "Flatten",
                                               "Squeeze",
                                               "Unsqueeze",
                                               "Gather",
                                               "Expand",
                                               "Pad",
                                               "Identity",
                                               "Where",
                                               "Min",
                                               "Max",
                                               "Resize",
                                               "Upsample",
                                               "MaxPool",
                                               "AveragePool",
                                               "GlobalAveragePool",
                                               "GlobalMaxPool",
                                               "ReduceMean",
                                               "ReduceSum",
                                               "ReduceMax",
                                               "MatMul",
                                               "Gemm",
                                               "Softmax"};

bool skip_for_gradients(const ConformanceCase& c, const onnx::ModelProto& model) {
  if (refused_cases().count(c.name) || is_random_case(c.name) || kInputsOnKinks.count(c.name))
    return true;
  for (const auto& node : model.graph().node()) {
    const auto& t = node.op_type();
    // Casts change precision by definition; Dropout in training mode is random.
    if (t == "Cast" || t == "CastLike" || t == "Dropout") return true;
  }
  return false;
}

TEST_P(Gradient, MatchesFiniteDifferences) {
  const ConformanceCase& c = GetParam();
  if (refused_cases().count(c.name)) GTEST_SKIP() << "refused case";
  auto model = load_model(c.dir + "/model.onnx");
  if (skip_for_gradients(c, model)) GTEST_SKIP() << "not differentiable by definition";

  ExecutorOptions opts;
  opts.float_type = at::kDouble;
  Executor exec(model, opts);
  // Resize/Upsample's roi, scales and sizes are not differentiable by the ONNX schema (a
  // nudge to a scale can even change the output shape).
  std::set<std::string> non_differentiable;
  for (const auto& node : model.graph().node())
    if (node.op_type() == "Resize" || node.op_type() == "Upsample")
      for (int i = 1; i < node.input_size(); ++i) non_differentiable.insert(node.input(i));
  const auto inputs = real_inputs(model.graph());
  TensorMap feeds;
  std::vector<std::string> float_inputs;
  for (size_t i = 0; i < c.input_files.size() && i < inputs.size(); ++i) {
    at::Tensor t = tensor_from_proto(read_tensor_proto(c.input_files[i]));
    const bool differentiable = !non_differentiable.count(inputs[i]->name());
    if (differentiable && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble)) {
      t = t.to(at::kDouble).requires_grad_(true);
      if (t.numel() > 0) float_inputs.push_back(inputs[i]->name());
    }
    feeds[inputs[i]->name()] = t;
  }
  if (float_inputs.empty()) GTEST_SKIP() << "no floating-point input";

  // loss = sum_k <output_k, R_k> with fixed random R_k, over the floating outputs.
  std::vector<at::Tensor> probes;
  auto loss_of = [&](const TensorMap& f, bool make_probes) {
    TensorMap out = exec.run(f);
    at::Tensor loss = at::zeros({}, at::kDouble);
    size_t k = 0;
    for (const auto& name : exec.output_names()) {
      const at::Tensor& o = out.at(name);
      if (o.scalar_type() != at::kDouble) continue;
      if (make_probes) {
        at::manual_seed(17 + static_cast<int64_t>(k));
        probes.push_back(at::randn(o.sizes(), at::kDouble));
      }
      loss = loss + (o * probes.at(k)).sum();
      ++k;
    }
    return loss;
  };
  at::Tensor loss = loss_of(feeds, true);
  if (probes.empty()) GTEST_SKIP() << "no floating-point output";
  if (!loss.requires_grad()) {
    // Only legitimate when the case holds an op without a gradient (comparisons, Shape,
    // ArgMax, ...): a differentiable op that loses it (a detach, a hard-coded float32) fails.
    bool all_differentiable = true;
    for (const auto& node : model.graph().node())
      all_differentiable &= kDifferentiable.count(node.op_type()) > 0;
    ASSERT_FALSE(all_differentiable) << "a differentiable op produced no gradient path";
    GTEST_SKIP() << "no differentiable output";
  }
  loss.backward();

  const double eps = 1e-6;
  std::mt19937 rng(7);
  for (const auto& name : float_inputs) {
    at::Tensor x = feeds.at(name);
    at::Tensor grad = x.grad();
    ASSERT_TRUE(grad.defined()) << "no gradient reached input " << name;
    at::Tensor flat = x.detach().reshape({-1});
    const int64_t n = flat.numel();
    const int64_t checks = std::min<int64_t>(n, 12);
    for (int64_t j = 0; j < checks; ++j) {
      const int64_t idx = n <= 12 ? j : static_cast<int64_t>(rng() % n);
      auto perturbed = [&](double delta) {
        at::Tensor xp = flat.clone();
        xp[idx] += delta;
        TensorMap f = feeds;
        f[name] = xp.reshape(x.sizes());
        at::NoGradGuard no_grad;
        return loss_of(f, false).item<double>();
      };
      const double numeric = (perturbed(eps) - perturbed(-eps)) / (2 * eps);
      const double analytic = grad.reshape({-1})[idx].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-5 + 1e-4 * std::abs(numeric))
          << "d loss / d " << name << "[" << idx << "]";
    }
  }
}

std::string case_name(const ::testing::TestParamInfo<ConformanceCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Onnx, Gradient, ::testing::ValuesIn(conformance_cases()), case_name);

}  // namespace
}  // namespace segslim::testing
