#include "support/qdq_test_util.h"

#include "exec/executor.h"
#include "graph/tensor_proto.h"

namespace segslim::testing {

void calibrate_abs_max(passes::QdqModel& q, const onnx::ModelProto& fp32, const at::Tensor& x) {
  Executor exec(fp32);
  std::vector<std::string> names;
  for (const auto& s : q.activations) names.push_back(s.tensor);
  at::InferenceMode guard;
  const auto values = exec.run({{exec.input_names().at(0), x}}, names);
  for (const auto& s : q.activations) {
    const at::Tensor scale = (values.at(s.tensor).abs().max() / 127).to(at::kFloat);
    for (auto& init : *q.model.mutable_graph()->mutable_initializer())
      if (init.name() == s.scale) init = tensor_to_proto(scale, s.scale);
  }
}

}  // namespace segslim::testing
