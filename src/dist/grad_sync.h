#pragma once
// Gradient averaging over the ranks of a Group, bucketed as torch's DDP does it, with c10d's
// ProcessGroup::allreduce doing the communication (c10d::Reducer itself is out of reach: its
// header needs distributed-autograd headers that Debian's LibTorch does not ship).
//
// The weights are packed into buckets of about bucket_cap_mb (a first, smaller one starts the
// communication early), filled in the reverse of the order in which the forward pass uses them,
// which is roughly the order in which backward produces their gradients. A gradient hook copies
// each gradient into its bucket as backward produces it, and a full bucket is all-reduced at
// once, asynchronously, while backward goes on (buckets are launched strictly in order, so all
// ranks issue the same collectives in the same order). When backward returns, the sum is
// divided by the world size: every rank's loss is a mean over its shard, so the result is the
// gradient of the mean loss over the global batch.
//
// A weight that gets no gradient on some rank counts as zero there; one that gets none on any
// rank keeps its gradient as it was (a single process would not have touched it either).
// Gradients are replaced by the averaged gradients of this backward pass: zero them before it,
// as before any optimizer step.
#include <ATen/ATen.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "dist/group.h"

namespace c10d {
class Work;
}

namespace segslim::dist {

struct GradSyncOptions {
  double bucket_cap_mb = 25;   // torch's DDP default
  double first_bucket_mb = 1;  // torch's DDP default
};

class GradientSync {
 public:
  // `params` (trainable leaf tensors) in the order the forward pass first uses them. Checks,
  // collectively, that every rank has the same weights (count, shapes, dtypes). With a
  // single-process group backward() is a plain backward pass.
  GradientSync(Group& group, const std::vector<std::pair<std::string, at::Tensor>>& params,
               GradSyncOptions options = {});
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  // loss.backward(); when it returns, every weight's gradient is the mean over the ranks.
  void backward(const at::Tensor& loss);

  size_t num_buckets() const { return buckets_.size(); }
  // Indices into `params` of each bucket's weights (tests, diagnostics).
  std::vector<std::vector<size_t>> bucket_params() const;

 private:
  struct Bucket {
    std::vector<size_t> params;   // indices into params_
    std::vector<int64_t> offset;  // of each param in `flat`
    at::Tensor flat;
    size_t ready = 0;
    c10::intrusive_ptr<c10d::Work> work;
  };
  void on_gradient(size_t param, const at::Tensor& grad);
  void launch_ready_buckets();  // in bucket order, as far as they are full
  void launch(Bucket& bucket);

  Group& group_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<size_t> bucket_of_;       // param -> bucket
  std::vector<size_t> slot_in_bucket_;  // param -> index within its bucket
  std::vector<Bucket> buckets_;
  std::vector<unsigned> hooks_;

  std::mutex mutex_;  // backward may run hooks on another thread (CUDA)
  bool active_ = false;
  std::vector<bool> has_grad_;  // this rank produced a gradient in this backward pass
  size_t next_launch_ = 0;
};

}  // namespace segslim::dist
