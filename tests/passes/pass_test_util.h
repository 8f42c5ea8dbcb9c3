#pragma once
// Builders and runners shared by the pass tests.
#include <gtest/gtest.h>
#include <onnx/checker.h>

#include <map>
#include <string>
#include <vector>

#include "exec/executor.h"
#include "graph/model.h"
#include "graph/tensor_proto.h"
#include "support/qdq_test_util.h"
#include "support/test_support.h"

namespace segslim::testing {

inline std::string tiny_dir() { return source_dir() + "/tests/exec/fixtures/tiny_segnet"; }
inline onnx::ModelProto tiny_model() { return load_model(tiny_dir() + "/model.onnx"); }
inline at::Tensor tiny_input() {
  return tensor_from_proto(read_tensor_proto(tiny_dir() + "/input_small.pb"));
}

// A small hand-built opset-13 graph: float input "x" of rank 4, one output.
struct GraphBuilder {
  onnx::ModelProto model;
  GraphBuilder(int64_t opset = 13) {
    model.set_ir_version(8);
    auto* op = model.add_opset_import();
    op->set_domain("");
    op->set_version(opset);
    auto* g = model.mutable_graph();
    g->set_name("pass_test");
    auto* in = g->add_input();
    in->set_name("x");
    in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    rank4(in);
  }
  // The checker wants a shape on graph inputs and outputs: rank 4, symbolic dimensions.
  static void rank4(onnx::ValueInfoProto* v) {
    auto* shape = v->mutable_type()->mutable_tensor_type()->mutable_shape();
    for (const char* d : {"n", "c", "h", "w"}) shape->add_dim()->set_dim_param(v->name() + d);
  }
  onnx::NodeProto* node(const std::string& type, const std::string& name,
                        const std::vector<std::string>& inputs,
                        const std::vector<std::string>& outputs) {
    auto* n = model.mutable_graph()->add_node();
    n->set_op_type(type);
    n->set_name(name);
    for (const auto& i : inputs) n->add_input(i);
    for (const auto& o : outputs) n->add_output(o);
    return n;
  }
  void init(const std::string& name, const at::Tensor& t) {
    *model.mutable_graph()->add_initializer() = tensor_to_proto(t, name);
  }
  void output(const std::string& name) {
    auto* o = model.mutable_graph()->add_output();
    o->set_name(name);
    o->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    rank4(o);
  }
};

inline void set_attr_int(onnx::NodeProto* n, const std::string& name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}
inline void set_attr_float(onnx::NodeProto* n, const std::string& name, float v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}
inline void set_attr_ints(onnx::NodeProto* n, const std::string& name,
                          const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (auto x : v) a->add_ints(x);
}

inline int count_ops(const onnx::ModelProto& m, const std::string& type) {
  int n = 0;
  for (const auto& node : m.graph().node()) n += node.op_type() == type;
  return n;
}

inline ::testing::AssertionResult passes_checker(const onnx::ModelProto& m) {
  try {
    onnx::checker::check_model(m);
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << e.what();
  }
}

inline at::Tensor run_model(const onnx::ModelProto& m, const at::Tensor& x,
                            ExecutorOptions opts = {}) {
  Executor exec(m, opts);
  return exec.run({{exec.input_names().at(0), x}}).at(exec.output_names().at(0));
}

// Close within `rtol` relative to the output's scale (max |expected|).
inline ::testing::AssertionResult close_to_scale(const at::Tensor& a, const at::Tensor& e,
                                                 double rtol) {
  const double scale = e.abs().max().item<double>();
  return all_close(a, e, 0, rtol * std::max(scale, 1e-12));
}

inline const onnx::TensorProto* find_init(const onnx::ModelProto& m, const std::string& name) {
  for (const auto& i : m.graph().initializer())
    if (i.name() == name) return &i;
  return nullptr;
}

}  // namespace segslim::testing
