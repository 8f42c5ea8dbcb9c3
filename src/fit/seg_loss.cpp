#include "fit/seg_loss.h"

#include "common/error.h"
#include "common/strings.h"
#include "train/distill_loss.h"

namespace segslim {

namespace {

at::Tensor squeeze_labels(const at::Tensor& labels) {
  return labels.dim() == 4 && labels.size(1) == 1 ? labels.squeeze(1) : labels;
}

}  // namespace

at::Tensor ohem_kept_mask(const at::Tensor& logits, const at::Tensor& labels, int64_t ignore_index,
                          double thresh, int64_t min_kept) {
  at::NoGradGuard no_grad;
  const at::Tensor y = squeeze_labels(labels).to(logits.device(), at::kLong);
  SEGSLIM_CHECK(logits.dim() == 4 && y.dim() == 3 && y.size(0) == logits.size(0) &&
                    y.size(1) == logits.size(2) && y.size(2) == logits.size(3),
                "OHEM loss: logits of shape ", logits.sizes(), " do not match labels of shape ",
                labels.sizes(), " (expected [N, C, H, W] and [N, H, W])");
  const int64_t num_classes = logits.size(1);
  const at::Tensor valid = y != ignore_index;
  const at::Tensor bad = valid & ((y < 0) | (y >= num_classes));
  if (bad.any().item<bool>())
    throw Error(str_cat("OHEM loss: label ", y.masked_select(bad)[0].item<int64_t>(),
                        " is neither a class id in [0, ", num_classes, ") nor the ignore index ",
                        ignore_index));
  const int64_t num_valid = valid.sum().item<int64_t>();
  if (num_valid == 0 || min_kept >= num_valid) return valid;
  const at::Tensor prob = at::softmax(logits.detach(), 1);
  // The probability of each pixel's true class; ignored pixels above every real one (> 1).
  at::Tensor p = prob.gather(1, y.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1);
  p = p.masked_fill(~valid, 2.0);
  double threshold = thresh;
  if (min_kept > 0) {
    const double kth = std::get<0>(p.flatten().kthvalue(min_kept)).item<double>();
    if (kth > thresh) threshold = kth;
  }
  return valid & (p < threshold);
}

at::Tensor ohem_ce_loss(const at::Tensor& logits, const at::Tensor& labels, int64_t ignore_index,
                        double thresh, int64_t min_kept, const at::Tensor& class_weights) {
  SEGSLIM_CHECK(logits.dim() == 4, "OHEM loss needs [N, C, h, w] logits, got shape ",
                logits.sizes());
  const at::Tensor y = squeeze_labels(labels).to(logits.device(), at::kLong);
  SEGSLIM_CHECK(y.dim() == 3, "OHEM loss: labels must be [N, H, W], got shape ", labels.sizes());
  at::Tensor x = logits;
  if (x.size(2) != y.size(1) || x.size(3) != y.size(2))
    x = at::upsample_bilinear2d(x, {y.size(1), y.size(2)}, /*align_corners=*/false);
  const at::Tensor kept = ohem_kept_mask(x, y, ignore_index, thresh, min_kept);
  return segmentation_ce_loss(x, y.masked_fill(~kept, ignore_index), ignore_index, class_weights);
}

at::Tensor fit_loss(const LossConfig& config, const at::Tensor& logits, const at::Tensor& labels,
                    int64_t ignore_index, double* denominator) {
  SEGSLIM_CHECK(logits.dim() == 4, "segmentation loss needs [N, C, h, w] logits, got shape ",
                logits.sizes());
  at::Tensor w;
  if (!config.weight.empty()) {
    // A model may output more channels than the dataset has classes; labels never name those,
    // so their weight (1) never counts.
    const int64_t channels = logits.size(1);
    SEGSLIM_CHECK(static_cast<int64_t>(config.weight.size()) <= channels, "Loss.weight has ",
                  config.weight.size(), " values but the model outputs only ", channels,
                  " classes: give one weight per class");
    std::vector<double> weights = config.weight;
    weights.resize(static_cast<size_t>(channels), 1.0);
    w = at::tensor(weights, at::kDouble).to(logits.device(), logits.scalar_type());
  }
  at::Tensor y = squeeze_labels(labels).to(logits.device(), at::kLong);
  SEGSLIM_CHECK(y.dim() == 3, "segmentation loss: labels must be [N, H, W], got shape ",
                labels.sizes());
  at::Tensor x = logits;
  if (x.size(2) != y.size(1) || x.size(3) != y.size(2))
    x = at::upsample_bilinear2d(x, {y.size(1), y.size(2)}, /*align_corners=*/false);
  if (config.type == "OhemCrossEntropyLoss")
    y = y.masked_fill(~ohem_kept_mask(x, y, ignore_index, config.thresh, config.min_kept),
                      ignore_index);
  at::Tensor loss = segmentation_ce_loss(x, y, ignore_index, w);  // validates the labels
  if (denominator) {
    const at::Tensor counted = y.masked_select(y != ignore_index);
    *denominator = w.defined() ? w.index_select(0, counted).sum().item<double>()
                               : static_cast<double>(counted.numel());
  }
  return config.coef == 1.0 ? loss : loss * config.coef;
}

}  // namespace segslim
