#pragma once
// The training loss of `segslim train` (config/fit_config.h, LossConfig): pixel-wise cross
// entropy with the dataset's ignore index, optionally OHEM, optionally class-weighted.
#include <ATen/ATen.h>

#include <cstdint>

#include "config/fit_config.h"

namespace segslim {

// PaddleSeg's OhemCrossEntropyLoss pixel selection. logits [N, C, H, W] at the labels' size,
// labels [N, H, W]; returns a bool mask [N, H, W] of the pixels the loss keeps:
//   p_i = softmax(logits)_i[label_i] for non-ignored pixels;
//   when there are more than min_kept non-ignored pixels: threshold = thresh, raised to the
//   min_kept-th smallest p when that is larger (min_kept > 0); kept = non-ignored & p < threshold;
//   otherwise every non-ignored pixel is kept.
// (PaddleSeg skips the selection altogether when min_kept is 0; here min_kept 0 keeps the
// pixels below thresh.) No gradient flows through the selection.
at::Tensor ohem_kept_mask(const at::Tensor& logits, const at::Tensor& labels, int64_t ignore_index,
                          double thresh, int64_t min_kept);

// Cross entropy over the pixels ohem_kept_mask keeps (mean, or class-weighted mean as
// segmentation_ce_loss). Logits are resized bilinearly to the labels' size first when needed.
at::Tensor ohem_ce_loss(const at::Tensor& logits, const at::Tensor& labels, int64_t ignore_index,
                        double thresh, int64_t min_kept, const at::Tensor& class_weights = {});

// The configured loss: coef * (CrossEntropyLoss | OhemCrossEntropyLoss). `weight`, when set,
// has one value per class (at most one per logit channel; channels beyond it weigh 1).
// `denominator`, when given, receives what the mean divides by: the number of pixels counted (kept
// by OHEM, not ignored), or the sum of their class weights (data-parallel ranks weight their losses
// by it).
at::Tensor fit_loss(const LossConfig& config, const at::Tensor& logits, const at::Tensor& labels,
                    int64_t ignore_index, double* denominator = nullptr);

}  // namespace segslim
