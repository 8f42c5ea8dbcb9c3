#pragma once
#include <gtest/gtest.h>
// Helpers shared by the test executables.
#include <ATen/ATen.h>
#include <onnx/onnx_pb.h>

#include <string>
#include <vector>

namespace segslim::testing {

// Root of the source tree (for bundled fixtures and samples).
std::string source_dir();
// ../shared beside the checkout, or "" when it is absent (tests that need it skip).
std::string shared_dir();

// Reads a serialized TensorProto (.pb).
onnx::TensorProto read_tensor_proto(const std::string& path);

// Relative-plus-absolute closeness, reporting the worst element on failure.
::testing::AssertionResult all_close(const at::Tensor& actual, const at::Tensor& expected,
                                     double rtol, double atol);

// A one-node model for op tests: inputs/outputs typed float with unknown shape; attributes
// are added by the caller on the returned node.
struct OneNodeModel {
  onnx::ModelProto model;
  onnx::NodeProto* node;
};
OneNodeModel one_node_model(const std::string& op_type, const std::vector<std::string>& inputs,
                            const std::vector<std::string>& outputs, int64_t opset = 13);

// Writes `content` to a fresh file under the test temp dir and returns its path.
std::string write_temp_file(const std::string& name, const std::string& content);
std::string temp_dir();

}  // namespace segslim::testing
