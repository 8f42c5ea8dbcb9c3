// Forward check of every op against the ONNX conformance cases (numpy reference outputs).
#include <gtest/gtest.h>

#include "common/error.h"
#include "graph/model.h"
#include "graph/tensor_proto.h"
#include "ops/conformance_cases.h"
#include "support/test_support.h"

namespace segslim::testing {
namespace {

class Conformance : public ::testing::TestWithParam<ConformanceCase> {};

TensorMap read_feeds(const ConformanceCase& c, const onnx::ModelProto& model) {
  TensorMap feeds;
  const auto inputs = real_inputs(model.graph());
  for (size_t i = 0; i < c.input_files.size() && i < inputs.size(); ++i)
    feeds[inputs[i]->name()] = read_case_tensor(c.input_files[i], *inputs[i]);
  return feeds;
}

TEST_P(Conformance, MatchesReferenceOutputs) {
  const ConformanceCase& c = GetParam();
  const auto& refused = refused_cases();
  if (refused.count(c.name)) {
    // Refused cases must fail loudly: at load, at compile or at run.
    EXPECT_THROW(
        {
          auto model = load_model(c.dir + "/model.onnx");
          Executor exec(model);
          exec.run(read_feeds(c, model));
        },
        Error)
        << c.name << " should be refused (" << refused.at(c.name) << ")";
    return;
  }
  auto model = load_model(c.dir + "/model.onnx");
  Executor exec(model);
  TensorMap out = exec.run(read_feeds(c, model));
  const auto names = exec.output_names();
  ASSERT_EQ(names.size(), c.output_files.size());
  for (size_t i = 0; i < names.size(); ++i) {
    at::Tensor expected =
        read_case_tensor(c.output_files[i], model.graph().output(static_cast<int>(i)));
    const at::Tensor& actual = out.at(names[i]);
    ASSERT_EQ(actual.scalar_type(), expected.scalar_type()) << "output " << names[i];
    if (is_random_case(c.name)) {
      EXPECT_EQ(actual.sizes(), expected.sizes()) << "output " << names[i];
      continue;
    }
    const bool low_precision =
        expected.scalar_type() == at::kHalf || expected.scalar_type() == at::kBFloat16;
    EXPECT_TRUE(
        all_close(actual, expected, low_precision ? 1e-2 : 1e-4, low_precision ? 1e-2 : 1e-5))
        << "output " << names[i];
  }
}

std::string case_name(const ::testing::TestParamInfo<ConformanceCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Onnx, Conformance, ::testing::ValuesIn(conformance_cases()), case_name);

}  // namespace
}  // namespace segslim::testing
