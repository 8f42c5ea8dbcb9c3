#pragma once
// Data-parallel sharding of an epoch (torch's DistributedSampler, without padding).
//
// Every rank computes the same epoch order (it depends only on the shared seed and the epoch)
// and cuts it into global batches of batch_size * world_size consecutive samples; rank r takes
// the r-th run of batch_size samples of each global batch. The union of the ranks' batch b is
// therefore exactly the batch b that one process with batch_size * world_size would load, and
// each sample keeps its augmentation seed (seed, epoch, sample index): N processes with batch B
// train like one process with batch N * B.
//
// Positions count samples of the epoch order, not batches, so a run can stop after global
// batches of one size and resume with another (a different number of processes).
#include <cstddef>

namespace segslim::dist {

struct Shard {
  int rank = 0;
  int world_size = 1;
};

// Positions [begin, end) of the epoch order.
struct Positions {
  size_t begin = 0, end = 0;
  size_t size() const { return end - begin; }
};

// `shard`'s part of the global batch that starts at position `start`, clipped to the epoch's
// `epoch_size` samples (so it may be short, or empty, in a last partial global batch).
Positions shard_positions(size_t start, size_t batch_size, const Shard& shard, size_t epoch_size);

// How many global batches of batch_size * world_size fit into the epoch from position `start`:
// whole ones only with drop_last, otherwise a last partial one counts too.
size_t global_batches(size_t start, size_t batch_size, int world_size, size_t epoch_size,
                      bool drop_last);

// Throws segslim::Error unless 0 <= rank < world_size.
void check_shard(const Shard& shard);

}  // namespace segslim::dist
