#pragma once
// Small ModelProto helpers shared by the passes (internal to src/passes/).
#include <ATen/ATen.h>
#include <onnx/onnx_pb.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace segslim::passes::detail {

// Index of the initializer named `name`, or -1.
int find_initializer(const onnx::GraphProto& graph, const std::string& name);
// Node indices reading each value name (a node reading a name twice is listed once).
std::map<std::string, std::vector<int>> consumers_of(const onnx::GraphProto& graph);
std::set<std::string> graph_output_names(const onnx::GraphProto& graph);
// Every value name of the graph (inputs, initializers, node outputs) and node names.
std::set<std::string> used_names(const onnx::GraphProto& graph);
// `base`, or `base_1`, `base_2`, ... whichever is not in `taken`; the result is added to it.
std::string unique_name(const std::string& base, std::set<std::string>& taken);
// Drops initializers (and their graph-input entries) that no node reads and no output names.
void remove_unused_initializers(onnx::GraphProto* graph, const std::set<std::string>& candidates);

}  // namespace segslim::passes::detail
