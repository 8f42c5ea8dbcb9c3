// Small helpers shared by the engine's compile phases (plan.h).
#include "engine/plan.h"

#include "common/strings.h"

namespace segslim::engine {

const std::set<std::string>& native_ops() {
  static const std::set<std::string> s{"Conv",
                                       "ConvTranspose",
                                       "BatchNormalization",
                                       "PRelu",
                                       "Relu",
                                       "LeakyRelu",
                                       "Clip",
                                       "Sigmoid",
                                       "Tanh",
                                       "HardSwish",
                                       "HardSigmoid",
                                       "Elu",
                                       "Add",
                                       "Sub",
                                       "Mul",
                                       "Div",
                                       "Concat",
                                       "MaxPool",
                                       "AveragePool",
                                       "GlobalAveragePool",
                                       "GlobalMaxPool",
                                       "Resize",
                                       "QuantizeLinear",
                                       "DequantizeLinear",
                                       "Identity",
                                       "Dropout"};
  return s;
}

bool float_result(const onnx::NodeProto& n) {
  static const std::set<std::string> integer_or_bool{
      "ArgMax", "ArgMin", "Equal", "Less",  "Greater", "LessOrEqual", "GreaterOrEqual", "Not",
      "And",    "Or",     "Xor",   "IsNaN", "IsInf",   "NonZero",     "Size",           "TopK"};
  if (integer_or_bool.count(n.op_type())) return false;
  if (n.op_type() == "Cast") return Attrs{n}.i("to", 0) == onnx::TensorProto::FLOAT;
  return true;
}

const std::set<std::string>& int8_capable_op_types() {
  static const std::set<std::string> s{"Conv",          "ConvTranspose", "Concat",
                                       "MaxPool",       "AveragePool",   "GlobalAveragePool",
                                       "GlobalMaxPool", "MatMul"};
  return s;
}

std::string node_name(const onnx::NodeProto& n) {
  return n.name().empty() ? "<" + n.op_type() + " producing " + n.output(0) + ">" : n.name();
}

std::vector<float> to_floats(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kFloat).contiguous().reshape({-1});
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

tag plain_tag(size_t rank) {
  switch (rank) {
    case 1:
      return tag::a;
    case 2:
      return tag::ab;
    case 3:
      return tag::abc;
    case 4:
      return tag::abcd;
    case 5:
      return tag::abcde;
    default:
      throw Error(str_cat("engine: rank-", rank, " tensors are not supported"));
  }
}

}  // namespace segslim::engine
