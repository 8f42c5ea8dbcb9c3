#include "passes/weight_scales.h"

#include "common/error.h"

namespace segslim::passes {

at::Tensor abs_max_scale(const at::Tensor& weight, int axis) {
  at::NoGradGuard no_grad;
  const at::Tensor w = weight.detach().abs();
  at::Tensor m;
  if (axis < 0) {
    m = w.max();
  } else {
    SEGSLIM_CHECK(axis < w.dim(), "weight scale axis ", axis, " is out of range for a rank-",
                  w.dim(), " weight");
    m = w.transpose(0, axis).reshape({w.size(axis), -1}).amax(1);
  }
  // 127, not 128: symmetric int8 uses [-127, 127] so +W and -W quantize alike.
  return (m / 127.0).clamp_min(kMinWeightScale);
}

void refresh_weight_scales(segslim::Executor& exec, const std::vector<QdqSite>& weights) {
  at::NoGradGuard no_grad;
  const auto& inits = exec.initializers();
  for (const auto& site : weights) {
    auto w = inits.find(site.tensor);
    auto s = inits.find(site.scale);
    SEGSLIM_CHECK(w != inits.end() && s != inits.end(), "refresh_weight_scales: the model has no ",
                  w == inits.end() ? "weight" : "scale", " initializer '",
                  w == inits.end() ? site.tensor : site.scale, "'");
    at::Tensor scale = s->second;
    const at::Tensor fresh = abs_max_scale(w->second, site.axis);
    SEGSLIM_CHECK(fresh.numel() == scale.numel(), "refresh_weight_scales: scale '", site.scale,
                  "' has ", scale.numel(), " values but weight '", site.tensor, "' has ",
                  fresh.numel(), " channels along axis ", site.axis);
    scale.copy_(fresh.reshape(scale.sizes()));
  }
}

}  // namespace segslim::passes
