#include "dist/shard.h"

#include <algorithm>

#include "common/error.h"

namespace segslim::dist {

void check_shard(const Shard& shard) {
  SEGSLIM_CHECK(shard.world_size >= 1 && shard.rank >= 0 && shard.rank < shard.world_size,
                "shard rank ", shard.rank, " is not in [0, ", shard.world_size, ")");
}

Positions shard_positions(size_t start, size_t batch_size, const Shard& shard, size_t epoch_size) {
  check_shard(shard);
  const size_t begin = start + static_cast<size_t>(shard.rank) * batch_size;
  Positions p;
  p.begin = std::min(begin, epoch_size);
  p.end = std::min(begin + batch_size, epoch_size);
  return p;
}

size_t global_batches(size_t start, size_t batch_size, int world_size, size_t epoch_size,
                      bool drop_last) {
  SEGSLIM_CHECK(batch_size > 0 && world_size >= 1, "global batch of ", batch_size, " x ",
                world_size, " is empty");
  if (start >= epoch_size) return 0;
  const size_t global = batch_size * static_cast<size_t>(world_size);
  const size_t left = epoch_size - start;
  return drop_last ? left / global : (left + global - 1) / global;
}

}  // namespace segslim::dist
