#include "dist/grad_sync.h"

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "common/error.h"

namespace segslim::dist {

namespace {

// Every rank must train the same weights, or the buckets would not line up: compare counts,
// then each weight's size, dtype and rank, as element-wise maxima of (v, -v) over the ranks.
void check_same_weights(Group& group,
                        const std::vector<std::pair<std::string, at::Tensor>>& params) {
  const double n = static_cast<double>(params.size());
  const auto count = group.all_reduce_max({n, -n});
  SEGSLIM_CHECK(count[0] == n && -count[1] == n, "the ranks train different numbers of weights ",
                "(between ", -count[1], " and ", count[0], ", this rank ", params.size(),
                "): every rank must load the same model and config");
  std::vector<double> shape;
  for (const auto& [name, t] : params) {
    shape.push_back(static_cast<double>(t.numel()));
    shape.push_back(static_cast<double>(t.scalar_type()));
    shape.push_back(static_cast<double>(t.dim()));
  }
  std::vector<double> both = shape;
  for (double v : shape) both.push_back(-v);
  const auto m = group.all_reduce_max(both);
  for (size_t i = 0; i < shape.size(); ++i)
    SEGSLIM_CHECK(m[i] == shape[i] && -m[shape.size() + i] == shape[i], "weight '",
                  params[i / 3].first, "' differs between the ranks (",
                  i % 3 == 0   ? "size"
                  : i % 3 == 1 ? "dtype"
                               : "rank",
                  "): every rank must load the same model and config");
}

}  // namespace

GradientSync::GradientSync(Group& group,
                           const std::vector<std::pair<std::string, at::Tensor>>& params,
                           GradSyncOptions options)
    : group_(group), params_(params) {
  if (group.world_size() == 1) return;
  for (const auto& [name, t] : params_)
    SEGSLIM_CHECK(t.defined() && t.requires_grad() && t.is_leaf(), "weight '", name,
                  "' is not a trainable leaf tensor");
  check_same_weights(group, params_);

  // Buckets from the last-used weight to the first: gradients arrive roughly in that order.
  const auto first_cap = static_cast<int64_t>(options.first_bucket_mb * 1024 * 1024);
  const auto cap = static_cast<int64_t>(options.bucket_cap_mb * 1024 * 1024);
  bucket_of_.resize(params_.size());
  slot_in_bucket_.resize(params_.size());
  Bucket current;
  int64_t bytes = 0, numel = 0;
  auto close = [&] {
    const at::Tensor& t = params_[current.params.front()].second;
    current.flat = at::zeros({numel}, t.options().requires_grad(false));
    buckets_.push_back(std::move(current));
    current = Bucket();
    bytes = numel = 0;
  };
  for (size_t k = params_.size(); k-- > 0;) {
    const at::Tensor& t = params_[k].second;
    const int64_t size = t.numel() * static_cast<int64_t>(t.element_size());
    if (!current.params.empty()) {
      const at::Tensor& head = params_[current.params.front()].second;
      const int64_t limit = buckets_.empty() ? first_cap : cap;
      if (bytes + size > limit || t.scalar_type() != head.scalar_type() ||
          t.device() != head.device())
        close();
    }
    bucket_of_[k] = buckets_.size();
    slot_in_bucket_[k] = current.params.size();
    current.params.push_back(k);
    current.offset.push_back(numel);
    bytes += size;
    numel += t.numel();
  }
  if (!current.params.empty()) close();

  has_grad_.assign(params_.size(), false);
  for (size_t i = 0; i < params_.size(); ++i)
    hooks_.push_back(params_[i].second.register_hook(
        [this, i](const at::Tensor& grad) { on_gradient(i, grad); }));
}

GradientSync::~GradientSync() {
  for (size_t i = 0; i < hooks_.size(); ++i) params_[i].second.remove_hook(hooks_[i]);
}

std::vector<std::vector<size_t>> GradientSync::bucket_params() const {
  std::vector<std::vector<size_t>> out;
  for (const auto& b : buckets_) out.push_back(b.params);
  return out;
}

void GradientSync::on_gradient(size_t param, const at::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!active_) return;
  Bucket& b = buckets_[bucket_of_[param]];
  at::NoGradGuard no_grad;
  at::Tensor slot = b.flat.narrow(0, b.offset[slot_in_bucket_[param]], grad.numel());
  // The engine hands a leaf its summed gradient once; should it come in parts, they add up.
  if (has_grad_[param]) {
    slot.add_(grad.reshape({-1}));
    return;
  }
  slot.copy_(grad.reshape({-1}));
  has_grad_[param] = true;
  if (++b.ready == b.params.size()) launch_ready_buckets();
}

void GradientSync::launch(Bucket& bucket) {
  std::vector<at::Tensor> tensors{bucket.flat};
  bucket.work = group_.process_group()->allreduce(tensors);
}

void GradientSync::launch_ready_buckets() {
  // Strictly in bucket order: every rank must issue the same collectives in the same order,
  // whatever order its gradients happen to arrive in.
  while (next_launch_ < buckets_.size() &&
         buckets_[next_launch_].ready == buckets_[next_launch_].params.size())
    launch(buckets_[next_launch_++]);
}

void GradientSync::backward(const at::Tensor& loss) {
  if (group_.world_size() == 1) {
    loss.backward();
    return;
  }
  group_.collective("the gradient all-reduce", [&] {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      active_ = true;
      std::fill(has_grad_.begin(), has_grad_.end(), false);
      next_launch_ = 0;
      for (auto& b : buckets_) b.ready = 0, b.work.reset();
    }
    struct Deactivate {
      GradientSync& self;
      ~Deactivate() {
        std::lock_guard<std::mutex> lock(self.mutex_);
        self.active_ = false;
      }
    } deactivate{*this};
    loss.backward();

    std::lock_guard<std::mutex> lock(mutex_);
    active_ = false;
    at::NoGradGuard no_grad;
    // Weights this rank produced no gradient for count as zero; send what is left, in order.
    for (auto& b : buckets_) {
      for (size_t s = 0; s < b.params.size(); ++s) {
        const size_t p = b.params[s];
        if (!has_grad_[p]) b.flat.narrow(0, b.offset[s], params_[p].second.numel()).zero_();
      }
      b.ready = b.params.size();
    }
    launch_ready_buckets();
    // Which weights got a gradient on any rank: the others keep theirs untouched.
    std::vector<float> flags(params_.size());
    for (size_t i = 0; i < params_.size(); ++i) flags[i] = has_grad_[i] ? 1.0f : 0.0f;
    at::Tensor used = at::tensor(flags, at::TensorOptions(at::kFloat)).to(group_.device());
    {
      std::vector<at::Tensor> tensors{used};
      c10d::AllreduceOptions o;
      o.reduceOp = c10d::ReduceOp::MAX;
      group_.process_group()->allreduce(tensors, o)->wait();
    }
    const at::Tensor used_host = used.to(at::kCPU);
    const float* any = used_host.data_ptr<float>();
    const double world = static_cast<double>(group_.world_size());
    for (auto& b : buckets_) {
      b.work->wait();
      b.flat.div_(world);
      for (size_t s = 0; s < b.params.size(); ++s) {
        const size_t p = b.params[s];
        if (any[p] == 0.0f) continue;
        at::Tensor& param = params_[p].second;
        at::Tensor mean = b.flat.narrow(0, b.offset[s], param.numel()).view(param.sizes());
        if (param.grad().defined())
          param.mutable_grad().copy_(mean);
        else
          param.mutable_grad() = mean.clone();
      }
    }
  });
}

}  // namespace segslim::dist
