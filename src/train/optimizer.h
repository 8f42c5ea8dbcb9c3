#pragma once
// The optimizer of TrainConfig.optimizer_builder over a list of parameter tensors, a thin wrapper
// of torch::optim (kept out of this header: it pulls in torch/torch.h-sized includes).
//   SGD       p -= lr * (g + wd * p)
//   Momentum  v = momentum * v + (g + wd * p);  p -= lr * v        (Paddle's and torch's form)
//   Adam      g' = g + wd * p (coupled L2, as Paddle's L2Decay);
//             m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;
//             p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//   AdamW     as Adam with g' = g, plus the decoupled decay p -= lr * wd * p first.
// grad_clip: when the global L2 norm N of all gradients exceeds c, every gradient is scaled by
// c / N (Paddle's ClipGradByGlobalNorm).
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "config/compress_config.h"

namespace segslim {

class Optimizer {
 public:
  Optimizer(const OptimizerConfig& config, std::vector<at::Tensor> params);
  ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  void zero_grad();
  // Sets `lr` on all parameter groups, clips the gradients if grad_clip is set, then steps.
  void step(double lr);
  // The optimizer state (momentum buffers, Adam moments and step counts) through
  // torch::serialize, written to a temporary name and renamed. load() needs an Optimizer built
  // over the same parameters in the same order; a missing or corrupt file is an Error naming it.
  void save(const std::string& path) const;
  void load(const std::string& path);
  // The same state as bytes (data-parallel ranks receive rank 0's when resuming); `origin`
  // names where the bytes came from in errors.
  std::string state_bytes() const;
  void load_state_bytes(const std::string& bytes, const std::string& origin);

  const OptimizerConfig& config() const { return config_; }

 private:
  struct Impl;
  OptimizerConfig config_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace segslim
