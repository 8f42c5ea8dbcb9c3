#pragma once
// Small helpers for the extra per-family op tests (test_*_extra.cpp): attributes on one-node
// models, running them, and an autograd-vs-finite-differences check in double.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "exec/executor.h"
#include "graph/tensor_proto.h"
#include "support/test_support.h"

namespace segslim::testing {

inline void set_ints(onnx::NodeProto* node, const std::string& name,
                     const std::vector<int64_t>& v) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

inline void set_int(onnx::NodeProto* node, const std::string& name, int64_t v) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

inline void set_float(onnx::NodeProto* node, const std::string& name, float v) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}

inline void set_string(onnx::NodeProto* node, const std::string& name, const std::string& v) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

// Turns graph input `name` into an initializer holding `value`.
inline void make_initializer(onnx::ModelProto& model, const std::string& name,
                             const at::Tensor& value) {
  auto* g = model.mutable_graph();
  for (int i = 0; i < g->input_size(); ++i) {
    if (g->input(i).name() == name) {
      g->mutable_input()->DeleteSubrange(i, 1);
      break;
    }
  }
  *g->add_initializer() = tensor_to_proto(value, name);
}

// Runs the model's graph and returns its outputs in graph order.
inline std::vector<at::Tensor> run_model(const onnx::ModelProto& model, const TensorMap& feeds,
                                         ExecutorOptions options = {}) {
  Executor exec(model, options);
  TensorMap out = exec.run(feeds);
  std::vector<at::Tensor> result;
  for (const auto& name : exec.output_names()) result.push_back(out.at(name));
  return result;
}

// Runs the model (first output) in the given float type.
inline at::Tensor run_first(const onnx::ModelProto& model, const TensorMap& feeds,
                            at::ScalarType float_type = at::kDouble) {
  ExecutorOptions opts;
  opts.float_type = float_type;
  Executor exec(model, opts);
  return exec.run(feeds).at(exec.output_names().at(0));
}

// Autograd (double) against central finite differences of loss = <output0, R> for the feeds
// named in `wrt`, on up to `checks` random elements each.
inline void expect_gradients_match(const onnx::ModelProto& model, TensorMap feeds,
                                   const std::vector<std::string>& wrt, int checks = 10) {
  ExecutorOptions opts;
  opts.float_type = at::kDouble;
  Executor exec(model, opts);
  for (const auto& name : wrt) feeds[name] = feeds.at(name).to(at::kDouble).requires_grad_(true);
  at::Tensor probe;
  auto loss_of = [&](const TensorMap& f) {
    at::Tensor out = exec.run(f).at(exec.output_names().at(0));
    if (!probe.defined()) {
      at::manual_seed(99);
      probe = at::randn(out.sizes(), at::kDouble);
    }
    return (out * probe).sum();
  };
  loss_of(feeds).backward();
  std::mt19937 rng(3);
  for (const auto& name : wrt) {
    const at::Tensor x = feeds.at(name);
    ASSERT_TRUE(x.grad().defined()) << "no gradient for " << name;
    const at::Tensor flat = x.detach().reshape({-1});
    for (int j = 0; j < checks; ++j) {
      const int64_t idx = static_cast<int64_t>(rng() % flat.numel());
      auto perturbed = [&](double d) {
        at::Tensor xp = flat.clone();
        xp[idx] += d;
        TensorMap f = feeds;
        f[name] = xp.reshape(x.sizes());
        at::NoGradGuard no_grad;
        return loss_of(f).item<double>();
      };
      const double eps = 1e-6;
      const double numeric = (perturbed(eps) - perturbed(-eps)) / (2 * eps);
      const double analytic = x.grad().reshape({-1})[idx].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-5 + 1e-4 * std::abs(numeric)) << name << "[" << idx << "]";
    }
  }
}

}  // namespace segslim::testing
