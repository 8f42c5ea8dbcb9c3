#pragma once
// Small helpers for the per-family extra op tests (one-node models run on the CPU).
#include <string>

#include "exec/executor.h"
#include "graph/tensor_proto.h"
#include "support/test_support.h"

namespace segslim::testing {

inline onnx::AttributeProto* add_ints(onnx::NodeProto* node, const std::string& name,
                                      const std::vector<int64_t>& values) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a->add_ints(v);
  return a;
}

inline onnx::AttributeProto* add_int(onnx::NodeProto* node, const std::string& name,
                                     int64_t value) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
  return a;
}

inline onnx::AttributeProto* add_float(onnx::NodeProto* node, const std::string& name,
                                       float value) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(value);
  return a;
}

inline onnx::AttributeProto* add_string(onnx::NodeProto* node, const std::string& name,
                                        const std::string& value) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(value);
  return a;
}

inline void add_initializer(onnx::ModelProto& model, const std::string& name,
                            const at::Tensor& value) {
  *model.mutable_graph()->add_initializer() = tensor_to_proto(value, name);
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

}  // namespace segslim::testing
