#pragma once
// Activation observers under data parallelism. Each rank sees only its shard of the batch; the
// observers must end up where one process that saw the whole batch would, or the ranks would
// quantize with different scales. So during the forward pass each observation is recorded as
// its batch summary (quant/observer.h), and after it the element-wise maximum over the ranks of
// every summary is folded into its observer: one collective per step, whatever the number of
// quantized activations, and the exact single-process result (max is exact in any order).
#include <ATen/ATen.h>

#include <utility>
#include <vector>

#include "dist/group.h"
#include "quant/observer.h"

namespace segslim::dist {

class ObserverSync {
 public:
  // Records `observer`'s summary of `x`, this rank's part of the batch.
  void record(Observer& observer, const at::Tensor& x);
  // Folds the maximum over the ranks of every recorded summary into its observer, in recording
  // order, and forgets them. Every rank must have recorded the same observers in the same order
  // (the same graph: the forward pass visits the nodes in one fixed order).
  void fold(Group& group);
  // Forgets the recorded summaries without folding them.
  void clear() { records_.clear(); }
  size_t pending() const { return records_.size(); }

 private:
  std::vector<std::pair<Observer*, std::vector<double>>> records_;
};

}  // namespace segslim::dist
