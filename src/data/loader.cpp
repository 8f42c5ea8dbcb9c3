#include "data/loader.h"

#include <algorithm>
#include <random>

#include "common/error.h"

namespace segslim {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::string shape_str(const at::Tensor& t) {
  std::string s;
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? "x" : "") + std::to_string(t.size(i));
  return s;
}

}  // namespace

DataLoader::DataLoader(const SegDataset& dataset, LoaderOptions options)
    : dataset_(dataset), options_(options) {
  SEGSLIM_CHECK(options_.batch_size > 0, "batch size must be positive, got ", options_.batch_size,
                ".");
  SEGSLIM_CHECK(options_.num_workers >= 0, "num_workers must be >= 0.");
  dist::check_shard(options_.shard);
  // Without drop_last a last partial global batch would leave some ranks an empty batch.
  SEGSLIM_CHECK(options_.shard.world_size == 1 || options_.drop_last, "a data loader sharded over ",
                options_.shard.world_size,
                " processes needs drop_last (every rank must get a full batch)");
  if (options_.prefetch_batches <= 0)
    options_.prefetch_batches = 2 * std::max(options_.num_workers, 1);
  set_epoch_at_sample(0, 0);
}

DataLoader::~DataLoader() { stop_workers(); }

size_t DataLoader::num_batches() const {
  return dist::global_batches(0, static_cast<size_t>(options_.batch_size),
                              options_.shard.world_size, dataset_.size(), options_.drop_last);
}

std::vector<size_t> DataLoader::epoch_order(int epoch) const {
  std::vector<size_t> order(dataset_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (!options_.shuffle) return order;
  // Own Fisher-Yates (std::shuffle's use of the engine is implementation-defined).
  std::mt19937_64 rng(splitmix64(splitmix64(options_.seed) ^ static_cast<uint64_t>(epoch)));
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  return order;
}

uint64_t DataLoader::sample_seed(int epoch, size_t index) const {
  return splitmix64(splitmix64(splitmix64(options_.seed) ^ static_cast<uint64_t>(epoch)) ^
                    static_cast<uint64_t>(index));
}

void DataLoader::set_epoch(int epoch, size_t first_batch) {
  const size_t global_batch =
      static_cast<size_t>(options_.batch_size) * static_cast<size_t>(options_.shard.world_size);
  set_epoch_at_sample(epoch, first_batch * global_batch);
}

void DataLoader::set_epoch_at_sample(int epoch, size_t first_sample) {
  stop_workers();
  epoch_ = epoch;
  order_ = epoch_order(epoch);
  first_sample_ = first_sample;
  num_batches_ = dist::global_batches(first_sample, static_cast<size_t>(options_.batch_size),
                                      options_.shard.world_size, order_.size(), options_.drop_last);
  next_batch_ = 0;
  next_to_claim_ = 0;
  ready_.clear();
  errors_.clear();
}

Batch DataLoader::load_batch(size_t batch) const {
  const size_t bs = static_cast<size_t>(options_.batch_size);
  const size_t global_batch = bs * static_cast<size_t>(options_.shard.world_size);
  const dist::Positions pos = dist::shard_positions(first_sample_ + batch * global_batch, bs,
                                                    options_.shard, order_.size());
  std::vector<at::Tensor> images, labels;
  Batch out;
  for (size_t k = pos.begin; k < pos.end; ++k) {
    const size_t index = order_[k];
    const uint64_t seed = sample_seed(epoch_, index);
    std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
    std::mt19937 rng(seq);
    Sample s = dataset_.load(index, rng);
    if (!images.empty() && s.image.sizes() != images.front().sizes())
      throw Error(str_cat("images of different sizes in one batch: '", out.image_paths.front(),
                          "' is ", shape_str(images.front()), " (CxHxW) but '", s.image_path,
                          "' is ", shape_str(s.image),
                          " after the transforms. Use --batch 1 or add a Resize transform "
                          "so that all images share one size."));
    images.push_back(s.image);
    labels.push_back(s.label);
    out.image_paths.push_back(s.image_path);
    out.indices.push_back(index);
  }
  out.images = at::stack(images);
  out.labels = at::stack(labels);
  return out;
}

void DataLoader::start_workers() {
  stop_ = false;
  for (int i = 0; i < options_.num_workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

void DataLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  stop_ = false;
}

void DataLoader::worker_loop() {
  const size_t total = num_batches_;
  const size_t ahead = static_cast<size_t>(options_.prefetch_batches);
  for (;;) {
    size_t batch;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      // Bounded prefetch: claim a batch only while fewer than `ahead` wait to be consumed.
      cv_.wait(lock, [&] {
        return stop_ || next_to_claim_ >= total || next_to_claim_ < next_batch_ + ahead;
      });
      if (stop_ || next_to_claim_ >= total) return;
      batch = next_to_claim_++;
    }
    std::optional<Batch> result;
    std::exception_ptr error;
    try {
      result = load_batch(batch);
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (error)
        errors_[batch] = error;
      else
        ready_[batch] = std::move(*result);
    }
    cv_.notify_all();
  }
}

std::optional<Batch> DataLoader::next() {
  if (next_batch_ >= num_batches_) return std::nullopt;
  if (options_.num_workers == 0) return load_batch(next_batch_++);
  if (workers_.empty()) start_workers();
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return ready_.count(next_batch_) || errors_.count(next_batch_); });
  const size_t batch = next_batch_++;
  auto err = errors_.find(batch);
  if (err != errors_.end()) {
    std::exception_ptr e = err->second;
    errors_.erase(err);
    lock.unlock();
    cv_.notify_all();
    std::rethrow_exception(e);
  }
  Batch out = std::move(ready_.at(batch));
  ready_.erase(batch);
  lock.unlock();
  cv_.notify_all();
  return out;
}

}  // namespace segslim
