#include "passes/graph_util.h"

namespace segslim::passes::detail {

int find_initializer(const onnx::GraphProto& graph, const std::string& name) {
  for (int i = 0; i < graph.initializer_size(); ++i)
    if (graph.initializer(i).name() == name) return i;
  return -1;
}

std::map<std::string, std::vector<int>> consumers_of(const onnx::GraphProto& graph) {
  std::map<std::string, std::vector<int>> out;
  for (int i = 0; i < graph.node_size(); ++i) {
    std::set<std::string> seen;
    for (const auto& name : graph.node(i).input())
      if (!name.empty() && seen.insert(name).second) out[name].push_back(i);
  }
  return out;
}

std::set<std::string> graph_output_names(const onnx::GraphProto& graph) {
  std::set<std::string> out;
  for (const auto& o : graph.output()) out.insert(o.name());
  return out;
}

std::set<std::string> used_names(const onnx::GraphProto& graph) {
  std::set<std::string> out;
  for (const auto& v : graph.input()) out.insert(v.name());
  for (const auto& v : graph.initializer()) out.insert(v.name());
  for (const auto& n : graph.node()) {
    out.insert(n.name());
    for (const auto& o : n.output()) out.insert(o);
  }
  return out;
}

std::string unique_name(const std::string& base, std::set<std::string>& taken) {
  std::string name = base;
  for (int k = 1; taken.count(name); ++k) name = base + "_" + std::to_string(k);
  taken.insert(name);
  return name;
}

void remove_unused_initializers(onnx::GraphProto* graph, const std::set<std::string>& candidates) {
  std::set<std::string> read = graph_output_names(*graph);
  for (const auto& n : graph->node())
    for (const auto& i : n.input()) read.insert(i);
  std::set<std::string> removed;
  auto* inits = graph->mutable_initializer();
  for (int i = inits->size() - 1; i >= 0; --i) {
    const std::string& name = inits->Get(i).name();
    if (candidates.count(name) && !read.count(name)) {
      removed.insert(name);
      inits->DeleteSubrange(i, 1);
    }
  }
  auto* inputs = graph->mutable_input();
  for (int i = inputs->size() - 1; i >= 0; --i)
    if (removed.count(inputs->Get(i).name())) inputs->DeleteSubrange(i, 1);
}

}  // namespace segslim::passes::detail
