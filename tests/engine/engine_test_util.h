#pragma once
// Shared by the engine tests: the engine against the LibTorch executor, FP32 (within a
// fraction of the output's scale) and INT8 QDQ (against the executor's fake-quant output).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/engine.h"
#include "passes/export_qdq.h"
#include "passes/insert_qdq.h"
#include "passes/pass_test_util.h"

namespace segslim::testing {

using engine::Engine;
using engine::EngineOptions;

inline at::Tensor run_exec(const onnx::ModelProto& m, const at::Tensor& x) {
  return run_model(m, x);
}

// A BatchNormalization's inference parameters "g", "be", "m", "v" and a PRelu slope "slope"
// ([C, 1, 1]) for C channels as initializers, drawn in that order from ATen's generator.
inline void init_bn_prelu(GraphBuilder& b, int64_t channels, double beta_scale = 1.0) {
  b.init("g", at::rand({channels}) + 0.5);
  b.init("be", at::randn({channels}) * beta_scale);
  b.init("m", at::randn({channels}) * 0.1);
  b.init("v", at::rand({channels}) + 0.5);
  b.init("slope", at::rand({channels, 1, 1}) * 0.3);
}

inline std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

// FP32: the engine equals the executor within rtol of the output's scale.
inline void expect_fp32_match(const onnx::ModelProto& m, const at::Tensor& x, double rtol = 1e-4) {
  Engine eng(m);
  const at::Tensor got = eng.run(x);
  const at::Tensor want = run_exec(m, x);
  ASSERT_EQ(got.sizes(), want.sizes()) << joined(eng.describe());
  EXPECT_TRUE(close_to_scale(got, want, rtol)) << joined(eng.describe());
  // a second run (buffers reused, cached plan) gives the same numbers
  EXPECT_TRUE(at::equal(eng.run(x), got));
}

// Activation scales from max|x| / 127 of one FP32 run, then export (int8 weights).
inline onnx::ModelProto quantize(const onnx::ModelProto& fp32, const at::Tensor& x,
                                 const passes::QuantPolicy& policy = {}) {
  passes::QdqModel q = passes::insert_qdq(fp32, policy);
  calibrate_abs_max(q, fp32, x);
  return passes::export_qdq(q.model);
}

// Engine int8 vs executor fake-quant: >= 99% within one quantization step of the output
// (step = max|y| / 127), mean error well below a step.
inline void expect_int8_match(Engine& eng, const onnx::ModelProto& q, const at::Tensor& x) {
  const at::Tensor got = eng.run(x);
  const at::Tensor want = run_exec(q, x);
  ASSERT_EQ(got.sizes(), want.sizes());
  const double step = want.abs().max().item<double>() / 127;
  const at::Tensor err = (got - want).abs();
  const double within = (err <= step * 1.001).to(at::kDouble).mean().item<double>();
  EXPECT_GE(within, 0.99) << joined(eng.describe());
  EXPECT_LT(err.mean().item<double>(), 0.1 * step) << joined(eng.describe());
}

}  // namespace segslim::testing
