#include "dist/executor_sync.h"

#include <algorithm>
#include <map>
#include <set>

namespace segslim::dist {

void broadcast_initializers(Group& group, Executor& executor, int root) {
  if (group.world_size() == 1) return;
  // Sorted by name: every rank must list the same tensors in the same order.
  std::map<std::string, at::Tensor> sorted(executor.initializers().begin(),
                                           executor.initializers().end());
  std::vector<at::Tensor> tensors;
  for (const auto& [name, t] : sorted) tensors.push_back(t);
  group.broadcast_(tensors, root);
}

std::vector<std::string> batchnorm_statistics(const Executor& executor) {
  std::set<std::string> names;
  for (const auto& node : executor.model().graph().node()) {
    if (node.op_type() != "BatchNormalization") continue;
    for (int i : {3, 4})
      if (node.input_size() > i && executor.initializers().count(node.input(i)))
        names.insert(node.input(i));
  }
  return {names.begin(), names.end()};
}

void average_batchnorm_statistics(Group& group, Executor& executor) {
  if (group.world_size() == 1) return;
  std::vector<at::Tensor> stats;
  for (const auto& name : batchnorm_statistics(executor))
    stats.push_back(executor.initializers().at(name));
  group.average_(stats);
}

std::vector<std::pair<std::string, at::Tensor>> weights_in_graph_order(const Executor& executor) {
  std::map<std::string, size_t> first_use;
  const auto& graph = executor.model().graph();
  for (int i = 0; i < graph.node_size(); ++i)
    for (const auto& input : graph.node(i).input()) first_use.emplace(input, i);
  auto weights = executor.named_weights();
  std::stable_sort(weights.begin(), weights.end(), [&](const auto& a, const auto& b) {
    auto use = [&](const std::string& n) {
      auto it = first_use.find(n);
      return it == first_use.end() ? static_cast<size_t>(graph.node_size()) : it->second;
    };
    return use(a.first) < use(b.first);
  });
  return weights;
}

}  // namespace segslim::dist
