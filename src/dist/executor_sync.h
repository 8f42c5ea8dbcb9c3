#pragma once
// Keeping the executors of a data-parallel job identical on every rank.
#include <string>
#include <utility>
#include <vector>

#include "dist/group.h"
#include "exec/executor.h"

namespace segslim::dist {

// Every initializer of `executor` (weights, BatchNorm statistics, quantization scales and zero
// points) gets rank `root`'s value: the start of training, and resuming from rank 0's
// checkpoint.
void broadcast_initializers(Group& group, Executor& executor, int root = 0);

// The running mean and variance initializers of the graph's BatchNormalization nodes.
std::vector<std::string> batchnorm_statistics(const Executor& executor);

// Each rank's BatchNorm running statistics become their mean over the ranks, so that every
// rank holds the same ones. The running mean is linear in the batch mean, and equal shards'
// means average to the mean of the whole batch, so the averaged running mean is the one a
// single process would keep; averaging the running variance leaves out the spread between the
// shards' means (torch's DDP without SyncBatchNorm behaves the same: each rank normalises with
// its own batch's statistics).
void average_batchnorm_statistics(Group& group, Executor& executor);

// The trainable weights in the order the graph first reads them (backward produces their
// gradients roughly in the reverse order: dist/grad_sync.h buckets them that way).
std::vector<std::pair<std::string, at::Tensor>> weights_in_graph_order(const Executor& executor);

}  // namespace segslim::dist
