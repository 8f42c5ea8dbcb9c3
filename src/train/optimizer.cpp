#include "train/optimizer.h"

#include <torch/optim.h>
#include <torch/serialize.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "common/error.h"
#include "common/files.h"

namespace segslim {

namespace fs = std::filesystem;

struct Optimizer::Impl {
  std::unique_ptr<torch::optim::Optimizer> opt;
};

Optimizer::Optimizer(const OptimizerConfig& config, std::vector<at::Tensor> params)
    : config_(config), params_(std::move(params)), impl_(std::make_unique<Impl>()) {
  const double lr = 0.0;  // set by every step()
  const double wd = config_.weight_decay;
  if (config_.type == "SGD") {
    impl_->opt = std::make_unique<torch::optim::SGD>(
        params_, torch::optim::SGDOptions(lr).momentum(0).weight_decay(wd));
  } else if (config_.type == "Momentum") {
    // dampening 0 and a buffer that starts at the first gradient = Paddle's velocity from 0.
    impl_->opt = std::make_unique<torch::optim::SGD>(
        params_, torch::optim::SGDOptions(lr).momentum(config_.momentum).weight_decay(wd));
  } else if (config_.type == "Adam") {
    impl_->opt =
        std::make_unique<torch::optim::Adam>(params_, torch::optim::AdamOptions(lr)
                                                          .betas({config_.beta1, config_.beta2})
                                                          .eps(config_.epsilon)
                                                          .weight_decay(wd));
  } else if (config_.type == "AdamW") {
    impl_->opt =
        std::make_unique<torch::optim::AdamW>(params_, torch::optim::AdamWOptions(lr)
                                                           .betas({config_.beta1, config_.beta2})
                                                           .eps(config_.epsilon)
                                                           .weight_decay(wd));
  } else {
    throw Error(
        str_cat("unknown optimizer type '", config_.type, "'. Valid: SGD, Momentum, Adam, AdamW."));
  }
}

Optimizer::~Optimizer() = default;

void Optimizer::zero_grad() { impl_->opt->zero_grad(); }

void Optimizer::step(double lr) {
  for (auto& group : impl_->opt->param_groups()) group.options().set_lr(lr);
  if (config_.grad_clip) {
    torch::NoGradGuard no_grad;
    // Global norm over every gradient, accumulated in double for stability.
    double sq = 0;
    for (const auto& p : params_)
      if (p.grad().defined()) sq += p.grad().to(at::kDouble).pow(2).sum().item<double>();
    const double norm = std::sqrt(sq), clip = *config_.grad_clip;
    if (norm > clip)
      for (auto& p : params_)
        if (p.grad().defined()) p.mutable_grad().mul_(clip / norm);
  }
  impl_->opt->step();
}

void Optimizer::save(const std::string& path) const {
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  TempFileScope scope;
  try {
    torch::serialize::OutputArchive archive;
    impl_->opt->save(archive);
    archive.save_to(tmp);
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw Error(str_cat("cannot write optimizer state '", tmp, "': ", e.what()));
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error(str_cat("cannot rename ", tmp, " to ", path, ": ", ec.message()));
  }
}

void Optimizer::load(const std::string& path) {
  SEGSLIM_CHECK(fs::is_regular_file(path), "optimizer state '", path, "' does not exist.");
  load_state_bytes(read_file(path, "optimizer state"), path);
}

std::string Optimizer::state_bytes() const {
  std::string bytes;
  torch::serialize::OutputArchive archive;
  impl_->opt->save(archive);
  archive.save_to([&](const void* data, size_t size) {
    bytes.append(static_cast<const char*>(data), size);
    return size;
  });
  return bytes;
}

void Optimizer::load_state_bytes(const std::string& bytes, const std::string& origin) {
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(bytes.data(), bytes.size());
    impl_->opt->load(archive);
  } catch (const std::exception& e) {
    // c10::Error messages carry a C++ backtrace; the first line says what went wrong.
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    throw Error(str_cat("optimizer state '", origin,
                        "' is corrupt or does not match the parameters (", what,
                        "); delete it to restart the optimizer from scratch."));
  }
}

}  // namespace segslim
