#pragma once
// Batches a SegDataset with worker threads. Output is deterministic: batches come out in order,
// the per-epoch shuffle depends only on (seed, epoch), and every sample's augmentation RNG is
// seeded from (seed, epoch, sample index), so the thread count and scheduling never change what
// a batch contains.
//
// Data-parallel training: with options.shard = {rank, world_size}, batch_size is per process
// and each batch is this rank's part of a global batch of batch_size * world_size samples
// (dist/shard.h), so the ranks together see what one process with the global batch sees.
#include <ATen/ATen.h>

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "dist/shard.h"

namespace segslim {

struct LoaderOptions {
  int batch_size = 1;
  bool shuffle = false;
  bool drop_last = false;
  int num_workers = 2;  // 0: load in the calling thread
  uint64_t seed = 0;
  int prefetch_batches = 0;  // batches loaded ahead; 0 = 2 * max(num_workers, 1)
  dist::Shard shard;         // this process's shard; more than one needs drop_last
};

struct Batch {
  at::Tensor images;  // float32 [N, 3, H, W]
  at::Tensor labels;  // int64 [N, H, W]
  std::vector<std::string> image_paths;
  std::vector<size_t> indices;  // dataset indices of the samples
};

class DataLoader {
 public:
  // The dataset must outlive the loader. Starts at epoch 0.
  DataLoader(const SegDataset& dataset, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Restarts iteration for `epoch` (new shuffle order and augmentation seeds).
  // Starts epoch `epoch` (its own shuffle) at batch `first_batch`: a resumed run skips the
  // batches it already trained on without loading them.
  void set_epoch(int epoch, size_t first_batch = 0);
  // Starts epoch `epoch` at position `first_sample` of its order (global batches then start
  // there): resuming a run that used another global batch size lands on the same sample.
  void set_epoch_at_sample(int epoch, size_t first_sample);
  int epoch() const { return epoch_; }
  // (Global) batches of a whole epoch.
  size_t num_batches() const;

  // The next batch of the epoch, or nullopt at its end. A worker's exception (bad file, mixed
  // image sizes) is rethrown here, in the caller's thread, when its batch is reached.
  std::optional<Batch> next();

  // The dataset order of `epoch` (identity without shuffle).
  std::vector<size_t> epoch_order(int epoch) const;
  // Seed of the augmentation RNG of dataset sample `index` in `epoch`.
  uint64_t sample_seed(int epoch, size_t index) const;

 private:
  Batch load_batch(size_t batch) const;
  void start_workers();
  void stop_workers();
  void worker_loop();

  const SegDataset& dataset_;
  LoaderOptions options_;
  int epoch_ = 0;
  std::vector<size_t> order_;
  size_t first_sample_ = 0;  // where batch 0 of this pass over the epoch starts
  size_t num_batches_ = 0;   // batches from first_sample_ to the end of the epoch
  size_t next_batch_ = 0;    // next batch next() returns

  // Worker state (guarded by mutex_).
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
  size_t next_to_claim_ = 0;
  std::map<size_t, Batch> ready_;
  std::map<size_t, std::exception_ptr> errors_;
};

}  // namespace segslim
