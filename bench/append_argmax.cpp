// Appends ArgMax over the classes to a segmentation model whose first output is its scores
// [N, K, H, W]: the form PaddleSeg exports for deployment (tools/export.py --output_op argmax,
// its default), whose output is the class-id map [N, 1, H, W] (int64). The original's benchmark
// timed such models; bench/benchmark_table.sh does the same.
//   bench_append_argmax IN.onnx OUT.onnx
#include <iostream>

#include "common/error.h"
#include "graph/model.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " IN.onnx OUT.onnx\n";
    return 2;
  }
  try {
    onnx::ModelProto m = segslim::load_model(argv[1]);
    auto* g = m.mutable_graph();
    SEGSLIM_CHECK(g->output_size() >= 1, argv[1], ": the model has no output");
    for (const auto& n : g->node())
      SEGSLIM_CHECK(n.op_type() != "ArgMax", argv[1], ": ends in ArgMax already (node ", n.name(),
                    ")");
    const std::string scores = g->output(0).name();
    auto* am = g->add_node();
    am->set_op_type("ArgMax");
    am->set_name("argmax_classes");
    am->add_input(scores);
    am->add_output("labels");
    for (const auto& [name, value] : {std::pair{"axis", 1}, std::pair{"keepdims", 1}}) {
      auto* a = am->add_attribute();
      a->set_name(name);
      a->set_type(onnx::AttributeProto::INT);
      a->set_i(value);
    }
    // the output: int64, the scores' shape with one channel
    onnx::ValueInfoProto out = g->output(0);
    out.set_name("labels");
    auto* t = out.mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::INT64);
    if (t->has_shape() && t->shape().dim_size() == 4)
      t->mutable_shape()->mutable_dim(1)->set_dim_value(1);
    g->clear_output();
    *g->add_output() = out;
    segslim::save_model(m, argv[2]);
    std::cout << "wrote " << argv[2] << " (" << scores << " -> ArgMax axis 1 -> labels)\n";
  } catch (const segslim::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
